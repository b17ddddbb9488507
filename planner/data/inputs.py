"""From paths to prepared corpora: the generic corpus, the domains and one tokenizer.

Tokenized corpora are cached by (documents, tokenizer, window length), so a second plan, sweep
point or worker on the same inputs starts training at once.
"""
from __future__ import annotations

import logging
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
    text_keys,
    train_tokenizer,
)
from planner.data.demo import DEMO_DOMAINS, build_demo_corpora

# Bumped whenever the saved corpus format changes, so old caches are never misread.
CORPUS_FORMAT = "corpus-v2"
DEMO_SEQ_LEN = 128
DEMO_VOCAB = 4096
# A domain with at least this share of its documents in the generic corpus is hardly a domain.
OVERLAP_WARNING = 0.5

log = logging.getLogger("specplan")


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
    log.info(f"tokenizing {docs.name} ({len(docs.texts)} documents) into windows of {seq_len}")
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
    log.info(f"reading the generic corpus {generic}")
    generic_docs = load_documents(generic, text_field=text_field, encoding=encoding)
    domain_docs = []
    for path in domains:  # every file is read (and checked) before the slow steps start
        log.info(f"reading the domain corpus {path}")
        docs = load_documents(path, text_field=text_field, encoding=encoding)
        if docs.name in (d.name for d in domain_docs):
            raise SpecplanError(f"--domain {path}: two domains are named {docs.name!r}; rename one")
        domain_docs.append(docs)
    generic_keys = set(text_keys(generic_docs.texts))
    for docs in domain_docs:
        warn_overlap(docs, generic_docs, generic_keys)
    if not tokenizer_dir:
        log.info(f"training a {vocab_size}-token BPE tokenizer on the generic corpus "
                 f"(cached after the first run)")
    tokenizer = (load_tokenizer(tokenizer_dir) if tokenizer_dir else
                 train_tokenizer(generic_docs.texts, vocab_size=vocab_size, cache_dir=cache_dir))
    generic_splits = prepared(generic_docs, tokenizer, seq_len=seq_len, cache_dir=cache_dir)
    out: dict[str, CorpusSplits] = {}
    for docs in domain_docs:
        splits = prepared(docs, tokenizer, seq_len=seq_len, cache_dir=cache_dir)
        out[docs.name] = splits.cut(domain_tokens, seed=seed) if domain_tokens else splits
    return Inputs(generic_splits, out, tokenizer)


def warn_overlap(domain: Documents, generic: Documents, generic_keys: set[int]) -> float:
    """Warn when a domain is (mostly) the generic corpus: specializing on text the pretraining
    already saw measures nothing. Returns the share of the domain's documents whose
    normalised text is in the generic corpus (1.0 for the same file)."""
    same_file = (not generic.source.startswith("hf:")
                 and Path(domain.source).resolve() == Path(generic.source).resolve())
    keys = text_keys(domain.texts)
    share = 1.0 if same_file else sum(k in generic_keys for k in keys) / len(keys)
    if share >= OVERLAP_WARNING:
        what = "is the generic corpus file" if same_file else "overlaps the generic corpus"
        log.warning(f"domain {domain.name!r} ({domain.source}) {what}: {share:.0%} of its "
                    f"{len(keys)} documents are in it; give a domain corpus the pretraining does "
                    f"not contain")
    return share


def demo_inputs(cache_dir: str | Path, domains: tuple[str, ...] = ("legal",), **kwargs) -> Inputs:
    """The embedded demo corpora (built offline from package files on first use)."""

    unknown = set(domains) - set(DEMO_DOMAINS)
    if unknown:
        raise SpecplanError(
            f"unknown demo domain(s) {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(DEMO_DOMAINS)}"
        )
    paths = build_demo_corpora(cache_dir)
    return load_inputs(paths["generic"], [paths[d] for d in domains], cache_dir=cache_dir, **kwargs)
