"""Atomic writes must never leave a complete-looking file or stray temporaries behind."""
from __future__ import annotations

import json

import pytest

from planner.core.io import (
    atomic_dir,
    atomic_path,
    content_hash,
    write_json,
    write_text,
)


def test_write_json_and_text_round_trip(tmp_path):
    target = write_json(tmp_path / "sub" / "m.json", {"a": 1, "b": ["é"]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1, "b": ["é"]}
    write_text(tmp_path / "t.txt", "hello")
    assert (tmp_path / "t.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "t.txt"]


def test_killed_write_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_killed_overwrite_keeps_old_content(tmp_path):
    target = write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new but incomplete")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "folder"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "c.txt").write_text("3")
            raise ValueError("killed")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_content_hash_is_stable_and_unambiguous():
    assert content_hash("ab", "c") != content_hash("a", "bc")
    assert content_hash("x", b"y") == content_hash("x", "y")
    assert len(content_hash("x")) == 16
    assert content_hash("") == "af5570f5a1810b7a"
    with pytest.raises(TypeError):
        content_hash(3)  # type: ignore[arg-type]
