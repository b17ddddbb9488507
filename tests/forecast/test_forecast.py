"""Forecasts: the reference study's guidance, the compute-optimal size of a known law, and
refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import backtest as bt
from planner.core.budgets import Budgets, InferenceCap
from planner.core.errors import SpecplanError
from planner.forecast import forecast as fc
from planner.run.results import read_results
from tests.forecast.conftest import DOMAINS, N_BOOT, budgets


# -- the study's guidance (arXiv 2402.01093 v2 Fig. 1) -------------------------------------------
def test_large_model_when_the_inference_budget_allows_it(reference):
    df, bounds = reference
    result = fc.forecast(df, budgets("400h@a100", "1h@a100", "1B", 8e6), bounds=bounds,
                         n_boot=N_BOOT)
    assert result.recommendation == "llm"
    small = fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", 8e6), bounds=bounds,
                        strategies=["slm", "llm"], n_boot=N_BOOT)
    assert small.get("llm").within_inference is False and small.recommendation == "slm"


def test_importance_sampling_for_one_domain_with_a_large_specialization_budget(reference):
    df, bounds = reference
    result = fc.forecast(df, budgets("400h@a100", "150h@a100", "126M", 1e6), bounds=bounds,
                         n_boot=N_BOOT)
    assert result.recommendation == "slm-is"
    item = result.get("slm-is")
    assert item.status == "bound" and item.ppl_at_most == 14.50 and item.ppl is None
    assert item.total_hours == pytest.approx(130)  # Table 3, paid per domain
    assert "published bound" in result.reason


def test_projected_network_or_mixture_for_many_domains(reference):
    df, bounds = reference
    small = ["slm", "slm-is", "slm-mix", "slm-pn"]  # the in-budget ones: llm cannot be chosen
    for size in (1e6, 8e6):
        result = fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", size, domains=50),
                             bounds=bounds, strategies=small, n_boot=N_BOOT)
        assert result.recommendation in ("slm-pn", "slm-mix")
        assert result.get("slm-is").status == "infeasible"  # 1 A100-h cannot pay its 130
        pn = result.get(result.recommendation)
        assert pn.total_flops == pytest.approx(pn.generic_flops + 50 * pn.spec_flops)
        assert pn.extrapolation["pretrain"] < 1  # 400 GPUh is inside the study's runs


# -- forecast on a known law -------------------------------------------------------------------
def test_forecast_finds_the_compute_optimal_size_of_a_known_law():
    a, alpha, b, beta = 0.35, 0.34, 0.45, 0.28
    rows = []
    for params in (2e7, 5e7, 1.25e8, 3e8):
        for flops in np.geomspace(1e17, 1e19, 4):
            generic = flops / (6 * params)
            for domain, e in DOMAINS.items():
                loss = e + a * (params / 1e8) ** -alpha + b * (generic / 1e10) ** -beta
                rows.append({"strategy": "slm", "domain": domain, "domain_tokens": 1e6,
                             "params_inference": params, "generic_tokens": generic,
                             "spec_tokens": 3e6, "generic_flops": flops,
                             "spec_flops": 3e6 * 6 * params, "ppl_after": float(np.exp(loss))})
    table = pd.DataFrame(rows)

    def truth(params, flops=3e19):
        mean_e = np.mean(list(DOMAINS.values()))
        return np.exp(mean_e + a * (params / 1e8) ** -alpha
                      + b * (flops / (6 * params) / 1e10) ** -beta)

    target = Budgets(3e19, 1e20, InferenceCap(), 1_000_000)
    item = fc.forecast(table, target, n_boot=N_BOOT).get("slm")
    best = min(truth(n) for n in np.geomspace(1e7, 1e10, 2000))
    assert item.ppl == pytest.approx(truth(item.params_inference), rel=0.01)
    assert truth(item.params_inference) == pytest.approx(best, rel=0.005)
    assert item.extrapolation["pretrain"] == pytest.approx(3.0)
    assert item.spec_tokens == pytest.approx(3e6)  # the most epochs any run fine-tuned
    capped = fc.forecast(table, replace_cap(target, 5e7), n_boot=N_BOOT).get("slm")
    assert capped.params_inference <= 5e7 and capped.within_inference


def replace_cap(target: Budgets, params: float) -> Budgets:
    return Budgets(target.pretrain_flops, target.spec_flops, InferenceCap(params=int(params)),
                   target.domain_tokens, target.domains_count)


# -- refusals and bad input ---------------------------------------------------------------------
def test_forecast_refuses_beyond_the_extrapolation_limit_unless_raised(reference):
    df, bounds = reference
    far = budgets("10000h@a100", "1h@a100", "126M", 8e6)
    with pytest.raises(SpecplanError, match=r"beyond --max-extrapolation 10: slm pretrain .* "
                                            r"is 18.9x the largest measured"):
        fc.forecast(df, far, bounds=bounds)
    result = fc.forecast(df, far, strategies=["slm"], max_extrapolation=20, n_boot=N_BOOT)
    assert result.get("slm").extrapolation["pretrain"] == pytest.approx(10000 / 530)
    with pytest.raises(SpecplanError, match="domain_tokens 1e\\+09 is 15.6x"):
        fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", 1e9), bounds=bounds)


def test_bad_input_is_one_clear_error(reference, tmp_path):
    df, _ = reference
    with pytest.raises(SpecplanError, match="no such results file"):
        read_results(tmp_path / "missing.csv")
    with pytest.raises(SpecplanError, match="lacks column"):
        fc.forecast(df.drop(columns="spec_flops"), budgets("1h@a100", "1h@a100", None, 8e6))
    with pytest.raises(SpecplanError, match="no runs of \\['gpt'\\]"):
        fc.forecast(df, budgets("1h@a100", "1h@a100", None, 8e6), strategies=["gpt"])
    with pytest.raises(SpecplanError, match="give --domain-tokens"):
        fc.forecast(df, Budgets(1e20, 1e18))
    with pytest.raises(SpecplanError, match="holdout"):
        bt.backtest(df, holdout="random")
