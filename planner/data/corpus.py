"""Corpora: loading documents, deduplicating, splitting, tokenizing into fixed-length windows.

The planner compares training strategies on equal footing only if every strategy sees the same
held-out documents and counts tokens the same way. This module fixes both: documents are split by
a hash of their normalised text (stable across runs, machines and input order), and every corpus
becomes non-overlapping windows of ``seq_len`` token ids, the unit that budgets are counted in.
The "domain data size" knob of the reference study (1M/8M/64M tokens per domain) is
:meth:`CorpusSplits.cut`, which draws nested subsets so that a larger budget always sees a
superset of a smaller one.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from planner.core.errors import SpecplanError
from planner.core.io import atomic_dir, content_hash, write_json

EOS_TOKEN = "<|endoftext|>"
# Bump when the tokenizer recipe changes, so cached tokenizers from an older recipe are not reused.
_TOKENIZER_RECIPE = "bytelevel-bpe-v1"
_SUFFIXES = (".txt", ".jsonl", ".parquet", ".csv")
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass
class Documents:
    """A named list of raw documents, as read from disk or the hub."""

    name: str
    texts: list[str]
    source: str


# --------------------------------------------------------------------------------------------
# Loading


def _decode(data: bytes, path: Path, encoding: str) -> str:
    """Decode file bytes, turning a codec failure into a message that points at the byte."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise SpecplanError(
            f"{path}: byte {err.start} ({data[err.start:err.start + 1]!r}) is not valid "
            f"{encoding}; re-run with --encoding latin-1 (encoding= in Python) or fix the file"
        ) from err
    except LookupError as err:
        raise SpecplanError(
            f"{path}: unknown encoding {encoding!r}; use a codec name such as utf-8 or latin-1"
        ) from err
    return text.removeprefix("\ufeff")


def _as_texts(values: list[Any], where: str, text_field: str) -> list[str]:
    """Check that a column holds text; missing values count as blank documents."""
    texts = []
    for row, value in enumerate(values):
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise SpecplanError(
                f"{where}: field {text_field!r} holds {type(value).__name__} values (row {row}), "
                f"not text; pick a text column with --text-field"
            )
        texts.append(value)
    return texts


def _missing_field(where: str, text_field: str, available: list[str]) -> SpecplanError:
    return SpecplanError(
        f"{where}: no field {text_field!r}; available: {', '.join(map(str, available)) or 'none'}; "
        f"pass the right one with --text-field"
    )


def _read_jsonl(path: Path, text_field: str, encoding: str) -> list[str]:
    texts = []
    # Split on "\n" only: JSON strings may hold raw U+2028 and friends, which splitlines() cuts.
    for number, line in enumerate(_decode(path.read_bytes(), path, encoding).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpecplanError(
                f"{path}:{number}: not valid JSON ({err.msg}); write one JSON object per line"
            ) from err
        if not isinstance(record, dict):
            raise SpecplanError(
                f"{path}:{number}: expected a JSON object like {{\"{text_field}\": ...}}, "
                f"got {type(record).__name__}"
            )
        if text_field not in record:
            raise _missing_field(f"{path}:{number}", text_field, list(record))
        texts.extend(_as_texts([record[text_field]], f"{path}:{number}", text_field))
    return texts


def _read_parquet(path: Path, text_field: str) -> list[str]:
    try:
        names = pq.read_schema(path).names
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise SpecplanError(f"{path}: not a readable parquet file ({err}); re-export it") from err
    if text_field not in names:
        raise _missing_field(str(path), text_field, names)
    values = pq.read_table(path, columns=[text_field]).column(text_field).to_pylist()
    return _as_texts(values, str(path), text_field)


def _read_csv(path: Path, text_field: str, encoding: str) -> list[str]:
    # Decode first (rather than letting pandas do it) so that a bad byte is reported exactly.
    text = _decode(path.read_bytes(), path, encoding)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SpecplanError(f"{path}: malformed CSV ({err}); check its header and quoting") from err
    if text_field not in frame.columns:
        raise _missing_field(str(path), text_field, list(frame.columns))
    return _as_texts(frame[text_field].tolist(), str(path), text_field)


def _import_datasets(what: str) -> Any:
    try:
        import datasets  # optional (the hub extra) and slow to import: only when needed
    except ImportError as err:
        raise SpecplanError(
            f"{what} needs the 'datasets' package; install it with pip install 'specplan[hub]'"
        ) from err
    return datasets


def _dataset_texts(dataset: Any, where: str, text_field: str, hf_split: str) -> list[str]:
    """Pick the split of a DatasetDict, then the text column."""
    if hasattr(dataset, "keys"):  # DatasetDict
        if hf_split not in dataset:
            raise SpecplanError(
                f"{where}: no split {hf_split!r}; available: {', '.join(dataset.keys())}; "
                f"pass one with --hf-split"
            )
        dataset = dataset[hf_split]
    if text_field not in dataset.column_names:
        raise _missing_field(where, text_field, dataset.column_names)
    return _as_texts(list(dataset[text_field]), where, text_field)


def _read_hub(spec: str, text_field: str, hf_split: str) -> tuple[str, list[str]]:
    """Load ``hf:NAME[:CONFIG]`` with ``datasets.load_dataset``; returns (default name, texts)."""
    datasets = _import_datasets(f"loading {spec!r}")
    hub_name, _, config = spec[len("hf:"):].partition(":")
    if not hub_name:
        raise SpecplanError(f"{spec!r}: no dataset name; write hf:NAME or hf:NAME:CONFIG")
    try:
        dataset = datasets.load_dataset(hub_name, config or None, split=hf_split)
    except Exception as err:  # hub, network and builder errors all mean "cannot load this"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecplanError(
            f"{spec!r}: cannot load split {hf_split!r} ({first_line}); check the name, config, "
            f"split and network (or download it and pass a local path)"
        ) from err
    default_name = Path(hub_name).name + (f"-{config}" if config else "")
    return default_name, _dataset_texts(dataset, spec, text_field, hf_split)


