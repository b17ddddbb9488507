"""``slm-d``: a pretrained small student distilled from fine-tuned teachers.

The reference study's SLM-d (v2 §2.2, §4.1): a large model is pretrained and fine-tuned on the
domain, and a pretrained small student is fine-tuned on the domain's windows against the hard
next-token targets mixed with the teacher's next-token distributions. The study finds it helps
little once the teacher's pretraining is counted, so every teacher cost is counted here.

Production practice (LinkedIn's multi-teacher recipe) adds two things the strategy serves: several
teachers, each specialized by any registered strategy and combined per token, and staged
distillation (large teacher -> mid-size teacher -> student).

Budget split:

* generic: the teachers' pretraining (``teacher_fraction`` of the budget, split evenly over
  the models that pretrain: the teachers, plus the mid-size teacher when staged) and the
  student's (the rest). Each is an artifact of its own strategy (``llm``, ``slm``...) in a
  sub-workspace with its scaled budget, so it is cached and reused by any run that needs it.
* specialization: the teachers' forward passes over the domain's train windows (exact, fixed
  first), then the teachers' fine-tuning and the mid-size distillation (``teacher_spec_share`` of
  what is left, split evenly, each capped), then the student's distillation with the rest.

Teachers run with their strategy's default settings, so a teacher artifact is the very one a plain
run of that strategy at the same budget makes (and reuses); the student is pretrained as ``slm``
with this strategy's ``lr``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from planner.core.budgets import Budgets
from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.devices import autocast_dtype, resolve_device
from planner.data.corpus import load_tokenizer
from planner.engine.checkpoints import Checkpoint, open_checkpoint
from planner.engine.distillation import DIVERGENCES
from planner.engine.models import load_model, scaled, size_name
from strategies.base import (
    CostEstimate,
    PretrainSettings,
    Settings,
    Specialized,
    Strategy,
    available,
    absorb,
    get_strategy,
    register,
    setting,
    step_flops,
)
from strategies.distill.teachers import (
    DistillLoss,
    TeacherCache,
    check_teacher,
    combine_teachers,
    parse_weights,
)
from strategies.workspace import Artifact

NAME = "slm-d"


def is_checkpoint_name(name: str) -> bool:
    """Whether a ``teachers`` entry is a checkpoint folder rather than a strategy name."""
    return "/" in name or Path(name).is_dir()


@dataclass
class DistillSettings(PretrainSettings):
    """Settings of ``slm-d``; ``lr`` is the student's pretraining rate (teachers use defaults)."""

    teachers: str = setting("llm", generic=True,
                            help="comma-separated strategies whose specialized models teach, "
                                 "or checkpoint folders (fine-tuned on the domain, then teach)")
    teacher_fraction: float = setting(0.5, low=0.05, high=0.95, generic=True,
                                      help="share of the pretraining budget for the teachers")
    staged: bool = setting(False, choices=(False, True), generic=True,
                           help="distil the teachers into a mid-size teacher, then the student")
    teacher_weights: str = setting("uniform",
                                   help="uniform, confidence or one weight per teacher (a,b,...)")
    alpha: float = setting(0.5, low=0.0, high=1.0, help="weight of the distillation term")
    temperature: float = setting(2.0, low=0.5, high=4.0, help="softening temperature")
    divergence: str = setting("forward_kl", choices=DIVERGENCES,
                              help="divergence from the teacher to the student")
    top_k: int = setting(32, low=1, high=1024, log=True,
                         help="teacher tokens kept per position (the vocabulary size: exact)")
    tune_checkpoints: bool = setting(
        True, choices=(True, False),
        help="fine-tune checkpoint teachers on the domain first (False: they teach as given, "
             "e.g. checkpoints already tuned for it; their share goes to the student)")
    teacher_spec_share: float = setting(
        0.5, low=0.1, high=0.9,
        help="share of the specialization budget left after teacher passes that the teachers' "
             "fine-tuning may use",
    )

    def __post_init__(self) -> None:
        if isinstance(self.teachers, (list, tuple)):  # TOML and JSON give lists
            self.teachers = ",".join(self.teachers)
        super().__post_init__()
        parse_weights(self.teacher_weights, len(self.teacher_names()))

    def teacher_names(self) -> list[str]:
        """The teacher strategies, validated against the registry.

        Raises:
            SpecplanError: an empty or unknown name, ``slm-d`` itself, or a name given twice.
        """
        names = [n.strip() for n in str(self.teachers).split(",")]
        if not all(names):
            raise SpecplanError(
                f"teachers={self.teachers!r}: give comma-separated strategy names, e.g. llm,slm"
            )
        for name in names:
            if is_checkpoint_name(name):  # checked when the workspace is known (_members)
                continue
            if name == NAME:
                raise SpecplanError(f"teachers={self.teachers!r}: {NAME} cannot teach itself")
            if name not in available():
                raise SpecplanError(
                    f"teachers={self.teachers!r}: unknown strategy {name!r}; choose from "
                    f"{', '.join(n for n in available() if n != NAME)}"
                )
        if len(set(names)) < len(names):
            raise SpecplanError(f"teachers={self.teachers!r}: a teacher is listed twice")
        return names


