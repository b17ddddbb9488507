"""Optuna-driven search over strategies and their settings, under budgets.

One study per plan, named by a hash of its inputs, so re-running the same command resumes it.
The strategy is a categorical choice and each strategy adds its own settings (define-by-run,
names prefixed by the strategy). One default trial per strategy is queued first so every
strategy is tried. Analytic estimates reject a configuration before any compute is spent (the
trial is pruned with the reason); measured costs become Optuna constraints (feasible when <= 0).
Intermediate validation losses during fine-tuning drive an asynchronous successive-halving
pruner whose resource is the number of fine-tuning tokens seen. ``frontier`` mode is a
two-objective study (perplexity, total cost for N domains) without pruning, which Optuna does
not support for several objectives.

Task files (``PlanSpec.tasks``) are scored in every trial. With ``objective="task:NAME"`` the
trials are ranked by that task's error rate (1 - accuracy; ties by perplexity) instead of
perplexity, and ``min_task`` turns task scores into constraints like the budgets. A task that
chooses is scored in trials on its selection half only (:func:`split_task`), and the chosen
model is reported on the other half. Ranking by a task turns pruning off: the pruner's
intermediate values are perplexities, and cutting a trial by perplexity would rank it by
perplexity after all.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from planner.core.args import DataArgs, RunArgs, field_names, from_mapping
from planner.core.budgets import Budgets, InferenceCap, total_cost
from planner.core.errors import BudgetError, SpecplanError
from planner.core.io import content_hash
from planner.run.config import load_data, make_workspace
from planner.engine import tracking
from planner.engine.tasks import split_task
from planner.run.runner import plan_check, run_strategy, tasks_for
from strategies import get_strategy

STATE_FILE = "study.journal"


@dataclass
class PlanSpec:
    """Everything that defines a plan; stored in the study so any worker can rebuild it.

    ``data`` and ``run`` are the shared config vocabulary (:mod:`planner.core.args`); the rest
    are the budgets and what the search itself needs.
    """

    data: DataArgs
    pretrain_flops: float
    spec_flops: float
    inference: dict  # InferenceCap fields
    domain_tokens: int | None
    domains_count: int
    strategies: list[str]
    trials: int
    run: RunArgs = field(default_factory=RunArgs)
    frontier: bool = False
    sizes: list[str] = field(default_factory=lambda: ["small"])
    pruner: str = "asha"
    cache_dir: str = ".cache/specplan"
    tasks: list = field(default_factory=list)  # [domain, task file] pairs, scored per trial
    objective: str = "ppl"  # "ppl"; "task:NAME": by its accuracy; "mix:NAME:X": mix_weight
    min_task: dict = field(default_factory=dict)  # task name -> the least accuracy accepted

    @property
    def ranked_task(self) -> str | None:
        """The task the trials are ranked by (None: by perplexity)."""
        return ranked_task(self.objective)

    @property
    def chooses_by_task(self) -> set[str]:
        """The tasks that take part in the choice (objective or constraint)."""
        return ({self.ranked_task} | set(self.min_task)) - {None}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PlanSpec":
        """A spec stored in a study; studies written before the config vocabulary (one flat
        dict, ``tokenizer_dir`` for ``tokenizer``) still load."""
        values = dict(data)
        if "data" not in values:
            values["tokenizer"] = values.pop("tokenizer_dir", None)
            values["data"] = from_mapping(DataArgs, values)
            values["run"] = from_mapping(RunArgs, values)
            for name in field_names(DataArgs, RunArgs):
                values.pop(name, None)
        else:
            values["data"] = DataArgs(**values["data"])
            values["run"] = RunArgs(**values.get("run", {}))
        return cls(**values)

    def study_name(self) -> str:
        """A name derived from what the study searches (not from where it runs)."""
        keys = self.to_dict()
        for local in ("cache_dir", "trials"):
            keys.pop(local)
        for how in ("device", "checkpoint_every", "micro_batch", "compile", "allow_pickle",
                    "tracker"):
            keys["run"].pop(how, None)  # how it runs, not what it searches
        for newer in ("batch_tokens", "base", "base_cost"):  # older studies keep their name
            if keys["run"].get(newer) is None:
                keys["run"].pop(newer, None)
        for newer, default in (("tasks", []), ("objective", "ppl"), ("min_task", {})):
            if keys[newer] == default:
                keys.pop(newer)
        if "tasks" in keys:  # a changed task file is a new study
            keys["tasks"] = [[domain, content_hash(Path(path).read_bytes())]
                             for domain, path in self.tasks]
        return "specplan-" + content_hash(json.dumps(keys, sort_keys=True))

    def budgets(self) -> Budgets:
        return Budgets(self.pretrain_flops, self.spec_flops, InferenceCap(**self.inference),
                       self.domain_tokens, self.domains_count)


# -- storage ------------------------------------------------------------------------------------
def open_storage(url: str | None, out_dir: Path):
    """Journal file in the output folder by default; an RDB URL for many machines.

    Raises:
        SpecplanError: for a storage that cannot be reached, before anything runs.
    """
    import optuna

    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        out_dir.mkdir(parents=True, exist_ok=True)
        path = str(out_dir / STATE_FILE)
        return optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))
    if url.endswith(".journal") or url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url.removeprefix("journal:")
        return optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))
    given, url = url, postgres_url(url)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" but are what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=30, grace_period=90,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1),
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
    except Exception as err:  # sqlalchemy raises many kinds; name the cause when it is known
        raise storage_error(given, err) from None


def postgres_url(url: str) -> str:
    """``postgresql://`` on the driver that is installed: SQLAlchemy 2 reads it as psycopg 3,
    while ``pip install 'specplan[postgres]'`` installs psycopg2."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if (scheme == "postgresql" and sep and importlib.util.find_spec("psycopg") is None
            and importlib.util.find_spec("psycopg2") is not None):
        return f"postgresql+psycopg2://{rest}"
    return url


