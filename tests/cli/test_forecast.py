"""The ``specplan forecast`` command: refusals, calibration's planning budget, JSON and text,
back-tests."""
from __future__ import annotations

import json

import pytest

from tests.conftest import specplan

REFERENCE_ARGS = ("forecast", "--results", "reference", "--spec-budget", "1h@a100",
                  "--inference-budget", "126M", "--domain-tokens", "8M", "--domains-count", "20")


def test_cli_refusal_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    code, out, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path), *REFERENCE_ARGS,
                              "--pretrain-budget", "10000h@a100")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "beyond --max-extrapolation 10" in err


def test_cli_calibrate_without_a_planning_budget_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path), "forecast",
                            "--calibrate", "--demo")
    assert code == 2 and err.strip() == ("error: --calibrate needs --planning-budget (FLOPs or "
                                         "device time, e.g. 20m@cpu)")


def test_cli_forecast_prints_json_and_text(monkeypatch, capsys, tmp_path):
    args = ("--cache", str(tmp_path), *REFERENCE_ARGS, "--pretrain-budget", "400h@a100",
            "--strategies", "slm,slm-pn,slm-is", "--n-boot", "4")
    code, out, _ = specplan(monkeypatch, capsys, "--json", *args)
    data = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert code == 0 and data["recommendation"] == "slm-pn" and data["domains_count"] == 20
    assert len(data["strategies"][0]["curve"]["ppl"]) == 24  # the law along the budget
    code, out, err = specplan(monkeypatch, capsys, *args, "--plot", str(tmp_path / "fc"))
    assert "recommendation: slm-pn" in out and "total A100-h" in out
    assert "slm-pn: pretrain 0.667x" in out  # 400 of the 600 GPUh measured
    assert "forecast plot:" in err and (tmp_path / "fc.png").stat().st_size > 0


def test_cli_backtest_on_the_reference(monkeypatch, capsys, tmp_path):
    code, out, _ = specplan(monkeypatch, capsys, "--cache", str(tmp_path), "forecast",
                            "--backtest", "reference", "--strategies", "slm,slm-pn",
                            "--n-boot", "4")
    assert code == 0 and "MAPE" in out and "best strategy right in 3/3 regime(s)" in out
