"""Figures from the results table: pure functions from a DataFrame to a matplotlib ``Figure``.

Each plot function takes the results table (or, for :func:`plot_frontier`, any table with a cost
and a perplexity column) and returns a :class:`~matplotlib.figure.Figure` built without pyplot,
so nothing here touches global state or needs a display; :func:`save_figure` writes it as PNG
and SVG. The numbers come from :mod:`experiments.frontier`, so a figure and its table agree.

Conventions, the same in every figure:

* strategies are named as the CLI names them (``slm``, ``slm-is``, ...) and keep one colour
  (:data:`STRATEGY_COLORS`) and one marker (:data:`STRATEGY_MARKERS`), so a line drawn on top
  of another still shows the other's markers; a panel's title names series that coincide;
* tick labels never repeat, and an axis too narrow for 3 significant digits is labelled as
  differences from a reference value that its label names with the axis's relative span
  (:class:`_ReadableFormatter`);
* the one legend sits outside the panels, so it covers neither titles nor data;
* costs are on log axes in FLOPs, with a secondary axis in device-hours at ``flops_per_hour``
  (default: an A100 at 312 TFLOP/s peak and 40% MFU, the paper's hardware);
* perplexities are macro averages over domains (see :mod:`experiments.frontier`), one panel per
  domain data size, because 1M and 64M domain tokens are different scenarios.
"""
from __future__ import annotations

import math
import os
import textwrap
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import Formatter, Locator, MaxNLocator, NullFormatter

from experiments import frontier
from planner.core.budgets import total_cost
from planner.core.cost import PROFILES
from planner.core.errors import SpecplanError
from planner.core.units import format_count
from planner.run.results import sort_strategies

__all__ = [
    "DEFAULT_FLOPS_PER_HOUR",
    "DEFAULT_HOURS_LABEL",
    "STRATEGY_COLORS",
    "STRATEGY_MARKERS",
    "plot_forecast",
    "plot_frontier",
    "plot_ppl_vs_pretrain",
    "plot_ppl_vs_spec",
    "plot_total_cost",
    "plot_winner_map",
    "save_figure",
    "strategy_color",
    "strategy_marker",
]

#: One colour per strategy, used by every figure (tab10 hues; the baseline slm is blue).
STRATEGY_COLORS = {
    "slm": "#1f77b4",
    "slm-nopt": "#7f7f7f",
    "llm": "#d62728",
    "slm-is": "#2ca02c",
    "slm-mix": "#ff7f0e",
    "slm-pn": "#9467bd",
    "slm-hn": "#8c564b",
    "slm-d": "#e377c2",
}
# Strategies registered later get a stable colour from their name (never a listed one).
_SPARE_COLORS = ("#17becf", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")
#: One marker per strategy: where two series coincide, both markers stay visible.
STRATEGY_MARKERS = {
    "slm": "o",
    "slm-nopt": "v",
    "llm": "s",
    "slm-is": "^",
    "slm-mix": "D",
    "slm-pn": "P",
    "slm-hn": "X",
    "slm-d": "*",
}
_SPARE_MARKERS = ("<", ">", "h", "p", "d", "8")
# Series closer than this (relative, every point) are drawn on top of each other: a log axis
# over a few decades shows 1% as under a pixel.
_COINCIDE_RTOL = 0.01

#: Device-hours axis default: A100, 312 TFLOP/s dense bf16 peak, 40% MFU.
DEFAULT_FLOPS_PER_HOUR = PROFILES["a100"].flops_per_hour()
DEFAULT_HOURS_LABEL = "A100-hours at 40% MFU"

_PANEL_SIZE = (4.8, 3.8)
# A lone panel's legend takes a third of a panel's width, and its title must still fit above it.
_SINGLE_PANEL_WIDTH = 6.4
# Axis names of known results-table columns; others are shown with spaces for underscores.
_AXIS_NAMES = {
    "generic_flops": "pretraining cost",
    "est_generic_flops": "estimated pretraining cost",
    "spec_flops": "specialization cost per domain",
    "est_spec_flops": "estimated specialization cost per domain",
    "pretrain_budget_flops": "pretraining budget",
    "spec_budget_flops": "specialization budget per domain",
    "ppl_after": "perplexity after fine-tuning",
    "ppl_before": "perplexity before fine-tuning",
}
_EMPTY_CELL = "#eeeeee"


def strategy_color(strategy: str) -> str:
    """The strategy's colour: listed ones from :data:`STRATEGY_COLORS`, others by name hash."""
    if strategy in STRATEGY_COLORS:
        return STRATEGY_COLORS[strategy]
    return _SPARE_COLORS[zlib.crc32(strategy.encode()) % len(_SPARE_COLORS)]


def strategy_marker(strategy: str) -> str:
    """The strategy's marker: listed ones from :data:`STRATEGY_MARKERS`, others by name hash."""
    if strategy in STRATEGY_MARKERS:
        return STRATEGY_MARKERS[strategy]
    return _SPARE_MARKERS[zlib.crc32(strategy.encode()) % len(_SPARE_MARKERS)]


def _strategies(names: pd.Series) -> list[str]:
    return sort_strategies(names.dropna())


def _panels(sizes: Sequence[float], title: str) -> tuple[Figure, list[Axes]]:
    """A figure with one panel per domain data size (at least one panel).

    Without sizes the title goes on the one panel: a figure title is centred on the whole
    figure, and a narrow figure's would run into the legend beside the panel.
    """
    count = max(len(sizes), 1)
    width = _PANEL_SIZE[0] * count if sizes else _SINGLE_PANEL_WIDTH
    fig = Figure(figsize=(width, _PANEL_SIZE[1]), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, count, squeeze=False)[0]))
    if sizes:
        fig.suptitle(title)
    else:
        axes[0].set_title(title)
    for ax, size in zip(axes, sizes):
        ax.set_title(f"{format_count(size)} domain tokens")
    return fig, axes


