"""Training throughput: specplan's engine (``planner.engine.train.train``) against a Trainer.

Two comparisons per preset (``--sizes``, default the small and the large one), each in one
process, alternating run by run (engine, Trainer, engine, Trainer...) after one short warm-up run
of each, so that noise from other processes on a shared machine falls on both; the medians over
the repeats are reported, with the ratio engine / Trainer (the baseline is the Trainer):

* **fp32 default**: each as a user runs it by default. The engine's ``precision="auto"``
  measures on its first batch which precision and attention kernel run fastest at equal loss
  (``planner.engine.speed``; bf16 autocast and the ``math`` attention kernel on an AVX-512-BF16
  CPU); the Trainer trains in fp32 with PyTorch's default attention kernel.
* **bf16**: both given bf16 autocast (the engine ``precision="bf16"``, still choosing its
  attention kernel by the probe; the Trainer ``bf16=True``).

The probe runs once per machine and shape before the warm-up runs (into a fresh probe cache in a
temporary folder, so it is measured here, not read from an earlier run), as a user's first run
of at least ``PROBE_MIN_STEPS`` steps pays it; the timed runs read its choice. Its seconds are
printed. Loss: after each timed run, the trained model's mean loss on 64 held-out windows
(fp32, outside the timed region); the two sides must agree within 1%.

Same on both sides:

* the model: ``planner.engine.models.model_shape(size, ...).build(seed)``, a ``LlamaForCausalLM``
  built afresh with the same seed before every run (outside the timed region), on the CPU;
* the data: the same (n, seq_len) token windows (random ids, or the demo generic corpus with
  ``--demo``), shuffled by each side's own sampler, ``--batch-size`` windows per step, no
  gradient accumulation;
* the optimisation: AdamW with lr, betas and weight decay from ``TrainConfig`` defaults, decay on
  matrices only (Trainer's own rule excludes the norms, which are the only non-matrices here),
  a linear warm-up then cosine decay to 10% of the peak (``cosine_with_min_lr`` on the Trainer,
  whose warm-up starts at step/warmup rather than (step+1)/warmup: immaterial for speed),
  gradient clipping at ``TrainConfig.grad_clip``, the same number of steps;
* the torch thread count (``--threads``, default 1, checked to be unchanged after every run).

What each timed region includes (wall clock around one call, model built beforehand):

* engine: ``train(...)``: reading the probe's cached choice, optimizer creation
  (``planner.engine.train.build_optimizer``), per step the lr update, batch assembly by
  :class:`planner.engine.train.WindowSampler`, forward, ``lm_loss``, backward, the running train
  loss, clipping, ``optimizer.step`` and ``zero_grad``; the ledger charge at the
  end. No validation (``valid=None``), no checkpoints.
* Trainer: ``Trainer.train()``: optimizer (its default, ``adamw_torch_fused`` on torch >= 2.8)
  and scheduler creation, accelerate's preparation, the in-process DataLoader
  (``dataloader_num_workers=0``, ``default_data_collator`` stacking ``input_ids`` and
  ``labels``), per step forward with ``labels`` (the model's own shifted loss), backward,
  clipping, optimizer and scheduler steps, callbacks; with evaluation, saving, logging and
  reporting all off. ``Trainer.__init__`` is not timed.

Two clocks per run: wall time (what a user waits) and this process's CPU time
(``time.process_time``), which does not count time the process spent descheduled by other load
on a shared machine, and so compares the two sides' work more steadily there. With several
torch threads, CPU time also counts OpenMP threads spinning at barriers.

Run: ``.venv/bin/python benchmarks/train_throughput.py [--sizes small,large] [--demo] [--json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.core.cost import Ledger  # noqa: E402
from planner.engine.models import SIZES, model_shape  # noqa: E402
from planner.engine.speed import step_settings  # noqa: E402
from planner.engine.train import (  # noqa: E402
    TrainConfig,
    WindowSampler,
    evaluate_loss,
    lm_loss,
    train,
)


def make_windows(args) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train windows, 64 held-out windows, vocab size): the demo generic corpus or random ids."""
    if args.demo:
        from planner.data.inputs import demo_inputs

        inputs = demo_inputs(args.cache, seq_len=args.seq_len, vocab_size=args.vocab)
        generic = inputs.generic
        return generic.train.ids.long(), generic.valid.ids[:64].long(), len(inputs.tokenizer)
    n = max(2048, 2 * args.batch_size * args.steps) + 64
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (n, args.seq_len), generator=gen)
    return ids[:-64], ids[-64:], args.vocab


