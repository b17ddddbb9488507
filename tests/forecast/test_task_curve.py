"""Perplexity to task accuracy: a line fitted on proxy runs, read at forecast perplexities."""
import math

import numpy as np
import pandas as pd
import pytest

from planner.core.errors import SpecplanError
from planner.forecast.forecast import StrategyForecast
from planner.forecast.task_curve import fit_task_curve, forecast_task


def proxy_runs(log_ppls, noise=0.01, seed=0):
    """Two domains per run; the task is on one, the line is 1.2 - 0.2 ln(macro ppl)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, x in enumerate(log_ppls):
        accuracy = 1.2 - 0.2 * x + noise * rng.standard_normal()
        rows.append({"run_id": f"r{i}", "domain": "law", "ppl_after": math.exp(x - 0.1),
                     "task:qa": accuracy})
        rows.append({"run_id": f"r{i}", "domain": "bio", "ppl_after": math.exp(x + 0.1),
                     "task:qa": math.nan})
    return pd.DataFrame(rows)


def test_the_line_is_recovered_and_its_interval_widens_away_from_the_runs():
    curve = fit_task_curve(proxy_runs([3.0, 3.5, 4.0, 4.5, 5.0]), "qa")
    assert curve.intercept == pytest.approx(1.2, abs=0.05)
    assert curve.slope == pytest.approx(-0.2, abs=0.02)
    assert curve.runs == 5 and curve.residual_sd < 0.03
    assert curve.predict(math.exp(4.0)) == pytest.approx(0.4, abs=0.01)
    assert curve.predict(1.0) == 1.0  # clipped: 1.2 at ln(ppl) = 0
    rng = np.random.default_rng(0)
    inside, outside = (curve.sample(np.full((4000, 1), x), rng)[:, 0] for x in (4.0, 2.0))
    assert np.ptp(np.quantile(outside, [0.1, 0.9])) > 1.5 * np.ptp(np.quantile(inside,
                                                                               [0.1, 0.9]))
    assert "over 5 proxy runs" in curve.describe()


def test_lower_forecast_perplexity_forecasts_a_higher_accuracy():
    curve = fit_task_curve(proxy_runs([3.0, 3.5, 4.0, 4.5, 5.0]), "qa")
    items = [StrategyForecast("a", "forecast", within_inference=True, ppl=math.exp(3.2),
                              ppl_lo=math.exp(3.1), ppl_hi=math.exp(3.3)),
             StrategyForecast("b", "forecast", within_inference=True, ppl=math.exp(3.6),
                              ppl_lo=math.exp(3.5), ppl_hi=math.exp(3.7)),
             StrategyForecast("llm", "forecast", within_inference=False, ppl=math.exp(2.0))]
    out = forecast_task(curve, items)
    assert set(out.accuracy) == {"a", "b"}  # over the inference budget: not a candidate
    assert out.accuracy["a"] == pytest.approx(1.2 - 0.2 * 3.2, abs=0.03)
    assert out.accuracy["a"] > out.accuracy["b"]
    lo, hi = out.interval["a"]
    assert lo < out.accuracy["a"] < hi
    assert out.p_best["a"] > 0.9 and sum(out.p_best.values()) == pytest.approx(1.0)


def test_too_few_runs_or_one_perplexity_cannot_fit_a_line():
    with pytest.raises(SpecplanError, match="needs 3 runs at two levels"):
        fit_task_curve(proxy_runs([3.0, 4.0]), "qa")
    with pytest.raises(SpecplanError, match="at 1 perplexity level"):
        fit_task_curve(proxy_runs([3.0, 3.0, 3.0]), "qa")
    with pytest.raises(SpecplanError, match="no proxy run scored it"):
        fit_task_curve(proxy_runs([3.0, 4.0, 5.0]).drop(columns="task:qa"), "qa")
