"""Clustering: k-means on constructed blobs, embedders, caching and save/load round trips."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from planner.core.errors import SpecplanError
from planner.data import clustering
from planner.data.clustering import (
    Clustering,
    HashedNgramEmbedder,
    MiniLMEmbedder,
    assign,
    fit_clustering,
    get_embedder,
    histogram_entropy,
    kmeans,
    top_cluster_fraction,
)
from planner.data.corpus import TokenWindows


def adjusted_rand_index(a: torch.Tensor, b: torch.Tensor) -> float:
    """Agreement of two labelings corrected for chance (1 = identical up to renaming)."""
    table = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    table.index_put_((a, b), torch.ones(a.numel(), dtype=torch.float64), accumulate=True)

    def pairs(x: torch.Tensor) -> float:
        return float((x * (x - 1) / 2).sum())

    both, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (a.numel() * (a.numel() - 1) / 2)
    return (both - expected) / ((rows + cols) / 2 - expected)


def blobs(n_per: int = 50, k: int = 4, dim: int = 8, seed: int = 0):
    """``k`` tight, well-separated Gaussian blobs: points (k * n_per, dim) and true labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=gen) * 10  # (k, dim)
    labels = torch.arange(k).repeat_interleave(n_per)  # (n,)
    x = centres[labels] + 0.1 * torch.randn(k * n_per, dim, generator=gen)  # (n, dim)
    return x, labels


def two_domain_windows(n_per: int = 100, seq_len: int = 64, seed: int = 0):
    """Windows from two 'domains' with disjoint vocabularies (ids 0-499 vs 500-999)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 500, (n_per, seq_len), generator=gen)
    b = torch.randint(500, 1000, (n_per, seq_len), generator=gen)
    return TokenWindows(ids=torch.cat([a, b])), torch.arange(2).repeat_interleave(n_per)


def purity(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of points in the majority true class of their cluster."""
    hits = sum(int(torch.bincount(truth[pred == c]).max()) for c in pred.unique())
    return hits / truth.numel()


def test_kmeans_recovers_separated_blobs():
    x, truth = blobs()
    result = kmeans(x, 4, seed=0)
    assert adjusted_rand_index(result.assignments, truth) == pytest.approx(1.0)
    assert result.centroids.shape == (4, 8)
    # Inertia is the within-blob noise only: 200 points * 8 dims * 0.1**2 on average.
    assert result.inertia == pytest.approx(200 * 8 * 0.01, rel=0.3)


def test_kmeans_is_deterministic_for_a_seed_and_batching_does_not_matter():
    x, truth = blobs(n_per=30, k=6, seed=1)
    first = kmeans(x, 6, seed=3)
    again = kmeans(x, 6, seed=3, batch_size=7)
    assert torch.equal(first.assignments, again.assignments)
    assert torch.allclose(first.centroids, again.centroids, atol=1e-5)
    assert adjusted_rand_index(kmeans(x, 6, seed=4).assignments, truth) == pytest.approx(1.0)
    assert torch.equal(assign(x, first.centroids, batch_size=5), first.assignments)


def test_kmeans_with_k_equal_n_uses_every_point():
    x, _ = blobs(n_per=3, k=2)
    result = kmeans(x, 6, seed=0)
    assert sorted(result.assignments.tolist()) == list(range(6))
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_kmeans_rejects_k_larger_than_n():
    x, _ = blobs(n_per=2, k=2)
    with pytest.raises(SpecplanError, match=r"k=5 is larger than the number of windows \(4\)"):
        kmeans(x, 5)


def test_hashed_embedder_separates_two_domains():
    windows, truth = two_domain_windows()
    embedder = HashedNgramEmbedder()
    vectors = embedder.embed_windows(windows.ids)
    assert vectors.shape == (200, 256) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(200), atol=1e-5)
    assert purity(kmeans(vectors, 2, seed=0).assignments, truth) > 0.9


def test_hashed_embedder_keeps_its_fitted_state_for_new_windows():
    windows, _ = two_domain_windows(n_per=20)
    embedder = HashedNgramEmbedder(dim=16, n_features=2**12, sketch_dim=64, batch_size=8)
    embedder.fit(windows.ids)
    full = embedder.embed_windows(windows.ids)
    # A window's vector does not depend on the batch it comes in: idf and basis are fixed.
    assert torch.allclose(embedder.embed_windows(windows.ids[3:5]), full[3:5], atol=1e-6)
    fresh = HashedNgramEmbedder(dim=16, n_features=2**12, sketch_dim=64)
    fresh.load_state(embedder.state())
    assert torch.allclose(fresh.embed_windows(windows.ids), full, atol=1e-6)


