"""Scaling-law fits that forecast a strategy's specialized perplexity from its sizes.

Law form
--------
Per strategy, the domain validation loss after fine-tuning (``log ppl_after``, in nats) of a run
on domain ``d`` is modelled as::

    log ppl_d = E_d + A (N / N0)^-alpha + B (D_gen / G0)^-beta + C (D_dom / D0)^-gamma

* ``N`` (model size): ``params_inference``, the parameters of the model that is evaluated.
* ``D_gen`` (broad pretraining tokens): ``generic_tokens``; for ``slm-is``, whose pretraining on
  the importance-resampled generic stream *is* its specialization phase, ``spec_tokens``;
  absent for ``slm-nopt`` (no pretraining) and for any strategy whose generic tokens are all 0.
* ``D_dom`` (effective in-domain tokens): ``domain_tokens`` ``U`` and the domain tokens seen
  ``S = spec_tokens``, combined by the data-constrained rule of Muennighoff et al. 2023
  (*Scaling Data-Constrained Language Models*, Eq. 5): repeated epochs are worth less,
  ``D_dom = min(S, U) + U R* (1 - exp(-R / R*))`` with ``R = max(S / U - 1, 0)`` repetitions and
  ``R* = 15.4``. For ``slm-is`` the split of ``spec_tokens`` between resampled generic data and
  fine-tuning is not recorded, so ``D_dom = U``.
* ``E_d``: one irreducible loss per domain. ``N0 = 1e8`` parameters (the paper's SLM is 126M),
  ``G0 = 1e10`` generic tokens, ``D0 = 1e7`` domain tokens (between the paper's 1M and 64M):
  fixed reference sizes (:data:`REFERENCE_SIZES`), so ``A``, ``B``, ``C`` are the loss a term
  adds at that size, comparable across strategies and fits, and shareable between them (the raw
  Chinchilla amplitude is ``A * N0**alpha``).

Why this form
-------------
* It is Chinchilla's ``E + A/N^alpha + B/D^beta`` (Hoffmann et al. 2022) with the data term
  split in two: generic and in-domain data are different resources with different prices in this
  project (pretraining is shared, specialization is paid per domain; v2 Eq. 1), and the
  paper's tables vary them separately (pretraining cost x 1M/8M/64M domain tokens, Table 8).
  Additivity is an approximation: Table 8 shows the gain from pretraining shrinking as domain
  data grows. A transfer law with an interaction (Hernandez et al. 2021) needs more parameters
  than a few runs can identify, so the additive form is the default here.
* Tokens, not FLOPs: FLOPs = 6 N D mixes size and data, and ``N`` has its own term. Strategies
  with many pretraining parameters (``slm-mix``, ``slm-pn``) see fewer tokens per expert; a
  per-strategy fit absorbs that constant factor into ``B``.
* Per-domain offsets ``E_d`` with shared exponents and amplitudes: Pile domains differ widely in
  entropy, while the effect of more data is similar. The macro average the paper reports is then
  exact: its log-perplexity is ``mean_d E_d`` plus the shared terms (``predict(domain=None)``).
* Muennighoff's rule bounds what fine-tuning on a small set can give: more epochs help less and
  less, so forecasts for a larger specialization budget at a fixed domain size saturate.

Identifiability from few runs
-----------------------------
A size that takes one level only (levels: values more than a quarter decade apart) cannot be
told apart from ``E_d``: its term is folded into the offsets and the fit cannot forecast other
values of it (``predict`` raises). With two levels the amplitude is fitted and the exponent fixed
at a literature value (Chinchilla: ``alpha = 0.34``, ``beta = 0.28``; ``gamma = 0.28`` for want
of a fine-tuning estimate). Three or more levels fit both. Any parameter can be fixed by hand
(``fixed={"beta": 0.3}``), which is also how to share parameters with a richer strategy's fit
(``fixed={k: other.params[k] for k in ("A", "alpha")}``; a term whose amplitude and exponent are
both fixed is used even at one level, e.g. to forecast another model size). ``LawFit.fixed``
says which parameters were not fitted.

Fitting (Chinchilla approach 3, as replicated by Epoch AI, Besiroglu et al. 2024)
---------------------------------------------------------------------------------
Huber loss on ``log(predicted loss) - log(observed loss)``, so a few bad runs cannot drag the
fit; the predicted loss is a log-sum-exp of ``log E_d`` and the log-terms, which keeps every
term positive; L-BFGS-B with an analytic gradient from a seeded sample of a grid of
initialisations, keeping the best. ``LawFit.converged`` reports the optimiser's convergence.
Chinchilla's delta is 1e-3; here it is 1e-2, about the run-to-run noise of a small model's
log-loss (1% of the loss), so ordinary noise is fitted by least squares (efficient, and smooth
for L-BFGS-B: 40% faster on the tests' data) while a diverged run gets linear weight.

Uncertainty (:func:`uncertainty`, :func:`predict_interval`): prediction intervals, not only
confidence intervals of the law. Three sources add up: the bootstrap over runs (rows resampled
with replacement within each domain, so every offset stays identified) for the parameters; the
spread of single runs around the law (its residuals) for run-to-run noise; and the law's own
error when it extrapolates, measured by back-testing one budget level down inside the data and
scaled by how many decades a forecast goes beyond the largest run. Bootstrap intervals alone
were far too narrow in back-tests (``specplan forecast --backtest``): nominal 80% intervals
covered 9 of 12 held-out perplexities of the reference study's table and 2 of 33 of the
replication sweep; prediction intervals cover 12 of 12 and 19 of 33. The replication's misses
are one-sided (see experiments/README.md): its runs are early in training, where loss falls
faster with each doubling of data than any saturating law allows, so forecasts there are
pessimistic.
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import erfinv

from planner.core.errors import SpecplanError
from strategies import strategies_with

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: fits are correct without it, only slower on a busy machine
    threadpool_limits = None

__all__ = [
    "DEFAULT_EXPONENTS",
    "LEVEL_DECADES",
    "REFERENCE_SIZES",
    "SIZE_COLUMNS",
    "LawFit",
    "Uncertainty",
    "bootstrap",
    "fit_law",
    "predict_interval",
    "uncertainty",
]

#: Results-table columns that ``LawFit.predict`` accepts as sizes.
SIZE_COLUMNS = ("params_inference", "generic_tokens", "spec_tokens", "domain_tokens")

#: Exponent used when a size has only two levels (Chinchilla approach 3 for alpha and beta).
DEFAULT_EXPONENTS = {"alpha": 0.34, "beta": 0.28, "gamma": 0.28}

#: Sizes at which the amplitudes A, B, C are quoted (see the module docstring).
REFERENCE_SIZES = {"N": 1e8, "D_gen": 1e10, "D_dom": 1e7}

# (amplitude, exponent, size variable) for each power-law term.
_TERMS = (("A", "alpha", "N"), ("B", "beta", "D_gen"), ("C", "gamma", "D_dom"))

_REPETITION_HALF_LIFE = 15.4  # R* of Muennighoff et al. 2023 (Eq. 5, fitted R_D*)
LEVEL_DECADES = 0.25  # sizes closer than this (in log10) count as one level
_HUBER_DELTA = 1e-2
_USABLE_STATUSES = ("ok", "over-inference-budget")
_EXPONENT_BOUNDS = (1e-3, 3.0)
_E_NEAR_ZERO = 1e-3  # nats: an offset or amplitude this small is the optimiser's bound
_LOG_BOUNDS = (-30.0, 10.0)


def _feeds(strategy: str) -> dict[str, tuple[str, ...]]:
    """Which results-table columns feed each size variable for this strategy (its traits say
    where its broad pretraining is, if anywhere; a name outside the registry has a generic
    phase)."""
    feeds = {"N": ("params_inference",), "D_dom": ("spec_tokens", "domain_tokens")}
    if strategy in strategies_with(pretrains_in_specialization=True):
        feeds.update(D_gen=("spec_tokens",), D_dom=("domain_tokens",))
    elif strategy not in strategies_with(has_generic_phase=False):
        feeds["D_gen"] = ("generic_tokens",)
    return feeds


def _effective_domain_tokens(seen: np.ndarray, unique: np.ndarray) -> np.ndarray:
    """Muennighoff et al. 2023 Eq. 5: tokens from repeated epochs decay in value."""
    repeats = np.maximum(seen / unique - 1.0, 0.0)
    decay = 1.0 - np.exp(-repeats / _REPETITION_HALF_LIFE)
    return np.minimum(seen, unique) + unique * _REPETITION_HALF_LIFE * decay


def _variables(strategy: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The size variables computable from ``columns`` (results-table names to arrays)."""
    out = {}
    for var, cols in _feeds(strategy).items():
        if not all(c in columns for c in cols):
            continue
        values = [np.asarray(columns[c], dtype=float) for c in cols]
        if var == "D_dom" and len(values) == 2:
            out[var] = _effective_domain_tokens(*values)
        else:
            out[var] = values[0]
    return out


