"""Forecasts: the reference study's guidance, back-tests and forecasts on known laws, refusals,
calibration on a tiny corpus, and the ``specplan forecast`` command."""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from experiments import backtest as bt
from planner.core.budgets import (
    Budgets,
    InferenceCap,
    parse_budget,
    parse_inference_budget,
)
from planner.core.errors import SpecplanError
from planner.forecast import calibrate as cal
from planner.forecast import forecast as fc
from planner.forecast import laws
from planner.forecast import reference as ref
from planner.run.results import read_results

N_BOOT = 6  # intervals are not asserted here; the recommendations and errors are


def budgets(pretrain: str, spec: str, inference: str | None, domain_tokens: float,
            domains: int = 1) -> Budgets:
    return Budgets(parse_budget(pretrain), parse_budget(spec), parse_inference_budget(inference),
                   int(domain_tokens), domains)


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, list[ref.PublishedBound]]:
    df = ref.load_reference_results()
    return df, ref.reference_bounds(df)


# -- the reference table ------------------------------------------------------------------------
def test_reference_table_holds_the_published_numbers_and_their_conversion(reference):
    df, _ = reference
    assert len(df) == 54 and set(df["domain"]) == {"pile-average"}
    assert "slm-is" not in set(df["strategy"])  # not published: bounds only
    assert df["source"].str.len().gt(0).all()
    row = df[(df.strategy == "slm") & (df.generic_gpuh == 400) & (df.domain_tokens == 8e6)]
    assert row["ppl_after"].item() == 14.80 and row["ppl_before"].item() == 36.61
    assert row["generic_tokens"].item() == pytest.approx(400 / 2.2 * 1e9)  # Table 2 throughput
    assert row["spec_tokens"].item() == pytest.approx(0.07 / 2.2 * 1e9)  # Table 3 cost
    assert row["generic_flops"].item() == pytest.approx(parse_budget("400h@a100"))
    pn = df[(df.strategy == "slm-pn") & (df.generic_gpuh == 400)].iloc[0]
    assert pn["generic_tokens"] == pytest.approx(400 / 3.6 * 1e9)
    assert (df.loc[df.strategy == "llm", "status"] == "over-inference-budget").all()
    assert df.loc[df.strategy == "slm-nopt", "spec_tokens"].isna().all()  # cost not published
    # The CSV's derived columns are exactly what the loader recomputes from the GPU-hours.
    raw = pd.read_csv(ref.REFERENCE_CSV)
    for column in ("generic_tokens", "spec_tokens", "generic_flops", "spec_flops",
                   "inference_flops_per_token", "pretrain_budget_flops"):
        np.testing.assert_allclose(raw[column], df[column], rtol=1e-5)


def test_reference_bounds_encode_what_the_notes_state_about_importance_sampling(reference):
    _, bounds = reference
    by_size = {b.domain_tokens: b for b in bounds}
    assert by_size[1e6].ppl_at_most == 14.50  # beats the LLM at 600 GPUh (Table 8)
    assert by_size[8e6].ppl_at_most == 14.21  # best in-budget row: slm-mix at 600 GPUh
    assert by_size[64e6].ppl_at_most == 11.73
    assert all(b.spec_flops == pytest.approx(parse_budget("130h@a100")) and b.generic_flops == 0
               for b in bounds)


# -- the study's guidance (notes §4.6) ----------------------------------------------------------
def test_large_model_when_the_inference_budget_allows_it(reference):
    df, bounds = reference
    result = fc.forecast(df, budgets("400h@a100", "1h@a100", "1B", 8e6), bounds=bounds,
                         n_boot=N_BOOT)
    assert result.recommendation == "llm"
    small = fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", 8e6), bounds=bounds,
                        strategies=["slm", "llm"], n_boot=N_BOOT)
    assert small.get("llm").within_inference is False and small.recommendation == "slm"


