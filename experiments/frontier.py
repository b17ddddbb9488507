"""Frontier tables: from the results table to the numbers behind a decision.

Every function is a pure pandas function over the results table, one row per finished
(config, domain) run (columns ``strategy``, ``settings``, ``domain``, ``domain_tokens``,
``pretrain_budget_flops``, ``spec_budget_flops``, measured ``generic_flops`` / ``spec_flops``,
``ppl_generic`` / ``ppl_before`` / ``ppl_after``, ``status``, ...). Nothing here reads files or
plots, so the same table drives the CLI, the README and the tests.

Conventions shared by all functions, following the reference study (arXiv 2402.01093 v2
§3.1-3.3 and §4):

* Lower cost and lower perplexity are better.
* Domains are compared by **macro perplexity**: mean log-perplexity over domains, then ``exp``,
  so every domain weighs the same (:func:`macro_perplexity`).
* A **config** is one (strategy, settings, domain size, pretraining budget, specialization
  budget) combination (:data:`CONFIG_KEYS`); its runs are its domains. A config counts only if it
  has a result on *every* domain that any usable run of its domain size has, because a macro
  average over an easier subset of domains would flatter it (:func:`config_table`).
* Total cost for N domains is ``generic + N * specialization`` (Eq. 1, :func:`total_cost`):
  pretraining is shared, specialization is paid per domain.
* Functions that pick a winner use ``status == "ok"`` rows only by default: ``failed`` runs have
  no result and ``over-inference-budget`` runs (e.g. ``llm``) break the inference cap the
  decision is made under. :func:`reference_table` keeps the latter, as the paper's Table 8 lists
  the LLM for reference.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from planner.core.budgets import total_cost
from planner.core.errors import SpecplanError
from planner.core.units import format_count
from planner.run.results import CONFIG_KEYS, sort_strategies, strategy_rank, task_columns

__all__ = [
    "COST_TOLERANCE",
    "config_table",
    "crossover_n",
    "higher_is_better",
    "interpolate_at",
    "pareto_front",
    "reference_table",
    "total_cost_table",
    "usable",
    "winner_changes",
    "winner_map",
]



# Numeric per-run columns that a config reports as the mean over its domains. Generic cost is
# the same shared pretraining for every domain, so its mean is that cost; specialization cost is
# paid per domain, so its mean is the per-domain cost that Eq. 1 multiplies by N.
_MEAN_COLS = (
    "generic_flops",
    "spec_flops",
    "est_generic_flops",
    "est_spec_flops",
    "generic_seconds",
    "spec_seconds",
    "generic_tokens",
    "spec_tokens",
    "params_inference",
    "params_pretrain",
    "inference_flops_per_token",
)
_PPL_COLS = ("ppl_after", "ppl_before", "ppl_generic")

#: Relative cost difference that counts as measurement noise, not as one option being cheaper.
#: Measured costs are a whole number of optimizer steps: in the replication sweep configs with the
#: same 2e12-FLOP pretraining budget measured 1.97e12-2.00e12 (1.7% apart, 16% at 2.5e11), and
#: early stopping ends specialization runs a step or more apart. 5% is above that spread.
COST_TOLERANCE = 0.05


def higher_is_better(column: str) -> bool:
    """Whether more is better in ``column``: task accuracies (``task:NAME``) are, perplexities
    and costs are not."""
    return str(column).startswith("task:")


def _require(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpecplanError(
            f"{where}: the results table lacks column(s) {', '.join(missing)}; "
            "pass a table in the results schema (see experiments/frontier.py)"
        )


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def usable(df: pd.DataFrame, statuses: Sequence[str] = ("ok",)) -> pd.DataFrame:
    """Rows whose ``status`` is one of ``statuses``.

    Failed runs stay in the results table (they are recorded, not dropped) so every analysis
    must choose which ones it may use; this is that choice in one place.
    """
    _require(df, ["status"], "usable")
    rows = df[df["status"].isin(list(statuses))]
    if "domain_tokens" in rows.columns and rows["domain_tokens"].isna().any():
        raise SpecplanError(
            f"{int(rows['domain_tokens'].isna().sum())} usable row(s) have no domain_tokens, "
            "and every analysis groups by domain size; fill the column with each domain's "
            "training tokens"
        )
    return rows


def config_table(
    df: pd.DataFrame,
    *,
    statuses: Sequence[str] = ("ok",),
) -> pd.DataFrame:
    """Collapse runs into configs: macro perplexities over domains and mean per-domain costs.

    Runs of one config on the same domain (re-runs) are first averaged in log space. Configs that
    miss a domain that other usable runs of the same ``domain_tokens`` have are dropped, so every
    macro perplexity in the result averages the same domains.

    Args:
        df: the results table.
        statuses: run statuses to use (see :func:`usable`).

    Returns:
        One row per config: the :data:`CONFIG_KEYS` present in ``df``, ``ppl_after``,
        ``ppl_before`` and ``ppl_generic`` (macro; NaN when any domain lacks it), ``n_domains``,
        the mean of each cost/size column present (``generic_flops``, ``spec_flops``, ...), and
        each task's accuracy (``task:NAME``: a task belongs to one domain, so this is that
        domain's score; NaN where the config has none).
    """
    _require(df, ["strategy", "domain", "domain_tokens", "ppl_after"], "config_table")
    keys = [k for k in CONFIG_KEYS if k in df.columns]
    rows = usable(df, statuses) if "status" in df.columns else df
    after = pd.to_numeric(rows["ppl_after"], errors="coerce")
    rows = rows[np.isfinite(after) & (after > 0)]
    ppl_cols = [c for c in _PPL_COLS if c in rows.columns]
    mean_cols = [c for c in _MEAN_COLS if c in rows.columns] + task_columns(rows)
    if rows.empty:
        return pd.DataFrame(columns=[*keys, *ppl_cols, "n_domains", *mean_cols])
    logs = rows[keys + ["domain"]].copy()
    for col in ppl_cols:
        logs[col] = np.log(pd.to_numeric(rows[col], errors="coerce").where(lambda v: v > 0))
    for col in mean_cols:
        logs[col] = pd.to_numeric(rows[col], errors="coerce")
    per_domain = logs.groupby(keys + ["domain"], dropna=False, sort=False).mean().reset_index()
    grouped = per_domain.groupby(keys, dropna=False, sort=False)
    # skipna=False keeps a NaN from any domain: a partial macro average would be wrong.
    table = np.exp(grouped[ppl_cols].mean(skipna=False))
    table["n_domains"] = grouped["domain"].nunique()
    table[mean_cols] = grouped[mean_cols].mean()
    table = table.reset_index()
    universe = rows.groupby("domain_tokens")["domain"].nunique()
    complete = table["n_domains"].to_numpy() == universe.loc[table["domain_tokens"]].to_numpy()
    return table[complete].reset_index(drop=True)


def pareto_front(
    df: pd.DataFrame,
    cost_col: str,
    quality_col: str = "ppl_after",
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows that no other row beats on both cost and quality: lower cost, and lower perplexity
    or higher task accuracy (:func:`higher_is_better`).

    A row is dominated when another row is no worse on both columns and strictly better on one.
    Exact ties (same cost and same perplexity) dominate neither, so all of them are kept. Rows
    with a non-finite cost or quality are ignored (failed runs have NaN perplexity).

    Args:
        df: any table with the two columns, e.g. the results table or :func:`config_table`.
        cost_col: the cost column, e.g. ``"spec_flops"``.
        quality_col: the perplexity or task-accuracy column.
        by: optional grouping column(s); the front is computed within each group.

    Returns:
        The front rows with their original index, sorted by group, then cost, then quality.
    """
    by_cols = _as_list(by)
    _require(df, [cost_col, quality_col, *by_cols], "pareto_front")
    cost_values = pd.to_numeric(df[cost_col], errors="coerce").to_numpy(dtype=float)
    quality = pd.to_numeric(df[quality_col], errors="coerce").to_numpy(dtype=float)
    finite = df[np.isfinite(cost_values) & np.isfinite(quality)]
    groups = finite.groupby(by_cols, sort=True, dropna=False) if by_cols else [((), finite)]
    sign = -1.0 if higher_is_better(quality_col) else 1.0
    fronts = [_front(group, cost_col, quality_col, sign) for _, group in groups]
    if not fronts:
        return finite.iloc[0:0]
    return pd.concat(fronts)


