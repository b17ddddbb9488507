"""Projected networks (slm-pn) and histogram hyper-networks (slm-hn) on the tiny workspace."""
from types import SimpleNamespace

import pytest
import torch

from planner.core.errors import SpecplanError
from planner.engine.evaluate import perplexity
from planner.engine.models import model_shape
from planner.engine.train import evaluate_loss
from planner.run.runner import run_strategy
from strategies import get_strategy
from strategies.projected.strategy import (
    ClusterBatches,
    HistogramBatches,
    ProjectedNetwork,
    histogram_loss,
    load_network,
    materialise,
    materialise_flops,
    projected_train_flops_per_token,
    routed_loss,
)
from tests.conftest import make_workspace

PN = {"k": 4, "h": 4, "m": 4}



@pytest.fixture(scope="module")
def pn_run(tiny_inputs, tmp_path_factory):
    """One slm-pn run on the law domain (pretraining + fine-tuning), shared by several tests."""
    cache = tmp_path_factory.mktemp("pn") / "cache"
    probe = make_workspace(tiny_inputs, cache)
    ws = make_workspace(tiny_inputs, cache,  # 1e10 for training after the clustering
                        pretrain_flops=1e10 + probe.clustering_flops(PN["k"]))
    report = run_strategy("slm-pn", PN, ws, {"law": tiny_inputs.domains["law"]})
    return ws, report


def _artifact_folder(ws):
    (folder,) = (ws.cache_dir / "artifacts").glob("slm-pn-*")
    return folder


def _logits(model, ids, **kwargs):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


def test_materialised_expert_matches_routed_network_and_slm_size(pn_run, tiny_inputs):
    ws, _ = pn_run
    network = load_network(_artifact_folder(ws))  # the trained, saved network
    ids = tiny_inputs.domains["law"].valid.ids[:4]
    slm_params = ws.shape(ws.small).params_total
    outputs = []
    for expert in (0, 3):
        plain = materialise(network, expert)
        assert type(plain).__name__ == "LlamaForCausalLM"
        assert sum(p.numel() for p in plain.parameters()) == slm_params
        routed = _logits(network, ids, condition=expert)
        torch.testing.assert_close(_logits(plain, ids), routed, rtol=1e-5, atol=1e-5)
        outputs.append(routed)
    assert not torch.allclose(outputs[0], outputs[1])  # experts really differ
    with pytest.raises(SpecplanError, match="expert 4 is out of range"):
        materialise(network, 4)


def test_histogram_member_matches_network_and_rejects_bad_histograms(tiny_inputs):
    shape = model_shape("tiny", vocab_size=len(tiny_inputs.tokenizer), seq_len=32)
    network = ProjectedNetwork("hn", shape, k=3, m=4, h=2, seed=0)
    with torch.no_grad():  # a trained-like output layer, so the histogram matters
        torch.nn.init.normal_(network.coefficients.out.weight, std=0.5)
    ids = tiny_inputs.generic.valid.ids[:4]
    members = []
    for histogram in ([0.2, 0.3, 0.5], [1.0, 0.0, 0.0]):
        plain = materialise(network, histogram)
        assert sum(p.numel() for p in plain.parameters()) == shape.params_total
        member = _logits(network, ids, condition=torch.tensor(histogram))
        torch.testing.assert_close(_logits(plain, ids), member, rtol=1e-5, atol=1e-5)
        members.append(member)
    assert not torch.allclose(members[0], members[1])
    with pytest.raises(SpecplanError, match="has 2 entries, expected k=3"):
        materialise(network, [0.5, 0.5])
    with pytest.raises(SpecplanError, match="sums to 0.9"):
        materialise(network, [0.3, 0.3, 0.3])
    with pytest.raises(SpecplanError, match="negative"):
        materialise(network, [1.5, -0.5, 0.0])


def test_every_member_starts_like_a_normally_initialised_mlp(tiny_inputs):
    shape = model_shape("tiny", vocab_size=len(tiny_inputs.tokenizer), seq_len=32)
    for kind, condition in (("pn", 1), ("hn", [0.5, 0.25, 0.25])):
        network = ProjectedNetwork(kind, shape, k=3, m=2, h=4, seed=0)
        layer = materialise(network, condition).model.layers[0].mlp
        for weight in (layer.gate_proj.weight, layer.up_proj.weight, layer.down_proj.weight):
            assert weight.std().item() == pytest.approx(0.02, rel=0.05)  # HF's initializer_range


def test_pn_pretraining_lowers_routed_generic_loss(pn_run, tiny_inputs):
    ws, report = pn_run
    network = load_network(_artifact_folder(ws))
    fresh = ProjectedNetwork("pn", network.shape, k=4, m=4, h=4, seed=ws.train.seed)
    valid = ws.generic.valid.ids[: ws.train.eval_windows]
    loss = routed_loss(ws.clustering(PN["k"]))
    before = evaluate_loss(fresh, valid, loss_fn=loss)
    after = evaluate_loss(network, valid, loss_fn=loss)
    assert after < before - 0.5
    assert report.ppl_generic == pytest.approx(perplexity(after), rel=1e-4)


def test_pn_runs_end_to_end_and_fine_tuning_helps(pn_run):
    ws, report = pn_run
    result = report.domains[0]
    assert report.strategy == "slm-pn" and not report.artifact_reused
    assert result.ppl_after < result.ppl_before
    assert result.notes["expert"] in range(PN["k"]) and result.notes["expert_fraction"] > 0.3
    spec = result.ledger.totals()["specialization"]
    assert 0 < spec["flops"] <= ws.budgets.spec_flops
    assert report.estimate.params_inference == ws.shape(ws.small).params_total
    network = load_network(_artifact_folder(ws))
    assert report.estimate.params_pretrain == sum(p.numel() for p in network.parameters())


