"""Forecasts: plan for budgets too large to run, from measured runs and fitted laws.

A team with 400 A100-hours of pretraining cannot try every strategy at full scale. This module
answers "which strategy, with which settings, and how good" from a results table of smaller runs
(a sweep, plan trials, calibration runs, or the reference study's published numbers):

* :func:`forecast`: per strategy, fit the law of :mod:`experiments.laws` (with prediction
  intervals: bootstrap, run noise and the law's measured extrapolation error), search the best
  feasible settings at the asked budgets, price them for N domains (Eq. 1: ``generic + N x
  specialization``) and recommend the lowest predicted perplexity within the inference budget.
  It states how far it extrapolates and refuses beyond a limit.
* :func:`backtest`: fit on the smaller budgets of a table, predict its largest ones, report the
  error and whether the strategies were ranked right.
* :func:`calibrate`: run a cheap ladder of proxy runs chosen to shrink the forecast's intervals,
  within a planning budget, then forecast.
* :func:`load_reference_results`: the study's own numbers (paper notes §1, §4) as a results
  table, and :func:`reference_bounds` for what it states only as an inequality (SLM-is).

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
  way (notes §1: steps to the best validation perplexity);
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
(notes §4.6) is not coded as rules: on the reference table it follows from the numbers, which
``tests/test_forecast.py`` checks.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import laws
from experiments.frontier import CONFIG_KEYS, sort_strategies
from planner.cost import PROFILES, HardwareProfile, InferenceCap
from planner.errors import SpecplanError
from planner.units import format_count

__all__ = [
    "CALIBRATION_STRATEGIES",
    "REFERENCE_CSV",
    "THROUGHPUT",
    "BacktestResult",
    "CalibrationResult",
    "ForecastResult",
    "LadderRun",
    "PublishedBound",
    "StrategyForecast",
    "backtest",
    "calibrate",
    "forecast",
    "load_reference_results",
    "read_results",
    "reference_bounds",
]

# -- the reference study's numbers --------------------------------------------------------------

#: The published numbers (paper notes §1, §4) as a results table (:func:`load_reference_results`).
REFERENCE_CSV = Path(__file__).with_name("reference_results.csv")


@dataclass(frozen=True)
class Throughput:
    """A100 GPU-hours per 1B tokens (v2 Table 2): generic training, specialization, inference."""

    generic: float | None
    spec: float
    inference: float


#: v2 Table 2. ``slm-nopt`` is not in it; it trains the SLM, so it takes the SLM's [INFERRED].
THROUGHPUT: dict[str, Throughput] = {
    "slm": Throughput(2.2, 2.2, 0.61),
    "slm-nopt": Throughput(None, 2.2, 0.61),
    "slm-mix": Throughput(2.2, 2.2, 0.61),
    "slm-pn": Throughput(3.6, 2.2, 0.61),
    "slm-is": Throughput(None, 2.2, 0.61),
    "llm": Throughput(7.7, 7.7, 2.54),
}

#: Columns of ``reference_results.csv`` that are published (or chosen, see ``source``); the
#: loader derives every other results-table column from them.
_PUBLISHED = (
    "strategy", "settings", "domain", "domain_tokens", "generic_gpuh", "spec_gpuh",
    "params_inference", "params_pretrain", "ppl_generic", "ppl_before", "ppl_after", "status",
    "source",
)

# v2 Table 3: SLM-is spends up to 130 GPUh per domain, all of it specialization.
_IS_SPEC_GPUH = 130.0
_IS_PARAMS = 126e6
# v2 §4.3: at 1M domain tokens SLM-is beats the 771M LLM; the notes bound it by the LLM's Table 8
# value at its largest budget (600 GPUh, 14.50) [INFERRED].
_IS_BEATS_LLM = (1_000_000, 600.0)


def _a100() -> HardwareProfile:
    """planner.cost's A100 profile, unaffected by any measured utilisation in a user's cache:
    the reference table's FLOPs must not depend on the machine that reads it."""
    return PROFILES["a100"]


def _gpuh_to_tokens(gpuh: pd.Series, per_billion: pd.Series) -> pd.Series:
    return gpuh / per_billion * 1e9


