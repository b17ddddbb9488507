"""From perplexity to a task's accuracy: one fitted line per task, so a plan that has only
perplexity forecasts can forecast, rank by and hold to a task score.

Every proxy run of an early plan scores the plan's tasks beside its validation perplexity. Over
those runs a task's accuracy is fitted as a line in the log of the macro perplexity (the loss
the laws forecast), by least squares. Downstream accuracy is a smooth, monotone function of the
loss over a model family (Gadre et al. 2024, arXiv 2403.08540, fit top-1 error as
``eps - k exp(-gamma L)``); over the narrow loss range of a plan's proxy runs and its target that
curve is close to its tangent, and a line has two parameters where a ladder has a handful of
runs. The line knows what it does not know: its prediction interval (the coefficients'
covariance plus the residual spread, Student-t on the runs' degrees of freedom) widens away from
the measured losses, and the forecast perplexity's own interval is carried through by sampling.
Accuracies are clipped to [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from planner.core.errors import SpecplanError

__all__ = ["TaskCurve", "TaskForecast", "fit_task_curve", "forecast_task", "log_ppl_draws"]

#: Proxy runs a task curve needs: a line has two parameters, and a third run measures spread.
MIN_RUNS = 3


@dataclass(frozen=True)
class TaskCurve:
    """``accuracy = intercept + slope * log(ppl)`` over ``runs`` proxy runs.

    Attributes:
        task: the task's name.
        intercept, slope: the least-squares line (a useful task has ``slope < 0``).
        covariance: the coefficients' 2x2 covariance.
        residual_sd: the runs' spread around the line.
        runs: how many runs it was fitted on.
        log_ppl_range: the lowest and highest measured log perplexity.
    """

    task: str
    intercept: float
    slope: float
    covariance: tuple[tuple[float, float], tuple[float, float]]
    residual_sd: float
    runs: int
    log_ppl_range: tuple[float, float]

    def predict(self, ppl: float) -> float:
        """The fitted accuracy at a perplexity."""
        return float(np.clip(self.intercept + self.slope * math.log(ppl), 0.0, 1.0))

    def sample(self, log_ppl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Accuracies at ``log_ppl`` (draws x strategies): one line drawn per row, shared by
        the row's strategies (they are read off the same curve), plus each its own residual."""
        dof = self.runs - 2
        scale = np.sqrt(dof / rng.chisquare(dof, size=(log_ppl.shape[0], 1)))  # Student-t
        shift = rng.multivariate_normal([0.0, 0.0], self.covariance,
                                        size=log_ppl.shape[0]) * scale
        line = self.intercept + shift[:, :1] + (self.slope + shift[:, 1:]) * log_ppl
        noise = self.residual_sd * scale * rng.standard_normal(log_ppl.shape)
        return np.clip(line + noise, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"task": self.task, "intercept": self.intercept, "slope": self.slope,
                "residual_sd": self.residual_sd, "runs": self.runs,
                "ppl_range": [math.exp(v) for v in self.log_ppl_range], "text": self.describe()}

    def describe(self) -> str:
        lo, hi = (math.exp(v) for v in self.log_ppl_range)
        trend = ("" if self.slope < 0 else "; it does not rise as perplexity falls, so the "
                 "perplexity forecasts say little about this task")
        return (f"task {self.task}: accuracy {self.intercept:.3f} {self.slope:+.3f} x ln(ppl) "
                f"over {self.runs} proxy runs (ppl {lo:.3g}-{hi:.3g}, residual sd "
                f"{self.residual_sd:.3f}){trend}")


def fit_task_curve(table: pd.DataFrame, task: str) -> TaskCurve:
    """The line of ``task:NAME`` accuracy on log macro validation perplexity, one point per run.

    Raises:
        SpecplanError: fewer than :data:`MIN_RUNS` runs scored the task, or all at one
            perplexity.
    """
    column = f"task:{task}"
    if column not in table.columns:
        raise SpecplanError(f"task {task}: no proxy run scored it; give it with --task so the "
                            "proxy runs score it")
    runs = table.assign(_log=np.log(pd.to_numeric(table["ppl_after"], errors="coerce")))
    per_run = runs.groupby("run_id").agg(log_ppl=("_log", "mean"), accuracy=(column, "max"))
    per_run = per_run[np.isfinite(per_run["log_ppl"]) & np.isfinite(per_run["accuracy"])]
    x, y = per_run["log_ppl"].to_numpy(float), per_run["accuracy"].to_numpy(float)
    if len(x) < MIN_RUNS or np.ptp(x) <= 0:
        raise SpecplanError(
            f"task {task}: {len(x)} proxy run(s) scored it at {len(set(x.round(9)))} "
            f"perplexity level(s); mapping perplexity to accuracy needs {MIN_RUNS} runs at "
            "two levels or more: raise --planning-budget, or plan with --exhaustive")
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ coef
    variance = float(residuals @ residuals) / (len(x) - 2)
    covariance = variance * np.linalg.inv(design.T @ design)
    return TaskCurve(task, float(coef[0]), float(coef[1]),
                     tuple(map(tuple, covariance.tolist())), math.sqrt(variance), len(x),
                     (float(x.min()), float(x.max())))