def _cost_axis(
    ax: Axes, which: str, what: str, flops_per_hour: float, hours_label: str
) -> None:
    """Log-scale a cost axis in FLOPs and add the device-hours axis opposite it."""
    if flops_per_hour <= 0:
        raise SpecplanError(
            f"plots: flops_per_hour={flops_per_hour}; give the device's FLOPs per hour (> 0)"
        )
    functions = (lambda f: f / flops_per_hour, lambda h: h * flops_per_hour)
    if which == "x":
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} (FLOPs)")
        hours = ax.secondary_xaxis("top", functions=functions)
        hours.set_xlabel(hours_label)
        axes = (ax.xaxis, hours.xaxis)
    else:
        ax.set_yscale("log")
        ax.set_ylabel(f"{what} (FLOPs)")
        hours = ax.secondary_yaxis("right", functions=functions)
        hours.set_ylabel(hours_label)
        axes = (ax.yaxis, hours.yaxis)
    for axis in axes:
        _readable_log_ticks(axis)


def _readable_log_ticks(axis) -> None:
    """Few short, distinct labels on a log axis (:class:`_ReadableLogLocator`,
    :class:`_ReadableFormatter`)."""
    axis.set_major_locator(_ReadableLogLocator())
    axis.set_major_formatter(_ReadableFormatter())
    axis.set_minor_formatter(NullFormatter())