def reference_derived(published: pd.DataFrame) -> pd.DataFrame:
    """The results-schema columns of the reference table, computed from its published columns.

    GPU-hours become tokens with the throughput table (:data:`THROUGHPUT`) and FLOPs with
    planner.cost's A100 profile; the study's costs double as the budgets (it reports upper
    limits of what each phase spent, Table 3). A GPU-hour that is not published (``slm-nopt``'s
    specialization) stays NaN.

    Raises:
        SpecplanError: on a missing published column or a strategy without a throughput.
    """
    missing = [c for c in _PUBLISHED if c not in published.columns]
    if missing:
        raise SpecplanError(f"reference table: missing column(s) {missing}; expected {_PUBLISHED}")
    unknown = sorted(set(published["strategy"]) - set(THROUGHPUT))
    if unknown:
        raise SpecplanError(
            f"reference table: no throughput for {unknown}; add it to THROUGHPUT (v2 Table 2)"
        )
    df = published.loc[:, list(_PUBLISHED)].copy()
    rates = {part: df["strategy"].map(lambda s, p=part: getattr(THROUGHPUT[s], p))
             for part in ("generic", "spec", "inference")}
    per_hour = _a100().flops_per_hour()
    generic = df["generic_gpuh"].astype(float)
    spec = df["spec_gpuh"].astype(float)
    df["run_id"] = [f"reference-{i:03d}" for i in range(len(df))]
    df["generic_tokens"] = _gpuh_to_tokens(generic, rates["generic"].astype(float)).fillna(0.0)
    df.loc[generic == 0, "generic_tokens"] = 0.0
    df["spec_tokens"] = _gpuh_to_tokens(spec, rates["spec"].astype(float))
    df["generic_flops"] = generic * per_hour
    df["spec_flops"] = spec * per_hour
    df["pretrain_budget_flops"] = df["generic_flops"]
    df["spec_budget_flops"] = df["spec_flops"]
    df["generic_seconds"] = generic * 3600.0
    df["spec_seconds"] = spec * 3600.0
    df["inference_flops_per_token"] = rates["inference"].astype(float) * per_hour / 1e9
    df["device"] = "a100"
    return df


