"""The results table: one row per (run, domain), the product's central data contract.

``specplan run``, plan trials (``results.csv`` of a plan folder), sweeps (``results.parquet``
and ``results.csv``) and calibration ladders write their rows through this module, and every
analysis (frontiers, plots, reports, forecasts, back-tests) reads through :func:`read_results`.
A row is built by :func:`planner.run.runner.RunReport.rows`, or by :func:`failed_rows` for a run
that produced no model; a writer adds its own columns (a sweep's point, a plan's trial).
Column meanings are in ``experiments/README.md``; dtypes are fixed by :func:`normalize`, so
Parquet and CSV hold the same table, and tables written by earlier versions stay readable.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from planner.core.errors import SpecplanError
from planner.core.io import atomic_path, file_lock
from strategies import in_study_order

RESULTS_CSV = "results.csv"


RESULTS_PARQUET = "results.parquet"


#: A task score's column: ``task:NAME`` holds the accuracy of task NAME (the task file's stem)
#: on the row's domain model; a row of another domain, or of an older table, has none.
TASK_COLUMN = "task:"


#: Statuses that are final: a re-run does not repeat points recorded with them.
FINAL_STATUSES = ("ok", "over-inference-budget", "rejected")


_FLOAT_COLUMNS = (
    "pretrain_budget_flops", "spec_budget_flops", "params_inference", "params_pretrain",
    "inference_flops_per_token", "est_generic_flops", "est_spec_flops", "generic_flops",
    "spec_flops", "generic_seconds", "spec_seconds", "generic_tokens", "spec_tokens",
    "ppl_generic", "ppl_before", "ppl_after", "ppl_test", "est_generic_seconds",
    "est_spec_seconds", "point_seconds",
)


_INT_COLUMNS = ("domain_tokens", "domain_train_tokens", "seq_len", "vocab_size", "batch_size",
                "seed", "n_domains")


def failed_rows(run, strategy, settings, ws, budgets, domains, status: str, error: str):
    """Rows of a run that produced no model (``run``: its strategy, settings and domain size):
    the estimate if one can be made, no metrics."""
    try:
        est = strategy.estimate(settings, ws)
    except SpecplanError:
        est = None
    nan = math.nan
    return [{
        "run_id": "", "strategy": run.strategy, "settings": run.settings, "domain": name,
        "domain_tokens": run.domain_tokens, "domain_train_tokens": math.nan,
        "pretrain_budget_flops": budgets.pretrain_flops,
        "spec_budget_flops": budgets.spec_flops, "domains_count": budgets.domains_count,
        "params_inference": est.params_inference if est else nan,
        "params_pretrain": est.params_pretrain if est else nan,
        "inference_flops_per_token": est.inference_flops_per_token if est else nan,
        "est_generic_flops": est.generic_flops if est else nan,
        "est_spec_flops": est.spec_flops if est else nan,
        "generic_flops": nan, "spec_flops": nan, "generic_seconds": nan, "spec_seconds": nan,
        "generic_tokens": nan, "spec_tokens": nan, "artifact_reused": None, "ppl_generic": nan,
        "ppl_before": nan, "ppl_after": nan, "ppl_test": nan, "device": "", "status": status,
        "error": error, "notes": "{}",
    } for name in domains]


def read_results(path: str | Path) -> pd.DataFrame:
    """The results table of a sweep, plan or calibration: its folder, ``results.parquet`` or a
    ``.csv``.

    Raises:
        SpecplanError: when nothing readable is there, or the table has no rows.
    """
    path = Path(path)
    if path.is_dir():
        for name in (RESULTS_PARQUET, RESULTS_CSV):
            if (path / name).exists():
                return read_results(path / name)
        raise SpecplanError(f"{path}: no {RESULTS_PARQUET} or {RESULTS_CSV} here; pass a sweep "
                            f"or plan output folder, or a results file")
    if not path.exists():
        raise SpecplanError(f"{path}: no such results file")
    frame = _read_file(path)
    if frame.empty:
        raise SpecplanError(f"{path}: the results table has no rows; run a sweep or --calibrate")
    return frame


#: Text columns that can look like numbers (content hashes), read as text from CSV.
_ID_COLUMNS = ("run_id", "point", "group", "settings")


def _read_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":  # hex ids such as 37021e077022 must not read as numbers
            return pd.read_csv(path, keep_default_na=True, dtype=dict.fromkeys(_ID_COLUMNS, str))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as err:  # noqa: BLE001 - pyarrow and the csv parser raise many kinds
        raise SpecplanError(f"{path}: cannot read the results table ({err})") from None
    raise SpecplanError(f"{path}: give a .parquet or .csv results table (or its folder)")


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes, so Parquet and CSV hold the same table whatever the first rows were."""
    frame = frame.copy()
    for col in (*_FLOAT_COLUMNS, *task_columns(frame)):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in _INT_COLUMNS:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    if "artifact_reused" in frame.columns:
        frame["artifact_reused"] = frame["artifact_reused"].astype("boolean")
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].where(frame[col].notna(), "").astype(str)
    return frame


