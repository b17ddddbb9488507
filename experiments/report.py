"""A sweep's report: one self-contained HTML page and a Markdown twin, from the results table.

The page carries everything a reader needs to decide without the data: the reference study's
table at fixed pretraining cost, the total cost for N domains and the N where the cheapest
good-enough strategy changes, the cost-perplexity Pareto frontier, the five figures of
:mod:`experiments.plots`, a recommendation per budget regime set against the study's guidance
(v2 Fig. 1), and the study's conclusions checked one by one (:mod:`experiments.conclusions`).
Images are embedded as base64 PNG data URIs with inline CSS, so the HTML file can be mailed or
committed alone; the Markdown file references the same PNGs saved beside it.

Every cost is shown in FLOPs and in A100-hours at 40% MFU (the study's hardware, the unit of
the plots' secondary axes), so CPU-scale numbers can be read against the study's GPU-hours.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments import conclusions, frontier, plots
from planner.core.errors import SpecplanError
from planner.core.io import write_text
from planner.core.reference import GUIDANCE
from planner.core.units import format_count
from planner.run.results import CONFIG_KEYS, sort_strategies, task_columns

__all__ = ["FIGURE_KINDS", "ReportFigure", "build_figures", "write_report"]

#: The figure kinds, as ``specplan plot --kind`` names them.
FIGURE_KINDS = ("pretrain", "spec", "frontier", "task-frontier", "total-cost", "winner-map")
#: Numbers of domains the total-cost table prices (the study's Fig. 6 uses 1, 7 and 50).
N_DOMAINS = (1, 7, 50)
#: Largest number of domains of the total-cost text and figure (the same range for both).
N_MAX = 10_000
_HOURS = plots.DEFAULT_FLOPS_PER_HOUR
_HOURS_UNIT = "A100-h"
_TOTAL = "total_cost_1_domain"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .9em; } .yes { color: #1a7f37; } .no { color: #c62828; }
"""


@dataclass
class ReportFigure:
    """One figure of the report, or the reason it was skipped.

    ``series`` are the legend labels of the figure (its strategies, plus marks such as the
    Pareto front), recorded so a reader or a test can check what the image should show.
    """

    kind: str
    name: str
    title: str
    figure: Figure | None = None
    note: str = ""

    @property
    def series(self) -> list[str]:
        if self.figure is None:
            return []
        labels: list[str] = []
        for ax in self.figure.axes:
            labels += ax.get_legend_handles_labels()[1]
        for legend in self.figure.legends:
            labels += [text.get_text() for text in legend.get_texts()]
        return list(dict.fromkeys(label for label in labels if not label.startswith("_")))


# -- tables -------------------------------------------------------------------------------------
def _flops(value: float) -> str:
    """A cost in FLOPs with its A100-hours, the pair every table shows, each to 3 significant
    digits whatever its value ("2.00e+12" beside "2.07e+12", not "2e+12")."""
    if value is None or not np.isfinite(value):
        return ""
    if value == 0:
        return f"0 (0 {_HOURS_UNIT})"
    return f"{value:.2e} ({value / _HOURS:.2e} {_HOURS_UNIT})"


def _ppl(value: float) -> str:
    """A perplexity to 2 decimals, as ``specplan train`` and ``eval`` print them."""
    return "" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _configs_with_total(df: pd.DataFrame) -> pd.DataFrame:
    configs = frontier.config_table(df)
    return configs.assign(**{_TOTAL: configs["generic_flops"] + configs["spec_flops"]})


def overview_table(df: pd.DataFrame) -> pd.DataFrame:
    """Points per strategy and status, with the compute they measured."""
    points = df.drop_duplicates("point") if "point" in df.columns else df
    table = points.pivot_table(index="strategy", columns="status", values="domain",
                               aggfunc="count", fill_value=0)
    table = table.reindex(sort_strategies(table.index))
    measured = df.groupby("strategy")["spec_flops"].sum(min_count=1)
    generic = points.groupby("strategy")["generic_flops"].max()
    table["largest pretraining"] = generic.reindex(table.index).map(_flops)
    table["specialization (all runs)"] = measured.reindex(table.index).map(_flops)
    return table.reset_index()