def storage_error(url: str, err: Exception) -> SpecplanError:
    """One line for a storage that cannot be opened, naming the cause when it is known: an
    unknown database kind, a missing driver, an unreachable server, or else the URL."""
    import sqlalchemy.exc

    text = str(err).strip()
    first = (text.splitlines()[0] if text else type(err).__name__)[:200]
    head = f"--storage {url}: cannot open the study storage"
    if isinstance(err, sqlalchemy.exc.NoSuchModuleError):
        return SpecplanError(f"{head}: unknown database kind ({first}); write e.g. "
                             f"postgresql://user:password@host/db or sqlite:///study.db")
    if isinstance(err, ImportError):
        return SpecplanError(f"{head}: its database driver is not installed ({first}); install "
                             f"it, e.g. pip install 'specplan[postgres]' for postgresql://")
    if isinstance(err, sqlalchemy.exc.OperationalError):
        return SpecplanError(f"{head}: the database server cannot be reached ({first}); check "
                             f"that it runs, the host, port and credentials")
    return SpecplanError(f"{head} ({first}); check the URL, e.g. "
                         f"postgresql://user:password@host/db or sqlite:///study.db")


INTERRUPTED = "interrupted"


def recover_stale_trials(study) -> list[int]:
    """Queue again the trials an earlier run did not finish; returns their numbers.

    Trials stopped by Ctrl-C or SIGTERM are FAIL with ``failure`` ``interrupted``
    (:func:`interruptible`). Trials left RUNNING by a killed worker are marked failed first: the
    journal has no heartbeats, so a plan started on a study assumes none of its earlier workers
    still runs (re-running the command after a crash). RDB storages use heartbeats and Optuna's
    own retry callback for those instead.
    """
    import optuna
    from optuna.trial import TrialState

    stale = []
    if isinstance(study._storage, optuna.storages.JournalStorage):
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in stale:
            study._storage.set_trial_user_attr(trial._trial_id, "failure", "worker killed")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    else:
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}  # a finished trial cannot be marked
    interrupted = [t for t in trials if t.state == TrialState.FAIL
                   and t.user_attrs.get("failure") == INTERRUPTED and t.params
                   and t.number not in queued]
    for trial in [*stale, *interrupted]:
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return [t.number for t in [*stale, *interrupted]]


def interruptible(objective):
    """``objective`` whose trial, stopped by Ctrl-C or SIGTERM, is recorded as interrupted, so
    the next run queues it again (:func:`recover_stale_trials`); Optuna marks it FAIL."""
    def run(trial):
        try:
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("failure", INTERRUPTED)
            raise
    return run