def log_ppl_draws(items, quantiles=(0.1, 0.9), draws: int = 20_000, seed: int = 0
                  ) -> tuple[list, np.ndarray]:
    """The strategies with a forecast within the inference budget, and draws of their log
    perplexity (draws x strategies): each forecast read as log-normal, its median the point
    forecast, its spread from the interval's quantiles, strategies independent (their laws are
    fitted on separate runs)."""
    pool = [f for f in items if f.status == "forecast" and f.within_inference and f.ppl]
    if not pool:
        return [], np.empty((draws, 0))
    z = NormalDist().inv_cdf(quantiles[1]) - NormalDist().inv_cdf(quantiles[0])
    mu = np.log([f.ppl for f in pool])
    sigma = np.array([(math.log(f.ppl_hi / f.ppl_lo) / z)
                      if f.ppl_lo and f.ppl_hi and math.isfinite(f.ppl_lo)
                      and math.isfinite(f.ppl_hi) and f.ppl_lo > 0 else 0.0 for f in pool])
    rng = np.random.default_rng(seed)
    return pool, mu + sigma * rng.standard_normal((draws, len(pool)))


@dataclass
class TaskForecast:
    """A task's forecast accuracy per strategy at the target budgets.

    Attributes:
        curve: the fitted line it is read from.
        accuracy: the median forecast per strategy.
        interval: the forecast's interval per strategy (the forecast's quantiles).
        p_best: the probability that each strategy is the most accurate.
    """

    curve: TaskCurve
    accuracy: dict[str, float] = field(default_factory=dict)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_best: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"curve": self.curve.to_dict(),
                "strategies": {s: {"accuracy": a, "interval": list(self.interval[s]),
                                   "p_best": self.p_best[s]} for s, a in self.accuracy.items()}}


def _summaries(pool, values: np.ndarray, quantiles, best) -> dict[str, tuple]:
    """Per strategy (a column of ``values``): median, interval, chance of being ``best``
    (``np.argmax`` or ``np.argmin`` over a draw)."""
    wins = np.bincount(best(values, axis=1), minlength=len(pool)) / len(values)
    out = {}
    for i, f in enumerate(pool):
        lo, mid, hi = np.quantile(values[:, i], [quantiles[0], 0.5, quantiles[1]])
        out[f.strategy] = (float(mid), (float(lo), float(hi)), float(wins[i]))
    return out


def forecast_task(curve: TaskCurve, items, quantiles=(0.1, 0.9), draws: int = 20_000,
                  seed: int = 0) -> TaskForecast:
    """Each forecast strategy's accuracy on the task: its perplexity forecast (with its
    interval) read through the curve (with its own)."""
    pool, log_ppl = log_ppl_draws(items, quantiles, draws, seed)
    out = TaskForecast(curve)
    if pool:
        accuracy = curve.sample(log_ppl, np.random.default_rng(seed + 1))
        for name, (mid, interval, p_best) in _summaries(pool, accuracy, quantiles,
                                                        np.argmax).items():
            out.accuracy[name], out.interval[name], out.p_best[name] = mid, interval, p_best
    return out


def forecast_mix(curve: TaskCurve, items, weight: float, quantiles=(0.1, 0.9),
                 draws: int = 20_000, seed: int = 0) -> dict[str, tuple]:
    """Each strategy's forecast of ``ln(ppl) - weight x accuracy`` (a stated mix, lower is
    better) from the same draws as :func:`forecast_task`: {strategy: (median, interval,
    chance of the lowest)}."""
    pool, log_ppl = log_ppl_draws(items, quantiles, draws, seed)
    if not pool:
        return {}
    accuracy = curve.sample(log_ppl, np.random.default_rng(seed + 1))
    return _summaries(pool, log_ppl - weight * accuracy, quantiles, np.argmin)
