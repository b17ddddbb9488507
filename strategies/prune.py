"""``slm-prune``: prune a bigger pretrained model to the deployed shape, then distil from it.

A strategy beyond the reference study, after NVIDIA's Minitron (arXiv 2407.14679, 2408.11796):
rather than pretraining the deployed model from random weights, pretrain the large model, cut
the deployed shape out of it, and retrain the cut model by distillation from the uncut one.
All of it happens before the domain is known, so it is the shared generic phase:

1. the large model (the ``llm`` artifact, cached and shared with ``llm`` and ``slm-d``) is
   pretrained on ``large_share`` of the pretraining budget;
2. an importance pass (forward only) over ``calibration_windows`` generic windows ranks, by
   activation, every attention head group (the norm of its heads' outputs), MLP channel (the
   mean magnitude of the input to the down projection), embedding channel (the mean magnitude
   of every norm's output on that channel) and layer (block importance: one minus the cosine
   between a layer's input and output);
3. the deployed shape keeps the top-ranked ones (width: heads, MLP channels, embedding
   channels; depth: layers, in their order) and their weights;
4. the pruned model is retrained on generic windows with :func:`kd_loss` against the uncut
   model's full next-token distribution (online, every pass charged at the teacher's forward
   FLOPs) on the rest of the budget.

Per domain it is fine-tuned like ``slm``. Costs (large pretraining, importance pass,
distillation with teacher passes) are estimated before compute and charged to ``generic``.
The deployed shape must be cuttable from the large one: same family (gated MLP), head size and
query heads per kv head, no dimension larger (``--large 6x``, the default, always is).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.devices import device_label, resolve_device
from planner.engine.distillation import kd_loss
from planner.engine.evaluate import perplexity
from planner.engine.models import ModelShape, load_model, model_shape, save_model
from planner.engine.train import evaluate_loss
from strategies.base import (
    CostEstimate,
    PretrainSettings,
    Specialized,
    Strategy,
    absorb,
    get_strategy,
    register,
    setting,
    step_flops,
)
from strategies.workspace import Artifact


@dataclass
class PruneSettings(PretrainSettings):
    """Settings of ``slm-prune``; ``lr`` pretrains the large model."""

    large_share: float = setting(0.7, low=0.2, high=0.9, generic=True,
                                 help="share of the pretraining budget that pretrains the large "
                                      "model; the rest distils the pruned one from it")
    distil_lr: float = setting(3e-3, low=1e-3, high=1e-2, log=True, generic=True,
                               help="peak learning rate of the pruned model's distillation")
    alpha: float = setting(0.5, low=0.0, high=1.0, generic=True,
                           help="weight of the distillation term (1: logits only, as Minitron; "
                                "a teacher trained within the same budget is weak, so the "
                                "default mixes in the hard targets)")
    temperature: float = setting(1.0, low=0.5, high=2.0, generic=True,
                                 help="softening temperature of the distillation")
    calibration_windows: int = setting(64, low=16, high=1024, log=True, generic=True,
                                       help="generic windows of the importance pass")
    pruned: str = setting("0.5x", generic=True,
                          help="with --base: the deployed shape cut from the base, a parameter "
                               "ratio of it (0.5x keeps its depth, head size and kv grouping) "
                               "or a spec; without a base the plan's deployed size is")


def check_prunable(large: ModelShape, small: ModelShape) -> None:
    """Refuse a deployed shape that cannot be cut out of the large one.

    Raises:
        SpecplanError: naming both shapes and what differs.
    """
    group = large.num_attention_heads // large.num_key_value_heads
    problems = []
    if not large.traits["gated"] or large.family != small.family:
        problems.append(f"the same gated-MLP family ({large.family} and {small.family})")
    if large.head_dim != small.head_dim:
        problems.append(f"the same head size ({large.head_dim} and {small.head_dim})")
    if small.num_attention_heads // small.num_key_value_heads != group:
        problems.append("as many query heads per kv head")
    if large.tie_embeddings != small.tie_embeddings:
        problems.append("tied embeddings in both or neither")
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    larger = [name for name in sizes if getattr(small, name) > getattr(large, name)]
    if larger:
        problems.append(f"no dimension larger in the deployed one ({', '.join(larger)})")
    if problems:
        raise SpecplanError(
            f"slm-prune: the deployed shape ({small.spec()}) cannot be cut from the large one "
            f"({large.spec()}): it needs {'; '.join(problems)}; use --large 6x (the default) "
            f"or a large shape that widens the deployed one")


# -- importance -------------------------------------------------------------------------------
@torch.no_grad()
def activation_importance(model: torch.nn.Module, windows: torch.Tensor,
                          batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Minitron's activation-based importance of a Llama-family model, from forward passes.

    Returns:
        ``heads`` (L, KV): per layer and kv group, the summed norms of its query heads' outputs;
        ``channels`` (L, ff): mean |input of the down projection|; ``embedding`` (d,): mean
        |output| of every norm; ``layers`` (L,): block importance ``1 - cos(input, output)``.
    """
    config = model.config
    layers = model.model.layers
    n_layers, kv = len(layers), config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    sums = {"heads": torch.zeros(n_layers, config.num_attention_heads),
            "channels": torch.zeros(n_layers, config.intermediate_size),
            "embedding": torch.zeros(config.hidden_size), "layers": torch.zeros(n_layers)}
    tokens = 0

    def on_attention(i):
        def hook(_module, inputs):
            per_head = inputs[0].float().unflatten(-1, (-1, head_dim)).norm(dim=-1)  # (B, T, H)
            sums["heads"][i] += per_head.sum((0, 1)).cpu()
        return hook

    def on_mlp(i):
        def hook(_module, inputs):
            sums["channels"][i] += inputs[0].float().abs().sum((0, 1)).cpu()
        return hook

    def on_norm(_module, _inputs, output):
        sums["embedding"] += output.float().abs().sum((0, 1)).cpu()

    def on_layer(i):
        def hook(_module, args, kwargs, output):
            x = (args[0] if args else kwargs["hidden_states"]).float()
            y = (output[0] if isinstance(output, tuple) else output).float()
            sums["layers"][i] += (1 - F.cosine_similarity(x, y, dim=-1)).sum().cpu()
        return hook

    handles = [model.model.norm.register_forward_hook(on_norm)]
    for i, layer in enumerate(layers):
        handles += [layer.self_attn.o_proj.register_forward_pre_hook(on_attention(i)),
                    layer.mlp.down_proj.register_forward_pre_hook(on_mlp(i)),
                    layer.input_layernorm.register_forward_hook(on_norm),
                    layer.post_attention_layernorm.register_forward_hook(on_norm),
                    layer.register_forward_hook(on_layer(i), with_kwargs=True)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size].to(device)  # (B, T)
            model(input_ids=batch)
            tokens += batch.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    group = config.num_attention_heads // kv
    return {"heads": sums["heads"].view(n_layers, kv, group).sum(-1) / tokens,
            "channels": sums["channels"] / tokens,
            "embedding": sums["embedding"] / tokens, "layers": sums["layers"] / tokens}


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, in their original order."""
    return scores.topk(k).indices.sort().values


def prune(model: torch.nn.Module, small: ModelShape, importance: dict) -> tuple:
    """The deployed-shape model cut out of ``model``: top layers, then per kept layer its top kv
    groups (with their query heads) and MLP channels, and the top embedding channels everywhere.

    Returns:
        (the pruned model, what was kept: layer indices and counts).
    """
    config = model.config
    head_dim = small.head_dim
    group = config.num_attention_heads // config.num_key_value_heads
    layers = _top(importance["layers"], small.num_hidden_layers).tolist()
    d = _top(importance["embedding"], small.hidden_size)
    state = model.state_dict()
    out = {}
    for name, value in state.items():
        if not name.startswith("model.layers."):  # embeddings, LM head, final norm
            out[name] = value[..., d] if value.shape[-1] == config.hidden_size else value
    for new, old in enumerate(layers):
        groups = _top(importance["heads"][old], small.num_key_value_heads)
        kv_rows = (groups[:, None] * head_dim + torch.arange(head_dim)).flatten()
        heads = (groups[:, None] * group + torch.arange(group)).flatten()
        q_rows = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
        ff = _top(importance["channels"][old], small.intermediate_size)
        cut = {"self_attn.q_proj.weight": (q_rows, d), "self_attn.k_proj.weight": (kv_rows, d),
               "self_attn.v_proj.weight": (kv_rows, d), "self_attn.o_proj.weight": (d, q_rows),
               "self_attn.q_proj.bias": (q_rows,), "self_attn.k_proj.bias": (kv_rows,),
               "self_attn.v_proj.bias": (kv_rows,), "mlp.gate_proj.weight": (ff, d),
               "mlp.up_proj.weight": (ff, d), "mlp.down_proj.weight": (d, ff),
               "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,)}
        prefix = f"model.layers.{old}."
        for name, value in state.items():
            if not name.startswith(prefix):
                continue
            part = name[len(prefix):]
            index = cut.get(part)
            if index is not None:
                value = value[index[0]] if len(index) == 1 else value[index[0]][:, index[1]]
            out[f"model.layers.{new}.{part}"] = value
    pruned = small.build()
    pruned.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    kept = {"layers": layers, "hidden_size": small.hidden_size,
            "kv_groups": small.num_key_value_heads, "channels": small.intermediate_size}
    return pruned, kept


class TeacherLoss:
    """``loss_fn(model, batch)`` for the engine: :func:`kd_loss` against a frozen teacher's full
    next-token distribution, computed online (no cache: the windows are generic)."""

    def __init__(self, teacher: torch.nn.Module, *, alpha: float, temperature: float) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def __call__(self, model: torch.nn.Module, batch) -> torch.Tensor:
        ids = batch["input_ids"] if isinstance(batch, dict) else batch  # (B, T)
        self.teacher.to(ids.device)
        with torch.no_grad():
            teacher = self.teacher(input_ids=ids).logits[:, :-1].float()  # (B, T-1, V)
        t_log = torch.log_softmax(teacher / self.temperature, dim=-1)
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        return kd_loss(logits, t_log, None, ids[:, 1:], alpha=self.alpha,
                       temperature=self.temperature)


# -- the strategy -------------------------------------------------------------------------------
@register
class PruneDistillStrategy(Strategy):
    """``slm-prune``: pretrain large, prune to the deployed shape, distil, fine-tune per domain.

    Charges to ``generic``: the large model's pretraining (its cached artifact counted in full),
    the importance pass, and the distillation (student training plus a teacher forward per
    token); to ``specialization``: fine-tuning with early stopping. See the module docstring.
    """

    name = "slm-prune"
    family = "distillation"
    settings_cls = PruneSettings
    summary = "large model pretrained, pruned to the deployed shape by activation importance, " \
              "then distilled from itself (Minitron)"

    accepts_base = True

    def _shapes(self, settings, ws) -> tuple[ModelShape, ModelShape]:
        """(uncut, deployed): the large model and the plan's deployed size, or with a base
        checkpoint the base and ``pruned`` (a ratio of it or a spec)."""
        if ws.base is not None:
            large = ws.base.shape
            small = model_shape(settings.pruned, vocab_size=large.vocab_size,
                                seq_len=ws.seq_len, relative_to=large)
        else:
            large, small = ws.shape(ws.large), ws.shape(ws.small)
        check_prunable(large, small)
        return large, small

    def _plan(self, settings, ws) -> dict:
        """The generic budget's split, in whole steps: large pretraining (none from a base),
        importance, distillation."""
        large, small = self._shapes(settings, ws)
        budget = ws.budgets.pretrain_flops
        large_step = step_flops(large, ws)
        large_flops = 0.0 if ws.base is not None else (
            settings.large_share * budget // large_step) * large_step
        windows = min(settings.calibration_windows, ws.generic.train.n)
        importance = windows * ws.seq_len * large.forward_flops_per_token()
        distil_per_token = small.train_flops_per_token() + large.forward_flops_per_token()
        distil_step = ws.train.tokens_per_step(ws.seq_len) * distil_per_token
        distil_flops = max(0.0, (budget - large_flops - importance) // distil_step) * distil_step
        if (ws.base is None and large_flops < large_step) or distil_flops < distil_step:
            raise BudgetError(
                f"{self.name}: the pretraining budget {budget:.3g} FLOPs pays for "
                f"{int(large_flops // large_step)} large-model step(s) and "
                f"{int(distil_flops // distil_step)} distillation step(s) at large_share="
                f"{settings.large_share:g}; it needs one of each (at least "
                f"{large_step / settings.large_share + importance + distil_step:.3g} FLOPs); "
                f"raise --pretrain-budget")
        return {"large": large, "small": small, "large_flops": large_flops,
                "windows": windows, "importance_flops": importance,
                "distil_flops": distil_flops, "distil_per_token": distil_per_token}

    def estimate(self, settings, ws) -> CostEstimate:
        plan = self._plan(settings, ws)
        small = plan["small"]
        one_step = step_flops(small, ws)
        generic = plan["large_flops"] + plan["importance_flops"] + plan["distil_flops"]
        return CostEstimate(
            generic_flops=generic, spec_flops=(ws.budgets.spec_flops // one_step) * one_step,
            inference_flops_per_token=small.inference_flops_per_token(),
            params_inference=small.params_total,
            params_pretrain=plan["large"].params_total + small.params_total,
            min_generic_flops=generic, min_spec_flops=one_step,
        )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        plan = self._plan(settings, ws)
        device = resolve_device(ws.train.device)
        if ws.base is not None:  # Minitron proper: cut the open checkpoint
            ws.charge_base()
            teacher = ws.base.load().to(device)
            ppl_large = perplexity(evaluate_loss(teacher,
                                                 ws.generic.valid.ids[:ws.train.eval_windows]))
        else:
            llm = get_strategy("llm")
            budgets = replace(ws.budgets, pretrain_flops=plan["large_flops"])
            sub = replace(ws, budgets=budgets, ledger=Ledger(), on_eval=None, base=None)
            art = sub.artifact(llm, llm.settings({"lr": settings.lr}))
            absorb(ws.ledger, art.ledger, "large model", cached=art.reused)
            teacher = load_model(art.folder).to(device)
            ppl_large = art.meta.get("ppl_generic")

        started = time.perf_counter()
        calibration = ws.generic.train.ids[:plan["windows"]]
        importance = activation_importance(teacher, calibration)
        ws.ledger.charge("generic", label=f"{self.name} importance pass",
                         tokens=calibration.numel(), flops=plan["importance_flops"],
                         seconds=time.perf_counter() - started, device=device_label(device))
        student, kept = prune(teacher.cpu(), plan["small"], importance)
        pruned_loss = evaluate_loss(student, ws.generic.valid.ids[:ws.train.eval_windows])

        result = ws.pretrain_model(
            student, ws.generic.train.ids, flops_per_token=plan["distil_per_token"],
            max_flops=plan["distil_flops"], lr=settings.distil_lr,
            label=f"{self.name} distillation from the large model",
            loss_fn=TeacherLoss(teacher, alpha=settings.alpha, temperature=settings.temperature),
        )
        save_model(student, folder)
        return {"ppl_generic": perplexity(result.best_val_loss),
                "ppl_generic_large": ppl_large,
                "ppl_generic_pruned": perplexity(pruned_loss), "kept": kept,
                "distillation_steps": result.steps, "distillation_tokens": result.tokens}

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        small = self._shapes(settings, ws)[1]
        model = load_model(artifact.folder)
        before, result = ws.finetune(
            model, domain, settings, flops_per_token=small.train_flops_per_token(),
            max_flops=ws.budgets.spec_flops,
        )
        notes = {"fine_tune_steps": result.steps, "stopped": result.stopped,
                 **{k: artifact.meta.get(k) for k in ("ppl_generic_large", "ppl_generic_pruned",
                                                      "kept")}}
        return Specialized(model, ws.ledger, before, result.history, notes)
