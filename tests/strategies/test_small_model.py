import pytest
import torch
from transformers import AutoModelForCausalLM

from planner.core.errors import BudgetError, SpecplanError
from planner.engine.train import evaluate_loss
from planner.run.runner import run_strategy
from strategies import available, get_strategy


def test_registry_lists_baselines_and_rejects_unknown():
    assert {"slm", "slm-nopt", "llm"} <= set(available())
    with pytest.raises(SpecplanError, match="unknown strategy 'gpt'"):
        get_strategy("gpt")


def test_unknown_setting_is_refused():
    with pytest.raises(SpecplanError, match="unknown setting.*valid: ft_lr"):
        get_strategy("slm").settings({"learning_rate": 1e-3})
    with pytest.raises(SpecplanError, match="out of range"):
        get_strategy("slm").settings({"lr": 5.0})


def test_slm_fine_tuning_improves_domain_and_exports(tiny_ws, tiny_inputs, tmp_path):
    domain = {"law": tiny_inputs.domains["law"]}
    report = run_strategy("slm", {}, tiny_ws, domain, out_dir=tmp_path / "models")
    result = report.domains[0]
    assert result.ppl_after < result.ppl_before
    assert report.generic_ledger.totals()["generic"]["flops"] > 0
    assert result.ledger.totals()["specialization"]["flops"] <= tiny_ws.budgets.spec_flops
    # the exported checkpoint loads in transformers and gives the same loss
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    loss = evaluate_loss(model, domain["law"].valid.ids)
    assert torch.exp(torch.tensor(loss)).item() == pytest.approx(result.ppl_after, rel=1e-4)


def test_pretraining_artifact_reused_for_second_domain(tiny_ws, tiny_inputs, monkeypatch):
    first = run_strategy("slm", {}, tiny_ws, {"law": tiny_inputs.domains["law"]})
    assert not first.artifact_reused
    strategy_cls = type(get_strategy("slm"))

    def no_training(*args, **kwargs):
        raise AssertionError("pretraining ran twice")

    monkeypatch.setattr(strategy_cls, "pretrain", no_training)
    second = run_strategy("slm", {}, tiny_ws, {"bio": tiny_inputs.domains["bio"]})
    assert second.artifact_reused
    assert second.generic_ledger.totals() == first.generic_ledger.totals()


def test_rows_share_one_domain_size_per_run_and_keep_each_domains_own(tiny_ws, tiny_inputs):
    assert tiny_ws.budgets.domain_tokens is None  # no cut: each domain keeps all its data
    report = run_strategy("slm-nopt", {}, tiny_ws, tiny_inputs.domains)
    rows = report.rows(tiny_ws.budgets)
    own = [tiny_inputs.domains[r["domain"]].train.tokens for r in rows]
    assert [r["domain_train_tokens"] for r in rows] == own and len(set(own)) > 1
    assert {r["domain_tokens"] for r in rows} == {round(sum(own) / len(own))}


def test_artifact_key_follows_what_shapes_the_weights(tiny_ws):
    from dataclasses import replace

    slm = get_strategy("slm")
    key = tiny_ws.artifact_key(slm, slm.settings())

    def key_with(**train) -> str:
        return replace(tiny_ws, train=replace(tiny_ws.train, **train)).artifact_key(
            slm, slm.settings())

    # A schedule or optimizer change trains anew (a cached artifact would be stale) ...
    assert key_with(warmup_steps=5) != key and key_with(weight_decay=0.0) != key
    # ... where the run happens and how it is checkpointed do not.
    assert key_with(device="cuda", compile=True, checkpoint_every=10) == key


def test_llm_is_flagged_over_inference_budget(tiny_inputs, tmp_path):
    from planner.core.budgets import InferenceCap
    from tests.conftest import make_workspace

    ws = make_workspace(tiny_inputs, tmp_path, inference=InferenceCap(params=200_000))
    est = get_strategy("llm").estimate(get_strategy("llm").settings(), ws)
    assert est.params_inference > 200_000
    report = run_strategy("llm", {}, ws, {"law": tiny_inputs.domains["law"]})
    assert report.status == "over-inference-budget"
    with pytest.raises(BudgetError, match="breaks the inference budget"):
        ws_small = make_workspace(tiny_inputs, tmp_path, inference=InferenceCap(params=1000))
        run_strategy("slm", {}, ws_small, {"law": tiny_inputs.domains["law"]})


def test_budget_that_cannot_fit_names_phase_and_gap(tiny_inputs, tmp_path):
    from tests.conftest import make_workspace

    ws = make_workspace(tiny_inputs, tmp_path, pretrain_flops=1e3)
    with pytest.raises(BudgetError, match="pretraining budget .* short of"):
        run_strategy("slm", {}, ws, {"law": tiny_inputs.domains["law"]})
    assert not (tmp_path / "artifacts").exists()  # nothing trained


def test_slm_nopt_has_no_generic_cost(tiny_ws, tiny_inputs):
    report = run_strategy("slm-nopt", {}, tiny_ws, {"law": tiny_inputs.domains["law"]})
    assert report.generic_ledger.totals()["generic"]["flops"] == 0
    assert report.domains[0].ppl_before is None
    assert report.domains[0].ledger.totals()["specialization"]["flops"] > 0
