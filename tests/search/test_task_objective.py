"""Plans judged by a task: ranking trials by a task's accuracy, task minimums as constraints,
selection and report on the task's two halves."""
import json
import math

import optuna
import pandas as pd
import pytest

from planner.core.errors import SpecplanError
from planner.data.tasks import continuation_items
from planner.engine.tasks import load_task, split_task
from planner.search.plan import choose, plan
from planner.search.study import mix_weight, objective_value, plan_tasks, ranked_task
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


def test_a_stated_mix_trades_perplexity_for_accuracy_at_the_stated_rate():
    """mix:qa:X: an accuracy point is worth X% of perplexity. At 0.1% the 30-point accuracy gap
    is worth less than the 10% perplexity gap; at 5% it is worth far more."""
    trials = [finished_trial(0, "a", 10.0, 0.30), finished_trial(1, "b", 12.0, 0.60),
              finished_trial(2, "c", 11.0, 0.60)]
    assert choose(trials, "mix:qa:0.1")[0].params["strategy"] == "a"
    assert choose(trials, "mix:qa:5")[0].params["strategy"] == "c"
    assert objective_value({"macro_ppl": 10.0, "tasks": {"qa": 0.3}}, "mix:qa:5") == (
        pytest.approx(math.log(10.0) - 100 * math.log(1.05) * 0.3))
    assert ranked_task("mix:qa:5") == "qa" and mix_weight("task:qa") is None


def test_an_early_plan_ranks_a_mix_by_its_forecast():
    """The same forecasts: a small weight keeps the lower perplexity, a large one the higher
    forecast accuracy (the curve here rises with perplexity, so the two disagree)."""
    from types import SimpleNamespace

    from planner.forecast.task_curve import TaskCurve, TaskForecast
    from planner.search.early import pick

    def strategy(name, ppl):
        return SimpleNamespace(strategy=name, status="forecast", within_inference=True,
                               ppl=ppl, ppl_lo=ppl * 0.99, ppl_hi=ppl * 1.01)

    result = SimpleNamespace(strategies=[strategy("slm", 10.0), strategy("slm-pn", 12.0)],
                             quantiles=(0.1, 0.9), recommendation="slm")
    curve = TaskCurve("qa", -0.9, 0.5, ((1e-6, 0.0), (0.0, 1e-6)), 1e-3, 6, (2.0, 2.6))
    forecasts = {"qa": TaskForecast(curve)}
    chosen = {}
    for percent in (1, 5):
        spec = spec_for("cache", tasks=[["law", "qa.jsonl"]], objective=f"mix:qa:{percent}")
        chosen[percent], why, odds = pick(spec, result, forecasts, "ladder.csv")
        assert why.startswith(f"the lowest forecast ln(ppl) - {100 * math.log1p(percent / 100):.3g}"
                              " x qa accuracy")
        assert sum(odds.values()) == pytest.approx(1.0) and odds[chosen[percent]] > 0.9
    assert chosen == {1: "slm", 5: "slm-pn"}


def test_plan_json_and_the_summary_state_the_mix():
    from planner.search.plan import objective_doc, task_lines

    doc = objective_doc(spec_for("cache", tasks=[["law", "qa.jsonl"]], objective="mix:qa:5"))
    assert doc["mix"] == {"task": "qa", "minimises": "ln(ppl) - 4.88 x qa accuracy",
                          "point_worth_ppl_percent": 5.0,
                          "nats_per_accuracy": pytest.approx(100 * math.log(1.05))}
    assert task_lines({"objective": doc}) == [
        "ranked by: ln(ppl) - 4.88 x qa accuracy (one qa accuracy point worth 5% of perplexity)"]


@pytest.mark.parametrize("given, parsed", [("mix:qa:5", "mix:qa:5"), ("mix:2.5", "mix:qa:2.5"),
                                           ("task", "task:qa"), ("ppl", "ppl")])
def test_the_objective_option_reads_a_mix(given, parsed):
    from planner.cli.plan import parse_objective

    assert parse_objective(given, [], [("law", "qa.jsonl")])[0] == parsed


@pytest.mark.parametrize("given", ["mix:qa", "mix:qa:-1", "mix:qa:lots", "mix::5"])
def test_a_mix_without_a_rate_is_one_line(given):
    from planner.cli.plan import parse_objective

    with pytest.raises(SpecplanError, match="a mix is mix:NAME:X .* e.g. mix:qa:5"):
        parse_objective(given, [], [("law", "qa.jsonl")])


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