def reference_view(df: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 8 at the measured pretraining budgets, formatted."""
    usable = frontier.usable(df, ("ok", "over-inference-budget"))
    budgets = sorted(b for b in usable["pretrain_budget_flops"].dropna().unique() if b > 0)
    if not budgets:
        return pd.DataFrame()
    table = frontier.reference_table(df, budgets)
    view = table.rename(columns={"pretrain_budget_flops": "pretraining budget",
                                 "ppl_generic": "generic ppl", "ppl_before": "no fine-tuning"})
    view["pretraining budget"] = view["pretraining budget"].map(_flops)
    for col in view.columns[2:]:
        view[col] = view[col].map(_ppl)
    return view.rename(columns={c: f"fine-tuned on {c[3:]}" for c in view.columns
                                if c.startswith("ft_")})


def total_cost_view(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Best config per strategy priced for N domains, and where the cheapest one changes."""
    table = frontier.total_cost_table(df, N_DOMAINS)
    if table.empty:
        return pd.DataFrame(), []
    changes = []
    for size, _ in table.groupby("domain_tokens"):
        rows = df[df["domain_tokens"] == size]
        # The total-cost figure marks the same changes (plots.plot_total_cost).
        found = frontier.winner_changes(rows, conclusions.QUALITY_TOLERANCE, N_MAX)
        text = ", ".join(f"at N={n} {old} -> {new}" for n, old, new in found)
        changes.append(f"{format_count(size)} domain tokens: "
                       + (text or f"the same strategy is cheapest for every N up to {N_MAX:,}"))
    view = pd.DataFrame({
        "domain tokens": table["domain_tokens"].map(format_count),
        "strategy": table["strategy"],
        "pretraining budget": table["pretrain_budget_flops"].map(_flops),
        "spec budget": table["spec_budget_flops"].map(_flops),
        "ppl": table["ppl_after"].map(_ppl),
        "generic cost": table["generic_flops"].map(_flops),
        "spec cost per domain": table["spec_flops"].map(_flops),
        **{f"total, N={n}": table[f"total_n{n}"].map(_flops) for n in N_DOMAINS},
    })
    return view, changes


def frontier_view(df: pd.DataFrame, quality_col: str = "ppl_after") -> pd.DataFrame:
    """Configs on the Pareto frontier of ``quality_col`` (perplexity, or a task's accuracy)
    against total cost for one domain, with every task's accuracy beside the perplexity."""
    configs = _configs_with_total(df)
    front = frontier.pareto_front(configs, _TOTAL, quality_col, by="domain_tokens")
    return pd.DataFrame({
        "domain tokens": front["domain_tokens"].map(format_count),
        "strategy": front["strategy"],
        "pretraining budget": front["pretrain_budget_flops"].map(_flops),
        "spec budget": front["spec_budget_flops"].map(_flops),
        "total cost (1 domain)": front[_TOTAL].map(_flops),
        "ppl": front["ppl_after"].map(_ppl),
        **{f"{c.removeprefix('task:')} accuracy": front[c].map(_accuracy)
           for c in task_columns(front)},
    })


def _accuracy(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"


def recommendations(df: pd.DataFrame) -> list[str]:
    """One sentence per budget regime: the winner, its margin, and the study's guidance."""
    lines = []
    for _, r in conclusions.regimes(df).iterrows():
        margin = (f"by {100 * r['margin']:.1f}% over {r['runner_up']} ({r['runner_up_ppl']:.2f})"
                  if isinstance(r["runner_up"], str) else "and no other strategy fits the cell")
        verdict = {True: "agrees with", False: "differs from",
                   None: "cannot be compared with (the sweep did not run it)"}[r["agrees"]]
        lines.append(
            f"{format_count(r['domain_tokens'])} domain tokens, pretraining "
            f"{_flops(r['pretrain_budget_flops'])}, specialization "
            f"{_flops(r['spec_budget_flops'])} per domain: **{r['strategy']}** wins with "
            f"perplexity {r['ppl_after']:.2f}, {margin}; this {verdict} the study's guidance "
            f"({r['guided']}: {_guidance_text(r['guided'])})."
        )
    return lines


def _guidance_text(name: str) -> str:
    return GUIDANCE[name]


def conclusions_view(df: pd.DataFrame) -> pd.DataFrame:
    verdict = {True: "agrees", False: "disagrees", None: "not measured"}
    rows = conclusions.check_conclusions(df)
    return pd.DataFrame({"conclusion": [r["conclusion"] for r in rows],
                         "this run": [verdict[r["agrees"]] for r in rows],
                         "evidence": [r["evidence"] for r in rows]})


def problems_view(df: pd.DataFrame) -> pd.DataFrame:
    """Points that produced no model: rejected budgets and failures, with their reason."""
    bad = df[~df["status"].isin(["ok", "over-inference-budget"])]
    if "point" in bad.columns:
        bad = bad.drop_duplicates("point")
    return pd.DataFrame({
        "strategy": bad["strategy"], "status": bad["status"],
        "domain tokens": bad["domain_tokens"].map(format_count),
        "pretraining budget": bad["pretrain_budget_flops"].map(_flops),
        "spec budget": bad["spec_budget_flops"].map(_flops), "reason": bad["error"],
    })


# -- figures ------------------------------------------------------------------------------------
def _chosen_row(configs: pd.DataFrame, df: pd.DataFrame, chosen) -> object | None:
    """The config to highlight on a frontier: the given one, else the winner at the largest
    budgets (what the report recommends when money is no object)."""
    if chosen is None:
        top = conclusions.regimes(df)
        top = top[top["domain_tokens"] == configs["domain_tokens"].iloc[0]]
        if top.empty:
            return None
        cell = top.sort_values(["pretrain_budget_flops", "spec_budget_flops"]).iloc[-1]
        mask = ((configs["strategy"] == cell["strategy"])
                & (configs["ppl_after"] == cell["ppl_after"]))
    elif isinstance(chosen, Mapping):
        mask = pd.Series(True, index=configs.index)
        for key, value in chosen.items():
            mask &= configs[key] == value
    else:  # a point key of the results table
        point = df[df["point"] == chosen]
        if point.empty:

            raise SpecplanError(f"chosen={chosen!r} is not a point of the results table")
        row = point.iloc[0]
        mask = pd.Series(True, index=configs.index)
        for key in CONFIG_KEYS:
            mask &= configs[key] == row[key]
    hits = configs[mask & (configs[_TOTAL] > 0)]
    return hits.index[0] if len(hits) else None


def build_figures(df: pd.DataFrame, *, chosen=None) -> list[ReportFigure]:
    """Every figure the data allows, in report order; a kind the data cannot show is kept with
    a note saying why (e.g. no run with pretraining), never silently dropped.

    Args:
        df: the results table.
        chosen: the config to highlight on the frontier: a point key, a mapping of column to
            value (e.g. ``{"strategy": "slm-pn"}``), or None for the winner at the largest
            budgets of each domain size.
    """
    configs = _configs_with_total(df)
    ok = frontier.config_table(df, statuses=("ok",))
    figures = []

    def add(kind: str, name: str, title: str, make, missing: str | None) -> None:
        if missing:
            figures.append(ReportFigure(kind, name, title, note=missing))
        else:
            figures.append(ReportFigure(kind, name, title, figure=make()))

    add("pretrain", "pretrain", "Perplexity vs pretraining cost",
        lambda: plots.plot_ppl_vs_pretrain(df),
        None if len(configs) else "no finished run to draw")
    add("spec", "spec", "Perplexity vs specialization cost", lambda: plots.plot_ppl_vs_spec(df),
        None if (configs["spec_flops"] > 0).any() else "no run spent specialization compute")
    for size in sorted(configs["domain_tokens"].unique()) or [None]:
        panel = configs[configs["domain_tokens"] == size]
        title = f"Cost-perplexity frontier, {format_count(size)} domain tokens" if size else ""
        add("frontier", f"frontier-{format_count(size)}" if size else "frontier", title,
            lambda p=panel, t=title: plots.plot_frontier(
                p, cost_col=_TOTAL, chosen=_chosen_row(p, df, chosen), title=t),
            None if (panel[_TOTAL] > 0).any() else "no finished run with a positive cost")
    for column in task_columns(configs):
        task = column.removeprefix("task:")
        for size in sorted(configs["domain_tokens"].unique()):
            panel = configs[(configs["domain_tokens"] == size) & (configs[_TOTAL] > 0)
                            & np.isfinite(configs[column])]
            title = f"Cost-accuracy frontier, task {task}, {format_count(size)} domain tokens"
            add("task-frontier", f"task-frontier-{task}-{format_count(size)}", title,
                lambda p=panel, t=title, c=column: plots.plot_frontier(
                    p, cost_col=_TOTAL, quality_col=c, chosen=_chosen_row(p, df, chosen),
                    title=t),
                None if len(panel) else f"no finished run scored task {task}")
    add("total-cost", "total-cost", "Total cost vs number of domains",
        lambda: plots.plot_total_cost(df, n_max=N_MAX,
                                      quality_tolerance=conclusions.QUALITY_TOLERANCE),
        None if len(ok) else "no finished run within the inference budget")
    add("winner-map", "winner-map", "Best strategy per budget",
        lambda: plots.plot_winner_map(df),
        None if len(ok) else "no finished run within the inference budget")
    return figures


def make_figure(df: pd.DataFrame, kind: str, *, chosen=None) -> Figure:
    """One figure of ``kind`` (``specplan plot``); for ``frontier``, the largest domain size's
    (the report draws one frontier per size).

    Raises:
        SpecplanError: an unknown kind, or data that cannot make that figure.
    """

    if kind not in FIGURE_KINDS:
        raise SpecplanError(f"--kind {kind!r}: choose one of {', '.join(FIGURE_KINDS)}")
    matching = [f for f in build_figures(df, chosen=chosen) if f.kind == kind]
    drawn = [f for f in matching if f.figure is not None]
    if not matching:  # only task-frontier has no figure of its kind to explain
        raise SpecplanError(f"cannot draw {kind}: the table has no task:NAME column; score a "
                            "task with --task DOMAIN=PATH or a sweep's [tasks] table")
    if not drawn:
        raise SpecplanError(f"cannot draw {kind}: {matching[0].note}")
    return drawn[-1].figure


# -- writing ------------------------------------------------------------------------------------
def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="note">(none)</p>'
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"

    def cell(value) -> str:
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


def _md_inline(text: str) -> str:
    """Markdown bold (``**x**``) as HTML, the only inline markup the report's sentences use."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def write_report(
    results: pd.DataFrame, out_dir: str | Path, *, chosen=None, title: str | None = None,
    command: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report-<figure>.png/svg``).

    Args:
        results: the results table (e.g. :func:`planner.run.results.read_results`).
        out_dir: output folder (created).
        chosen: the config highlighted on the frontier (see :func:`build_figures`).
        title: page title (default: from the table's ``sweep`` column).
        command: the command that produced the results, printed so the page says how to
            reproduce it.

    Returns:
        (path of the HTML page, path of the Markdown file).
    """
    out_dir = Path(out_dir)
    df = results.reset_index(drop=True)
    names = sorted(df["sweep"].dropna().unique()) if "sweep" in df.columns else []
    title = title or (f"Sweep report: {', '.join(map(str, names))}" if names
                      else "Results report")
    figures = build_figures(df, chosen=chosen)
    total_view, changes = total_cost_view(df)
    sections = [
        ("Runs", "Points per strategy and status; costs are measured, in FLOPs and "
                 f"{_HOURS_UNIT} at 40% MFU.", overview_table(df), []),
        ("Perplexity at fixed pretraining cost (the study's Table 8)",
         "Macro perplexity per strategy, interpolated in log(budget) between measured "
         "pretraining budgets; strategies without pretraining are flat. The large model is "
         "listed for reference even when it breaks the inference budget.",
         reference_view(df), []),
        ("Total cost for N domains", "Each strategy's best config priced as generic + N x "
         f"specialization (Eq. 1). Where the cheapest config within "
         f"{100 * conclusions.QUALITY_TOLERANCE:.0f}% of the best perplexity changes strategy "
         "(only where their per-domain costs differ by more than "
         f"{100 * frontier.COST_TOLERANCE:.0f}%, the measurement noise; the total-cost figure "
         "marks the same N):",
         total_view, changes),
        ("Pareto frontier", "Configs no other config beats on both perplexity and total cost "
         "for one domain (generic + specialization).", frontier_view(df), []),
        *((f"Pareto frontier, task {c.removeprefix('task:')}",
           f"Configs no other config beats on both the accuracy of task "
           f"{c.removeprefix('task:')} and total cost for one domain.",
           frontier_view(df, c), []) for c in task_columns(df)),
        ("Recommendation per budget regime", "For each (pretraining, specialization) budget "
         "cell (budgets are ceilings; runs within the inference budget), the winner, its margin "
         "over the runner-up, and the study's guidance (arXiv 2402.01093 v2 Fig. 1).",
         pd.DataFrame(), recommendations(df)),
        ("The study's conclusions", "Each conclusion of the reference study checked on this "
         "run, with the numbers.", conclusions_view(df), []),
        ("Points without a model", "Rejected (budgets that cannot fit) and failed points.",
         problems_view(df), []),
    ]
    # Everything is computed before the folder is touched: a table that cannot be reported
    # leaves nothing behind.
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {}
    for fig in figures:
        if fig.figure is not None:
            png, _ = plots.save_figure(fig.figure, out_dir / f"report-{fig.name}")
            images[fig.name] = png
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    write_text(html_path, _html(title, command, sections, figures, images))
    write_text(md_path, _markdown(title, command, sections, figures, images))
    return html_path, md_path


def _html(title, command, sections, figures, images) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if command:
        parts.append(f"<p>Produced by <code>{html.escape(command)}</code></p>")
    for heading, text, table, lines in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        if lines:
            parts.append("<ul>" + "".join(f"<li>{_md_inline(line)}</li>" for line in lines)
                         + "</ul>")
        if not table.empty or not lines:
            parts.append(_html_table(table))
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        if fig.figure is None:
            parts.append(f'<p class="note">{html.escape(fig.kind)}: not drawn '
                         f"({html.escape(fig.note)})</p>")
            continue
        data = base64.b64encode(images[fig.name].read_bytes()).decode("ascii")
        series = html.escape(",".join(fig.series))
        parts.append(f'<figure data-kind="{fig.kind}" data-series="{series}">'
                     f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(fig.title)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _markdown(title, command, sections, figures, images) -> str:
    parts = [f"# {title}\n"]
    if command:
        parts.append(f"Produced by `{command}`\n")
    for heading, text, table, lines in sections:
        parts.append(f"## {heading}\n\n{text}\n")
        if lines:
            parts.append("\n".join(f"- {line}" for line in lines) + "\n")
        if not table.empty or not lines:
            parts.append(_md_table(table))
    parts.append("## Figures\n")
    for fig in figures:
        if fig.figure is None:
            parts.append(f"*{fig.kind}: not drawn ({fig.note})*\n")
        else:
            parts.append(f"![{fig.title}]({images[fig.name].name})\n")
    return "\n".join(parts)
