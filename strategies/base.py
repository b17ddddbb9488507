"""The Strategy interface, its settings, and the registry.

A strategy is one way to build a specialized small model under budgets (reference study
v2 §2.2-2.5). It declares its settings with their search ranges, estimates its cost per phase
analytically before anything runs, and implements two phases:

* ``pretrain(settings, ws) -> Artifact``: domain-agnostic, charged to the ``generic`` phase,
  cached by (strategy, pretraining settings, generic corpus, budget, shapes, seed) so trials and
  domains reuse it. A strategy without a generic phase returns an empty artifact.
* ``specialize(settings, artifact, domain, ws) -> Specialized``: per domain, charged to the
  ``specialization`` phase; returns a plain transformers causal LM (exported with
  ``save_pretrained``) and its perplexity before fine-tuning.

A strategy never measures time or counts FLOPs itself: training goes through
:func:`planner.engine.train.train`, which charges the ledger, and estimates come from
:mod:`planner.engine.models` and :mod:`planner.core.cost`. Adding a strategy is one module that
defines a subclass decorated with :func:`register`, plus its tests.
"""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from planner.core.budgets import Budgets
from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.models import ModelShape
from strategies.workspace import Artifact, Workspace


# -- settings -----------------------------------------------------------------------------------
def setting(default: Any, *, low=None, high=None, log=False, choices=None, generic=False,
            help: str = "") -> Any:
    """A strategy setting with its search range.

    Args:
        low, high, log: numeric range searched by the planner (and accepted from users).
        choices: categorical values.
        generic: True when the setting changes the pretraining artifact (part of its cache key).
    """
    meta = {"low": low, "high": high, "log": log, "choices": choices, "generic": generic,
            "help": help}
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Base of every strategy's settings: shared knobs of fine-tuning."""

    ft_lr: float = setting(1e-3, low=1e-4, high=5e-3, log=True,
                           help="fine-tuning peak learning rate (scaled down above 10M "
                                "non-embedding parameters)")
    ft_patience: int = setting(3, low=1, high=8, help="validations without gain before stopping")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise SpecplanError(
                    f"setting {f.name}={value!r} is not one of {meta['choices']}"
                )
            low, high = meta.get("low"), meta.get("high")
            if low is not None and not (low <= value <= high):
                raise SpecplanError(
                    f"setting {f.name}={value!r} is out of range [{low}, {high}]"
                )

    @classmethod
    def from_dict(cls, values: dict, strategy: str = "") -> "Settings":
        """Build settings, rejecting unknown names with the list of valid ones."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise SpecplanError(
                f"unknown setting(s) {', '.join(unknown)} for strategy {strategy or cls.__name__}; "
                f"valid: {', '.join(names)}"
            )
        cast = {}
        for key, value in values.items():
            default = names[key].default
            if isinstance(default, bool) and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                try:
                    number = float(value)
                    value = type(default)(number) if isinstance(default, int) else number
                except (TypeError, ValueError):
                    raise SpecplanError(f"setting {key}={value!r} is not a number") from None
            cast[key] = value
        return cls(**cast)

    @classmethod
    def suggest(cls, trial, prefix: str) -> "Settings":
        """Sample every ranged setting from an Optuna trial (names prefixed by strategy)."""
        values = {}
        for f in dataclasses.fields(cls):
            meta, name = f.metadata, f"{prefix}.{f.name}"
            if meta.get("choices") is not None:
                values[f.name] = trial.suggest_categorical(name, list(meta["choices"]))
            elif meta.get("low") is not None and isinstance(f.default, int):
                values[f.name] = trial.suggest_int(name, meta["low"], meta["high"],
                                                   log=meta["log"])
            elif meta.get("low") is not None:
                values[f.name] = trial.suggest_float(name, meta["low"], meta["high"],
                                                     log=meta["log"])
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def generic_part(self) -> dict:
        """The settings that shape the pretraining artifact (its cache key)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("generic")}


