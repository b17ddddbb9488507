"""lm-evaluation-harness tasks on local data: the harness's accuracy lands where a JSONL task's
does, and a task it cannot run offline is one line."""
from __future__ import annotations

import pytest

from planner.core.errors import SpecplanError
from planner.engine.harness import multiple_choice_config
from planner.engine.tasks import load_task, score_task, split_task
from tests.engine.test_tasks import choice_items, models, write_lines  # noqa: F401 (fixture)

pytest.importorskip("lm_eval")



def harness_task(folder, *, source="json", data=None, name="sounds_h"):
    """A harness YAML over the same items as ``sounds.jsonl``, in the harness's own schema."""
    jsonl = write_lines(folder / "sounds.jsonl", choice_items(1))
    path = folder / f"{name}.yaml"
    path.write_text(multiple_choice_config(name, data or jsonl, source=source))
    return path, jsonl


def test_the_harness_scores_a_local_task_as_specplan_does(models, tmp_path):  # noqa: F811
    tokenizer, trained, untrained = models
    path, jsonl = harness_task(tmp_path)
    task = load_task(path)
    assert (task.name, task.format, task.harness) == ("sounds_h", "harness", "sounds_h")
    ours = score_task(trained, tokenizer, load_task(jsonl))
    theirs = score_task(trained, tokenizer, task)
    assert theirs["format"] == "harness" and theirs["items"] == ours["items"] == 24
    assert theirs["accuracy"] >= 0.9 and abs(theirs["accuracy"] - ours["accuracy"]) <= 0.1
    assert set(theirs["harness"]) == {"acc", "acc_norm"}
    assert theirs["normalized_accuracy"] == theirs["harness"]["acc_norm"]
    chance = score_task(untrained, tokenizer, task)["accuracy"]
    assert chance <= 0.6  # four choices: 0.25 expected
    assert untrained.training is False  # the harness left the model's mode as it was


@pytest.mark.parametrize("source, data, fragment", [
    ("cais/mmlu", None, "reads dataset_path 'cais/mmlu' from the Hugging Face hub"),
    ("json", "/no/such/file.jsonl", "names data file '/no/such/file.jsonl', which does not"),
])
def test_a_task_the_harness_cannot_run_offline_is_one_line(source, data, fragment, tmp_path):
    path, _ = harness_task(tmp_path, source=source, data=data)
    with pytest.raises(SpecplanError, match=fragment):
        load_task(path)


def test_a_harness_task_reports_but_cannot_choose(tmp_path):
    path, _ = harness_task(tmp_path)
    (tmp_path / "group.yaml").write_text("group: mine\ntask: [a, b]\n")
    with pytest.raises(SpecplanError, match="no 'task: NAME' key"):
        load_task(tmp_path / "group.yaml")
    with pytest.raises(SpecplanError, match="cannot be split into selection and report"):
        split_task(load_task(path))


def test_the_hub_is_offline_while_the_harness_runs():
    """The switches huggingface_hub and datasets read at import are on inside, restored after."""
    import datasets.config
    import huggingface_hub.constants

    from planner.engine.harness import _offline

    before = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    with _offline():
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
        assert datasets.config.HF_HUB_OFFLINE is datasets.config.HF_DATASETS_OFFLINE is True
    assert (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE) == before
