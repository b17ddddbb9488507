"""What planning early costs and loses against the exhaustive plan, per budget regime.

For each regime, on two real demo domains (legal, news) at a CPU scale where the budgets leave
room for a ladder of proxy runs (tiny deployed model, 32-token windows), this runs in one
process:

* the baseline, :func:`planner.search.plan.plan` (``--exhaustive``): every strategy at the full
  budgets (one trial each, at its defaults), the best on validation built and tested;
* :func:`planner.search.early.plan_early`: proxy runs within the planning budget, a forecast per
  strategy, the choice built and tested.

It prints, per regime, what each spent (proxy runs or trials, plus the final build) and the
chosen test perplexities; ``compute_ratio`` is early / exhaustive compute over all regimes
together. Goals (issue "Plan early"): ratio <= 0.25, and the early pick's test perplexity
within 3% of the exhaustive one in at least 3 of the 4 regimes. Each plan has its own copy of
the prepared data and no other cache, so nothing one trained is reused by the other.

    python benchmarks/plan_regret.py [--json] [--planning-share 0.5]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

STRATEGIES = ["slm", "slm-nopt", "llm", "slm-is", "slm-mix", "slm-pn"]
# name, pretraining FLOPs, specialization FLOPs per domain, domains N, deployed-model cap
REGIMES = [
    ("small spec, 1 domain", 1e12, 5e10, 1, "tiny"),
    ("large spec, 1 domain", 4e11, 8e10, 1, "tiny"),
    ("small spec, 50 domains", 1e12, 5e10, 50, "tiny"),
    ("room for the large model", 1e12, 5e10, 1, "small"),
]


def spend(doc: dict) -> float:
    """What a plan spent in all: its search (trials or proxy runs) and its final build."""
    return doc["planning"]["search_flops"] + doc["planning"]["final_run_flops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--planning-share", type=float, default=None,
                        help="planning budget as a share of the project (default: the plan's)")
    parser.add_argument("--regimes", type=int, default=len(REGIMES), help="the first N regimes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the plans' progress lines

    from planner.core.args import DataArgs, RunArgs
    from planner.engine.models import model_shape
    from planner.search import early
    from planner.search.plan import plan, project_flops
    from planner.search.study import PlanSpec, load_plan_inputs

    data = DataArgs(demo=True, demo_domains=("legal", "news"), seq_len=32, vocab_size=512)
    run = RunArgs(batch_size=8, eval_every=10, large="small", device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, pretrain, spec_flops, n, cap in REGIMES[:args.regimes]:
            params = model_shape(cap, vocab_size=512, seq_len=32).params_total
            spec = PlanSpec(data=data, run=run, pretrain_flops=pretrain, spec_flops=spec_flops,
                            inference={"params": params, "flops_per_token": None},
                            domain_tokens=16_000, domains_count=n, strategies=STRATEGIES,
                            trials=len(STRATEGIES), sizes=["tiny"])
            docs, seconds = {}, {}
            prepared = tmp / "data-cache"  # corpora and tokenizer, prepared once
            if not prepared.exists():
                load_plan_inputs(dataclasses.replace(spec, cache_dir=str(prepared)))
            for mode in ("exhaustive", "early"):
                cache = tmp / f"{len(rows)}-{mode}"
                shutil.copytree(prepared, cache / "cache")
                this = dataclasses.replace(spec, cache_dir=str(cache / "cache"))
                inputs = load_plan_inputs(this)
                started = time.perf_counter()
                if mode == "exhaustive":
                    result = plan(this, cache / "out", gpus="none", inputs=inputs)
                else:
                    share = args.planning_share
                    result = early.plan_early(
                        this, cache / "out", inputs=inputs,
                        planning_flops=None if share is None
                        else share * project_flops(this.budgets()))
                seconds[mode] = time.perf_counter() - started
                docs[mode] = result.plan
            e, x = docs["early"], docs["exhaustive"]
            rows.append({
                "name": name, "early_strategy": e["strategy"],
                "early_mode": e["planning"]["mode"],
                "exhaustive_strategy": x["strategy"],
                "early_test_ppl": e["perplexity"]["test_macro"],
                "exhaustive_best_test_ppl": x["perplexity"]["test_macro"],
                "early_flops": spend(e), "exhaustive_flops": spend(x),
                "early_planning_flops": e["planning"]["search_flops"],
                "early_seconds": seconds["early"], "exhaustive_seconds": seconds["exhaustive"],
            })
            rows[-1]["within_3pct"] = bool(
                rows[-1]["early_test_ppl"] <= 1.03 * rows[-1]["exhaustive_best_test_ppl"])
    ratio = sum(r["early_flops"] for r in rows) / sum(r["exhaustive_flops"] for r in rows)
    report = {"compute_ratio": ratio, "within_3pct": sum(r["within_3pct"] for r in rows),
              "regimes": rows, "strategies": STRATEGIES}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'regime':26s} {'early pick':>10s} {'exh. pick':>10s} {'early ppl':>9s} "
          f"{'exh. ppl':>9s} {'early FLOPs':>11s} {'exh. FLOPs':>11s} within 3%")
    for r in rows:
        print(f"{r['name']:26s} {r['early_strategy']:>10s} {r['exhaustive_strategy']:>10s} "
              f"{r['early_test_ppl']:9.3f} {r['exhaustive_best_test_ppl']:9.3f} "
              f"{r['early_flops']:11.3g} {r['exhaustive_flops']:11.3g} {r['within_3pct']}")
    print(f"compute ratio (early / exhaustive, all regimes): {ratio:.3f} (goal <= 0.25); "
          f"within 3% of the exhaustive pick in {report['within_3pct']} of {len(rows)} "
          "(goal >= 3)")


if __name__ == "__main__":
    main()
