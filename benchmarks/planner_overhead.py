"""How much of a plan's wall time is spent outside training.

Runs ``specplan plan --demo`` (same budgets as ``make demo``) in this process and compares its
wall time with the seconds the training engine recorded in the cost ledger (every trial's
pretraining that was not reused, every fine-tuning, and the final run of the chosen plan).
Everything else is the planner's overhead: Optuna's sampling and storage, budget checks, cache
look-ups, evaluation before/after fine-tuning, exports and bookkeeping. Corpus preparation is
done (and cached) before the clock starts, as it is shared by every plan on the same data.

Baseline: the training time itself (the ratio printed is overhead / total).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/specplan")
    parser.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--pretrain-budget", default=None, help="default: the demo's")
    parser.add_argument("--spec-budget", default=None, help="default: the demo's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from planner.core.budgets import parse_inference_budget
    from planner.data.demo import DEMO_BUDGETS, DEMO_DOMAIN_TOKENS
    from planner.search.plan import load_plan_inputs, plan
    from planner.core.args import DataArgs
    from planner.search.study import PlanSpec
    from strategies import available

    names = args.strategies.split(",") if args.strategies else available()
    spec = PlanSpec(
        data=DataArgs(demo=True),
        pretrain_flops=float(args.pretrain_budget or DEMO_BUDGETS["pretrain"]),
        spec_flops=float(args.spec_budget or DEMO_BUDGETS["spec"]),
        inference=parse_inference_budget(DEMO_BUDGETS["inference"]).__dict__,
        domain_tokens=DEMO_DOMAIN_TOKENS, domains_count=1, strategies=names,
        trials=args.trials or len(names) + 1, cache_dir=args.cache,
    )
    inputs = load_plan_inputs(spec)  # cached corpus preparation, outside the clock
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        plan(spec, out, gpus="none", inputs=inputs)
        total = time.perf_counter() - start
        trials = json.loads((Path(out) / "plan.json").read_text())
        import pandas as pd

        frame = pd.read_csv(Path(out) / "trials.csv")
    training = float(frame["train_seconds"].fillna(0).sum())
    runs = float(frame["run_seconds"].fillna(0).sum())
    # The final run reuses the chosen trial's pretraining: only its per-domain work is new.
    training += sum(phase["seconds"] for domain in trials["measured_cost"]["final_run"].values()
                    for phase in domain.values())
    runs += trials["final_run_seconds"]
    planner = total - runs  # Optuna, storage, budget checks, feasibility, reports
    strategy_side = runs - training  # clustering, evaluation, export inside strategy runs
    report = {"total_seconds": total, "training_seconds": training,
              "strategy_non_training_seconds": strategy_side, "planner_seconds": planner,
              "planner_fraction": planner / total,
              "outside_training_fraction": (total - training) / total,
              "trials": int(len(frame)), "torch_threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"plan wall time      {total:8.1f} s  ({len(frame)} trials, strategies: "
              f"{','.join(names)})")
        print(f"training (ledger)      {training:8.1f} s  (baseline: the engine's own seconds)")
        print(f"strategy work besides  {strategy_side:8.1f} s  (clustering, evaluation "
              f"before/after fine-tuning, exports)")
        print(f"planner overhead       {planner:8.1f} s  = {100 * planner / total:.1f}% of the "
              f"total (search, caching, bookkeeping; target < 5%)")
        print(f"all outside training   {total - training:8.1f} s  = "
              f"{100 * (total - training) / total:.1f}% of the total")


if __name__ == "__main__":
    main()
