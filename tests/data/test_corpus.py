"""Corpus loading, dedupe, splits, tokenizer cache, windows and cuts on small real files."""
from __future__ import annotations

import json
import random
import sys

import pandas as pd
import pytest
import torch

from planner.core.errors import SpecplanError
from planner.data import corpus as data
from planner.data.corpus import (
    CorpusSplits,
    Documents,
    dedupe,
    load_documents,
    load_tokenizer,
    prepare_corpus,
    split_documents,
    tokenize_to_windows,
    train_tokenizer,
)

WORDS = ("court contract patient dose gene market goal vote tax law plan cell data river "
         "the a of and to in is was for on with as by").split()


def make_docs(n: int, seed: int = 0, words: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(make_docs(50), vocab_size=300, cache_dir=tmp_path_factory.mktemp("c"))


# --------------------------------------------------------------------------------------------
# Loading


def test_load_txt_folder_recursive_sorted(tmp_path):
    corpus = tmp_path / "mycorpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "b" / "z.txt").write_text("third")
    (corpus / "a.txt").write_text("first\n\nstill first")
    (corpus / "b.txt").write_text("second")
    (corpus / "blank.txt").write_text("  \n")
    (corpus / "notes.md").write_text("ignored")
    docs = load_documents(corpus)
    assert docs.name == "mycorpus"
    assert docs.texts == ["first\n\nstill first", "second", "third"]
    assert docs.source == str(corpus)


def test_load_single_txt_splits_on_blank_lines(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("one\nline two\n\n  \n\ntwo\r\n\r\nthree\n", encoding="utf-8")
    docs = load_documents(path, name="custom")
    assert docs.texts == ["one\nline two", "two", "three"]
    assert docs.name == "custom"


def test_load_jsonl_custom_field(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"body": "alpha", "id": 1}, {"body": ""}, {"body": None}, {"body": "beta"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load_documents(path, text_field="body")
    assert (docs.name, docs.texts) == ("c", ["alpha", "beta"])


def test_load_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"text": ["a, quoted\nmultiline doc", "second"], "n": [1, 2]})
    frame.to_parquet(tmp_path / "p.parquet")
    frame.to_csv(tmp_path / "c.csv", index=False)
    for name in ("p.parquet", "c.csv"):
        assert load_documents(tmp_path / name).texts == ["a, quoted\nmultiline doc", "second"]


def test_load_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = datasets.Dataset.from_dict({"content": ["x one", "x two"], "label": [0, 1]})
    single.save_to_disk(str(tmp_path / "single"))
    assert load_documents(tmp_path / "single", text_field="content").texts == ["x one", "x two"]
    other = datasets.Dataset.from_dict({"content": ["held out"], "label": [0]})
    datasets.DatasetDict({"train": single, "test": other}).save_to_disk(str(tmp_path / "dd"))
    assert load_documents(tmp_path / "dd", text_field="content", hf_split="test").texts == [
        "held out"]
    with pytest.raises(SpecplanError, match=r"dd.*no split 'validation'.*train, test"):
        load_documents(tmp_path / "dd", text_field="content", hf_split="validation")
    with pytest.raises(SpecplanError, match=r"single.*no field 'text'.*content, label"):
        load_documents(tmp_path / "single")


def test_load_hub_spec_uses_load_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    local = tmp_path / "localhub"
    local.mkdir()
    (local / "train.jsonl").write_text('{"text": "hub doc one"}\n{"text": "hub doc two"}\n')
    docs = load_documents(f"hf:{local}")
    assert (docs.name, docs.texts) == ("localhub", ["hub doc one", "hub doc two"])
    assert docs.source == f"hf:{local}"
    with pytest.raises(SpecplanError, match=r"hf:.*nothere.*cannot load split 'train'"):
        load_documents(f"hf:{tmp_path / 'nothere'}")


def test_load_hub_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SpecplanError, match=r"hf:org/name.*pip install 'specplan\[hub\]'"):
        load_documents("hf:org/name:cfg")