def test_get_embedder_rejects_unknown_names():
    assert isinstance(get_embedder(), HashedNgramEmbedder)
    with pytest.raises(SpecplanError, match="choose one of hashed, minilm"):
        get_embedder("bert")


def test_minilm_embeds_texts_and_windows():
    embedder = get_embedder("minilm")
    vectors = embedder.embed_texts(["a cat sat on the mat", "contract law", "protein folding"])
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    words = ["cat", "dog", "court", "judge"]

    def decode(rows: list[list[int]]) -> list[str]:
        return [" ".join(words[i] for i in row) for row in rows]

    ids = torch.tensor([[0, 1, 0], [2, 3, 2]])
    texts = decode(ids.tolist())
    assert torch.allclose(embedder.embed_windows(ids, decode), embedder.embed_texts(texts))
    with pytest.raises(SpecplanError, match="needs decode="):
        embedder.embed_windows(ids)


def test_minilm_embedder_is_a_registered_class():
    assert isinstance(get_embedder("minilm", batch_size=8), MiniLMEmbedder)


def test_fit_clustering_is_cached(tmp_path: Path, monkeypatch):
    windows, truth = two_domain_windows(n_per=30)
    domain = TokenWindows(ids=windows.ids[:10])
    first = fit_clustering(windows, k=2, cache_dir=tmp_path)
    assert purity(first.generic_assignments, truth) > 0.9
    assert len(list((tmp_path / "clusters").iterdir())) == 1

    def no_kmeans(*args, **kwargs):
        raise AssertionError("kmeans ran although the clustering was cached")

    monkeypatch.setattr(clustering, "kmeans", no_kmeans)
    second = fit_clustering(windows, k=2, cache_dir=tmp_path)
    assert torch.equal(second.generic_assignments, first.generic_assignments)
    assert torch.equal(second.assign(domain), first.assign(domain))
    with pytest.raises(AssertionError, match="kmeans ran"):  # another k is another cache entry
        fit_clustering(windows, k=3, cache_dir=tmp_path)


def test_save_load_round_trip(tmp_path: Path):
    windows, _ = two_domain_windows(n_per=25)
    domain = TokenWindows(ids=windows.ids[20:40])
    fitted = fit_clustering(windows, k=3, seed=1)
    fitted.save(tmp_path / "c")
    fitted.save(tmp_path / "c")  # overwriting an existing folder is fine
    loaded = Clustering.load(tmp_path / "c")
    assert loaded.k == 3 and loaded.embedder_name == "hashed"
    assert torch.equal(loaded.generic_assignments, fitted.generic_assignments)
    assert torch.equal(loaded.assign(domain), fitted.assign(domain))
    assert torch.equal(loaded.histogram(domain), fitted.histogram(domain))
    with pytest.raises(SpecplanError, match="no saved clustering"):
        Clustering.load(tmp_path / "missing")


def test_histograms():
    windows, _ = two_domain_windows(n_per=30)
    fitted = fit_clustering(windows, k=2)
    h = fitted.histogram(TokenWindows(ids=windows.ids[:30]))
    assert h.shape == (2,) and float(h.sum()) == pytest.approx(1.0)
    assert top_cluster_fraction(h) == pytest.approx(1.0)
    assert torch.allclose(fitted.generic_histogram(), torch.tensor([0.5, 0.5]))
    with pytest.raises(SpecplanError, match="windows are empty"):
        fitted.histogram(TokenWindows(ids=torch.zeros(0, 64, dtype=torch.long)))


def test_histogram_statistics():
    assert histogram_entropy(torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(math.log(4))
    assert histogram_entropy(torch.tensor([0.0, 5.0, 0.0])) == pytest.approx(0.0)
    assert top_cluster_fraction(torch.tensor([1.0, 3.0, 0.0])) == pytest.approx(0.75)
    with pytest.raises(SpecplanError, match="no mass"):
        histogram_entropy(torch.zeros(3))


def test_the_charged_clustering_flops_match_torch_s_flop_counter():
    """What a clustering is charged is what it computes: torch counts the matrix products
    (Gram matrix, subspace iteration, projections, k-means distances), which dominate; the
    sketch's scattered adds it does not count are a few percent, and Lloyd is charged at its
    iteration cap (it stopped earlier here)."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(0, 300, (2000, 32), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        fitted = fit_clustering(ids, k=4)
    measured, charged = counter.get_total_flops(), fitted.fit_flops(32)
    assert charged == clustering.clustering_fit_flops(get_embedder("hashed"), 2000, 32, 4)
    assert measured <= charged <= 1.05 * measured
    assert fitted.fitted_here and fitted.fit_seconds > 0
