"""Measured device time per token of each strategy's training, against ``slm``'s.

The ledger charges analytic FLOPs, and device-hour budgets become FLOPs at one utilisation for
every model, so a strategy whose training step runs at a lower FLOP rate than the small model's
(a projected network's basis gradients, a mixture's experts, the large model) is charged less
device time than it spends. This benchmark measures what each spends: every strategy runs end to
end (``planner.run.runner.run_strategy``: pretraining, then fine-tuning on the domain) at the
same budgets on the same demo corpus, in one process, in alternating rounds (every strategy once
per round, a fresh artifact cache each round so nothing is reused), and the ledger's own entries
give, per phase, training tokens, analytic FLOPs and measured seconds. Printed per strategy and
phase: seconds per 1M tokens, analytic FLOPs per token, the achieved FLOP rate, and the two
ratios against ``slm`` (the baseline): measured seconds per token, and analytic FLOPs per token.
Where the two ratios differ, a FLOP budget (or a device-hour budget converted at one
utilisation) misstates what the strategy costs on this machine. The reference study measured
SLM-pn 1.64x and the LLM 3.5x the SLM's GPU-hours per token (v2 Table 2).

The fastest round per strategy counts: the first pays the engine's speed probes (a fresh probe
cache in a temporary folder, so no earlier run's choices leak in), later ones read them. Only
training entries count (tokens > 0): clustering, inference and materialisation are reported by
the ledger separately; fine-tuning entries include their validations.

Run: ``.venv/bin/python benchmarks/strategy_costs.py [--strategies slm,slm-pn,llm] [--json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.core.args import DataArgs, RunArgs  # noqa: E402
from planner.core.budgets import Budgets  # noqa: E402
from planner.run.config import load_data, make_workspace  # noqa: E402
from planner.run.runner import run_strategy  # noqa: E402
from strategies import get_strategy  # noqa: E402

PAPER = {"slm-pn": 3.6 / 2.2, "llm": 7.7 / 2.2}  # GPU-hours per 1B tokens over SLM's (Table 2)


def measure(strategy: str, inputs, budgets, run: RunArgs, size: str) -> dict[str, dict]:
    """One end-to-end run in a fresh artifact cache: tokens, FLOPs, seconds per phase."""
    with tempfile.TemporaryDirectory() as cache:
        ws = make_workspace(inputs, budgets, run, cache, small=size)
        settings = get_strategy(strategy).settings()
        report = run_strategy(strategy, settings, ws, inputs.domains)
    out = {}
    for phase in ("generic", "specialization"):
        entries = [e for e in report.ledger().entries if e.phase == phase and e.tokens > 0]
        if entries:
            out[phase] = {"tokens": sum(e.tokens for e in entries),
                          "flops": sum(e.flops for e in entries),
                          "seconds": sum(e.seconds for e in entries)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default="slm,slm-pn,slm-hn,slm-mix,slm-is,llm",
                   help="comma-separated; slm (the baseline) is always included")
    p.add_argument("--size", default="small", help="the deployed model's preset")
    p.add_argument("--large", default="6x", help="the large model (llm): a preset or a ratio")
    p.add_argument("--pretrain-flops", type=float, default=1.2e12)
    p.add_argument("--spec-flops", type=float, default=1.2e11)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: steadier timings on a shared machine)")
    p.add_argument("--cache", default=".cache/specplan", help="the demo corpora's cache")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)
    names = ["slm"] + [s.strip() for s in args.strategies.split(",") if s.strip() not in
                       ("", "slm")]

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    probes = tempfile.TemporaryDirectory()
    os.environ["SPECPLAN_PROBE_CACHE"] = str(Path(probes.name) / "step-probes.json")
    inputs = load_data(DataArgs(demo=True, demo_domains=("legal",)), args.cache)
    budgets = Budgets(args.pretrain_flops, args.spec_flops)
    run = RunArgs(large=args.large, device="cpu", checkpoint_every=0)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(measure(name, inputs, budgets, run, args.size))

    def per_phase(name: str, phase: str) -> dict | None:
        rows = [r[phase] for r in runs[name] if phase in r]
        if not rows:
            return None
        s_per_token = min(r["seconds"] / r["tokens"] for r in rows)
        flops_per_token = rows[0]["flops"] / rows[0]["tokens"]
        return {"seconds_per_1m_tokens": 1e6 * s_per_token, "flops_per_token": flops_per_token,
                "flops_per_second": flops_per_token / s_per_token, "tokens": rows[0]["tokens"]}

    result = {"size": args.size, "large": args.large, "threads": torch.get_num_threads(),
              "pretrain_flops": args.pretrain_flops, "spec_flops": args.spec_flops,
              "rounds": args.rounds, "baseline": "slm", "torch": torch.__version__,
              "strategies": {}}
    for phase in ("generic", "specialization"):
        base = per_phase("slm", phase)
        for name in names:
            row = per_phase(name, phase)
            if row is None or base is None:
                continue
            row["seconds_ratio"] = row["seconds_per_1m_tokens"] / base["seconds_per_1m_tokens"]
            row["flops_ratio"] = row["flops_per_token"] / base["flops_per_token"]
            result["strategies"].setdefault(name, {})[phase] = row
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"demo legal corpus, deployed {args.size}, large {args.large}, budgets "
          f"{args.pretrain_flops:.3g} / {args.spec_flops:.3g} FLOPs, {result['threads']} "
          f"thread(s), {args.rounds} alternating rounds (the fastest); baseline: slm")
    for phase in ("generic", "specialization"):
        print(f"-- {phase}: training entries of the ledger")
        print(f"   {'strategy':10s} {'s / 1M tok':>11s} {'FLOPs/tok':>10s} {'GFLOP/s':>8s} "
              f"{'measured vs slm':>16s} {'FLOPs vs slm':>13s}")
        for name, phases in result["strategies"].items():
            if phase not in phases:
                continue
            r = phases[phase]
            paper = (f"   (study: {PAPER[name]:.2f}x)" if phase == "generic" and name in PAPER
                     else "")
            print(f"   {name:10s} {r['seconds_per_1m_tokens']:11.1f} {r['flops_per_token']:10.3g} "
                  f"{r['flops_per_second'] / 1e9:8.1f} {r['seconds_ratio']:15.2f}x "
                  f"{r['flops_ratio']:12.2f}x{paper}")
    return result


if __name__ == "__main__":
    main()