def test_estimated_generic_flops_match_the_ledger(pn_run):
    ws, report = pn_run
    strategy = get_strategy("slm-pn")
    settings = strategy.settings(PN)
    step = ws.train.tokens_per_step(ws.seq_len) * strategy.train_flops_per_token(settings, ws)
    recorded = report.generic_ledger.totals()["generic"]["flops"]
    assert abs(recorded - report.estimate.generic_flops) <= step
    assert recorded <= ws.budgets.pretrain_flops
    spec = report.domains[0].ledger.totals()["specialization"]["flops"]
    assert spec <= report.estimate.spec_flops + 1e-6 * spec


def test_pn_artifact_is_reused_for_a_second_domain(pn_run, tiny_inputs, monkeypatch):
    ws, first = pn_run

    def no_training(*args, **kwargs):
        raise AssertionError("pretraining ran twice")

    monkeypatch.setattr(type(get_strategy("slm-pn")), "pretrain", no_training)
    second = run_strategy("slm-pn", PN, ws, {"bio": tiny_inputs.domains["bio"]})
    assert second.artifact_reused
    assert second.generic_ledger.totals() == first.generic_ledger.totals()
    assert second.domains[0].notes["expert"] != first.domains[0].notes["expert"]
    assert second.domains[0].ppl_after < second.domains[0].ppl_before


@pytest.mark.parametrize("bad, message", [
    ({"h": 0}, "setting h=0 is out of range"),
    ({"m": 100}, "setting m=100 is out of range"),
    ({"k": 1}, "setting k=1 is out of range"),
    ({"k": 256}, "k=256 is larger than the number of generic windows"),
])
def test_bad_settings_are_refused_before_training(tiny_inputs, tmp_path, bad, message):
    small = SimpleNamespace(generic=tiny_inputs.generic.cut(200 * 32),
                            tokenizer=tiny_inputs.tokenizer)
    ws = make_workspace(small, tmp_path / "cache")  # 200 generic windows: fewer than k=256
    with pytest.raises(SpecplanError, match=message):
        run_strategy("slm-pn", bad, ws, {"law": tiny_inputs.domains["law"]})
    assert not (tmp_path / "cache" / "artifacts").exists()
    assert ws.ledger.entries == []


def test_cluster_batches_hold_one_cluster_in_proportion():
    ids = torch.arange(40).unsqueeze(1).repeat(1, 4)  # (40, 4): row i is all i
    assignments = torch.tensor([0] * 24 + [1] * 12 + [2] * 4)
    source = ClusterBatches(ids, assignments, k=3, batch_size=4, seed=1)
    seen, counts = set(), [0, 0, 0]
    for step in range(10):  # one epoch: 6 + 3 + 1 batches
        batch = source.batch(step, 0)
        expert = int(batch["expert"])
        assert (assignments[batch["input_ids"][:, 0]] == expert).all()
        seen.update(batch["input_ids"][:, 0].tolist())
        counts[expert] += 1
    assert counts == [6, 3, 1] and seen == set(range(40))
    again = ClusterBatches(ids, assignments, k=3, batch_size=4, seed=1)
    assert torch.equal(again.batch(7, 0)["input_ids"], source.batch(7, 0)["input_ids"])


def test_histogram_batches_follow_their_histogram():
    ids = torch.arange(300).unsqueeze(1)
    assignments = torch.arange(300) % 3
    source = HistogramBatches(ids, assignments, k=3, batch_size=300, concentration=0.3, seed=0)
    batch = source.batch(5, 0)
    p = batch["histogram"][0]
    assert (batch["histogram"] == p).all() and p.sum().item() == pytest.approx(1.0)
    share = torch.bincount(assignments[batch["input_ids"][:, 0]], minlength=3) / 300.0
    assert torch.allclose(share, p, atol=0.1)
    assert torch.equal(source.batch(5, 0)["input_ids"], batch["input_ids"])
    assert not torch.equal(source.batch(6, 0)["histogram"], batch["histogram"])


def test_projected_flops_formula_by_hand():
    shape = model_shape("tiny", vocab_size=300, seq_len=32)  # d=64, d'=256, L=2
    # per layer: 2*m*h for the coefficients, then 3 matrices of 2*d*d'*h
    build = 2 * (2 * 4 * 8 + 3 * 2 * 64 * 256 * 8)
    assert materialise_flops(shape, 8, coefficient_flops=2 * 2 * 4 * 8) == build
    per_token = projected_train_flops_per_token(shape, 8, 2 * 2 * 4 * 8, tokens_per_batch=256)
    assert per_token == shape.train_flops_per_token() + 3 * build / 256


def test_hn_runs_end_to_end(tiny_inputs, tmp_path):
    probe = make_workspace(tiny_inputs, tmp_path / "cache")
    ws = make_workspace(tiny_inputs, tmp_path / "cache", spec_flops=3e9,
                        pretrain_flops=4e9 + probe.clustering_flops(3))  # the clustering first
    report = run_strategy("slm-hn", {"k": 3, "h": 2, "m": 4}, ws,
                          {"code": tiny_inputs.domains["code"]})
    result = report.domains[0]
    fresh = ProjectedNetwork("hn", ws.shape(ws.small), k=3, m=4, h=2, seed=ws.train.seed)
    loss = histogram_loss(ws.clustering(3).generic_histogram())
    before = evaluate_loss(fresh, ws.generic.valid.ids[: ws.train.eval_windows], loss_fn=loss)
    assert report.ppl_generic < perplexity(before) / 2  # pretraining lowered generic loss
    assert sum(result.notes["histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert result.ppl_after < result.ppl_before
    assert report.generic_ledger.totals()["generic"]["flops"] <= ws.budgets.pretrain_flops