def create_study(spec: PlanSpec, storage):
    import optuna

    # specplan prints a line per trial; Optuna's own warning for a failed trial is a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    kwargs = dict(study_name=spec.study_name(), storage=storage, load_if_exists=True,
                  sampler=optuna.samplers.TPESampler(seed=spec.run.seed))
    if spec.frontier:
        study = optuna.create_study(directions=["minimize", "minimize"], **kwargs)
        with warnings.catch_warnings():  # experimental since Optuna 3.2; only labels the axes
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([objective_label(spec.objective), "total FLOPs"])
    else:
        study = optuna.create_study(direction="minimize", pruner=make_pruner(spec.pruner),
                                    **kwargs)
    if "spec" not in study.user_attrs:
        study.set_user_attr("spec", spec.to_dict())
        for name in spec.strategies:  # every strategy tried once with its defaults
            study.enqueue_trial(default_params(name, spec), user_attrs={"default": True},
                                skip_if_exists=True)
    return study


def make_pruner(name: str):
    import optuna

    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SpecplanError(f"--pruner {name!r}: use asha, hyperband or none")


def default_params(name: str, spec: PlanSpec) -> dict:
    settings = get_strategy(name).settings()
    params = {"strategy": name, "size": spec.sizes[0]}
    for f in dataclasses.fields(settings):
        if f.metadata.get("low") is not None or f.metadata.get("choices") is not None:
            params[f"{name}.{f.name}"] = getattr(settings, f.name)
    return params


# -- the objective ------------------------------------------------------------------------------
class Objective:
    """Runs one trial: sample, check budgets analytically, run, record costs as constraints."""

    def __init__(self, spec: PlanSpec, inputs, cache_dir: Path):
        self.spec = spec
        self.inputs = inputs
        self.cache_dir = cache_dir
        self.budgets = spec.budgets()
        self.clusterings: dict = {}

    @functools.cached_property
    def tasks(self) -> dict:
        """The tasks as trials score them (read when a trial first runs, not for every
        workspace an Objective is built for)."""
        return task_halves(self.spec, plan_tasks(self.spec, self.inputs), "selection")

    def workspace(self, size: str, on_eval=None):
        """A trial's workspace; every trial shares one clustering per k."""
        return make_workspace(self.inputs, self.budgets, self.spec.run, self.cache_dir,
                              small=size, clusterings=self.clusterings, on_eval=on_eval)

    def __call__(self, trial):
        """Sample a configuration and run it (rank 0 shares it with a multi-GPU trial's ranks)."""
        params = self.sample(trial)
        logging.getLogger("specplan").info(f"trial {trial.number} {params['strategy']} (size "
                                           f"{params['size']}): started")
        with tracking.scope(f"trial {trial.number}"):
            return self.evaluate(trial, broadcast(params))

    def sample(self, trial) -> dict:
        name = trial.suggest_categorical("strategy", self.spec.strategies)
        size = trial.suggest_categorical("size", self.spec.sizes)

        settings = get_strategy(name).search_space(trial)
        return {"strategy": name, "size": size, "settings": settings.to_dict()}

    def evaluate(self, trial, params: dict):
        import optuna
        import torch

        name, size = params["strategy"], params["size"]
        strategy = get_strategy(name)
        settings = strategy.settings(params["settings"])
        seen = {"offset": 0, "last": 0}

        def report(step: int, tokens: int, val_loss: float) -> None:
            """Fine-tuning tokens seen so far in this trial (over its domains) as the resource."""
            if tokens < seen["last"]:  # the next domain's fine-tuning started
                seen["offset"] += seen["last"]
            seen["last"] = tokens
            if self.spec.frontier or self.spec.ranked_task is not None:
                return
            resource = seen["offset"] + tokens
            trial.report(math.exp(min(val_loss, 50.0)), resource)
            # A strategy's default trial always finishes, so every strategy gets a full result.
            # Rank 0 decides for every rank of a multi-GPU trial.
            if broadcast(not trial.user_attrs.get("default") and trial.should_prune()):
                trial.set_user_attr("status", f"pruned after {resource} fine-tuning tokens")
                raise optuna.TrialPruned(f"pruned after {resource} fine-tuning tokens")

        ws = self.workspace(size, on_eval=report)
        try:
            estimate, status = plan_check(strategy, settings, ws)
        except BudgetError as err:
            trial.set_user_attr("rejected", str(err))
            raise optuna.TrialPruned(f"rejected before compute: {err}") from None
        trial.set_user_attr("estimate", estimate.to_dict())
        started = time.perf_counter()
        try:
            report_ = run_strategy(name, settings, ws, self.inputs.domains, tasks=self.tasks)
        except BudgetError as err:  # a domain's own size refused it (e.g. slm-d's teacher passes)
            trial.set_user_attr("rejected", str(err))
            raise optuna.TrialPruned(f"rejected: {err}") from None
        except torch.OutOfMemoryError as err:  # the study records the trial failed, goes on
            trial.set_user_attr("failure", f"out of memory: {str(err).splitlines()[0][:200]}")
            raise
        finally:  # compute spent by this trial, pruned or not (reused artifacts cost 0 s here)
            spent = [e for e in ws.ledger.entries if e.device != "cache"]
            trial.set_user_attr("train_seconds", sum(e.seconds for e in spent))
            trial.set_user_attr("spent_flops", sum(e.flops for e in spent))
            trial.set_user_attr("run_seconds", time.perf_counter() - started)
        return self.record(trial, report_, estimate, status)

    def record(self, trial, report, estimate, status):
        generic = report.generic_ledger.totals()["generic"]
        per_domain = [d.ledger.totals()["specialization"] for d in report.domains]
        spec_flops = max(s["flops"] for s in per_domain)
        spec_seconds = sum(s["seconds"] for s in per_domain)
        cap = self.budgets.inference
        scores = {name: r["accuracy"] for d in report.domains for name, r in d.tasks.items()}
        for name, least in self.spec.min_task.items():
            trial.set_constraint(f"task:{name}", least - scores[name])
        trial.set_constraint("generic_flops", generic["flops"] - self.budgets.pretrain_flops)
        trial.set_constraint("spec_flops", spec_flops - self.budgets.spec_flops)
        if cap.params is not None:
            trial.set_constraint("inference_params", estimate.params_inference - cap.params)
        if cap.flops_per_token is not None:
            trial.set_constraint("inference_flops",
                                 estimate.inference_flops_per_token - cap.flops_per_token)
        trial.set_user_attr("status", status)
        trial.set_user_attr("devices", report.ledger().devices())
        trial.set_user_attr("artifact_reused", report.artifact_reused)
        trial.set_user_attr("generic_flops", generic["flops"])
        trial.set_user_attr("generic_seconds",
                            0.0 if report.artifact_reused else generic["seconds"])
        trial.set_user_attr("spec_flops", spec_flops)
        trial.set_user_attr("spec_seconds", spec_seconds)
        trial.set_user_attr("ppl", {d.domain: d.ppl_after for d in report.domains})
        trial.set_user_attr("ppl_before", {d.domain: d.ppl_before for d in report.domains})
        trial.set_user_attr("ppl_generic", report.ppl_generic)
        trial.set_user_attr("macro_ppl", report.macro_ppl)
        trial.set_user_attr("tasks", scores)
        trial.set_user_attr("settings", report.settings.to_dict())
        # One row per domain in the sweeps' results-table layout, so that plan trials feed
        # forecasts and reports like sweep points do (plan.py writes them to results.csv).
        trial.set_user_attr("results", report.rows(self.budgets))
        total = total_cost(generic["flops"], spec_flops, self.budgets.domains_count)
        trial.set_user_attr("total_flops", total)
        value = objective_value({"macro_ppl": report.macro_ppl, "tasks": scores},
                                self.spec.objective)  # a follower rank keeps no attrs
        if self.spec.frontier:
            return value, total
        return value


