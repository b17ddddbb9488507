"""From paths to prepared corpora: the generic corpus, the domains and one tokenizer.

Tokenized corpora are cached by (documents, tokenizer, window length), so a second plan, sweep
point or worker on the same inputs starts training at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.core.errors import SpecplanError
from planner.core.io import content_hash
from planner.data.corpus import (
    CorpusSplits,
    Documents,
    load_documents,
    load_tokenizer,
    prepare_corpus,
    train_tokenizer,
)
from planner.data.demo import DEMO_DOMAINS, build_demo_corpora

# Bumped whenever the saved corpus format changes, so old caches are never misread.
CORPUS_FORMAT = "corpus-v2"
DEMO_SEQ_LEN = 128
DEMO_VOCAB = 4096


@dataclass
class Inputs:
    generic: CorpusSplits
    domains: dict[str, CorpusSplits]
    tokenizer: object


def tokenizer_fingerprint(tokenizer) -> str:
    return content_hash(tokenizer.backend_tokenizer.to_str())


def prepared(docs: Documents, tokenizer, *, seq_len: int, cache_dir: Path) -> CorpusSplits:
    """``prepare_corpus`` with a cache keyed by content, tokenizer and window length."""
    key = content_hash(CORPUS_FORMAT, docs.name, *docs.texts, tokenizer_fingerprint(tokenizer),
                       str(seq_len))
    folder = Path(cache_dir) / "corpora" / f"{docs.name}-{key}"
    if (folder / "meta.json").exists():
        return CorpusSplits.load(folder)
    splits = prepare_corpus(docs, tokenizer, seq_len=seq_len)
    splits.save(folder)
    return splits


def load_inputs(
    generic: str | Path,
    domains: list[str | Path],
    *,
    cache_dir: str | Path,
    seq_len: int = DEMO_SEQ_LEN,
    vocab_size: int = DEMO_VOCAB,
    tokenizer_dir: str | Path | None = None,
    text_field: str = "text",
    encoding: str = "utf-8",
    domain_tokens: int | None = None,
    seed: int = 0,
) -> Inputs:
    """Load, tokenize and split the generic corpus and every domain.

    Args:
        tokenizer_dir: a local tokenizer folder; otherwise a byte-level BPE is trained on the
            generic corpus (cached by content).
        domain_tokens: cut each domain's train split to this many tokens (the domain data size).
    """
    cache_dir = Path(cache_dir)
    generic_docs = load_documents(generic, text_field=text_field, encoding=encoding)
    tokenizer = (load_tokenizer(tokenizer_dir) if tokenizer_dir else
                 train_tokenizer(generic_docs.texts, vocab_size=vocab_size, cache_dir=cache_dir))
    generic_splits = prepared(generic_docs, tokenizer, seq_len=seq_len, cache_dir=cache_dir)
    out: dict[str, CorpusSplits] = {}
    for path in domains:
        docs = load_documents(path, text_field=text_field, encoding=encoding)
        if docs.name in out:
            raise SpecplanError(f"--domain {path}: two domains are named {docs.name!r}; rename one")
        splits = prepared(docs, tokenizer, seq_len=seq_len, cache_dir=cache_dir)
        out[docs.name] = splits.cut(domain_tokens, seed=seed) if domain_tokens else splits
    return Inputs(generic_splits, out, tokenizer)


def demo_inputs(cache_dir: str | Path, domains: tuple[str, ...] = ("legal",), **kwargs) -> Inputs:
    """The embedded demo corpora (built offline from package files on first use)."""

    unknown = set(domains) - set(DEMO_DOMAINS)
    if unknown:
        raise SpecplanError(
            f"unknown demo domain(s) {', '.join(sorted(unknown))}; choose from {', '.join(DEMO_DOMAINS)}"
        )
    paths = build_demo_corpora(cache_dir)
    return load_inputs(paths["generic"], [paths[d] for d in domains], cache_dir=cache_dir, **kwargs)
