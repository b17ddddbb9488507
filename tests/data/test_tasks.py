"""The held-out continuation task: valid task files, deterministic, only held-out text."""
import json

import pytest

from planner.core.errors import SpecplanError
from planner.data.corpus import load_documents, split_documents
from planner.data.tasks import continuation_items
from planner.engine.tasks import load_task
from tests.conftest import specplan, synthetic_documents


def test_items_come_from_their_document_and_distractors_from_others():
    docs = synthetic_documents("law", 10, seed=3)
    items = continuation_items(docs, items=30, choices=4, context_chars=80,
                               continuation_chars=30, seed=1)
    assert len(items) == 30 and items == continuation_items(
        docs, items=30, choices=4, context_chars=80, continuation_chars=30, seed=1)
    assert items != continuation_items(docs, items=30, choices=4, context_chars=80,
                                       continuation_chars=30, seed=2)
    for item in items:
        right = item["choices"][item["answer"]]
        (own,) = [d for d in docs if item["question"] + right in d]
        assert len(item["choices"]) == len(set(item["choices"])) == 4
        assert all(c[0].isspace() and c.strip() for c in item["choices"])
        others = " ".join(d for d in docs if d != own)
        assert all(c in others for c in item["choices"] if c != right)
    assert {item["answer"] for item in items} == {0, 1, 2, 3}


def test_layout_is_kept():
    lines = [f"def f{i}(x):\n    return x + {i}\n" * 8 for i in range(6)]
    for item in continuation_items(lines, items=10, context_chars=60, continuation_chars=30):
        right = item["choices"][item["answer"]]
        assert "\n    return" in item["question"]  # 60 characters span lines
        assert any(item["question"] + right in doc for doc in lines)


def test_too_few_documents_is_one_line():
    with pytest.raises(SpecplanError, match="2 held-out document.*4 choices need as many"):
        continuation_items(synthetic_documents("bio", 2, seed=0), context_chars=50)


def test_cli_writes_a_task_of_held_out_documents(corpus_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "law_task.jsonl"
    code, stdout, _ = specplan(monkeypatch, capsys, "--json", "data", "task",
                               str(corpus_dir / "law.jsonl"), "--out", str(out), "--items", "20",
                               "--choices", "3", "--context-chars", "100",
                               "--continuation-chars", "40")
    result = json.loads(stdout)
    assert code == 0 and result["items"] == 20 and result["domain"] == "law"
    task = load_task(out)
    assert task.format == "multiple_choice" and len(task.items) == 20
    held_out = split_documents(load_documents(corpus_dir / "law.jsonl").texts)["test"]
    assert result["documents"] == len(held_out)
    for item in task.items:
        assert any(item.context + item.continuations[item.answer] in d for d in held_out)