def _front(group: pd.DataFrame, cost_col: str, quality_col: str, sign: float) -> pd.DataFrame:
    """The front of one group; ``sign`` -1 turns a higher-is-better column into a loss."""
    loss = sign * pd.to_numeric(group[quality_col], errors="coerce").astype(float)
    order = np.lexsort((loss.to_numpy(), group[cost_col].to_numpy(dtype=float)))
    ordered = group.iloc[order]
    costs = ordered[cost_col].to_numpy(dtype=float)
    quality = loss.to_numpy()[order]
    keep = np.zeros(len(ordered), dtype=bool)
    best_quality, best_cost = math.inf, math.nan
    # Sorted by cost then quality, a row is on the front iff it beats every cheaper row's quality,
    # or exactly ties the current front point.
    for i, (c, q) in enumerate(zip(costs, quality)):
        if q < best_quality:
            keep[i], best_quality, best_cost = True, q, c
        elif q == best_quality and c == best_cost:
            keep[i] = True
    return ordered[keep]


def interpolate_at(
    df: pd.DataFrame,
    budget_col: str,
    value_col: str,
    budgets: Iterable[float],
    by: str | Sequence[str] | None = ("strategy",),
) -> pd.DataFrame:
    """Interpolate a value at common budgets, linearly in ``log(budget)``, within each group.

    Runs rarely land on the same budgets; comparing strategies "at 100 GPUh" (the paper's
    Table 8) needs each curve read at the same abscissa. Budgets outside a group's measured range
    give NaN: extrapolation is a forecast, and forecasts belong to :mod:`planner.forecast.laws`.
    Rows that share a budget within a group are averaged; aggregate beforehand for another rule.
    Rows with a non-positive or non-finite budget, or a non-finite value, are ignored.

    Args:
        df: table with ``budget_col``, ``value_col`` and the ``by`` columns.
        budget_col: the budget column (e.g. ``"pretrain_budget_flops"``), > 0 to be used.
        value_col: the value to interpolate (e.g. ``"ppl_after"``).
        budgets: the common budgets to read each group at (> 0).
        by: grouping column(s), or None for one curve.

    Returns:
        Long table: the ``by`` columns, ``budget_col`` (the requested budgets) and ``value_col``,
        one row per group and budget.

    Raises:
        SpecplanError: when a requested budget is not a positive number.
    """
    by_cols = _as_list(by)
    _require(df, [budget_col, value_col, *by_cols], "interpolate_at")
    targets = np.asarray(list(budgets), dtype=float)
    if np.any(~np.isfinite(targets) | (targets <= 0)):
        raise SpecplanError(
            f"interpolate_at: budgets must be positive numbers, got {targets.tolist()}; "
            "interpolation is in log(budget)"
        )
    log_targets = np.log(targets)
    groups = df.groupby(by_cols, sort=True, dropna=False) if by_cols else [((), df)]
    frames = []
    for key, group in groups:
        x = pd.to_numeric(group[budget_col], errors="coerce")
        y = pd.to_numeric(group[value_col], errors="coerce")
        ok = np.isfinite(x) & (x > 0) & np.isfinite(y)
        points = y[ok].groupby(np.log(x[ok])).mean()
        values = np.full(len(targets), np.nan)
        if len(points):
            xp = points.index.to_numpy(dtype=float)
            # Budgets equal to a measured end up to float rounding count as inside the range.
            snapped = log_targets.copy()
            for end in (xp[0], xp[-1]):
                snapped[np.isclose(snapped, end, rtol=0, atol=1e-9)] = end
            values = np.interp(snapped, xp, points.to_numpy(), left=np.nan, right=np.nan)
        frame = pd.DataFrame({budget_col: targets, value_col: values})
        for col, value in zip(by_cols, key if isinstance(key, tuple) else (key,)):
            frame.insert(by_cols.index(col), col, value)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*by_cols, budget_col, value_col])
    return pd.concat(frames, ignore_index=True)


