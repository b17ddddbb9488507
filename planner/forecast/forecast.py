"""Forecasts: plan for budgets too large to run, from measured runs and fitted laws.

A team with 400 A100-hours of pretraining cannot try every strategy at full scale. This module
answers "which strategy, with which settings, and how good" from a results table of smaller runs
(a sweep, plan trials, calibration runs, or the reference study's published numbers):

* :func:`forecast`: per strategy, fit the law of :mod:`planner.forecast.laws` (with prediction
  intervals: bootstrap, run noise and the law's measured extrapolation error), search the best
  feasible settings at the asked budgets, price them for N domains (Eq. 1: ``generic + N x
  specialization``) and recommend the lowest predicted perplexity within the inference budget.
  It states how far it extrapolates and refuses beyond a limit.
* :func:`planner.forecast.calibrate.calibrate`: run a cheap ladder of proxy runs chosen to shrink
  the forecast's intervals, within a planning budget, then forecast;
* :mod:`planner.forecast.reference`: the study's own numbers as a results table, and the bounds
  it states only as an inequality (SLM-is);
* :func:`experiments.backtest.backtest`: fit on the smaller budgets of a table, predict its
  largest ones, report the error and whether the strategies were ranked right.

How a budget becomes law inputs
-------------------------------
The law is in tokens and parameters; budgets are FLOPs. Each strategy's price of a token is read
off its own runs, per inference parameter (``generic_flops / (generic_tokens x params_inference)``
and the same for specialization), so the strategy's overheads come with it: a projected network
pays about 1.6x the SLM per pretraining token (Table 2: 3.6 vs 2.2 GPUh per 1B tokens), a
mixture's pretraining tokens are split over its experts (its law absorbs the split), an LLM
token goes through 6x the parameters (3.5x the GPU-hours). For a candidate model size ``N``:

* pretraining tokens = pretraining budget / (price x N): the whole budget, since the law only
  improves with more (strategies without a generic phase have none);
* specialization tokens: ``slm-is`` spends its whole budget (its resampled pretraining is in
  that phase). Fine-tuning strategies stop early: they spend at most the epochs of domain data
  that their runs used at that domain size (log-log interpolation over measured sizes). Runs
  that stopped early show that more epochs do not help, and runs cut by their budget say nothing
  about more epochs, so the forecast never counts on more. The study prices fine-tuning the same
  way (v2 App. C: steps to the best validation perplexity);
* candidate sizes: the measured sizes, plus (when the law has a size term) a geometric grid up
  to the inference cap; a size more than ``max_extrapolation`` times the largest measured one is
  not searched.

Extrapolation
-------------
Per strategy and axis, the factor is target / largest measured: pretraining FLOPs, the
specialization FLOPs spent per domain, model parameters and domain tokens. A factor below 1 is
inside the data (or below it). The forecast refuses (one :class:`SpecplanError` naming every
strategy and axis) when a factor exceeds ``max_extrapolation``, or when a target is below the
smallest measured value by that factor; the user can raise the limit.

Recommendation
--------------
The lowest predicted perplexity among strategies whose chosen model fits the inference budget,
saying when intervals overlap. A strategy known only by a published bound (SLM-is at
the study's scale) is recommended when its bound is below every forecast. The study's guidance
(v2 Fig. 1) is not coded as rules: on the reference table it follows from the numbers, which
``tests/test_forecast.py`` checks.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from planner.core.budgets import InferenceCap
from planner.core.cost import HardwareProfile
from planner.core.errors import SpecplanError
from planner.core.units import format_count
from planner.forecast import laws
from planner.forecast.reference import PublishedBound, a100_profile
from planner.run.results import sort_strategies
from strategies import strategies_with

__all__ = ["FIT_STARTS", "ForecastResult", "StrategyForecast", "forecast", "usable_runs"]


# -- forecast -----------------------------------------------------------------------------------

_USABLE = ("ok", "over-inference-budget")
_NEEDED = ("strategy", "domain", "domain_tokens", "ppl_after", "params_inference",
           "generic_tokens", "spec_tokens", "generic_flops", "spec_flops")
_SIZE_GRID = 9  # candidate model sizes searched between the measured ones and the cap
# Starting points of the full-data fit: on the reference table 4, 8, 16 and 32 starts reach the
# same optimum for every strategy, and 32 takes 4x longer. Bootstrap refits start from that
# optimum plus one grid point.
FIT_STARTS = 8


@dataclass
class StrategyForecast:
    """One strategy's answer at the asked budgets.

    Attributes:
        strategy: strategy name.
        status: ``forecast`` (a fitted law), ``bound`` (a published inequality only),
            ``infeasible`` (the budgets cannot pay for it) or ``no-forecast`` (see ``notes``).
        within_inference: whether the chosen model fits the inference budget.
        params_inference: parameters of the deployed model.
        generic_tokens, spec_tokens: pretraining tokens, and specialization tokens per domain.
        generic_flops, spec_flops: what they cost (specialization per domain).
        total_flops, total_hours: ``generic + N x spec`` in FLOPs and in device-hours.
        ppl, ppl_lo, ppl_hi: predicted macro perplexity and its prediction interval
            (:class:`planner.forecast.laws.Uncertainty`).
        ppl_at_most: the published upper bound, for ``bound``.
        extrapolation: target / largest measured, per axis.
        notes: why a strategy is not forecast, or what to know about its forecast.
        curve: the forecast along the pretraining budget at the chosen size and
            specialization, from below the smallest measured budget to beyond the target:
            lists ``pretrain_flops``, ``ppl``, ``ppl_lo``, ``ppl_hi`` (for plots).
    """

    strategy: str
    status: str
    within_inference: bool | None = None
    params_inference: float | None = None
    generic_tokens: float | None = None
    spec_tokens: float | None = None
    generic_flops: float | None = None
    spec_flops: float | None = None
    total_flops: float | None = None
    total_hours: float | None = None
    ppl: float | None = None
    ppl_lo: float | None = None
    ppl_hi: float | None = None
    ppl_at_most: float | None = None
    extrapolation: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    curve: dict[str, list[float]] | None = None

    @property
    def max_extrapolation(self) -> tuple[str, float] | None:
        """The axis that extrapolates most and its factor."""
        if not self.extrapolation:
            return None
        axis = max(self.extrapolation, key=self.extrapolation.get)
        return axis, self.extrapolation[axis]


@dataclass
class ForecastResult:
    """The forecast for one set of budgets: every strategy, and the recommendation."""

    pretrain_flops: float
    spec_flops: float
    domain_tokens: float
    domains_count: int
    inference: str
    hours_device: str
    flops_per_device_hour: float
    max_extrapolation: float
    quantiles: tuple[float, float]
    strategies: list[StrategyForecast]
    recommendation: str | None
    reason: str

    def get(self, strategy: str) -> StrategyForecast:
        """The forecast of one strategy (KeyError when it was not asked)."""
        for item in self.strategies:
            if item.strategy == strategy:
                return item
        raise KeyError(strategy)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``specplan forecast --json``)."""
        return asdict(self)


