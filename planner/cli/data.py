"""``specplan data demo | stats``: build the demo corpora, describe corpora."""
from __future__ import annotations

import click

from planner.cli._shared import (
    Ctx,
)
from planner.core.text import table


@click.group()
def data() -> None:
    """Build the demo corpora or describe corpora."""


@data.command("demo")
@click.pass_obj
def data_demo(obj: Ctx) -> None:
    """Build the demo corpora (legal, biomedical, news, speeches, code, generic) offline."""
    from planner.data.demo import build_demo_corpora, demo_table

    paths = build_demo_corpora(obj.cache)
    frame = demo_table(obj.cache)
    obj.emit({"paths": {k: str(v) for k, v in paths.items()}, "table": frame.to_dict("records")},
             f"demo corpora in {obj.cache / 'demo'}\n" + frame.to_string(index=False))


@data.command("stats")
@click.argument("paths", nargs=-1, required=True)
@click.option("--text-field", default="text", show_default=True, help="JSONL field / column.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Text encoding of .txt/.jsonl/.csv files (e.g. latin-1).")
@click.option("--seq-len", default=128, show_default=True, help="Tokens per window.")
@click.option("--tokenizer", "tokenizer_dir", default=None, help="Local tokenizer folder.")
@click.option("--vocab-size", default=4096, show_default=True,
              help="BPE vocabulary trained on the first corpus when no tokenizer is given.")
@click.pass_obj
def data_stats(obj: Ctx, paths, text_field, encoding, seq_len, tokenizer_dir,
               vocab_size) -> None:
    """Documents, tokens and sizes per split of each corpus (first one trains the tokenizer)."""
    from planner.data.inputs import load_inputs

    inputs = load_inputs(paths[0], list(paths[1:]), cache_dir=obj.cache, seq_len=seq_len,
                         vocab_size=vocab_size, tokenizer_dir=tokenizer_dir, text_field=text_field,
                         encoding=encoding)
    rows = []
    for splits in [inputs.generic, *inputs.domains.values()]:
        s = splits.stats()
        rows.append({"corpus": s["name"], "documents": sum(s["documents"].values()),
                     **{f"{k} tokens": v for k, v in s["tokens"].items()},
                     "MB": round(sum(s["mb"].values()), 2),
                     "duplicates dropped": s["duplicates_dropped"]})
    obj.emit(rows, table(rows))
