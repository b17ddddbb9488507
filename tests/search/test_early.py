"""The early plan on the synthetic corpus: a ladder of proxy runs within a planning budget, a
forecast per strategy, only the choice built at the full budgets."""
import json

import pytest

from planner.core.errors import SpecplanError
from planner.search import early
from tests.forecast.conftest import N_BOOT
from tests.search.test_plan import spec_for


def two_domains(tiny_inputs):
    return type(tiny_inputs)(tiny_inputs.generic,
                             {d: tiny_inputs.domains[d] for d in ("law", "bio")},
                             tiny_inputs.tokenizer)


def test_early_plan_spends_its_planning_budget_and_builds_only_the_choice(
        tiny_inputs, tmp_path, monkeypatch):
    import pandas as pd

    from planner.core.errors import Interrupted
    from planner.forecast import calibrate

    inputs = two_domains(tiny_inputs)
    unique = min(d.train.tokens for d in inputs.domains.values())
    spec = spec_for(tmp_path / "cache", pretrain_flops=4e11, spec_flops=2e10, domains_count=2,
                    domain_tokens=unique, strategies=["slm", "slm-nopt"],
                    inference={"params": 200_000})
    # Ctrl-C during the second proxy run: the first is kept, the output folder is not made.
    calls, real_run = [], calibrate.run_strategy

    def interrupted_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(calibrate, "run_strategy", interrupted_second)
    with pytest.raises(Interrupted, match="re-run the same command to resume"):
        early.plan_early(spec, tmp_path / "out", planning_flops=2e11, inputs=inputs,
                         n_boot=N_BOOT)
    assert not (tmp_path / "out").exists()
    ladder_csv = tmp_path / "cache" / "plans" / f"ladder-{early.ladder_key(spec)}.csv"
    first = pd.read_csv(ladder_csv)
    assert first["run_id"].nunique() == 1
    monkeypatch.setattr(calibrate, "run_strategy", real_run)

    result = early.plan_early(spec, tmp_path / "out", planning_flops=2e11, inputs=inputs,
                              n_boot=N_BOOT)
    doc = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert doc == json.loads(json.dumps(result.plan))
    ladder = pd.read_csv(tmp_path / "out" / "ladder.csv")
    # The resumed ladder did not run its first proxy again, and counted what it cost.
    key = ["strategy", "pretrain_budget_flops", "spec_budget_flops", "params_inference"]
    assert len(ladder.merge(first[key].drop_duplicates(), on=key)) == 2  # one row per domain
    planning = doc["planning"]
    assert planning["mode"] == "early" and planning["proxy_runs"] == ladder["run_id"].nunique()
    assert 0 < planning["search_flops"] <= 2e11
    assert planning["search_flops"] == pytest.approx(
        ladder.drop_duplicates(key[:2] + ["params_inference"])["generic_flops"].sum()
        + ladder["spec_flops"].sum())
    assert doc["strategy"] in ("slm", "slm-nopt") and doc["size"] == "tiny"
    assert sum(doc["p_best"].values()) == pytest.approx(1.0)
    assert doc["p_best"][doc["strategy"]] == max(doc["p_best"].values())
    ppl = doc["perplexity"]
    assert ppl["forecast"] > 1 and ppl["test_macro"] > 1 and set(ppl["test"]) == {"law", "bio"}
    # Only the choice ran at the full budgets: the final ledger is one run's.
    assert doc["ledger"]["generic"]["flops"] <= 4e11 * 1.01
    assert sorted(p.name for p in (tmp_path / "out" / "model").iterdir()) == ["bio", "law"]
    assert "planning cost:" in result.summary and "P(best)" in result.summary


def test_early_plan_refuses_a_planning_budget_it_cannot_use(tiny_inputs, tmp_path):
    inputs = two_domains(tiny_inputs)
    spec = spec_for(tmp_path / "cache", pretrain_flops=4e11, spec_flops=5e9, domains_count=2,
                    strategies=["slm"], inference={"params": 200_000})
    with pytest.raises(SpecplanError, match="at least the project's own cost .* --exhaustive"):
        early.plan_early(spec, tmp_path / "out", planning_flops=5e11, inputs=inputs)
    with pytest.raises(SpecplanError, match="--planning-budget 1e.09 FLOPs cannot calibrate slm "
                       "\\(slm: its ladder needs about .* FLOPs\\); raise --planning-budget"):
        early.plan_early(spec, tmp_path / "out", planning_flops=1e9, inputs=inputs)
    assert not (tmp_path / "out").exists()


