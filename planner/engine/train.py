"""The one training engine: every strategy trains through :func:`train`.

Written as one explicit loop (nanoGPT style): learning rate for the step, gradient accumulation
over micro-batches, optional bf16 autocast, clipping, the optimizer step, a charge to the cost
ledger, periodic validation. Strategies change what goes in (the model, the batch source, the
loss), never the loop.

Batches come from a :class:`BatchSource` indexed by step, so a run is deterministic for a seed
and a resumed run sees exactly the batches it would have seen. Under ``torch.distributed`` each
rank takes its rows of the same global batch, so DDP follows the single-process loss curve.
"""
from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.core.io import atomic_dir
from planner.engine.devices import device_label, resolve_device
from planner.engine import tracking
from planner.engine.speed import PROBE_MIN_STEPS, StepSettings, step_settings

log = logging.getLogger("specplan")

Batch = torch.Tensor | dict
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]


# -- devices ------------------------------------------------------------------------------------


# -- batches ------------------------------------------------------------------------------------
class BatchSource(Protocol):
    """Gives the global batch of an optimizer step's micro-batch, deterministically."""

    def batch(self, step: int, micro: int) -> Batch: ...


@dataclass
class WindowSampler:
    """Shuffled epochs over fixed-length windows; batch ``(step, micro)`` is a pure function.

    Args:
        ids: (n, T) token windows.
        batch_size: windows per micro-batch (the global micro-batch under DDP).
        grad_accum: micro-batches per optimizer step.
        seed: seeds each epoch's permutation.
        order: optional stream of window indices to read in order instead of shuffling
            (importance-resampled streams).
    """

    ids: torch.Tensor
    batch_size: int
    grad_accum: int = 1
    seed: int = 0
    order: torch.Tensor | None = None
    _perms: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) == 0:
            raise SpecplanError("no training windows: the corpus is smaller than one window")

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            # keep the last two epochs: a batch straddling a boundary reads both
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = torch.randperm(len(self.ids), generator=gen)
        return self._perms[epoch]

    def _stream(self, position: torch.Tensor) -> torch.Tensor:
        if self.order is not None:
            return self.order[position % len(self.order)]
        n = len(self.ids)
        epochs, offsets = position // n, position % n
        first, last = int(epochs[0]), int(epochs[-1])  # positions are consecutive
        if first == last:
            return self._perm(first)[offsets]
        out = torch.empty_like(position)
        for epoch in range(first, last + 1):
            mask = epochs == epoch
            out[mask] = self._perm(epoch)[offsets[mask]]
        return out

    def batch(self, step: int, micro: int) -> torch.Tensor:
        start = (step * self.grad_accum + micro) * self.batch_size
        position = torch.arange(start, start + self.batch_size)
        return self.ids[self._stream(position)]