def _read_folder(folder: Path, text_field: str, hf_split: str, encoding: str) -> list[str]:
    if any((folder / marker).is_file() for marker in _DATASET_MARKERS):
        datasets = _import_datasets(f"reading the saved dataset {folder}")
        return _dataset_texts(datasets.load_from_disk(str(folder)), str(folder), text_field,
                              hf_split)
    files = sorted(folder.rglob("*.txt"), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise SpecplanError(
            f"{folder}: folder has no .txt files and is not a saved dataset; put one document per "
            f".txt file there, or pass a .jsonl, .parquet or .csv file"
        )
    return [_decode(path.read_bytes(), path, encoding) for path in files]


def load_documents(path: str | os.PathLike[str], *, text_field: str = "text",
                   name: str | None = None, hf_split: str = "train",
                   encoding: str = "utf-8") -> Documents:
    """Read a corpus from disk or the hub into a list of documents.

    Supported inputs: a folder of ``.txt`` files (recursive, sorted, one document per file); a
    ``.txt`` file (documents separated by blank lines); ``.jsonl`` (one object per line);
    ``.parquet`` and ``.csv`` (column ``text_field``); a folder written by
    ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (split ``hf_split``); and
    ``hf:NAME[:CONFIG]`` for ``datasets.load_dataset``. Blank documents are dropped.

    Args:
        path: file, folder or ``hf:`` spec.
        text_field: the field or column that holds the text.
        name: corpus name; defaults to the file or folder stem (or the hub dataset name).
        hf_split: split to read from a DatasetDict or the hub.
        encoding: text encoding of ``.txt``, ``.jsonl`` and ``.csv`` files.

    Raises:
        SpecplanError: missing path, unknown format, undecodable bytes, missing field, or no
            non-blank documents.
    """
    spec = os.fspath(path)
    if spec.startswith("hf:"):
        default_name, texts = _read_hub(spec, text_field, hf_split)
    else:
        source = Path(spec)
        if not source.exists():
            raise SpecplanError(f"{source}: no such file or folder; check the corpus path")
        suffix = source.suffix.lower()
        default_name = source.name if source.is_dir() else source.stem
        if source.is_dir():
            texts = _read_folder(source, text_field, hf_split, encoding)
        elif suffix == ".txt":
            texts = [d.strip() for d in _BLANK_LINES.split(_decode(source.read_bytes(), source,
                                                                   encoding))]
        elif suffix == ".jsonl":
            texts = _read_jsonl(source, text_field, encoding)
        elif suffix == ".parquet":
            texts = _read_parquet(source, text_field)
        elif suffix == ".csv":
            texts = _read_csv(source, text_field, encoding)
        else:
            raise SpecplanError(
                f"{source}: unknown corpus format {suffix or '(no extension)'!r}; use a folder of "
                f".txt files, {', '.join(_SUFFIXES)}, a saved dataset folder or hf:NAME"
            )
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SpecplanError(
            f"{spec}: no non-blank documents (text field {text_field!r}); check the path and field"
        )
    return Documents(name=name or default_name, texts=texts, source=spec)


# --------------------------------------------------------------------------------------------
# Deduplication and splits


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _text_key(text: str) -> int:
    """A 64-bit hash of the normalised text: the document's identity for dedupe and splits."""
    return int.from_bytes(hashlib.sha256(_normalise(text).encode("utf-8")).digest()[:8], "big")


def text_keys(texts: list[str]) -> list[int]:
    """The normalised-text hash of each document (:func:`_text_key`), e.g. to measure overlap."""
    return [_text_key(t) for t in texts]


def dedupe(texts: list[str]) -> tuple[list[str], int]:
    """Drop documents whose whitespace- and case-normalised text was already seen.

    Exact duplicates inflate token counts and, worse, leak training text into held-out splits.

    Returns:
        The kept documents (first occurrence, original order) and the number dropped.
    """
    seen: set[str] = set()
    kept = []
    for text in texts:
        key = _normalise(text)
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept, len(texts) - len(kept)


def split_documents(texts: list[str], *, valid_fraction: float = 0.05,
                    test_fraction: float = 0.05) -> dict[str, list[str]]:
    """Split documents into train/valid/test by a hash of their normalised text.

    A document's split depends on its text only, so results are stable across runs and machines,
    independent of input order, and adding documents never moves existing ones. With 3 or more
    documents, an empty split is filled by moving the lowest-hash document of the largest split
    (a deterministic fix for tiny corpora, where the hash rule alone may leave a split empty).

    Args:
        texts: the documents (deduplicate first: duplicates share a split anyway).
        valid_fraction: expected share of documents in ``valid``.
        test_fraction: expected share of documents in ``test``.

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each in input order.

    Raises:
        SpecplanError: fractions outside [0, 1) or summing to 1 or more.
    """
    if min(valid_fraction, test_fraction) < 0 or valid_fraction + test_fraction >= 1:
        raise SpecplanError(
            f"valid_fraction={valid_fraction} and test_fraction={test_fraction}: each must be >= 0 "
            f"and their sum < 1 (e.g. 0.05 each)"
        )
    keys = [_text_key(t) for t in texts]
    cut_valid = valid_fraction * 2**64
    cut_test = (valid_fraction + test_fraction) * 2**64
    members: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for index, key in enumerate(keys):
        split = "valid" if key < cut_valid else "test" if key < cut_test else "train"
        members[split].append(index)
    if len(texts) >= 3:
        wanted = {"train": True, "valid": valid_fraction > 0, "test": test_fraction > 0}
        for split in ("valid", "test", "train"):
            if wanted[split] and not members[split]:
                donor = max(members, key=lambda s: len(members[s]))
                moved = min(members[donor], key=lambda i: (keys[i], i))
                members[donor].remove(moved)
                members[split].append(moved)
    return {split: [texts[i] for i in sorted(idx)] for split, idx in members.items()}


# --------------------------------------------------------------------------------------------
# Tokenizer


def _train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style): any text round-trips, no unknown tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return tokenizer


