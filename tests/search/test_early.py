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
