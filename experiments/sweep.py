"""Budget sweeps: run a grid (or Optuna-sampled points) of strategies under budgets, as data.

A sweep is a TOML file (style guide §7.10: sweeps are files; once results exist, make a new file
rather than editing it). Its axes are strategies x pretraining budgets x specialization budgets x
domain data sizes; every **point** of that product runs all the sweep's domains in one
:func:`planner.run.runner.run_strategy` call and appends one row per (point, domain) to
``results.csv`` and ``results.parquet`` in the output folder (the schema of
:meth:`planner.run.runner.RunReport.rows` plus the sweep columns of :data:`SWEEP_COLUMNS`).

Why it is shaped this way:

* **Shared pretraining.** Points are grouped by their pretraining key (strategy, the settings
  that shape pretraining, the pretraining budget); a group runs in order in one process, so its
  first point trains the artifact and the others load it from the workspace cache. Strategies
  without a generic phase (``slm-is``, ``slm-nopt``) ignore the pretraining budget, so they run
  once per (specialization budget, domain size) with a pretraining budget of 0, which is how the
  frontier tables and plots expect them.
* **Parallel workers never train the same artifact twice at once.** With ``workers > 1`` each
  worker process walks the same ordered list of groups and claims a group with a non-blocking
  file lock (``.claims/<group>.lock``); a claimed group is skipped by the others. Artifacts that
  two groups can share (a distillation teacher that is also another point's model, a clustering
  used by several strategies) are built under a blocking lock per artifact
  (``make_workspace(..., cross_process_locks=True)``): the second process waits, then loads what
  the first one built.
  Locks are ``flock`` locks, released by the kernel when a process dies, so a killed worker
  never leaves a stale claim.
* **Resume.** A point is identified by a hash of everything that changes its result (data
  fingerprints, model sizes, window length, batch size, seed, budgets in FLOPs, strategy and its
  full settings, domain size). A re-run skips points whose rows are in the results with a final
  status (``ok``, ``over-inference-budget``, ``rejected``) and re-runs ``failed`` ones, replacing
  their rows. Rows are written after every point by rewriting both files atomically under a lock,
  so a kill loses at most the points in flight.
* **Nothing crashes the sweep for one point.** A point whose budgets cannot fit is recorded as
  ``status="rejected"`` with the reason; an unexpected error is recorded as ``failed`` with the
  error. Bad input (an unknown key, strategy, setting or size, a budget that cannot be read, a
  domain size larger than the data) fails before any compute, as one :class:`SpecplanError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.core.args import ConfigError, DataArgs, RunArgs, field_names, from_mapping
from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
from planner.core.cost import PROFILES, hardware_profile
from planner.core.errors import Interrupted, SpecplanError
from planner.core.io import (
    content_hash,
    file_lock,
    untouched_on_error,
    writable_folder,
    write_json,
)
from planner.core.threads import cpu_threads
from planner.core.units import format_count, parse_count
from planner.engine.devices import parse_gpus, resolve_device
from planner.engine.models import check_size
from planner.engine.tracking import scope, tracking
from planner.run.config import check_run_args, load_data, make_workspace
from planner.run.results import (
    append_rows,
    failed_rows,
    finished_points,
    load_rows,
    write_results,
)
from planner.run.runner import run_strategy, tasks_for
from planner.search.study import interruptible, open_storage, recover_stale_trials
from strategies import get_strategy

SWEEP_JSON = "sweep.json"
#: Columns the sweep adds to :meth:`planner.run.runner.RunReport.rows`.
SWEEP_COLUMNS = (
    "sweep", "point", "group", "pretrain_budget", "spec_budget", "small", "large", "seq_len",
    "vocab_size", "batch_size", "seed", "inference_budget", "n_domains", "est_generic_seconds",
    "est_spec_seconds", "point_seconds", "finished_at", "notes",
)


# -- the config ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    """One sweep file, validated. Field docs are the TOML keys (see ``experiments/README.md``).

    Budgets are kept as written (``"4e12"``, ``"10m@cpu"``) so results show what was asked; they
    are converted to FLOPs once per run with the cache's hardware profile.
    """

    name: str
    pretrain_budgets: tuple[str, ...]
    spec_budgets: tuple[str, ...]
    domain_tokens: tuple[int, ...]
    strategies: tuple[str, ...]
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data: DataArgs = field(default_factory=DataArgs)
    run: RunArgs = field(default_factory=RunArgs)
    small: str = "small"
    inference_budget: str | None = None
    utilization: float | None = None
    mode: str = "grid"
    samples: int | None = None
    threads: int | None = None
    tasks: Mapping[str, str] = field(default_factory=dict)  # domain -> task file

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["settings"] = {k: dict(v) for k, v in self.settings.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "sweep config",
                  base_dir: Path | None = None) -> SweepConfig:
        """Validate a parsed TOML document; relative data paths resolve against ``base_dir``.

        Raises:
            SpecplanError: naming the file and the key for anything unknown or malformed.
        """
        return _parse(dict(data), source, base_dir)


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file (data paths are relative to the file's folder).

    Raises:
        SpecplanError: for a missing or malformed file, or any invalid key or value.
    """
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecplanError(f"sweep config {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecplanError(f"sweep config {path}: not valid TOML ({err})") from None
    return SweepConfig.from_dict(data, source=f"sweep config {path}", base_dir=path.parent)


_SCALARS: dict[str, type | tuple[type, ...]] = {
    "name": str, "generic": str, "demo": bool, "seq_len": int, "vocab_size": int,
    "tokenizer": str, "text_field": str, "encoding": str, "batch_size": int, "eval_every": int,
    "eval_windows": int, "inference_budget": (str, int, float), "utilization": (int, float),
    "seed": int, "mode": str, "samples": int, "embedder": str, "device": str, "threads": int,
    "tracker": str, "compile": bool,
}
_LISTS = ("pretrain_budgets", "spec_budgets", "domain_tokens", "strategies", "domains",
          "demo_domains")
_TABLES = ("settings", "sizes", "tasks")
_REQUIRED = ("name", "pretrain_budgets", "spec_budgets", "domain_tokens", "strategies")
_POSITIVE = ("seq_len", "vocab_size", "batch_size", "eval_every", "eval_windows", "samples",
             "threads")


def _parse(data: dict, source: str, base_dir: Path | None) -> SweepConfig:
    valid = sorted([*_SCALARS, *_LISTS, *_TABLES])
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise SpecplanError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(valid)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise SpecplanError(f"{source}: missing key(s) {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, kind in _SCALARS.items():
        if key not in data:
            continue
        value = data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(k.__name__ for k in kinds)
            raise SpecplanError(f"{source}: key {key} must be a {names}, got {value!r}")
        if key in _POSITIVE and value < 1:
            raise SpecplanError(f"{source}: key {key} must be at least 1, got {value}")
        values[key] = value
    for key in _LISTS:
        if key not in data:
            continue
        items = data[key]
        if not isinstance(items, list) or not items:
            raise SpecplanError(f"{source}: key {key} must be a non-empty list, got {items!r}")
        if len({str(v) for v in items}) != len(items):
            raise SpecplanError(f"{source}: key {key} lists a value twice: {items}")
        values[key] = items

    for key in ("pretrain_budgets", "spec_budgets"):
        texts = []
        for item in values[key]:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise SpecplanError(f"{source}: {key} holds {item!r}; give FLOPs (4e12) or "
                                    f"device time ('10m@cpu')")
            text = item if isinstance(item, str) else f"{float(item):.6g}"
            parse_budget(text, what=f"{source}: {key}", utilization=values.get("utilization"))
            texts.append(text.strip())
        values[key] = tuple(texts)
    tokens = tuple(parse_count(v, f"{source}: domain_tokens") for v in values["domain_tokens"])
    if min(tokens) < 1:
        raise SpecplanError(f"{source}: domain_tokens must be positive, got {list(tokens)}")
    values["domain_tokens"] = tokens
    for key in ("strategies", "domains", "demo_domains"):
        if key in values:
            if not all(isinstance(v, str) for v in values[key]):
                raise SpecplanError(f"{source}: key {key} must list strings, got {values[key]}")
            values[key] = tuple(values[key])
    for name in values["strategies"]:
        try:
            get_strategy(name)
        except SpecplanError as err:
            raise SpecplanError(f"{source}: strategies: {err}") from None

    sizes = data.get("sizes", {})
    if not isinstance(sizes, dict):
        raise SpecplanError(f"{source}: sizes must be a table like "
                            f"sizes = {{small = \"tiny\", large = \"small\"}}")
    extra = sorted(set(sizes) - {"small", "large"})
    if extra:
        raise SpecplanError(f"{source}: unknown key(s) sizes.{', sizes.'.join(extra)}; "
                            f"valid: sizes.large, sizes.small")
    for role, size in sizes.items():
        try:
            check_size(str(size), large=role == "large")
        except SpecplanError as err:
            raise SpecplanError(f"{source}: sizes.{role} = {size!r}: {err}") from None
        values[role] = size

    settings = data.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise SpecplanError(f"{source}: settings must hold one table per strategy, like "
                            f"[settings.slm-mix] k = 4")
    for name, table in settings.items():
        if name not in values["strategies"]:
            raise SpecplanError(f"{source}: [settings.{name}] names a strategy the sweep does not "
                                f"run; valid: {', '.join(values['strategies'])}")
        try:
            get_strategy(name).settings(table)
        except SpecplanError as err:
            raise SpecplanError(f"{source}: [settings.{name}]: {err}") from None
    values["settings"] = {k: dict(v) for k, v in settings.items()}
    tasks = data.get("tasks", {})
    if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
        raise SpecplanError(f"{source}: tasks must be a table of domain = task file, like "
                            f"[tasks] law = 'law_qa.jsonl'")
    values["tasks"] = {k: str(_resolve(v, base_dir)) if base_dir is not None else v
                       for k, v in tasks.items()}

    mode = values.get("mode", "grid")
    if mode not in ("grid", "sampled"):
        raise SpecplanError(f"{source}: mode = {mode!r}; use \"grid\" or \"sampled\"")
    if (mode == "sampled") != ("samples" in values):
        raise SpecplanError(f"{source}: samples = N goes with mode = \"sampled\" (and only there)")
    if "inference_budget" in values:
        values["inference_budget"] = str(values["inference_budget"])
        try:
            parse_inference_budget(values["inference_budget"])
        except SpecplanError as err:
            raise SpecplanError(f"{source}: inference_budget: {err}") from None
    if "utilization" in values and not 0 < values["utilization"] <= 1:
        raise SpecplanError(f"{source}: utilization must be a fraction in (0, 1]")

    demo = values.get("demo", False)
    if demo and ("generic" in values or "domains" in values):
        raise SpecplanError(f"{source}: give either demo = true (with demo_domains) or generic "
                            f"and domains paths, not both")
    if not demo and not ("generic" in values and "domains" in values):
        raise SpecplanError(f"{source}: give generic = PATH and domains = [PATH, ...], or "
                            f"demo = true")
    if not demo and "demo_domains" in values:
        raise SpecplanError(f"{source}: demo_domains needs demo = true")
    if base_dir is not None:
        for key in ("generic", "tokenizer"):
            if key in values:
                values[key] = str(_resolve(values[key], base_dir))
        if "domains" in values:
            values["domains"] = tuple(str(_resolve(p, base_dir)) for p in values["domains"])
    try:
        values["data"] = from_mapping(DataArgs, values)
        values["run"] = from_mapping(RunArgs, values)
        check_run_args(values["run"], values["data"].seq_len)
    except ConfigError as err:
        key = f"sizes.{err.name}" if err.name == "large" else err.name
        raise SpecplanError(f"{source}: {key}: {err.problem}") from None
    names = field_names(SweepConfig)
    return SweepConfig(**{k: v for k, v in values.items() if k in names})


def _resolve(path: str, base_dir: Path) -> Path:
    """A data path as written, relative to the sweep file (local paths only)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate).resolve()


# -- points -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One run of the sweep: a strategy and its settings at one budget pair and domain size."""

    strategy: str
    settings: str  # JSON of the full resolved settings
    pretrain_budget: str
    spec_budget: str
    pretrain_flops: float
    spec_flops: float
    domain_tokens: int
    key: str
    group: str

    def label(self) -> str:
        return (f"{self.strategy} pretrain={self.pretrain_budget} spec={self.spec_budget} "
                f"domain={format_count(self.domain_tokens)}")


@dataclass
class SweepContext:
    """What every point of a sweep shares, loaded once per process."""

    config: SweepConfig
    cache_dir: Path
    inputs: Any
    cuts: dict[int, dict]
    fingerprint: str
    budgets: dict[str, float]
    clusterings: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)  # task name -> (domain, Task), scored per point

    def flops(self, text: str) -> float:
        return self.budgets[text]


def load_context(config: SweepConfig, cache_dir: Path) -> SweepContext:
    """Load the data, resolve budgets and cut every domain size, failing before any training.

    Raises:
        SpecplanError: unreadable data, or a domain size larger than a domain's train split.
    """

    cache_dir = Path(cache_dir)
    inputs = load_data(config.data, cache_dir, base=config.run.base)
    cuts = {tokens: {name: splits.cut(tokens, seed=config.run.seed)
                     for name, splits in inputs.domains.items()}
            for tokens in config.domain_tokens}
    budgets = {text: parse_budget(text, what="budget", utilization=config.utilization,
                                  cache_dir=cache_dir)
               for text in {*config.pretrain_budgets, *config.spec_budgets}}
    budgets["0"] = 0.0
    tasks = tasks_for(list(config.tasks.items()), config.data.domains, list(inputs.domains))
    scored = {"tasks": {name: [domain, content_hash(Path(task.path).read_bytes())]
                        for name, (domain, task) in sorted(tasks.items())}} if tasks else {}
    fingerprint = content_hash(json.dumps({
        **scored,  # a sweep without tasks keeps its points' keys
        "generic": inputs.generic.fingerprint,
        "domains": {name: s.fingerprint for name, s in sorted(inputs.domains.items())},
        "small": config.small, "large": config.run.large, "seq_len": config.data.seq_len,
        "vocab_size": len(inputs.tokenizer), "batch_size": config.run.batch_size,
        "eval_every": config.run.eval_every, "eval_windows": config.run.eval_windows,
        "inference_budget": config.inference_budget, "seed": config.run.seed,
        "embedder": config.run.embedder,
    }, sort_keys=True))
    return SweepContext(config, cache_dir, inputs, cuts, fingerprint, budgets, tasks=tasks)


def make_point(ctx: SweepContext, strategy: str, pretrain: str, spec: str, tokens: int) -> Point:
    """The point for one combination; strategies without pretraining get budget ``"0"``."""

    impl = get_strategy(strategy)
    settings = impl.settings(ctx.config.settings.get(strategy, {}))
    if not impl.has_generic_phase:
        pretrain = "0"
    settings_text = json.dumps(settings.to_dict(), sort_keys=True)
    pre_flops, spec_flops = ctx.flops(pretrain), ctx.flops(spec)
    group = content_hash(strategy, json.dumps(settings.generic_part(), sort_keys=True),
                         repr(pre_flops), ctx.fingerprint)
    key = content_hash(strategy, settings_text, repr(pre_flops), repr(spec_flops), str(tokens),
                       ctx.fingerprint)
    return Point(strategy, settings_text, pretrain, spec, pre_flops, spec_flops, tokens, key,
                 group)


def grid_points(ctx: SweepContext) -> list[list[Point]]:
    """Every grid point, in groups that share a pretraining artifact, largest group first.

    Within a group points run cheapest-first by domain size then specialization budget (any
    order reuses the artifact: the first point trains it). Groups are ordered by a cost proxy,
    largest first, so parallel workers finish together (longest-processing-time scheduling).
    """
    config = ctx.config
    seen: dict[str, Point] = {}
    for strategy in config.strategies:
        for pretrain in config.pretrain_budgets:
            for spec in config.spec_budgets:
                for tokens in config.domain_tokens:
                    point = make_point(ctx, strategy, pretrain, spec, tokens)
                    seen.setdefault(point.key, point)
    groups: dict[str, list[Point]] = {}
    for point in seen.values():
        groups.setdefault(point.group, []).append(point)
    ordered = []
    for points in groups.values():
        points.sort(key=lambda p: (p.domain_tokens, p.spec_flops))
        ordered.append(points)
    n_domains = len(ctx.inputs.domains)
    ordered.sort(key=lambda g: -(g[0].pretrain_flops + n_domains * sum(p.spec_flops for p in g)))
    return ordered


# -- running points -----------------------------------------------------------------------------
def _device_seconds(flops: float, device: str, cache_dir: Path) -> float:
    """Estimated seconds for ``flops`` on ``device``: its profile's peak times utilisation.

    CUDA devices are matched by name against the known profiles (H100, A100, ...); an unknown
    device gives NaN rather than a guess.
    """

    kind = "cpu" if device.startswith("cpu") else None
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        name = torch.cuda.get_device_name(index).lower()
        kind = next((k for k in PROFILES if k != "cpu" and k in name), None)
    if kind is None:
        return math.nan
    return flops / hardware_profile(kind, cache_dir=cache_dir).flops_per_second


def run_point(ctx: SweepContext, point: Point) -> list[dict]:
    """Run one point on every domain and return its rows (never raises for the point's own
    failure: a budget that cannot fit is ``rejected``, any other error ``failed``)."""

    config = ctx.config
    domains = ctx.cuts[point.domain_tokens]
    budgets = Budgets(point.pretrain_flops, point.spec_flops,
                      parse_inference_budget(config.inference_budget), point.domain_tokens,
                      len(domains))
    ws = make_workspace(ctx.inputs, budgets, config.run, ctx.cache_dir, small=config.small,
                        clusterings=ctx.clusterings, cross_process_locks=True)
    started = time.perf_counter()
    strategy = get_strategy(point.strategy)
    settings = strategy.settings(json.loads(point.settings))
    try:
        with scope(point.key):
            report = run_strategy(point.strategy, settings, ws, domains, tasks=ctx.tasks)
        rows = report.rows(budgets)
        for row, result in zip(rows, report.domains):
            row["notes"] = json.dumps(result.notes, sort_keys=True, default=str)
    except SpecplanError as err:  # the budgets or data cannot fit this point (BudgetError...)
        rows = failed_rows(point, strategy, settings, ws, budgets, domains, "rejected", str(err))
    except Exception as err:  # noqa: BLE001 - one point's crash is recorded, the sweep goes on
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        rows = failed_rows(point, strategy, settings, ws, budgets, domains, "failed",
                           f"{type(err).__name__}: {first}"[:500])
    device = str(resolve_device(config.run.device))
    seconds = time.perf_counter() - started
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        row.update({
            "sweep": config.name, "point": point.key, "group": point.group,
            "pretrain_budget": point.pretrain_budget, "spec_budget": point.spec_budget,
            "small": config.small, "large": config.run.large, "seq_len": config.data.seq_len,
            "vocab_size": len(ctx.inputs.tokenizer), "batch_size": config.run.batch_size,
            "seed": config.run.seed, "inference_budget": budgets.inference.describe(),
            "n_domains": len(domains), "point_seconds": seconds, "finished_at": finished,
            "device": row.get("device") or device,
            "est_generic_seconds": _device_seconds(row["est_generic_flops"], device,
                                                   ctx.cache_dir),
            "est_spec_seconds": _device_seconds(row["est_spec_flops"], device, ctx.cache_dir),
        })
    return rows


# -- the results table --------------------------------------------------------------------------


# -- the sweep ----------------------------------------------------------------------------------
def run_sweep(
    config: SweepConfig, out_dir: str | Path, *, workers: int = 1, gpus: str | None = None,
    cache_dir: str | Path = ".cache/specplan", progress: bool = False,
    command: str | None = None,
) -> pd.DataFrame:
    """Run every point of ``config`` not yet in ``out_dir``'s results; return this sweep's rows.

    Args:
        config: the validated sweep.
        out_dir: results folder (``results.csv``, ``results.parquet``, ``sweep.json``, and for
            sampled sweeps the Optuna journal ``study.journal``).
        workers: processes running points in parallel (see the module docstring for how they
            share pretraining artifacts safely).
        gpus: ``all`` or ids like ``0,1``: worker ``i`` is pinned to GPU ``i mod len(gpus)``
            with ``CUDA_VISIBLE_DEVICES``; None runs on ``config.run.device``.
        cache_dir: the workspace cache (corpora, tokenizers, clusterings, artifacts).
        progress: print one line per finished point on stderr.
        command: the command line that started the sweep, kept in ``sweep.json`` so its
            report can say how the results were produced.

    Raises:
        SpecplanError: bad input (before any training), or a worker process that died.
    """

    if workers < 1:
        raise SpecplanError(f"--workers {workers}: give at least 1")
    devices = parse_gpus(gpus) if gpus is not None else []
    if gpus is not None and not devices:
        raise SpecplanError(f"--gpus {gpus}: no GPU selected; leave --gpus out to run on "
                            f"{config.run.device}")
    out_dir, cache_dir = writable_folder(out_dir), Path(cache_dir)
    with untouched_on_error(out_dir):  # bad data leaves no results folder behind
        ctx = load_context(config, cache_dir)  # fails on bad data before any worker starts
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SWEEP_JSON, {
        "config": config.to_dict(), "fingerprint": ctx.fingerprint,
        "budgets_flops": {k: v for k, v in ctx.budgets.items() if k != "0"},
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    })
    with file_lock(out_dir / ".results.lock"):
        existing = load_rows(out_dir)
        if len(existing):  # a kill between the two writes leaves the CSV one point behind
            write_results(out_dir, existing)
    try:
        if workers == 1 and not devices:
            with _threads(config.threads), tracking(config.run.tracker):
                _work(ctx, out_dir, progress)
        else:
            _spawn_workers(config, out_dir, cache_dir, workers, devices, progress)
    except KeyboardInterrupt:  # each point's rows are written whole, or not at all
        raise Interrupted(f"{len(finished_points(out_dir))} finished point(s) are saved in "
                          f"{out_dir / 'results.csv'}; re-run the same command to resume (the "
                          f"interrupted point runs again)") from None
    frame = load_rows(out_dir)
    if frame.empty:
        return frame
    return frame[frame["sweep"] == config.name].reset_index(drop=True)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _work(ctx: SweepContext, out_dir: Path, progress: bool) -> None:
    """One process's share: grid groups it can claim, or trials of the sampled study."""
    if ctx.config.mode == "sampled":
        _sample(ctx, out_dir, progress)
        return
    groups = grid_points(ctx)
    total = sum(len(g) for g in groups)
    for points in groups:
        with file_lock(out_dir / ".claims" / f"{points[0].group}.lock", blocking=False) as mine:
            if not mine:
                continue
            done = finished_points(out_dir)
            for point in points:
                if point.key in done:
                    continue
                _finish(out_dir, point, run_point(ctx, point), progress, total)


