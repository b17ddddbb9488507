"""slm-is: importance sampling on the real clustering of the synthetic corpus, and DSIR beside it.

The synthetic generic corpus mixes law, bio and code documents whose text names their domain
("law document 3: ..."), so where a resampled window comes from can be checked against the truth.
"""
from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from planner.core.errors import BudgetError, SpecplanError
from planner.engine.train import evaluate_loss
from planner.run.runner import run_strategy
from strategies.base import step_flops
from strategies.importance.resample import resample_to_histogram
from strategies.importance.strategy import split_steps, windows_of_documents
from tests.conftest import make_workspace

IS_STEPS, FT_STEPS = 24, 6  # is_fraction 0.8 of 30 steps




def workspace(tiny_inputs, tmp_path, warm_clusters, steps: float = IS_STEPS + FT_STEPS + 0.5):
    """A fresh workspace whose cache already holds the clusterings; ``steps`` of spec budget."""
    shutil.copytree(warm_clusters, tmp_path / "cache" / "clusters")
    probe = make_workspace(tiny_inputs, tmp_path / "cache")
    one_step = step_flops(probe.shape(probe.small), probe)
    return make_workspace(tiny_inputs, tmp_path / "cache", spec_flops=steps * one_step)


def source_domain(ws, windows: torch.Tensor) -> list[str]:
    """The true domain of each generic window: the name that opens its first document."""
    texts = ws.generic.texts["train"]
    return [texts[int(d)].split(" ", 1)[0] for d in ws.generic.train.text_span[windows, 0]]


def untrained_loss(ws, domain) -> float:
    model = ws.shape(ws.small).build(seed=ws.train.seed)
    return evaluate_loss(model, domain.valid.ids[: ws.train.eval_windows])


def test_split_steps_leaves_each_phase_a_step():
    assert split_steps(30, 0.8) == (24, 6)
    assert split_steps(2, 0.95) == (1, 1)
    assert split_steps(3, 0.95) == (2, 1)  # 0.95 * 3 rounds down to 2, never to all 3
    assert split_steps(1, 0.8) == (0, 1)
    assert split_steps(0, 0.8) == (0, 0)


def test_windows_of_documents_follows_document_order_once_each():
    # windows: 0 = doc 0, 1 = docs 0-1, 2 = doc 1, 3 = docs 2-3, 4 = doc 3; doc 5 is in no window
    span = torch.tensor([[0, 0, 0, 9], [0, 9, 1, 4], [1, 4, 1, 20], [2, 0, 3, 2], [3, 2, 3, 30]])
    windows, source = windows_of_documents(span, torch.tensor([3, 5, 1, 0]))
    assert windows.tolist() == [3, 4, 1, 2, 0]
    assert source.tolist() == [0, 0, 2, 2, 3]


