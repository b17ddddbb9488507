"""Training throughput: specplan's engine (``planner.engine.train.train``) against a Trainer.

Both sides train the same thing, in one process, alternating run by run (engine, Trainer,
engine, Trainer...) after one short warm-up run of each, so that noise from other processes on
a shared machine falls on both; the medians over the repeats are reported, with the ratio
engine / Trainer (the baseline is the Trainer).

Same on both sides:

* the model: ``planner.engine.models.model_shape(size, ...).build(seed)``, a ``LlamaForCausalLM``
  built afresh with the same seed before every run (outside the timed region), fp32 on the CPU;
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

* engine: ``train(...)``: optimizer creation (``planner.engine.train.build_optimizer``), per step
  the lr update, batch assembly by :class:`planner.engine.train.WindowSampler`, forward,
  ``lm_loss``, backward, the running train loss, clipping, ``optimizer.step`` and ``zero_grad``; the
  ledger charge at the end. No validation (``valid=None``), no checkpoints.
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

Run: ``.venv/bin/python benchmarks/train_throughput.py [--demo] [--json]``.
"""
from __future__ import annotations

import argparse
import json
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
from planner.engine.train import TrainConfig, WindowSampler, train  # noqa: E402


def make_windows(args) -> tuple[torch.Tensor, int]:
    """(windows, vocab_size): demo generic train windows, or random ids."""
    if args.demo:
        from planner.data.inputs import demo_inputs

        inputs = demo_inputs(args.cache, seq_len=args.seq_len, vocab_size=args.vocab)
        ids = inputs.generic.train.ids.long()
        return ids, len(inputs.tokenizer)
    n = max(2048, 2 * args.batch_size * args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    return torch.randint(0, args.vocab, (n, args.seq_len), generator=gen), args.vocab


def engine_cfg(args, steps: int) -> TrainConfig:
    return TrainConfig(
        batch_size=args.batch_size, max_steps=steps, warmup_steps=max(1, steps // 10),
        schedule="cosine", precision="fp32", device="cpu", seed=args.seed,
    )


def run_engine(shape, windows, args, steps: int) -> tuple[float, float]:
    cfg = engine_cfg(args, steps)
    model = shape.build(seed=args.seed)
    source = WindowSampler(windows, cfg.batch_size, cfg.grad_accum, cfg.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    train(model, source, cfg, seq_len=args.seq_len,
          flops_per_token=shape.train_flops_per_token(), ledger=Ledger(), phase="generic")
    return time.perf_counter() - t0, time.process_time() - c0


class Windows(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def run_trainer(shape, windows, args, steps: int, out_dir: str) -> tuple[float, float]:
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
        use_cpu=True,
        seed=cfg.seed,
    )
    model = shape.build(seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=Windows(windows))
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-run metrics despite logging off
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", choices=list(SIZES))
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

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    windows, vocab = make_windows(args)
    shape = model_shape(args.size, vocab_size=vocab, seq_len=args.seq_len)
    tokens = args.steps * args.batch_size * args.seq_len

    times: dict[str, list[tuple[float, float]]] = {"engine": [], "trainer": []}
    with tempfile.TemporaryDirectory() as out_dir:
        sides = {
            "engine": lambda steps: run_engine(shape, windows, args, steps),
            "trainer": lambda steps: run_trainer(shape, windows, args, steps, out_dir),
        }
        for name, fn in sides.items():  # warm-up: allocator, thread pool, imports
            fn(args.warmup_steps)
            assert torch.get_num_threads() == threads, f"{name} changed the thread count"
        for _ in range(args.repeats):
            for name, fn in sides.items():
                times[name].append(fn(args.steps))
                assert torch.get_num_threads() == threads, f"{name} changed the thread count"

    def summary(index: int) -> dict:
        """Tokens/s per run by wall clock (index 0) or by this process's CPU time (1)."""
        tps = {name: [tokens / t[index] for t in ts] for name, ts in times.items()}
        med = {name: statistics.median(v) for name, v in tps.items()}
        pairs = [e / t for e, t in zip(tps["engine"], tps["trainer"])]
        return {
            "engine_tokens_per_s": med["engine"], "trainer_tokens_per_s": med["trainer"],
            "ratio_engine_over_trainer": med["engine"] / med["trainer"],
            "ratio_per_pair_median": statistics.median(pairs),
            "engine_runs": tps["engine"], "trainer_runs": tps["trainer"],
        }

    result = {
        "model": f"{args.size}: {shape.describe()}",
        "data": "demo generic corpus" if args.demo else "random token windows",
        "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
        "repeats": args.repeats, "threads": threads, "precision": "fp32", "device": "cpu",
        "torch": torch.__version__, "baseline": "transformers.Trainer",
        "wall": summary(0), "cpu_time": summary(1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    import transformers

    print(f"model     {result['model']}")
    print(f"data      {result['data']}, batch {args.batch_size} x {args.seq_len} tokens, fp32 on "
          f"CPU, {threads} torch thread(s), torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"runs      {args.repeats} x {args.steps} steps per side, alternated, after a "
          f"{args.warmup_steps}-step warm-up of each; medians")
    for key, what in (("wall", "wall clock"), ("cpu_time", "process CPU time (robust to "
                                                            "other load on the machine)")):
        r = result[key]
        print(f"-- tokens/s by {what}")
        for name, label in (("engine", "engine  (planner.engine.train.train)"),
                            ("trainer", "Trainer (transformers.Trainer)")):
            runs = ", ".join(f"{x:.0f}" for x in r[f"{name}_runs"])
            print(f"   {label:32s} {r[f'{name}_tokens_per_s']:8.0f} tokens/s   (runs: {runs})")
        print(f"   ratio engine / Trainer (baseline: transformers.Trainer): "
              f"{r['ratio_engine_over_trainer']:.3f}x   "
              f"(median of per-pair ratios: {r['ratio_per_pair_median']:.3f}x)")
    return result


if __name__ == "__main__":
    main()
