"""Figures: series, labels with units and files written; never pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from experiments import plots
from planner.core.errors import SpecplanError
from planner.forecast import reference as ref


def results() -> pd.DataFrame:
    """Two domain sizes x two domains; slm and slm-pn at two pretraining budgets, slm-is
    without pretraining, and the llm over the inference budget."""
    rows = []
    for size in (8_000, 64_000):
        for domain in ("arxiv", "freelaw"):
            def add(strategy: str, pre: float, spec: float, ppl: float, **extra) -> None:
                rows.append({
                    "run_id": f"{strategy}-{pre}-{spec}-{size}-{domain}", "strategy": strategy,
                    "settings": json.dumps({"s": strategy}), "domain": domain,
                    "domain_tokens": size, "pretrain_budget_flops": pre,
                    "spec_budget_flops": spec, "generic_flops": pre, "spec_flops": spec,
                    "ppl_after": ppl * (0.8 if size == 64_000 else 1.0), "status": "ok", **extra,
                })
            for pre in (1e17, 1e18):
                add("slm", pre, 1e15, 30.0 - np.log10(pre))
                add("slm-pn", 2 * pre, 1e15, 28.0 - np.log10(pre))
                add("llm", 5 * pre, 5e15, 25.0 - np.log10(pre), status="over-inference-budget")
            add("slm-is", 0.0, 5e17, 11.0)
            add("slm-is", 0.0, 5e16, 13.0)
    return pd.DataFrame(rows)


def labelled(ax: Axes) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def secondary_labels(ax: Axes) -> list[str]:
    return [label for child in ax.child_axes for label in (child.get_xlabel(), child.get_ylabel())
            if label]


def written(fig: Figure, tmp_path: Path) -> None:
    paths = plots.save_figure(fig, tmp_path / "out" / "figure.v1", dpi=40)
    assert [p.name for p in paths] == ["figure.v1.png", "figure.v1.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["figure.v1.png", "figure.v1.svg"]


def test_ppl_vs_pretrain_one_series_per_strategy_per_panel() -> None:
    fig = plots.plot_ppl_vs_pretrain(results())
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["8k domain tokens", "64k domain tokens"]
    for ax in axes:
        assert labelled(ax) == ["slm", "llm", "slm-is", "slm-pn"]
        assert ax.get_xscale() == "log" and "FLOPs" in ax.get_xlabel()
        assert secondary_labels(ax) == ["A100-hours at 40% MFU"]
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert to_hex(lines["slm-is"].get_color()) == plots.STRATEGY_COLORS["slm-is"]
    assert lines["slm-is"].get_linestyle() == "--"  # no pretraining: a flat reference line


def test_ppl_vs_spec_and_frontier_mark_front_and_choice(tmp_path: Path) -> None:
    df = results()
    fig = plots.plot_ppl_vs_spec(df)
    ax = fig.axes[0]
    assert labelled(ax) == ["slm", "llm", "slm-is", "slm-pn"]
    assert "FLOPs" in ax.get_xlabel() and ax.get_xscale() == "log"

    chosen = df.index[(df.strategy == "slm-pn") & (df.domain_tokens == 8_000)][0]
    fig = plots.plot_frontier(df, chosen=chosen, flops_per_hour=1e15, hours_label="GPU-hours")
    ax = fig.axes[0]
    assert labelled(ax) == ["slm", "llm", "slm-is", "slm-pn", "Pareto front", "chosen"]
    assert [t.get_text() for t in ax.texts] == ["chosen: slm-pn"]
    assert secondary_labels(ax) == ["GPU-hours"]
    written(fig, tmp_path)
    with pytest.raises(SpecplanError, match="chosen"):
        plots.plot_frontier(df, chosen="nope")


def test_total_cost_is_log_log_with_crossovers() -> None:
    # Every config good enough: slm-is's cheapest pays 5e16 per domain; slm (1e17 once + 1e15
    # each) is cheaper from N = 3.
    fig = plots.plot_total_cost(results(), n_max=1000)
    ax = fig.axes[0]
    assert labelled(ax) == ["slm", "slm-is", "slm-pn", "crossover"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "FLOPs" in ax.get_ylabel() and secondary_labels(ax) == ["A100-hours at 40% MFU"]
    assert [t.get_text() for t in ax.texts] == ["N=3: slm-is -> slm"]  # where the cheapest changes
    # One legend for the figure, beside the panels, naming what the panels draw.
    assert [t.get_text() for t in fig.legends[0].get_texts()] == labelled(ax)


def test_cost_axes_get_few_short_ticks_at_any_range() -> None:
    locator = plots._ReadableLogLocator()
    assert locator.tick_values(1.1e-6, 4.7e-6) == pytest.approx([1.5e-6, 2e-6, 3e-6])
    assert locator.tick_values(3e11, 2.5e12) == pytest.approx([5e11, 1e12, 2e12])
    assert len(locator.tick_values(1e3, 1e30)) <= 8
    assert [plots._short_number(v) for v in (2e12, 2.5e-6, 0.2, 50.0)] == \
        ["2e12", "2.5e-6", "0.2", "50"]


def test_winner_map_colours_cells_by_strategy(tmp_path: Path) -> None:
    fig = plots.plot_winner_map(results())
    # slm wins where only it fits (1e17 pretraining), slm-pn beyond, slm-is with a large
    # specialization budget; the llm is over the inference budget and never competes.
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["slm", "slm-is", "slm-pn"]
    ax = fig.axes[0]
    assert "FLOPs" in ax.get_xlabel() and "FLOPs" in ax.get_ylabel()
    assert sorted(secondary_labels(ax)) == ["A100-hours at 40% MFU"] * 2
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 5, 3)  # 3 spec budgets x 5 pretraining budgets (incl. 0)
    written(fig, tmp_path)


@pytest.mark.parametrize(
    ("plot", "strategy"),
    [(plot, "slm") for plot in (plots.plot_ppl_vs_pretrain, plots.plot_ppl_vs_spec,
                                plots.plot_frontier, plots.plot_total_cost, plots.plot_winner_map)]
    # No pretraining: only a flat line, and a winner-map column at a zero budget.
    + [(plots.plot_ppl_vs_pretrain, "slm-is"), (plots.plot_winner_map, "slm-is")],
)
def test_every_plot_draws_a_single_row(plot, strategy: str) -> None:
    df = results()
    fig = plot(df[df.strategy == strategy].head(1))
    fig.draw_without_rendering()  # drawing is where layout and scale errors surface


def test_unknown_strategy_gets_a_stable_spare_colour() -> None:
    colour = plots.strategy_color("slm-new")
    assert colour == plots.strategy_color("slm-new")
    assert colour not in plots.STRATEGY_COLORS.values()


def test_forecast_plot_draws_each_law_its_band_the_target_and_the_choice(tmp_path: Path) -> None:
    from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
    from planner.forecast import forecast as fc

    reference = ref.load_reference_results()
    budgets = Budgets(pretrain_flops=parse_budget("400h@a100"),
                      spec_flops=parse_budget("1h@a100"),
                      inference=parse_inference_budget("126M"), domain_tokens=8e6,
                      domains_count=20)
    result = fc.forecast(reference, budgets, bounds=ref.reference_bounds(reference), n_boot=8)
    fig = plots.plot_forecast(result, reference)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"slm", "slm-mix", "slm-pn", "llm (over inference budget)"} <= set(lines)
    assert lines["llm (over inference budget)"].get_linestyle() == "--"
    # the curve passes through the forecast at the asked budget
    slm = result.get("slm")
    x, y = (np.asarray(v, float) for v in lines["slm"].get_data())
    assert np.interp(np.log(result.pretrain_flops), np.log(x), y) == pytest.approx(slm.ppl,
                                                                                   rel=1e-3)
    assert len(ax.collections) >= 4 + 1  # one band per strategy, dots, the star
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("recommended: slm-mix") for t in legend)
    assert any(t.startswith("asked: 1.8e20") for t in legend)
    assert "FLOPs" in ax.get_xlabel() and secondary_labels(ax) == ["A100-hours"]
    written(fig, tmp_path)
    result.strategies = [s for s in result.strategies if s.status != "forecast"]
    with pytest.raises(SpecplanError, match="no strategy has a forecast curve"):
        plots.plot_forecast(result)
