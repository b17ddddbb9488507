"""Optional experiment trackers, TensorBoard or MLflow, behind ``--tracker``.

The engine logs to the tracker open in this process (``with tracking(spec):``), so every entry
point (run, plan and its workers, sweep) gets the same curves without a tracker argument
threaded through each strategy. A tracker that fails warns once and stops; training goes on.
Per training run, tagged by the open scopes and the run's ledger label (e.g.
``trial 3/pretrain slm``): the train loss, learning rate and tokens/s every :data:`LOG_EVERY`
optimizer steps and at the last, the validation loss at each evaluation; after each run, the
ledger's totals by phase (``ledger/generic/flops``, ... stepped by the runs logged so far).

``--tracker tensorboard[:DIR]`` writes event files (default: SummaryWriter's own
``runs/DATE_HOST``; ``tensorboard --logdir runs`` shows them); ``--tracker mlflow[:URI]`` logs to
one MLflow run of experiment ``specplan`` (default: ``MLFLOW_TRACKING_URI``, else MLflow's own;
``mlflow ui`` shows it). Both are optional packages: ``pip install 'specplan[track]'``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
from typing import Iterator

from planner.core.errors import SpecplanError

__all__ = ["KINDS", "LOG_EVERY", "active", "check_tracker", "log", "log_ledger", "scope",
           "start_run", "tracked", "tracking"]

KINDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # kind -> the package it needs
#: Optimizer steps between logged train losses (each costs a device sync on a GPU).
LOG_EVERY = 10
_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")  # MLflow's metric-name alphabet

_open: list = []  # the open tracker (at most one per process)
_scopes: list[str] = []


def check_tracker(spec: str) -> tuple[str, str]:
    """``KIND[:WHERE]`` → (kind, where), its package importable.

    Raises:
        SpecplanError: an unknown kind, or its package missing (one line saying what to install).
    """
    kind, _, where = spec.partition(":")
    if kind not in KINDS:
        raise SpecplanError(f"--tracker {spec}: unknown tracker {kind!r}; use tensorboard[:DIR] "
                            "or mlflow[:URI]")
    try:
        __import__(KINDS[kind])
    except ImportError:
        raise SpecplanError(f"--tracker {spec}: the {KINDS[kind]} package is not installed; "
                            "pip install 'specplan[track]' (or leave --tracker out)") from None
    return kind, where


class _TensorBoard:
    def __init__(self, where: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=where or None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, where: str):
        import mlflow

        self.mlflow = mlflow
        if where:
            mlflow.set_tracking_uri(where)
        mlflow.set_experiment("specplan")
        self.run = mlflow.start_run()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step, run_id=self.run.info.run_id)

    def close(self) -> None:
        self.mlflow.end_run()


class _Open:
    """The tracker, the run tags it has seen (a repeated tag gets ``-2``...), runs logged."""

    def __init__(self, backend):
        self.backend, self.tags, self.runs, self.broken = backend, {}, 0, False

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log, or after the first failure (an unreachable server, a full disk) warn once and
        stop: a tracker never stops the training it watches."""
        if self.broken:
            return
        try:
            self.backend.log(metrics, step)
        except Exception as err:  # noqa: BLE001 - any tracker error must spare the run
            self.broken = True
            first = str(err).splitlines()[0] if str(err) else ""
            logging.getLogger("specplan").warning(
                f"tracker failed ({type(err).__name__}: {first}); training goes on without it")

    def tag(self, label: str) -> str:
        base = _UNSAFE.sub("_", "/".join([*_scopes, label]))
        count = self.tags[base] = self.tags.get(base, 0) + 1
        return base if count == 1 else f"{base}-{count}"


@contextlib.contextmanager
def tracking(spec: str | None) -> Iterator[None]:
    """Log every training run in the block to the tracker ``spec`` names (None: no tracker)."""
    if not spec or _open:  # none asked, or one already open (an entry point calling another)
        yield
        return
    kind, where = check_tracker(spec)
    opened = _Open(_TensorBoard(where) if kind == "tensorboard" else _MLflow(where))
    _open.append(opened)
    try:
        yield
    finally:
        _open.remove(opened)
        opened.backend.close()


def tracked(entry):
    """An entry point taking a spec or config first (``.run.tracker``) logs under its tracker."""
    @functools.wraps(entry)
    def wrapper(spec, *args, **kwargs):
        with tracking(spec.run.tracker):
            return entry(spec, *args, **kwargs)
    return wrapper


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Tag the runs in the block with ``name`` (a trial, a sweep point, a domain)."""
    _scopes.append(name)
    try:
        yield
    finally:
        _scopes.pop()


def active() -> bool:
    return bool(_open)


def start_run(label: str) -> str | None:
    """The tag of a training run about to start, or None without a tracker."""
    return _open[-1].tag(label) if _open else None


def log(tag: str | None, metrics: dict[str, float], step: int) -> None:
    if tag is not None and _open:
        _open[-1].log({f"{tag}/{k}": float(v) for k, v in metrics.items()}, step)


def log_ledger(ledger) -> None:
    """The ledger's totals by phase, one point per finished run."""
    if not _open:
        return
    opened = _open[-1]
    opened.runs += 1
    metrics = {f"ledger/{phase}/{what}": float(value)
               for phase, totals in ledger.totals().items()
               for what, value in totals.items() if isinstance(value, (int, float))}
    opened.log(metrics, opened.runs)