def _read_at_budgets(
    table: pd.DataFrame, budget_col: str, value_col: str, budgets: np.ndarray
) -> pd.DataFrame:
    """Per strategy, ``value_col`` at ``budgets``: interpolated, or flat without pretraining.

    Strategies with no generic phase (``slm-is``, ``slm-nopt``) only have runs at budget 0, so
    their result does not depend on the pretraining budget; the paper draws them as flat lines.
    """
    flat = table.groupby("strategy")[budget_col].transform("max") <= 0
    interpolated = interpolate_at(table[~flat], budget_col, value_col, budgets, by="strategy")
    constant = table[flat].groupby("strategy")[value_col].mean()
    flat_rows = pd.DataFrame(
        [(s, b, v) for s, v in constant.items() for b in budgets],
        columns=["strategy", budget_col, value_col],
    )
    parts = [part for part in (interpolated, flat_rows) if len(part)]
    if not parts:
        return flat_rows.astype({budget_col: float, value_col: float})
    return pd.concat(parts, ignore_index=True).astype({budget_col: float, value_col: float})


def reference_table(
    df: pd.DataFrame,
    pretrain_budgets: Iterable[float],
    *,
    budget_col: str = "pretrain_budget_flops",
    statuses: Sequence[str] = ("ok", "over-inference-budget"),
) -> pd.DataFrame:
    """The paper's Table 8: macro perplexities per strategy at fixed pretraining budgets.

    For each strategy and requested budget: ``ppl_generic`` (generic validation perplexity),
    ``ppl_before`` (domain perplexity before fine-tuning, macro over domains) and one
    ``ft_<size>`` column per domain data size (e.g. ``ft_8k``, ``ft_1M``) with the macro
    perplexity after fine-tuning. Each is interpolated linearly in log(budget) between measured
    pretraining budgets (NaN outside them) in log-perplexity space, which is where the macro
    average is a mean. Strategies without a generic phase are reported flat at every budget.

    Where a strategy has several configs at one pretraining budget (different specialization
    budgets or settings), ``ft_*`` uses the one with the best macro ``ppl_after``, as the paper
    reports the best fine-tuning run; ``ppl_generic`` and ``ppl_before`` average the runs sharing
    the budget, which share the pretrained model.

    Args:
        df: the results table.
        pretrain_budgets: budgets to read the table at, in the units of ``budget_col``.
        budget_col: ``"pretrain_budget_flops"`` (planned) or ``"generic_flops"`` (measured).
        statuses: run statuses to use; the LLM's ``over-inference-budget`` runs are kept.

    Returns:
        Columns ``budget_col``, ``strategy``, ``ppl_generic``, ``ppl_before``, ``ft_*``; one row
        per (budget, strategy), sorted by budget then strategy.
    """
    _require(
        df, ["strategy", "domain", "domain_tokens", "ppl_after", budget_col], "reference_table"
    )
    budgets = np.asarray(list(pretrain_budgets), dtype=float)
    rows = usable(df, statuses) if "status" in df.columns else df
    table = pd.DataFrame(
        [(b, s) for b in budgets for s in sort_strategies(rows["strategy"])],
        columns=[budget_col, "strategy"],
    )
    keys = [budget_col, "strategy"]

    for col in ("ppl_generic", "ppl_before"):
        if col not in rows.columns:
            table[col] = np.nan
            continue
        values = rows[["strategy", "domain", budget_col]].assign(
            log_ppl=np.log(pd.to_numeric(rows[col], errors="coerce").where(lambda v: v > 0))
        )
        if col == "ppl_before":
            # Macro over domains; a strategy missing a domain's value gets NaN at that budget.
            per_domain = values.groupby(["strategy", budget_col, "domain"]).log_ppl.mean()
            per_domain = per_domain.unstack("domain").reindex(columns=rows["domain"].unique())
            values = per_domain.mean(axis=1, skipna=False).rename("log_ppl").reset_index()
        else:
            values = values.groupby(["strategy", budget_col]).log_ppl.mean().reset_index()
        read = _read_at_budgets(values, budget_col, "log_ppl", budgets)
        table = table.merge(read, on=keys, how="left")
        table[col] = np.exp(table.pop("log_ppl"))

    configs = config_table(rows, statuses=statuses)
    best = configs.sort_values("ppl_after", kind="stable").drop_duplicates(
        ["strategy", "domain_tokens", budget_col]
    )
    best = best.assign(log_ppl=np.log(best["ppl_after"]))
    for size in sorted(rows["domain_tokens"].unique()):
        read = _read_at_budgets(best[best["domain_tokens"] == size], budget_col, "log_ppl", budgets)
        table = table.merge(read, on=keys, how="left")
        table[f"ft_{format_count(size)}"] = np.exp(table.pop("log_ppl"))
    return table


