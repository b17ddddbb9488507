"""Crash-safe writes and content hashes for caches.

Every file specplan writes (corpora, tokenizers, manifests, results) goes through these helpers so
that a process killed mid-write never leaves a complete-looking but truncated file behind: data is
written to a temporary name in the same folder, flushed to disk, then moved into place with
``os.replace``, which is atomic on POSIX and Windows when source and target share a file system.
Cache folders are keyed by :func:`content_hash`, so a stale cache is never mistaken for a fresh one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planner.core.errors import SpecplanError


def _fresh_name(target: Path, suffix: str) -> Path:
    """A hidden, unused sibling name; created by the caller so permissions follow the umask
    (``tempfile`` would make private 0600 files that other tools then cannot read)."""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}"


def _fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry itself must reach the disk, not only the data."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block finishes.

    The temporary file lives in the target's folder (so the final rename never crosses file
    systems) and is hidden (leading dot) so globbing for results does not pick it up. If the block
    raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final file path; parent folders are created.

    Yields:
        The temporary path to write to (it exists, empty, when the block starts).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_name(target, ".tmp")
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        with open(tmp, "r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` only if the block finishes.

    Used for multi-file artefacts (a tokenizer saved with ``save_pretrained``, saved corpus
    splits) whose readers must never see a half-written folder. An existing ``path`` is replaced:
    it is first renamed aside, so at every instant ``path`` is either absent, the old folder or the
    complete new one.

    Args:
        path: the final folder path; parent folders are created.

    Yields:
        The temporary folder to write into.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_name(target, ".tmp")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = _fresh_name(target, ".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another process finished the same folder first (two workers filling one
                # content-keyed cache entry): theirs is complete, ours is a duplicate.
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def writable_folder(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is or can become a writable folder (a probe folder
    is made and removed; nothing stays), so a bad output folder fails in a second, not after an
    hour of training.

    Raises:
        SpecplanError: ``path`` is a file, or the folder it is (or would be made in) is not
            writable.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise SpecplanError(f"{what} {folder}: {existing} is a file, not a folder; give a folder "
                            f"path")
    try:  # a real probe: os.access says yes to root on a read-only file system
        os.rmdir(tempfile.mkdtemp(prefix=".specplan-probe-", dir=existing))
    except OSError as err:
        raise SpecplanError(f"{what} {folder}: {existing} is not writable ({err.strerror}); "
                            f"give a folder you can write to") from None
    return folder


@contextlib.contextmanager
def untouched_on_error(folder: str | os.PathLike[str]) -> Iterator[None]:
    """If the block raises, remove what it added to ``folder`` (the folder itself when it did
    not exist): a command that fails before producing results leaves nothing behind."""
    target = Path(folder)
    before = set(target.iterdir()) if target.is_dir() else None
    try:
        yield
    except BaseException:
        if before is None:
            shutil.rmtree(target, ignore_errors=True)
        elif target.is_dir():
            for entry in set(target.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON atomically, so manifests stay human-readable."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def content_hash(*parts: str | bytes) -> str:
    """Return the first 16 hex digits of a SHA-256 over ``parts``, used as a cache key.

    Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` hash differently.

    Raises:
        TypeError: a part is neither ``str`` nor ``bytes`` (a programming error, not user input).
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            data = part.encode("utf-8")
        elif isinstance(part, (bytes, bytearray, memoryview)):
            data = bytes(part)
        else:
            raise TypeError(f"content_hash takes str or bytes, got {type(part).__name__}")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields whether it was acquired.

    The kernel drops the lock when the holder dies, so a killed worker never blocks a re-run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