#: Characters of text a tokenizer trains on at most: about 100 MB, which BPE merges converge on
#: (a bigger sample changes few merges) and which trains in minutes in a few GB of memory.
TOKENIZER_SAMPLE_CHARS = 100_000_000


def tokenizer_sample(texts: list[str], max_chars: int = TOKENIZER_SAMPLE_CHARS) -> list[str]:
    """``texts`` when they hold at most ``max_chars`` characters; else every k-th document
    (k the smallest stride that fits), so the sample spans the whole corpus, not its head."""
    total = sum(len(t) for t in texts)
    if total <= max_chars:
        return texts
    stride = -(-total // max_chars)
    sample, chars = [], 0
    for text in texts[::stride]:
        if chars + len(text) > max_chars:
            if not sample:  # one document larger than the whole sample: its head
                sample.append(text[:max_chars])
            break
        sample.append(text)
        chars += len(text)
    return sample


def train_tokenizer(texts: list[str], *, vocab_size: int = 4096,
                    cache_dir: str | os.PathLike[str],
                    max_chars: int = TOKENIZER_SAMPLE_CHARS) -> PreTrainedTokenizerFast:
    """Train (or reuse) a byte-level BPE tokenizer on ``texts`` (at most ``max_chars`` of them:
    :func:`tokenizer_sample`).

    The result is cached in ``cache_dir/tokenizers/<hash of texts and vocab_size>/`` as a
    ``save_pretrained`` folder, written atomically, so repeated plans skip training and the folder
    can be copied next to an exported model.

    Args:
        texts: training documents.
        vocab_size: target vocabulary size (at least 257: 256 bytes plus ``<|endoftext|>``).
        cache_dir: specplan's cache folder.

    Raises:
        SpecplanError: no non-blank text or a vocabulary too small for byte-level BPE.
    """
    if vocab_size < 257:
        raise SpecplanError(
            f"vocab_size={vocab_size} is too small; byte-level BPE needs at least 257 "
            f"(256 bytes + {EOS_TOKEN}); use e.g. --vocab-size 4096"
        )
    if not any(t.strip() for t in texts):
        raise SpecplanError("train_tokenizer: no non-blank text to train on; check the corpus")
    texts = tokenizer_sample(texts, max_chars)
    key = content_hash(_TOKENIZER_RECIPE, str(vocab_size), *texts)
    folder = Path(cache_dir) / "tokenizers" / key
    if not (folder / "tokenizer.json").is_file():
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=_train_bpe(texts, vocab_size),
            eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=EOS_TOKEN,
        )
        with atomic_dir(folder) as tmp:
            wrapped.save_pretrained(tmp)
    return load_tokenizer(folder)


