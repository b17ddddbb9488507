"""What every strategy run shares: data, tokenizer, budgets, model sizes, caches, the ledger.

The workspace owns the two caches that make shared pretraining real: clusterings of the generic
windows (by k and embedder) and pretraining artifacts (by strategy, the settings that shape
pretraining, the generic corpus, the budget, the model shapes and the seed). A trial or a domain
that needs an artifact that exists loads it and says so (``Artifact.reused``).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from planner.core.cost import Ledger
from planner.core.io import atomic_dir, content_hash, file_lock, write_json
from planner.data.clustering import clustering_fit_flops, fit_clustering, get_embedder
from planner.core.errors import SpecplanError
from planner.engine.checkpoints import Checkpoint
from planner.engine.models import ModelShape, model_shape, size_name
from planner.engine.train import (
    TrainConfig,
    TrainResult,
    WindowSampler,
    evaluate_loss,
    lm_loss,
    scaled_lr,
    train,
)

# Training-template fields that do not change the weights a run produces.
_NOT_IN_WEIGHTS = frozenset({"device", "compile", "checkpoint_dir", "checkpoint_every", "resume",
                             "max_steps", "max_tokens", "max_flops"})


#: Folder of the cache that holds pretraining checkpoints of artifacts being built.
CHECKPOINTS = "checkpoints"

@dataclass
class Workspace:
    """Shared context of strategy runs.

    Args:
        generic: the generic corpus (``planner.data.corpus.CorpusSplits``).
        tokenizer: its tokenizer (exported next to every model).
        budgets: ``strategies.base.Budgets``.
        cache_dir: where artifacts and clusterings are cached.
        small: size of the deployed model (the inference budget's size): a preset name, a
            ``key=value`` spec or a model config folder (``planner.engine.models.model_shape``).
        large: size of the large model (``llm``, distillation teachers): the same, or a
            parameter ratio to the deployed model (``6x``, the study's); kept as the concrete
            size it resolves to.
        train: template for every training run (batch size, device, precision, seed...).
        embedder: clustering embedder (``hashed`` or ``minilm``).
        on_eval: called ``(step, tokens, val_loss)`` during fine-tuning (pruning hooks).
        clusterings: clusterings already fitted, by ``(k, embedder)``: pass one dict to every
            workspace of a plan or sweep so each k is clustered once per process.
        cross_process_locks: hold a file lock per cached build, so parallel workers sharing the
            cache never train the same artifact or clustering twice (the second one waits, then
            finds it in the cache).
        building: the artifact being built now (set by :meth:`artifact`): its pretraining runs
            checkpoint under ``cache_dir/checkpoints/<artifact>/`` every
            ``train.checkpoint_every`` steps, so a killed trial resumes where it stopped.

    Build it with :func:`planner.run.config.make_workspace`.
    """

    generic: object
    tokenizer: object
    budgets: object
    cache_dir: Path
    small: str = "small"
    large: str = "6x"
    train: TrainConfig = field(default_factory=TrainConfig)
    embedder: str = "hashed"
    on_eval: Callable[[int, int, float], None] | None = None
    ledger: Ledger = field(default_factory=Ledger)
    clusterings: dict = field(default_factory=dict, repr=False)
    cross_process_locks: bool = False
    building: str | None = None
    base: Checkpoint | None = None
    base_cost: float = 0.0

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        if self.base is not None and self.base.shape.vocab_size < self.vocab_size:
            raise SpecplanError(f"--base {self.base.folder}: its tokenizer has {self.vocab_size} "
                                f"tokens, more than its {self.base.shape.vocab_size} embeddings")
        small = self.shape(self.small)  # refuses a size that names no shape
        # The large model as a concrete size (a ratio like ``6x`` scales the deployed model
        # once, here), so that a copy for another deployed size keeps the same large model.
        self.large = size_name(model_shape(self.large, vocab_size=self.vocab_size,
                                           seq_len=self.seq_len, relative_to=small))

    @property
    def seq_len(self) -> int:
        return self.generic.train.seq_len

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def shape(self, size: str) -> ModelShape:
        """The shape a size names at this plan's vocabulary and window; the base's own shape
        (its vocabulary) when the deployed model starts from a base checkpoint."""
        if self.base is not None and size == str(self.base.folder):
            return self.base.shape
        return model_shape(size, vocab_size=self.vocab_size, seq_len=self.seq_len)

    def initial_model(self, shape: ModelShape) -> torch.nn.Module:
        """Where a deployed-size model's training starts: the base checkpoint's weights when
        the plan has one, else fresh weights of ``shape`` (seeded)."""
        return self.base.load() if self.base is not None else shape.build(seed=self.train.seed)

    def charge_base(self) -> float:
        """Charge the base's own pretraining to ``generic``: 0 FLOPs, a sunk cost, unless
        ``--base-cost`` counts it (for comparisons by total cost). Returns the FLOPs."""
        label = ("base checkpoint pretraining (--base-cost)" if self.base_cost
                 else "base checkpoint (sunk cost)")
        self.ledger.charge("generic", label=label, tokens=0, flops=self.base_cost, seconds=0.0,
                           device="sunk")
        return self.base_cost

    def train_config(self, **overrides) -> TrainConfig:
        """The template with this run's stops and rates (always one fresh object)."""
        base = replace(self.train, max_steps=None, max_tokens=None, max_flops=None)
        return replace(base, **overrides)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(ids)

    @contextmanager
    def charging(self, ledger: Ledger):
        """Charge everything inside the block to ``ledger`` (one part's costs, kept apart)."""
        outer, self.ledger = self.ledger, ledger
        try:
            yield ledger
        finally:
            self.ledger = outer

    # -- caches ---------------------------------------------------------------------------------
    def clustering(self, k: int):
        """The k-means clustering of the generic train windows (cached in memory and on disk)."""
        key = (k, self.embedder)
        if key not in self.clusterings:
            name = content_hash(self.generic.fingerprint, str(k), self.embedder,
                                str(self.train.seed))
            with self._lock(f"clusters-{name}"):
                self.clusterings[key] = fit_clustering(
                    self.generic.train, k=k, embedder=self.embedder, seed=self.train.seed,
                    cache_dir=self.cache_dir, decode=self.decode,
                )
        return self.clusterings[key]

    def clustering_flops(self, k: int) -> float:
        """What fitting the generic clustering costs, known before it runs (for estimates)."""
        return clustering_fit_flops(get_embedder(self.embedder), self.generic.train.n,
                                    self.seq_len, k)

    def charge_clustering(self, clustering) -> float:
        """Charge the generic clustering to the pretraining it serves: every strategy that
        uses it pays it, fitted now or reused (then on device "cache", with its recorded time:
        a cache saves time, not accounted cost). Returns the FLOPs charged, which the
        pretraining budget pays first."""
        device = clustering.fit_device if clustering.fitted_here else "cache"
        clustering.fitted_here = False
        flops = clustering.fit_flops(self.seq_len)
        self.ledger.charge("generic", label=f"clustering (k={clustering.k}, "
                                            f"{clustering.embedder_name} embedder)",
                           tokens=0, flops=flops, seconds=clustering.fit_seconds, device=device)
        return flops

    def _lock(self, name: str):
        """A file lock on one cache entry when workers share the cache, else nothing."""
        if not self.cross_process_locks:
            return nullcontext()
        return file_lock(self.cache_dir / "locks" / f"{name}.lock")

    def artifact_key(self, strategy, settings) -> str:
        """What the pretrained weights depend on: a change to any of it trains anew.

        The training template counts whole (schedule, optimizer, seed, batch, validation that
        picks the best weights), except where and how it runs (device, compile, checkpoints,
        the micro-batch) and the stops, which each run sets from its budget.
        """
        template = {k: v for k, v in asdict(self.train).items() if k not in _NOT_IN_WEIGHTS}
        # Micro-batches accumulate into the same step: only the windows per step count (keyed
        # as a batch of that many with no accumulation, so older artifacts keep their keys).
        template.update(batch_size=self.train.windows_per_step, grad_accum=1)
        return content_hash(
            strategy.name,
            json.dumps(settings.generic_part(), sort_keys=True),
            self.generic.fingerprint,
            repr(float(self.budgets.pretrain_flops)),
            json.dumps([self.shape(self.small).to_dict(), self.shape(self.large).to_dict()]),
            json.dumps(template, sort_keys=True),
            self.embedder,
            *([self.base.fingerprint, repr(self.base_cost)] if self.base is not None else []),
        )

    def artifact(self, strategy, settings):
        """Load the strategy's pretraining artifact, or train and cache it.

        Returns:
            ``strategies.base.Artifact``; ``reused`` says whether it came from the cache. Its
            ledger holds the generic cost, whether paid now or by the run that made it.
        """

        if not strategy.has_generic_phase:
            return Artifact(None, {}, Ledger())
        name = f"{strategy.name}-{self.artifact_key(strategy, settings)}"
        with self._lock(f"artifact-{name}"):
            return self._artifact(strategy, settings, self.cache_dir / "artifacts" / name)

    def _artifact(self, strategy, settings, folder: Path):
        if (folder / "meta.json").exists():
            meta = json.loads((folder / "meta.json").read_text())
            ledger = Ledger.from_dict(json.loads((folder / "ledger.json").read_text()))
            self.ledger.charge("generic", label="reused artifact", tokens=0, flops=0.0,
                               seconds=0.0, device="cache")
            return Artifact(folder, meta, ledger, reused=True)
        run_ledger = Ledger()
        outer, self.building = self.building, folder.name
        try:
            with self.charging(run_ledger):
                meta = self._build(strategy, settings, folder, run_ledger)
        finally:
            self.building = outer
        _barrier()  # every rank reads the artifact rank 0 saved
        self.ledger.extend(run_ledger)
        if _rank() == 0:  # built: its pretraining checkpoints are spent
            shutil.rmtree(self.cache_dir / CHECKPOINTS / folder.name, ignore_errors=True)
        return Artifact(folder, meta, run_ledger, reused=False)

    def _build(self, strategy, settings, folder: Path, run_ledger: Ledger) -> dict:
        """Pretrain into ``folder`` (rank 0 saves; other ranks train alongside it)."""
        if _rank() == 0:
            with atomic_dir(folder) as tmp:
                meta = strategy.pretrain(settings, self, tmp)
                write_json(tmp / "ledger.json", run_ledger.to_dict())
                write_json(tmp / "meta.json", meta)
            return meta
        with tempfile.TemporaryDirectory() as tmp:
            return strategy.pretrain(settings, self, Path(tmp))

    # -- the common training steps of strategies -----------------------------------------------
    def pretrain_model(
        self, model: torch.nn.Module, windows: torch.Tensor, *, flops_per_token: float,
        max_flops: float, lr: float, label: str, order: torch.Tensor | None = None,
        valid: torch.Tensor | None = None, phase: str = "generic", loss_fn=None,
    ) -> TrainResult:
        """Train from scratch on windows (or an index stream over them) within ``max_flops``;
        inside an artifact build, checkpointed and resumed (see ``building``)."""
        cfg = self.train_config(lr=scaled_lr(lr, model), max_flops=max_flops,
                                **self.checkpointing(label))
        source = WindowSampler(windows, cfg.batch_size, cfg.grad_accum, seed=cfg.seed, order=order)
        # a distillation loss trains; validation stays the plain LM loss (a perplexity)
        extra = {"loss_fn": loss_fn, "eval_loss_fn": lm_loss} if loss_fn else {}
        return train(
            model, source, cfg, seq_len=self.seq_len, flops_per_token=flops_per_token,
            ledger=self.ledger, phase=phase, label=label,
            valid=valid if valid is not None else self.generic.valid.ids, **extra,
        )

    def checkpointing(self, label: str) -> dict:
        """Checkpoint settings of one pretraining run of the artifact being built: its folder
        is keyed by the artifact (content-hashed) and the run's label, so only the same run
        ever resumes from it."""
        if self.building is None or not self.train.checkpoint_every:
            return {}
        run = content_hash(label)[:12]
        return {"checkpoint_dir": str(self.cache_dir / CHECKPOINTS / self.building / run),
                "resume": True}

    def finetune(
        self, model: torch.nn.Module, domain, settings, *, flops_per_token: float,
        max_flops: float, label: str = "fine-tune", loss_fn=None, lr: float | None = None,
    ) -> tuple[float, TrainResult]:
        """Evaluate on the domain, then fine-tune with early stopping within ``max_flops``.

        ``lr`` overrides ``settings.ft_lr`` (training from scratch uses the pretraining rate).

        Returns:
            (validation loss before fine-tuning, the training result; the model holds the
            best-validation weights).
        """

        valid = domain.valid.ids
        subset = valid[: self.train.eval_windows or None]  # what the engine validates on
        start = evaluate_loss(model, subset)
        # Reported on the whole split, like the perplexity after fine-tuning.
        before = start if len(subset) == len(valid) else evaluate_loss(model, valid)
        steps_per_epoch = max(1, domain.train.n // self.train.windows_per_step)
        cfg = self.train_config(
            lr=scaled_lr(lr or settings.ft_lr, model), max_flops=max_flops,
            warmup_steps=min(10, steps_per_epoch),
            early_stopping_patience=settings.ft_patience,
            eval_every=max(1, min(self.train.eval_every, steps_per_epoch // 2 or 1)),
        )
        source = WindowSampler(domain.train.ids, cfg.batch_size, cfg.grad_accum, seed=cfg.seed)
        result = train(
            model, source, cfg, seq_len=self.seq_len, flops_per_token=flops_per_token,
            ledger=self.ledger, phase="specialization", label=label, valid=valid,
            loss_fn=loss_fn or lm_loss, eval_loss_fn=lm_loss, on_eval=self.on_eval,
            start_loss=start,
        )
        return before, result


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass
class Artifact:
    """A pretraining result on disk, shared by every domain and trial that needs it."""

    folder: Path | None
    meta: dict
    ledger: Ledger
    reused: bool = False
