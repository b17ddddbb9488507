"""The results table: every writer gives the same columns, every reader gets the same dtypes."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from planner.core.errors import SpecplanError
from planner.run import results
from planner.run.runner import run_strategy
from strategies import get_strategy


@pytest.fixture(scope="module")
def run_rows(tiny_inputs, tmp_path_factory):
    from tests.conftest import make_workspace

    ws = make_workspace(tiny_inputs, tmp_path_factory.mktemp("cache"), pretrain_flops=2e9,
                        spec_flops=5e8)
    domains = {"law": tiny_inputs.domains["law"]}
    report = run_strategy("slm-nopt", {}, ws, domains)
    return report.rows(ws.budgets), ws, domains


def test_failed_rows_have_the_columns_of_a_finished_run(run_rows):
    rows, ws, domains = run_rows
    strategy = get_strategy("slm-nopt")
    run = type("Run", (), {"strategy": "slm-nopt", "settings": "{}", "domain_tokens": 512})
    failed = results.failed_rows(run, strategy, strategy.settings(), ws, ws.budgets, domains,
                                 "failed", "RuntimeError: boom")
    assert set(failed[0]) - {"notes"} == set(rows[0])  # notes: a sweep column
    assert math.isnan(failed[0]["domain_train_tokens"]) and failed[0]["status"] == "failed"


def test_csv_and_parquet_hold_the_same_table(run_rows, tmp_path):
    rows, _, _ = run_rows
    frame = pd.DataFrame(rows * 2)
    results.write_results(tmp_path, frame)
    csv = results.read_results(tmp_path / results.RESULTS_CSV)
    parquet = results.read_results(tmp_path)  # a folder reads its parquet first
    assert list(csv.columns) == list(parquet.columns) == list(frame.columns)
    for column in ("ppl_after", "generic_flops", "domain_tokens", "domain_train_tokens"):
        assert csv[column].tolist() == pytest.approx(parquet[column].tolist())
    assert str(parquet["domain_tokens"].dtype) == "Int64"
    # A hex run id that happens to read as a number (37021e077022: inf) stays text.
    frame["run_id"] = "37021e077022"
    results.write_results(tmp_path, frame)
    assert set(results.read_results(tmp_path / results.RESULTS_CSV)["run_id"]) == {
        "37021e077022"}


def test_an_empty_or_missing_table_is_refused_in_one_line(tmp_path):
    (tmp_path / "results.csv").write_text("")
    with pytest.raises(SpecplanError, match="has no rows"):
        results.read_results(tmp_path)
    with pytest.raises(SpecplanError, match="no such results file"):
        results.read_results(tmp_path / "missing.csv")
    assert results.load_rows(tmp_path / "nowhere").empty


def test_strategies_sort_in_the_cli_order_unknown_last():
    assert results.sort_strategies(["zz", "slm-pn", "slm"]) == ["slm", "slm-pn", "zz"]
