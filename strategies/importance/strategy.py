"""Cluster-based importance sampling, ``slm-is`` (reference study v2 §2.4), with DSIR beside it.

The domain's cluster histogram on the generic k-means clustering reweights the generic corpus:
generic windows are resampled so that their cluster histogram matches the domain's, a fresh
deployed-size model is trained on that stream, then fine-tuned on the domain. Nothing is shared
across domains, so all of it is specialization cost (Table 3: 0 generic GPUh).

DSIR (Xie et al. 2023) is the side-by-side baseline behind the same strategy
(``resampler="dsir"``): it ranks generic *documents* with hashed n-gram importance weights, and
the windows of the selected documents form the stream. Both resamplers then train the same model
for the same number of steps, so they compare at equal budgets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from planner.core.errors import SpecplanError
from planner.data.clustering import histogram_entropy, top_cluster_fraction
from strategies.base import (
    CostEstimate,
    PretrainSettings,
    Specialized,
    Strategy,
    register,
    setting,
    step_flops,
    steps_within,
)
from strategies.importance.resample import (
    Resample,
    dsir_resample,
    resample_to_histogram,
)
from strategies.workspace import Artifact


@dataclass
class ImportanceSettings(PretrainSettings):
    """``lr`` is the peak rate of the training on the resampled stream."""

    k: int = setting(16, low=4, high=1024, log=True,
                     help="clusters of the generic corpus (the paper uses 1024 at c4 scale)")
    is_fraction: float = setting(0.8, low=0.5, high=0.95,
                                 help="share of the specialization budget spent on the resampled "
                                      "stream; the rest fine-tunes")
    resampler: str = setting("clusters", choices=("clusters", "dsir"),
                             help="clusters: histogram matching (the paper); dsir: hashed n-gram "
                                  "document resampling (Xie et al. 2023)")


def split_steps(total_steps: int, is_fraction: float) -> tuple[int, int]:
    """(resampled-stream steps, fine-tuning steps) out of ``total_steps`` optimizer steps.

    Each phase gets at least one step when there are two; fewer leaves a phase at zero, which
    :meth:`Strategy.check` refuses through ``min_spec_flops``.
    """
    is_steps = max(0, min(max(1, int(is_fraction * total_steps)), total_steps - 1))
    return is_steps, max(0, total_steps - is_steps)


def windows_of_documents(
    text_span: torch.Tensor, documents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows that hold text of ``documents``, in the documents' order, each window once.

    Args:
        text_span: (n_windows, 4) rows ``(first_doc, first_char, last_doc, end_char)``
            (``TokenWindows.text_span``); windows are consecutive, so both doc columns are
            sorted and a document's windows are one contiguous range.
        documents: (m,) document indices, e.g. ranked by a selector.

    Returns:
        (windows (n,), source (n,)): window indices, and the position in ``documents`` of the
        document that brought each one in (a window shared by two documents comes with the
        first). A document inside the incomplete tail that windows drop brings none.
    """
    first = text_span[:, 0].contiguous()  # (n_windows,)
    last = text_span[:, 2].contiguous()  # (n_windows,)
    lo = torch.searchsorted(last, documents)  # (m,) first window ending at or after the doc
    hi = torch.searchsorted(first, documents, right=True)  # (m,) past the last one starting in it
    counts = (hi - lo).clamp_min(0)  # (m,)
    total = int(counts.sum())
    source = torch.repeat_interleave(torch.arange(documents.numel()), counts)  # (total,)
    offsets = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                            counts)  # (total,)
    windows = lo[source] + offsets  # (total,)
    unique, inverse = torch.unique(windows, return_inverse=True)
    first_seen = torch.full((unique.numel(),), total).scatter_reduce(
        0, inverse, torch.arange(total), reduce="amin")  # (n_unique,)
    keep = torch.sort(first_seen).values
    return windows[keep], source[keep]


def _steps_cap(steps: int, one_step: float) -> float:
    """A FLOP cap the engine floors to exactly ``steps`` steps: half a step of slack absorbs the
    float rounding of ``steps * one_step``, and the ledger charges only the steps run."""
    return (steps + 0.5) * one_step


def dsir_window_stream(
    generic, domain_texts: list[str], n_draws: int, *, seed: int, work_dir: Path
) -> tuple[Resample, int]:
    """DSIR-ranked generic documents mapped to their train windows: ``n_draws`` of them, shuffled.

    DSIR draws documents without replacement, so the stream holds distinct windows, those of the
    top-ranked documents; when the budget reads more windows than the generic train split has, it
    holds them all and the engine wraps around it (epochs). The shuffle (seeded) makes batches
    i.i.d. draws from the selection rather than runs of one document.

    Args:
        generic: the generic ``CorpusSplits``; its train windows must carry ``text_span``.
        domain_texts: the domain's train text (DSIR's target distribution).
        n_draws: windows the training will read.
        seed: seed of DSIR's draw and of the shuffle.
        work_dir: where DSIR writes its temporary files.

    Returns:
        (the stream, the number of top-ranked documents it covers).
    """
    span = generic.train.text_span
    if span is None:
        raise SpecplanError(
            "DSIR resampler: the generic windows carry no text spans, so documents cannot be "
            "mapped to windows; prepare the generic corpus again (clear its cache folder)"
        )
    texts = generic.texts["train"]
    ranked = dsir_resample(texts, domain_texts, len(texts), seed=seed, work_dir=work_dir)
    windows, source = windows_of_documents(span, ranked.indices)
    windows, source = windows[:n_draws], source[:n_draws]  # (<= n_draws,)
    gen = torch.Generator().manual_seed(seed)
    order = windows[torch.randperm(windows.numel(), generator=gen)]
    stream = Resample(indices=order, effective_sample_size=ranked.effective_sample_size,
                      distinct=int(order.numel()), unreachable_mass=0.0,
                      histogram=ranked.histogram)
    return stream, int(source.max()) + 1 if source.numel() else 0