def _level_index(values: np.ndarray) -> np.ndarray:
    """The level of each value: clusters of log10 values separated by more than
    :data:`LEVEL_DECADES`, numbered from the smallest."""
    logs = np.log10(values)
    order = np.argsort(logs)
    index = np.empty(len(logs), dtype=int)
    index[order] = np.concatenate([[0], np.diff(logs[order]) > LEVEL_DECADES]).cumsum()
    return index


def _count_levels(values: np.ndarray) -> int:
    return int(_level_index(values).max()) + 1


def _is_log_param(name: str) -> bool:
    """Offsets and amplitudes are optimised as logs (log-sum-exp form); exponents as is."""
    return name.startswith("E[") or name in ("A", "B", "C")


@dataclass
class LawFit:
    """A fitted law for one strategy; see the module docstring for the form.

    Attributes:
        strategy: the strategy name (``slm``, ``slm-is``, ...).
        params: ``E[<domain>]`` per domain, and ``A``/``alpha``, ``B``/``beta``, ``C``/``gamma``
            for each term the data could identify (a missing term was folded into ``E``).
        loss: final mean Huber loss of the log-residuals, divided by delta.
        n_runs: number of runs fitted.
        converged: whether L-BFGS-B reported convergence for the kept initialisation.
        scales: reference size per variable (``N``, ``D_gen``, ``D_dom``) that the amplitudes
            are quoted at (:data:`REFERENCE_SIZES` when fitted; stored so a saved fit keeps
            predicting right if the defaults change).
        support: ``[min, max]`` of each size variable over the fitted runs; forecasts outside it
            are extrapolations.
        fixed: names of parameters held fixed rather than fitted.
    """

    strategy: str
    params: dict[str, float]
    loss: float
    n_runs: int
    converged: bool
    scales: dict[str, float] = field(default_factory=dict)
    support: dict[str, list[float]] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        """Domains with a fitted offset ``E[<domain>]``."""
        return [name[2:-1] for name in self.params if name.startswith("E[")]

    def predict(self, *, domain: str | None = None, **sizes: float | np.ndarray) -> np.ndarray:
        """Forecast perplexity after fine-tuning.

        Args:
            domain: a fitted domain, or None for the macro average over the fitted domains
                (the paper's average perplexity).
            **sizes: results-table columns (:data:`SIZE_COLUMNS`), scalars or arrays that
                broadcast; only those feeding a fitted term are required.

        Returns:
            Perplexities, shaped as the broadcast sizes.

        Raises:
            SpecplanError: on an unknown size name or domain, a missing size, or a size whose
                term was folded into the offsets given outside its single fitted level.
        """
        unknown = sorted(set(sizes) - set(SIZE_COLUMNS))
        if unknown:
            raise SpecplanError(
                f"predict: unknown size(s) {unknown}; use results-table columns {SIZE_COLUMNS}"
            )
        variables = _variables(self.strategy, sizes)
        feeds = _feeds(self.strategy)
        if domain is None:
            loss = np.mean([self.params[f"E[{d}]"] for d in self.domains])
        elif f"E[{domain}]" in self.params:
            loss = self.params[f"E[{domain}]"]
        else:
            raise SpecplanError(
                f"predict: domain {domain!r} was not fitted; use one of {self.domains} or None"
            )
        for amp, exponent, var in _TERMS:
            if amp in self.params:
                if var not in variables:
                    raise SpecplanError(
                        f"predict: the {self.strategy} law needs size(s) {list(feeds[var])}; "
                        "pass them as keyword arguments"
                    )
                ratio = variables[var] / self.scales[var]
                loss = loss + self.params[amp] * ratio ** -self.params[exponent]
            elif var in variables and var in self.support:
                self._check_folded(var, variables[var], feeds[var])
        shape = np.broadcast_shapes(*(np.shape(v) for v in sizes.values()))
        return np.exp(loss + np.zeros(shape))  # shaped as the sizes even when no term uses them

    def warnings(self) -> list[str]:
        """What makes this fit's extrapolations unreliable even when it fits its runs well.

        * an offset ``E_d`` at ~0: the runs do not show the loss levelling off (runs early in
          training, where loss falls faster with each doubling, or a term traded for ``E``);
          the law then extrapolates along its flattest term, which the runs do not pin down;
        * an amplitude at ~0: the fit found no effect of that size, so forecasts do not
          improve with it;
        * an exponent at its upper bound: the runs do not pin it down.
        """
        out = []
        feeds = _feeds(self.strategy)
        fitted = [(a, t, v) for a, t, v in _TERMS if t in self.params]
        zero = [d for d in self.domains if self.params[f"E[{d}]"] < _E_NEAR_ZERO]
        if zero and fitted:
            _, flat, var = min(fitted, key=lambda term: self.params[term[1]])
            out.append(f"{self.strategy}: the fitted irreducible loss is ~0 for {zero}: the runs "
                       f"do not show the loss levelling off, and forecasts beyond the measured "
                       f"{list(feeds[var])} ride on {flat} = {self.params[flat]:.3g}; treat "
                       "them as rough")
        for amp, _, var in fitted:
            if amp not in self.fixed and self.params[amp] < _E_NEAR_ZERO:
                out.append(f"{self.strategy}: the fit found no effect of {list(feeds[var])} "
                           f"({amp} ~ 0), so its forecasts do not improve with them")
        stuck = [t for _, t, _ in fitted
                 if t not in self.fixed and self.params[t] >= _EXPONENT_BOUNDS[1] * 0.999]
        if stuck:
            out.append(f"{self.strategy}: exponent(s) {stuck} at the upper bound "
                       f"{_EXPONENT_BOUNDS[1]}; the runs do not pin them down")
        return out

    def _check_folded(self, var: str, values: np.ndarray, columns: Sequence[str]) -> None:
        lo, hi = self.support[var]
        slack = 10 ** (LEVEL_DECADES / 2)
        if np.any((values < lo / slack) | (values > hi * slack)):
            raise SpecplanError(
                f"predict: the {self.strategy} law was fit at one level of {list(columns)} "
                f"({var} in [{lo:.3g}, {hi:.3g}]) and cannot forecast other values; "
                "add runs at other sizes or fix this term from another fit"
            )

    def to_dict(self) -> dict:
        """A JSON-ready dict, for storing fits next to the results table."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> LawFit:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


@dataclass(frozen=True)
class _Problem:
    """A fit ready for the optimiser.

    Parameters live in one optimiser-space vector laid out as ``names``: the domain offsets
    ``E[d]`` first, then ``(amplitude, exponent)`` per active term. Fixed entries hold their
    value in ``start``; the optimiser only moves the entries listed in ``free_index``.
    """

    strategy: str
    domains: tuple[str, ...]
    domain_index: np.ndarray  # (n,) index into domains
    log_sizes: np.ndarray  # (n, terms) log(size / scale) per active term
    target: np.ndarray  # (n,) log of the observed loss, log(log ppl)
    terms: tuple[tuple[str, str, str], ...]  # active (amplitude, exponent, var)
    names: tuple[str, ...]
    start: np.ndarray  # (params,) optimiser-space values; fixed entries are final
    free_index: np.ndarray  # positions in names that are fitted
    scales: dict[str, float]
    support: dict[str, list[float]]

    @property
    def free(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.free_index)

    def subset(self, rows: np.ndarray) -> _Problem:
        return replace(
            self,
            domain_index=self.domain_index[rows],
            log_sizes=self.log_sizes[rows],
            target=self.target[rows],
        )


def _runs(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """The strategy's usable runs: a result exists and perplexity is above 1 (loss > 0)."""
    sizes = sorted({c for cols in _feeds(strategy).values() for c in cols})
    required = ["strategy", "domain", "ppl_after", *sizes]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SpecplanError(
            f"fit_law: the results table lacks column(s) {missing}; pass the results table"
        )
    rows = df[df["strategy"] == strategy]
    if "status" in rows.columns:
        rows = rows[rows["status"].isin(_USABLE_STATUSES)]
    ppl = pd.to_numeric(rows["ppl_after"], errors="coerce")
    rows = rows[np.isfinite(ppl) & (ppl > 1)]
    if rows.empty:
        have = sorted(df["strategy"].dropna().unique().tolist())
        raise SpecplanError(
            f"fit_law: no usable runs of strategy {strategy!r} (strategies with rows: {have}); "
            "run it first or pick another strategy"
        )
    return rows


