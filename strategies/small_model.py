"""Baselines of the reference study (v2 §2.2): ``slm``, ``slm-nopt`` and ``llm``."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from planner.engine.evaluate import perplexity
from planner.engine.models import load_model, save_model
from strategies.base import (
    CostEstimate,
    PretrainSettings,
    Specialized,
    Strategy,
    register,
    step_flops,
)
from strategies.workspace import Artifact


@register
class SmallModelStrategy(Strategy):
    """``slm``: pretrain the deployed-size model on generic data, then fine-tune on the domain.

    Charges: pretraining to ``generic`` (shared by every domain), fine-tuning with early
    stopping to ``specialization``. The model is the largest the inference budget admits.

    Example:
        >>> from strategies import get_strategy
        >>> get_strategy("slm").settings({"ft_lr": 3e-4}).ft_lr
        0.0003
    """

    name = "slm"
    family = "small"
    settings_cls = PretrainSettings
    summary = "small model: generic pretraining, then fine-tuning with early stopping"
    size_attr: ClassVar[str] = "small"
    accepts_base = True

    def shape(self, ws):
        return ws.shape(getattr(ws, self.size_attr))

    def estimate(self, settings, ws) -> CostEstimate:
        shape = self.shape(ws)
        one_step = step_flops(shape, ws)
        pretrained = ws.base is not None  # the base is the pretrained model: nothing to train
        return CostEstimate(
            generic_flops=ws.base_cost if pretrained else
            (ws.budgets.pretrain_flops // one_step) * one_step,
            spec_flops=(ws.budgets.spec_flops // one_step) * one_step,
            inference_flops_per_token=shape.inference_flops_per_token(),
            params_inference=shape.params_total, params_pretrain=shape.params_total,
            min_generic_flops=0.0 if pretrained else one_step, min_spec_flops=one_step,
        )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        if ws.base is not None:  # the artifact is the base itself: no copy of its weights
            ws.charge_base()
            return {"base": str(ws.base.folder)}
        shape = self.shape(ws)
        model = shape.build(seed=ws.train.seed)
        result = ws.pretrain_model(
            model, ws.generic.train.ids, flops_per_token=shape.train_flops_per_token(),
            max_flops=ws.budgets.pretrain_flops, lr=settings.lr, label=f"{self.name} pretraining",
        )
        save_model(model, folder)
        return {"ppl_generic": perplexity(result.best_val_loss), "steps": result.steps,
                "tokens": result.tokens}

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        shape = self.shape(ws)
        model = ws.initial_model(shape) if ws.base is not None else load_model(artifact.folder)
        before, result = ws.finetune(
            model, domain, settings, flops_per_token=shape.train_flops_per_token(),
            max_flops=ws.budgets.spec_flops,
        )
        return Specialized(model, ws.ledger, before, result.history,
                           {"fine_tune_steps": result.steps, "stopped": result.stopped})


@register
class LargeModelStrategy(SmallModelStrategy):
    """``llm``: the same recipe on the large model (about 6x the parameters).

    It usually breaks the inference budget: it then runs anyway as the reference point and is
    flagged ``over-inference-budget`` in every report (reference study v2 §2.2).
    """

    name = "llm"
    family = "large"
    summary = "large model: generic pretraining and fine-tuning (reference; big inference)"
    size_attr = "large"
    respects_inference_budget = False
    deploys_large = True
    accepts_base = False


@register
class NoPretrainStrategy(Strategy):
    """``slm-nopt``: the deployed-size model trained on the domain data only.

    Charges everything to ``specialization``; no generic phase. It overfits small domains badly
    (reference study Table 4), which early stopping limits.
    """

    name = "slm-nopt"
    family = "no-pretraining"
    settings_cls = PretrainSettings
    summary = "small model trained on domain data only"
    has_generic_phase = False

    def estimate(self, settings, ws) -> CostEstimate:
        shape = ws.shape(ws.small)
        one_step = step_flops(shape, ws)
        return CostEstimate(
            generic_flops=0.0, spec_flops=(ws.budgets.spec_flops // one_step) * one_step,
            inference_flops_per_token=shape.inference_flops_per_token(),
            params_inference=shape.params_total, params_pretrain=0, min_spec_flops=one_step,
        )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        return {}

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        shape = ws.shape(ws.small)
        model = shape.build(seed=ws.train.seed)
        _, result = ws.finetune(  # from scratch: the pretraining rate, with early stopping
            model, domain, settings, lr=settings.lr, flops_per_token=shape.train_flops_per_token(),
            max_flops=ws.budgets.spec_flops, label="training on domain data",
        )
        return Specialized(model, ws.ledger, None, result.history,
                           {"steps": result.steps, "stopped": result.stopped})