def _single_domain_size(configs: pd.DataFrame, where: str) -> None:
    sizes = configs["domain_tokens"].unique()
    if len(sizes) > 1:
        raise SpecplanError(
            f"{where}: the table mixes domain sizes {sorted(sizes.tolist())}; pick one, "
            "e.g. df[df.domain_tokens == 8_000_000]"
        )


def total_cost_table(
    df: pd.DataFrame,
    n_domains: Sequence[int],
    *,
    statuses: Sequence[str] = ("ok",),
    cost_cols: tuple[str, str] = ("generic_flops", "spec_flops"),
) -> pd.DataFrame:
    """Per domain size and strategy, the best config's costs and its total cost at each N.

    "Best" is the config with the lowest macro ``ppl_after``: the quality a strategy can reach,
    priced as it would be paid for ``N`` domains. Different domain sizes are different
    scenarios, so each gets its own rows.

    Args:
        df: the results table.
        n_domains: numbers of domains to price, e.g. ``[1, 7, 50]`` (paper Fig. 6).
        statuses: run statuses to use (see :func:`usable`).
        cost_cols: (generic, per-domain specialization) cost columns; the estimates
            ``("est_generic_flops", "est_spec_flops")`` work too.

    Returns:
        Columns ``domain_tokens``, ``strategy``, the config keys, ``ppl_after``, the two cost
        columns and ``total_n<N>`` for each N.
    """
    _require(df, list(cost_cols), "total_cost_table")
    configs = config_table(df, statuses=statuses)
    best = configs.sort_values(["ppl_after", *cost_cols], kind="stable")
    best = best.drop_duplicates(["domain_tokens", "strategy"])
    best = best.assign(_rank=best["strategy"].map(strategy_rank))
    best = best.sort_values(["domain_tokens", "_rank", "strategy"]).drop(columns="_rank")
    generic, spec = cost_cols
    columns = [k for k in CONFIG_KEYS if k in best.columns and k != "domain_tokens"]
    out = best[["domain_tokens", *columns, "ppl_after", generic, spec]].reset_index(drop=True)
    for n in n_domains:
        out[f"total_n{n}"] = total_cost(out[generic].to_numpy(), out[spec].to_numpy(), n)
    return out


