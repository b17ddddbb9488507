"""Calibration: proxy runs on a ladder of small budgets within a planning budget, on a tiny
corpus."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.core.args import RunArgs
from planner.core.budgets import Budgets, InferenceCap
from planner.core.errors import SpecplanError
from planner.forecast import calibrate as cal
from planner.forecast import laws
from tests.forecast.conftest import N_BOOT


def test_calibrate_runs_a_cheap_ladder_within_the_planning_budget(tiny_inputs, tmp_path):
    from planner.data.inputs import Inputs

    inputs = Inputs(tiny_inputs.generic, {d: tiny_inputs.domains[d] for d in ("law", "bio")},
                    tiny_inputs.tokenizer)
    unique = min(d.train.tokens for d in inputs.domains.values())
    target = Budgets(4e11, 5e9, InferenceCap(params=200_000), unique)
    path = tmp_path / "calibration.csv"
    result = cal.calibrate(inputs, target, planning_flops=1.2e11, results_path=path,
                          cache_dir=tmp_path / "cache", strategies=["slm"],
                          run=RunArgs(batch_size=8, device="cpu"), n_boot=N_BOOT)
    ran = [r for r in result.runs if r.status == "ok"]
    assert len(ran) >= 3 and result.spent_flops <= 1.2e11
    # The anchor comes first: the cheapest rung within 10x of the target (4e11 / 2**3).
    assert ran[0].pretrain_flops == 5e10
    assert all(r.size == "tiny" for r in ran)  # the only ladder size within 200k parameters
    budgets_run = sorted(r.pretrain_flops for r in ran)
    assert budgets_run[0] < budgets_run[-1] < 4e11  # a geometric ladder below the target
    table = pd.read_csv(path)
    assert len(table) == 2 * len(ran) and set(table["domain"]) == {"law", "bio"}
    item = result.forecast.get("slm")
    assert item.status == "forecast" and item.extrapolation["pretrain"] <= 10
    assert result.forecast.recommendation == "slm" and result.skipped == {}
    with pytest.raises(SpecplanError, match="cannot pay for one run within"):
        cal.calibrate(inputs, target, planning_flops=1e10, results_path=tmp_path / "none.csv",
                     cache_dir=tmp_path / "fresh", strategies=["slm"],
                     run=RunArgs(batch_size=8, device="cpu"))
    assert not (tmp_path / "none.csv").exists()


def test_ladder_never_leaves_a_strategy_half_calibrated(tiny_inputs, tmp_path):
    """A budget for about one strategy's ladder: whatever is started gets a fitted law."""
    from planner.data.inputs import Inputs

    inputs = Inputs(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                    tiny_inputs.tokenizer)
    target = Budgets(4e11, 5e9, InferenceCap(params=200_000),
                     inputs.domains["law"].train.tokens)
    result = cal.calibrate(inputs, target, planning_flops=2e11,
                          results_path=tmp_path / "calibration.csv", cache_dir=tmp_path / "cache",
                          strategies=["slm", "slm-pn"], run=RunArgs(batch_size=8, device="cpu"),
                          n_boot=N_BOOT)
    started = {r.strategy for r in result.runs if r.status == "ok"}
    assert started and result.spent_flops <= 2e11
    for name in started:
        assert result.forecast.get(name).status == "forecast", name
    assert set(result.skipped) == {"slm", "slm-pn"} - started


def test_ladder_knows_how_many_runs_a_law_needs():
    """The ladder's count of runs to a fittable law agrees with planner.forecast.laws itself."""
    for n_domains in (1, 2, 3):
        for levels in (1, 2, 3, 4):
            rows = [{"strategy": "slm", "domain": f"d{d}", "domain_tokens": 1e6,
                     "params_inference": 1e8, "generic_tokens": 1e9 * 4**i, "spec_tokens": 3e6,
                     "ppl_after": float(np.exp(2 + d / 10 + 0.5 * (4.0**i) ** -0.3))}
                    for i in range(levels) for d in range(n_domains)]
            try:
                laws.fit_law(pd.DataFrame(rows), "slm", n_inits=2)
                fits = True
            except SpecplanError:
                fits = False
            assert fits == (levels >= cal._runs_to_fit(n_domains)), (n_domains, levels)
