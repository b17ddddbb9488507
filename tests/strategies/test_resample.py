"""Importance sampling: weights, histogram-matching resampling, ESS, and the DSIR baseline."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from planner.core.errors import SpecplanError
from strategies.importance.resample import (
    dsir_resample,
    importance_weights,
    resample_to_histogram,
    unreachable_mass,
)


def test_resampled_histogram_matches_the_domain():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([500, 50, 5, 300, 1, 120, 24, 1000])  # uneven generic clusters
    labels = torch.repeat_interleave(torch.arange(8), sizes)[torch.randperm(2000, generator=gen)]
    domain = torch.tensor([0.05, 0.30, 0.10, 0.02, 0.08, 0.25, 0.15, 0.05])
    n = 20000
    result = resample_to_histogram(labels, domain, n, seed=0)
    assert result.indices.shape == (n,)
    assert int(result.indices.min()) >= 0 and int(result.indices.max()) < labels.numel()
    drawn = torch.bincount(labels[result.indices], minlength=8).double() / n
    assert torch.allclose(result.histogram, drawn)
    bound = 4 * torch.sqrt(domain * (1 - domain) / n)
    assert bool(((result.histogram - domain).abs() < bound).all())
    assert result.unreachable_mass == 0.0
    same = resample_to_histogram(labels, domain, n, seed=0)
    assert torch.equal(same.indices, result.indices)
    assert not torch.equal(resample_to_histogram(labels, domain, n, seed=1).indices, result.indices)
    # Windows are uniform inside a cluster: all 5 windows of cluster 2 are drawn about equally.
    members = (labels == 2).nonzero().flatten()
    per_window = torch.bincount(result.indices, minlength=labels.numel())[members].double()
    assert float(per_window.min()) > 0.6 * float(per_window.mean())


def test_weights_are_finite_with_empty_clusters():
    generic = torch.tensor([3.0, 0.0, 1.0, 0.0])
    domain = torch.tensor([1.0, 1.0, 0.0, 0.0])
    weights = importance_weights(domain, generic)
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights, torch.tensor([2 / 3, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert unreachable_mass(domain, generic) == pytest.approx(0.5)
    smoothed = importance_weights(domain, generic, eps=1.0)  # domain becomes [2, 2, 1, 1] / 6
    assert torch.allclose(smoothed, torch.tensor([4 / 9, 0.0, 2 / 3, 0.0], dtype=torch.float64))
    assert unreachable_mass(domain, generic, eps=1.0) == pytest.approx(0.5)
    with pytest.raises(SpecplanError, match="same clustering"):
        importance_weights(domain, generic[:3])


def test_resample_reports_unreachable_mass_and_rejects_an_unreachable_domain():
    labels = torch.tensor([0, 0, 0, 2])
    result = resample_to_histogram(labels, torch.tensor([1.0, 1.0, 0.0, 0.0]), 100, seed=0)
    assert result.unreachable_mass == pytest.approx(0.5)
    assert set(result.indices.tolist()) == {0, 1, 2}
    assert torch.allclose(result.histogram, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    with pytest.raises(SpecplanError, match="empty on the generic clusters; lower k"):
        resample_to_histogram(labels, torch.tensor([0.0, 1.0, 0.0, 1.0]), 10)


def test_effective_sample_size_and_distinct_on_a_hand_built_case():
    # Per-window weights are proportional to q_c / n_c = [1/6, 1/6, 1/6, 1/2]: ESS = 1 / (1/3).
    skewed = resample_to_histogram(torch.tensor([0, 0, 0, 1]), torch.tensor([0.5, 0.5]), 1000)
    assert skewed.effective_sample_size == pytest.approx(3.0)
    assert skewed.distinct == 4
    # When the domain looks like the generic set, every window counts fully.
    matched = resample_to_histogram(torch.tensor([0, 0, 1, 1]), torch.tensor([0.5, 0.5]), 1)
    assert matched.effective_sample_size == pytest.approx(4.0)
    assert matched.distinct == 1


LEGAL = "court judge plaintiff defendant statute appeal ruling counsel jury verdict".split()
COOKING = "flour butter oven simmer garlic onion recipe bake salt pepper".split()


def documents(words: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(words) for _ in range(40)) for _ in range(n)]


def test_dsir_resample_prefers_domain_like_documents(tmp_path: Path):
    rng = random.Random(0)
    generic = documents(LEGAL, 20, rng) + documents(COOKING, 20, rng)  # legal docs are 0-19
    domain = documents(LEGAL, 10, rng)
    result = dsir_resample(generic, domain, 10, seed=0, work_dir=tmp_path)
    assert result.indices.shape == (10,) and result.distinct == 10
    assert sum(int(i) < 20 for i in result.indices) >= 9
    assert 1.0 <= result.effective_sample_size <= 40.0
    again = dsir_resample(generic, domain, 10, seed=0, work_dir=tmp_path)
    assert torch.equal(again.indices, result.indices)
    assert list(tmp_path.iterdir()) == []  # temporary jsonl files are cleaned up
    with pytest.raises(SpecplanError, match="exceeds the 40 generic documents"):
        dsir_resample(generic, domain, 41, work_dir=tmp_path)