@register
class ImportanceSamplingStrategy(Strategy):
    """``slm-is``: train a fresh deployed-size model on generic data resampled towards the domain.

    Steps (reference study v2 §2.4), all charged to ``specialization`` since the domain must be
    known before any of them starts:

    1. the domain's train windows get their nearest generic cluster (``ws.clustering(k)``);
    2. the generic train windows are resampled (with replacement) to that histogram: draw a
       cluster from it, then a window uniformly inside the cluster; ``is_fraction`` of the
       specialization budget pays for the stream's optimizer steps;
    3. a model trained from scratch on the stream through the engine (``specialization``);
    4. fine-tuning on the domain with early stopping on the remaining budget
       (``specialization``).

    With ``resampler="dsir"`` step 2 ranks generic documents with DSIR's hashed n-gram weights
    (``strategies.importance.resample.dsir_resample``) and streams the windows of the top documents,
    as many as the same steps read, shuffled; steps 3-4 are unchanged. The clustering still provides
    the domain histogram statistics in the notes, so both resamplers report the same numbers.
    Its clustering and DSIR's weight estimation are not charged yet (the paper does not count
    them, and slm-is has no generic phase to charge the shared clustering to).
    """

    name = "slm-is"
    settings_cls = ImportanceSettings
    summary = "importance-sampled generic data towards the domain, then fine-tuning (no sharing)"
    family = "importance-sampling"
    has_generic_phase = False
    pretrains_in_specialization = True
    accepts_base = True

    def estimate(self, settings, ws) -> CostEstimate:
        n_generic = ws.generic.train.n
        if settings.k > n_generic:
            raise SpecplanError(
                f"{self.name}: k={settings.k} is larger than the number of generic train windows "
                f"({n_generic}); lower k or add generic data"
            )
        shape = ws.shape(ws.small)
        one_step = step_flops(shape, ws)
        is_steps, ft_steps = split_steps(steps_within(ws.budgets.spec_flops, shape, ws),
                                         settings.is_fraction)
        return CostEstimate(
            generic_flops=0.0, spec_flops=(is_steps + ft_steps) * one_step,
            inference_flops_per_token=shape.inference_flops_per_token(),
            params_inference=shape.params_total, params_pretrain=0,
            min_spec_flops=2 * one_step,
        )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        return {}

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        shape = ws.shape(ws.small)
        one_step = step_flops(shape, ws)
        is_steps, ft_steps = split_steps(steps_within(ws.budgets.spec_flops, shape, ws),
                                         settings.is_fraction)
        if is_steps < 1 or ft_steps < 1:
            raise SpecplanError(
                f"{self.name}: the specialization budget {ws.budgets.spec_flops:.3g} FLOPs pays "
                f"for {is_steps + ft_steps} step(s); it needs 2 (one resampled, one fine-tuning)"
            )
        n_draws = is_steps * ws.train.windows_per_step
        clustering = ws.clustering(settings.k)
        domain_hist = clustering.histogram(domain.train, decode=ws.decode)  # (k,)
        if settings.resampler == "clusters":
            stream = resample_to_histogram(clustering.generic_assignments, domain_hist, n_draws,
                                           seed=ws.train.seed)
            extra = {"ess_unit": "generic windows"}
        else:
            stream, selected = dsir_window_stream(
                ws.generic, domain.texts["train"], n_draws, seed=ws.train.seed,
                work_dir=ws.cache_dir / "dsir",
            )
            extra = {"ess_unit": "generic documents", "documents_selected": selected}
        labels = clustering.generic_assignments[stream.indices]  # (n_draws,)
        stream_hist = torch.bincount(labels, minlength=settings.k).double() / labels.numel()

        model = ws.initial_model(shape)
        continued = ws.base is not None  # a trained base continues at the fine-tuning rate
        trained = ws.pretrain_model(
            model, ws.generic.train.ids, flops_per_token=shape.train_flops_per_token(),
            max_flops=_steps_cap(is_steps, one_step),
            lr=settings.ft_lr if continued else settings.lr, order=stream.indices,
            valid=domain.valid.ids, phase="specialization",
            label=f"{self.name} {'continued pretraining of the base' if continued else 'training'}"
                  f" on the {settings.resampler}-resampled stream",
        )
        before, tuned = ws.finetune(
            model, domain, settings, flops_per_token=shape.train_flops_per_token(),
            max_flops=_steps_cap(ft_steps, one_step),
        )
        notes = {
            "resampler": settings.resampler, "k": settings.k, "n_draws": n_draws,
            "effective_sample_size": stream.effective_sample_size, **extra,
            "distinct_windows": stream.distinct,
            "unreachable_mass": stream.unreachable_mass,
            "domain_entropy": histogram_entropy(domain_hist),
            "domain_top_fraction": top_cluster_fraction(domain_hist),
            "domain_histogram": [round(float(p), 4) for p in domain_hist],
            "stream_histogram": [round(float(p), 4) for p in stream_hist],
            "stream_tv": 0.5 * float((stream_hist - domain_hist.double()).abs().sum()),
            "is_steps": trained.steps, "is_history": trained.history,
            "fine_tune_steps": tuned.steps, "stopped": tuned.stopped,
        }
        return Specialized(model, ws.ledger, before, tuned.history, notes)