def _problem(df: pd.DataFrame, strategy: str, fixed: Mapping[str, float]) -> _Problem:
    rows = _runs(df, strategy)
    columns = {c: rows[c].to_numpy(dtype=float) for c in SIZE_COLUMNS if c in rows.columns}
    variables = _variables(strategy, columns)
    domains = tuple(sorted(rows["domain"].astype(str).unique()))
    names = [f"E[{d}]" for d in domains]
    terms, log_sizes, scales, support = [], {}, {}, {}
    for amp, exponent, var in _TERMS:
        values = variables.get(var)
        if values is None or np.all(values <= 0):
            continue  # the strategy has no such size (e.g. no generic phase)
        if np.any(~np.isfinite(values) | (values <= 0)):
            raise SpecplanError(
                f"fit_law: {strategy} runs mix zero and positive {list(_feeds(strategy)[var])}; "
                "drop the inconsistent runs or fix their sizes"
            )
        support[var] = [float(values.min()), float(values.max())]
        levels = _count_levels(values)
        if levels == 1 and not (amp in fixed and exponent in fixed):
            continue  # folded into the offsets: not identifiable from one level
        scales[var] = REFERENCE_SIZES[var]
        log_sizes[var] = np.log(values / scales[var])
        terms.append((amp, exponent, var))
        names += [amp, exponent]
        if levels == 2 and exponent not in fixed:
            fixed = {**fixed, exponent: DEFAULT_EXPONENTS[exponent]}
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise SpecplanError(
            f"fit_law: cannot fix {unknown} for {strategy}; its parameters are {names} "
            "(a size with one level is folded into E unless both its parameters are fixed)"
        )
    free = tuple(n for n in names if n not in fixed)
    if len(rows) <= len(free):
        raise SpecplanError(
            f"fit_law: {len(rows)} runs of {strategy} cannot fit {len(free)} free parameters "
            f"{list(free)}; add runs or fix some, e.g. fixed={{'gamma': 0.28}}"
        )
    start = np.array([_to_optimiser(n, fixed[n]) if n in fixed else np.nan for n in names])
    return _Problem(
        strategy=strategy,
        domains=domains,
        domain_index=np.searchsorted(domains, rows["domain"].astype(str).to_numpy()),
        log_sizes=np.array([log_sizes[var] for _, _, var in terms]).T.reshape(len(rows), -1),
        target=np.log(np.log(rows["ppl_after"].to_numpy(dtype=float))),
        terms=tuple(terms),
        names=tuple(names),
        start=start,
        free_index=np.array([i for i, n in enumerate(names) if n not in fixed], dtype=int),
        scales=scales,
        support=support,
    )


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run L-BFGS-B with one BLAS thread.

    Its BLAS calls are on vectors of a dozen entries; OpenBLAS threads spinning over them made a
    fit 100x slower on a shared 2-core machine (measured: 2.5 s vs 25 ms per start).
    """
    if threadpool_limits is None:
        yield
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            yield


def _to_optimiser(name: str, value: float) -> float:
    return float(np.log(value)) if _is_log_param(name) else float(value)


def _objective(theta: np.ndarray, problem: _Problem) -> tuple[float, np.ndarray]:
    """Mean Huber loss of log-loss residuals (over delta) and its gradient in ``theta``."""
    raw = problem.start.copy()
    raw[problem.free_index] = theta
    n_domains, n_terms = len(problem.domains), len(problem.terms)
    amplitudes = raw[n_domains::2]  # (terms,)
    exponents = raw[n_domains + 1::2]  # (terms,)
    z = np.empty((len(problem.target), 1 + n_terms))  # log of each additive piece of the loss
    z[:, 0] = raw[:n_domains][problem.domain_index]
    z[:, 1:] = amplitudes - exponents * problem.log_sizes
    top = z.max(axis=1, keepdims=True)
    pieces = np.exp(z - top)
    total = pieces.sum(axis=1)
    share = pieces / total[:, None]  # d log_pred / d z
    residual = top[:, 0] + np.log(total) - problem.target
    delta, n = _HUBER_DELTA, len(residual)
    magnitude = np.abs(residual)
    huber = np.where(magnitude <= delta, 0.5 * residual**2, delta * (magnitude - 0.5 * delta))
    slope = np.clip(residual, -delta, delta) / (n * delta)
    weighted = slope[:, None] * share  # (n, 1 + terms)
    grad = np.empty_like(raw)
    grad[:n_domains] = np.bincount(problem.domain_index, weighted[:, 0], n_domains)
    grad[n_domains::2] = weighted[:, 1:].sum(axis=0)
    grad[n_domains + 1::2] = -(weighted[:, 1:] * problem.log_sizes).sum(axis=0)
    return float(huber.sum() / (n * delta)), grad[problem.free_index]


def _grid(problem: _Problem, n_inits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded sample of a grid of starting points (full optimiser-space vectors).

    Offsets start at a fraction of each domain's smallest loss; each term starts at a fraction
    of the mean loss at the runs' typical size, with exponents across a typical range.
    """
    loss = np.exp(problem.target)
    lowest = np.array(
        [loss[problem.domain_index == i].min() for i in range(len(problem.domains))]
    )
    typical = problem.log_sizes.mean(axis=0)  # (terms,) mean log(size / reference)
    free = set(problem.free)
    axes: dict[str, tuple[float, ...]] = {"E": (0.3, 0.6, 0.85)}
    for amp, exponent, _ in problem.terms:
        if amp in free:
            axes[amp] = (0.03, 0.15, 0.6)
        if exponent in free:
            axes[exponent] = (0.1, 0.35, 0.8)
    grid = list(itertools.product(*axes.values()))
    starts = []
    for pick in rng.choice(len(grid), size=min(n_inits, len(grid)), replace=False):
        point = dict(zip(axes, grid[pick]))
        vector = problem.start.copy()
        for i, name in enumerate(problem.names):
            if name.startswith("E[") and name in free:
                vector[i] = np.log(point["E"] * lowest[i])
            elif name in ("alpha", "beta", "gamma") and name in free:
                vector[i] = point[name]
        for k, (amp, _, _) in enumerate(problem.terms):
            i = problem.names.index(amp)
            if amp in free:  # the term is point[amp] * mean loss at the typical size
                vector[i] = np.log(point[amp] * loss.mean()) + vector[i + 1] * typical[k]
        starts.append(vector)
    return starts