class _ReadableLogLocator(Locator):
    """Log-axis ticks that stay readable at any range.

    Matplotlib's log ticks label minor ticks when a range spans less than a decade ("2x10^11"
    labels then run into each other) and fall back to linear ticks when few decades fit. Here:
    the sparsest of decades / 1-2-5 / 1-1.5-2-3-5-7 per decade that puts at least three ticks
    in view, thinned to at most eight.
    """

    _SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
    _MAX_TICKS = 8

    def __call__(self) -> list[float]:
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        lo, hi = sorted((vmin, vmax))
        if not hi > 0:
            return []
        lo = max(lo, hi * 1e-12)
        decades = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        for subs in self._SUBS:
            ticks = [m * 10.0**d for d in decades for m in subs if lo <= m * 10.0**d <= hi]
            if len(ticks) >= 3:
                break
        else:  # a range narrower than the densest log ticks (e.g. perplexity 11-17): linear
            ticks = [t for t in MaxNLocator(nbins=5).tick_values(lo, hi) if lo <= t <= hi]
            return ticks if len(ticks) >= 2 else [lo, hi]
        stride = -(-len(ticks) // self._MAX_TICKS)
        return ticks[::stride]


class _ReadableFormatter(Formatter):
    """Tick labels that never repeat, and that say so when an axis is narrow.

    Labels get the fewest significant digits (2, then 3) that tell the ticks apart. Ticks that
    3 digits cannot tell apart lie within about 1% of each other: five "1.5e12" labels on a
    0.2%-wide axis make a 0.2% difference look like the whole range. Those are labelled as
    differences from a reference tick ("-1e9", "0", "+1e9"), and a second line of the axis
    label names the reference and the relative span ("+1.5e12 (0.2% range)"); matplotlib's
    offset text, at the axis's end, runs into the label beside it.
    """

    def __init__(self) -> None:
        self._name: str | None = None  # the axis label without the note

    def __call__(self, value: float, _position: int | None = None) -> str:
        return _short_number(value, digits=3)

    def format_ticks(self, values) -> list[str]:
        labels, note = _tick_labels(values)
        if self._name is None:  # read at the first draw: labels are set after the formatter
            self._name = self.axis.label.get_text()
        self.axis.label.set_text(f"{self._name}\n{note}" if note else self._name)
        return labels


def _tick_labels(values: Sequence[float]) -> tuple[list[str], str]:
    """Distinct labels for ``values`` and the note for the axis label ("" unless the labels are
    differences, see :class:`_ReadableFormatter`)."""
    values = [float(v) for v in values]
    for digits in (2, 3):
        labels = [_short_number(v, digits=digits) for v in values]
        if len(set(labels)) == len(labels):
            return labels, ""
    middle = len(values) // 2
    reference = values[middle]
    steps = [v - reference for v in values]
    for digits in (2, 3, 4):
        labels = [("+" if d > 0 else "-") + _short_number(abs(d), digits=digits) for d in steps]
        labels[middle] = "0"
        if len(set(labels)) == len(labels):
            break
    span = 100 * (max(values) - min(values)) / reference
    return labels, f"+{_short_number(reference, digits=5)} ({span:.1g}% range)"


def _short_number(value: float, *, digits: int = 2) -> str:
    """``2e12``, ``2.5e-6``, ``0.2``, ``50``: tick labels that fit side by side.

    ``digits`` significant digits in scientific notation (trailing zeros dropped); numbers
    written plainly keep at least 3, which is as short.
    """
    if value == 0:
        return "0"
    if value < 0:
        return ""
    plain = f"{value:.{max(digits, 3)}g}"
    if 1e-2 <= value < 1e4 and "e" not in plain:
        return plain
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").removesuffix(".")
    return f"{mantissa}e{int(exponent)}"


def _note_coincident(ax: Axes, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Name, under the panel's title, the series drawn on top of one another.

    Series with the same x values whose y values agree within :data:`_COINCIDE_RTOL` are one
    line on screen; their legend entries would otherwise point at nothing visible.
    """
    groups: list[list[str]] = []
    for name, (x, y) in series.items():
        for group in groups:
            gx, gy = series[group[0]]
            if (len(x) == len(gx) and np.allclose(x, gx, rtol=1e-9)
                    and np.allclose(y, gy, rtol=_COINCIDE_RTOL, atol=0)):
                group.append(name)
                break
        else:
            groups.append([name])
    same = [" = ".join(group) for group in groups if len(group) > 1]
    if same:
        note = textwrap.fill(f"one line (within {100 * _COINCIDE_RTOL:.0f}%): "
                             + "; ".join(same), 48)
        ax.set_title("\n".join(filter(None, (ax.get_title(), note))), fontsize="medium")


def _axis_name(column: str) -> str:
    if frontier.higher_is_better(column):
        return f"{column.removeprefix('task:')} task accuracy (higher is better)"
    return _AXIS_NAMES.get(column, column.replace("_", " "))


def _legend(fig: Figure, loc: str = "outside right center", ncols: int = 1) -> Figure:
    """One legend for the whole figure, outside the panels: a strategy has one colour in every
    panel, and with eight strategies a legend inside a panel hides points. It is centred beside
    the panels, below the figure title's row, which a top-aligned legend runs into when one
    panel makes the figure narrow."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc=loc, ncols=ncols,
                   fontsize="small")
    return fig


def plot_ppl_vs_pretrain(
    df: pd.DataFrame,
    *,
    cost_col: str = "generic_flops",
    statuses: Sequence[str] = ("ok", "over-inference-budget"),
    flops_per_hour: float = DEFAULT_FLOPS_PER_HOUR,
    hours_label: str = DEFAULT_HOURS_LABEL,
) -> Figure:
    """Macro perplexity after fine-tuning against pretraining cost, one line per strategy.

    At each pretraining budget a strategy shows its best config (over specialization budgets
    and settings). Strategies without pretraining (``slm-is``, ``slm-nopt``) have no point on a
    log cost axis; they are drawn as dashed horizontal lines at their best perplexity, as the
    paper draws SLM-is. The LLM is included (``over-inference-budget``) as a reference.

    Args:
        df: the results table.
        cost_col: pretraining cost column: measured ``generic_flops`` or an estimate.
        statuses: run statuses to draw.
        flops_per_hour: FLOPs per device-hour for the secondary axis.
        hours_label: label of the secondary axis.
    """
    configs = frontier.config_table(df, statuses=statuses)
    sizes = sorted(configs["domain_tokens"].unique())
    fig, axes = _panels(sizes, "Perplexity vs pretraining cost")
    for ax, size in zip(axes, sizes):
        panel = configs[configs["domain_tokens"] == size]
        drawn = {}
        for strategy in _strategies(panel["strategy"]):
            rows = panel[panel["strategy"] == strategy]
            color = strategy_color(strategy)
            if (rows[cost_col] <= 0).all():
                level = rows["ppl_after"].min()
                ax.axhline(level, color=color, ls="--", label=strategy)
                drawn[strategy] = (np.array([np.nan]), np.array([level]))
                continue
            rows = rows[rows[cost_col] > 0].sort_values("ppl_after", kind="stable")
            best = rows.drop_duplicates("pretrain_budget_flops").sort_values(cost_col)
            ax.plot(best[cost_col], best["ppl_after"], "-", marker=strategy_marker(strategy),
                    color=color, label=strategy)
            drawn[strategy] = (best[cost_col].to_numpy(), best["ppl_after"].to_numpy())
        _note_coincident(ax, drawn)
        if not (panel[cost_col] > 0).any():
            # Only flat lines: centre the empty cost axis on one device-hour, and say why.
            ax.set_xlim(flops_per_hour / 10, flops_per_hour * 10)
            ax.text(0.5, 0.05, "no run with pretraining", transform=ax.transAxes, ha="center")
    for ax in axes:
        _cost_axis(ax, "x", _axis_name(cost_col), flops_per_hour, hours_label)
        ax.set_ylabel("perplexity after fine-tuning (macro)")
        ax.grid(True, which="major", alpha=0.3)
    return _legend(fig)


def plot_ppl_vs_spec(
    df: pd.DataFrame,
    *,
    cost_col: str = "spec_flops",
    statuses: Sequence[str] = ("ok", "over-inference-budget"),
    flops_per_hour: float = DEFAULT_FLOPS_PER_HOUR,
    hours_label: str = DEFAULT_HOURS_LABEL,
) -> Figure:
    """Macro perplexity after fine-tuning against per-domain specialization cost.

    Every config is a faint point; each strategy's line joins its Pareto-optimal configs (the
    best perplexity it reaches for a given specialization spend).

    Args:
        df: the results table.
        cost_col: per-domain specialization cost column (measured ``spec_flops`` or estimate).
        statuses: run statuses to draw.
        flops_per_hour: FLOPs per device-hour for the secondary axis.
        hours_label: label of the secondary axis.
    """
    configs = frontier.config_table(df, statuses=statuses)
    configs = configs[configs[cost_col] > 0]
    sizes = sorted(configs["domain_tokens"].unique())
    fig, axes = _panels(sizes, "Perplexity vs specialization cost")
    for ax, size in zip(axes, sizes):
        panel = configs[configs["domain_tokens"] == size]
        drawn = {}
        for strategy in _strategies(panel["strategy"]):
            rows = panel[panel["strategy"] == strategy]
            color = strategy_color(strategy)
            ax.scatter(rows[cost_col], rows["ppl_after"], color=color, alpha=0.3, s=18,
                       marker=strategy_marker(strategy))
            front = frontier.pareto_front(rows, cost_col)
            ax.plot(front[cost_col], front["ppl_after"], "-", marker=strategy_marker(strategy),
                    color=color, label=strategy)
            drawn[strategy] = (front[cost_col].to_numpy(), front["ppl_after"].to_numpy())
        _note_coincident(ax, drawn)
    for ax in axes:
        _cost_axis(ax, "x", _axis_name(cost_col), flops_per_hour, hours_label)
        ax.set_ylabel("perplexity after fine-tuning (macro)")
        ax.grid(True, which="major", alpha=0.3)
    return _legend(fig)


def plot_frontier(
    df: pd.DataFrame,
    *,
    cost_col: str = "spec_flops",
    quality_col: str = "ppl_after",
    chosen: object | None = None,
    flops_per_hour: float = DEFAULT_FLOPS_PER_HOUR,
    hours_label: str = DEFAULT_HOURS_LABEL,
    title: str = "Cost-perplexity frontier",
) -> Figure:
    """All points faint, the Pareto front as a line, and the chosen row highlighted.

    The quality is a perplexity (lower is better) or a task accuracy, ``task:NAME`` (higher is
    better, drawn on a 0-1 axis so a small spread never looks like a large one).
    Rows with a non-positive cost have no place on a log axis and are left out (e.g.
    ``generic_flops`` of ``slm-is``); price them with a total-cost column instead.

    Args:
        df: any table with ``strategy``, ``cost_col`` and ``quality_col`` (e.g. the results
            table or :func:`experiments.frontier.config_table`).
        cost_col: cost column, in FLOPs.
        quality_col: perplexity or ``task:NAME`` column.
        chosen: index label of the row to highlight (or that row, as a Series), or None.
        flops_per_hour: FLOPs per device-hour for the secondary axis.
        hours_label: label of the secondary axis.
        title: figure title.

    Raises:
        SpecplanError: when ``chosen`` is not a row of ``df`` with a positive cost.
    """
    missing = [c for c in ("strategy", cost_col, quality_col) if c not in df.columns]
    if missing:
        raise SpecplanError(
            f"plot_frontier: the table lacks column(s) {missing}; pass a table that has them"
        )
    points = df[(pd.to_numeric(df[cost_col], errors="coerce") > 0)
                & np.isfinite(pd.to_numeric(df[quality_col], errors="coerce"))]
    fig, (ax,) = _panels([], title)
    for strategy in _strategies(points["strategy"]):
        rows = points[points["strategy"] == strategy]
        ax.scatter(rows[cost_col], rows[quality_col], color=strategy_color(strategy), alpha=0.35,
                   s=22, marker=strategy_marker(strategy), label=strategy)
    front = frontier.pareto_front(points, cost_col, quality_col)
    ax.plot(front[cost_col], front[quality_col], "-", color="black", lw=1.5, label="Pareto front")
    if chosen is not None:
        label = chosen.name if isinstance(chosen, pd.Series) else chosen
        if label not in points.index:
            raise SpecplanError(
                f"plot_frontier: chosen={label!r} is not a row of the table with {cost_col} > 0 "
                f"and a {quality_col}; pass an index label of df"
            )
        row = points.loc[label]
        ax.scatter([row[cost_col]], [row[quality_col]], marker="*", s=260, zorder=5,
                   color=strategy_color(row["strategy"]), edgecolors="black", label="chosen")
        # The label leans towards the panel's inside, so it never leaves the panel.
        x_lo, x_hi = (np.log(v) for v in (points[cost_col].min(), points[cost_col].max()))
        right = np.log(row[cost_col]) > (x_lo + x_hi) / 2
        ax.annotate(f"chosen: {row['strategy']}", (row[cost_col], row[quality_col]),
                    xytext=(-10 if right else 10, 10), textcoords="offset points",
                    ha="right" if right else "left", fontweight="bold",
                    arrowprops={"arrowstyle": "-", "color": "black"})
    _cost_axis(ax, "x", _axis_name(cost_col), flops_per_hour, hours_label)
    ax.set_ylabel(_axis_name(quality_col))
    if frontier.higher_is_better(quality_col):
        ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="major", alpha=0.3)
    return _legend(fig)