def task_columns(frame: pd.DataFrame) -> list[str]:
    """The table's task-score columns (``task:NAME``), in table order."""
    return [c for c in frame.columns if str(c).startswith(TASK_COLUMN)]


def load_rows(out_dir: Path) -> pd.DataFrame:
    """Rows already recorded in a folder (empty when none): Parquet is written first, so it is
    the more complete file."""
    for name in (RESULTS_PARQUET, RESULTS_CSV):
        if (Path(out_dir) / name).exists():
            return _read_file(Path(out_dir) / name)
    return pd.DataFrame()


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """One file, atomically (a writer killed mid-write keeps the rows it had): CSV or Parquet."""
    frame = normalize(frame)
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def write_results(out_dir: Path, frame: pd.DataFrame) -> None:
    """Both files of a results folder, Parquet first."""
    write_table(Path(out_dir) / RESULTS_PARQUET, frame)
    write_table(Path(out_dir) / RESULTS_CSV, frame)


def append_rows(out_dir: Path, rows: list[dict]) -> pd.DataFrame:
    """Add a finished point's rows (replacing earlier rows of the same point) and rewrite both
    files atomically, under a lock so parallel workers never lose each other's rows."""
    out_dir = Path(out_dir)
    with file_lock(out_dir / ".results.lock"):
        frame = load_rows(out_dir)
        points = {row["point"] for row in rows}
        if len(frame):
            frame = frame[~frame["point"].isin(points)]
        new = pd.DataFrame(rows)
        frame = new if frame.empty else pd.concat([normalize(frame), normalize(new)],
                                                  ignore_index=True)
        write_results(out_dir, frame)
        return frame


def finished_points(out_dir: Path) -> set[str]:
    """Points whose rows are recorded with a final status (a re-run skips them)."""
    with file_lock(Path(out_dir) / ".results.lock"):
        frame = load_rows(Path(out_dir))
    if frame.empty:
        return set()
    done = frame.groupby("point")["status"].agg(lambda s: set(s) <= set(FINAL_STATUSES))
    return set(done[done].index)


#: Columns that identify one config; its rows differ only by ``domain``.
CONFIG_KEYS = (
    "strategy",
    "settings",
    "domain_tokens",
    "pretrain_budget_flops",
    "spec_budget_flops",
)


def strategy_rank(strategy: str) -> int:
    """Where tables and legends list a strategy: by its family in the study's order
    (:func:`strategies.in_study_order`); unregistered names come last."""
    order = in_study_order()
    return order.index(strategy) if strategy in order else len(order)


def sort_strategies(names: Iterable[str]) -> list[str]:
    """Distinct strategy names in the study's order (:func:`strategy_rank`), unknown ones last."""
    return sorted(set(names), key=lambda s: (strategy_rank(s), s))