def test_chance_best_follows_the_intervals():
    from planner.forecast.forecast import StrategyForecast

    def item(name, ppl, lo, hi):
        return StrategyForecast(name, "forecast", within_inference=True, ppl=ppl, ppl_lo=lo,
                                ppl_hi=hi)

    apart = early.chance_best([item("a", 10, 9.5, 10.5), item("b", 20, 19, 21)])
    assert apart["a"] == pytest.approx(1.0)
    close = early.chance_best([item("a", 10, 8, 12.5), item("b", 10.2, 8.2, 12.7)])
    assert 0.5 < close["a"] < 0.6 and close["a"] + close["b"] == pytest.approx(1.0)
    over = StrategyForecast("c", "forecast", within_inference=False, ppl=5, ppl_lo=4, ppl_hi=6)
    assert "c" not in early.chance_best([item("a", 10, 9, 11), over])


def test_without_room_for_a_ladder_the_plan_is_exhaustive_and_says_why(tiny_inputs, tmp_path):
    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    spec = spec_for(tmp_path / "cache", strategies=["slm"], trials=1)  # 8e9 / 2e9 FLOPs
    result = early.plan_early(spec, tmp_path / "out", inputs=inputs)
    doc = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert doc["planning"]["mode"] == "exhaustive" and doc["trials"] == 1
    assert doc["planning"]["early_refused"].startswith(
        "planning early cannot calibrate slm within 5e+09 FLOPs (50% of the project)")
    assert "not planned early: planning early cannot calibrate slm" in result.summary
    assert (tmp_path / "out" / "study.journal").is_file()


def test_an_early_plan_chooses_by_a_forecast_task_accuracy(tiny_inputs, tmp_path, monkeypatch):
    """The proxy runs score the task's selection half; a line maps the forecast perplexity to
    it; the chosen model is scored on the report half beside its forecast. A minimum no
    forecast reaches is one line, and the next plan reuses the same proxy runs."""
    import pandas as pd

    from planner.forecast import calibrate
    from planner.engine.tasks import load_task, split_task
    from tests.search.test_task_objective import law_task

    inputs = two_domains(tiny_inputs)
    unique = min(d.train.tokens for d in inputs.domains.values())
    path = law_task(tmp_path)
    budgets = dict(pretrain_flops=4e11, spec_flops=2e10, domains_count=2, domain_tokens=unique,
                   strategies=["slm", "slm-nopt"], inference={"params": 200_000},
                   tasks=[["law", str(path)]])
    unreachable = spec_for(tmp_path / "cache", min_task={"law_mc": 0.999}, **budgets)
    with pytest.raises(SpecplanError, match=r"--min-task law_mc=0.999: no strategy's forecast "
                                            r"reaches it \(the best forecast is slm"):
        early.plan_early(unreachable, tmp_path / "out", planning_flops=2e11, inputs=inputs,
                         n_boot=N_BOOT)
    assert not (tmp_path / "out").exists()
    spec = spec_for(tmp_path / "cache", objective="task:law_mc", **budgets)
    assert early.ladder_key(spec) == early.ladder_key(unreachable)
    proxy_calls = []
    real_run = calibrate.run_strategy
    monkeypatch.setattr(calibrate, "run_strategy",
                        lambda *a, **k: proxy_calls.append(a[0]) or real_run(*a, **k))
    result = early.plan_early(spec, tmp_path / "out", planning_flops=2e11, inputs=inputs,
                              n_boot=N_BOOT)
    assert proxy_calls == []  # the ladder of the refused plan, reused
    doc = result.plan
    ladder = pd.read_csv(tmp_path / "out" / "ladder.csv")
    select, report = split_task(load_task(path))
    scored = ladder["task:law_mc"].dropna() * len(select.items)
    assert len(scored) == ladder["run_id"].nunique() >= 3  # every proxy run, selection half
    assert (scored - scored.round()).abs().max() < 1e-9
    forecast = doc["task_forecast"]["law_mc"]
    accuracy = {s: f["accuracy"] for s, f in forecast["strategies"].items()}
    assert doc["strategy"] == max(accuracy, key=accuracy.get)
    assert doc["p_best"] == {s: f["p_best"] for s, f in forecast["strategies"].items()}
    assert forecast["curve"]["runs"] == len(scored)
    qa = doc["tasks"]["law_mc"]
    assert qa["half"] == "report" and qa["items"] == len(report.items)
    assert qa["forecast"] == pytest.approx(accuracy[doc["strategy"]])
    lo, hi = qa["forecast_interval"]
    assert 0.0 <= lo <= qa["forecast"] <= hi <= 1.0
    assert doc["objective"]["rank_by"] == "task:law_mc"
    assert "highest forecast law_mc accuracy" in doc["why"]
    assert "task curve: task law_mc: accuracy" in result.summary
    assert "law_mc acc" in result.summary