def plot_total_cost(
    df: pd.DataFrame,
    *,
    n_max: int = 100,
    quality_tolerance: float | None = None,
    cost_cols: tuple[str, str] = ("generic_flops", "spec_flops"),
    statuses: Sequence[str] = ("ok",),
    flops_per_hour: float = DEFAULT_FLOPS_PER_HOUR,
    hours_label: str = DEFAULT_HOURS_LABEL,
) -> Figure:
    """Total cost ``generic + N * spec`` against the number of domains N (Eq. 1), log-log.

    Each strategy is priced at its best-perplexity config
    (:func:`experiments.frontier.total_cost_table`). Dotted vertical lines mark the N where the
    cheapest config (within ``quality_tolerance`` of the best perplexity) changes strategy, by
    more than :data:`experiments.frontier.COST_TOLERANCE` in per-domain cost
    (:func:`experiments.frontier.winner_changes`, which the report's text uses too). Lines of
    worse strategies may cross elsewhere: a strategy that is cheap but not good enough does not
    win, and a crossing of per-domain costs within the noise is not a change.

    Args:
        df: the results table.
        n_max: largest number of domains drawn.
        quality_tolerance: relative perplexity slack of a good-enough config, >= 0; None lets
            every config compete. The report passes
            :data:`experiments.conclusions.QUALITY_TOLERANCE`, as its text does.
        cost_cols: (generic, per-domain specialization) cost columns.
        statuses: run statuses to use.
        flops_per_hour: FLOPs per device-hour for the secondary axis.
        hours_label: label of the secondary axis.
    """
    if n_max < 1:
        raise SpecplanError(f"plot_total_cost: n_max={n_max}; give at least 1 domain")
    table = frontier.total_cost_table(df, [], statuses=statuses, cost_cols=cost_cols)
    generic_col, spec_col = cost_cols
    sizes = sorted(table["domain_tokens"].unique())
    within = ("" if quality_tolerance is None
              else f" within {100 * quality_tolerance:.0f}% of the best perplexity")
    rule = (f"crossover: the cheapest config{within} changes strategy, per-domain costs more "
            f"than {100 * frontier.COST_TOLERANCE:.0f}% apart")
    # About ten characters per inch of figure, so the rule wraps instead of running off it.
    width = int(_PANEL_SIZE[0] * max(len(sizes), 1) * 10)
    fig, axes = _panels(sizes, "Total cost vs number of domains\n" + textwrap.fill(rule, width))
    n = np.unique(np.geomspace(1, n_max, 200).round(6))
    for ax, size in zip(axes, sizes):
        panel = table[table["domain_tokens"] == size]
        drawn = {}
        for i, row in enumerate(panel.itertuples()):
            strategy = row.strategy
            totals = total_cost(getattr(row, generic_col), getattr(row, spec_col), n)
            # Staggered markers: on coinciding lines each strategy's markers sit elsewhere.
            ax.plot(n, totals, color=strategy_color(strategy), label=strategy,
                    marker=strategy_marker(strategy), markersize=5, markevery=(3 * i % 25, 25))
            drawn[strategy] = (n, totals)
        _note_coincident(ax, drawn)
        rows = df[df["domain_tokens"] == size]
        changes = frontier.winner_changes(
            rows, math.inf if quality_tolerance is None else quality_tolerance, n_max,
            statuses=statuses, cost_cols=cost_cols)
        for at, old, new in changes:
            ax.axvline(at, color="black", ls=":", lw=1.2,
                       label="crossover" if at == changes[0][0] else None)
            ax.annotate(f"N={at}: {old} -> {new}", (at, 0.98), xycoords=("data", "axes fraction"),
                        xytext=(-3, 0), textcoords="offset points", rotation=90, ha="right",
                        va="top", fontsize="x-small")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("number of domains N")
        _cost_axis(ax, "y", "total cost", flops_per_hour, hours_label)
        ax.grid(True, which="major", alpha=0.3)
    return _legend(fig)