def test_importance_sampling_for_one_domain_with_a_large_specialization_budget(reference):
    df, bounds = reference
    result = fc.forecast(df, budgets("400h@a100", "150h@a100", "126M", 1e6), bounds=bounds,
                         n_boot=N_BOOT)
    assert result.recommendation == "slm-is"
    item = result.get("slm-is")
    assert item.status == "bound" and item.ppl_at_most == 14.50 and item.ppl is None
    assert item.total_hours == pytest.approx(130)  # Table 3, paid per domain
    assert "published bound" in result.reason


def test_projected_network_or_mixture_for_many_domains(reference):
    df, bounds = reference
    small = ["slm", "slm-is", "slm-mix", "slm-pn"]  # the in-budget ones: llm cannot be chosen
    for size in (1e6, 8e6):
        result = fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", size, domains=50),
                             bounds=bounds, strategies=small, n_boot=N_BOOT)
        assert result.recommendation in ("slm-pn", "slm-mix")
        assert result.get("slm-is").status == "infeasible"  # 1 A100-h cannot pay its 130
        pn = result.get(result.recommendation)
        assert pn.total_flops == pytest.approx(pn.generic_flops + 50 * pn.spec_flops)
        assert pn.extrapolation["pretrain"] < 1  # 400 GPUh is inside the study's runs


# -- back-test and forecast on a known law ------------------------------------------------------
DOMAINS = {"arxiv": 1.8, "freelaw": 2.2}
# (B, beta, C, gamma) per strategy, amplitudes quoted at laws.REFERENCE_SIZES. slm wins at 1M
# tokens up to 3.2e19 FLOPs, slm-mix from 1e20: the back-test must extrapolate the flip.
KNOWN = {"slm": (0.30, 0.25, 0.50, 0.30), "slm-mix": (0.50, 0.50, 0.50, 0.30),
         "slm-pn": (0.35, 0.35, 0.45, 0.45)}
PRICE = {"slm": 6.0, "slm-mix": 6.0, "slm-pn": 9.6}  # FLOPs per token per parameter


def known_table(budgets_flops=tuple(np.geomspace(1e18, 1e20, 5)), noise=0.003) -> pd.DataFrame:
    """Runs of three strategies drawn from KNOWN with 0.3% noise on the loss."""
    rng = np.random.default_rng(0)
    rows = []
    for strategy, (b, beta, c, gamma) in KNOWN.items():
        for flops in budgets_flops:
            for unique in (1e6, 8e6, 64e6):
                generic = flops / (PRICE[strategy] * 1e8)
                d_dom = laws._effective_domain_tokens(np.array(3 * unique), np.array(unique))
                for domain, e in DOMAINS.items():
                    loss = e + b * (generic / 1e10) ** -beta + c * (d_dom / 1e7) ** -gamma
                    rows.append({
                        "strategy": strategy, "settings": "{}", "domain": domain,
                        "domain_tokens": unique, "pretrain_budget_flops": flops,
                        "spec_budget_flops": 3 * unique * 6e8, "params_inference": 1e8,
                        "inference_flops_per_token": 2e8, "generic_tokens": generic,
                        "spec_tokens": 3 * unique, "generic_flops": flops,
                        "spec_flops": 3 * unique * 6e8, "status": "ok",
                        "ppl_after": float(np.exp(loss * np.exp(rng.normal(0, noise)))),
                    })
    return pd.DataFrame(rows)


def test_backtest_on_a_known_law_ranks_strategies_right_with_small_error():
    table = known_table()
    result = bt.backtest(table, n_boot=N_BOOT)
    assert result.skipped == {} and len(result.configs) == 9
    assert result.mape < 1.0 and result.mae < 0.2
    assert result.regimes["winner_right"].all() and result.regimes["ranking_right"].all()
    at_1m = result.regimes.set_index("domain_tokens").loc[1e6]
    assert at_1m["actual_order"].startswith("slm-mix")
    # The winner at the largest measured budget was another: the law, not the last run, got it.
    fitted = table[(table.domain_tokens == 1e6) & np.isclose(table.pretrain_budget_flops, 10**19.5)]
    assert fitted.groupby("strategy")["ppl_after"].mean().idxmin() == "slm"


