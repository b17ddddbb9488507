"""``specplan train | eval``: one training run, and a model's perplexity and speed."""
from __future__ import annotations

from pathlib import Path

import click

from planner.cli._shared import (
    Ctx,
    apply_config,
    parse_tasks,
)
from planner.core.errors import SpecplanError
from planner.core.text import ledger_text, table


@click.command()
@click.option("--config", "config_path", default=None, help="TOML file of option defaults.")
@click.option("--corpus", default=None, help="Training corpus (folder, .txt, .jsonl, ...).")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Text encoding of .txt/.jsonl/.csv files (e.g. latin-1).")
@click.option("--init", default=None, help="Model folder to fine-tune (else pretrain fresh).")
@click.option("--size", default="small", show_default=True, help="Model size when pretraining.")
@click.option("--budget", default=None, help="Stop at this budget: FLOPs or device time.")
@click.option("--steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--tokens", default=None, help="Stop after this many tokens (e.g. 2M).")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--early-stopping", type=int, default=None, help="Patience in validations.")
@click.option("--eval-every", type=int, default=50, show_default=True)
@click.option("--seq-len", type=int, default=None,
              help="Tokens per window (default: 128 when pretraining; with --init, the model's "
                   "positions up to 2048).")
@click.option("--vocab-size", type=int, default=4096, show_default=True,
              help="BPE vocabulary trained on the corpus when pretraining.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N], mps.")
@click.option("--precision", default="auto", show_default=True,
              help="auto (CUDA: bf16; CPU: bf16 or fp32, whichever a probe measures faster at "
                   "equal loss, cached per machine and shape), bf16 or fp32.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Resume from OUT/checkpoint/last.")
@click.option("--out", default=None, help="Folder for the trained model (transformers format).")
@click.pass_context
def train(ctx, config_path, **opts) -> None:
    """One pretraining or fine-tuning run, from options or a TOML config."""
    from planner.core.budgets import parse_budget
    from planner.core.units import parse_count
    from planner.run.runner import train_once

    apply_config(ctx, config_path)
    opts = {k: ctx.params[k] for k in opts}
    obj: Ctx = ctx.obj
    if not opts["corpus"]:
        raise SpecplanError("--corpus is required (a folder of .txt, .jsonl, .parquet or .csv)")
    if not (opts["budget"] or opts["steps"] or opts["tokens"]):
        raise SpecplanError("give a stop: --budget (3e13 or 10m@cpu), --steps or --tokens")
    out = Path(opts["out"]) if opts["out"] else None
    run = train_once(
        opts["corpus"], cache_dir=obj.cache, init=opts["init"], size=opts["size"],
        phase="specialization" if opts["init"] else "generic",
        budget_flops=parse_budget(opts["budget"], what="--budget", cache_dir=obj.cache)
        if opts["budget"] else None,
        steps=opts["steps"],
        tokens=parse_count(opts["tokens"], "--tokens") if opts["tokens"] else None,
        early_stopping=opts["early_stopping"], out_dir=out, seq_len=opts["seq_len"],
        vocab_size=opts["vocab_size"], encoding=opts["encoding"],
        lr=opts["lr"], batch_size=opts["batch_size"], grad_accum=opts["grad_accum"],
        eval_every=opts["eval_every"], device=opts["device"], precision=opts["precision"],
        compile=opts["compile_"], seed=opts["seed"],
        checkpoint_dir=str(out / "checkpoint") if out and opts["checkpoint_every"] else None,
        checkpoint_every=opts["checkpoint_every"], resume=opts["resume"],
    )
    data = {"model": run.shape, "steps": run.result.steps, "stopped": run.result.stopped,
            "ppl_before": run.ppl_before, "ppl_after": run.ppl_after,
            "model_dir": run.model_dir, "ledger": run.ledger.to_dict()["totals"]}
    before = f"{run.ppl_before:.2f} -> " if run.ppl_before else ""
    obj.emit(data, f"model {run.shape}\nsteps {run.result.steps} (stopped: {run.result.stopped})"
                   f"\nvalidation perplexity {before}{run.ppl_after:.2f}\n"
                   + (f"saved to {run.model_dir}\n" if run.model_dir else "")
                   + ledger_text(run.ledger))


@click.command("eval")
@click.argument("model_dir")
@click.option("--domain", "domains", multiple=True, required=True, help="Corpus to evaluate on.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["valid", "test"]))
@click.option("--text-field", default="text", show_default=True)
@click.option("--no-speed", is_flag=True, help="Skip the inference throughput measurement.")
@click.option("--task", "tasks", multiple=True, metavar="DOMAIN=PATH",
              help="A task file (JSONL, multiple choice or cloze) of a --domain; repeatable.")
@click.pass_obj
def eval_cmd(obj: Ctx, model_dir, domains, split, text_field, no_speed, tasks) -> None:
    """Perplexity per domain and macro-averaged, inference throughput and latency, and the
    accuracy on each --task."""
    from planner.run.runner import evaluate_model

    if not Path(model_dir, "config.json").exists():
        raise SpecplanError(f"{model_dir}: not a model folder (no config.json); pass an --out "
                            f"folder of specplan train/run/plan")
    result = evaluate_model(model_dir, list(domains), cache_dir=obj.cache, text_field=text_field,
                            split=split, speed=not no_speed, tasks=parse_tasks(tasks))
    obj.emit(result, eval_text(result))


def eval_text(result: dict) -> str:
    """``eval``'s table: every perplexity to 2 decimals, as ``train`` prints them, so "291.00"
    stands beside "234.30" (a general float format printed "291" beside "234.3")."""
    rows = [{"domain": k, "perplexity": f"{v:.2f}"} for k, v in result["perplexity"].items()]
    text = table(rows)
    if "speed" in result:
        s = result["speed"]
        text += (f"\ninference: {s['tokens_per_second']:.0f} tokens/s (batch {s['batch_size']}), "
                 f"{s['latency_ms_per_token']:.2f} ms/token latency (batch 1)")
    if "tasks" in result:
        def cell(r, key):
            return f"{r[key]:.3f}" if key in r else "-"

        rows = [{"task": name, "domain": r["domain"], "format": r["format"], "items": r["items"],
                 "accuracy": cell(r, "accuracy"), "normalized": cell(r, "normalized_accuracy"),
                 "target loglik": cell(r, "target_loglik")}
                for name, r in result["tasks"].items()]
        text += "\n\n" + table(rows)
    return text