def broadcast(value):
    """Rank 0's value on every rank of a distributed trial; the value itself otherwise."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class FollowerTrial:
    """Stands in for the Optuna trial on ranks > 0 of a multi-GPU trial.

    Rank 0 holds the real trial: it samples, reports and decides pruning, and broadcasts what
    the other ranks need. Here the records are dropped.
    """

    user_attrs: dict = {}

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False

    def set_user_attr(self, key: str, value) -> None:
        pass

    def set_constraint(self, key: str, value: float) -> None:
        pass


def plan_tasks(spec: PlanSpec, inputs) -> dict:
    """A plan's task files by name, each tied to its domain (a ``--domain`` path or name).

    Raises:
        SpecplanError: a bad task file or domain (:func:`load_tasks`), or an objective or
            ``min_task`` that names no task given.
    """
    loaded = tasks_for(spec.tasks, spec.data.domains, list(inputs.domains))
    for name in sorted(spec.chooses_by_task - set(loaded)):
        how = "--objective" if spec.ranked_task == name else "--min-task"
        names = ", ".join(sorted(loaded)) or "none: add --task DOMAIN=PATH"
        raise SpecplanError(f"{how}: no task named {name!r} (tasks are named by file stem; "
                            f"given: {names})")
    for name in sorted(spec.chooses_by_task):
        split_task(loaded[name][1])  # a task that chooses must split in two halves
    return loaded


def ranked_task(objective: str) -> str | None:
    """The task an objective (``ppl``, ``task:NAME`` or ``mix:NAME:X``) ranks by; None for
    perplexity."""
    if objective == "ppl":
        return None
    kind, _, rest = objective.partition(":")
    return rest.rpartition(":")[0] if kind == "mix" else rest


def mix_weight(objective: str) -> float | None:
    """For ``mix:NAME:X`` (an accuracy point is worth X% of perplexity), the log perplexity
    one unit of accuracy is worth, ``100 ln(1 + X/100)`` nats; None for other objectives."""
    if not objective.startswith("mix:"):
        return None
    return 100.0 * math.log1p(float(objective.rpartition(":")[2]) / 100.0)


def objective_label(objective: str) -> str:
    """What the study minimises, in words."""
    task, weight = ranked_task(objective), mix_weight(objective)
    if task is None:
        return "perplexity"
    if weight is None:
        return f"{objective} error rate"
    return f"ln(ppl) - {weight:.3g} x {task} accuracy"


def task_halves(spec: PlanSpec, tasks: dict, half: str) -> dict:
    """``tasks`` (from :func:`plan_tasks`) with each task that chooses cut to one half:
    ``"selection"``, what trials are ranked on, or ``"report"``, what the chosen model is
    reported on. The other tasks stay whole."""
    at = ("selection", "report").index(half)
    return {name: (domain, split_task(task)[at] if name in spec.chooses_by_task else task)
            for name, (domain, task) in tasks.items()}


def objective_value(attrs: dict, objective: str) -> float:
    """What the study minimises for a trial's record: its macro perplexity, a task's error
    rate (1 - accuracy), or a stated mix of the two (:func:`mix_weight`)."""
    task, weight = ranked_task(objective), mix_weight(objective)
    if task is None:
        return attrs["macro_ppl"]
    if weight is None:
        return 1.0 - attrs["tasks"][task]
    return math.log(attrs["macro_ppl"]) - weight * attrs["tasks"][task]


def rank_key(trial, objective: str) -> tuple[float, float]:
    """Order of finished trials, best first: the objective, then perplexity."""
    return objective_value(trial.user_attrs, objective), trial.user_attrs["macro_ppl"]


def feasible(trial) -> bool:
    """Every recorded constraint satisfied and the deployed model within the inference budget."""
    return (all(v <= 0 for v in trial.constraints.values())
            and trial.user_attrs.get("status", "ok") == "ok")


def completed(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def settings_from_params(params: dict, name: str) -> dict:
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def optimize(study, objective: Objective, n_trials: int, *, catch=()) -> int:
    """Optimise until the study holds ``n_trials`` finished trials (across all workers).

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.trial import TrialState

    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    if len(study.get_trials(deepcopy=False, states=done_states)) >= n_trials:
        return 0
    ran = []
    study.optimize(
        interruptible(objective), catch=catch,
        callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=done_states),
                   lambda study, trial: ran.append(trial.number), log_trial],
    )
    return len(ran)