def test_load_errors_name_the_input(tmp_path):
    with pytest.raises(SpecplanError, match=r"missing\.jsonl: no such file"):
        load_documents(tmp_path / "missing.jsonl")
    (tmp_path / "c.xml").write_text("<a/>")
    with pytest.raises(SpecplanError, match=r"c\.xml: unknown corpus format '\.xml'"):
        load_documents(tmp_path / "c.xml")
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    with pytest.raises(SpecplanError, match=r"blank\.txt: no non-blank documents"):
        load_documents(tmp_path / "blank.txt")
    (tmp_path / "f.jsonl").write_text('{"text": "ok"}\n{"body": "x", "id": 2}\n')
    with pytest.raises(SpecplanError, match=r"f\.jsonl:2: no field 'text'; available: body, id"):
        load_documents(tmp_path / "f.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(SpecplanError, match=r"bad\.jsonl:2: not valid JSON"):
        load_documents(tmp_path / "bad.jsonl")
    pd.DataFrame({"body": ["x"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(SpecplanError, match=r"c\.csv: no field 'text'; available: body"):
        load_documents(tmp_path / "c.csv")
    (tmp_path / "q.csv").write_text('text\n"unterminated\n')
    with pytest.raises(SpecplanError, match=r"q\.csv: malformed CSV"):
        load_documents(tmp_path / "q.csv")
    pd.DataFrame({"text": [1, 2]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(SpecplanError, match=r"n\.parquet: field 'text' holds int values"):
        load_documents(tmp_path / "n.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecplanError, match=r"empty: folder has no \.txt files"):
        load_documents(tmp_path / "empty")


def test_undecodable_bytes_name_file_and_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(SpecplanError, match=r"latin\.txt: byte 3 .*--encoding latin-1"):
        load_documents(path)
    assert load_documents(path, encoding="latin-1").texts == ["café au lait"]


# --------------------------------------------------------------------------------------------
# Dedupe and splits


def test_dedupe_normalises_whitespace_and_case_keeps_first():
    kept, dropped = dedupe(["Hello  World", "other", "hello world\n", "HELLO\tWORLD", "Other "])
    assert kept == ["Hello  World", "other"]
    assert dropped == 3


def test_split_is_deterministic_disjoint_and_order_independent():
    docs = make_docs(400)
    splits = split_documents(docs, valid_fraction=0.1, test_fraction=0.1)
    assert splits == split_documents(list(docs), valid_fraction=0.1, test_fraction=0.1)
    assert sorted(sum(splits.values(), [])) == sorted(docs)
    assert all(len(set(splits[a]) & set(splits[b])) == 0
               for a, b in [("train", "valid"), ("train", "test"), ("valid", "test")])
    assert 20 <= len(splits["valid"]) <= 60 and 20 <= len(splits["test"]) <= 60
    shuffled = random.Random(1).sample(docs, len(docs))
    again = split_documents(shuffled, valid_fraction=0.1, test_fraction=0.1)
    assert {k: set(v) for k, v in again.items()} == {k: set(v) for k, v in splits.items()}
    grown = split_documents(docs + make_docs(100, seed=7), valid_fraction=0.1, test_fraction=0.1)
    assert all(set(splits[k]) <= set(grown[k]) for k in splits)


def test_split_hash_ignores_case_and_whitespace():
    docs = make_docs(200)
    base = split_documents(docs)
    changed = split_documents([d.upper().replace(" ", "  ") for d in docs])
    assert [len(changed[k]) for k in base] == [len(base[k]) for k in base]


def test_split_small_corpus_fills_every_split():
    splits = split_documents(["one doc", "two doc", "three doc"])
    assert {k: len(v) for k, v in splits.items()} == {"train": 1, "valid": 1, "test": 1}
    pair = split_documents(["a", "b"])
    assert {k: set(v) for k, v in split_documents(["b", "a"]).items()} == {
        k: set(v) for k, v in pair.items()}
    with pytest.raises(SpecplanError, match="valid_fraction=0.6 and test_fraction=0.5"):
        split_documents(["a"], valid_fraction=0.6, test_fraction=0.5)


# --------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_round_trips_and_has_eos(tokenizer):
    text = "héllo wörld 🙂 court\n\tcontract"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == tokenizer.pad_token == data.EOS_TOKEN
    assert tokenizer.eos_token_id == 0
    assert len(tokenizer) == 300


def test_tokenizer_cache_is_reused_without_retraining(tmp_path, monkeypatch):
    texts = make_docs(20)
    first = train_tokenizer(texts, vocab_size=280, cache_dir=tmp_path)
    folders = list((tmp_path / "tokenizers").iterdir())
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached tokenizer should have been reused")

    monkeypatch.setattr(data, "_train_bpe", no_training)
    second = train_tokenizer(texts, vocab_size=280, cache_dir=tmp_path)
    assert second.get_vocab() == first.get_vocab()
    assert load_tokenizer(folders[0]).get_vocab() == first.get_vocab()
    with pytest.raises(AssertionError):
        train_tokenizer(texts, vocab_size=290, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [folders[0].name]


def test_a_tokenizer_trains_on_a_bounded_sample_spanning_the_corpus(tmp_path, monkeypatch):
    from planner.data.corpus import tokenizer_sample

    texts = [f"doc {i} " + "word " * 20 for i in range(100)]  # 10,690 characters in all
    assert tokenizer_sample(texts, 10**6) is texts
    sample = tokenizer_sample(texts, 1400)
    assert sum(map(len, sample)) <= 1400
    assert sample == texts[::8]  # every 8th document: the head and the tail both appear
    assert sample[-1].startswith("doc 96 ")
    assert tokenizer_sample(["x" * 5000], 1400) == ["x" * 1400]  # one huge document: its head
    seen = []
    real = data._train_bpe
    monkeypatch.setattr(data, "_train_bpe", lambda t, v: seen.append(list(t)) or real(t, v))
    train_tokenizer(texts, vocab_size=280, cache_dir=tmp_path, max_chars=1400)
    assert seen == [texts[::8]]


def test_tokenizer_errors(tmp_path):
    with pytest.raises(SpecplanError, match="vocab_size=100"):
        train_tokenizer(["x"], vocab_size=100, cache_dir=tmp_path)
    with pytest.raises(SpecplanError, match=r"nowhere: no tokenizer\.json"):
        load_tokenizer(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# Windows and corpus splits


def test_windows_concatenate_docs_with_eos_and_drop_tail(tokenizer):
    texts = make_docs(5)
    windows = tokenize_to_windows(texts, tokenizer, seq_len=16)
    flat = []
    for text in texts:
        flat += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert windows.ids.dtype == torch.long
    assert windows.ids.shape == (len(flat) // 16, 16)
    assert (windows.n, windows.seq_len, windows.tokens) == (len(flat) // 16, 16, windows.n * 16)
    assert windows.ids.flatten().tolist() == flat[: windows.tokens]
    assert windows.text_span[0].tolist() == [0, 0, 0, windows.text_span[0, 3]]
    assert windows.text_span[-1, 2] == 4
    picked = windows.subset(torch.tensor([2, 0]))
    assert torch.equal(picked.ids, windows.ids[[2, 0]])
    assert tokenize_to_windows([], tokenizer, 8).ids.shape == (0, 8)
    with pytest.raises(SpecplanError, match="seq_len=0"):
        tokenize_to_windows(texts, tokenizer, 0)


@pytest.fixture(scope="module")
def corpus(tokenizer):
    texts = make_docs(300, seed=3)
    return prepare_corpus(Documents("law", texts + texts[:10], "mem"), tokenizer, seq_len=16,
                          valid_fraction=0.1, test_fraction=0.1)


def test_prepare_corpus_stats_and_fingerprint(corpus, tokenizer):
    assert corpus.duplicates_dropped == 10
    assert sum(corpus.documents.values()) == 300
    assert corpus.documents == {k: len(v) for k, v in corpus.texts.items()}
    stats = corpus.stats()
    assert stats["name"] == "law" and stats["seq_len"] == 16
    assert stats["tokens"] == {s: getattr(corpus, s).tokens for s in ("train", "valid", "test")}
    assert stats["tokens"]["train"] > stats["tokens"]["valid"] > 0
    assert 0 < stats["mb"]["test"] < stats["mb"]["train"] < 1
    again = prepare_corpus(Documents("law", make_docs(300, seed=3), "mem"), tokenizer, seq_len=16,
                           valid_fraction=0.1, test_fraction=0.1)
    assert again.fingerprint == corpus.fingerprint


def test_prepare_corpus_too_small_names_corpus_tokens_and_window(tokenizer):
    docs = Documents("tiny", ["court law", "gene cell", "tax vote", "river data"], "mem")
    with pytest.raises(SpecplanError, match=r"corpus 'tiny' \(mem\) is too small: \d "
                                            r"distinct document\(s\), \d+ tokens, and its \w+ "
                                            r"split holds less than one window of 512 tokens"):
        prepare_corpus(docs, tokenizer, seq_len=512)


def test_cut_is_exact_nested_and_leaves_eval_untouched(corpus):
    small, big = corpus.cut(80, seed=1), corpus.cut(640, seed=1)
    assert (small.train.n, big.train.n) == (5, 40)
    assert corpus.cut(95, seed=1).train.n == 5
    rows = {tuple(r) for r in big.train.ids.tolist()}
    assert all(tuple(r) in rows for r in small.train.ids.tolist())
    assert torch.equal(big.cut(80, seed=1).train.ids, small.train.ids)
    assert not torch.equal(corpus.cut(80, seed=2).train.ids, small.train.ids)
    assert torch.equal(small.valid.ids, corpus.valid.ids)
    assert small.texts["test"] == corpus.texts["test"]
    assert len({corpus.fingerprint, small.fingerprint, big.fingerprint}) == 3
    assert small.fingerprint == corpus.cut(80, seed=1).fingerprint
    # Train texts shrink with the cut, nested too, and a cut of a cut gives the same text.
    assert set(small.texts["train"]) <= set(big.texts["train"])
    assert small.stats()["mb"]["train"] < big.stats()["mb"]["train"] < corpus.stats()["mb"][
        "train"]
    assert big.cut(80, seed=1).texts == small.texts
    assert small.documents["train"] == len(small.texts["train"])


def test_cut_train_text_is_exactly_the_kept_windows(corpus, tokenizer):
    small = corpus.cut(160, seed=0)
    assert small.train.n == 10
    for window, (first, _, last, _) in zip(small.train.ids, small.train.text_span.tolist()):
        decoded = tokenizer.decode(window.tolist()).split(tokenizer.eos_token)
        assert [p for p in decoded if p.strip()] == small.texts["train"][first:last + 1]


def test_cut_errors_say_what_exists(corpus):
    with pytest.raises(SpecplanError, match=r"'law': train_tokens=10 is less than one window"):
        corpus.cut(10)
    with pytest.raises(SpecplanError, match=rf"has only {corpus.train.tokens} \("):
        corpus.cut(corpus.train.tokens + 16)


def test_save_load_round_trip_and_tamper_check(corpus, tmp_path):
    small = corpus.cut(160, seed=0)
    small.save(tmp_path / "saved")
    back = CorpusSplits.load(tmp_path / "saved")
    assert back.fingerprint == small.fingerprint and back.texts == small.texts
    assert back.documents == small.documents and torch.equal(back.test.ids, small.test.ids)
    assert torch.equal(back.train.text_span, small.train.text_span)
    meta = json.loads((tmp_path / "saved" / "meta.json").read_text())
    meta["fingerprint"] = "0" * 16
    (tmp_path / "saved" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SpecplanError, match=r"saved: token windows do not match"):
        CorpusSplits.load(tmp_path / "saved")
    with pytest.raises(SpecplanError, match=r"absent: not a saved corpus"):
        CorpusSplits.load(tmp_path / "absent")
