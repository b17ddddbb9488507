"""Figures that tell the truth, checked on the rendered figure of each kind from a real sweep:
distinct tick labels, a legend clear of titles and data, coinciding series named, crossovers
only beyond the noise and the same in the plot and the report, numbers at one precision."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import frontier, plots, report
from planner.cli.train import eval_text
from planner.run.results import read_results

REPLICATION = Path(__file__).resolve().parents[2] / "experiments" / "results" / "replication"


def all_axes(fig: Figure):
    for ax in fig.axes:
        yield ax
        yield from ax.child_axes  # the device-hours axes


def visible_labels(axis) -> list[str]:
    """Non-empty labels of the major ticks inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    slack = (hi - lo) * 1e-9
    return [text for tick, loc in zip(axis.get_major_ticks(), axis.get_majorticklocs())
            if lo - slack <= loc <= hi + slack
            for text in {tick.label1.get_text(), tick.label2.get_text()} - {""}]


def draw(fig: Figure) -> None:
    """Lay out and draw on an Agg canvas (a pyplot-free Figure's own canvas draws nothing)."""
    FigureCanvasAgg(fig).draw()


def check_truthful(fig: Figure) -> None:
    draw(fig)
    for ax in all_axes(fig):
        for axis in (ax.xaxis, ax.yaxis):
            labels = visible_labels(axis)
            assert len(labels) == len(set(labels)), labels
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    renderer = fig.canvas.get_renderer()
    covered = [ax.get_window_extent(renderer) for ax in fig.axes]  # the data areas
    covered += [title.get_window_extent(renderer) for ax in fig.axes
                for title in (ax.title, ax._left_title, ax._right_title) if title.get_text()]
    if fig._suptitle is not None:
        covered.append(fig._suptitle.get_window_extent(renderer))
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(other) for other in covered), (box, covered)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    return read_results(REPLICATION)


@pytest.fixture(scope="module")
def figures(sweep) -> dict[str, Figure]:
    drawn = {f.name: f.figure for f in report.build_figures(sweep) if f.figure is not None}
    assert {"pretrain", "spec", "frontier-2k", "total-cost", "winner-map"} <= set(drawn)
    return drawn


def test_every_kind_from_a_real_sweep_has_distinct_ticks_and_a_clear_legend(figures) -> None:
    for name, fig in figures.items():
        try:
            check_truthful(fig)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


def test_forecast_figure_has_distinct_ticks_and_a_clear_legend() -> None:
    from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
    from planner.forecast import forecast as fc
    from planner.forecast import reference as ref

    reference = ref.load_reference_results()
    budgets = Budgets(pretrain_flops=parse_budget("400h@a100"), spec_flops=parse_budget("1h@a100"),
                      inference=parse_inference_budget("126M"), domain_tokens=8e6,
                      domains_count=20)
    result = fc.forecast(reference, budgets, bounds=ref.reference_bounds(reference), n_boot=8)
    check_truthful(plots.plot_forecast(result, reference))


def test_log_cost_axes_keep_readable_labels(figures) -> None:
    fig = figures["pretrain"]
    draw(fig)
    for ax in all_axes(fig):
        if ax.get_xscale() == "log":
            labels = visible_labels(ax.xaxis)
            assert len(labels) >= 3
            mantissas = {float(label.split("e")[0]) for label in labels}
            assert mantissas <= {1, 1.5, 2, 3, 5, 7}, labels
            assert "range" not in ax.xaxis.label.get_text()


def configs(costs: dict[str, tuple[float, float]], ppl: float = 20.0) -> pd.DataFrame:
    """A results table: per strategy one config at (generic, spec) costs, on two domains."""
    return pd.DataFrame([
        {"strategy": strategy, "settings": json.dumps({}), "domain": domain,
         "domain_tokens": 8_000, "pretrain_budget_flops": generic, "spec_budget_flops": spec,
         "generic_flops": generic, "spec_flops": spec, "ppl_after": ppl, "status": "ok"}
        for strategy, (generic, spec) in costs.items() for domain in ("arxiv", "freelaw")
    ])