def _solve(problem: _Problem, starts: Sequence[np.ndarray]) -> LawFit:
    free = problem.free
    bounds = [_LOG_BOUNDS if _is_log_param(n) else _EXPONENT_BOUNDS for n in free]
    low, high = np.array(bounds).T
    best = None
    for start in starts:
        result = minimize(
            _objective,
            np.clip(start[problem.free_index], low, high),
            args=(problem,),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-8},
        )
        if best is None or result.fun < best.fun:
            best = result
    raw = problem.start.copy()
    raw[problem.free_index] = best.x
    return LawFit(
        strategy=problem.strategy,
        params={
            n: float(np.exp(v) if _is_log_param(n) else v) for n, v in zip(problem.names, raw)
        },
        loss=float(best.fun),
        n_runs=len(problem.target),
        converged=bool(best.success) and bool(np.all(np.isfinite(best.x))),
        scales=dict(problem.scales),
        support={k: list(v) for k, v in problem.support.items()},
        fixed=[n for n in problem.names if n not in free],
    )


def fit_law(
    df: pd.DataFrame,
    strategy: str,
    *,
    n_inits: int = 32,
    seed: int = 0,
    fixed: Mapping[str, float] | None = None,
) -> LawFit:
    """Fit the law of one strategy to its runs in the results table.

    Uses the strategy's runs with a result (status ``ok`` or ``over-inference-budget``) and
    ``ppl_after > 1``. Check ``converged`` before trusting a forecast.

    Args:
        df: the results table.
        strategy: which strategy's runs to fit.
        n_inits: starting points sampled from the initialisation grid.
        seed: seed of that sample; the same seed gives the same fit.
        fixed: parameters to hold at given values instead of fitting (natural units, e.g.
            ``{"beta": 0.28, "B": 0.5}``).

    Returns:
        The best fit over the starting points.

    Raises:
        SpecplanError: when the table lacks columns, the strategy has no usable runs, fewer runs
            than free parameters, or ``fixed`` names a parameter the law does not have.
    """
    problem = _problem(df, strategy, dict(fixed or {}))
    with _one_blas_thread():
        return _solve(problem, _grid(problem, n_inits, np.random.default_rng(seed)))