def crossover_n(cost_a: tuple[float, float], cost_b: tuple[float, float]) -> float | None:
    """The number of domains at which two (generic, per-domain spec) costs are equal.

    Solves ``g_a + N s_a = g_b + N s_b``. Beyond the crossover the option with the smaller
    per-domain cost is cheaper. Returns None when the lines are parallel (identical or never
    equal) or meet only below one domain.

    Example:
        >>> crossover_n((100.0, 10.0), (0.0, 30.0))
        5.0
    """
    (generic_a, spec_a), (generic_b, spec_b) = cost_a, cost_b
    if spec_a == spec_b:
        return None
    n = (generic_b - generic_a) / (spec_a - spec_b)
    return float(n) if n >= 1 else None


def winner_changes(
    df: pd.DataFrame,
    quality_tolerance: float,
    n_max: int,
    *,
    cost_tolerance: float = COST_TOLERANCE,
    statuses: Sequence[str] = ("ok",),
    cost_cols: tuple[str, str] = ("generic_flops", "spec_flops"),
) -> list[tuple[int, str, str]]:
    """Where, as the number of domains grows, the cheapest good-enough strategy changes.

    Good enough means a config whose macro ``ppl_after`` is within ``quality_tolerance``
    (relative: 0.02 accepts up to 2% above the best config's perplexity). For each N from 1 to
    ``n_max`` the cheapest is the good-enough config with the lowest ``generic + N * spec``; ties
    go to the smaller per-domain cost, which stays cheaper as N grows. The walk jumps from one
    crossover to the next, so ``n_max`` can be large.

    A change is reported only when the new strategy's per-domain cost is below the reported
    one's by more than ``cost_tolerance`` (see :data:`COST_TOLERANCE`): past a crossing that
    ratio is what makes the new one cheaper, and two per-domain costs within the noise give
    nearly parallel totals whose crossing, ``N = delta generic / delta spec``, is noise over
    noise (a 0.2% difference crossed at N=939). The report's text and the total-cost plot's
    crossover marks both come from this function, so they agree.

    Args:
        df: the results table, for one domain size.
        quality_tolerance: relative perplexity slack, >= 0.
        n_max: largest number of domains considered, >= 1.
        cost_tolerance: relative per-domain cost difference below which two strategies count
            as equally expensive, >= 0 (0: every exact crossing).
        statuses: run statuses to use (see :func:`usable`).
        cost_cols: (generic, per-domain specialization) cost columns.

    Returns:
        ``(N, old_strategy, new_strategy)`` for each N where the cheapest strategy changes;
        empty when one strategy is cheapest throughout (or no config is complete).

    Raises:
        SpecplanError: on a negative tolerance, ``n_max < 1``, or several domain sizes.
    """
    if quality_tolerance < 0 or cost_tolerance < 0 or n_max < 1:
        raise SpecplanError(
            f"winner_changes: quality_tolerance={quality_tolerance}, "
            f"cost_tolerance={cost_tolerance}, n_max={n_max}; give tolerances >= 0 and "
            "n_max >= 1"
        )
    _require(df, list(cost_cols), "winner_changes")
    configs = config_table(df, statuses=statuses)
    _single_domain_size(configs, "winner_changes")
    configs = configs.dropna(subset=list(cost_cols))
    if configs.empty:
        return []
    good = configs[configs["ppl_after"] <= configs["ppl_after"].min() * (1 + quality_tolerance)]
    generic = good[cost_cols[0]].to_numpy(dtype=float)
    spec = good[cost_cols[1]].to_numpy(dtype=float)
    ppl = good["ppl_after"].to_numpy(dtype=float)
    strategies = good["strategy"].to_numpy()

    def winner_at(n: int) -> int:
        return int(np.lexsort((ppl, spec, generic + n * spec))[0])

    changes: list[tuple[int, str, str]] = []
    n, current = 1, winner_at(1)
    reported = current  # the config whose strategy is named cheapest
    while True:
        flatter = spec < spec[current]
        if not flatter.any():
            break
        # The first N at which some flatter config ties the current winner (ties go to it).
        cross = (generic[flatter] - generic[current]) / (spec[current] - spec[flatter])
        n = max(int(math.ceil(cross.min())), n + 1)
        if n > n_max:
            break
        new = winner_at(n)
        if strategies[new] == strategies[reported]:
            reported = new
        elif spec[new] * (1 + cost_tolerance) < spec[reported]:
            changes.append((n, str(strategies[reported]), str(strategies[new])))
            reported = new
        current = new
    return changes


