"""Importance sampling of generic windows towards a domain (SLM-is), and the DSIR baseline.

The paper (Grangier et al., arXiv 2402.01093, §2.4) assumes that within a cluster the domain looks
like generic data, so the domain loss is the generic loss reweighted by
``w(c) = P(c | domain) / P(c | generic)``. In practice the generic set is *resampled*: draw a
cluster from the domain histogram, then a window uniformly inside it. With many clusters the mass
can sit on a few small clusters and the stream repeats windows, so every :class:`Resample` reports
the effective sample size and the number of distinct windows drawn.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from planner.core.errors import SpecplanError


@dataclass
class Resample:
    """A resampled stream of generic windows (or documents, for DSIR).

    Attributes:
        indices: (n_draws,) generic indices drawn, in stream order.
        effective_sample_size: Kish ESS ``(sum w)^2 / sum w^2`` of the per-item importance weights
            over the whole generic set: how many generic items the weighting is really worth.
        distinct: number of distinct items drawn.
        unreachable_mass: domain mass on clusters with no generic window (lost to the sampler).
        histogram: (k,) cluster histogram of the drawn windows; empty for DSIR, which has no
            clusters.
    """

    indices: torch.Tensor
    effective_sample_size: float
    distinct: int
    unreachable_mass: float
    histogram: torch.Tensor


def _histogram(h: torch.Tensor, what: str) -> torch.Tensor:
    """Check ``h`` is a finite, non-negative (k,) histogram; return it as float64."""
    h = torch.as_tensor(h).double()
    if h.dim() != 1 or h.numel() == 0:
        raise SpecplanError(
            f"{what}: expected a (k,) cluster histogram, got shape {tuple(h.shape)}; pass a 1-D one"
        )
    if not torch.isfinite(h).all() or (h < 0).any():
        raise SpecplanError(f"{what}: counts must be finite and non-negative; check the histogram")
    return h


def _domain_probabilities(domain_hist: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalised domain histogram (k,) after add-``eps`` smoothing."""
    if eps < 0:
        raise SpecplanError(f"importance weights: eps={eps} is negative; use eps >= 0")
    d = _histogram(domain_hist, "domain histogram") + eps
    total = d.sum()
    if total <= 0:
        raise SpecplanError(
            "domain histogram: it has no mass; cluster at least one domain window first"
        )
    return d / total


def importance_weights(
    domain_hist: torch.Tensor, generic_hist: torch.Tensor, *, eps: float = 0.0
) -> torch.Tensor:
    """Per-cluster importance weights ``P(c | domain) / P(c | generic)`` (k,), float64.

    Both histograms may be counts or probabilities; each is normalised. A cluster with no generic
    window cannot be sampled and gets weight 0 (its domain mass is :func:`unreachable_mass`), so
    the result is always finite. ``eps`` adds pseudo-counts to the domain histogram, in the
    histogram's own unit, which keeps clusters the small domain set missed by chance reachable
    (add-eps smoothing: this code's choice; v2 §2.4 estimates plain cluster frequencies).

    Raises:
        SpecplanError: if the histograms differ in size, are negative or have no mass.
    """
    d = _domain_probabilities(domain_hist, eps)  # (k,)
    g = _histogram(generic_hist, "generic histogram")  # (k,)
    if g.shape != d.shape:
        raise SpecplanError(
            f"importance weights: domain histogram has {d.numel()} clusters but generic has "
            f"{g.numel()}; build both with the same clustering"
        )
    if g.sum() <= 0:
        raise SpecplanError("generic histogram: it has no mass; cluster the generic windows first")
    g = g / g.sum()
    reachable = g > 0
    return torch.where(reachable, d / torch.where(reachable, g, torch.ones_like(g)), 0.0)


def unreachable_mass(
    domain_hist: torch.Tensor, generic_hist: torch.Tensor, *, eps: float = 0.0
) -> float:
    """Domain probability on clusters without any generic window (weight 0 there)."""
    d = _domain_probabilities(domain_hist, eps)
    g = _histogram(generic_hist, "generic histogram")
    return float(d[g <= 0].sum())