# -- budgets and workspace ----------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    """Analytic cost of one strategy configuration, known before any compute is spent."""

    generic_flops: float
    spec_flops: float
    inference_flops_per_token: float
    params_inference: int
    params_pretrain: int
    min_generic_flops: float = 0.0
    min_spec_flops: float = 0.0

    def total(self, n_domains: int) -> float:
        return self.generic_flops + n_domains * self.spec_flops

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Specialized:
    """A domain's specialized model, ready to export, and what it cost."""

    model: torch.nn.Module
    ledger: Ledger
    loss_before: float | None
    history: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


# -- the interface ------------------------------------------------------------------------------
#: The study's method families, in the order it presents them (tables and legends follow it).
#: ``experts`` are the methods that pretrain cluster experts and specialize one (hard mixtures,
#: projected networks and histogram hyper-networks, notes §2.5-2.7).
FAMILIES = ("small", "no-pretraining", "large", "importance-sampling", "experts", "distillation")

#: Class attributes that callers outside strategies/ select on instead of comparing names.
TRAITS = ("family", "has_generic_phase", "pretrains_in_specialization",
          "respects_inference_budget", "deploys_large", "accepts_base")


class Strategy(ABC):
    """One method of building a specialized model; see the module docstring for the contract.

    The traits (:data:`TRAITS`) say what the method is, so forecasts, plans and reports ask
    them rather than knowing names: ``family`` (one of :data:`FAMILIES`, how the study groups
    methods), ``has_generic_phase`` (a shared pretraining artifact), ``pretrains_in_specialization``
    (its broad pretraining is paid per domain, so specialization tokens are not fine-tuning),
    ``respects_inference_budget`` (False for a reference point that may break it),
    ``deploys_large`` (the deployed model is the large size) and ``accepts_base`` (it can start
    from a ``--base`` checkpoint: :meth:`Workspace.initial_model`).
    """

    name: ClassVar[str]
    family: ClassVar[str]
    settings_cls: ClassVar[type[Settings]] = Settings
    summary: ClassVar[str] = ""
    respects_inference_budget: ClassVar[bool] = True
    has_generic_phase: ClassVar[bool] = True
    pretrains_in_specialization: ClassVar[bool] = False
    deploys_large: ClassVar[bool] = False
    accepts_base: ClassVar[bool] = False

    def settings(self, values: dict | None = None) -> Settings:
        return self.settings_cls.from_dict(values or {}, strategy=self.name)

    def search_space(self, trial) -> Settings:
        return self.settings_cls.suggest(trial, prefix=self.name)

    @abstractmethod
    def estimate(self, settings: Settings, ws: "Workspace") -> CostEstimate:
        """Per-phase FLOPs this configuration will spend under ``ws.budgets``."""

    @abstractmethod
    def pretrain(self, settings: Settings, ws: "Workspace", folder: Path) -> dict:
        """Train the generic artifact into ``folder``; return its metadata (JSON-able).

        Charge all compute to ``ws.ledger`` under phase ``generic``. Called by
        :meth:`Workspace.artifact`, which handles caching.
        """

    @abstractmethod
    def specialize(
        self, settings: Settings, artifact: Artifact, domain, ws: "Workspace"
    ) -> Specialized:
        """Build the domain's model from the artifact; charge phase ``specialization``."""

    def check(self, estimate: CostEstimate, budgets: Budgets) -> None:
        """Refuse a configuration its budgets cannot fit, before any compute is spent."""
        if estimate.min_generic_flops > budgets.pretrain_flops:
            raise BudgetError(
                f"{self.name}: the pretraining budget {budgets.pretrain_flops:.3g} FLOPs is "
                f"{estimate.min_generic_flops - budgets.pretrain_flops:.3g} FLOPs short of the "
                f"minimum {estimate.min_generic_flops:.3g}; raise --pretrain-budget"
            )
        if estimate.min_spec_flops > budgets.spec_flops:
            raise BudgetError(
                f"{self.name}: the specialization budget {budgets.spec_flops:.3g} FLOPs is "
                f"{estimate.min_spec_flops - budgets.spec_flops:.3g} FLOPs short of the minimum "
                f"{estimate.min_spec_flops:.3g}; raise --spec-budget"
            )


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy to the registry under ``cls.name``."""
    name = cls.name
    if name != name.lower() or " " in name:
        raise ValueError(f"strategy name {name!r} must be lower-case without spaces")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"strategy {name!r} is registered twice")
    if getattr(cls, "family", None) not in FAMILIES:
        raise ValueError(f"strategy {name!r}: family {getattr(cls, 'family', None)!r} is not one "
                         f"of {FAMILIES}")
    _REGISTRY[name] = cls
    return cls


def _strategy_class(name: str) -> type[Strategy]:
    if name not in _REGISTRY:
        raise SpecplanError(f"unknown strategy {name!r}; choose one of {', '.join(available())}")
    return _REGISTRY[name]


def get_strategy(name: str) -> Strategy:
    return _strategy_class(name)()


def available() -> list[str]:
    return list(_REGISTRY)


def strategies_with(**traits) -> list[str]:
    """Registered names whose traits equal every given value, in registration order.

    Example:
        >>> from strategies import strategies_with
        >>> strategies_with(deploys_large=True)
        ['llm']
    """
    unknown = sorted(set(traits) - set(TRAITS))
    if unknown:
        raise SpecplanError(f"unknown strategy trait(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(TRAITS)}")
    return [name for name, cls in _REGISTRY.items()
            if all(getattr(cls, trait) == value for trait, value in traits.items())]


def family_of(name: str) -> str:
    """The family (one of :data:`FAMILIES`) of a registered strategy."""
    return _strategy_class(name).family


def describe(name: str) -> dict:
    """A strategy as users choose one (``specplan strategies``): its summary, family, phases and
    traits, and every setting with its default, range or choices, help, and ``generic`` (it
    shapes the pretraining artifact; never so for a strategy without a generic phase)."""
    cls = _strategy_class(name)
    settings = []
    for f in dataclasses.fields(cls.settings_cls):
        meta = f.metadata
        settings.append({
            "name": f.name, "default": f.default, "low": meta.get("low"),
            "high": meta.get("high"), "log": bool(meta.get("log")),
            "choices": list(meta["choices"]) if meta.get("choices") is not None else None,
            "generic": bool(meta.get("generic")) and cls.has_generic_phase,
            "help": meta.get("help", ""),
        })
    return {
        "name": name, "summary": cls.summary, "family": cls.family,
        "phases": ["generic", "specialization"] if cls.has_generic_phase else ["specialization"],
        "traits": {trait: getattr(cls, trait) for trait in TRAITS}, "settings": settings,
    }


def in_study_order() -> list[str]:
    """Registered names by family in :data:`FAMILIES` order, registration order within one."""
    return sorted(_REGISTRY, key=lambda name: FAMILIES.index(_REGISTRY[name].family))


def settings_json(settings: Settings) -> str:
    return json.dumps(settings.to_dict(), sort_keys=True)


@dataclass
class PretrainSettings(Settings):
    """Settings of strategies that train a model from scratch."""

    lr: float = setting(3e-3, low=1e-3, high=1e-2, log=True, generic=True,
                        help="pretraining peak learning rate (scaled down above 10M "
                             "non-embedding parameters)")


def steps_within(budget_flops: float, shape: ModelShape, ws: "Workspace") -> int:
    """Optimizer steps of ``shape`` that ``budget_flops`` pays for (0 when not even one)."""
    per_step = ws.train.tokens_per_step(ws.seq_len) * shape.train_flops_per_token()
    return int(budget_flops // per_step)


def step_flops(shape: ModelShape, ws: "Workspace") -> float:
    """FLOPs of one optimizer step of ``shape``: the least any training phase can spend."""
    return ws.train.tokens_per_step(ws.seq_len) * shape.train_flops_per_token()


def absorb(ledger: Ledger, part: Ledger, role: str, *, cached: bool = False) -> None:
    """Copy a part's ledger lines into ``ledger`` under its role (a strategy built of parts:
    teachers, a large model to prune).

    A cached artifact's lines keep their FLOPs (the recipe's cost counts its teachers, as the
    reference study does) with device ``cache``, so compute spent now can be told apart.
    """
    suffix = " [cached artifact]" if cached else ""
    for e in part.entries:
        ledger.charge(e.phase, label=f"{role}: {e.label}{suffix}", tokens=e.tokens, flops=e.flops,
                      seconds=e.seconds, device="cache" if cached else e.device)
