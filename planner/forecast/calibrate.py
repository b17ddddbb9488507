"""Calibration: cheap proxy runs chosen to shrink the forecast's intervals, within a budget."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from planner.core.args import RunArgs
from planner.core.budgets import Budgets
from planner.core.cost import HardwareProfile
from planner.core.errors import Interrupted, SpecplanError
from planner.engine.models import SIZES, model_shape
from planner.forecast import laws
from planner.forecast.forecast import ForecastResult, forecast
from planner.run.config import make_workspace
from planner.run.results import read_results, write_table
from planner.run.runner import plan_check, run_strategy
from strategies import get_strategy
from strategies.workspace import Workspace

#: Strategies calibrated by default: the study's main comparison (arXiv 2402.01093 v2 Fig. 1).
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
    """Runs at distinct budget levels a law needs, mirroring :mod:`planner.forecast.laws`: one
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
    run: RunArgs = RunArgs(),
    max_extrapolation: float = 10.0,
    n_boot: int = 30,
    hours: HardwareProfile | None = None,
    log: Callable[[str], None] | None = None,
    tasks: dict | None = None,
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

    Every run's rows are appended to ``results_path`` (CSV) as they finish. An existing file is
    read first: its runs are not repeated and what they cost (:func:`ladder_cost`) counts
    against ``planning_flops``, so an interrupted calibration resumes where it stopped and a
    larger planning budget extends it.

    Args:
        inputs: ``planner.data.inputs.Inputs`` (the user's data or the demo corpora).
        budgets: target ``strategies.base.Budgets``; ``domain_tokens`` is required.
        planning_flops: what the ladder may spend in total.
        results_path: CSV the proxy runs are appended to.
        cache_dir: specplan's cache (pretraining artifacts are shared across rungs).
        strategies: which to calibrate (default :data:`CALIBRATION_STRATEGIES`).
        sizes: proxy deployed sizes from ``planner.engine.models.SIZES``.
        ladder_ratio, rungs, min_steps: the budget ladder, see above.
        run: training settings of the proxy runs (``large`` is set per rung).
        max_extrapolation, n_boot, hours: passed to :func:`forecast` at the end.
        log: called with one line per chosen run (progress on stderr in the CLI).
        tasks: task name -> (domain, task), scored by every proxy run (``task:NAME`` columns),
            so that a plan can map perplexity to them
            (:func:`planner.forecast.task_curve.fit_task_curve`).

    Raises:
        SpecplanError: on bad arguments, or when the final forecast refuses (the runs are
            kept in ``results_path``; the message says so).
    """
    if planning_flops <= 0 or ladder_ratio <= 1 or rungs < 1:
        raise SpecplanError(
            f"calibrate: planning budget {planning_flops:.3g}, ladder ratio {ladder_ratio:g}, "
            f"rungs {rungs}: give a positive planning budget, a ratio > 1 and rungs >= 1")
    if budgets.domain_tokens is None:
        raise SpecplanError("calibrate: give --domain-tokens, the domain data size the proxy "
                            "runs and the forecast share")
    names = list(strategies or CALIBRATION_STRATEGIES)
    results_path = Path(results_path)
    ladder = _ladder(inputs, budgets, names, run, cache_dir, max_extrapolation, n_boot,
                     read_results(results_path) if results_path.is_file() else pd.DataFrame(),
                     sizes, ladder_ratio, rungs, min_steps)
    ladder.tasks = tasks or {}
    if not ladder.candidates:
        raise SpecplanError(
            f"calibrate: no proxy run of {', '.join(names)} fits below the target budgets (each "
            f"needs {min_steps} optimizer steps at a proxy size and a budget at most half the "
            "target's); raise the budgets, or name smaller proxy sizes")
    ladder.spent = ladder_cost(ladder.table)
    ladder.done = {r.key for r in ladder.candidates if ladder.measured(r)}
    anchors = [r for r in ladder.candidates if ladder.budget_of(r) >= ladder.near(r.strategy)
               and not ladder.anchored(r.strategy)]
    if (anchors and not len(ladder.table)
            and min(ladder.estimated_cost(r) for r in anchors) > planning_flops):
        raise SpecplanError(
            f"calibrate: the planning budget {planning_flops:.3g} FLOPs cannot pay for one run "
            f"within --max-extrapolation {max_extrapolation:g} of the target (the cheapest "
            f"costs about {min(ladder.estimated_cost(r) for r in anchors):.3g}); raise "
            "--planning-budget or --max-extrapolation")
    try:
        while (choice := ladder.choose(planning_flops)) is not None:
            rung, score, cost = choice
            if log:
                log(f"calibrate: {rung.strategy} {rung.size} pretrain {rung.pretrain_flops:.3g}"
                    f" spec {rung.spec_flops:.3g} (about {cost:.3g} FLOPs; "
                    f"{planning_flops - ladder.spent:.3g} left)")
            ladder.run(rung, score, cost)
            if ladder.runs[-1].status == "ok":
                write_table(results_path, ladder.table)
    except KeyboardInterrupt:  # the rows so far are written; a re-run reads them first
        done = sum(r.status == "ok" for r in ladder.runs)
        raise Interrupted(f"{done} calibration run(s) of this session are saved in "
                          f"{results_path}; re-run the same command to resume") from None
    usable = [name for name in names if ladder.anchored(name)]
    skipped = {name: f"no run within --max-extrapolation {max_extrapolation:g} of the target: "
                     "the planning budget could not pay for enough rungs to fit its law"
               for name in names if name not in usable}
    if not usable:
        raise SpecplanError(
            "calibrate: no strategy has a run within --max-extrapolation "
            f"{max_extrapolation:g} of the target ("
            + ("; ".join(r.status for r in ladder.runs) or "none could run") + ")")
    try:
        result = forecast(ladder.table, budgets, strategies=usable,
                          max_extrapolation=max_extrapolation, n_boot=n_boot, hours=hours,
                          seed=run.seed)
    except SpecplanError as err:
        raise SpecplanError(f"{err} (the calibration runs are in {results_path})") from None
    return CalibrationResult(ladder.runs, planning_flops, ladder.spent, str(results_path),
                             result, skipped)


def _ladder(inputs, budgets, names, run, cache_dir, max_extrapolation, n_boot, table, sizes,
            ladder_ratio, rungs, min_steps) -> "Ladder":
    ladder = Ladder(inputs, budgets, {name: get_strategy(name) for name in names}, run,
                    Path(cache_dir), max_extrapolation, n_boot, table)
    ladder.candidates = candidate_rungs(ladder, _deployed_sizes(ladder, sizes), ladder_ratio,
                                        rungs, min_steps)
    return ladder


def ladder_minimums(inputs, budgets, strategies: Sequence[str], *, cache_dir, run: RunArgs,
                    max_extrapolation: float = 10.0, sizes: Sequence[str] | None = None,
                    ladder_ratio: float = 2.0, rungs: int = 8, min_steps: int = 20
                    ) -> dict[str, float]:
    """Before any run: what each strategy's ladder costs at least, from its cheapest anchor run
    to a fittable law (estimated FLOPs; infinite when the budgets leave too few levels below
    them). The early plan compares these with its planning budget."""
    ladder = _ladder(inputs, budgets, list(strategies), run, cache_dir, max_extrapolation, 1,
                     pd.DataFrame(), sizes, ladder_ratio, rungs, min_steps)
    costs = {r.key: ladder.estimated_cost(r) for r in ladder.candidates}
    out = {}
    for name in strategies:
        own = ladder.own_rows(name)
        out[name] = min((_completion_cost(r, own, ladder.axis(name), ladder.candidates, costs,
                                          ladder.n_domains)
                         for r in ladder.candidates if r.strategy == name
                         and ladder.budget_of(r) >= ladder.near(name)), default=math.inf)
    return out


@dataclass
class Ladder:
    """The state of one calibration: the target, the candidate rungs, the rows measured so far
    (``table``, the results-table layout) and what the runs spent."""

    inputs: object
    budgets: Budgets
    strategy_of: dict
    run_args: RunArgs
    cache_dir: Path
    max_extrapolation: float
    n_boot: int
    table: pd.DataFrame
    candidates: list[_Rung] = field(default_factory=list)
    runs: list[LadderRun] = field(default_factory=list)
    spent: float = 0.0
    done: set = field(default_factory=set)
    clusterings: dict = field(default_factory=dict)  # one clustering per k for the ladder
    tasks: dict = field(default_factory=dict)  # scored by every run

    @property
    def n_domains(self) -> int:
        return len(self.inputs.domains)

    def axis(self, name: str) -> str:
        return _axis(self.strategy_of[name])

    def budget_of(self, rung: _Rung) -> float:
        return _rung_budget(rung, self.axis(rung.strategy))

    def workspace(self, rung: _Rung) -> Workspace:
        budgets = Budgets(pretrain_flops=rung.pretrain_flops, spec_flops=rung.spec_flops,
                          inference=self.budgets.inference,
                          domain_tokens=self.budgets.domain_tokens,
                          domains_count=self.budgets.domains_count)
        run = dataclasses.replace(self.run_args, large=rung.large)
        return make_workspace(self.inputs, budgets, run, self.cache_dir, small=rung.small,
                              clusterings=self.clusterings)

    def estimated_cost(self, rung: _Rung) -> float:
        """Pretraining (0 when a run of this ladder already paid for its artifact) plus
        specialization over every domain. An artifact another command left in the cache saves
        time, not cost: the ladder is charged for it once."""
        strategy = self.strategy_of[rung.strategy]
        estimate = strategy.estimate(strategy.settings(), self.workspace(rung))
        generic = 0.0 if self.pretraining_paid(rung) else estimate.generic_flops
        return generic + self.n_domains * estimate.spec_flops

    def pretraining_paid(self, rung: _Rung) -> bool:
        """Whether a run already in the table pretrained this rung's artifact."""
        return rung.pretrain_flops > 0 and self._has_run(rung, with_spec=False)

    def measured(self, rung: _Rung) -> bool:
        """Whether the table already has this rung's run (a resumed ladder does not repeat it)."""
        return self._has_run(rung, with_spec=True)

    def _has_run(self, rung: _Rung, *, with_spec: bool) -> bool:
        """A row of the rung's strategy at its pretraining budget and size (and, ``with_spec``,
        its specialization budget)."""
        if not len(self.table):
            return False
        own = self.table[self.table["strategy"] == rung.strategy]
        wanted = [("pretrain_budget_flops", rung.pretrain_flops),
                  ("params_inference", rung.params)]
        if with_spec:
            wanted.append(("spec_budget_flops", rung.spec_flops))
        match = np.ones(len(own), dtype=bool)
        for column, value in wanted:
            match &= np.isclose(own[column], value, rtol=1e-9)
        return bool(match.any())

    def near(self, name: str) -> float:
        """The smallest budget a forecast at the target accepts (``max_extrapolation``)."""
        return (_target(self.strategy_of[name], self.budgets) / self.max_extrapolation
                * (1 - 1e-9))

    def own_rows(self, name: str) -> pd.DataFrame:
        if len(self.table):
            return self.table[self.table["strategy"] == name]
        return pd.DataFrame(columns=[self.axis(name), "params_inference"])

    def anchored(self, name: str) -> bool:
        own = self.own_rows(name)
        return bool(len(own)) and bool((own[self.axis(name)] >= self.near(name)).any())

    def reserved(self, widths: dict, costs: dict) -> dict[str, float]:
        """What finishing each started strategy whose law cannot be fitted yet still costs:
        the budget is reserved for it, so another strategy's runs cannot leave it half-done.
        One that can no longer be finished holds nothing."""
        out = {}
        for name in self.strategy_of:
            own = self.own_rows(name)
            if len(own) and not widths[name][2]:
                finish = min(
                    (_completion_cost(r, own, self.axis(name), self.candidates, costs,
                                      self.n_domains)
                     for r in self.candidates if r.strategy == name and r.key in costs
                     and _at_its_size(r, own, fitted=False)),
                    default=math.inf)
                if math.isfinite(finish):
                    out[name] = finish
        return out

    def choose(self, planning_flops: float) -> tuple[_Rung, float, float] | None:
        """The next rung (with its score and estimated cost): the best expected width
        reduction per FLOP that the budget left pays for, reservations kept; None to stop."""
        widths = {name: _current_width(self.table, self.budgets, name, self.n_boot)
                  for name in self.strategy_of}
        costs = {r.key: self.estimated_cost(r) for r in self.candidates if r.key not in self.done}
        left = planning_flops - self.spent
        reserved = self.reserved(widths, costs)
        chosen, chosen_score, chosen_cost = None, 0.0, 0.0
        for rung in self.candidates:
            axis = self.axis(rung.strategy)
            # A strategy's first run is one a forecast at the target may use; cheaper rungs,
            # which pin the law's exponents, come after it.
            if rung.key in self.done or (not self.anchored(rung.strategy)
                                         and self.budget_of(rung) < self.near(rung.strategy)):
                continue
            cost = costs[rung.key]
            if cost <= 0 or cost > left:
                continue
            own = self.own_rows(rung.strategy)
            width, target_params, fitted = widths[rung.strategy]
            if not _at_its_size(rung, own, fitted):
                continue
            need = (cost if fitted else _completion_cost(rung, own, axis, self.candidates, costs,
                                                         self.n_domains))
            others = sum(v for k, v in reserved.items() if k != rung.strategy)
            if need + others > left:
                continue  # no fitted law at the end, for it or for a strategy already started
            gain = width * _usefulness(rung, own, axis,
                                       _target(self.strategy_of[rung.strategy], self.budgets),
                                       target_params or rung.params, fitted)
            if gain / cost > chosen_score:
                chosen, chosen_score, chosen_cost = rung, gain / cost, cost
        return None if chosen is None else (chosen, chosen_score, chosen_cost)

    def run(self, rung: _Rung, score: float, cost: float) -> None:
        """Train one rung; its rows join ``table`` and the ledger's spend is charged."""
        self.done.add(rung.key)
        record = LadderRun(rung.strategy, rung.size, rung.pretrain_flops, rung.spec_flops,
                           cost, score=score)
        self.runs.append(record)
        ws = self.workspace(rung)
        paid = self.pretraining_paid(rung)
        try:
            report = run_strategy(rung.strategy, self.strategy_of[rung.strategy].settings(), ws,
                                  self.inputs.domains, tasks=self.tasks)
        except SpecplanError as err:
            record.status = f"failed: {err}"
            return
        rows = pd.DataFrame(report.rows(ws.budgets))
        record.spent_flops = float((0.0 if paid else rows["generic_flops"].iloc[0])
                                   + rows["spec_flops"].sum())
        self.spent += record.spent_flops
        self.table = pd.concat([self.table, rows], ignore_index=True) if len(self.table) else rows


def ladder_cost(table: pd.DataFrame) -> float:
    """What the runs of a calibration table cost: every specialization, and each pretraining
    artifact once (the ledger's charge, cached or not: a cache saves time, never cost)."""
    if not len(table):
        return 0.0
    firsts = table.drop_duplicates(["strategy", "pretrain_budget_flops", "params_inference"])
    return float(firsts["generic_flops"].fillna(0).sum() + table["spec_flops"].fillna(0).sum())


def _deployed_sizes(ladder: Ladder, sizes: Sequence[str] | None) -> list[str]:
    """The proxy sizes: those given, or the ladder sizes within the inference budget."""
    vocab, seq_len = len(ladder.inputs.tokenizer), ladder.inputs.generic.train.seq_len

    def admitted(size: str) -> bool:
        shape = model_shape(size, vocab_size=vocab, seq_len=seq_len)
        return ladder.budgets.inference.admits(flops_per_token=shape.inference_flops_per_token(),
                                               params=shape.params_total)

    ladder_sizes = list(SIZES)
    deployed = (list(sizes) if sizes else [s for s in ladder_sizes[:-1] if admitted(s)]
                or ladder_sizes[:1])
    unknown = [s for s in deployed if s not in SIZES]
    if unknown:
        raise SpecplanError(f"calibrate: unknown size(s) {unknown}; choose from {ladder_sizes}")
    return deployed


def candidate_rungs(ladder: Ladder, deployed: Sequence[str], ladder_ratio: float, rungs: int,
                    min_steps: int) -> list[_Rung]:
    """Every strategy at every proxy size and at budgets ``target / ladder_ratio**j`` that can
    pay for ``min_steps`` optimizer steps (see :func:`calibrate`)."""
    sizes = list(SIZES)
    vocab, seq_len = len(ladder.inputs.tokenizer), ladder.inputs.generic.train.seq_len

    def params_of(size: str) -> int:
        return model_shape(size, vocab_size=vocab, seq_len=seq_len).params_total

    budgets, out = ladder.budgets, []
    for name, strategy in ladder.strategy_of.items():
        generic = strategy.has_generic_phase
        if strategy.deploys_large:  # its model is the large one: the next ladder size up
            pairs = sorted({(s, sizes[min(sizes.index(s) + 1, len(sizes) - 1)])
                            for s in deployed})
        else:
            pairs = [(s, sizes[-1]) for s in deployed]
        trained = [large if strategy.deploys_large else small for small, large in pairs]
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
                                             ladder.workspace(rung))
                except SpecplanError:
                    continue  # the rung cannot pay for this configuration
                one_step = estimate.min_generic_flops if generic else estimate.min_spec_flops
                if _rung_budget(rung, _axis(strategy)) >= min_steps * one_step:
                    out.append(rung)
    return out


def _at_its_size(rung: _Rung, own: pd.DataFrame, fitted: bool) -> bool:
    """Until its law is fittable a strategy stays at the size it started with: a second size
    would add a size term to fit."""
    return fitted or not len(own) or rung.params in set(own["params_inference"])


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