def usable_runs(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise SpecplanError(
            f"{where}: the results table lacks column(s) {missing}; pass a results table "
            "(sweep, plan trials, --calibrate output or 'reference')"
        )
    rows = df[df["status"].isin(_USABLE)] if "status" in df.columns else df
    ppl = pd.to_numeric(rows["ppl_after"], errors="coerce")
    return rows[np.isfinite(ppl) & (ppl > 1)]


def _price(rows: pd.DataFrame, flops: str, tokens: str) -> float | None:
    """FLOPs per token per inference parameter, the median over runs that spent some."""
    ok = (rows[tokens] > 0) & (rows[flops] > 0) & (rows["params_inference"] > 0)
    if not ok.any():
        return None
    sub = rows[ok]
    return float(np.median(sub[flops] / (sub[tokens] * sub["params_inference"])))


def _epoch_cap(rows: pd.DataFrame, domain_tokens: float) -> float:
    """Most fine-tuning epochs any run used, per domain size, interpolated in log-log."""
    sub = rows[(rows["spec_tokens"] > 0) & (rows["domain_tokens"] > 0)]
    epochs = (sub["spec_tokens"] / sub["domain_tokens"]).groupby(sub["domain_tokens"]).max()
    x = np.log(epochs.index.to_numpy(dtype=float))
    y = np.log(epochs.to_numpy(dtype=float))
    return float(np.exp(np.interp(math.log(domain_tokens), x, y)))


def _cap_params(cap: InferenceCap, price_inference: float | None) -> float | None:
    """The largest parameter count the inference budget admits (None: unlimited)."""
    limits = []
    if cap.params is not None:
        limits.append(float(cap.params))
    if cap.flops_per_token is not None and price_inference:
        limits.append(cap.flops_per_token / price_inference)
    return min(limits) if limits else None


def _respects_inference(name: str) -> bool:
    """Whether the strategy must fit the inference budget (the large model need not: it is the
    reference point); a name outside the registry is held to the budget."""
    return name not in strategies_with(respects_inference_budget=False)


def _early_stopped(name: str) -> bool:
    """Whether the strategy's specialization tokens are fine-tuning, which early stopping caps
    (not so when its broad pretraining is paid per domain, as importance sampling's is)."""
    return name not in strategies_with(pretrains_in_specialization=True)


def _extrapolation(name: str, axes: Mapping[str, tuple[float, pd.Series]], limit: float,
                   refusals: list[str]) -> dict[str, float]:
    """Target / largest measured per axis; appends a refusal for each axis beyond ``limit``
    (above the largest measured value, or below the smallest by that factor).

    Axes where the strategy has no positive measured value (no pretraining) are left out.
    """
    factors = {}
    for axis, (target, measured) in axes.items():
        values = measured[measured > 0].astype(float)
        if values.empty or not target > 0:
            continue
        top, bottom = float(values.max()), float(values.min())
        factors[axis] = target / top
        if target / top > limit:
            refusals.append(f"{name} {axis} {target:.3g} is {target / top:.3g}x the largest "
                            f"measured ({top:.3g})")
        elif bottom / target > limit:
            refusals.append(f"{name} {axis} {target:.3g} is 1/{bottom / target:.3g} of the "
                            f"smallest measured ({bottom:.3g})")
    return factors


@dataclass
class _Candidate:
    params: float
    generic_tokens: float
    spec_tokens: float
    generic_flops: float
    spec_flops: float
    ppl: float
    lo: float
    hi: float


def _forecast_strategy(
    rows: pd.DataFrame, name: str, budgets, domain_tokens: float, *, limit: float,
    n_boot: int, seed: int, q: tuple[float, float], refusals: list[str],
) -> StrategyForecast:
    """Fit, search sizes, price and predict one strategy (see the module docstring)."""
    sizes = ("params_inference", "generic_tokens", "spec_tokens", "domain_tokens")
    complete = rows.dropna(subset=list(sizes))
    if complete.empty:
        why = f" ({rows['source'].iloc[0]})" if "source" in rows.columns else ""
        return StrategyForecast(name, "no-forecast", notes=[
            f"{name}: no run has all of {list(sizes)}{why}"])
    try:
        fit = laws.fit_law(complete, name, n_inits=FIT_STARTS, seed=seed)
    except SpecplanError as err:
        return StrategyForecast(name, "no-forecast", notes=[str(err)])
    notes = [] if fit.converged else [f"{name}: the law's fit did not converge; treat with care"]
    notes += fit.warnings()
    try:
        spread = laws.uncertainty(complete, name, fit, n_boot=n_boot, seed=seed)
    except SpecplanError as err:
        spread = None
        notes.append(f"{name}: no interval ({err})")

    price_generic = _price(complete, "generic_flops", "generic_tokens")
    price_spec = _price(complete, "spec_flops", "spec_tokens")
    price_inference = (float(np.median(complete["inference_flops_per_token"]
                                       / complete["params_inference"]))
                       if "inference_flops_per_token" in complete.columns
                       and complete["inference_flops_per_token"].notna().any() else None)
    if price_spec is None or (price_generic is None and (complete["generic_tokens"] > 0).any()):
        return StrategyForecast(name, "no-forecast", notes=[
            f"{name}: its runs record tokens without the FLOPs they cost, so the budgets "
            "cannot be turned into tokens"])

    measured = np.sort(complete["params_inference"].unique().astype(float))
    cap = _cap_params(budgets.inference, price_inference)
    if "A" in fit.params:
        top = measured.max() * limit
        if cap is not None and cap > top:
            notes.append(f"{name}: sizes above {format_count(top)} parameters need more than "
                         f"{limit:g}x extrapolation from the largest run; not searched")
        top = min(top, cap) if cap is not None else top
        grid = (np.geomspace(measured.min(), top, _SIZE_GRID)
                if math.isfinite(top) and top > measured.min() else [])
        candidates = np.unique(np.concatenate([measured, grid]))
    else:
        candidates = np.array([float(np.median(complete["params_inference"]))])
    within = candidates <= cap * (1 + 1e-9) if cap is not None else np.ones(len(candidates), bool)
    if within.any():
        candidates = candidates[within]
    elif _respects_inference(name):
        return StrategyForecast(name, "infeasible", within_inference=False, notes=[
            f"{name}: every forecastable size ({format_count(candidates.min())} parameters and "
            f"up) breaks the inference budget ({budgets.inference.describe()})"])

    epochs = _epoch_cap(complete, domain_tokens)
    best, errors = None, []
    for params in candidates:
        generic_tokens = budgets.pretrain_flops / (price_generic * params) if price_generic else 0.0
        budget_tokens = budgets.spec_flops / (price_spec * params)
        spec_tokens = (min(budget_tokens, epochs * domain_tokens) if _early_stopped(name)
                       else budget_tokens)
        sizes_at = {"params_inference": params, "generic_tokens": generic_tokens,
                    "spec_tokens": spec_tokens, "domain_tokens": domain_tokens}
        try:
            ppl = float(fit.predict(**sizes_at))
            lo, hi = ((float(v) for v in laws.predict_interval(spread, sizes_at, q)[1:])
                      if spread is not None else (float("nan"), float("nan")))
        except SpecplanError as err:
            errors.append(str(err))
            continue
        if best is None or ppl < best.ppl:
            best = _Candidate(float(params), float(generic_tokens), float(spec_tokens),
                              float(generic_tokens * (price_generic or 0.0) * params),
                              float(spec_tokens * price_spec * params), ppl, lo, hi)
    if best is None:
        return StrategyForecast(name, "no-forecast", notes=[errors[0]])
    if _early_stopped(name) and best.spec_tokens < 0.99 * budgets.spec_flops / (
            price_spec * best.params):
        notes.append(f"{name}: fine-tuning is forecast at {epochs:.3g} epochs of the domain data, "
                     "the most its runs used at this domain size (early stopping; more is not "
                     "extrapolated); the rest of the specialization budget is not counted")

    best_sizes = {"generic_tokens": best.generic_tokens, "spec_tokens": best.spec_tokens,
                  "domain_tokens": domain_tokens}
    if spread is not None and spread.drift is None and spread.decades(best_sizes) > 0:
        notes.append(f"{name}: the interval leaves out the law's own extrapolation error, which "
                     f"could not be measured ({spread.drift_note})")
    extrapolation = _extrapolation(name, {
        "pretrain": (best.generic_flops, complete["generic_flops"]),
        "spec": (best.spec_flops, complete["spec_flops"]),
        "params": (best.params, complete["params_inference"]),
        "domain_tokens": (domain_tokens, complete["domain_tokens"]),
    }, limit, refusals)
    return StrategyForecast(
        strategy=name, status="forecast",
        within_inference=bool(cap is None or best.params <= cap * (1 + 1e-9)),
        params_inference=best.params, generic_tokens=best.generic_tokens,
        spec_tokens=best.spec_tokens, generic_flops=best.generic_flops,
        spec_flops=best.spec_flops, ppl=best.ppl, ppl_lo=best.lo, ppl_hi=best.hi,
        extrapolation=extrapolation, notes=notes,
        curve=_pretraining_curve(fit, spread, best, price_generic, domain_tokens,
                                 budgets.pretrain_flops, complete["generic_flops"], q),
    )


def _pretraining_curve(fit: laws.LawFit, spread: laws.Uncertainty | None, best: _Candidate,
                       price_generic: float | None, domain_tokens: float, target: float,
                       measured: pd.Series, q: tuple[float, float],
                       points: int = 24) -> dict[str, list[float]] | None:
    """The chosen configuration's forecast as the pretraining budget varies (see
    :class:`StrategyForecast`), over the budgets its law can forecast; None without a
    pretraining target. A strategy without pretraining gets a flat curve: the pretraining
    budget does not change it, which is worth seeing beside those it does."""
    if not target > 0:
        return None
    spent = measured[measured > 0].astype(float)
    low = min(float(spent.min()) if len(spent) else target / 10, target) / 1.5
    high = max(float(spent.max()) if len(spent) else target, target) * 1.5
    curve: dict[str, list[float]] = {"pretrain_flops": [], "ppl": [], "ppl_lo": [],
                                     "ppl_hi": []}
    for flops in np.geomspace(low, high, points):
        sizes = {"params_inference": best.params, "spec_tokens": best.spec_tokens,
                 "domain_tokens": domain_tokens,
                 "generic_tokens": flops / (price_generic * best.params) if price_generic
                 else 0.0}
        try:  # a term fitted at one level forecasts only near it: keep the points it can
            ppl = float(fit.predict(**sizes))
            lo, hi = ((float(v) for v in laws.predict_interval(spread, sizes, q)[1:])
                      if spread is not None else (math.nan, math.nan))
        except SpecplanError:
            continue
        for key, value in zip(curve, (float(flops), ppl, lo, hi)):
            curve[key].append(value)
    return curve if len(curve["ppl"]) >= 2 else None


def _from_bound(bounds: Sequence[PublishedBound], name: str, budgets,
                domain_tokens: float) -> StrategyForecast:
    """A strategy known only by a published inequality (see :func:`reference_bounds`)."""
    usable = [b for b in bounds if b.domain_tokens <= domain_tokens * (1 + 1e-9)]
    if not usable:
        smallest = min(b.domain_tokens for b in bounds)
        return StrategyForecast(name, "no-forecast", notes=[
            f"{name}: the study states its quality only from {format_count(smallest)} domain "
            "tokens up, and a smaller domain set can be worse"])
    # The largest published size not above the asked one: more domain data cannot hurt.
    bound = max(usable, key=lambda b: b.domain_tokens)
    within = budgets.inference.admits(flops_per_token=bound.inference_flops_per_token,
                                      params=int(bound.params_inference))
    if budgets.spec_flops < bound.spec_flops:
        return StrategyForecast(name, "infeasible", within_inference=within, notes=[
            f"{name}: its published quality needs {bound.spec_flops:.3g} specialization FLOPs "
            f"per domain; the budget is {budgets.spec_flops:.3g} (no published result below)"])
    return StrategyForecast(
        strategy=name, status="bound", within_inference=within,
        params_inference=bound.params_inference, generic_tokens=0.0,
        generic_flops=bound.generic_flops, spec_flops=bound.spec_flops,
        ppl_at_most=bound.ppl_at_most, notes=[f"{name}: {bound.source}"],
    )


def _recommend(items: list[StrategyForecast]) -> tuple[str | None, str]:
    """The lowest predicted perplexity within the inference budget, and why."""
    pool = [f for f in items if f.within_inference and f.status == "forecast"]
    bounded = [f for f in items if f.within_inference and f.status == "bound"]
    best = min(pool, key=lambda f: f.ppl) if pool else None
    for candidate in bounded:
        if best is None or candidate.ppl_at_most < best.ppl:
            text = (f"{candidate.strategy}: the study reports it at or below "
                    f"{candidate.ppl_at_most:.4g} here (a published bound, not a forecast)")
            if best is not None:
                text += f", below the best forecast ({best.strategy} {best.ppl:.4g})"
                if math.isfinite(best.ppl_lo) and best.ppl_lo < candidate.ppl_at_most:
                    text += f"; {best.strategy}'s interval reaches below the bound, so check both"
            return candidate.strategy, text
    if best is None:
        return None, "no strategy is feasible within the inference budget at these budgets"
    text = f"{best.strategy}: lowest predicted perplexity within the inference budget"
    if math.isfinite(best.ppl_lo):
        text += f" ({best.ppl:.4g} [{best.ppl_lo:.4g}, {best.ppl_hi:.4g}])"
        overlap = [f.strategy for f in pool if f is not best and math.isfinite(f.ppl_lo)
                   and f.ppl_lo <= best.ppl_hi and best.ppl_lo <= f.ppl_hi]
        if overlap:
            text += (f"; its interval overlaps {', '.join(overlap)}: the difference is within "
                     "the forecast's uncertainty")
    for candidate in bounded:
        text += (f"; {candidate.strategy}'s published bound ({candidate.ppl_at_most:.4g}) does "
                 "not rank it below this forecast")
    return best.strategy, text


def _refusal(refusals: Sequence[str], limit: float) -> SpecplanError:
    return SpecplanError(
        f"forecast: beyond --max-extrapolation {limit:g}: " + "; ".join(refusals)
        + "; add runs nearer the target (--calibrate) or raise --max-extrapolation")


def forecast(
    results_df: pd.DataFrame,
    budgets,
    *,
    strategies: Sequence[str] | None = None,
    max_extrapolation: float = 10.0,
    n_boot: int = 50,
    bounds: Sequence[PublishedBound] = (),
    hours: HardwareProfile | None = None,
    seed: int = 0,
    q: tuple[float, float] = (0.1, 0.9),
) -> ForecastResult:
    """Forecast every strategy at ``budgets`` from a results table; recommend one.

    Args:
        results_df: the results table (runs of any budgets).
        budgets: ``strategies.base.Budgets``: pretraining and per-domain specialization FLOPs,
            the inference cap, the domain data size (required unless the table has one) and the
            number of domains N for the total cost.
        strategies: which to forecast (default: every strategy with runs or a bound).
        max_extrapolation: largest target / measured factor allowed on any axis.
        n_boot: bootstrap refits per strategy for the intervals.
        bounds: published inequalities for strategies without runs
            (:func:`reference_bounds` for the reference table).
        hours: device profile for the device-hours column (default: planner.core.cost's A100).
        seed: seed of the fits and bootstrap.
        q: quantiles of the interval.

    Returns:
        The :class:`ForecastResult`.

    Raises:
        SpecplanError: on unusable input, an unknown strategy, a missing domain size, or any
            extrapolation beyond ``max_extrapolation`` (all of them, in one line).
    """
    if max_extrapolation < 1:
        raise SpecplanError(f"--max-extrapolation {max_extrapolation:g}: give a factor >= 1")
    if budgets.domains_count < 1:
        raise SpecplanError(f"--domains-count {budgets.domains_count}: give at least 1 domain")
    if budgets.pretrain_flops < 0 or budgets.spec_flops <= 0:
        raise SpecplanError("forecast: give a pretraining budget >= 0 and a specialization "
                            "budget > 0 (FLOPs or device time, e.g. 1h@a100)")
    rows = usable_runs(results_df, "forecast")
    measured_sizes = sorted(rows["domain_tokens"].dropna().unique())
    domain_tokens = budgets.domain_tokens
    if domain_tokens is None:
        if len(measured_sizes) != 1:
            raise SpecplanError(
                "forecast: give --domain-tokens; the results table has domain sizes "
                f"{[format_count(s) for s in measured_sizes]}")
        domain_tokens = measured_sizes[0]
    have = sort_strategies(list(rows["strategy"].unique()) + [b.strategy for b in bounds])
    names = list(strategies) if strategies else have
    unknown = [s for s in names if s not in have]
    if unknown:
        raise SpecplanError(f"forecast: no runs of {unknown} in the results table; "
                            f"it has {have}")
    hours = hours or a100_profile()
    refusals: list[str] = []
    for name in names:  # the axes the user's budgets fix: refuse before any fit
        own = rows[rows["strategy"] == name]
        _extrapolation(name, {"pretrain": (budgets.pretrain_flops, own["generic_flops"]),
                              "domain_tokens": (float(domain_tokens), own["domain_tokens"])},
                       max_extrapolation, refusals)
    if refusals:
        raise _refusal(refusals, max_extrapolation)
    items = []
    for name in names:
        own = rows[rows["strategy"] == name]
        if own.empty:
            item = _from_bound([b for b in bounds if b.strategy == name], name, budgets,
                               domain_tokens)
        else:
            item = _forecast_strategy(own, name, budgets, float(domain_tokens),
                                      limit=max_extrapolation, n_boot=n_boot, seed=seed, q=q,
                                      refusals=refusals)
        if item.generic_flops is not None and item.spec_flops is not None:
            item.total_flops = item.generic_flops + budgets.domains_count * item.spec_flops
            item.total_hours = item.total_flops / hours.flops_per_hour()
        if item.within_inference is False and item.status in ("forecast", "bound"):
            item.notes.append(f"{item.strategy}: over the inference budget "
                              f"({budgets.inference.describe()}); shown for reference only")
        items.append(item)
    if refusals:
        raise _refusal(refusals, max_extrapolation)
    recommendation, reason = _recommend(items)
    return ForecastResult(
        pretrain_flops=budgets.pretrain_flops, spec_flops=budgets.spec_flops,
        domain_tokens=float(domain_tokens), domains_count=budgets.domains_count,
        inference=budgets.inference.describe(), hours_device=hours.name,
        flops_per_device_hour=hours.flops_per_hour(),
        max_extrapolation=max_extrapolation, quantiles=q, strategies=items,
        recommendation=recommendation, reason=reason,
    )


# -- backtest -----------------------------------------------------------------------------------


# -- calibration --------------------------------------------------------------------------------