def plot_winner_map(
    df: pd.DataFrame,
    *,
    x: str = "pretrain_budget_flops",
    y: str = "spec_budget_flops",
    statuses: Sequence[str] = ("ok",),
    flops_per_hour: float = DEFAULT_FLOPS_PER_HOUR,
    hours_label: str = DEFAULT_HOURS_LABEL,
) -> Figure:
    """Which strategy wins for each (pretraining budget, specialization budget) cell.

    Cells come from :func:`experiments.frontier.winner_map` (budgets are ceilings) and are
    coloured by the winning strategy, labelled with its macro perplexity; grey cells have no
    config that fits. The axes list the measured budgets, which are log-spaced, one cell each:
    a zero pretraining budget (``slm-is``) then still has a column.

    Args:
        df: the results table.
        x: pretraining budget column.
        y: specialization budget column.
        statuses: run statuses to use.
        flops_per_hour: FLOPs per device-hour for the secondary axes.
        hours_label: label of the secondary axes.
    """
    cells = frontier.winner_map(df, x, y, statuses=statuses)
    sizes = sorted(cells["domain_tokens"].unique())
    fig, axes = _panels(sizes, "Best strategy per budget")
    winners = _strategies(cells["strategy"])
    for ax, size in zip(axes, sizes):
        panel = cells[cells["domain_tokens"] == size]
        xs, ys = np.sort(panel[x].unique()), np.sort(panel[y].unique())
        image = np.empty((len(ys), len(xs), 3))
        for _, cell in panel.iterrows():
            i, j = np.searchsorted(ys, cell[y]), np.searchsorted(xs, cell[x])
            won = isinstance(cell["strategy"], str)
            image[i, j] = to_rgb(strategy_color(cell["strategy"]) if won else _EMPTY_CELL)
            if won:
                ax.text(j, i, f"{cell['ppl_after']:.3g}", ha="center", va="center",
                        fontsize="small")
        ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest")
        _budget_ticks(ax, "x", xs, _axis_name(x), flops_per_hour, hours_label)
        _budget_ticks(ax, "y", ys, _axis_name(y), flops_per_hour, hours_label)
    handles = [Patch(color=strategy_color(s), label=s) for s in winners]
    if handles:
        fig.legend(handles=handles, loc="outside right center", title="strategy")
    return fig


