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


@data.command("task")
@click.argument("domain_file")
@click.option("--out", required=True, help="Task file to write (JSONL, multiple choice).")
@click.option("--items", type=int, default=100, show_default=True,
              help="Items (held-out documents are reused with new cut places).")
@click.option("--choices", type=int, default=4, show_default=True, help="Choices per item.")
@click.option("--context-chars", type=int, default=300, show_default=True,
              help="Characters of document before each cut.")
@click.option("--continuation-chars", type=int, default=60, show_default=True,
              help="Characters of each choice.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["valid", "test"]),
              help="Held-out split the documents come from.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field / column.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def data_task(obj: Ctx, domain_file, out, split, text_field, **options) -> None:
    """A multiple-choice task "which continuation belongs to this document" from a domain's
    held-out documents (distractors: other held-out documents of the same domain)."""
    from planner.data.tasks import write_continuation_task

    result = write_continuation_task(domain_file, out, split=split, text_field=text_field,
                                     **options)
    obj.emit(result, f"{result['items']} items from {result['documents']} held-out "
                     f"{result['domain']} documents written to {result['path']}\n"
                     f"score a model on it: specplan eval MODEL --domain {domain_file} "
                     f"--task {result['domain']}={result['path']}")
