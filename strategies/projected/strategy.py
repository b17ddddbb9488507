"""Projected networks (``slm-pn``, v2 §2.5) and histogram hyper-networks (``slm-hn``).

``slm-hn`` follows Soup-of-Experts (Ablin et al. 2025, arXiv 2502.01804): the member is chosen by
a cluster histogram, so a domain spread over several clusters (the case where ``slm-pn`` and
``slm-mix`` do not beat ``slm``, v2 App. E) gets a model of its own mixture.

Both pretrain one large, cluster-conditioned network whose every forward pass runs a model of the
deployed size, so any of its members can be written out in closed form as a plain ``slm``-shaped
Llama model and fine-tuned. Only the MLP is conditioned; attention, norms and the (tied)
embeddings are shared, as in the reference study.

One layer of the projected network (all three SwiGLU matrices, ``gate``/``up``/``down``, are
projected; the study's ``T^(1,l)`` hints at more than one tensor per layer and the choice is
[UNCONFIRMED], so we project all three to put the capacity where the MLP parameters are)::

    condition --> coefficients --> alpha_l (h,)        per layer l, once per micro-batch
     expert i      slm-pn: alpha_l = E_i M_l             E (k, m), M_l (m, h)
     histogram p   slm-hn: alpha_l = base_l + MLP(p)_l   MLP: k -> m -> L*h

                      gate_l = T_gate,l @ alpha_l      T_gate,l (d', d, h) -> (d', d)
    alpha_l (h,) ---> up_l   = T_up,l   @ alpha_l      T_up,l   (d', d, h) -> (d', d)
                      down_l = T_down,l @ alpha_l      T_down,l (d, d', h) -> (d, d')

    x (B, T, d) --> down_l( silu(gate_l x) * up_l x ) --> (B, T, d)     same as LlamaMLP

The basis tensors ``T`` hold most of the parameters (h times the deployed MLPs); a member costs
one matrix-vector product per weight matrix to build, then exactly an ``slm`` forward pass.

Micro-batches are conditioned on one expert (or one histogram) each, so the weights are built
once per micro-batch, not per example (an efficiency choice of this code, not the study's).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.core.errors import SpecplanError
from planner.core.io import write_json
from planner.data.clustering import Clustering
from planner.engine.devices import device_label
from planner.engine.evaluate import perplexity
from planner.engine.models import ModelShape
from planner.engine.train import scaled_lr, train
from strategies.base import (
    CostEstimate,
    PretrainSettings,
    Specialized,
    Strategy,
    register,
    setting,
    step_flops,
)
from strategies.workspace import Artifact

_FORMAT = 1
_WEIGHTS = "projected.safetensors"
_DIMS = "projected.json"
_CLUSTERING = "clustering"


# -- costs --------------------------------------------------------------------------------------
def basis_params(shape: ModelShape, h: int) -> int:
    """Parameters of the basis tensors: h copies of every deployed MLP matrix."""
    return shape.num_hidden_layers * shape.mlp_params * h


def shared_params(shape: ModelShape) -> int:
    """Parameters every member shares: the deployed model without its MLPs."""
    return shape.params_total - shape.num_hidden_layers * shape.mlp_params


def materialise_flops(shape: ModelShape, h: int, coefficient_flops: float) -> float:
    """Forward FLOPs of building one member's MLP weights.

    The coefficients ``alpha_l`` (h,) are computed once per layer (``coefficient_flops`` for all
    layers) and shared by the layer's three matrices; each matrix ``T @ alpha`` then costs
    ``2 * d * d' * h``.
    """
    return coefficient_flops + 2.0 * h * shape.num_hidden_layers * shape.mlp_params


def projected_train_flops_per_token(
    shape: ModelShape, h: int, coefficient_flops: float, tokens_per_batch: int
) -> float:
    """Training FLOPs per token of a projected network: the deployed model's, plus building the
    weights once per micro-batch (forward and backward, 3x), amortised over its tokens.

    Args:
        shape: the deployed model.
        h: basis tensors per matrix.
        coefficient_flops: FLOPs of computing every layer's coefficients once
            (:meth:`ExpertCoefficients.flops`, :meth:`HistogramCoefficients.flops`).
        tokens_per_batch: tokens of one micro-batch (``batch_size * seq_len``).

    Under data parallelism every process builds the weights for its shard of the micro-batch,
    which this count (like the ledger) includes once.
    """
    per_batch = 3.0 * materialise_flops(shape, h, coefficient_flops)
    return shape.train_flops_per_token() + per_batch / tokens_per_batch


# -- conditions ---------------------------------------------------------------------------------
def check_expert(expert: Any, k: int) -> int:
    """An expert id as an int in [0, k); a user-facing error otherwise."""
    try:
        value = int(expert)
        if value != expert:
            raise ValueError(expert)
    except (TypeError, ValueError, RuntimeError):
        raise SpecplanError(
            f"expert {expert!r} is not an integer id; give one in [0, {k})"
        ) from None
    if not 0 <= value < k:
        raise SpecplanError(f"expert {value} is out of range; give an id in [0, {k})")
    return value


def check_histogram(histogram: Any, k: int) -> torch.Tensor:
    """A cluster histogram as a float (k,) tensor on the simplex; a user-facing error otherwise."""
    p = torch.as_tensor(histogram, dtype=torch.float32).flatten()  # (k,)
    if p.numel() != k:
        raise SpecplanError(f"cluster histogram has {p.numel()} entries, expected k={k}")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise SpecplanError("cluster histogram has negative or non-finite entries; give fractions")
    if abs(float(p.sum()) - 1.0) > 1e-4:
        raise SpecplanError(f"cluster histogram sums to {float(p.sum()):.6g}, expected 1")
    return p


# -- the network --------------------------------------------------------------------------------
class BasisMLP(nn.Module):
    """A SwiGLU MLP whose three matrices are ``T @ alpha`` for the coefficients set on it.

    Drop-in for ``LlamaMLP``: the decoder layer calls it with the hidden states only, so the
    owning :class:`ProjectedNetwork` sets ``alpha`` (h,) before each forward pass.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, h: int, std: float,
                 act: str) -> None:
        from transformers.activations import ACT2FN

        super().__init__()
        d, ff = hidden_size, intermediate_size
        # With ||alpha|| = 1, T @ alpha has the std of T: a normally initialised MLP.
        self.gate_basis = nn.Parameter(torch.randn(ff, d, h) * std)  # (d', d, h)
        self.up_basis = nn.Parameter(torch.randn(ff, d, h) * std)  # (d', d, h)
        self.down_basis = nn.Parameter(torch.randn(d, ff, h) * std)  # (d, d', h)
        self.act_fn = ACT2FN[act]
        self.alpha: torch.Tensor | None = None

    def weights(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate (d', d), up (d', d), down (d, d')) for coefficients ``alpha`` (h,)."""
        return self.gate_basis @ alpha, self.up_basis @ alpha, self.down_basis @ alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        if self.alpha is None:
            raise RuntimeError("BasisMLP needs coefficients: call ProjectedNetwork(ids, condition)")
        gate, up, down = self.weights(self.alpha)
        return F.linear(self.act_fn(F.linear(x, gate)) * F.linear(x, up), down)


class ExpertCoefficients(nn.Module):
    """``slm-pn``: ``alpha_l = E_i M_l`` for expert i (v2 §2.5).

    Initialised so that ``||alpha_l|| = 1`` for every expert when ``m <= h`` (unit expert
    vectors, ``M_l`` with orthonormal rows), and in expectation when ``m > h`` (orthonormal
    columns scaled by ``sqrt(m / h)``).
    """

    kind: ClassVar[str] = "pn"

    def __init__(self, k: int, m: int, layers: int, h: int) -> None:
        super().__init__()
        experts = torch.randn(k, m)
        self.experts = nn.Parameter(experts / experts.norm(dim=1, keepdim=True))  # (k, m)
        layer = torch.empty(layers, m, h)  # (L, m, h)
        for matrix in layer:
            nn.init.orthogonal_(matrix, gain=math.sqrt(max(1.0, m / h)))
        self.layers = nn.Parameter(layer)
        self.k = k

    @staticmethod
    def flops(k: int, m: int, layers: int, h: int) -> float:
        return 2.0 * layers * m * h

    @staticmethod
    def params(k: int, m: int, layers: int, h: int) -> int:
        return k * m + layers * m * h

    def check(self, condition: Any) -> int:
        return check_expert(condition, self.k)

    def forward(self, expert: int | torch.Tensor) -> torch.Tensor:  # -> (L, h)
        return torch.einsum("q,lqr->lr", self.experts[expert], self.layers)


class HistogramCoefficients(nn.Module):
    """``slm-hn``: ``alpha_l = base_l + MLP(p)_l`` for a cluster histogram p (Soup-of-Experts).

    The MLP is ``k -> m (GELU) -> L*h``. ``T @ base_l`` plays the part of Soup-of-Experts'
    shared parameters. The MLP's output layer starts at zero and ``base_l`` at unit norm, so every
    histogram starts as the same normally initialised model and the histogram's influence is
    learnt.
    """

    kind: ClassVar[str] = "hn"

    def __init__(self, k: int, m: int, layers: int, h: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(k, m)  # (m, k) + (m,)
        self.out = nn.Linear(m, layers * h, bias=False)  # (L*h, m)
        nn.init.zeros_(self.out.weight)
        base = torch.randn(layers, h)
        self.base = nn.Parameter(base / base.norm(dim=1, keepdim=True))  # (L, h)
        self.k = k

    @staticmethod
    def flops(k: int, m: int, layers: int, h: int) -> float:
        return 2.0 * (k * m + m * layers * h)

    @staticmethod
    def params(k: int, m: int, layers: int, h: int) -> int:
        return k * m + m + m * layers * h + layers * h

    def check(self, condition: Any) -> torch.Tensor:
        return check_histogram(condition, self.k)

    def forward(self, histogram: torch.Tensor) -> torch.Tensor:  # (k,) -> (L, h)
        hidden = F.gelu(self.hidden(histogram))  # (m,)
        return self.base + self.out(hidden).view_as(self.base)


COEFFICIENTS: dict[str, type[nn.Module]] = {"pn": ExpertCoefficients, "hn": HistogramCoefficients}


class ProjectedNetwork(nn.Module):
    """A deployed-size Llama model whose MLPs are :class:`BasisMLP` s, conditioned per forward.

    Args:
        kind: ``pn`` (condition = expert id) or ``hn`` (condition = cluster histogram).
        shape: the deployed model.
        k: experts / clusters.
        m: expert vector dimension (``pn``) or hidden width of the histogram MLP (``hn``).
        h: basis tensors per MLP matrix.
        seed: initialisation seed (shared weights are those of ``shape.build(seed)``).
        base: a loaded checkpoint of ``shape`` to start from instead (:meth:`_start_from`).
    """

    def __init__(self, kind: str, shape: ModelShape, *, k: int, m: int, h: int,
                 seed: int = 0, base: nn.Module | None = None) -> None:
        super().__init__()
        self.kind, self.shape, self.k, self.m, self.h = kind, shape, k, m, h
        self.lm = base if base is not None else shape.build(seed=seed)
        config = self.lm.config
        layers = getattr(getattr(self.lm, "model", None), "layers", [])
        originals = [layer.mlp for layer in layers]
        if base is not None and not (originals and all(hasattr(mlp, "gate_proj")
                                                       for mlp in originals)):
            raise SpecplanError(f"slm-{kind}: the base's MLP is not gated (gate, up and down "
                                f"projections, as in Llama, Qwen or Mistral), so it has no "
                                f"basis form; use a gated base, or slm, slm-mix with this one")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            for layer in self.lm.model.layers:
                layer.mlp = BasisMLP(shape.hidden_size, shape.intermediate_size, h,
                                     config.initializer_range, config.hidden_act)
            self.coefficients = COEFFICIENTS[kind](k, m, shape.num_hidden_layers, h)
        if base is not None:
            self._start_from(originals)

    @torch.no_grad()
    def _start_from(self, mlps: list[nn.Module]) -> None:
        """Start every member as the base: each basis tensor is the base's matrix times a
        vector ``u_l`` with ``alpha_l . u_l = 1`` for the members' coefficients, so
        ``T @ alpha_l`` is the base's matrix. ``u_l`` is the least-norm solution over the k
        experts' coefficients (``pn``: exact when k <= h, the least-squares fit otherwise) or
        over the one coefficient vector every histogram shares at initialisation (``hn``)."""
        corners = range(self.k) if self.kind == "pn" else [torch.eye(self.k)[i]
                                                           for i in range(self.k)]
        alphas = torch.stack([self.coefficients(c) for c in corners], 1)  # (L, k, h)
        for layer, mlp, alpha in zip(self.lm.model.layers, mlps, alphas):
            u = torch.linalg.pinv(alpha) @ torch.ones(self.k)  # (h,)
            for basis, weight in ((layer.mlp.gate_basis, mlp.gate_proj.weight),
                                  (layer.mlp.up_basis, mlp.up_proj.weight),
                                  (layer.mlp.down_basis, mlp.down_proj.weight)):
                basis.copy_(weight[..., None] * u)

    def dims(self) -> dict:
        return {"format": _FORMAT, "kind": self.kind, "shape": self.shape.to_dict(),
                "k": self.k, "m": self.m, "h": self.h}

    def coefficient_flops(self) -> float:
        return self.coefficients.flops(self.k, self.m, self.shape.num_hidden_layers, self.h)

    def forward(self, input_ids: torch.Tensor, condition: int | torch.Tensor):
        """Run the member selected by ``condition`` (an expert id, or a (k,) histogram)."""
        alphas = self.coefficients(condition)  # (L, h)
        layers = self.lm.model.layers
        for layer, alpha in zip(layers, alphas):
            layer.mlp.alpha = alpha
        try:
            return self.lm(input_ids=input_ids)
        finally:
            for layer in layers:
                layer.mlp.alpha = None


@torch.no_grad()
def materialise(network: ProjectedNetwork, condition: Any):
    """The member for ``condition`` as a plain ``LlamaForCausalLM`` of the deployed shape.

    It has exactly the ``slm`` parameters and inference cost; its logits equal the network's
    for the same condition.

    Raises:
        SpecplanError: for an expert id out of range or an invalid histogram.
    """
    condition = network.coefficients.check(condition)
    device = next(network.parameters()).device
    if torch.is_tensor(condition):
        condition = condition.to(device)
    plain = network.shape.build().to(device)
    state = {name: value for name, value in network.lm.state_dict().items() if ".mlp." not in name}
    alphas = network.coefficients(condition)  # (L, h)
    for index, (layer, alpha) in enumerate(zip(network.lm.model.layers, alphas)):
        gate, up, down = layer.mlp.weights(alpha)
        prefix = f"model.layers.{index}.mlp."
        state.update({prefix + "gate_proj.weight": gate, prefix + "up_proj.weight": up,
                      prefix + "down_proj.weight": down})
    plain.load_state_dict(state)  # strict: every slm weight, nothing more
    return plain


def save_network(network: ProjectedNetwork, folder: Path) -> None:
    """Weights as safetensors (tied embeddings stored once) and the dims as JSON."""
    from safetensors.torch import save_model

    network.to("cpu")
    save_model(network, str(Path(folder) / _WEIGHTS))
    write_json(Path(folder) / _DIMS, network.dims())


def load_network(folder: Path) -> ProjectedNetwork:
    """Rebuild a network from :func:`save_network` output (never unpickles)."""
    from safetensors.torch import load_model

    dims = json.loads((Path(folder) / _DIMS).read_text())
    if dims.get("format") != _FORMAT:
        raise SpecplanError(f"projected network in {folder} has format {dims.get('format')}, "
                            f"expected {_FORMAT}; delete the artifact to retrain")
    network = ProjectedNetwork(dims["kind"], ModelShape.from_dict(dims["shape"]), k=dims["k"],
                               m=dims["m"], h=dims["h"])
    load_model(network, str(Path(folder) / _WEIGHTS))
    network.lm.config.use_cache = False
    return network


# -- losses -------------------------------------------------------------------------------------
def _token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(  # (B, T-1, V) against (B, T-1)
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1)
    )


def conditioned_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Next-token loss of the member a batch is conditioned on (expert, or histogram rows)."""
    if "expert" in batch:
        condition = batch["expert"]  # () long
    else:
        condition = batch["histogram"][0]  # (k,): every row holds the batch's histogram
    return _token_loss(model(input_ids=batch["input_ids"], condition=condition).logits,
                       batch["input_ids"])


def routed_loss(clustering, decode=None) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Loss on plain windows, each routed to the expert of its nearest cluster (validation)."""

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        experts = clustering.assign(ids.cpu(), decode).to(ids.device)  # (B,)
        total = ids.new_zeros((), dtype=torch.float32)
        for expert in experts.unique():
            rows = experts == expert
            logits = model(input_ids=ids[rows], condition=expert).logits
            total = total + _token_loss(logits, ids[rows]) * rows.sum()
        return total / len(ids)  # every window has the same number of targets

    return loss


def histogram_loss(histogram: torch.Tensor) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Loss on plain windows of the member instantiated for one histogram (validation)."""

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return _token_loss(model(input_ids=ids, condition=histogram.to(ids.device)).logits, ids)

    return loss


# -- batch sources ------------------------------------------------------------------------------
def _members(assignments: torch.Tensor, k: int) -> list[torch.Tensor]:
    return [torch.nonzero(assignments == c).flatten() for c in range(k)]


@dataclass
class ClusterBatches:
    """Micro-batches of a single cluster each: ``{"input_ids": (B, T), "expert": ()}``.

    An epoch cuts every cluster's windows (shuffled) into ``ceil(n_c / B)`` batches, wrapping
    around inside the cluster to fill the last one, and shuffles the order of all those batches.
    Clusters therefore come up in proportion to their size and every window is seen once per
    epoch. Batch ``(step, micro)`` is a pure function of the seed (resumable).
    """

    ids: torch.Tensor  # (n, T)
    assignments: torch.Tensor  # (n,)
    k: int
    batch_size: int
    grad_accum: int = 1
    seed: int = 0
    _epoch: tuple = field(default=(None, None, None), repr=False)

    def __post_init__(self) -> None:
        self.members = _members(self.assignments, self.k)
        self.slots = [(c, j) for c, rows in enumerate(self.members)
                      for j in range(math.ceil(len(rows) / self.batch_size))]
        if not self.slots:
            raise SpecplanError("no training windows: the generic corpus is smaller than a window")

    def _plan(self, epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.slots), generator=gen)
            perms = [rows[torch.randperm(len(rows), generator=gen)] for rows in self.members]
            self._epoch = (epoch, order, perms)
        return self._epoch[1], self._epoch[2]

    def batch(self, step: int, micro: int) -> dict:
        epoch, position = divmod(step * self.grad_accum + micro, len(self.slots))
        order, perms = self._plan(epoch)
        cluster, j = self.slots[int(order[position])]
        rows = perms[cluster]
        index = rows[(j * self.batch_size + torch.arange(self.batch_size)) % len(rows)]  # (B,)
        return {"input_ids": self.ids[index], "expert": torch.tensor(cluster)}


@dataclass
class HistogramBatches:
    """Micro-batches drawn from a random cluster histogram (Soup-of-Experts pretraining).

    For each micro-batch: ``p ~ Dirichlet(concentration * 1_k)`` (restricted to non-empty
    clusters), then each row's cluster ``~ p`` and a uniform window of that cluster; the batch is
    ``{"input_ids": (B, T), "histogram": (B, k)}`` with p repeated per row so that data-parallel
    sharding keeps it. A pure function of ``(seed, step, micro)``.
    """

    ids: torch.Tensor  # (n, T)
    assignments: torch.Tensor  # (n,)
    k: int
    batch_size: int
    concentration: float
    grad_accum: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        members = _members(self.assignments, self.k)
        self.sizes = np.array([len(rows) for rows in members])  # (k,)
        if not self.sizes.any():
            raise SpecplanError("no training windows: the generic corpus is smaller than a window")
        self.order = torch.cat(members)  # windows grouped by cluster
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])  # (k,)

    def batch(self, step: int, micro: int) -> dict:
        rng = np.random.default_rng([self.seed, step * self.grad_accum + micro])
        p = rng.dirichlet(np.full(self.k, self.concentration)) * (self.sizes > 0)  # (k,)
        p = p / p.sum() if p.sum() > 0 else (self.sizes > 0) / (self.sizes > 0).sum()
        clusters = rng.choice(self.k, size=self.batch_size, p=p)  # (B,)
        offsets = np.floor(rng.random(self.batch_size) * self.sizes[clusters]).astype(np.int64)
        index = self.order[torch.from_numpy(self.starts[clusters] + offsets)]  # (B,)
        histogram = torch.tensor(p, dtype=torch.float32).expand(self.batch_size, -1)  # (B, k)
        return {"input_ids": self.ids[index], "histogram": histogram.contiguous()}


# -- settings -----------------------------------------------------------------------------------
@dataclass
class ProjectedSettings(PretrainSettings):
    """Settings of ``slm-pn``; all but fine-tuning shape the pretrained network."""

    k: int = setting(8, low=2, high=256, log=True, generic=True,
                     help="experts, one per k-means cluster of the generic windows")
    h: int = setting(8, low=1, high=64, log=True, generic=True,
                     help="basis tensors per MLP matrix (pretraining capacity, about h x MLPs)")
    m: int = setting(8, low=1, high=64, log=True, generic=True,
                     help="expert vector dimension (parameters specific to one expert)")


@dataclass
class HypernetSettings(ProjectedSettings):
    """Settings of ``slm-hn``: ``m`` is the histogram MLP's width; histograms are Dirichlet."""

    m: int = setting(8, low=1, high=64, log=True, generic=True,
                     help="hidden width of the histogram-to-coefficients MLP")
    concentration: float = setting(0.5, low=0.05, high=10.0, log=True, generic=True,
                                   help="Dirichlet concentration of pretraining histograms")


# -- strategies ---------------------------------------------------------------------------------
@register
class ProjectedNetworkStrategy(Strategy):
    """``slm-pn``: pretrain a projected network, then fine-tune one expert (v2 §2.5).

    Pretraining (charged to ``generic``, shared by every domain): k-means of the generic windows
    into ``k`` clusters (charged, and paid from the budget, first), then the projected network
    is trained on micro-batches of one cluster each, routed to that cluster's expert. Its FLOPs
    per token are the deployed model's plus the amortised cost of building the expert weights
    (:func:`projected_train_flops_per_token`).
    The artifact holds the network (safetensors + JSON dims) and the clustering.

    Specialization (charged to ``specialization``): the expert of the domain's most frequent
    cluster is materialised in closed form (its FLOPs are charged) as a plain ``slm``-shaped
    model, then fine-tuned with early stopping. No generic data is read.

    Example:
        >>> from strategies import get_strategy
        >>> get_strategy("slm-pn").settings({"k": 4, "h": 2}).generic_part()["k"]
        4
    """

    name = "slm-pn"
    family = "experts"
    accepts_base = True  # every expert starts as the base (ProjectedNetwork._start_from)
    settings_cls = ProjectedSettings
    summary = "projected network: cluster experts pretrained jointly, one expert fine-tuned"
    kind: ClassVar[str] = "pn"

    # -- what differs between pn and hn ---------------------------------------------------------
    def batches(self, settings, ws, clustering, cfg):
        return ClusterBatches(ws.generic.train.ids, clustering.generic_assignments, settings.k,
                              cfg.batch_size, cfg.grad_accum, seed=cfg.seed)

    def validation_loss(self, clustering, ws):
        return routed_loss(clustering, ws.decode)

    def condition(self, clustering, domain, ws) -> tuple[Any, dict]:
        """The domain's most frequent cluster, and notes on how dominant it is."""
        histogram = clustering.histogram(domain.train.ids, ws.decode)  # (k,)
        expert = int(histogram.argmax())
        return expert, {"expert": expert, "expert_fraction": float(histogram[expert])}

    # -- shared ---------------------------------------------------------------------------------
    def _dims(self, settings, ws) -> tuple[ModelShape, float]:
        shape = ws.shape(ws.small)
        if not shape.traits["gated"]:
            raise SpecplanError(f"{self.name}: conditions a gated (SwiGLU) MLP; the deployed "
                                f"model is {shape.family}: pick a llama, mistral, qwen2 or qwen3 "
                                f"shape")
        coefficients = COEFFICIENTS[self.kind]
        return shape, coefficients.flops(settings.k, settings.m, shape.num_hidden_layers,
                                         settings.h)

    def train_flops_per_token(self, settings, ws) -> float:
        shape, coefficient_flops = self._dims(settings, ws)
        return projected_train_flops_per_token(shape, settings.h, coefficient_flops,
                                               ws.train.batch_size * ws.seq_len)

    def estimate(self, settings, ws) -> CostEstimate:
        if settings.k > ws.generic.train.n:
            raise SpecplanError(f"{self.name}: k={settings.k} is larger than the number of generic "
                                f"windows ({ws.generic.train.n}); lower k or add generic data")
        shape, coefficient_flops = self._dims(settings, ws)
        one_step = ws.train.tokens_per_step(ws.seq_len) * self.train_flops_per_token(settings, ws)
        ft_step = step_flops(shape, ws)
        build = materialise_flops(shape, settings.h, coefficient_flops)
        layers = shape.num_hidden_layers
        params = (shared_params(shape) + basis_params(shape, settings.h)
                  + COEFFICIENTS[self.kind].params(settings.k, settings.m, layers, settings.h))
        clusters = ws.clustering_flops(settings.k)  # paid from the pretraining budget first
        return CostEstimate(
            generic_flops=ws.base_cost + clusters + max(0.0, (ws.budgets.pretrain_flops - clusters)
                                                        // one_step) * one_step,
            spec_flops=build + max(0.0, (ws.budgets.spec_flops - build) // ft_step) * ft_step,
            inference_flops_per_token=shape.inference_flops_per_token(),
            params_inference=shape.params_total, params_pretrain=params,
            min_generic_flops=clusters + one_step, min_spec_flops=build + ft_step,
        )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        shape = ws.shape(ws.small)
        clustering = ws.clustering(settings.k)
        clustering_flops = ws.charge_clustering(clustering)
        continued = ws.base is not None  # every member starts as the base, at the fine-tuning rate
        if continued:
            ws.charge_base()
        network = ProjectedNetwork(self.kind, shape, k=settings.k, m=settings.m, h=settings.h,
                                   seed=ws.train.seed,
                                   base=ws.base.load() if continued else None)
        label = f"{self.name} {'continued pretraining of the base' if continued else 'pretraining'}"
        lr = settings.ft_lr if continued else settings.lr
        cfg = ws.train_config(lr=scaled_lr(lr, shape.params_non_embedding),
                              max_flops=ws.budgets.pretrain_flops - clustering_flops,
                              **ws.checkpointing(label))
        result = train(
            network, self.batches(settings, ws, clustering, cfg), cfg, seq_len=ws.seq_len,
            flops_per_token=self.train_flops_per_token(settings, ws), ledger=ws.ledger,
            phase="generic", label=label, valid=ws.generic.valid.ids,
            loss_fn=conditioned_loss, eval_loss_fn=self.validation_loss(clustering, ws),
        )
        save_network(network, folder)
        clustering.save(folder / _CLUSTERING)
        sizes = torch.bincount(clustering.generic_assignments, minlength=settings.k)
        return {"ppl_generic": perplexity(result.best_val_loss), "steps": result.steps,
                "tokens": result.tokens, "cluster_sizes": sizes.tolist()}

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        network = load_network(artifact.folder)
        clustering = Clustering.load(artifact.folder / _CLUSTERING)
        condition, notes = self.condition(clustering, domain, ws)
        shape = network.shape
        build = materialise_flops(shape, network.h, network.coefficient_flops())
        start = time.perf_counter()
        model = materialise(network, condition)
        ws.ledger.charge("specialization", label=f"{self.name} materialise", tokens=0,
                         flops=build, seconds=time.perf_counter() - start,
                         device=device_label(torch.device("cpu")))
        before, result = ws.finetune(
            model, domain, settings, flops_per_token=shape.train_flops_per_token(),
            max_flops=ws.budgets.spec_flops - build,
        )
        notes.update({"fine_tune_steps": result.steps, "stopped": result.stopped})
        return Specialized(model, ws.ledger, before, result.history, notes)


@register
class HistogramHypernetStrategy(ProjectedNetworkStrategy):
    """``slm-hn``: a histogram-conditioned hyper-network (Soup-of-Experts, arXiv 2502.01804).

    The same basis tensors as ``slm-pn``, but each layer's coefficients come from a small MLP of
    a cluster histogram. Pretraining (``generic``): every micro-batch draws a histogram from a
    Dirichlet, draws its windows with those cluster weights and trains the member instantiated
    from it (validation uses the generic histogram). Specialization (``specialization``): the
    domain's histogram over the pretraining clusters instantiates a plain ``slm``-shaped model in
    closed form, which is fine-tuned with early stopping.

    Example:
        >>> from strategies import get_strategy
        >>> get_strategy("slm-hn").settings({"concentration": 1.0}).k
        8
    """

    name = "slm-hn"
    settings_cls = HypernetSettings
    summary = "histogram hyper-network: one model per cluster histogram, fine-tuned"
    kind = "hn"

    def batches(self, settings, ws, clustering, cfg):
        return HistogramBatches(ws.generic.train.ids, clustering.generic_assignments, settings.k,
                                cfg.batch_size, settings.concentration, cfg.grad_accum,
                                seed=cfg.seed)

    def validation_loss(self, clustering, ws):
        return histogram_loss(clustering.generic_histogram())

    def condition(self, clustering, domain, ws) -> tuple[Any, dict]:
        """The domain's cluster histogram over the pretraining clusters."""
        histogram = clustering.histogram(domain.train.ids, ws.decode)  # (k,)
        return histogram, {"histogram": [round(float(x), 4) for x in histogram]}
