"""Hard mixture of experts, ``slm-mix`` (reference study v2 §2.5, App. D.2; Gross et al. 2017).

One deployed-size model per k-means cluster of the generic corpus, each trained from scratch on
its own cluster only. No router is learned and experts are never mixed: a domain picks one expert
and fine-tunes it, so inference costs one small model while pretraining holds k of them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from planner.core.errors import SpecplanError
from planner.engine.devices import device_label, resolve_device
from planner.engine.evaluate import perplexity
from planner.engine.models import load_model, save_model
from planner.engine.train import evaluate_loss
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
from strategies.workspace import Artifact

SELECT_RULES = ("frequent", "loss", "all")


@dataclass
class MixtureSettings(PretrainSettings):
    """``k`` and ``lr`` shape the experts (the artifact); ``select`` only the specialization."""

    k: int = setting(4, low=2, high=64, log=True, generic=True,
                     help="experts, one per generic cluster (the paper's main setting is 16)")
    select: str = setting("frequent", choices=SELECT_RULES,
                          help="frequent: the domain's most frequent cluster; loss: lowest loss on "
                               "the domain's train windows; all: fine-tune every expert, keep the "
                               "best on validation")


def choose_expert(select: str, histogram: torch.Tensor,
                  losses: Sequence[float] | None = None) -> int:
    """The expert a selection rule picks (reference study Table 5).

    Args:
        select: ``frequent`` takes the domain's most frequent cluster; ``loss`` and ``all`` take
            the lowest loss (before fine-tuning on train windows for ``loss``, after fine-tuning
            on validation for ``all``). Ties go to the lowest index.
        histogram: (k,) the domain's cluster histogram.
        losses: (k,) one loss per expert, required by ``loss`` and ``all``.
    """
    if select == "frequent":
        return int(torch.argmax(torch.as_tensor(histogram)))
    if select not in SELECT_RULES:
        raise SpecplanError(f"select={select!r} is not one of {SELECT_RULES}")
    if losses is None or len(losses) != len(histogram):
        raise SpecplanError(
            f"select={select!r} needs one loss per expert ({len(histogram)}), got "
            f"{0 if losses is None else len(losses)}"
        )
    return int(torch.argmin(torch.tensor(list(losses), dtype=torch.float64)))


def expert_folder(folder: Path, index: int) -> Path:
    return Path(folder) / f"expert-{index:03d}"


@register
class MixtureOfExpertsStrategy(Strategy):
    """``slm-mix``: k independent deployed-size experts, one per generic cluster; fine-tune one.

    Pretraining (``generic``, shared by every domain): ``ws.clustering(k)`` splits the generic
    train windows (the clustering is charged first, :meth:`Workspace.charge_clustering`);
    expert i is trained from scratch on cluster i only. The rest of the pretraining budget is
    split evenly, so each expert gets ``(pretrain_budget - clustering) / k`` and ``params_pretrain``
    is k times the deployed model: at a fixed budget more experts means fewer steps each (the
    paper instead grows the cost with k at a fixed per-expert budget; both are the same family
    of points, indexed differently).

    Specialization (``specialization``, per domain): pick an expert by ``select``, then fine-tune
    it with early stopping. ``loss`` evaluates every expert on the domain's train windows first
    (at most ``eval_windows`` of them); those forward passes are charged, so fine-tuning gets the
    rest. ``all`` fine-tunes every expert on ``spec_budget / k`` and keeps the best on validation:
    k fine-tunes for one model, budget-matched. The study's Table 5 charges k full fine-tunes
    instead; here every rule competes at the same specialization budget, so a plan compares
    like with like and ``all`` never overspends the budget the user set.
    """

    name = "slm-mix"
    family = "experts"
    settings_cls = MixtureSettings
    summary = "hard mixture: one expert per generic cluster; fine-tune the domain's expert"
    accepts_base = True  # each expert continues the base's pretraining on its cluster

    def estimate(self, settings, ws) -> CostEstimate:
        k = settings.k
        n_generic = ws.generic.train.n
        if k > n_generic:
            raise SpecplanError(
                f"{self.name}: k={k} is larger than the number of generic train windows "
                f"({n_generic}); lower k or add generic data"
            )
        per_step = ws.train.windows_per_step
        sizes = torch.bincount(ws.clustering(k).generic_assignments, minlength=k)  # (k,)
        smallest = int(torch.argmin(sizes))
        if int(sizes[smallest]) < per_step:
            raise SpecplanError(
                f"{self.name}: k={k} leaves cluster {smallest} with {int(sizes[smallest])} generic "
                f"windows, fewer than one batch ({per_step}); lower k"
            )
        shape = ws.shape(ws.small)
        one_step = step_flops(shape, ws)
        clusters = ws.clustering_flops(k)  # paid from the pretraining budget first
        generic = clusters + k * max(0, steps_within((ws.budgets.pretrain_flops - clusters) / k,
                                                     shape, ws)) * one_step
        if settings.select == "all":
            spec = k * steps_within(ws.budgets.spec_flops / k, shape, ws) * one_step
            min_spec = k * one_step
        else:
            selection = (self.selection_flops(settings, ws, self.selection_windows(ws))
                         if settings.select == "loss" else 0.0)
            spec = selection + steps_within(ws.budgets.spec_flops - selection, shape, ws) * one_step
            min_spec = selection + one_step
        return CostEstimate(
            generic_flops=generic + ws.base_cost, spec_flops=spec,
            inference_flops_per_token=shape.inference_flops_per_token(),
            params_inference=shape.params_total, params_pretrain=k * shape.params_total,
            min_generic_flops=clusters + k * one_step, min_spec_flops=min_spec,
        )

    @staticmethod
    def selection_windows(ws, domain=None) -> int:
        """Domain train windows the ``loss`` rule evaluates: ``eval_windows`` at most.

        Without the domain at hand (estimates), the domain data size bounds it when known.
        """
        caps = [c for c in (ws.train.eval_windows, domain.train.n if domain is not None else None,
                            ws.budgets.domain_tokens // ws.seq_len if ws.budgets.domain_tokens
                            else None) if c is not None]
        if not caps:
            raise SpecplanError(
                "slm-mix select='loss': set eval_windows or the domain data size so the "
                "selection's forward passes can be priced"
            )
        return min(caps)

    def selection_flops(self, settings, ws, windows: int) -> float:
        """Forward FLOPs of the ``loss`` rule: every expert reads ``windows`` windows once."""
        shape = ws.shape(ws.small)
        return settings.k * windows * ws.seq_len * shape.forward_flops_per_token()

    def pretrain(self, settings, ws, folder: Path) -> dict:
        shape = ws.shape(ws.small)
        clustering = ws.clustering(settings.k)
        per_expert = (ws.budgets.pretrain_flops - ws.charge_clustering(clustering)) / settings.k
        train_labels = clustering.generic_assignments  # (n_train,)
        valid = ws.generic.valid.ids
        valid_labels = clustering.assign(valid, decode=ws.decode)  # (n_valid,), validation
        experts, weighted, counted = [], 0.0, 0
        continued = ws.base is not None  # experts start from the base, at the fine-tuning rate
        if continued:
            ws.charge_base()
        for i in range(settings.k):
            own_valid = valid[valid_labels == i][: ws.train.eval_windows or None]
            model = ws.initial_model(shape)
            result = ws.pretrain_model(
                model, ws.generic.train.ids[train_labels == i],
                flops_per_token=shape.train_flops_per_token(),
                max_flops=per_expert, lr=settings.ft_lr if continued else settings.lr,
                valid=own_valid if len(own_valid) else None,
                label=f"{self.name} expert {i} "
                      f"{'continued pretraining of the base' if continued else 'pretraining'}",
            )
            save_model(model, expert_folder(folder, i))
            # The engine's last validation is the final model on this cluster's held-out windows.
            own_loss = result.history[-1]["val_loss"] if len(own_valid) else None
            if own_loss is not None:
                weighted += own_loss * len(own_valid)
                counted += len(own_valid)
            experts.append({
                "cluster": i, "windows": int((train_labels == i).sum()), "steps": result.steps,
                "valid_windows": len(own_valid),
                "ppl_cluster": perplexity(own_loss) if own_loss is not None else None,
            })
        return {
            "k": settings.k, "experts": experts, "steps": sum(e["steps"] for e in experts),
            # Each held-out generic window scored by its own cluster's expert (paper Table 8).
            "ppl_generic": perplexity(weighted / counted) if counted else None,
        }

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        shape = ws.shape(ws.small)
        histogram = ws.clustering(settings.k).histogram(domain.train, decode=ws.decode)  # (k,)
        notes = {"select": settings.select,
                 "histogram": [round(float(p), 4) for p in histogram]}
        if settings.select == "all":
            return self._fine_tune_all(settings, artifact, domain, ws, histogram, notes)
        budget = ws.budgets.spec_flops
        losses = None
        if settings.select == "loss":
            losses = self._selection_losses(settings, artifact, domain, ws)
            budget -= self.selection_flops(settings, ws, self.selection_windows(ws, domain))
            notes["expert_losses"] = losses
        expert = choose_expert(settings.select, histogram, losses)
        model = load_model(expert_folder(artifact.folder, expert))
        before, result = ws.finetune(
            model, domain, settings, flops_per_token=shape.train_flops_per_token(),
            max_flops=budget, label=f"fine-tune expert {expert}",
        )
        notes.update({"expert": expert, "fine_tune_steps": result.steps,
                      "stopped": result.stopped})
        return Specialized(model, ws.ledger, before, result.history, notes)

    def _selection_losses(self, settings, artifact: Artifact, domain, ws) -> list[float]:
        """Each expert's loss on the domain's train windows, charged as forward passes."""
        windows = domain.train.ids[: self.selection_windows(ws, domain)]
        device = resolve_device(ws.train.device)
        start, losses = time.perf_counter(), []
        for i in range(settings.k):
            model = load_model(expert_folder(artifact.folder, i)).to(device)
            losses.append(evaluate_loss(model, windows))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ws.ledger.charge(
            "specialization", label=f"{self.name} expert selection by loss",
            tokens=settings.k * windows.numel(),
            flops=self.selection_flops(settings, ws, len(windows)),
            seconds=time.perf_counter() - start, device=device_label(device),
        )
        return losses

    def _fine_tune_all(self, settings, artifact: Artifact, domain, ws, histogram,
                       notes: dict) -> Specialized:
        """Fine-tune every expert on ``spec_budget / k``; keep the best on validation."""
        shape = ws.shape(ws.small)
        best, best_loss, losses = None, math.inf, []
        for i in range(settings.k):
            model = load_model(expert_folder(artifact.folder, i))
            before, result = ws.finetune(
                model, domain, settings, flops_per_token=shape.train_flops_per_token(),
                max_flops=ws.budgets.spec_flops / settings.k, label=f"fine-tune expert {i}",
            )
            loss = result.best_val_loss if result.best_val_loss is not None else math.inf
            losses.append(loss)
            if best is None or loss < best_loss:  # only the best model is kept in memory
                best, best_loss = (model, before, result), loss
        expert = choose_expert("all", histogram, losses)
        model, before, result = best
        notes.update({"expert": expert, "expert_losses": losses, "fine_tune_steps": result.steps,
                      "stopped": result.stopped})
        return Specialized(model, ws.ledger, before, result.history, notes)
