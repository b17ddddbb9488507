"""Plans judged by a task: ranking trials by a task's accuracy, task minimums as constraints,
selection and report on the task's two halves."""
import json

import optuna
import pandas as pd
import pytest

from planner.core.errors import SpecplanError
from planner.data.tasks import continuation_items
from planner.engine.tasks import load_task, split_task
from planner.search.plan import choose, plan
from planner.search.study import plan_tasks
from tests.conftest import synthetic_documents
from tests.search.test_plan import spec_for


def law_task(folder, items=40):
    """Held-out law documents (a seed no corpus uses) as "which continuation" items."""
    texts = synthetic_documents("law", 30, seed=99, words_per_doc=80)
    path = folder / "law_mc.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in continuation_items(
        texts, items=items, context_chars=80, continuation_chars=30)))
    return path


def law_only(tiny_inputs):
    return type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                             tiny_inputs.tokenizer)


def finished_trial(number, strategy, ppl, accuracy, *, constraints=(0.0,)):
    return optuna.trial.create_trial(
        params={"strategy": strategy}, distributions={"strategy": optuna.distributions.
                                                      CategoricalDistribution(["a", "b", "c"])},
        value=ppl, user_attrs={"macro_ppl": ppl, "tasks": {"qa": accuracy}},
        system_attrs={"constraints": list(constraints)})


def test_ranking_by_a_task_picks_another_trial_when_task_and_perplexity_disagree():
    low_ppl = finished_trial(0, "a", 10.0, 0.30)
    good_task = finished_trial(1, "b", 12.0, 0.60)
    tie = finished_trial(2, "c", 11.0, 0.60)  # the same accuracy: the lower perplexity wins
    by_ppl, runner_up = choose([low_ppl, good_task, tie], "ppl")
    assert by_ppl.params["strategy"] == "a" and runner_up.params["strategy"] == "c"
    by_task, runner_up = choose([low_ppl, good_task, tie], "task:qa")
    assert by_task.params["strategy"] == "c" and runner_up.params["strategy"] == "b"


def test_the_halves_are_fixed_disjoint_and_cover_the_task(tmp_path):
    task = load_task(law_task(tmp_path))
    select, report = split_task(task)
    assert len(select.items) + len(report.items) == len(task.items)
    assert not set(select.items) & set(report.items)
    assert 0.25 < len(select.items) / len(task.items) < 0.75
    # The order of the file does not move an item between halves.
    shuffled = tmp_path / "shuffled" / "law_mc.jsonl"
    shuffled.parent.mkdir()
    shuffled.write_text("".join(reversed(law_task(tmp_path).read_text().splitlines(True))))
    again, _ = split_task(load_task(shuffled))
    assert {i.context for i in again.items} == {i.context for i in select.items}
    with pytest.raises(SpecplanError, match="cannot be split"):
        split_task(load_task(law_task(tmp_path / "..", items=1)))


def test_a_plan_ranked_by_a_task_chooses_on_one_half_and_reports_the_other(tiny_inputs,
                                                                           tmp_path):
    path = law_task(tmp_path)
    spec = spec_for(tmp_path / "cache", tasks=[["law", str(path)]], objective="task:law_mc",
                    min_task={"law_mc": 0.0})
    result = plan(spec, tmp_path / "out", inputs=law_only(tiny_inputs))
    doc = result.plan
    assert doc["objective"] == {"rank_by": "task:law_mc", "min_task": {"law_mc": 0.0}}
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    done = trials[trials["feasible"]]
    best = done.sort_values(["task:law_mc", "macro_ppl"], ascending=[False, True]).iloc[0]
    assert doc["trial"] == best["trial"]  # the highest accuracy, ties by perplexity
    select, report = split_task(load_task(path))
    qa = doc["tasks"]["law_mc"]
    assert qa["half"] == "report" and qa["items"] == len(report.items)
    assert qa["selection_accuracy"] == pytest.approx(best["task:law_mc"])
    assert 0.0 <= qa["accuracy"] <= 1.0
    # Trials scored the selection half: accuracies are multiples of 1 / its size.
    steps = done["task:law_mc"] * len(select.items)
    assert (steps - steps.round()).abs().max() < 1e-9
    assert "ranked by: task:law_mc accuracy" in result.summary
    assert "on its report half (selection half" in result.summary
    assert "law_mc acc" in result.summary  # the per-strategy table's column
    # A minimum no trial reaches: one line naming the best score seen.
    unreachable = spec_for(tmp_path / "cache", tasks=[["law", str(path)]],
                           min_task={"law_mc": 0.999})
    with pytest.raises(SpecplanError, match=r"--min-task law_mc=0.999: no trial reached it "
                                            r"\(the best reached 0\.\d+"):
        plan(unreachable, tmp_path / "out2", inputs=law_only(tiny_inputs))


def test_an_objective_naming_no_task_fails_before_any_compute(tiny_inputs, tmp_path):
    spec = spec_for(tmp_path / "cache", objective="task:law_mc")
    with pytest.raises(SpecplanError, match="--objective: no task named 'law_mc'"):
        plan_tasks(spec, law_only(tiny_inputs))