def test_forecast_finds_the_compute_optimal_size_of_a_known_law():
    a, alpha, b, beta = 0.35, 0.34, 0.45, 0.28
    rows = []
    for params in (2e7, 5e7, 1.25e8, 3e8):
        for flops in np.geomspace(1e17, 1e19, 4):
            generic = flops / (6 * params)
            for domain, e in DOMAINS.items():
                loss = e + a * (params / 1e8) ** -alpha + b * (generic / 1e10) ** -beta
                rows.append({"strategy": "slm", "domain": domain, "domain_tokens": 1e6,
                             "params_inference": params, "generic_tokens": generic,
                             "spec_tokens": 3e6, "generic_flops": flops,
                             "spec_flops": 3e6 * 6 * params, "ppl_after": float(np.exp(loss))})
    table = pd.DataFrame(rows)

    def truth(params, flops=3e19):
        mean_e = np.mean(list(DOMAINS.values()))
        return np.exp(mean_e + a * (params / 1e8) ** -alpha
                      + b * (flops / (6 * params) / 1e10) ** -beta)

    target = Budgets(3e19, 1e20, InferenceCap(), 1_000_000)
    item = fc.forecast(table, target, n_boot=N_BOOT).get("slm")
    best = min(truth(n) for n in np.geomspace(1e7, 1e10, 2000))
    assert item.ppl == pytest.approx(truth(item.params_inference), rel=0.01)
    assert truth(item.params_inference) == pytest.approx(best, rel=0.005)
    assert item.extrapolation["pretrain"] == pytest.approx(3.0)
    assert item.spec_tokens == pytest.approx(3e6)  # the most epochs any run fine-tuned
    capped = fc.forecast(table, replace_cap(target, 5e7), n_boot=N_BOOT).get("slm")
    assert capped.params_inference <= 5e7 and capped.within_inference


def replace_cap(target: Budgets, params: float) -> Budgets:
    return Budgets(target.pretrain_flops, target.spec_flops, InferenceCap(params=int(params)),
                   target.domain_tokens, target.domains_count)


# -- refusals and bad input ---------------------------------------------------------------------
def test_forecast_refuses_beyond_the_extrapolation_limit_unless_raised(reference):
    df, bounds = reference
    far = budgets("10000h@a100", "1h@a100", "126M", 8e6)
    with pytest.raises(SpecplanError, match=r"beyond --max-extrapolation 10: slm pretrain .* "
                                            r"is 18.9x the largest measured"):
        fc.forecast(df, far, bounds=bounds)
    result = fc.forecast(df, far, strategies=["slm"], max_extrapolation=20, n_boot=N_BOOT)
    assert result.get("slm").extrapolation["pretrain"] == pytest.approx(10000 / 530)
    with pytest.raises(SpecplanError, match="domain_tokens 1e\\+09 is 15.6x"):
        fc.forecast(df, budgets("400h@a100", "1h@a100", "126M", 1e9), bounds=bounds)


def test_bad_input_is_one_clear_error(reference, tmp_path):
    df, _ = reference
    with pytest.raises(SpecplanError, match="no such results file"):
        read_results(tmp_path / "missing.csv")
    with pytest.raises(SpecplanError, match="lacks column"):
        fc.forecast(df.drop(columns="spec_flops"), budgets("1h@a100", "1h@a100", None, 8e6))
    with pytest.raises(SpecplanError, match="no runs of \\['gpt'\\]"):
        fc.forecast(df, budgets("1h@a100", "1h@a100", None, 8e6), strategies=["gpt"])
    with pytest.raises(SpecplanError, match="give --domain-tokens"):
        fc.forecast(df, Budgets(1e20, 1e18))
    with pytest.raises(SpecplanError, match="holdout"):
        bt.backtest(df, holdout="random")