def _finish(out_dir: Path, point: Point, rows: list[dict], progress: bool, total: int) -> None:
    frame = append_rows(out_dir, rows)
    if progress:
        row = rows[0]
        ppls = [r["ppl_after"] for r in rows if r["ppl_after"] == r["ppl_after"]]
        result = (f"macro ppl {math.exp(np.mean(np.log(ppls))):.2f}" if ppls
                  else row["error"][:120])
        count = frame["point"].nunique()
        print(f"[{count}/{total}] {point.label()}: {row['status']}, {result} "
              f"({row['point_seconds']:.0f} s)", file=sys.stderr, flush=True)


def _spawn_workers(config: SweepConfig, out_dir: Path, cache_dir: Path, workers: int,
                   devices: list[str], progress: bool) -> None:
    """Start ``workers`` processes (spawned: no forked torch state), pinned to GPUs if given."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    threads = config.threads or max(1, cpu_threads() // workers)
    procs = []
    for i in range(workers):
        gpu = devices[i % len(devices)] if devices else None
        proc = context.Process(target=_worker_main,
                               args=(config, str(out_dir), str(cache_dir), gpu, threads,
                                     progress))
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:  # Ctrl-C reached the workers too; SIGTERM reached this process
        for proc in procs:
            proc.terminate()
            proc.join()
        raise
    codes = [p.exitcode for p in procs]
    if any(codes):
        raise SpecplanError(f"a sweep worker exited with status {max(codes, key=abs)}; its "
                            f"finished points are saved: re-run the same command to resume")


def _worker_main(config: SweepConfig, out_dir: str, cache_dir: str, gpu: str | None,
                 threads: int, progress: bool) -> None:
    """Entry point of a worker process: pin the GPU before CUDA starts, then work."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        config = dataclasses.replace(config, device="cuda")
    import torch

    torch.set_num_threads(threads)
    try:
        with tracking(config.run.tracker):
            _work(load_context(config, Path(cache_dir)), Path(out_dir), progress)
    except KeyboardInterrupt:  # the parent says what is kept; no traceback per worker
        sys.exit(130)