def test_a_cost_axis_a_fifth_of_a_percent_wide_says_so() -> None:
    table = pd.DataFrame({"strategy": ["slm", "slm", "slm-pn", "slm-pn"],
                          "total": [1.5e12, 1.501e12, 1.502e12, 1.503e12],
                          "ppl_after": [30.0, 29.0, 28.0, 27.5]})
    fig = plots.plot_frontier(table, cost_col="total")
    check_truthful(fig)
    for axis in (fig.axes[0].xaxis, fig.axes[0].child_axes[0].xaxis):
        labels = visible_labels(axis)
        assert len(labels) >= 2 and "0" in labels, labels
        assert all(label[0] in "+-" for label in labels if label != "0"), labels
        assert re.fullmatch(r"\+\S+ \(0\.\d% range\)", axis.label.get_text().split("\n")[1])


def test_tick_labels_take_the_digits_that_tell_them_apart() -> None:
    assert plots._tick_labels([1e12, 2e12, 5e12]) == (["1e12", "2e12", "5e12"], "")
    assert plots._tick_labels([1.5e12, 1.55e12, 1.6e12]) == (["1.5e12", "1.55e12", "1.6e12"], "")
    labels, offset = plots._tick_labels([1.5e12, 1.501e12, 1.502e12, 1.503e12])
    assert labels == ["-2e9", "-1e9", "0", "+1e9"] and offset == "+1.502e12 (0.2% range)"


def test_identical_series_stay_visible_and_are_named() -> None:
    fig = plots.plot_total_cost(configs({"slm": (1e12, 1e10), "slm-pn": (1e12, 1e10)}))
    check_truthful(fig)
    ax = fig.axes[0]
    assert "slm = slm-pn" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["slm"].get_marker() != lines["slm-pn"].get_marker()
    assert lines["slm"].get_markevery() != lines["slm-pn"].get_markevery()
    # different values are not named
    apart = plots.plot_total_cost(configs({"slm": (1e12, 1e10), "slm-pn": (1e12, 2e10)}))
    assert apart.axes[0].get_title() == "8k domain tokens"


def test_no_crossover_from_a_cost_difference_within_the_noise() -> None:
    # Per-domain costs 0.1% apart: the exact totals cross at N = 1.9e9 / 2e6 = 950.
    df = configs({"slm": (1.0e12, 2.0e9), "slm-pn": (0.9981e12, 2.002e9)})
    assert frontier.winner_changes(df, 0.05, 10_000, cost_tolerance=0) == [
        (950, "slm-pn", "slm")]
    assert frontier.winner_changes(df, 0.05, 10_000) == []
    fig = plots.plot_total_cost(df, n_max=10_000, quality_tolerance=0.05)
    assert [t.get_text() for t in fig.axes[0].texts] == []
    assert "crossover" not in fig.axes[0].get_legend_handles_labels()[1]
    _, lines = report.total_cost_view(df)
    assert lines == ["8k domain tokens: the same strategy is cheapest for every N up to 10,000"]
    title = fig._suptitle.get_text().replace("\n", " ")
    assert f"{100 * frontier.COST_TOLERANCE:.0f}% apart" in title


def test_plot_and_report_name_the_same_crossover() -> None:
    df = configs({"slm": (1e12, 1e9), "slm-is": (0.0, 1.1e10)})
    fig = report.make_figure(df, "total-cost")
    check_truthful(fig)
    _, lines = report.total_cost_view(df)
    assert [t.get_text() for t in fig.axes[0].texts] == ["N=100: slm-is -> slm"]
    assert lines == ["8k domain tokens: at N=100 slm-is -> slm"]


def test_numbers_print_at_one_precision(sweep) -> None:
    text = eval_text({"perplexity": {"legal": 291.0, "biomedical": 234.3, "macro": 261.1}})
    assert re.findall(r"\d+\.\d+", text) == ["291.00", "234.30", "261.10"]
    view, _ = report.total_cost_view(sweep)
    costs = view["generic cost"].tolist() + view["total, N=7"].tolist()
    assert all(re.fullmatch(r"(\d\.\d\de[+-]\d\d \(\d\.\d\de[+-]\d\d A100-h\)|0 \(0 A100-h\))", c)
               for c in costs), costs
    assert all(re.fullmatch(r"\d+\.\d\d", p) for p in view["ppl"])