# -- calibration ---------------------------------------------------------------------------------
def test_calibrate_runs_a_cheap_ladder_within_the_planning_budget(tiny_inputs, tmp_path):
    from planner.data.inputs import Inputs

    inputs = Inputs(tiny_inputs.generic, {d: tiny_inputs.domains[d] for d in ("law", "bio")},
                    tiny_inputs.tokenizer)
    unique = min(d.train.tokens for d in inputs.domains.values())
    target = Budgets(4e11, 5e9, InferenceCap(params=200_000), unique)
    path = tmp_path / "calibration.csv"
    result = cal.calibrate(inputs, target, planning_flops=1.2e11, results_path=path,
                          cache_dir=tmp_path / "cache", strategies=["slm"], batch_size=8,
                          device="cpu", n_boot=N_BOOT)
    ran = [r for r in result.runs if r.status == "ok"]
    assert len(ran) >= 3 and result.spent_flops <= 1.2e11
    # The anchor comes first: the cheapest rung within 10x of the target (4e11 / 2**3).
    assert ran[0].pretrain_flops == 5e10
    assert all(r.size == "tiny" for r in ran)  # the only ladder size within 200k parameters
    budgets_run = sorted(r.pretrain_flops for r in ran)
    assert budgets_run[0] < budgets_run[-1] < 4e11  # a geometric ladder below the target
    table = pd.read_csv(path)
    assert len(table) == 2 * len(ran) and set(table["domain"]) == {"law", "bio"}
    item = result.forecast.get("slm")
    assert item.status == "forecast" and item.extrapolation["pretrain"] <= 10
    assert result.forecast.recommendation == "slm" and result.skipped == {}
    with pytest.raises(SpecplanError, match="cannot pay for one run within"):
        cal.calibrate(inputs, target, planning_flops=1e10, results_path=tmp_path / "none.csv",
                     cache_dir=tmp_path / "fresh", strategies=["slm"], batch_size=8,
                     device="cpu")
    assert not (tmp_path / "none.csv").exists()


def test_ladder_never_leaves_a_strategy_half_calibrated(tiny_inputs, tmp_path):
    """A budget for about one strategy's ladder: whatever is started gets a fitted law."""
    from planner.data.inputs import Inputs

    inputs = Inputs(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                    tiny_inputs.tokenizer)
    target = Budgets(4e11, 5e9, InferenceCap(params=200_000),
                     inputs.domains["law"].train.tokens)
    result = cal.calibrate(inputs, target, planning_flops=2e11,
                          results_path=tmp_path / "calibration.csv", cache_dir=tmp_path / "cache",
                          strategies=["slm", "slm-pn"], batch_size=8, device="cpu",
                          n_boot=N_BOOT)
    started = {r.strategy for r in result.runs if r.status == "ok"}
    assert started and result.spent_flops <= 2e11
    for name in started:
        assert result.forecast.get(name).status == "forecast", name
    assert set(result.skipped) == {"slm", "slm-pn"} - started


def test_ladder_knows_how_many_runs_a_law_needs():
    """The ladder's count of runs to a fittable law agrees with planner.forecast.laws itself."""
    for n_domains in (1, 2, 3):
        for levels in (1, 2, 3, 4):
            rows = [{"strategy": "slm", "domain": f"d{d}", "domain_tokens": 1e6,
                     "params_inference": 1e8, "generic_tokens": 1e9 * 4**i, "spec_tokens": 3e6,
                     "ppl_after": float(np.exp(2 + d / 10 + 0.5 * (4.0**i) ** -0.3))}
                    for i in range(levels) for d in range(n_domains)]
            try:
                laws.fit_law(pd.DataFrame(rows), "slm", n_inits=2)
                fits = True
            except SpecplanError:
                fits = False
            assert fits == (levels >= cal._runs_to_fit(n_domains)), (n_domains, levels)


# -- the command ---------------------------------------------------------------------------------
def specplan(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``specplan ARGS`` through the console entry point; (exit code, stdout, stderr)."""
    from planner import cli  # registers forecast_cmd

    monkeypatch.setattr(sys, "argv", ["specplan", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


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