# -- sampled mode -------------------------------------------------------------------------------
def _sample(ctx: SweepContext, out_dir: Path, progress: bool) -> None:
    """Optuna-sampled points over the same axes: a two-objective study (macro perplexity,
    total cost for the sweep's domains) whose TPE sampler concentrates points near the
    cost-quality frontier. The study lives in ``out_dir/study.journal``; a point already in the
    results is told to the study without running again."""
    import optuna
    from optuna.trial import TrialState

    config = ctx.config
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's warning is a traceback
    study = optuna.create_study(
        study_name=f"sweep-{config.name}-{ctx.fingerprint}", storage=open_storage(None, out_dir),
        directions=["minimize", "minimize"], load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=config.run.seed),
    )
    with warnings.catch_warnings():  # metric names are "experimental" but only label the study
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["perplexity", "total FLOPs"])
    recover_stale_trials(study)

    def objective(trial) -> tuple[float, float]:
        strategy = trial.suggest_categorical("strategy", list(config.strategies))
        pretrain = "0"
        if get_strategy(strategy).has_generic_phase:
            pretrain = trial.suggest_categorical("pretrain_budget", list(config.pretrain_budgets))
        spec = trial.suggest_categorical("spec_budget", list(config.spec_budgets))
        tokens = trial.suggest_categorical("domain_tokens", list(config.domain_tokens))
        point = make_point(ctx, strategy, pretrain, spec, tokens)
        trial.set_user_attr("point", point.key)
        if point.key in finished_points(out_dir):
            frame = load_rows(out_dir)
            rows = frame[frame["point"] == point.key].to_dict("records")
        else:
            rows = run_point(ctx, point)
            _finish(out_dir, point, rows, progress, config.samples or 0)
        status = rows[0]["status"]
        trial.set_user_attr("status", status)
        if status not in ("ok", "over-inference-budget"):
            raise optuna.TrialPruned(f"{status}: {rows[0]['error']}")
        ppl = math.exp(float(np.mean([math.log(r["ppl_after"]) for r in rows])))
        generic = float(rows[0]["generic_flops"])
        spec_cost = float(np.mean([r["spec_flops"] for r in rows]))
        return ppl, generic + len(rows) * spec_cost

    done = (TrialState.COMPLETE, TrialState.PRUNED)  # counted across workers sharing the study
    if len(study.get_trials(deepcopy=False, states=done)) < config.samples:
        study.optimize(interruptible(objective), callbacks=[
            optuna.study.MaxTrialsCallback(config.samples, states=done)])