def load_tokenizer(folder: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (local files only, never the hub).

    Raises:
        SpecplanError: the folder has no ``tokenizer.json``.
    """
    path = Path(folder)
    if not (path / "tokenizer.json").is_file():
        raise SpecplanError(
            f"{path}: no tokenizer.json; pass a folder written by save_pretrained or train one"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


# --------------------------------------------------------------------------------------------
# Windows


@dataclass
class TokenWindows:
    """Non-overlapping windows of token ids: the unit of training and evaluation.

    Attributes:
        ids: ``(n_windows, seq_len)`` ``torch.long``.
        text_span: optional ``(n_windows, 4)`` ``torch.long`` rows ``(first_doc, first_char,
            last_doc, end_char)``: where each window's text lies in the tokenized document list,
            so a subset of windows can be traced back to exactly the text it holds.
    """

    ids: torch.Tensor
    text_span: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Number of windows."""
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        """Tokens per window."""
        return int(self.ids.shape[1])

    @property
    def tokens(self) -> int:
        """Total tokens, ``n * seq_len``."""
        return self.n * self.seq_len

    def subset(self, index: torch.Tensor) -> TokenWindows:
        """Windows selected by an index or boolean mask tensor."""
        span = None if self.text_span is None else self.text_span[index]
        return TokenWindows(ids=self.ids[index], text_span=span)


def _encode(texts: list[str], tokenizer: Any) -> list[Any]:
    """Batch-encode documents without special tokens into ``tokenizers.Encoding`` objects.

    The backend is called directly (in parallel, in Rust) because windows need the character
    offsets of a few boundary tokens, which the ``transformers`` wrapper would materialise for
    every token.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SpecplanError(
            f"tokenizer {type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; "
            f"load it with PreTrainedTokenizerFast or train one with train_tokenizer"
        )
    return backend.encode_batch(list(texts), add_special_tokens=False) if texts else []


def tokenize_to_windows(texts: list[str], tokenizer: Any, seq_len: int) -> TokenWindows:
    """Encode documents, join them with eos, and cut into windows of ``seq_len`` tokens.

    Each document is followed by the tokenizer's eos token, so a model learns where documents end;
    the incomplete tail is dropped so every window is full (no padding to mask).

    Raises:
        SpecplanError: ``seq_len`` < 1, or a tokenizer that is not fast or has no eos token.
    """
    if seq_len < 1:
        raise SpecplanError(f"seq_len={seq_len}: must be a positive number of tokens")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SpecplanError(
            f"tokenizer {type(tokenizer).__name__} has no eos token; set tokenizer.eos_token"
        )
    encoded = _encode(texts, tokenizer)
    lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    total = int(lengths.sum())
    flat = np.fromiter(chain.from_iterable(chain(e.ids, (eos,)) for e in encoded),
                       dtype=np.int64, count=total)
    n = total // seq_len
    ends = np.cumsum(lengths)
    firsts = np.arange(n, dtype=np.int64) * seq_len
    lasts = firsts + seq_len - 1

    def char_at(position: int, side: int) -> tuple[int, int]:
        """(document, character offset) of a token's start (side 0) or end (side 1)."""
        doc = int(np.searchsorted(ends, position, side="right"))
        token = position - int(ends[doc] - lengths[doc])
        if token == lengths[doc] - 1:  # the eos after the document
            return doc, len(texts[doc])
        return doc, encoded[doc].token_to_chars(token)[side]

    span = [(*char_at(int(a), 0), *char_at(int(b), 1)) for a, b in zip(firsts, lasts)]
    return TokenWindows(ids=torch.from_numpy(flat[: n * seq_len].reshape(n, seq_len)),
                        text_span=torch.tensor(span, dtype=torch.long).reshape(n, 4))


# --------------------------------------------------------------------------------------------
# Corpus splits

_SPLITS = ("train", "valid", "test")


def _fingerprint(windows: dict[str, TokenWindows]) -> str:
    parts: list[str | bytes] = []
    for split in _SPLITS:
        ids = windows[split].ids
        parts += [split, str(tuple(ids.shape)), ids.contiguous().numpy().tobytes()]
    return content_hash(*parts)


@dataclass
class CorpusSplits:
    """A tokenized corpus split into train/valid/test windows, ready for training.

    Attributes:
        name: corpus name.
        train, valid, test: the windows of each split.
        documents: documents per split.
        duplicates_dropped: duplicates removed before splitting.
        fingerprint: content hash of the windows, the key for downstream caches.
        texts: the documents of each split (embedders for clustering need text, not ids).
    """

    name: str
    train: TokenWindows
    valid: TokenWindows
    test: TokenWindows
    documents: dict[str, int]
    duplicates_dropped: int
    fingerprint: str
    texts: dict[str, list[str]] = field(repr=False)

    @property
    def seq_len(self) -> int:
        """Tokens per window (the same in every split)."""
        return self.train.seq_len

    def _windows(self) -> dict[str, TokenWindows]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def cut(self, train_tokens: int, seed: int = 0) -> CorpusSplits:
        """Keep a seeded random subset of ``floor(train_tokens / seq_len)`` train windows.

        This is the domain-data-size knob. Windows are ranked by a seeded hash of their content,
        so cuts are nested (the 8k cut is a subset of the 64k cut for the same seed, even when cut
        from an already-cut corpus). Valid and test are untouched. ``texts["train"]`` becomes the
        text the kept windows hold (one piece per window and document it touches, so
        ``documents["train"]`` counts pieces): text-based steps such as clustering histograms then
        see exactly the budgeted domain data, not the whole corpus.

        Raises:
            SpecplanError: fewer tokens than one window, or more than the train split holds.
        """
        n_keep = int(train_tokens) // self.seq_len
        if n_keep < 1:
            raise SpecplanError(
                f"corpus {self.name!r}: train_tokens={train_tokens} is less than one window of "
                f"seq_len={self.seq_len}; ask for at least {self.seq_len} tokens"
            )
        if n_keep > self.train.n:
            raise SpecplanError(
                f"corpus {self.name!r}: asked for {train_tokens} train tokens but it has only "
                f"{self.train.tokens} ({self.train.n} windows of {self.seq_len}); ask for at most "
                f"that or add text"
            )
        key = str(seed).encode("utf-8")
        rows = self.train.ids.contiguous().numpy()
        ranks = [hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest() for row in rows]
        order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
        train = self.train.subset(torch.tensor(sorted(order[:n_keep]), dtype=torch.long))
        texts = dict(self.texts)
        documents = dict(self.documents)
        if train.text_span is not None:
            train, texts["train"] = _window_pieces(train, self.texts["train"])
            documents["train"] = len(texts["train"])
        windows = {**self._windows(), "train": train}
        return replace(self, train=train, texts=texts, documents=documents,
                       fingerprint=_fingerprint(windows))

    def stats(self) -> dict[str, Any]:
        """Sizes per split: documents, tokens (in full windows) and MB of UTF-8 text."""
        return {
            "name": self.name,
            "seq_len": self.seq_len,
            "documents": dict(self.documents),
            "tokens": {s: w.tokens for s, w in self._windows().items()},
            "mb": {s: sum(len(t.encode("utf-8")) for t in self.texts[s]) / 1e6 for s in _SPLITS},
            "duplicates_dropped": self.duplicates_dropped,
            "fingerprint": self.fingerprint,
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ids (safetensors), texts and metadata (JSON) into ``folder`` atomically."""
        tensors = {}
        for split, windows in self._windows().items():
            tensors[split] = windows.ids.contiguous()
            if windows.text_span is not None:
                tensors[f"{split}.text_span"] = windows.text_span.contiguous()
        meta = {"name": self.name, "documents": self.documents,
                "duplicates_dropped": self.duplicates_dropped, "fingerprint": self.fingerprint}
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "windows.safetensors"))
            write_json(tmp / "texts.json", self.texts)
            write_json(tmp / "meta.json", meta)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> CorpusSplits:
        """Read a folder written by :meth:`save`, checking the windows against the fingerprint.

        Raises:
            SpecplanError: missing files or a fingerprint mismatch (a damaged cache).
        """
        path = Path(folder)
        needed = [path / n for n in ("windows.safetensors", "texts.json", "meta.json")]
        if not all(p.is_file() for p in needed):
            raise SpecplanError(
                f"{path}: not a saved corpus (needs windows.safetensors, texts.json, meta.json); "
                f"prepare the corpus again"
            )
        tensors = load_file(str(needed[0]))
        texts = json.loads(needed[1].read_text(encoding="utf-8"))
        meta = json.loads(needed[2].read_text(encoding="utf-8"))
        windows = {s: TokenWindows(tensors[s], tensors.get(f"{s}.text_span")) for s in _SPLITS}
        if _fingerprint(windows) != meta["fingerprint"]:
            raise SpecplanError(
                f"{path}: token windows do not match the saved fingerprint; delete the folder and "
                f"prepare the corpus again"
            )
        return cls(name=meta["name"], **windows, documents=meta["documents"],
                   duplicates_dropped=meta["duplicates_dropped"],
                   fingerprint=meta["fingerprint"], texts=texts)


def _window_pieces(windows: TokenWindows, texts: list[str]) -> tuple[TokenWindows, list[str]]:
    """Replace documents by the text the windows hold, one piece per window and document.

    Returns the windows re-pointed at the pieces, and the pieces (blank ones dropped, unless a
    window holds nothing else).
    """
    pieces: list[str] = []
    spans = []
    for first_doc, first_char, last_doc, end_char in windows.text_span.tolist():
        own = [texts[d] for d in range(first_doc, last_doc + 1)]
        own[-1] = own[-1][:end_char]
        own[0] = own[0][first_char:]
        kept = [p for p in own if p.strip()] or own[:1]
        spans.append((len(pieces), 0, len(pieces) + len(kept) - 1, len(kept[-1])))
        pieces += kept
    span = torch.tensor(spans, dtype=torch.long).reshape(-1, 4)
    return TokenWindows(ids=windows.ids, text_span=span), pieces


def prepare_corpus(docs: Documents, tokenizer: Any, *, seq_len: int,
                   valid_fraction: float = 0.05, test_fraction: float = 0.05) -> CorpusSplits:
    """Deduplicate, split and tokenize a corpus into train/valid/test windows.

    Raises:
        SpecplanError: a split smaller than one window (names the corpus, its tokens and the
            window size).
    """
    texts, dropped = dedupe(docs.texts)
    split_texts = split_documents(texts, valid_fraction=valid_fraction,
                                  test_fraction=test_fraction)
    windows = {s: tokenize_to_windows(split_texts[s], tokenizer, seq_len) for s in _SPLITS}
    for split, win in windows.items():
        if win.n == 0:
            tokens = sum(len(e) + 1 for e in _encode(texts, tokenizer))
            held_out = min(f for f in (valid_fraction, test_fraction, 1.0) if f > 0)
            raise SpecplanError(
                f"corpus {docs.name!r} ({docs.source}) is too small: {len(texts)} distinct "
                f"document(s), {tokens} tokens, and its {split} split holds less than one "
                f"window of {seq_len} tokens; add text: train, valid and test each need a "
                f"window, so it needs at least 3 documents and about "
                f"{math.ceil(seq_len / held_out)} tokens"
            )
    return CorpusSplits(
        name=docs.name, **windows,
        documents={s: len(split_texts[s]) for s in _SPLITS},
        duplicates_dropped=dropped, fingerprint=_fingerprint(windows), texts=split_texts,
    )