def test_resampled_histograms_match_each_domain_on_the_real_clustering(tiny_inputs, tmp_path,
                                                                        warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    clustering = ws.clustering(16)
    n = 20_000
    for name, domain in tiny_inputs.domains.items():
        hist = clustering.histogram(domain.train).double()  # (16,)
        drawn = resample_to_histogram(clustering.generic_assignments, hist, n, seed=0)
        bound = 4 * torch.sqrt(hist * (1 - hist) / n) + 1e-9
        assert bool(((drawn.histogram - hist).abs() <= bound).all()), name
        # Matching the histogram brings the domain's own documents: about a third of the generic
        # corpus, nearly all of the stream.
        share = source_domain(ws, drawn.indices[:2000]).count(name) / 2000
        assert share > 0.9, (name, share)


def test_slm_is_on_law_trains_on_law_windows_improves_and_exports(
        tiny_inputs, tmp_path, warm_clusters, monkeypatch):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    law = tiny_inputs.domains["law"]
    streams = []
    real_pretrain = ws.pretrain_model

    def spy(*args, **kwargs):
        streams.append(kwargs["order"])
        return real_pretrain(*args, **kwargs)

    monkeypatch.setattr(ws, "pretrain_model", spy)
    report = run_strategy("slm-is", {"k": 16}, ws, {"law": law}, out_dir=tmp_path / "models")
    result, notes = report.domains[0], report.domains[0].notes
    one_step = step_flops(ws.shape(ws.small), ws)

    # All cost is specialization: the resampled training, then fine-tuning, within the budget.
    assert report.generic_ledger.totals()["generic"]["flops"] == 0
    phases = {e.phase for e in result.ledger.entries}
    assert phases == {"specialization"}
    stream_entry = next(e for e in result.ledger.entries if "resampled stream" in e.label)
    assert stream_entry.flops == pytest.approx(IS_STEPS * one_step)
    assert result.ledger.totals()["specialization"]["flops"] <= ws.budgets.spec_flops
    assert notes["is_steps"] == IS_STEPS and 1 <= notes["fine_tune_steps"] <= FT_STEPS

    # The stream: as many draws as the steps read, mostly law documents, histogram matched.
    (stream,) = streams
    assert notes["n_draws"] == stream.numel() == IS_STEPS * ws.train.batch_size
    assert source_domain(ws, stream).count("law") / stream.numel() > 0.9
    assert notes["stream_tv"] < 0.2
    assert 0 < notes["distinct_windows"] <= notes["n_draws"]
    assert notes["distinct_windows"] == torch.unique(stream).numel()
    assert 0 < notes["effective_sample_size"] <= ws.generic.train.n
    assert notes["ess_unit"] == "generic windows" and notes["unreachable_mass"] == 0.0
    assert 0 < notes["domain_entropy"] < math.log(16)
    assert notes["domain_top_fraction"] == pytest.approx(max(notes["domain_histogram"]), abs=1e-3)

    # Better than an untrained model before fine-tuning, and fine-tuning does not hurt.
    assert math.log(result.ppl_before) < untrained_loss(ws, law) - 0.5
    assert result.ppl_after <= result.ppl_before

    # The exported checkpoint loads in transformers and gives the same loss.
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    loss = evaluate_loss(model, law.valid.ids)
    assert math.exp(loss) == pytest.approx(result.ppl_after, rel=1e-4)


def test_dsir_resampler_runs_through_the_same_strategy(tiny_inputs, tmp_path, warm_clusters,
                                                       monkeypatch):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    law = tiny_inputs.domains["law"]
    streams = []
    real_pretrain = ws.pretrain_model
    monkeypatch.setattr(ws, "pretrain_model",
                        lambda *a, **kw: streams.append(kw["order"]) or real_pretrain(*a, **kw))
    report = run_strategy("slm-is", {"k": 16, "resampler": "dsir"}, ws, {"law": law})
    result, notes = report.domains[0], report.domains[0].notes

    stream_entry = next(e for e in result.ledger.entries if "resampled stream" in e.label)
    assert stream_entry.flops == pytest.approx(IS_STEPS * step_flops(ws.shape(ws.small), ws))
    (stream,) = streams
    # Documents are drawn without replacement: the stream's windows are all distinct.
    assert notes["distinct_windows"] == notes["n_draws"] == torch.unique(stream).numel()
    assert notes["ess_unit"] == "generic documents"
    assert 0 < notes["effective_sample_size"] <= len(ws.generic.texts["train"])
    assert 0 < notes["documents_selected"] < len(ws.generic.texts["train"])
    assert source_domain(ws, stream).count("law") / stream.numel() > 0.8
    assert math.log(result.ppl_before) < untrained_loss(ws, law) - 0.5
    assert not (tmp_path / "cache" / "dsir").exists() or not any(
        (tmp_path / "cache" / "dsir").iterdir())  # DSIR's temporary files are cleaned up


def test_k_larger_than_the_generic_windows_fails_before_any_work(tiny_inputs, tmp_path):
    ws = make_workspace(tiny_inputs, tmp_path / "cache")
    small = dataclasses.replace(ws.generic.train, ids=ws.generic.train.ids[:100],
                                text_span=ws.generic.train.text_span[:100])
    ws.generic = dataclasses.replace(ws.generic, train=small)
    with pytest.raises(SpecplanError, match=r"k=128 is larger than the number of generic train "
                                            r"windows \(100\); lower k"):
        run_strategy("slm-is", {"k": 128}, ws, {"law": tiny_inputs.domains["law"]})
    assert ws.ledger.entries == []
    assert not (tmp_path / "cache").exists()  # no clustering, no artifact, nothing written


def test_budget_below_two_steps_is_refused(tiny_inputs, tmp_path, warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters, steps=1.5)
    with pytest.raises(BudgetError, match="specialization budget .* short of"):
        run_strategy("slm-is", {}, ws, {"law": tiny_inputs.domains["law"]})
    assert ws.ledger.entries == []


def test_domain_mass_on_clusters_without_generic_windows(tiny_inputs, tmp_path, warm_clusters,
                                                         monkeypatch):
    """Weights stay finite and the lost mass is reported; a fully unreachable domain fails."""
    ws = workspace(tiny_inputs, tmp_path, warm_clusters, steps=2.5)
    law = tiny_inputs.domains["law"]
    real = ws.clustering(4)
    hist = real.histogram(law.train)  # (4,)
    reached = (hist > 0).nonzero().flatten().tolist()
    spare = int((hist == 0).nonzero()[0])
    assert len(reached) >= 2  # law spreads over two of the four clusters

    def emptied(*clusters: int):
        """The real clustering with the generic windows of ``clusters`` moved to ``spare``."""
        labels = real.generic_assignments.clone()
        for c in clusters:
            labels[labels == c] = spare
        return dataclasses.replace(real, generic_assignments=labels)

    top = reached[0]
    monkeypatch.setattr(ws, "clustering", lambda k: emptied(top))
    report = run_strategy("slm-is", {"k": 4}, ws, {"law": law})
    notes = report.domains[0].notes
    assert notes["unreachable_mass"] == pytest.approx(float(hist[top]), abs=1e-6)
    assert math.isfinite(notes["effective_sample_size"]) and notes["effective_sample_size"] > 0
    assert notes["stream_histogram"][top] == 0.0

    monkeypatch.setattr(ws, "clustering", lambda k: emptied(*reached))
    ws.ledger.entries.clear()
    with pytest.raises(SpecplanError, match="histogram is empty on the generic clusters"):
        run_strategy("slm-is", {"k": 4}, ws, {"law": law})
    assert ws.ledger.entries == []  # refused before training


def test_empty_domain_is_refused_before_training(tiny_inputs, tmp_path, warm_clusters):
    ws = workspace(tiny_inputs, tmp_path, warm_clusters)
    law = tiny_inputs.domains["law"]
    empty = dataclasses.replace(law, train=law.train.subset(torch.zeros(0, dtype=torch.long)))
    with pytest.raises(SpecplanError, match="windows are empty"):
        run_strategy("slm-is", {"k": 4}, ws, {"law": empty})
    assert ws.ledger.entries == []