def synchronize() -> None:
    """Wait for queued GPU work, so a timed region ends when its work does."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def engine_cfg(args, steps: int, precision: str = "fp32") -> TrainConfig:
    return TrainConfig(
        batch_size=args.batch_size, max_steps=steps, warmup_steps=max(1, steps // 10),
        schedule="cosine", precision=precision, device=getattr(args, "device", "cpu"),
        seed=args.seed,
    )


def run_engine(shape, windows, args, steps: int, precision: str) -> tuple[float, float, object]:
    cfg = engine_cfg(args, steps, precision)
    model = shape.build(seed=args.seed)
    source = WindowSampler(windows, cfg.batch_size, cfg.grad_accum, cfg.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(model, source, cfg, seq_len=args.seq_len,
                   flops_per_token=shape.train_flops_per_token(), ledger=Ledger(),
                   phase="generic")
    synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, (model, f"{result.precision}, {result.attention} attention")


class Windows(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def run_trainer(shape, windows, args, steps: int, out_dir: str,
                bf16: bool) -> tuple[float, float, object]:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    cfg = engine_cfg(args, steps)
    targs = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_steps=steps,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.beta1,
        adam_beta2=cfg.beta2,
        max_grad_norm=cfg.grad_clip,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=getattr(args, "device", "cpu") == "cpu",
        bf16=bf16,
        seed=cfg.seed,
    )
    model = shape.build(seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=Windows(windows))
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-run metrics despite logging off
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, (model, "bf16 autocast" if bf16 else "fp32")


def compare(shape, windows, held_out, args, out_dir: str, bf16: bool) -> dict:
    """Alternated timed runs of the engine and the Trainer; tokens/s, ratio, losses."""
    tokens = args.steps * args.batch_size * args.seq_len
    sides = {
        "engine": lambda steps: run_engine(shape, windows, args, steps,
                                           "bf16" if bf16 else "auto"),
        "trainer": lambda steps: run_trainer(shape, windows, args, steps, out_dir, bf16),
    }
    threads = torch.get_num_threads()
    runs: dict[str, list] = {"engine": [], "trainer": []}
    # The engine's speed probe, once per machine and shape, as a user's first long run pays it
    # (this script's runs are shorter than PROBE_MIN_STEPS, so they read what it cached).
    t0 = time.perf_counter()
    device = torch.device(getattr(args, "device", "cpu"))
    step_settings(shape.build(seed=args.seed).to(device), windows[:args.batch_size].to(device),
                  lm_loss, device, "bf16" if bf16 else "auto",
                  args.batch_size * args.seq_len * shape.train_flops_per_token())
    probe_s = time.perf_counter() - t0
    for name, fn in sides.items():  # warm-up: allocator, thread pool, imports
        fn(args.warmup_steps)
        assert torch.get_num_threads() == threads, f"{name} changed the thread count"
    for _ in range(args.repeats):
        for name, fn in sides.items():
            runs[name].append(fn(args.steps))
            assert torch.get_num_threads() == threads, f"{name} changed the thread count"

    def clock(index: int) -> dict:
        tps = {name: [tokens / r[index] for r in rs] for name, rs in runs.items()}
        med = {name: statistics.median(v) for name, v in tps.items()}
        return {"engine_tokens_per_s": med["engine"], "trainer_tokens_per_s": med["trainer"],
                "ratio_engine_over_trainer": med["engine"] / med["trainer"],
                "ratio_per_pair_median": statistics.median(
                    e / t for e, t in zip(tps["engine"], tps["trainer"])),
                "engine_runs": tps["engine"], "trainer_runs": tps["trainer"]}

    loss = {name: statistics.median(evaluate_loss(r[2][0], held_out) for r in rs)
            for name, rs in runs.items()}
    return {
        "engine_ran": runs["engine"][-1][2][1], "trainer_ran": runs["trainer"][-1][2][1],
        "engine_probe_s": probe_s,
        "engine_loss": loss["engine"], "trainer_loss": loss["trainer"],
        "loss_gap": abs(loss["engine"] - loss["trainer"]) / loss["trainer"],
        "wall": clock(0), "cpu_time": clock(1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,large",
                   help=f"comma-separated presets, of {', '.join(SIZES)}")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternated")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps of the untimed warm-up runs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides; 0 keeps torch's setting. Default 1: on a "
                        "shared machine, more threads than free cores stall at OpenMP barriers "
                        "and the timings become noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demo", action="store_true", help="train on the demo generic corpus")
    p.add_argument("--cache", default=".cache/specplan", help="cache folder for --demo")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"--sizes: unknown preset(s) {', '.join(unknown)}; use {', '.join(SIZES)}")

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    windows, held_out, vocab = make_windows(args)
    result = {
        "data": "demo generic corpus" if args.demo else "random token windows",
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "device": "cpu",
        "torch": torch.__version__, "baseline": "transformers.Trainer", "presets": {},
    }
    with tempfile.TemporaryDirectory() as out_dir:
        os.environ["SPECPLAN_PROBE_CACHE"] = str(Path(out_dir) / "step-probes.json")
        for size in sizes:
            shape = model_shape(size, vocab_size=vocab, seq_len=args.seq_len)
            result["presets"][size] = {"model": shape.describe(), **{
                label: compare(shape, windows, held_out, args, out_dir, bf16)
                for label, bf16 in (("fp32 default", False), ("bf16", True))}}
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    import transformers

    print(f"data      {result['data']}, batch {args.batch_size} x {args.seq_len} tokens, CPU, "
          f"{result['threads']} torch thread(s), torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"runs      {args.repeats} x {args.steps} steps per side, alternated, after a "
          f"{args.warmup_steps}-step warm-up of each; medians; tokens/s by wall clock "
          "(by process CPU time in brackets)")
    for size, preset in result["presets"].items():
        print(f"-- {size}: {preset['model']}")
        for label in ("fp32 default", "bf16"):
            r, wall, cpu = preset[label], preset[label]["wall"], preset[label]["cpu_time"]
            print(f"   {label}: engine ran {r['engine_ran']} (its probe: "
                  f"{r['engine_probe_s']:.1f} s, once), Trainer ran {r['trainer_ran']}")
            for name in ("engine", "trainer"):
                print(f"     {name:8s} {wall[f'{name}_tokens_per_s']:8.0f} tokens/s "
                      f"({cpu[f'{name}_tokens_per_s']:.0f})   "
                      f"held-out loss {r[f'{name}_loss']:.4f}")
            print(f"     loss gap {100 * r['loss_gap']:.2f}% (goal: under 1%)")
            print(f"ratio engine / Trainer ({label}) {size}: "
                  f"{wall['ratio_engine_over_trainer']:.3f}x   (CPU time: "
                  f"{cpu['ratio_engine_over_trainer']:.3f}x; median of per-pair ratios "
                  f"{wall['ratio_per_pair_median']:.3f}x)")
    return result


if __name__ == "__main__":
    main()