def winner_map(
    df: pd.DataFrame,
    x: str = "pretrain_budget_flops",
    y: str = "spec_budget_flops",
    *,
    statuses: Sequence[str] = ("ok",),
) -> pd.DataFrame:
    """The best strategy for each (pretraining budget, specialization budget) cell.

    The grid is every measured ``x`` value times every measured ``y`` value. A budget is a
    ceiling, so a cell's candidates are all configs with ``x <= cell x`` and ``y <= cell y``:
    a strategy with no pretraining (``slm-is``, at x = 0) competes in every column. The winner
    has the lowest macro ``ppl_after`` (ties: lower ``x + y``, then strategy order). This is the
    paper's Fig. 1 decision map read off measured runs.

    Args:
        df: the results table.
        x: first budget column (a config key or a mean cost column of :func:`config_table`).
        y: second budget column.
        statuses: run statuses to use (see :func:`usable`).

    Returns:
        One row per ``domain_tokens`` and cell: ``domain_tokens``, ``x``, ``y``, ``strategy``
        (missing where no config fits), ``ppl_after`` and ``settings`` of the winning config.
    """
    _require(df, [x, y], "winner_map")
    configs = config_table(df, statuses=statuses).dropna(subset=[x, y])
    configs = configs.assign(_rank=configs["strategy"].map(strategy_rank))
    configs = configs.assign(_spend=configs[x] + configs[y])
    configs = configs.sort_values(["ppl_after", "_spend", "_rank", "strategy"], kind="stable")
    records = []
    for size, group in configs.groupby("domain_tokens", sort=True):
        for x_value in np.sort(group[x].unique()):
            for y_value in np.sort(group[y].unique()):
                fits = group[(group[x] <= x_value) & (group[y] <= y_value)]
                best = fits.iloc[0] if len(fits) else None
                records.append(
                    {
                        "domain_tokens": size,
                        x: x_value,
                        y: y_value,
                        "strategy": None if best is None else best["strategy"],
                        "ppl_after": np.nan if best is None else best["ppl_after"],
                        "settings": None if best is None else best.get("settings"),
                    }
                )
    columns = ["domain_tokens", x, y, "strategy", "ppl_after", "settings"]
    return pd.DataFrame(records, columns=columns)
