"""Demo corpora from installed package files: complete, disjoint from generic, reused, sized."""
from __future__ import annotations

import json

import pytest

from planner.core.errors import SpecplanError
from planner.data import demo as demo_data
from planner.data.corpus import load_documents, train_tokenizer
from planner.data.demo import DEMO_DOMAINS, build_demo_corpora, demo_table

NAMES = {*DEMO_DOMAINS, "generic"}


@pytest.fixture
def fake_sources(monkeypatch):
    """Small synthetic sources: the manifest, reuse and table logic do not need real text (the
    full-demo test covers that), and the machine is shared."""
    def source(domain):
        docs = [f"{domain} document {i}: " + f"{domain} words " * (i % 7 + 3) for i in range(40)]
        return lambda: docs + [docs[0].upper().replace(" ", "  ")]  # a near-duplicate

    monkeypatch.setattr(demo_data, "_SOURCES", {d: source(d) for d in DEMO_DOMAINS})


def _texts(paths):
    return {name: load_documents(path).texts for name, path in paths.items()}


def test_full_demo_has_six_disjoint_corpora_and_is_reused(tmp_path, monkeypatch):
    paths = build_demo_corpora(tmp_path)
    assert set(paths) == NAMES and all(p.parent == tmp_path / "demo" for p in paths.values())
    texts = _texts(paths)
    generic = set(texts["generic"])
    for domain in DEMO_DOMAINS:
        assert len(texts[domain]) >= 20, domain
        assert not generic & set(texts[domain]), f"{domain} documents leaked into generic"
        megabytes = sum(len(t.encode("utf-8")) for t in texts[domain]) / 1e6
        assert 1.0 < megabytes <= 2.5, (domain, megabytes)  # about half of a 4 MB cap
    assert len(generic) == len(texts["generic"]) >= 5 * 20
    assert not any(t.startswith("key:") or "short_name:" in t for t in texts["legal"])
    assert not any('def: "' in t or "[https://orcid" in t for t in texts["biomedical"])
    assert all(len(t.splitlines()) <= 200 for t in texts["code"])
    assert sum("def " in t for t in texts["code"]) > len(texts["code"]) / 2
    assert sum("Congress" in t for t in texts["speeches"]) > len(texts["speeches"]) / 2
    assert sum("said" in t for t in texts["news"]) > len(texts["news"]) / 2
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert manifest["files"]["news"]["documents"] == len(texts["news"])

    stamps = {name: path.stat().st_mtime_ns for name, path in paths.items()}

    def no_rebuild():
        raise AssertionError("the demo corpora should have been reused")

    monkeypatch.setattr(demo_data, "_SOURCES", {name: no_rebuild for name in DEMO_DOMAINS})
    assert build_demo_corpora(tmp_path) == paths
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == stamps
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(
        [f"{n}.jsonl" for n in NAMES] + ["manifest.json"])


def test_changed_parameters_or_damaged_file_rebuild(tmp_path, fake_sources):
    paths = build_demo_corpora(tmp_path, max_mb_per_source=0.001)
    texts = _texts(paths)
    before = paths["generic"].read_text()
    assert all(0 < sum(map(len, texts[d])) <= 1000 for d in DEMO_DOMAINS)
    other = build_demo_corpora(tmp_path, max_mb_per_source=0.001, generic_fraction=0.3)
    assert other["generic"].read_text() != before
    paths["legal"].write_text("")  # a damaged file is noticed through the manifest's sizes
    assert build_demo_corpora(tmp_path, max_mb_per_source=0.001) == paths
    assert paths["generic"].read_text() == before and paths["legal"].stat().st_size > 0


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(demo_data._PACKAGES, "speeches", "sotu-not-installed")
    with pytest.raises(SpecplanError, match=r"'sotu-not-installed' is not installed.*"
                                            r"pip install 'specplan\[demo\]' \(or make demo\)"):
        build_demo_corpora(tmp_path)
    assert not (tmp_path / "demo").exists()


def test_parameters_are_checked(tmp_path):
    with pytest.raises(SpecplanError, match="generic_fraction=1"):
        build_demo_corpora(tmp_path, generic_fraction=1)
    with pytest.raises(SpecplanError, match="max_mb_per_source=0"):
        build_demo_corpora(tmp_path, max_mb_per_source=0)


def test_demo_table_counts_tokens_and_is_cached(tmp_path, fake_sources, monkeypatch):
    paths = build_demo_corpora(tmp_path)
    table = demo_table(tmp_path, seq_len=16)  # trains the demo's own tokenizer on generic
    assert list(table.columns) == ["domain", "documents", "tokens", "windows", "MB"]
    assert set(table["domain"]) == NAMES
    assert table["documents"].sum() == 5 * 40  # the upper-case duplicate of document 0 is dropped
    news = load_documents(paths["news"]).texts
    tokenizer = train_tokenizer(load_documents(paths["generic"]).texts, vocab_size=4096,
                                cache_dir=tmp_path)
    row = table.set_index("domain").loc["news"]
    assert row["documents"] == len(news) > 10
    assert row["tokens"] == sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
                                for t in news)
    assert row["windows"] == row["tokens"] // 16
    assert row["MB"] == pytest.approx(sum(len(t) for t in news) / 1e6)

    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("recounted"))
    assert demo_table(tmp_path, seq_len=16).equals(table)