def load_reference_results(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The reference study's published perplexities and costs as a results table.

    One row per strategy x pretraining budget x domain size, on the one domain
    ``pile-average`` (the macro average the study reports): v2 Table 8 (100-600 GPUh), Table 4
    (pretraining costs from Table 3: SLM 530, LLM 650 GPUh; ``slm-nopt`` without a published
    cost), specialization GPUh from Table 3. ``ppl_before`` is "No FT", ``ppl_generic`` is c4.
    The ``source`` column gives each row's provenance. SLM-is is not in it (its numbers are not
    published); see :func:`reference_bounds`. The derived columns are recomputed on load from
    the published ones, so the CSV cannot drift from the conversion.
    """
    try:
        published = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as err:
        raise SpecplanError(f"reference table {path}: cannot read it ({err})") from None
    return reference_derived(published)


@dataclass(frozen=True)
class PublishedBound:
    """What the study states about a strategy only as an inequality, at one domain size.

    The strategy reaches ``ppl <= ppl_at_most`` at ``domain_tokens`` when it may spend
    ``spec_flops`` per domain (and ``generic_flops`` once); there is no number to fit a law to.
    """

    strategy: str
    domain_tokens: float
    ppl_at_most: float
    generic_flops: float
    spec_flops: float
    params_inference: float
    inference_flops_per_token: float
    source: str


def reference_bounds(reference: pd.DataFrame) -> list[PublishedBound]:
    """SLM-is at the study's scale, from what the notes state (it has no published numbers).

    Facts used (paper notes §4.3, §1 Table 3), one bound per domain size of ``reference``:

    * Table 3: SLM-is costs 0 generic and up to 130 GPUh of specialization per domain;
    * §4.3 [v2]: "SLM-is is the best method among those that fit the small inference budget,
      after specialization": below every in-budget row (status ``ok``) of that domain size;
    * §4.3 [v2]: at 1M tokens it "even beats the 771M LLM" for under 130 GPUh; the notes bound
      it by the LLM's 14.50 at 600 GPUh (Table 8) [INFERRED].

    So the bound holds only for a specialization budget of at least 130 A100-hours per domain
    and a 126M model; :func:`forecast` uses it for "importance sampling for one domain with a
    large specialization budget" (notes §4.6) and never turns it into a perplexity.
    """
    per_hour = _a100().flops_per_hour()
    rows = reference[np.isfinite(pd.to_numeric(reference["ppl_after"], errors="coerce"))]
    bounds = []
    for size in sorted(rows["domain_tokens"].unique()):
        at_size = rows[rows["domain_tokens"] == size]
        small = at_size[at_size["status"] == "ok"]
        ppl, source = float(small["ppl_after"].min()), (
            "notes §4.3 [v2]: best method within the small inference budget after "
            f"specialization, so below every in-budget row at {format_count(size)} tokens; "
            "Table 3: 130 GPUh per domain")
        if size == _IS_BEATS_LLM[0]:
            llm = at_size[(at_size["strategy"] == "llm")
                          & np.isclose(at_size["generic_gpuh"], _IS_BEATS_LLM[1])]
            if len(llm) and float(llm["ppl_after"].min()) < ppl:
                ppl, source = float(llm["ppl_after"].min()), (
                    "notes §4.3 [v2 + INFERRED]: at 1M tokens beats the 771M LLM (14.50 at 600 "
                    "GPUh, Table 8) for under 130 GPUh; Table 3: 130 GPUh per domain")
        bounds.append(PublishedBound(
            strategy="slm-is", domain_tokens=float(size), ppl_at_most=ppl, generic_flops=0.0,
            spec_flops=_IS_SPEC_GPUH * per_hour, params_inference=_IS_PARAMS,
            inference_flops_per_token=THROUGHPUT["slm-is"].inference * per_hour / 1e9,
            source=source,
        ))
    return bounds


def read_results(path: str | Path) -> pd.DataFrame:
    """A results table: a sweep or plan output folder, a parquet or CSV, or a calibration CSV.

    Raises:
        SpecplanError: when nothing readable is there, or it has no rows.
    """
    from experiments.sweep import read_results as read_table

    df = read_table(path)
    if df.empty:
        raise SpecplanError(f"{path}: the results table has no rows; run a sweep or --calibrate")
    return df


# -- forecast -----------------------------------------------------------------------------------

_USABLE = ("ok", "over-inference-budget")
_NEEDED = ("strategy", "domain", "domain_tokens", "ppl_after", "params_inference",
           "generic_tokens", "spec_tokens", "generic_flops", "spec_flops")
_SIZE_GRID = 9  # candidate model sizes searched between the measured ones and the cap
_EARLY_STOPPED = "slm-is"  # the one strategy whose specialization tokens are not fine-tuning
# Starting points of the full-data fit: on the reference table 4, 8, 16 and 32 starts reach the
# same optimum for every strategy, and 32 takes 4x longer. Bootstrap refits start from that
# optimum plus one grid point.
_FIT_STARTS = 8


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
            (:class:`experiments.laws.Uncertainty`).
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


def _usable(df: pd.DataFrame, where: str) -> pd.DataFrame:
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
    """Whether the strategy must fit the inference budget (``llm`` need not: it is the
    reference point); a name outside the registry is held to the budget."""
    from strategies import available, get_strategy

    return get_strategy(name).respects_inference_budget if name in available() else True


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
        fit = laws.fit_law(complete, name, n_inits=_FIT_STARTS, seed=seed)
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
        spec_tokens = (budget_tokens if name == _EARLY_STOPPED
                       else min(budget_tokens, epochs * domain_tokens))
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
    if name != _EARLY_STOPPED and best.spec_tokens < 0.99 * budgets.spec_flops / (
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
        hours: device profile for the device-hours column (default: planner.cost's A100).
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
    rows = _usable(results_df, "forecast")
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
    hours = hours or _a100()
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


@dataclass
class BacktestResult:
    """How well laws fitted on smaller budgets predicted the largest ones.

    Attributes:
        configs: one row per held-out config: its keys, ``actual`` and ``predicted`` macro
            perplexity, the prediction interval ``lo``/``hi``, ``abs_error``, ``pct_error``,
            ``covered`` and ``status``.
        regimes: one row per regime (``regime_keys`` values) with at least two in-budget
            strategies: predicted and actual order, ``winner_right``, ``ranking_right`` and
            ``regret`` (actual perplexity lost by following the forecast's winner).
        per_strategy: errors per strategy and the budget it held out.
        mae, mape: mean absolute error (perplexity) and mean absolute percentage error.
        coverage: share of held-out configs inside their interval.
        winner_accuracy: share of regimes whose best strategy was predicted right.
        skipped: strategies (or configs) that could not be back-tested, and why.
    """

    configs: pd.DataFrame
    regimes: pd.DataFrame
    per_strategy: pd.DataFrame
    mae: float
    mape: float
    coverage: float
    winner_accuracy: float
    skipped: dict[str, str]

    def to_dict(self) -> dict:
        """A JSON-ready dict (``specplan forecast --backtest --json``)."""
        return {
            "mae": self.mae, "mape": self.mape, "coverage": self.coverage,
            "winner_accuracy": self.winner_accuracy, "skipped": self.skipped,
            "configs": self.configs.to_dict("records"),
            "regimes": self.regimes.to_dict("records"),
            "per_strategy": self.per_strategy.to_dict("records"),
        }


def _macro_prediction(fit: laws.LawFit, config: pd.DataFrame) -> float:
    """The fit's macro perplexity over a config's runs (mean log-perplexity, then exp)."""
    logs = []
    for domain, part in config.groupby("domain", sort=False):
        sizes = {c: part[c].to_numpy(dtype=float) for c in laws.SIZE_COLUMNS}
        logs.append(np.log(fit.predict(domain=str(domain), **sizes)))
    return float(np.exp(np.mean(np.concatenate(logs))))


def _rank_regimes(configs: pd.DataFrame, regime_keys: Sequence[str]) -> pd.DataFrame:
    columns = [*regime_keys, "strategies", "predicted_order", "actual_order", "winner_right",
               "ranking_right", "regret"]
    ok = configs[configs["status"] == "ok"] if len(configs) else configs
    records = []
    for key, group in (ok.groupby(list(regime_keys), sort=True) if len(ok) else []):
        best = group.groupby("strategy")[["actual", "predicted"]].min()
        if len(best) < 2:
            continue
        predicted = best["predicted"].sort_values(kind="stable").index.tolist()
        actual = best["actual"].sort_values(kind="stable").index.tolist()
        records.append({
            **dict(zip(regime_keys, key if isinstance(key, tuple) else (key,))),
            "strategies": len(best), "predicted_order": " < ".join(predicted),
            "actual_order": " < ".join(actual), "winner_right": predicted[0] == actual[0],
            "ranking_right": predicted == actual,
            "regret": float(best.loc[predicted[0], "actual"] - best.loc[actual[0], "actual"]),
        })
    return pd.DataFrame(records, columns=columns)


def backtest(
    results_df: pd.DataFrame,
    *,
    holdout: str = "largest",
    strategies: Sequence[str] | None = None,
    regime_keys: Sequence[str] = ("domain_tokens", "spec_budget_flops"),
    n_boot: int = 30,
    seed: int = 0,
    q: tuple[float, float] = (0.1, 0.9),
) -> BacktestResult:
    """Fit each strategy on its smaller budgets and predict its largest one.

    Per strategy, the held-out runs are those at its largest pretraining budget
    (``pretrain_budget_flops``; for a strategy without pretraining, ``spec_budget_flops``,
    where its broad training happens). The law and its uncertainty are fitted on the rest, and
    each held-out config (its runs over domains) is predicted as a macro perplexity.

    Ranking: within each regime (default: a domain size and specialization budget, the
    study's decision axes besides pretraining), each in-budget strategy (status ``ok``) is
    represented by its best held-out config, as a forecast would pick its best settings; the
    predicted order is compared with the actual one. (In the reference table the in-budget
    strategies share their specialization cost per domain size, so its regimes are the three
    domain sizes.)

    Args:
        results_df: the results table.
        holdout: ``"largest"`` (the only rule so far).
        strategies: which to back-test (default: all with runs).
        regime_keys: results-table columns that define a regime.
        n_boot: bootstrap refits per strategy.
        seed: seed of the fits.
        q: interval quantiles.

    Raises:
        SpecplanError: on an unknown holdout rule or strategy, a table without the needed
            columns, or when no strategy can be back-tested.
    """
    if holdout != "largest":
        raise SpecplanError(f"backtest: holdout={holdout!r}; only 'largest' is supported")
    rows = _usable(results_df, "backtest")
    missing = [k for k in regime_keys if k not in rows.columns]
    if missing:
        raise SpecplanError(f"backtest: regime column(s) {missing} are not in the results table")
    have = sort_strategies(rows["strategy"])
    names = list(strategies) if strategies else have
    unknown = [s for s in names if s not in have]
    if unknown:
        raise SpecplanError(f"backtest: no runs of {unknown}; the table has {have}")
    keys = [k for k in (*CONFIG_KEYS, "params_inference") if k in rows.columns]
    records, skipped, per_strategy = [], {}, []
    for name in names:
        own = rows[rows["strategy"] == name].dropna(subset=list(laws.SIZE_COLUMNS))
        axis = ("pretrain_budget_flops" if (own["generic_tokens"] > 0).any()
                else "spec_budget_flops")
        if own.empty or axis not in own.columns:
            skipped[name] = f"no run with all of {list(laws.SIZE_COLUMNS)} and {axis}"
            continue
        values = own[axis].to_numpy(dtype=float)
        held = np.isclose(values, values.max(), rtol=1e-9, atol=0.0)
        if held.all():
            skipped[name] = f"one {axis} value only: nothing smaller to fit on"
            continue
        train = own[~held]
        try:
            fit = laws.fit_law(train, name, n_inits=_FIT_STARTS, seed=seed)
            spread = laws.uncertainty(train, name, fit, n_boot=n_boot, seed=seed)
        except SpecplanError as err:
            skipped[name] = str(err)
            continue
        first = len(records)
        for key, config in own[held].groupby(keys, dropna=False, sort=False):
            try:
                point = _macro_prediction(fit, config)
                refits = np.array([_macro_prediction(f, config) for f in spread.fits])
            except SpecplanError as err:
                skipped.setdefault(name, str(err))
                continue
            actual = float(np.exp(np.log(config["ppl_after"].astype(float)).mean()))
            # One distance for the config's runs, as they enter sigma: root mean square.
            decades = float(np.sqrt(np.mean(spread.decades(
                {c: config[c].to_numpy(dtype=float) for c in laws.SIZE_COLUMNS}) ** 2)))
            _, lo, hi = spread.interval(refits, decades, q)
            in_budget = "status" not in config.columns or (config["status"] == "ok").all()
            records.append({
                **dict(zip(keys, key)), "held_out": axis, "n_fit": len(train),
                "actual": actual, "predicted": point, "lo": float(lo), "hi": float(hi),
                "status": "ok" if in_budget else "over-inference-budget",
            })
        mine = pd.DataFrame(records[first:])
        if len(mine):
            error = (mine["predicted"] - mine["actual"]).abs()
            per_strategy.append({
                "strategy": name, "held_out": axis, "budget": float(values.max()),
                "n_fit": len(train), "configs": len(mine), "mae": float(error.mean()),
                "mape": float((100 * error / mine["actual"]).mean()),
            })
    if not records:
        raise SpecplanError(
            "backtest: no strategy could be back-tested ("
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            + "); each strategy needs three or more pretraining budgets (specialization "
            "budgets without pretraining): two to fit its budget term, the largest to predict")
    configs = pd.DataFrame(records)
    configs["abs_error"] = (configs["predicted"] - configs["actual"]).abs()
    configs["pct_error"] = 100 * configs["abs_error"] / configs["actual"]
    configs["covered"] = (configs["lo"] <= configs["actual"]) & (configs["actual"] <= configs["hi"])
    regimes = _rank_regimes(configs, regime_keys)
    return BacktestResult(
        configs=configs, regimes=regimes, per_strategy=pd.DataFrame(per_strategy),
        mae=float(configs["abs_error"].mean()), mape=float(configs["pct_error"].mean()),
        coverage=float(configs["covered"].mean()),
        winner_accuracy=float(regimes["winner_right"].mean()) if len(regimes) else float("nan"),
        skipped=skipped,
    )


# -- calibration --------------------------------------------------------------------------------

#: Strategies calibrated by default: the study's main comparison (notes §4.6).
CALIBRATION_STRATEGIES = ("slm", "llm", "slm-is", "slm-mix", "slm-pn")

_PRIOR_WIDTH = 1.0  # relative interval width assumed for a strategy whose law cannot be fitted
_NEW_LEVEL_GAIN = 0.5  # share of the width a new level removes on an axis with < 3 levels


@dataclass
class LadderRun:
    """One proxy run of a calibration ladder.

    Attributes:
        strategy, size: what ran (``size`` is the trained model: ``large`` for ``llm``).
        pretrain_flops, spec_flops: its budgets (specialization per domain).
        est_flops: what it was expected to cost when chosen (reused pretraining is free).
        spent_flops: what the ledger charged (0 pretraining when the artifact was reused).
        score: expected relative interval-width reduction per FLOP when it was chosen.
        status: ``ok``, or ``failed: <reason>``.
    """

    strategy: str
    size: str
    pretrain_flops: float
    spec_flops: float
    est_flops: float
    spent_flops: float = 0.0
    score: float = 0.0
    status: str = "ok"


@dataclass
class CalibrationResult:
    """The ladder that ran, what it cost, where its rows are, the forecast from them, and the
    strategies left out of it (with why)."""

    runs: list[LadderRun]
    planning_flops: float
    spent_flops: float
    results_path: str
    forecast: ForecastResult
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``specplan forecast --calibrate --json``)."""
        return asdict(self)


@dataclass
class _Rung:
    """A candidate proxy run and the workspace sizes it needs."""

    strategy: str
    size: str
    small: str
    large: str
    pretrain_flops: float
    spec_flops: float
    params: float

    @property
    def key(self) -> tuple:
        return self.strategy, self.size, self.pretrain_flops, self.spec_flops


def _levels(values: Iterable[float]) -> np.ndarray:
    """Distinct positive values, one per quarter decade (the laws' notion of a level)."""
    logs = np.sort(np.log10([v for v in values if v > 0]))
    if logs.size == 0:
        return logs
    return logs[np.concatenate([[True], np.diff(logs) > laws.LEVEL_DECADES])]


def _usefulness(rung: _Rung, own: pd.DataFrame, budget_axis: str, target_budget: float,
                target_params: float, fitted: bool) -> float:
    """Share of a strategy's interval width that one more run is expected to remove.

    The largest of: the share of the log-distance to the target it closes on the budget or
    size axis (extrapolation drives the width); a new level on an axis with fewer than three
    (the law's exponents become identifiable; all of the width while the law cannot be fitted
    at all, so a strategy that was started is finished before others are); or the averaging
    of one more run, ``1 - sqrt(n / (n + 1))``.
    """
    gains = [1.0 - math.sqrt(len(own) / (len(own) + 1.0))]
    for column, value, target in ((budget_axis, _rung_budget(rung, budget_axis), target_budget),
                                  ("params_inference", rung.params, target_params)):
        measured = own[column].to_numpy(dtype=float) if len(own) else np.array([])
        top = measured.max() if measured.size else 0.0
        before = math.log(target / top) if top > 0 else math.inf
        after = math.log(target / max(top, value))
        if before > 0:
            gains.append(1.0 if math.isinf(before) else (before - max(after, 0.0)) / before)
        levels = _levels(measured)
        if len(levels) < 3 and np.all(np.abs(levels - math.log10(value)) > laws.LEVEL_DECADES):
            gains.append(_NEW_LEVEL_GAIN if fitted else 1.0)
    return max(gains)


def _runs_to_fit(n_domains: int) -> int:
    """Runs at distinct budget levels a law needs, mirroring :mod:`experiments.laws`: one
    offset per domain, then the budget term's amplitude (2 levels) and exponent (3 or more),
    and more rows than free parameters. Other axes (size, domain data) are left out."""
    levels = 1
    while levels * n_domains <= n_domains + min(levels - 1, 2):
        levels += 1
    return levels


def _completion_cost(rung: _Rung, own: pd.DataFrame, axis: str, candidates: Sequence[_Rung],
                     costs: Mapping[tuple, float], n_domains: int) -> float:
    """Cost of this rung plus the cheapest further rungs at its model size that make the
    strategy's law fittable (one per missing budget level): starting a strategy that the
    planning budget cannot finish wastes its runs. Infinite when the ladder has too few levels
    left. (Until the law is fittable the ladder stays at one size, so sizes do not count.)"""
    taken = [*(_levels(own[axis]) if len(own) else []), math.log10(_rung_budget(rung, axis))]
    cheapest: dict[float, float] = {}  # the cheapest rung per free budget level
    for other in candidates:
        if (other.strategy != rung.strategy or other.params != rung.params
                or other.key not in costs or other.key == rung.key):
            continue
        level = math.log10(_rung_budget(other, axis))
        if all(abs(level - t) > laws.LEVEL_DECADES for t in taken):
            key = round(level, 3)
            cheapest[key] = min(cheapest.get(key, math.inf), costs[other.key])
    missing = _runs_to_fit(n_domains) - len(_levels(10.0 ** np.array(taken)))
    if missing > len(cheapest):
        return math.inf
    return costs[rung.key] + sum(sorted(cheapest.values())[:max(missing, 0)])


def _rung_budget(rung: _Rung, axis: str) -> float:
    return rung.pretrain_flops if axis == "pretrain_budget_flops" else rung.spec_flops


def _write_results(table: pd.DataFrame, path: Path) -> None:
    """Atomically, so a calibration killed mid-write keeps the runs it had."""
    from planner.io import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def calibrate(
    inputs,
    budgets,
    *,
    planning_flops: float,
    results_path: str | Path,
    cache_dir: str | Path,
    strategies: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    ladder_ratio: float = 2.0,
    rungs: int = 8,
    min_steps: int = 20,
    batch_size: int = 16,
    device: str = "auto",
    seed: int = 0,
    embedder: str = "hashed",
    max_extrapolation: float = 10.0,
    n_boot: int = 30,
    hours: HardwareProfile | None = None,
    log: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Run the cheapest informative ladder of proxy runs, then forecast at ``budgets``.

    The ladder (multi-fidelity: model sizes x budgets per strategy):

    * candidates: each strategy at each proxy size (``sizes``, default the ladder sizes within
      the inference budget; for ``llm`` the next size up, its "large" model) and at budgets
      geometrically below the target, ``target / ladder_ratio**j`` for ``j = 1..rungs`` (the
      pretraining budget; the specialization budget for strategies without pretraining, whose
      broad training happens there). Fine-tuning strategies get the target specialization
      budget at their largest proxy size and proportionally less at smaller ones: the same
      fine-tuning tokens, which is what the law sees. A candidate needs ``min_steps``
      optimizer steps, or it measures warm-up noise.
    * anchor: a strategy's first run is one within ``max_extrapolation`` of the target (the
      final forecast refuses without one); when the planning budget cannot pay for any, the
      calibration stops before spending anything.
    * choice: greedy by expected interval-width reduction per FLOP. A strategy's width is its
      current forecast interval at the target (relative, ``hi / lo - 1``; 1.0 while its law
      cannot be fitted, so identification runs come first). A candidate's expected reduction is
      that width times :func:`_usefulness` (closing the extrapolation gap, adding a level, or
      averaging); its cost is the estimated FLOPs (pretraining counted 0 when the artifact is
      cached; specialization over every domain at its budget, an upper bound since fine-tuning
      stops early). Widths are refitted after every run. While a strategy's law cannot be
      fitted, a rung is taken only if the budget left also pays for the cheapest rungs that
      would make it fittable (:func:`_completion_cost`): a strategy that cannot be finished is
      not started. What finishing each started, not yet fittable strategy still costs is
      reserved: no other rung may spend it, so two strategies are never both left half-done.
    * stop: when no candidate fits in what is left of ``planning_flops`` (the ledger's spend
      is charged, not the estimate). Strategies that got no anchor run are left out of the
      forecast.

    Every run's rows are appended to ``results_path`` (CSV) as they finish; an existing file is
    read first, so a calibration can be extended later.

    Args:
        inputs: ``planner.inputs.Inputs`` (the user's data or the demo corpora).
        budgets: target ``strategies.base.Budgets``; ``domain_tokens`` is required.
        planning_flops: what the ladder may spend in total.
        results_path: CSV the proxy runs are appended to.
        cache_dir: specplan's cache (pretraining artifacts are shared across rungs).
        strategies: which to calibrate (default :data:`CALIBRATION_STRATEGIES`).
        sizes: proxy deployed sizes from ``planner.models.SIZES``.
        ladder_ratio, rungs, min_steps: the budget ladder, see above.
        batch_size, device, seed, embedder: training settings of the proxy runs.
        max_extrapolation, n_boot, hours: passed to :func:`forecast` at the end.
        log: called with one line per chosen run (progress on stderr in the CLI).

    Raises:
        SpecplanError: on bad arguments, or when the final forecast refuses (the runs are
            kept in ``results_path``; the message says so).
    """
    from planner.models import SIZES, model_shape
    from planner.runner import plan_check, run_strategy
    from planner.train import TrainConfig
    from planner.workspace import Workspace
    from strategies import get_strategy
    from strategies.base import Budgets

    if planning_flops <= 0 or ladder_ratio <= 1 or rungs < 1:
        raise SpecplanError(
            f"calibrate: planning budget {planning_flops:.3g}, ladder ratio {ladder_ratio:g}, "
            f"rungs {rungs}: give a positive planning budget, a ratio > 1 and rungs >= 1")
    if budgets.domain_tokens is None:
        raise SpecplanError("calibrate: give --domain-tokens, the domain data size the proxy "
                            "runs and the forecast share")
    names = list(strategies or CALIBRATION_STRATEGIES)
    strategy_of = {name: get_strategy(name) for name in names}
    ladder = list(SIZES)
    vocab, seq_len = len(inputs.tokenizer), inputs.generic.train.seq_len

    def params_of(size: str) -> int:
        return model_shape(size, vocab_size=vocab, seq_len=seq_len).params_total

    def admitted(size: str) -> bool:
        shape = model_shape(size, vocab_size=vocab, seq_len=seq_len)
        return budgets.inference.admits(flops_per_token=shape.inference_flops_per_token(),
                                        params=shape.params_total)

    deployed = list(sizes) if sizes else [s for s in ladder[:-1] if admitted(s)] or ladder[:1]
    unknown = [s for s in deployed if s not in SIZES]
    if unknown:
        raise SpecplanError(f"calibrate: unknown size(s) {unknown}; choose from {ladder}")
    results_path = Path(results_path)
    table = read_results(results_path) if results_path.is_file() else pd.DataFrame()
    clusterings: dict = {}
    train = TrainConfig(max_steps=1, batch_size=batch_size, seed=seed, device=device)

    def workspace(rung: _Rung, pretrain: float, spec: float) -> Workspace:
        run_budgets = Budgets(pretrain_flops=pretrain, spec_flops=spec,
                              inference=budgets.inference, domain_tokens=budgets.domain_tokens)
        ws = Workspace(inputs.generic, inputs.tokenizer, run_budgets, Path(cache_dir),
                       small=rung.small, large=rung.large, train=train, embedder=embedder)
        ws._clusterings = clusterings  # one clustering per k for the whole ladder
        return ws

    candidates: list[_Rung] = []
    for name, strategy in strategy_of.items():
        generic = strategy.has_generic_phase
        if name == "llm":  # its model is the large one: the next ladder size up
            pairs = sorted({(s, ladder[min(ladder.index(s) + 1, len(ladder) - 1)])
                            for s in deployed})
        else:
            pairs = [(s, ladder[-1]) for s in deployed]
        trained = [large if name == "llm" else small for small, large in pairs]
        largest = max(params_of(size) for size in trained)
        for (small, large), size in zip(pairs, trained):
            params = float(params_of(size))
            for j in range(1, rungs + 1):
                if generic:  # fine-tuning at equal tokens: a smaller proxy needs fewer FLOPs
                    pretrain = budgets.pretrain_flops / ladder_ratio**j
                    spec = budgets.spec_flops * params / largest
                else:
                    pretrain, spec = 0.0, budgets.spec_flops / ladder_ratio**j
                rung = _Rung(name, size, small, large, pretrain, spec, params)
                try:
                    estimate, _ = plan_check(strategy, strategy.settings(),
                                             workspace(rung, pretrain, spec))
                except SpecplanError:
                    continue  # the rung cannot pay for this configuration
                one_step = estimate.min_generic_flops if generic else estimate.min_spec_flops
                if _rung_budget(rung, _axis(strategy)) >= min_steps * one_step:
                    candidates.append(rung)

    def estimated_cost(rung: _Rung) -> float:
        strategy = strategy_of[rung.strategy]
        ws = workspace(rung, rung.pretrain_flops, rung.spec_flops)
        estimate = strategy.estimate(strategy.settings(), ws)
        folder = (ws.cache_dir / "artifacts"
                  / f"{rung.strategy}-{ws.artifact_key(strategy, strategy.settings())}")
        generic = 0.0 if (folder / "meta.json").exists() else estimate.generic_flops
        return generic + len(inputs.domains) * estimate.spec_flops

    def near(name: str) -> float:
        """The smallest budget a forecast at the target accepts (``max_extrapolation``)."""
        return _target(strategy_of[name], budgets) / max_extrapolation * (1 - 1e-9)

    def anchored(name: str) -> bool:
        own = table[table["strategy"] == name] if len(table) else table
        return bool(len(own)) and bool((own[_axis(strategy_of[name])] >= near(name)).any())

    anchors = [r for r in candidates if _rung_budget(r, _axis(strategy_of[r.strategy]))
               >= near(r.strategy) and not anchored(r.strategy)]
    if anchors and min(estimated_cost(r) for r in anchors) > planning_flops:
        raise SpecplanError(
            f"calibrate: the planning budget {planning_flops:.3g} FLOPs cannot pay for one run "
            f"within --max-extrapolation {max_extrapolation:g} of the target (the cheapest "
            f"costs about {min(estimated_cost(r) for r in anchors):.3g}); raise "
            "--planning-budget or --max-extrapolation")

    runs: list[LadderRun] = []
    spent, done = 0.0, set()

    def own_rows(name: str, axis: str) -> pd.DataFrame:
        return (table[table["strategy"] == name] if len(table)
                else pd.DataFrame(columns=[axis, "params_inference"]))

    def at_its_size(rung: _Rung, own: pd.DataFrame, fitted: bool) -> bool:
        """Until its law is fittable a strategy stays at the size it started with: a second
        size would add a size term to fit."""
        return fitted or not len(own) or rung.params in set(own["params_inference"])

    while True:
        widths = {name: _current_width(table, budgets, name, n_boot) for name in names}
        costs = {r.key: estimated_cost(r) for r in candidates if r.key not in done}
        left = planning_flops - spent
        # What finishing each started strategy whose law cannot be fitted yet still costs: the
        # budget is reserved for it, so another strategy's runs cannot leave it half-done.
        reserved: dict[str, float] = {}
        for name in names:
            axis = _axis(strategy_of[name])
            own = own_rows(name, axis)
            if len(own) and not widths[name][2]:
                finish = min(
                    (_completion_cost(r, own, axis, candidates, costs, len(inputs.domains))
                     for r in candidates if r.strategy == name and r.key in costs
                     and at_its_size(r, own, fitted=False)),
                    default=math.inf)
                if math.isfinite(finish):  # one that can no longer be finished holds nothing
                    reserved[name] = finish
        chosen, chosen_score, chosen_cost = None, 0.0, 0.0
        for rung in candidates:
            strategy = strategy_of[rung.strategy]
            axis = _axis(strategy)
            # A strategy's first run is one a forecast at the target may use; cheaper rungs,
            # which pin the law's exponents, come after it.
            if rung.key in done or (not anchored(rung.strategy)
                                    and _rung_budget(rung, axis) < near(rung.strategy)):
                continue
            cost = costs[rung.key]
            if cost <= 0 or cost > left:
                continue
            own = own_rows(rung.strategy, axis)
            width, target_params, fitted = widths[rung.strategy]
            if not at_its_size(rung, own, fitted):
                continue
            need = (cost if fitted else _completion_cost(rung, own, axis, candidates, costs,
                                                         len(inputs.domains)))
            others = sum(v for k, v in reserved.items() if k != rung.strategy)
            if need + others > left:
                continue  # no fitted law at the end, for it or for a strategy already started
            gain = width * _usefulness(rung, own, axis, _target(strategy, budgets),
                                       target_params or rung.params, fitted)
            if gain / cost > chosen_score:
                chosen, chosen_score, chosen_cost = rung, gain / cost, cost
        if chosen is None:
            break
        done.add(chosen.key)
        record = LadderRun(chosen.strategy, chosen.size, chosen.pretrain_flops,
                           chosen.spec_flops, chosen_cost, score=chosen_score)
        if log:
            log(f"calibrate: {chosen.strategy} {chosen.size} pretrain {chosen.pretrain_flops:.3g}"
                f" spec {chosen.spec_flops:.3g} (about {chosen_cost:.3g} FLOPs; "
                f"{planning_flops - spent:.3g} left)")
        ws = workspace(chosen, chosen.pretrain_flops, chosen.spec_flops)
        try:
            report = run_strategy(chosen.strategy, strategy_of[chosen.strategy].settings(), ws,
                                  inputs.domains)
        except SpecplanError as err:
            record.status = f"failed: {err}"
            runs.append(record)
            continue
        rows = pd.DataFrame(report.rows(ws.budgets))
        record.spent_flops = float(
            (0.0 if report.artifact_reused else rows["generic_flops"].iloc[0])
            + rows["spec_flops"].sum())
        spent += record.spent_flops
        runs.append(record)
        table = pd.concat([table, rows], ignore_index=True) if len(table) else rows
        _write_results(table, results_path)
    usable = [name for name in names if anchored(name)]
    skipped = {name: f"no run within --max-extrapolation {max_extrapolation:g} of the target: "
                     "the planning budget could not pay for enough rungs to fit its law"
               for name in names if name not in usable}
    if not usable:
        raise SpecplanError(
            "calibrate: no strategy has a run within --max-extrapolation "
            f"{max_extrapolation:g} of the target ("
            + ("; ".join(r.status for r in runs) or "none could run") + ")")
    try:
        result = forecast(table, budgets, strategies=usable, max_extrapolation=max_extrapolation,
                          n_boot=n_boot, hours=hours, seed=seed)
    except SpecplanError as err:
        raise SpecplanError(f"{err} (the calibration runs are in {results_path})") from None
    return CalibrationResult(runs, planning_flops, spent, str(results_path), result, skipped)


def _axis(strategy) -> str:
    """The budget a strategy's ladder climbs: pretraining, or specialization for strategies
    without pretraining (their broad training happens there)."""
    return "pretrain_budget_flops" if strategy.has_generic_phase else "spec_budget_flops"


def _target(strategy, budgets) -> float:
    return budgets.pretrain_flops if strategy.has_generic_phase else budgets.spec_flops


def _current_width(table: pd.DataFrame, budgets, name: str,
                   n_boot: int) -> tuple[float, float | None, bool]:
    """(relative interval width at the target, forecast model size, whether the law could be
    fitted) of one strategy now.

    Extrapolation is not limited here: the ladder must know how uncertain a far forecast is
    to decide where to run next. A strategy whose law cannot be fitted yet gets the prior width.
    """
    try:
        item = forecast(table, budgets, strategies=[name], max_extrapolation=math.inf,
                        n_boot=min(n_boot, 20)).get(name)
    except SpecplanError:
        return _PRIOR_WIDTH, None, False
    if item.status != "forecast":
        return _PRIOR_WIDTH, item.params_inference, False
    if not math.isfinite(item.ppl_lo) or item.ppl_lo <= 0:
        return _PRIOR_WIDTH, item.params_inference, True
    return max(item.ppl_hi / item.ppl_lo - 1.0, 0.0), item.params_inference, True
