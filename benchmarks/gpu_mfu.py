"""Model FLOP utilisation on a GPU: the engine against transformers' Trainer, the study's shapes.

For each size (default the study's 126M shape and the 350m preset, 32k vocabulary, 1,024-token
windows), both sides train the same model on the same random windows in bf16, alternating run by
run after a warm-up of each, exactly as ``benchmarks/train_throughput.py`` compares them (its
``compare``: the engine with ``precision="bf16"``, the Trainer with ``bf16=True``; the timed
regions end with ``torch.cuda.synchronize``). Printed per side: tokens/s and MFU, the analytic
training FLOPs per token (``planner.engine.models``, attention included) times tokens/s over the
device's dense bf16 peak (``planner.core.cost.PROFILES``: H100/H200 989 TFLOP/s, A100 312); and
the ratio engine / Trainer. Run it whenever a GPU is lent; on a CPU (``--device cpu`` with a small
preset) it runs the same code against the CPU's measured fp32 matmul peak, as a smoke check.

Run: ``.venv/bin/python benchmarks/gpu_mfu.py [--sizes 126m,350m] [--steps 200] [--json]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.core.cost import PROFILES, measure_cpu_peak  # noqa: E402
from planner.engine.devices import device_kind, device_label, resolve_device  # noqa: E402
from planner.engine.models import model_shape  # noqa: E402
from train_throughput import compare, make_windows  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="126m,350m", help="comma-separated presets or shapes")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16, help="windows per step")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.demo = False
    device = resolve_device(args.device)
    args.device = str(device)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    peak = (PROFILES[device_kind(device)].peak_flops if device.type == "cuda"
            else measure_cpu_peak())
    windows, held_out, vocab = make_windows(args)
    result = {"device": device_label(device), "peak_flops": peak, "steps": args.steps,
              "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab": vocab,
              "precision": "bf16", "baseline": "transformers.Trainer", "sizes": {}}
    with tempfile.TemporaryDirectory() as out_dir:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            shape = model_shape(size, vocab_size=vocab, seq_len=args.seq_len)
            r = compare(shape, windows, held_out, args, out_dir, bf16=True)
            per_token = shape.train_flops_per_token()
            wall = r["wall"]
            result["sizes"][size] = {
                "model": shape.describe(), "train_flops_per_token": per_token,
                "engine_tokens_per_s": wall["engine_tokens_per_s"],
                "trainer_tokens_per_s": wall["trainer_tokens_per_s"],
                "engine_mfu": wall["engine_tokens_per_s"] * per_token / peak,
                "trainer_mfu": wall["trainer_tokens_per_s"] * per_token / peak,
                "ratio_engine_over_trainer": wall["ratio_engine_over_trainer"],
                "loss_gap": r["loss_gap"], "engine_ran": r["engine_ran"]}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"{result['device']}, peak {peak:.3g} FLOP/s, bf16, batch {args.batch_size} x "
          f"{args.seq_len} tokens, {args.steps} steps x {args.repeats} alternated runs per side")
    for size, r in result["sizes"].items():
        print(f"-- {size}: {r['model']} (engine ran {r['engine_ran']})")
        for side in ("engine", "trainer"):
            print(f"   {side:8s} {r[f'{side}_tokens_per_s']:10.0f} tokens/s   "
                  f"MFU {r[f'{side}_mfu']:.1%}")
        print(f"ratio engine / Trainer (bf16) {size}: {r['ratio_engine_over_trainer']:.3f}x   "
              f"(held-out loss gap {100 * r['loss_gap']:.2f}%)")
    return result


if __name__ == "__main__":
    main()
