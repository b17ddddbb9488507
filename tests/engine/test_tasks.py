"""Task scoring on a pattern a tiny model learns: right when trained, at chance when random."""
from __future__ import annotations

import json
import random

import pytest
import torch

from planner.core.errors import SpecplanError
from planner.engine.tasks import load_task, score_task

# Each subject is always followed by its own sound: the pattern the trained model learns.
PAIRS = {"cat": "meow", "dog": "woof", "cow": "moo", "owl": "hoot", "duck": "quack",
         "bee": "buzz", "lion": "roar", "frog": "croak"}


def pattern_text(seed: int, n: int = 100) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"the {s} says {PAIRS[s]}." for s in rng.sample(list(PAIRS), 4))
            for _ in range(n)]


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tokenizer, trained model, random-init model): the trained one saw 80 steps of text."""
    from planner.data.corpus import tokenize_to_windows, train_tokenizer
    from planner.engine.models import model_shape

    texts = pattern_text(0)
    tokenizer = train_tokenizer(texts, vocab_size=300, cache_dir=tmp_path_factory.mktemp("c"))
    shape = model_shape("tiny", vocab_size=len(tokenizer), seq_len=32)
    windows = tokenize_to_windows(texts, tokenizer, 32).ids
    trained, untrained = shape.build(seed=0), shape.build(seed=1)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        batch = windows[torch.randint(len(windows), (16,), generator=gen)]
        loss = trained(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tokenizer, trained.eval(), untrained.eval()


def choice_items(seed: int, k: int = 4) -> list[dict]:
    """Three items per subject, each with k - 1 other sounds as distractors, answer shuffled."""
    rng = random.Random(seed)
    items = []
    for subject, sound in PAIRS.items():
        for _ in range(3):
            choices = [sound] + rng.sample([v for v in PAIRS.values() if v != sound], k - 1)
            rng.shuffle(choices)
            items.append({"question": f"the {subject} says",
                          "choices": [f" {c}." for c in choices],
                          "answer": choices.index(sound)})
    return items


def test_multiple_choice_trained_right_random_at_chance(models, tmp_path):
    tokenizer, trained, untrained = models
    task = load_task(write_lines(tmp_path / "sounds.jsonl", choice_items(0)))
    assert task.name == "sounds" and task.format == "multiple_choice" and len(task.items) == 24
    good = score_task(trained, tokenizer, task, batch_size=7)  # batches cut across items
    bad = score_task(untrained, tokenizer, task)
    assert good["chance"] == pytest.approx(0.25)
    assert good["accuracy"] >= 0.9 and good["normalized_accuracy"] >= 0.9
    assert bad["accuracy"] == pytest.approx(0.25, abs=0.2)
    assert good["items"] == 24 and good["truncated"] == 0


def test_batching_does_not_change_scores(models, tmp_path):
    tokenizer, trained, _ = models
    task = load_task(write_lines(tmp_path / "t.jsonl", choice_items(1)))
    one, many = (score_task(trained, tokenizer, task, batch_size=b) for b in (1, 64))
    assert one == pytest.approx(many)


def test_cloze_exact_match_and_loglik(models, tmp_path):
    tokenizer, trained, untrained = models
    records = [{"prompt": f"the {s} says", "target": f" {v}."} for s, v in PAIRS.items()]
    task = load_task(write_lines(tmp_path / "cloze.jsonl", records))
    good, bad = (score_task(m, tokenizer, task) for m in (trained, untrained))
    assert good["format"] == "cloze" and good["items"] == len(PAIRS)
    assert good["exact_match"] == good["accuracy"] >= 0.75  # 7 of 8 after 80 steps
    assert bad["exact_match"] == 0.0
    assert -1.0 < good["target_loglik"] < 0 and bad["target_loglik"] < -4  # log(1/300) = -5.7


def test_long_context_is_cut_from_the_left_long_target_refused(models, tmp_path):
    tokenizer, trained, _ = models
    filler = " ".join(["the bee says buzz."] * 40)  # ~200 tokens, the window is 32
    task = load_task(write_lines(tmp_path / "long.jsonl",
                                 [{"prompt": f"{filler} the cat says", "target": " meow."}]))
    result = score_task(trained, tokenizer, task)
    assert result["truncated"] == 1 and result["target_loglik"] > -1.0
    task = load_task(write_lines(tmp_path / "huge.jsonl",
                                 [{"prompt": "the cat says", "target": filler}]))
    with pytest.raises(SpecplanError, match=r"huge.jsonl:1: continuation .* longer than the "
                                            r"model's window of 32"):
        score_task(trained, tokenizer, task)


def test_a_prompt_line_writes_a_template_and_few_shot_examples_before_each_item(models,
                                                                                 tmp_path):
    """The prompt line's contexts score exactly as the same contexts written out by hand."""
    tokenizer, trained, _ = models
    items = [{**item, "animal": item["question"].split()[1]} for item in choice_items(2)]
    shots = [items.pop(), items.pop()]
    prompt = {"template": "Q: what does the {animal} say?\nA:", "examples": shots,
              "separator": "\n"}
    task = load_task(write_lines(tmp_path / "shots.jsonl", [prompt, *items]))
    first = items[0]["animal"]
    written = "".join(f"Q: what does the {s['animal']} say?\nA:{s['choices'][s['answer']]}\n"
                      for s in shots) + f"Q: what does the {first} say?\nA:"
    assert task.items[0].context == written and task.items[0].line == 2
    assert len(task.items) == 22  # the examples are never scored
    plain = load_task(write_lines(tmp_path / "plain.jsonl", [
        {"question": item.context, "choices": list(item.continuations), "answer": item.answer}
        for item in task.items]))
    assert score_task(trained, tokenizer, task) == score_task(trained, tokenizer, plain)