def _start_from(fit: LawFit, problem: _Problem) -> np.ndarray:
    return np.array([_to_optimiser(n, fit.params[n]) for n in problem.names])


def bootstrap(
    df: pd.DataFrame,
    strategy: str,
    *,
    n_boot: int = 100,
    seed: int = 0,
    n_inits: int = 2,
    fixed: Mapping[str, float] | None = None,
    base: LawFit | None = None,
) -> list[LawFit]:
    """Refit the law on runs resampled with replacement, for forecast uncertainty.

    Runs are resampled within each domain, so every domain offset stays identified, and every
    refit keeps the full-data fit's structure (same terms, same fixed parameters) so the fits
    are comparable. Each refit starts from the full-data fit plus ``n_inits`` grid points.

    Args:
        df: the results table.
        strategy: which strategy to fit.
        n_boot: number of resamples.
        seed: seed for the resamples and starting points.
        n_inits: extra grid starting points per refit (the full-data optimum is always one).
        fixed: as in :func:`fit_law`.
        base: the full-data fit, when the caller has it (otherwise it is fitted here).

    Returns:
        The converged refits (non-converged ones are dropped; compare ``len`` with ``n_boot``).

    Raises:
        SpecplanError: as :func:`fit_law`, or when no refit converges.
    """
    problem = _problem(df, strategy, dict(fixed or {}))
    if base is not None and (base.strategy, set(base.params)) != (strategy, set(problem.names)):
        raise SpecplanError(
            f"bootstrap: base is a fit of {base.strategy} with {sorted(base.params)}; pass the "
            f"fit_law result of {strategy} on the same table and fixed parameters"
        )
    rng = np.random.default_rng(seed)
    by_domain = [np.flatnonzero(problem.domain_index == i) for i in range(len(problem.domains))]
    fits = []
    with _one_blas_thread():
        if base is None:
            base = _solve(problem, _grid(problem, 32, rng))
        for _ in range(n_boot):
            rows = np.concatenate([rng.choice(idx, size=len(idx)) for idx in by_domain])
            sample = problem.subset(rows)
            fit = _solve(sample, [_start_from(base, sample), *_grid(sample, n_inits, rng)])
            if fit.converged:
                fits.append(fit)
    if not fits:
        raise SpecplanError(
            f"bootstrap: no refit of {strategy} converged; add runs or fix exponents (fixed=...)"
        )
    return fits


