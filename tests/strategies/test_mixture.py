"""slm-mix: one expert per generic cluster, expert selection, artifact reuse, refusals."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.models import save_model
from planner.engine.train import evaluate_loss
from planner.run.runner import run_strategy
from strategies import get_strategy
from strategies.base import step_flops, steps_within
from strategies.mixture import choose_expert, expert_folder
from strategies.workspace import Artifact
from tests.conftest import make_workspace

K = 4
EXPERT_STEPS, FT_STEPS = 12, 8




def workspace(tiny_inputs, tmp_path, warm_clusters, *, pretrain_steps: float = K * EXPERT_STEPS,
              spec_steps: float = FT_STEPS):
    """A fresh workspace with the clusterings cached and budgets counted in tiny-model steps
    (the pretraining budget pays for the clustering first)."""
    shutil.copytree(warm_clusters, tmp_path / "cache" / "clusters")
    probe = make_workspace(tiny_inputs, tmp_path / "cache")
    one_step = step_flops(probe.shape(probe.small), probe)
    return make_workspace(tiny_inputs, tmp_path / "cache",
                          pretrain_flops=pretrain_steps * one_step + probe.clustering_flops(K),
                          spec_flops=(spec_steps + 0.5) * one_step)


def test_choose_expert_on_constructed_cases():
    everything_in_2 = torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert choose_expert("frequent", everything_in_2) == 2
    assert choose_expert("frequent", torch.tensor([0.3, 0.1, 0.3, 0.3])) == 0  # ties: lowest
    assert choose_expert("loss", everything_in_2, [5.1, 2.0, 4.8, 5.3]) == 1
    assert choose_expert("all", everything_in_2, [3.0, 3.2, 2.9, math.inf]) == 2
    with pytest.raises(SpecplanError, match="needs one loss per expert"):
        choose_expert("loss", everything_in_2)


def test_experts_per_cluster_frequent_selection_export_and_reuse(tiny_inputs, tmp_path,
                                                                 warm_clusters, monkeypatch):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    law, bio = tiny_inputs.domains["law"], tiny_inputs.domains["bio"]
    one_step = step_flops(ws.shape(ws.small), ws)
    first = run_strategy("slm-mix", {"k": K}, ws, {"law": law}, out_dir=tmp_path / "models")
    assert not first.artifact_reused

    # Pretraining: K experts, each on its own cluster, the total budget split evenly.
    assert first.estimate.params_pretrain == K * first.estimate.params_inference
    (folder,) = (tmp_path / "cache" / "artifacts").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    assert [e["steps"] for e in meta["experts"]] == [EXPERT_STEPS] * K
    sizes = torch.bincount(ws.clustering(K).generic_assignments, minlength=K).tolist()
    assert [e["windows"] for e in meta["experts"]] == sizes
    assert all(expert_folder(folder, i).is_dir() for i in range(K))
    assert all(e["ppl_cluster"] < 300 for e in meta["experts"] if e["valid_windows"])
    assert first.ppl_generic == meta["ppl_generic"] < 300  # the vocabulary size: better than chance
    generic = first.generic_ledger.totals()["generic"]
    assert generic["flops"] == pytest.approx(K * EXPERT_STEPS * one_step + ws.clustering_flops(K))
    # The clustering came from the cache: charged all the same, with the time its fit took.
    (clusters,) = [e for e in first.generic_ledger.entries if e.label.startswith("clustering")]
    assert (clusters.device, clusters.flops) == ("cache", ws.clustering_flops(K))
    assert clusters.seconds > 0
    assert generic["flops"] == pytest.approx(first.estimate.generic_flops)
    assert generic["flops"] <= ws.budgets.pretrain_flops

    # Specialization: the expert of law's most frequent cluster, fine-tuned, better than before.
    result = first.domains[0]
    law_hist = ws.clustering(K).histogram(law.train)
    assert result.notes["expert"] == int(law_hist.argmax())
    assert result.notes["histogram"] == pytest.approx(law_hist.tolist(), abs=1e-4)
    assert result.ppl_after < result.ppl_before
    spec = result.ledger.totals()["specialization"]["flops"]
    assert 0 < spec <= ws.budgets.spec_flops
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    loss = evaluate_loss(model, law.valid.ids)
    assert math.exp(loss) == pytest.approx(result.ppl_after, rel=1e-4)

    # A second domain, and another selection rule, reuse the experts without pretraining.
    def no_training(*args, **kwargs):
        raise AssertionError("pretraining ran twice")

    monkeypatch.setattr(type(get_strategy("slm-mix")), "pretrain", no_training)
    second = run_strategy("slm-mix", {"k": K, "select": "all"}, ws, {"bio": bio})
    assert second.artifact_reused
    assert second.generic_ledger.totals() == first.generic_ledger.totals()
    notes, ledger = second.domains[0].notes, second.domains[0].ledger
    # "all" fine-tunes every expert on a K-th of the budget and keeps the best on validation.
    tunes = [e for e in ledger.entries if e.label.startswith("fine-tune expert")]
    assert sorted(e.label for e in tunes) == [f"fine-tune expert {i}" for i in range(K)]
    per_expert = steps_within(ws.budgets.spec_flops / K, ws.shape(ws.small), ws) * one_step
    assert all(e.flops <= per_expert for e in tunes)
    assert ledger.totals()["specialization"]["flops"] <= ws.budgets.spec_flops
    assert notes["expert"] == min(range(K), key=lambda i: notes["expert_losses"][i])
    # The model kept is the best one (bio's validation set fits in one evaluation).
    best = math.exp(min(notes["expert_losses"]))
    assert second.domains[0].ppl_after == pytest.approx(best, rel=1e-4)
    # On a clean domain the best fine-tuned expert is the one of its own cluster.
    bio_cluster = int(ws.clustering(K).histogram(bio.train).argmax())
    assert notes["expert"] == bio_cluster != result.notes["expert"]


def test_loss_rule_picks_a_constructed_better_expert_and_pays_for_it(tiny_inputs, tmp_path,
                                                                     warm_clusters):
    law = tiny_inputs.domains["law"]
    probe = workspace(tiny_inputs, tmp_path / "probe", warm_clusters)
    strategy = get_strategy("slm-mix")
    settings = strategy.settings({"k": K, "select": "loss"})
    selection = strategy.selection_flops(settings, probe, strategy.selection_windows(probe, law))
    one_step = step_flops(probe.shape(probe.small), probe)
    ws = make_workspace(tiny_inputs, tmp_path / "probe" / "cache",
                        spec_flops=selection + (FT_STEPS + 0.5) * one_step)
    # Experts 0, 2, 3 are untrained; expert 1 saw law text. Law's most frequent cluster is not
    # cluster 1, so only the loss rule can find it.
    shape = ws.shape(ws.small)
    folder = tmp_path / "experts"
    for i in range(K):
        model = shape.build(seed=i)
        if i == 1:
            ws.pretrain_model(model, law.train.ids, flops_per_token=shape.train_flops_per_token(),
                              max_flops=15.5 * one_step, lr=3e-3, label="build a law expert")
        save_model(model, expert_folder(folder, i))
    ws.ledger = Ledger()
    assert choose_expert("frequent", ws.clustering(K).histogram(law.train)) != 1

    spec = strategy.specialize(settings, Artifact(folder, {}, Ledger()), law, ws)
    assert spec.notes["expert"] == 1
    losses = spec.notes["expert_losses"]
    assert losses[1] < min(losses[0], losses[2], losses[3]) - 0.5
    # The selection's forward passes are charged to specialization, before the fine-tune.
    charge, *rest = spec.ledger.entries
    assert charge.phase == "specialization" and "selection" in charge.label
    windows = min(ws.train.eval_windows, law.train.n)
    assert charge.tokens == K * windows * ws.seq_len
    assert charge.flops == pytest.approx(charge.tokens * shape.forward_flops_per_token())
    assert rest and all(e.label == "fine-tune expert 1" for e in rest)
    assert spec.ledger.totals()["specialization"]["flops"] <= ws.budgets.spec_flops
    assert spec.loss_before < evaluate_loss(shape.build(seed=0), law.valid.ids) - 0.5


def test_estimates_price_each_selection_rule(tiny_inputs, tmp_path, warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters, spec_steps=40)
    strategy = get_strategy("slm-mix")
    shape = ws.shape(ws.small)
    one_step = step_flops(shape, ws)
    est = {rule: strategy.estimate(strategy.settings({"k": K, "select": rule}), ws)
           for rule in ("frequent", "loss", "all")}
    assert est["frequent"].spec_flops == pytest.approx(40 * one_step)
    assert est["frequent"].min_spec_flops == pytest.approx(one_step)
    # loss: every expert reads eval_windows train windows once; fine-tuning gets the rest.
    selection = K * ws.train.eval_windows * ws.seq_len * shape.forward_flops_per_token()
    assert est["loss"].min_spec_flops == pytest.approx(selection + one_step)
    assert est["loss"].spec_flops <= ws.budgets.spec_flops
    assert est["loss"].spec_flops > ws.budgets.spec_flops - one_step
    # all: K fine-tunes, each on a K-th of the budget.
    assert est["all"].spec_flops == pytest.approx(K * (40 // K) * one_step)
    assert est["all"].min_spec_flops == pytest.approx(K * one_step)
    assert len({e.generic_flops for e in est.values()}) == 1  # one artifact for every rule
    # Without eval_windows the loss rule is priced by the domain data size, the others need none.
    ws.train = dataclasses.replace(ws.train, eval_windows=None)
    assert strategy.estimate(strategy.settings({"k": K}), ws).spec_flops > 0
    with pytest.raises(SpecplanError, match="can be priced"):
        strategy.estimate(strategy.settings({"k": K, "select": "loss"}), ws)


def test_k_too_large_fails_before_any_training(tiny_inputs, tmp_path, warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    law = {"law": tiny_inputs.domains["law"]}
    # Clusters of the k=16 clustering hold about 110-180 windows: too few for a 128-window batch.
    ws.train = dataclasses.replace(ws.train, batch_size=128)
    with pytest.raises(SpecplanError, match=r"k=16 leaves cluster \d+ with \d+ generic windows, "
                                            r"fewer than one batch \(128\); lower k"):
        run_strategy("slm-mix", {"k": 16}, ws, law)
    small = ws.generic.train.subset(torch.arange(40))
    ws.generic = dataclasses.replace(ws.generic, train=small)
    with pytest.raises(SpecplanError, match=r"k=64 is larger than the number of generic train "
                                            r"windows \(40\)"):
        run_strategy("slm-mix", {"k": 64}, ws, law)
    assert ws.ledger.entries == []
    assert not (tmp_path / "cache" / "artifacts").exists()


def test_pretraining_budget_must_pay_a_step_per_expert(tiny_inputs, tmp_path, warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters, pretrain_steps=K - 0.5)
    with pytest.raises(BudgetError, match="pretraining budget .* short of"):
        run_strategy("slm-mix", {"k": K}, ws, {"law": tiny_inputs.domains["law"]})
    assert not (tmp_path / "cache" / "artifacts").exists()