def log_trial(study, trial) -> None:
    """One line on stderr per finished trial: what ran, what it cost, how good it was."""
    import sys

    attrs, name = trial.user_attrs, trial.params.get("strategy", "?")
    if trial.state.name == "COMPLETE":
        what = (f"val ppl {attrs['macro_ppl']:.2f}, generic {attrs['generic_flops']:.2e} FLOPs"
                f"{' (reused)' if attrs.get('artifact_reused') else ''}, "
                f"spec {attrs['spec_flops']:.2e} FLOPs")
    else:
        what = (attrs.get("rejected") or attrs.get("status") or attrs.get("failure")
                or trial.state.name.lower())
    seconds = attrs.get("train_seconds")
    took = f" [{seconds:.0f} s training]" if seconds else ""
    print(f"trial {trial.number} {name}: {what}{took}", file=sys.stderr, flush=True)


def load_spec(study) -> PlanSpec:
    if "spec" not in study.user_attrs:
        raise SpecplanError(f"study {study.study_name!r} was not created by specplan plan")
    return PlanSpec.from_dict(study.user_attrs["spec"])


def oom_errors() -> tuple:
    """Errors that fail one trial (recorded with the reason) without stopping the study."""
    import torch

    return (torch.OutOfMemoryError,)


def load_plan_inputs(spec: PlanSpec):
    return load_data(spec.data, spec.cache_dir, base=spec.run.base,
                     domain_tokens=spec.domain_tokens, seed=spec.run.seed)