# -- losses -------------------------------------------------------------------------------------
def lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over a batch of windows.

    The last position has no target: it is masked with ``ignore_index`` rather than sliced off,
    which would copy the (B, T, V) logits forward and zero-fill and copy them again backward.
    """
    ids = batch["input_ids"] if isinstance(batch, dict) else batch
    logits = model(input_ids=ids).logits  # (B, T, V)
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100
    )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return batch.to(device)


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    if world == 1:
        return batch
    if isinstance(batch, dict):
        return {k: v[rank::world] if torch.is_tensor(v) and v.dim() else v
                for k, v in batch.items()}
    return batch[rank::world]


# -- configuration ------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """One training or fine-tuning run. At least one stop (steps, tokens, FLOPs) is required."""

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int | None = None
    max_tokens: int | None = None
    max_flops: float | None = None
    eval_every: int = 50
    eval_windows: int | None = 256
    early_stopping_patience: int | None = None
    precision: str = "auto"  # auto (measured per shape on CPU, planner.engine.speed) | bf16 | fp32
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "linear", "constant"):
            raise SpecplanError(f"schedule={self.schedule!r}: use cosine, linear or constant")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise SpecplanError(f"precision={self.precision!r}: use auto, bf16 or fp32")
        for name in ("batch_size", "grad_accum", "eval_every"):
            if getattr(self, name) < 1:
                raise SpecplanError(f"{name}={getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise SpecplanError(f"lr={self.lr} must be positive")

    @property
    def windows_per_step(self) -> int:
        """Windows of one optimizer step, over its micro-batches."""
        return self.batch_size * self.grad_accum

    def tokens_per_step(self, seq_len: int) -> int:
        return self.windows_per_step * seq_len

    def resolve_steps(self, seq_len: int, flops_per_token: float) -> int:
        """Optimizer steps allowed by the tightest of the step, token and FLOP stops.

        Raises:
            BudgetError: when a stop allows less than one optimizer step.
        """
        per_step_tokens = self.tokens_per_step(seq_len)
        per_step_flops = per_step_tokens * flops_per_token
        limits = []
        if self.max_steps is not None:
            limits.append(("steps", self.max_steps, self.max_steps))
        if self.max_tokens is not None:
            limits.append(("tokens", self.max_tokens // per_step_tokens, self.max_tokens))
        if self.max_flops is not None:
            limits.append(("FLOPs", int(self.max_flops // per_step_flops), self.max_flops))
        if not limits:
            raise SpecplanError("no stop given: set max_steps, max_tokens or max_flops")
        unit, steps, given = min(limits, key=lambda x: x[1])
        if steps < 1:
            raise BudgetError(
                f"a budget of {given:.3g} {unit} is smaller than one optimizer step "
                f"({per_step_tokens} tokens, {per_step_flops:.3g} FLOPs); raise the budget or "
                f"lower batch_size"
            )
        return steps

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up over ``warmup_steps`` or 1% of the run, whichever is longer (the
        reference study warms up 1,000 of 100k+ steps), then the schedule to ``min_lr_ratio``.
        With early stopping the run's length is not its step cap, so the warm-up is as given."""
        warmup = (self.warmup_steps if self.early_stopping_patience
                  else max(self.warmup_steps, total // 100))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "constant":
            return self.lr
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        floor = self.lr * self.min_lr_ratio
        if self.schedule == "linear":
            return floor + (self.lr - floor) * (1 - progress)
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    steps: int
    tokens: int
    flops: float
    seconds: float
    stopped: str
    history: list[dict]  # {"step", "tokens", "val_loss"} per validation
    best_val_loss: float | None
    best_step: int | None
    train_loss: float | None
    precision: str = "fp32"  # what the run's passes ran in (planner.engine.speed)
    attention: str = "default"
    windows_per_pass: int = 0  # per process, after any halving for memory

    def to_dict(self) -> dict:
        return asdict(self)


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 32,
    loss_fn: LossFn = lm_loss,
    device: torch.device | None = None,
) -> float:
    """Mean token loss over windows (every window has the same number of targets)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        total += loss_fn(model, batch).item() * len(batch)
        count += len(batch)
    model.train(was_training)
    if count == 0:
        raise SpecplanError("cannot evaluate on an empty split; the corpus needs more text")
    return total / count


# -- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer, step: int, meta: dict) -> None:
    """Weights and optimizer state as safetensors, scalars as JSON; written then renamed."""

    with atomic_dir(folder) as tmp:
        _write_checkpoint(tmp, model, optimizer, step, meta)


def _write_checkpoint(tmp: Path, model: torch.nn.Module, optimizer, step: int, meta: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Tied weights share storage, which safetensors refuses: store each storage once.
    seen, weights, aliases = {}, {}, {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            weights[name] = tensor.clone()
    save_file(weights, str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {
        f"{idx}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous().cpu()
        for idx, s in opt["state"].items()
        for k, v in s.items()
    }
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "param_groups": opt["param_groups"], "aliases": aliases, **meta})
    )


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer) -> dict:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    for name, target in meta.pop("aliases").items():
        weights[name] = weights[target]
    model.load_state_dict(weights)
    state: dict = {}
    for key, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


# -- the loop -----------------------------------------------------------------------------------
#: Non-embedding parameters up to which a learning rate applies as given (the CPU presets).
LR_REFERENCE_PARAMS = 10e6


def scaled_lr(lr: float, model: torch.nn.Module | int) -> float:
    """``lr`` for a model (or a count) of up to :data:`LR_REFERENCE_PARAMS` non-embedding
    parameters, scaled by ``(reference / N) ** 0.5`` above it. A projected network passes its
    deployed shape's count: its basis tensors combine into one model of that shape.

    The rates this project's defaults and search ranges were tuned on (3e-3 pretraining, 1e-3
    fine-tuning, at 0.1-8M parameters) diverge at 100M+;
    GPT-3's table (Brown et al. 2020, Table 2.1: 6e-4 at 125M, 2e-4 at 1.3B) falls as about
    N^-0.47; from 3e-3 this rule gives 9.9e-4 for the study's 126M shape (93M non-embedding)
    and 5.3e-4 for the 350m preset."""
    if isinstance(model, int):
        body = model
    else:
        embeddings = {id(m.weight) for m in (
            getattr(model, "get_input_embeddings", lambda: None)(),
            getattr(model, "get_output_embeddings", lambda: None)())
            if m is not None and hasattr(m, "weight")}
        body = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    return lr * min(1.0, (LR_REFERENCE_PARAMS / max(body, 1)) ** 0.5)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (norms and gains are not decayed).

    The fused kernel where torch has one (CPU and CUDA floating-point parameters): one pass per
    step instead of a chain of small per-parameter ops (torch's default on CPU).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
        except RuntimeError:  # an older torch without the CPU kernel
            pass
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def train(
    model: torch.nn.Module,
    source: BatchSource,
    cfg: TrainConfig,
    *,
    seq_len: int,
    flops_per_token: float,
    ledger: Ledger,
    phase: str,
    label: str = "train",
    valid: torch.Tensor | None = None,
    loss_fn: LossFn = lm_loss,
    eval_loss_fn: LossFn | None = None,
    on_eval: Callable[[int, int, float], None] | None = None,
    start_loss: float | None = None,
) -> TrainResult:
    """Train ``model`` in place until a stop is reached; charge the ledger; return the history.

    Args:
        source: global batches by step (see :class:`WindowSampler`).
        seq_len: tokens per window, for token and FLOP accounting.
        flops_per_token: analytic training FLOPs per token of this model
            (``planner.engine.models``).
        phase: ledger phase the training is charged to.
        valid: (n, T) windows for periodic validation; required for early stopping.
        on_eval: called with ``(step, tokens_seen, val_loss)`` after each validation; it may
            raise (e.g. ``optuna.TrialPruned``) to stop the run.
        start_loss: validation loss of the weights before training; with early stopping they
            stay a candidate, so fine-tuning never returns a model worse than it started.

    Early stopping (``cfg.early_stopping_patience``) restores the best validation weights, as
    fine-tuning on little domain data must (the reference study stops at the best step).
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch_size % world:
        raise SpecplanError(f"batch_size={cfg.batch_size} is not divisible by {world} processes")
    if cfg.early_stopping_patience and valid is None:
        raise SpecplanError("early stopping needs validation windows")
    total_steps = cfg.resolve_steps(seq_len, flops_per_token)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    model.train()
    t0 = time.perf_counter()  # the probe's seconds are the run's too
    settings = StepSettings()
    if rank == 0:  # a probe pays back only over enough steps; a cached choice is free
        first = _to_device(_shard(source.batch(0, 0), rank, world), device)
        rows = len(first["input_ids"] if isinstance(first, dict) else first)
        settings = step_settings(model, first, loss_fn, device, cfg.precision,
                                 rows * seq_len * flops_per_token,
                                 may_probe=total_steps >= PROBE_MIN_STEPS)
    if distributed:  # every rank runs what rank 0 measured
        chosen = [settings]
        dist.broadcast_object_list(chosen, src=0)
        settings = chosen[0]
    optimizer = build_optimizer(model, cfg)
    step_model = model
    if distributed:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        step_model = torch.compile(step_model)

    tokens_per_step = cfg.tokens_per_step(seq_len)
    start_step, history = 0, []
    best = (math.inf, None, None)  # (loss, step, state)
    if start_loss is not None and cfg.early_stopping_patience:
        best = (start_loss, 0, _snapshot(model))
    checkpoint = Path(cfg.checkpoint_dir) / "last" if cfg.checkpoint_dir else None
    before_seconds, before_device = 0.0, device_label(device)
    if cfg.resume and checkpoint and checkpoint.exists():
        meta = load_checkpoint(checkpoint, model, optimizer)
        start_step, history = meta["step"], meta["history"]
        before_seconds = meta.get("seconds", 0.0)
        before_device = meta.get("device", before_device)
        if meta.get("best_step") is not None:
            best = (meta["best_val_loss"], meta["best_step"], None)

    evaluate = eval_loss_fn or loss_fn
    valid_windows = valid[: cfg.eval_windows] if valid is not None and cfg.eval_windows else valid
    stopped, bad_evals, train_loss = "budget", 0, None
    progress = _progress(total_steps - start_step, label)
    tag = tracking.start_run(label) if rank == 0 else None
    splits = 1  # passes per micro-batch: more when one runs out of memory (one process)
    step = start_step
    try:
        while step < total_steps:
            lr = cfg.lr_at(step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                running = _passes(step_model, source, step, cfg, splits, rank, world, device,
                                  settings, loss_fn, distributed)
            except torch.OutOfMemoryError:
                rows = cfg.batch_size // world // splits
                if distributed or rows < 2:
                    if distributed:
                        raise  # another rank is inside the all-reduce: the trial fails
                    raise SpecplanError(
                        f"{label}: out of memory on {device_label(device)} at {rows} window(s) "
                        "per pass; the model does not fit: use a smaller model (--small, "
                        "--large), a shorter --seq-len, or a device with more memory") from None
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                factor = next(f for f in range(2, rows + 1) if rows % f == 0)
                splits *= factor
                log.warning(f"{label}: out of memory at {rows} windows per pass; retrying the "
                            f"step at {rows // factor} (the same windows per optimizer step)")
                continue
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_loss = running
            step += 1
            progress.update()
            last = step == total_steps
            if tag and (step % tracking.LOG_EVERY == 0 or last):
                tracking.log(tag, {"train_loss": running.item(), "lr": lr, "tokens_per_s": (
                    step - start_step) * tokens_per_step / (time.perf_counter() - t0)}, step)
            evaluating = valid_windows is not None and (step % cfg.eval_every == 0 or last)
            if evaluating:
                # fp32, as the starting loss and every other evaluation: comparable across runs
                val = evaluate_loss(model, valid_windows, loss_fn=evaluate)
                history.append({"step": step, "tokens": step * tokens_per_step, "val_loss": val})
                tracking.log(tag, {"val_loss": val}, step)
                if val < best[0]:
                    best = (val, step, _snapshot(model) if cfg.early_stopping_patience else None)
                    bad_evals = 0
                else:
                    bad_evals += 1
            # The last step too: a resumed build skips runs that had finished.
            due = cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or last)
            if checkpoint and due and rank == 0:
                save_checkpoint(checkpoint, model, optimizer, step, {
                    "history": history, "best_val_loss": best[0] if best[1] else None,
                    "best_step": best[1], "config": asdict(cfg),
                    "seconds": before_seconds + time.perf_counter() - t0,
                    "device": device_label(device) + (f" x{world}" if world > 1 else ""),
                })
            if evaluating:
                if on_eval is not None:
                    on_eval(step, step * tokens_per_step, history[-1]["val_loss"])
                if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                    stopped = "early-stopping"
                    break
    finally:
        progress.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        steps_run = step - start_step
        if rank == 0 and start_step:  # spent before the resume: still this run's cost
            ledger.charge(
                phase, label=f"{label} (steps 1-{start_step}, before resuming)",
                tokens=start_step * tokens_per_step,
                flops=start_step * tokens_per_step * flops_per_token, seconds=before_seconds,
                device=before_device,
            )
        if rank == 0 and steps_run:
            ledger.charge(
                phase, label=label, tokens=steps_run * tokens_per_step,
                flops=steps_run * tokens_per_step * flops_per_token, seconds=seconds,
                device=device_label(device) + (f" x{world}" if world > 1 else ""),
            )
        if tag:
            tracking.log_ledger(ledger)
    if best[2] is not None and best[1] != step:
        model.load_state_dict(best[2])  # fine-tuning keeps its best validation weights
    return TrainResult(
        steps=step, tokens=step * tokens_per_step, flops=step * tokens_per_step * flops_per_token,
        seconds=seconds, stopped=stopped, history=history,
        best_val_loss=best[0] if best[1] is not None else None, best_step=best[1],
        train_loss=None if train_loss is None else train_loss.item(),
        precision=settings.precision, attention=settings.attention,
        windows_per_pass=cfg.batch_size // world // splits,
    )


def _passes(step_model, source: BatchSource, step: int, cfg: TrainConfig, splits: int,
            rank: int, world: int, device: torch.device, settings, loss_fn: LossFn,
            distributed: bool) -> torch.Tensor:
    """Forward and backward over one optimizer step's windows: ``cfg.grad_accum`` micro-batches,
    each in ``splits`` passes of equal rows; gradients accumulate to the mean over all of them.
    Returns the step's mean loss, summed on the device (no sync per pass)."""
    running = torch.zeros((), device=device)
    passes = cfg.grad_accum * splits
    for micro in range(cfg.grad_accum):
        whole = _to_device(_shard(source.batch(step, micro), rank, world), device)
        for part in range(splits):
            sync = (micro == cfg.grad_accum - 1 and part == splits - 1) or not distributed
            ctx = step_model.no_sync() if distributed and not sync else nullcontext()
            with ctx, settings.apply(device):
                loss = loss_fn(step_model, _shard(whole, part, splits)) / passes
            with ctx:
                loss.backward()
            running += loss.detach().float()
    return running


def _progress(total: int, label: str):
    """A progress bar on stderr when it is a terminal; nothing in logs, CI or tests."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="step", leave=False,
                disable=not sys.stderr.isatty())


def _snapshot(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
