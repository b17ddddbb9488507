import pytest

from planner.core.budgets import parse_budget, parse_inference_budget, total_cost
from planner.core.cost import Ledger, hardware_profile, record_utilization
from planner.core.errors import SpecplanError


def test_parse_budget_flops_and_device_hours(tmp_path):
    assert parse_budget("3e15") == 3e15
    assert parse_budget("3e15flops") == 3e15
    assert parse_budget("2h@a100") == pytest.approx(2 * 3600 * 312e12 * 0.4)
    assert parse_budget("0.5h@h100", utilization=0.5) == pytest.approx(0.5 * 3600 * 989e12 * 0.5)
    assert parse_budget("30m@a100") == pytest.approx(parse_budget("0.5h@a100"))


def test_cpu_budget_uses_measured_peak_cached(tmp_path):
    flops = parse_budget("10m@cpu", cache_dir=tmp_path)
    profile = hardware_profile("cpu", cache_dir=tmp_path)
    assert flops == pytest.approx(600 * profile.peak_flops * profile.utilization)
    assert (tmp_path / "hardware.json").exists()
    assert parse_budget("10m@cpu", cache_dir=tmp_path) == flops  # cached peak, same answer


def test_measured_utilization_is_used(tmp_path):
    record_utilization("a100", 0.25 * 312e12, tmp_path)
    assert parse_budget("1h@a100", cache_dir=tmp_path) == pytest.approx(3600 * 312e12 * 0.25)


@pytest.mark.parametrize("text, fragment", [
    ("2h@tpu", "unknown device"), ("2y@a100", "unknown time unit"), ("lots", "cannot read"),
])
def test_bad_budgets_name_the_problem(text, fragment):
    with pytest.raises(SpecplanError, match=fragment):
        parse_budget(text, what="--pretrain-budget")


def test_inference_budget_params_or_flops():
    assert parse_inference_budget("5M").params == 5_000_000
    assert parse_inference_budget("126Mparams").params == 126_000_000
    assert parse_inference_budget("2e7").flops_per_token == 2e7
    cap = parse_inference_budget("5M")
    assert cap.admits(flops_per_token=1e12, params=4_000_000)
    assert not cap.admits(flops_per_token=1.0, params=6_000_000)


def test_ledger_totals_per_phase_and_round_trip():
    ledger = Ledger()
    ledger.charge("generic", label="pretrain", tokens=100, flops=1e9, seconds=2.0, device="cpu")
    ledger.charge("specialization", label="ft", tokens=10, flops=1e8, seconds=0.5, device="cpu")
    ledger.charge("specialization", label="ft", tokens=10, flops=1e8, seconds=0.5, device="cpu")
    totals = ledger.totals()
    assert totals["generic"]["flops"] == 1e9
    assert totals["specialization"] == {"tokens": 20, "flops": 2e8, "seconds": 1.0}
    assert Ledger.from_dict(ledger.to_dict()).totals() == totals
    with pytest.raises(ValueError):
        ledger.charge("training", label="x", tokens=1, flops=1, seconds=1, device="cpu")


def test_total_cost_is_generic_plus_n_specializations():
    assert total_cost(100.0, 10.0, 5) == 150.0