@dataclass(frozen=True)
class DistillEstimate(CostEstimate):
    """A cost estimate that also says which part of the recipe sets each phase's minimum."""

    generic_limit: str = ""
    spec_limit: str = ""


@dataclass
class _Member:
    """One model of the recipe and how it is built.

    Attributes:
        role: ledger and error prefix (``teacher llm``, ``mid-size teacher``, ``student``).
        kind: ``teacher``, ``mid`` or ``student``.
        share: its fraction of the pretraining budget.
        size: the deployed-size override its sub-workspace builds (mid-size teacher), or None.
        base: a teacher checkpoint (an ``slm`` that starts from it), or None.
    """

    role: str
    kind: str
    strategy: Strategy
    settings: Settings
    share: float
    size: str | None = None
    base: Checkpoint | None = None


def mid_size(ws) -> str:
    """Size of the staged recipe's intermediate teacher: the deployed model widened to the
    geometric mean of the deployed and large parameter counts (``medium`` for small -> large,
    as in the production recipe's teacher between the 7B model and the student). When no
    width lies strictly between, it falls back to the deployed size: a same-size teaching
    assistant still passes on the teacher's smoothed distribution (born-again networks) and
    keeps the staged recipe runnable on any pair of sizes."""
    small, large = ws.shape(ws.small), ws.shape(ws.large)
    mid = scaled(small, math.sqrt(large.params_total / small.params_total))
    between = small.params_total < mid.params_total < large.params_total
    return size_name(mid) if between else ws.small


def _vocabulary(strategy: Strategy, ws) -> tuple[int, object]:
    """(vocabulary size, tokenizer) of the models a teacher strategy builds, before training.

    A strategy that brings its own model family declares ``vocabulary(ws)``; strategies built
    on workspace shapes (``shape(ws)``, as slm and llm) use the workspace tokenizer. Others are
    checked again on their specialized model, still before any distillation.
    """
    if hasattr(strategy, "vocabulary"):
        return strategy.vocabulary(ws)
    if hasattr(strategy, "shape"):
        return strategy.shape(ws).vocab_size, ws.tokenizer
    return ws.vocab_size, ws.tokenizer