def _budget_ticks(
    ax: Axes, which: str, values: np.ndarray, what: str, flops_per_hour: float, hours_label: str
) -> None:
    """Label one cell per measured budget, in FLOPs and, on the opposite side, in hours.

    Labels are the cost axes' (:func:`_tick_labels`); x labels are slanted on both sides, as a
    row of "5.6e-7" labels is wider than five cells.
    """
    positions = np.arange(len(values))
    flops, flops_note = _tick_labels(values)
    hours, hours_note = _tick_labels(values / flops_per_hour)
    flops_name = "\n".join(filter(None, (f"{what} (FLOPs)", flops_note)))
    hours_name = "\n".join(filter(None, (hours_label, hours_note)))
    if which == "x":
        ax.set_xticks(positions, flops, rotation=30)
        ax.set_xlabel(flops_name)
        top = ax.secondary_xaxis("top")
        top.set(xticks=positions, xlabel=hours_name)
        top.set_xticklabels(hours, rotation=30, ha="left")
    else:
        ax.set_yticks(positions, flops)
        ax.set_ylabel(flops_name)
        ax.secondary_yaxis("right").set(yticks=positions, yticklabels=hours, ylabel=hours_name)


def plot_forecast(
    result,
    measured: pd.DataFrame | None = None,
    *,
    hours_label: str | None = None,
) -> Figure:
    """A forecast as leads read it: perplexity against pretraining budget, per strategy.

    Each forecast strategy's line is its law at the chosen model size and specialization
    (``StrategyForecast.curve``), with the prediction interval as a band; the dotted vertical
    line is the asked pretraining budget, the star the recommendation. Strategies over the
    inference budget are dashed, strategies without pretraining dash-dotted (flat). With
    ``measured`` (the results table it was fitted on), the
    runs at the forecast's domain size are dots, so the distance of the extrapolation shows.

    Args:
        result: an :class:`planner.forecast.forecast.ForecastResult`.
        measured: the results table, or None.
        hours_label: label of the device-hours axis (default: the result's device).

    Raises:
        SpecplanError: when no strategy has a forecast to draw.
    """
    drawn = [item for item in result.strategies if item.status == "forecast" and item.curve]
    if not drawn:
        raise SpecplanError("plot_forecast: no strategy has a forecast curve (a pretraining "
                            "budget > 0 and a fitted law are needed)")
    fig = Figure(figsize=(8.0, 6.0), layout="constrained")
    ax = fig.subplots()
    curves = {}
    for i, item in enumerate(drawn):
        color = strategy_color(item.strategy)
        curve = item.curve
        over = item.within_inference is False
        flat = not item.generic_tokens  # no pretraining: the budget does not move it
        every = max(len(curve["ppl"]) // 8, 1)
        curves[item.strategy] = (np.asarray(curve["pretrain_flops"], float),
                                 np.asarray(curve["ppl"], float))
        ax.plot(curve["pretrain_flops"], curve["ppl"], color=color, lw=1.8,
                marker=strategy_marker(item.strategy), markersize=4,
                markevery=(i * every // max(len(drawn), 1), every),
                ls="--" if over else "-." if flat else "-",
                label=item.strategy + (" (over inference budget)" if over else
                                       " (no pretraining)" if flat else ""))
        ax.fill_between(curve["pretrain_flops"], curve["ppl_lo"], curve["ppl_hi"],
                        color=color, alpha=0.12, lw=0)
    if measured is not None and len(measured):
        configs = frontier.config_table(measured, statuses=("ok", "over-inference-budget"))
        here = configs[np.isclose(configs["domain_tokens"].astype(float), result.domain_tokens)]
        for item in drawn:
            rows = here[(here["strategy"] == item.strategy) & (here["generic_flops"] > 0)]
            if len(rows) and "spec_budget_flops" in rows.columns:
                # the runs at the specialization budget nearest the asked one (in log)
                gap = np.abs(np.log(rows["spec_budget_flops"].astype(float) / result.spec_flops))
                rows = rows[np.isclose(gap, gap.min())]
            if len(rows):
                ax.scatter(rows["generic_flops"], rows["ppl_after"], s=18,
                           color=strategy_color(item.strategy), edgecolors="black",
                           linewidths=0.4, zorder=4)
    ax.axvline(result.pretrain_flops, color="black", ls=":", lw=1,
               label=f"asked: {_short_number(result.pretrain_flops)} FLOPs")
    if result.recommendation:
        chosen = next(i for i in result.strategies if i.strategy == result.recommendation)
        if chosen.ppl is not None:
            ax.scatter([result.pretrain_flops], [chosen.ppl], marker="*", s=260, zorder=5,
                       color=strategy_color(chosen.strategy), edgecolors="black",
                       label=f"recommended: {chosen.strategy} ({chosen.ppl:.4g})")
    _note_coincident(ax, curves)
    ax.set_yscale("log")
    _readable_log_ticks(ax.yaxis)
    ax.set_ylabel("forecast perplexity after fine-tuning (macro)")
    _cost_axis(ax, "x", "pretraining budget", result.flops_per_device_hour,
               hours_label or f"{result.hours_device.upper()}-hours")
    ax.grid(True, which="major", alpha=0.3)
    low, high = (round(100 * v) for v in result.quantiles)
    fig.suptitle(f"Forecast at {format_count(result.domain_tokens)} domain tokens, "
                 f"{_short_number(result.spec_flops)} FLOPs of specialization per domain, "
                 f"inference {result.inference}\nbands: {low}-{high}% prediction intervals; "
                 "dots: measured runs (nearest specialization budget)", fontsize="medium")
    return _legend(fig, loc="outside lower center", ncols=3)


def save_figure(fig: Figure, stem: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` atomically; return their paths.

    Each file is written to a temporary name beside its target and moved in place with
    ``os.replace``, so a reader (a README build, a browser) never sees a half-written figure.
    SVGs carry no date, so re-running a sweep leaves unchanged figures byte-identical.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, metadata in (("png", None), ("svg", {"Date": None})):
        target = stem.with_name(f"{stem.name}.{fmt}")
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as handle:  # plain open: permissions follow the umask
                fig.savefig(handle, format=fmt, dpi=dpi, metadata=metadata)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        paths.append(target)
    return paths