def _kish_ess(weights: torch.Tensor) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of non-negative weights."""
    square_sum = float((weights * weights).sum())
    return float(weights.sum()) ** 2 / square_sum if square_sum > 0 else 0.0


def resample_to_histogram(
    generic_assignments: torch.Tensor, domain_hist: torch.Tensor, n_draws: int, *, seed: int = 0
) -> Resample:
    """Draw ``n_draws`` generic windows whose cluster histogram follows the domain's.

    Each draw picks a cluster from the domain histogram restricted to clusters that hold generic
    windows (renormalised), then a window uniformly inside that cluster: the paper's resampling,
    which in expectation weights each generic window by ``w(c)``. Draws are with replacement and
    vectorised; the same seed gives the same stream.

    Args:
        generic_assignments: (n_generic,) cluster id of each generic window.
        domain_hist: (k,) domain cluster histogram (counts or probabilities).
        n_draws: length of the stream.
        seed: seed of the draws.

    Raises:
        SpecplanError: if the domain has no mass on clusters with generic windows, or on bad
            shapes or sizes.
    """
    d = _histogram(domain_hist, "domain histogram")  # (k,)
    k = d.numel()
    labels = torch.as_tensor(generic_assignments).long().flatten()  # (n,)
    if labels.numel() == 0:
        raise SpecplanError("resample: there are no generic windows; give a generic corpus")
    if labels.min() < 0 or labels.max() >= k:
        raise SpecplanError(
            f"resample: generic cluster ids must lie in [0, {k}) to match the domain histogram; "
            "build both with the same clustering"
        )
    if n_draws < 1:
        raise SpecplanError(f"resample: n_draws={n_draws} must be at least 1")
    counts = torch.bincount(labels, minlength=k)  # (k,)
    reachable = counts > 0
    total = d.sum()
    mass = d * reachable
    if total <= 0 or mass.sum() <= 0:
        raise SpecplanError(
            "the domain's cluster histogram is empty on the generic clusters; lower k or use "
            "another embedder"
        )
    unreachable = float(1 - mass.sum() / total)
    q = mass / mass.sum()  # (k,) sampling distribution over clusters

    gen = torch.Generator().manual_seed(seed)
    clusters = torch.multinomial(q, n_draws, replacement=True, generator=gen)  # (n_draws,)
    order = torch.argsort(labels, stable=True)  # (n,) window indices grouped by cluster
    starts = torch.cumsum(counts, 0) - counts  # (k,) first slot of each cluster in ``order``
    u = torch.rand(n_draws, generator=gen, dtype=torch.float64)  # (n_draws,)
    offset = (u * counts[clusters]).long().clamp_max(counts[clusters] - 1)  # (n_draws,)
    indices = order[starts[clusters] + offset]  # (n_draws,)

    # Per-window weight q_c / P(c | generic) is proportional to q_c / n_c.
    per_window = q[labels] / counts[labels].double()  # (n,)
    return Resample(
        indices=indices,
        effective_sample_size=_kish_ess(per_window),
        distinct=int(torch.unique(indices).numel()),
        unreachable_mass=unreachable,
        histogram=torch.bincount(labels[indices], minlength=k).double() / n_draws,
    )


def _write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")


def dsir_resample(
    generic_texts: list[str],
    domain_texts: list[str],
    n_draws: int,
    *,
    seed: int = 0,
    work_dir: str | Path,
    ngrams: int = 2,
    num_buckets: int = 10000,
    min_example_length: int = 0,
) -> Resample:
    """DSIR baseline (Xie et al. 2023): hashed n-gram importance resampling of whole documents.

    The ``data_selection`` package fits the two bag-of-hashed-n-gram models and computes each
    generic document's log importance weight, on jsonl copies of the texts in a temporary folder
    under ``work_dir`` (removed afterwards). Its own ``resample`` step is *not* used: it draws with
    the unseeded global numpy RNG and writes selected documents to jsonl rather than returning
    indices. Instead the same Gumbel top-k draw over its fitted log weights is done here with a
    seeded generator; sorting by the perturbed key gives the order of sequential sampling without
    replacement, which is the stream order of ``indices``.

    Args:
        generic_texts: the generic documents; ``indices`` refer to this list.
        domain_texts: the domain (target) documents.
        n_draws: documents to draw, without replacement.
        seed: seed of the Gumbel noise.
        work_dir: where the temporary jsonl files and DSIR's cache go.
        ngrams: DSIR's n-gram order (2 = unigrams and bigrams).
        num_buckets: DSIR's hash buckets.
        min_example_length: documents with fewer words are never drawn (DSIR's own default is
            100; 0 here because a caller mapping documents to windows wants every document).

    Raises:
        SpecplanError: if ``data-selection`` is missing, a list is empty, or ``n_draws`` exceeds
            the documents that can be drawn.
    """
    try:
        from data_selection import HashedNgramDSIR
    except ImportError as exc:
        raise SpecplanError(
            f"DSIR baseline: data-selection is not importable ({exc}); "
            "run pip install 'specplan[dsir]'"
        ) from None
    if not generic_texts or not domain_texts:
        raise SpecplanError(
            "DSIR baseline: generic and domain texts must both be non-empty; give both corpora"
        )
    if n_draws < 1:
        raise SpecplanError(f"DSIR baseline: n_draws={n_draws} must be at least 1")

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dsir-", dir=work_dir))
    try:
        raw_path, target_path = tmp / "generic.jsonl", tmp / "domain.jsonl"
        _write_jsonl(raw_path, generic_texts)
        _write_jsonl(target_path, domain_texts)
        # num_proc=1 keeps one virtual shard, so the weight file is in document order.
        dsir = HashedNgramDSIR(
            [str(raw_path)], [str(target_path)], cache_dir=str(tmp / "cache"), num_proc=1,
            ngrams=ngrams, num_buckets=num_buckets, min_example_length=min_example_length,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        log_w = np.load(dsir.log_importance_weights_dir / "0.npy")
        lengths = np.load(dsir.perexample_metadata_dir / "0.npy")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    log_w = torch.from_numpy(np.asarray(log_w, dtype=np.float64))  # (n,)
    eligible = torch.from_numpy(np.asarray(lengths) >= min_example_length)  # (n,)
    n_eligible = int(eligible.sum())
    if n_draws > n_eligible:
        raise SpecplanError(
            f"DSIR baseline: n_draws={n_draws} exceeds the {n_eligible} generic documents it can "
            f"draw without replacement (min_example_length={min_example_length}); lower n_draws "
            "or add generic documents"
        )
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(log_w.shape, generator=gen, dtype=torch.float64).clamp_min(1e-300)  # (n,)
    keys = torch.where(eligible, log_w - torch.log(-torch.log(u)), -torch.inf)  # (n,)
    indices = torch.sort(keys, descending=True, stable=True).indices[:n_draws]  # (n_draws,)
    weights = torch.where(eligible, torch.exp(log_w - log_w[eligible].max()), 0.0)  # (n,)
    return Resample(
        indices=indices,
        effective_sample_size=_kish_ess(weights),
        distinct=n_draws,
        unreachable_mass=0.0,
        histogram=torch.zeros(0, dtype=torch.float64),
    )