@register
class DistillationStrategy(Strategy):
    """``slm-d``: teachers pretrained and specialized by their own strategies, then distilled.

    Charges: each teacher's pretraining and the student's (and the mid-size teacher's when
    staged) to ``generic``, including teacher artifacts reused from the cache; per domain, the
    teachers' fine-tuning, their forward passes over the train windows (cached outputs charge
    nothing), the mid-size distillation and the student's distillation to ``specialization``.
    Reference study (arXiv 2402.01093 v2) §2.2, §4.1 and Fig. 5; production recipes as above.

    Example:
        >>> from strategies import get_strategy
        >>> get_strategy("slm-d").settings({"teachers": "llm,slm"}).teacher_names()
        ['llm', 'slm']
    """

    name = NAME
    family = "distillation"
    settings_cls = DistillSettings
    accepts_base = True  # the student starts from the base; teachers may be checkpoints too
    summary = "small model distilled from fine-tuned teachers (multi-teacher, optionally staged)"

    # -- the recipe -----------------------------------------------------------------------------
    def _members(self, settings: DistillSettings, ws) -> list[_Member]:
        """Teachers, the mid-size teacher when staged, and the student (always last)."""
        slm = get_strategy("slm")
        members = []
        for name in settings.teacher_names():
            if is_checkpoint_name(name):  # fine-tuned on the domain from its own weights
                base = open_checkpoint(name, seq_len=ws.seq_len, device=ws.train.device,
                                       what="teachers")
                members.append(_Member(f"teacher {base.folder.name}", "teacher", slm,
                                       slm.settings(), 0.0, base=base))
                continue
            teacher = get_strategy(name)
            members.append(_Member(f"teacher {name}", "teacher", teacher, teacher.settings(), 0.0))
        if settings.staged:
            members.append(_Member("mid-size teacher", "mid", slm, slm.settings(), 0.0,
                                   mid_size(ws)))
        pretraining = [m for m in members if m.strategy.has_generic_phase and m.base is None]
        for m in pretraining:
            m.share = settings.teacher_fraction / len(pretraining)
        student_share = 1.0 - settings.teacher_fraction if pretraining else 1.0
        members.append(_Member("student", "student", slm, slm.settings({"lr": settings.lr}),
                               student_share, base=ws.base))  # from the plan's base, if any
        return members

    @staticmethod
    def _sub(ws, member: _Member, *, spec_flops: float | None = None):
        """A workspace for one member: its pretraining share, its own ledger, no pruning hook."""
        budgets: Budgets = replace(
            ws.budgets, pretrain_flops=member.share * ws.budgets.pretrain_flops,
            spec_flops=ws.budgets.spec_flops if spec_flops is None else spec_flops,
        )
        small = str(member.base.folder) if member.base else member.size or ws.small
        return replace(ws, budgets=budgets, small=small, ledger=Ledger(), on_eval=None,
                       base=member.base)

    @staticmethod
    def _check_vocabularies(members: list[_Member], ws) -> None:
        for m in members[:-1]:
            if m.base is not None:  # a checkpoint brings its own tokenizer
                vocab, tokenizer = m.base.shape.vocab_size, load_tokenizer(m.base.folder)
            else:
                vocab, tokenizer = _vocabulary(m.strategy, DistillationStrategy._sub(ws, m))
            check_teacher(m.role, vocab_size=vocab, tokenizer=tokenizer,
                          student_vocab_size=ws.vocab_size, student_tokenizer=ws.tokenizer)

    def _costs(self, settings: DistillSettings, ws, members: list[_Member],
               train_tokens: int | None) -> tuple[DistillEstimate, float]:
        """The estimate for a domain of ``train_tokens``, and each teacher's fine-tuning cap.

        Minimums are the smallest budgets at which every part gets at least one optimizer step
        from its share; the limit strings name the part that sets them.
        """
        spec_budget = ws.budgets.spec_flops
        teachers = members[:-1]  # the student is last
        estimates = [m.strategy.estimate(m.settings, self._sub(ws, m)) for m in members]
        generic = sum(e.generic_flops for e in estimates)
        generic_needs = [
            (e.min_generic_flops / m.share,
             f"{m.role} needs {e.min_generic_flops:.3g} FLOPs from its {m.share:.0%} share")
            for m, e in zip(members, estimates) if m.share > 0
        ]
        forward = [ws.shape(m.size).forward_flops_per_token() if m.kind == "mid"
                   else e.inference_flops_per_token for m, e in zip(teachers, estimates)]
        passes = (train_tokens or 0) * sum(forward)
        tuned = [m for m in teachers if self._tuned(m, settings)]
        share = settings.teacher_spec_share if tuned else 0.0
        cap = share * max(spec_budget - passes, 0.0) / max(len(tuned), 1)
        spec, spec_needs = passes, []
        spread = len(tuned) / share if tuned else 0.0  # budget per FLOP of one cap
        for m in tuned:
            if m.kind == "mid":
                one_step = step_flops(ws.shape(m.size), ws)
                spent, least = (cap // one_step) * one_step, one_step
            else:
                capped = m.strategy.estimate(m.settings, self._sub(ws, m, spec_flops=cap))
                spent, least = capped.spec_flops, capped.min_spec_flops
            spec += spent
            spec_needs.append((least * spread, f"{m.role} needs {least:.3g} FLOPs of "
                               f"fine-tuning from a {settings.teacher_spec_share:.0%} share"))
        one_step = step_flops(ws.shape(ws.small), ws)
        spec += (max(spec_budget - spec, 0.0) // one_step) * one_step
        spec_needs.append((one_step / (1 - share),
                           f"the student needs {one_step:.3g} FLOPs of distillation"))
        min_generic, generic_limit = max(generic_needs)
        least_rest, spec_limit = max(spec_needs)
        if train_tokens is None:
            spec_limit += "; teacher passes are priced per domain (domain size unknown)"
        else:
            spec_limit += f"; after {passes:.3g} FLOPs of teacher passes over {train_tokens} tokens"
        student_estimate = estimates[-1]
        return DistillEstimate(
            generic_flops=generic, spec_flops=spec,
            inference_flops_per_token=student_estimate.inference_flops_per_token,
            params_inference=student_estimate.params_inference,
            params_pretrain=sum(e.params_pretrain for e in estimates),
            min_generic_flops=min_generic, min_spec_flops=passes + least_rest,
            generic_limit=generic_limit, spec_limit=spec_limit,
        ), cap

    # -- the interface --------------------------------------------------------------------------
    def estimate(self, settings, ws) -> CostEstimate:
        """Costs per phase; teacher passes use ``budgets.domain_tokens`` when it is known.

        Raises:
            SpecplanError: a teacher whose vocabulary is not the student's (before any compute).
        """
        members = self._members(settings, ws)
        self._check_vocabularies(members, ws)
        tokens = ws.budgets.domain_tokens
        train_tokens = (tokens // ws.seq_len) * ws.seq_len if tokens else None
        return self._costs(settings, ws, members, train_tokens)[0]

    def check(self, estimate: CostEstimate, budgets: Budgets) -> None:
        """Refuse budgets too small for any part, naming the phase, the gap and the part."""
        phases = (
            ("pretraining", budgets.pretrain_flops, estimate.min_generic_flops,
             getattr(estimate, "generic_limit", ""), "--pretrain-budget"),
            ("specialization", budgets.spec_flops, estimate.min_spec_flops,
             getattr(estimate, "spec_limit", ""), "--spec-budget"),
        )
        for phase, have, need, why, flag in phases:
            if need > have:
                raise BudgetError(
                    f"{self.name}: the {phase} budget {have:.3g} FLOPs is {need - have:.3g} "
                    f"FLOPs short of the minimum {need:.3g} ({why}); raise {flag}"
                )

    def pretrain(self, settings, ws, folder: Path) -> dict:
        """Pretrain (or reuse) every member's artifact; record where each lives."""
        members = self._members(settings, ws)
        self._check_vocabularies(members, ws)
        entries = []
        for m in members:
            sub = self._sub(ws, m)
            art = sub.artifact(m.strategy, m.settings)
            absorb(ws.ledger, art.ledger, m.role, cached=art.reused)
            entries.append({
                "role": m.role, "strategy": m.strategy.name, "size": sub.small,
                "pretrain_flops": sub.budgets.pretrain_flops, "reused": art.reused,
                "folder": str(art.folder.relative_to(ws.cache_dir)) if art.folder else None,
                "ppl_generic": art.meta.get("ppl_generic"),
            })
        return {"ppl_generic": entries[-1]["ppl_generic"], "members": entries}

    @staticmethod
    def _tuned(member: _Member, settings: DistillSettings) -> bool:
        """Whether a teacher is fine-tuned on the domain before it teaches."""
        return member.kind != "teacher" or member.base is None or settings.tune_checkpoints

    @staticmethod
    def _load(ws, artifact: Artifact, entry: dict) -> Artifact:
        """A member's artifact from the folder the slm-d artifact recorded."""
        if entry["folder"] is None:
            return Artifact(None, {}, Ledger())
        folder = ws.cache_dir / entry["folder"]
        if not (folder / "meta.json").exists():
            raise SpecplanError(
                f"{entry['role']}: its pretraining artifact {folder} is missing; delete "
                f"{artifact.folder} to pretrain again"
            )
        ledger = Ledger.from_dict(json.loads((folder / "ledger.json").read_text()))
        return Artifact(folder, json.loads((folder / "meta.json").read_text()), ledger, True)

    def specialize(self, settings, artifact: Artifact, domain, ws) -> Specialized:
        """Specialize the teachers, cache their outputs, distil (via the mid-size teacher)."""
        members = self._members(settings, ws)
        self._check_vocabularies(members, ws)
        estimate, cap = self._costs(settings, ws, members, domain.train.tokens)
        if estimate.min_spec_flops > ws.budgets.spec_flops:
            gap = estimate.min_spec_flops - ws.budgets.spec_flops
            raise BudgetError(
                f"{self.name}: the specialization budget {ws.budgets.spec_flops:.3g} FLOPs is "
                f"{gap:.3g} FLOPs short of the minimum {estimate.min_spec_flops:.3g} for domain "
                f"{domain.name} ({estimate.spec_limit}); raise --spec-budget"
            )
        entries = {e["role"]: e for e in artifact.meta["members"]}
        device = resolve_device(ws.train.device)
        passes = dict(ledger=ws.ledger, top_k=min(settings.top_k, ws.vocab_size),
                      vocab=ws.vocab_size,
                      temperature=settings.temperature, device=device,
                      dtype=autocast_dtype(ws.train.precision, device))
        kd = dict(alpha=settings.alpha, temperature=settings.temperature,
                  divergence=settings.divergence)
        cache, windows = TeacherCache(ws.cache_dir), domain.train.ids
        notes: dict = {"top_k": passes["top_k"], "teacher_cap_flops": cap}
        outputs = []
        for m in (m for m in members if m.kind == "teacher"):
            if self._tuned(m, settings):
                sub = self._sub(ws, m, spec_flops=cap)
                spec = m.strategy.specialize(
                    m.settings, self._load(ws, artifact, entries[m.role]), domain, sub)
                absorb(ws.ledger, sub.ledger, m.role)
                model, tuning = spec.model, spec.notes
            else:  # a checkpoint that teaches as given
                model, tuning = m.base.load(), {"fine_tuned": False}
            check_teacher(m.role, vocab_size=model.config.vocab_size, tokenizer=None,
                          student_vocab_size=ws.vocab_size, student_tokenizer=ws.tokenizer)
            out = cache.outputs(model, windows, label=f"{m.role} passes", **passes)
            outputs.append(out.topk)
            notes[m.role] = {**tuning, "outputs_reused": out.reused,
                             "outputs_bytes": out.topk.logprobs.nbytes + out.topk.ids.nbytes}
        target = combine_teachers(outputs, settings.teacher_weights, top_k=passes["top_k"])
        if settings.staged:
            mid = members[-2]
            model = load_model(self._load(ws, artifact, entries[mid.role]).folder)
            _, result = replace(ws, small=mid.size, on_eval=None).finetune(
                model, domain, settings, flops_per_token=ws.shape(mid.size).train_flops_per_token(),
                max_flops=cap, label=f"{mid.role}: distillation",
                loss_fn=DistillLoss(windows, target, **kd),
            )
            out = cache.outputs(model, windows, label=f"{mid.role} passes", **passes)
            target = out.topk
            notes[mid.role] = {"size": mid.size, "distill_steps": result.steps,
                               "outputs_reused": out.reused}
        student = (ws.base.load() if ws.base is not None else
                   load_model(self._load(ws, artifact, entries["student"]).folder))
        before, result = ws.finetune(
            student, domain, settings, flops_per_token=ws.shape(ws.small).train_flops_per_token(),
            max_flops=ws.budgets.spec_flops - ws.ledger.flops("specialization"),
            label="student: distillation", loss_fn=DistillLoss(windows, target, **kd),
        )
        notes.update(distill_steps=result.steps, stopped=result.stopped)
        return Specialized(student, ws.ledger, before, result.history, notes)