MC = {"question": "q", "choices": ["a", "b"], "answer": 0}


@pytest.mark.parametrize("lines, fragment", [
    ([MC, {"question": "q", "choices": ["a", "b"]}], r"bad.jsonl:2: missing field 'answer'"),
    ([{**MC, "answer": 2}], r"bad.jsonl:1: answer 2 is out of range for 2 choices"),
    ([{**MC, "answer": -1}], r"bad.jsonl:1: answer -1 is out of range"),
    ([{**MC, "answer": "0"}], r"bad.jsonl:1: 'answer' must be an integer"),
    ([MC, "", {**MC, "choices": ["a", " "]}], r"bad.jsonl:3: choice 1 is empty"),
    ([{**MC, "choices": ["a"]}], r"bad.jsonl:1: 'choices' must be a list of at least 2"),
    ([{"prompt": "p", "target": ""}], r"bad.jsonl:1: field 'target' must be a non-blank"),
    ([{"prompt": "p", "target": "t"}, {"prompt": "p"}], r"bad.jsonl:2: missing field 'target'"),
    ([{"text": "hello"}], r"bad.jsonl:1: unknown task format \(keys \['text'\]\)"),
    ([MC, "{not json"], r"bad.jsonl:2: not valid JSON"),
    (["[1, 2]"], r"bad.jsonl:1: unknown task format"),
    (["", "  "], r"bad.jsonl: blank task file, no items"),
    ([{"template": "{passage} {question}"}, MC],
     r"bad.jsonl:2: the template names field 'passage', which this item lacks"),
    ([{"template": "{question"}, MC], r"bad.jsonl:2: the template is not a valid format"),
    ([{"template": "{answer[0]} {question}"}, MC],
     r"bad.jsonl:2: the template is not a valid format"),
    ([{"template": ""}, MC], r"bad.jsonl:1: 'template' must be a non-blank string"),
    ([{"examples": {"question": "q"}}, MC], r"bad.jsonl:1: 'examples' must be a list"),
    ([{"examples": [{"question": "q", "choices": ["a", "b"]}]}, MC],
     r"bad.jsonl:1: examples\[0\]: missing field 'answer'"),
])
def test_bad_task_files_are_one_line(lines, fragment, tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(SpecplanError, match=fragment) as info:
        load_task(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(SpecplanError, match="no such task file"):
        load_task(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("family, batch_size", [("llama", 1), ("llama", 5), ("llama", 64),
                                                ("gpt2", 8)])
def test_shared_contexts_score_as_whole_rows(models, tmp_path, family, batch_size):
    """Each context run once with its choices reading its cache gives the log-likelihoods and
    greedy checks of running every (context, choice) row whole, truncated rows included."""
    from planner.engine.tasks import _caches, _rows, _score_rows, _score_shared

    from planner.engine.models import model_shape

    tokenizer, trained, _ = models
    if family == "gpt2":  # learned positions end at the window: padded slots must stay inside
        trained = model_shape("d=32,layers=2,heads=4,ff=64,family=gpt2",
                              vocab_size=len(tokenizer), seq_len=32).build(seed=0).eval()
    filler = " ".join(["the bee says buzz."] * 12)
    items = choice_items(3) + [{"question": f"{filler} the cat says",
                                "choices": [" meow.", " woof woof woof.", " moo."], "answer": 0}]
    task = load_task(write_lines(tmp_path / "mixed.jsonl", items))
    rows, lengths, truncated = _rows(task, tokenizer, 32)
    assert truncated == 1 and _caches(trained) in ("cache", "past_key_values")
    whole = _score_rows(trained, rows, lengths, batch_size)
    shared = _score_shared(trained, rows, lengths, batch_size, _caches(trained))
    assert torch.allclose(shared[0], whole[0], atol=1e-4)
    assert torch.equal(shared[1], whole[1])
