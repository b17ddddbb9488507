"""``specplan models [SIZE...]``: the model presets (or the sizes given), with their exact
parameter counts, FLOPs per token and training memory."""
from __future__ import annotations

import click

from planner.cli._shared import Ctx


def _table(cards: list[dict]) -> str:
    from planner.core.units import format_count

    header = ("name", "params", "non-emb", "train FLOPs/token", "infer FLOPs/token",
              "train GiB (bf16)", "shape")
    rows = [(c["name"], format_count(c["params"]), format_count(c["params_non_embedding"]),
             f"{c['train_flops_per_token']:.3g}", f"{c['inference_flops_per_token']:.3g}",
             f"{c['train_memory_bytes_bf16'] / 2**30:.2f}",
             f"{c['family']} d={c['d']} L={c['layers']} H={c['heads']}"
             + (f" kv={c['kv_heads']}" if c["kv_heads"] != c["heads"] else "")
             + f" ff={c['ff']}" + ("" if c["tied"] else " untied"))
            for c in cards]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


@click.command("models")
@click.argument("sizes", nargs=-1)
@click.option("--vocab-size", type=int, default=32768, show_default=True,
              help="Vocabulary the counts are for (a plan uses its tokenizer's).")
@click.option("--seq-len", type=int, default=1024, show_default=True,
              help="Window the FLOPs (attention context) and memory are for.")
@click.pass_obj
def models_cmd(obj: Ctx, sizes, vocab_size, seq_len) -> None:
    """List the model presets (or the SIZES given: presets, specs, config folders).

    Training memory is for one window per pass under bf16 autocast: fp32 weights, gradients
    and Adam moments (16 bytes per parameter) plus activations; a bigger --micro-batch adds
    activations. Any size here can be given to `run --small`, `plan --sizes` or `--large`.
    """
    from planner.core.errors import SpecplanError
    from planner.engine.models import PRESETS, model_card

    for name, value in (("--vocab-size", vocab_size), ("--seq-len", seq_len)):
        if value < 1:
            raise SpecplanError(f"{name} {value}: must be at least 1")
    cards = [model_card(size, vocab_size=vocab_size, seq_len=seq_len)
             for size in (sizes or PRESETS)]
    obj.emit(cards, f"vocabulary {vocab_size}, window {seq_len}\n" + _table(cards))
