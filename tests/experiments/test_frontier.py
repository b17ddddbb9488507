"""Frontier tables on small constructed results tables whose answers are known by hand."""
from __future__ import annotations

import doctest
import math
import json

import numpy as np
import pandas as pd
import pytest

from experiments import frontier
from planner.core.budgets import total_cost
from planner.core.errors import SpecplanError

DOMAINS = ("arxiv", "freelaw")


def run(strategy: str, domain: str = "arxiv", **fields) -> dict:
    """One results-table row with neutral defaults; ``fields`` override them."""
    row = {
        "run_id": f"{strategy}-{domain}-{len(fields)}",
        "strategy": strategy,
        "settings": json.dumps({"strategy": strategy}),
        "domain": domain,
        "domain_tokens": 8_000,
        "pretrain_budget_flops": 1e15,
        "spec_budget_flops": 1e13,
        "generic_flops": 1e15,
        "spec_flops": 1e13,
        "ppl_generic": 30.0,
        "ppl_before": 40.0,
        "ppl_after": 20.0,
        "status": "ok",
        "error": "",
    }
    row.update(fields)
    return row


def table(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_pareto_front_drops_dominated_keeps_ties_sorted_by_cost() -> None:
    df = pd.DataFrame(
        {
            "cost": [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 5.0, np.nan],
            "ppl_after": [30.0, 25.0, 26.0, 25.0, 20.0, 20.0, 18.0, 1.0],
        },
        index=list("abcdefgh"),
    )
    front = frontier.pareto_front(df, "cost")
    # c: same cost as b, worse; d: costlier than b, same ppl; f: costlier than e, same ppl;
    # h: no cost, so not comparable.
    assert list(front.index) == ["a", "b", "e", "g"]
    tied = pd.DataFrame({"cost": [1.0, 1.0, 2.0], "ppl_after": [10.0, 10.0, 10.0]})
    assert list(frontier.pareto_front(tied, "cost").index) == [0, 1]


def test_pareto_front_of_a_task_accuracy_keeps_the_most_accurate() -> None:
    df = pd.DataFrame({"cost": [1.0, 2.0, 3.0, 4.0], "task:qa": [0.4, 0.3, 0.7, 0.7]})
    # Higher is better: b is dearer and less accurate than a; d only ties c at a higher cost.
    assert frontier.higher_is_better("task:qa") and not frontier.higher_is_better("ppl_after")
    assert list(frontier.pareto_front(df, "cost", "task:qa").index) == [0, 2]


def test_config_table_carries_each_tasks_score_from_its_domain() -> None:
    rows = table(run("slm", domain="legal", ppl_after=20.0, **{"task:qa": 0.6}),
                 run("slm", domain="news", ppl_after=30.0, **{"task:qa": np.nan}))
    (config,) = frontier.config_table(rows).to_dict("records")
    assert config["task:qa"] == pytest.approx(0.6)
    assert config["ppl_after"] == pytest.approx(math.sqrt(20.0 * 30.0))


def test_pareto_front_per_group() -> None:
    df = pd.DataFrame(
        {
            "strategy": ["slm", "slm", "slm-is", "slm-is"],
            "cost": [1.0, 2.0, 1.0, 2.0],
            "ppl_after": [10.0, 12.0, 12.0, 9.0],
        }
    )
    front = frontier.pareto_front(df, "cost", by="strategy")
    assert list(front.index) == [0, 2, 3]


def test_interpolate_at_exact_on_linear_in_log_and_nan_outside() -> None:
    budgets = np.array([1e15, 1e16, 1e17])
    df = pd.DataFrame(
        {
            "strategy": ["slm"] * 3 + ["slm-pn"] * 2,
            "pretrain_budget_flops": [*budgets, 1e16, 1e17],
            "ppl_after": [*(30.0 - 2.0 * np.log10(budgets)), 10.0, 8.0],
        }
    )
    targets = [3e15, 1e16, 5e16, 1e17, 1e18]
    out = frontier.interpolate_at(df, "pretrain_budget_flops", "ppl_after", targets)
    slm = out[out.strategy == "slm"]["ppl_after"].to_numpy()
    expected = 30.0 - 2.0 * np.log10(targets)
    np.testing.assert_allclose(slm[:4], expected[:4])
    assert np.isnan(slm[4])
    pn = out[out.strategy == "slm-pn"]["ppl_after"].to_numpy()
    assert np.isnan(pn[0]) and pn[1] == pytest.approx(10.0) and pn[3] == pytest.approx(8.0)
    with pytest.raises(SpecplanError, match="positive"):
        frontier.interpolate_at(df, "pretrain_budget_flops", "ppl_after", [0.0])


def test_config_table_macro_averages_and_drops_incomplete_configs() -> None:
    df = table(
        run("slm", "arxiv", ppl_after=10.0, spec_flops=1.0),
        run("slm", "freelaw", ppl_after=40.0, spec_flops=3.0),
        run("slm-pn", "arxiv", ppl_after=5.0),  # freelaw missing: not comparable
        run("slm-pn", "freelaw", ppl_after=np.nan, status="failed"),
    )
    configs = frontier.config_table(df)
    assert list(configs.strategy) == ["slm"]
    assert configs.ppl_after.iloc[0] == pytest.approx(20.0)
    assert configs.spec_flops.iloc[0] == pytest.approx(2.0)


def test_rows_without_a_domain_size_are_refused_not_dropped() -> None:
    df = table(run("slm", "arxiv"), run("slm", "freelaw", domain_tokens=np.nan))
    with pytest.raises(SpecplanError, match="1 usable row.* no domain_tokens"):
        frontier.config_table(df)
    # a failed run without one is no analysis's business
    assert len(frontier.usable(table(run("slm"), run("slm-pn", domain_tokens=np.nan,
                                                      status="failed")))) == 1


def test_reference_table_interpolates_macro_perplexity_per_domain_size() -> None:
    rows = []
    for budget, ppls in ((1e15, (16.0, 64.0)), (1e17, (4.0, 16.0))):
        for domain, ppl in zip(DOMAINS, ppls):
            for size, factor in ((8_000, 1.0), (64_000, 0.5)):
                rows.append(
                    run(
                        "slm", domain, pretrain_budget_flops=budget, domain_tokens=size,
                        ppl_after=ppl * factor, ppl_before=2 * ppl, ppl_generic=50.0,
                    )
                )
    for domain in DOMAINS:
        rows.append(
            run("slm-is", domain, pretrain_budget_flops=0.0, generic_flops=0.0, ppl_after=7.0,
                ppl_generic=np.nan)
        )
    ref = frontier.reference_table(table(*rows), [1e16, 1e18])
    assert list(ref.columns) == [
        "pretrain_budget_flops", "strategy", "ppl_generic", "ppl_before", "ft_8k", "ft_64k",
    ]
    slm = ref[ref.strategy == "slm"].set_index("pretrain_budget_flops")
    # Macro at 1e15 = 32, at 1e17 = 8; halfway in log budget the log-ppl is halfway: 16.
    assert slm.loc[1e16, "ft_8k"] == pytest.approx(16.0)
    assert slm.loc[1e16, "ft_64k"] == pytest.approx(8.0)
    assert slm.loc[1e16, "ppl_before"] == pytest.approx(32.0)
    assert slm.loc[1e16, "ppl_generic"] == pytest.approx(50.0)
    assert slm.loc[1e18].drop("strategy").isna().all()
    # No generic phase: flat at every budget, and absent (NaN) for sizes it was not run at.
    slm_is = ref[ref.strategy == "slm-is"]
    assert list(slm_is["ft_8k"]) == pytest.approx([7.0, 7.0])
    assert slm_is["ft_64k"].isna().all()


def test_total_cost_and_crossover() -> None:
    assert total_cost(100.0, 10.0, 5) == 150.0
    np.testing.assert_allclose(total_cost(0.0, 30.0, np.array([1, 5])), [30.0, 150.0])
    assert frontier.crossover_n((100.0, 10.0), (0.0, 30.0)) == pytest.approx(5.0)
    assert frontier.crossover_n((0.0, 30.0), (100.0, 10.0)) == pytest.approx(5.0)
    assert frontier.crossover_n((100.0, 10.0), (50.0, 10.0)) is None  # parallel
    assert frontier.crossover_n((10.0, 10.0), (0.0, 30.0)) is None  # crosses at N = 0.5
    with pytest.raises(SpecplanError, match="negative"):
        total_cost(1.0, 1.0, -1)


def _two_strategy_table() -> pd.DataFrame:
    rows = []
    for domain in DOMAINS:
        rows.append(run("slm-pn", domain, generic_flops=100.0, spec_flops=10.0, ppl_after=20.0))
        rows.append(run("slm-is", domain, pretrain_budget_flops=0.0, generic_flops=0.0,
                        spec_budget_flops=1e14, spec_flops=30.0, ppl_after=19.9))
        rows.append(run("slm", domain, generic_flops=50.0, spec_flops=1.0, ppl_after=30.0))
    return table(*rows)


def test_total_cost_table_prices_best_config_per_strategy() -> None:
    out = frontier.total_cost_table(_two_strategy_table(), [1, 5, 50])
    assert list(out.strategy) == ["slm", "slm-is", "slm-pn"]
    pn = out.set_index("strategy").loc["slm-pn"]
    assert (pn.total_n1, pn.total_n5, pn.total_n50) == (110.0, 150.0, 600.0)


def test_winner_changes_at_crossover_within_tolerance() -> None:
    df = _two_strategy_table()
    # slm (ppl 30) is far outside 1%; slm-is is cheaper up to N = 5 (tie goes to the
    # flatter slm-pn), so the winner changes at N = 5.
    assert frontier.winner_changes(df, 0.01, 100) == [(5, "slm-is", "slm-pn")]
    assert frontier.winner_changes(df, 0.01, 4) == []
    # With a tight tolerance only slm-is qualifies: it wins throughout.
    assert frontier.winner_changes(df, 0.0, 100) == []
    mixed = pd.concat([df, df.assign(domain_tokens=64_000)])
    with pytest.raises(SpecplanError, match="mixes domain sizes"):
        frontier.winner_changes(mixed, 0.01, 10)


def test_winner_map_budgets_are_ceilings() -> None:
    rows = []
    for domain in DOMAINS:
        for pre, ppl in ((1e15, 22.0), (1e16, 18.0)):
            rows.append(run("slm-pn", domain, pretrain_budget_flops=pre, spec_budget_flops=1e13,
                            ppl_after=ppl))
            rows.append(run("slm", domain, pretrain_budget_flops=pre, spec_budget_flops=1e13,
                            ppl_after=ppl + 1.0))
        rows.append(run("slm-is", domain, pretrain_budget_flops=0.0, spec_budget_flops=1e16,
                        ppl_after=15.0))
    wmap = frontier.winner_map(table(*rows))
    cells = wmap.set_index(["pretrain_budget_flops", "spec_budget_flops"])["strategy"]
    assert len(wmap) == 3 * 2
    assert pd.isna(cells[(0.0, 1e13)])  # nothing fits without pretraining and with 1e13 spec
    assert cells[(1e15, 1e13)] == "slm-pn"
    assert cells[(1e16, 1e13)] == "slm-pn"
    assert cells[(0.0, 1e16)] == "slm-is"
    assert cells[(1e16, 1e16)] == "slm-is"


def test_interpolate_at_without_groups() -> None:
    df = pd.DataFrame({"budget": [1e2, 1e4], "ppl_after": [20.0, 10.0]})
    out = frontier.interpolate_at(df, "budget", "ppl_after", [1e3], by=None)
    assert list(out.columns) == ["budget", "ppl_after"]
    assert out.ppl_after.iloc[0] == pytest.approx(15.0)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(frontier).failed == 0