def _log_loss_errors(fit: LawFit, runs: pd.DataFrame) -> np.ndarray:
    """``log(predicted loss) - log(observed loss)`` of each run (NaN for an unfitted domain)."""
    out = np.full(len(runs), np.nan)
    domains = runs["domain"].astype(str).to_numpy()
    for domain in fit.domains:
        mine = domains == domain
        if mine.any():
            sizes = {c: runs[c].to_numpy(dtype=float)[mine] for c in SIZE_COLUMNS
                     if c in runs.columns}
            out[mine] = np.log(np.log(fit.predict(domain=domain, **sizes)))
    return out - np.log(np.log(runs["ppl_after"].to_numpy(dtype=float)))


@dataclass
class Uncertainty:
    """What a forecast interval is made of, for one strategy.

    The spread of a forecast has three sources, and the bootstrap alone measures only the first:

    * ``fits``: bootstrap refits, the uncertainty of the law's parameters given the runs;
    * ``noise``: the spread of one run around the law (the full fit's log-loss residuals, scaled
      by ``sqrt(n / (n - free parameters))``), e.g. seed-to-seed variation. It is not divided
      by the square root of the number of domains in a macro forecast: a config's domains share
      their pretraining run, so their errors are correlated;
    * ``drift``: the law's own error when it extrapolates, per decade beyond the largest
      measured value of ``axis``, measured by back-testing one level down inside the data: the
      law is refitted without the runs at the largest level (levels as the fit counts them)
      and predicts them. With three levels that refit has two, so its exponent is the
      literature value: the measured drift is then that of a cruder law, a conservative bound.
      ``None`` when it cannot be measured (``drift_note`` says why).

    A forecast's log-loss is then each refit's prediction plus a normal error of variance
    ``noise**2 + (drift * decades)**2``, and the interval is the quantiles of that mixture.
    Only the budget ``axis`` counts as extrapolation: a forecast at a model size beyond the
    measured ones (within the forecast's limit) gets no drift for it.

    Attributes:
        strategy: the strategy.
        fits: bootstrap refits.
        noise: standard deviation of a run's log-loss around the law.
        drift: standard deviation of the log-loss error per decade of extrapolation, or None.
        axis: the size a larger budget grows: ``D_gen`` (pretraining tokens), or ``D_dom`` for
            a strategy without pretraining.
        top: largest measured value of ``axis``.
        drift_note: why ``drift`` is None (empty otherwise).
    """

    strategy: str
    fits: list[LawFit]
    noise: float
    drift: float | None
    axis: str
    top: float
    drift_note: str = ""

    def decades(self, sizes: Mapping[str, float | np.ndarray]) -> np.ndarray:
        """How far beyond the largest measured ``axis`` value the sizes are (0 inside)."""
        variables = _variables(self.strategy, {k: v for k, v in sizes.items() if k != "domain"})
        if self.axis not in variables:
            return np.zeros(())
        return np.maximum(np.log10(variables[self.axis] / self.top), 0.0)

    def interval(self, forecasts: np.ndarray, decades: float | np.ndarray,
                 q: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(median, lo, hi)`` perplexities from the refits' forecasts (first axis: refit)
        at ``decades`` of extrapolation (broadcast against the forecasts' other axes)."""
        if not 0 <= q[0] <= q[1] <= 1:
            raise SpecplanError(f"interval: q={q}; give increasing quantiles in [0, 1]")
        log_loss = np.log(np.log(np.asarray(forecasts, dtype=float)))
        sigma = np.sqrt(self.noise**2 + ((self.drift or 0.0) * np.asarray(decades)) ** 2)
        rest = log_loss.shape[1:]
        shape = np.broadcast_shapes(rest, sigma.shape)
        log_loss = np.broadcast_to(
            log_loss.reshape((len(log_loss),) + (1,) * (len(shape) - len(rest)) + rest),
            (len(log_loss), *shape))
        # A fixed stratified sample of the standard normal: the same inputs give the same
        # interval, with no seed to pass around.
        z = _NORMAL_GRID.reshape((-1,) + (1,) * log_loss.ndim)
        draws = np.exp(np.exp(log_loss[None] + z * np.broadcast_to(sigma, shape)))
        lo, median, hi = np.quantile(draws.reshape((-1, *shape)), (q[0], 0.5, q[1]), axis=0)
        return median, lo, hi


_NORMAL_GRID = np.sqrt(2.0) * erfinv(2.0 * (np.arange(64) + 0.5) / 64 - 1.0)


def uncertainty(
    df: pd.DataFrame,
    strategy: str,
    fit: LawFit,
    *,
    n_boot: int = 100,
    seed: int = 0,
    n_inits: int = 1,
    fixed: Mapping[str, float] | None = None,
) -> Uncertainty:
    """Bootstrap refits, run noise and extrapolation drift of a strategy's law (see
    :class:`Uncertainty`).

    Args:
        df: the results table ``fit`` was fitted on.
        strategy: the strategy.
        fit: its full-data fit (:func:`fit_law`).
        n_boot, seed, n_inits, fixed: as in :func:`bootstrap`.

    Raises:
        SpecplanError: as :func:`bootstrap`.
    """
    fits = bootstrap(df, strategy, n_boot=n_boot, seed=seed, n_inits=n_inits, fixed=fixed,
                     base=fit)
    runs = _runs(df, strategy)
    errors = _log_loss_errors(fit, runs)
    free = len(fit.params) - len(fit.fixed)
    noise = float(np.sqrt(np.mean(errors**2) * len(errors) / (len(errors) - free)))
    variables = _variables(strategy, {c: runs[c].to_numpy(dtype=float)
                                      for c in SIZE_COLUMNS if c in runs.columns})
    axis = "D_gen" if np.all(variables.get("D_gen", 0.0) > 0) else "D_dom"
    values = variables[axis]
    drift, why = _drift(runs, strategy, values, noise, seed=seed, fixed=fixed)
    return Uncertainty(strategy=strategy, fits=fits, noise=noise, drift=drift, axis=axis,
                       top=float(values.max()), drift_note=why)


def _drift(runs: pd.DataFrame, strategy: str, values: np.ndarray, noise: float, *, seed: int,
           fixed: Mapping[str, float] | None) -> tuple[float | None, str]:
    """(drift per decade, or None and why): see :class:`Uncertainty`."""
    if _count_levels(values) < 3:
        return None, "fewer than three levels of the budget's size in the runs"
    level = _level_index(values)
    held = level == level.max()
    try:
        lower = fit_law(runs[~held], strategy, n_inits=8, seed=seed, fixed=fixed)
    except SpecplanError as err:
        return None, f"the refit without the largest level failed: {err}"
    if not lower.converged:
        return None, "the refit without the largest level did not converge"
    try:
        missed = _log_loss_errors(lower, runs[held])
    except SpecplanError as err:  # e.g. a size at one level below, another at the top
        return None, f"the refit without the largest level cannot predict it: {err}"
    ok = np.isfinite(missed)
    if not ok.any():
        return None, "no run at the largest level is in a domain of the lower levels"
    distance = np.log10(values[held] / values[~held].max())[ok]
    excess = max(float(np.mean(missed[ok] ** 2)) - noise**2, 0.0)
    return float(np.sqrt(excess / np.mean(distance**2))), ""


def predict_interval(
    spread: Uncertainty,
    sizes: Mapping[str, float | np.ndarray],
    q: tuple[float, float] = (0.1, 0.9),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and prediction interval of a forecast (see :class:`Uncertainty`).

    Args:
        spread: from :func:`uncertainty`.
        sizes: keyword arguments of :meth:`LawFit.predict` (sizes, and optionally ``domain``).
        q: lower and upper quantiles.

    Returns:
        ``(median, lo, hi)`` perplexities, shaped as the broadcast sizes.

    Raises:
        SpecplanError: when ``q`` is not an increasing pair in [0, 1], or as
            :meth:`LawFit.predict`.
    """
    forecasts = np.stack([np.asarray(fit.predict(**sizes), dtype=float) for fit in spread.fits])
    return spread.interval(forecasts, spread.decades(sizes), q)
