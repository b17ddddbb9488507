"""What a user can spend: the budgets of one plan, parsed from FLOPs or device time (reference
study, arXiv 2402.01093 v2 §3.1 and Eq. 1)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from planner.core.cost import hardware_profile
from planner.core.errors import SpecplanError
from planner.core.units import format_count, parse_count

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DEVICE_TIME = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*@\s*([a-z0-9_-]+)\s*$", re.IGNORECASE
)
_FLOPS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?:flops?)?\s*$", re.IGNORECASE)


def parse_budget(
    text: str | float,
    *,
    what: str = "budget",
    utilization: float | None = None,
    cache_dir: str | Path | None = None,
) -> float:
    """Turn ``"3e15"`` or ``"2h@a100"`` into FLOPs.

    Raises:
        SpecplanError: naming ``what`` for an unreadable value, unit or device.
    """
    if isinstance(text, (int, float)):
        flops = float(text)
    elif match := _FLOPS.match(text):
        flops = float(match.group(1))
    elif match := _DEVICE_TIME.match(text):
        amount, unit, device = match.groups()
        if unit.lower() not in _UNIT_SECONDS:
            raise SpecplanError(
                f"{what}: unknown time unit {unit!r} in {text!r}; use s, m, h or d (e.g. 2h@a100)"
            )
        profile = hardware_profile(device, utilization=utilization, cache_dir=cache_dir)
        flops = float(amount) * _UNIT_SECONDS[unit.lower()] * profile.flops_per_second
    else:
        raise SpecplanError(
            f"{what}: cannot read {text!r}; give FLOPs (3e15) or device time (2h@a100, 10m@cpu)"
        )
    if flops < 0:
        raise SpecplanError(f"{what}: {text!r} is negative")
    return flops


@dataclass(frozen=True)
class InferenceCap:
    """The inference budget: a cap on FLOPs per generated token or on parameter count."""

    flops_per_token: float | None = None
    params: int | None = None

    def admits(self, *, flops_per_token: float, params: int) -> bool:
        if self.flops_per_token is not None and flops_per_token > self.flops_per_token:
            return False
        return self.params is None or params <= self.params

    def describe(self) -> str:
        if self.params is not None:
            return f"<= {format_count(self.params)} parameters"
        if self.flops_per_token is not None:
            return f"<= {self.flops_per_token:.3g} FLOPs/token"
        return "unlimited"


def parse_inference_budget(text: str | None) -> InferenceCap:
    """``"5M"``/``"5Mparams"`` caps parameters; ``"2e7"``/``"2e7flops"`` caps FLOPs per token.

    A count with a k/M/B suffix reads as parameters (the reference study caps model size); a
    bare number reads as FLOPs per generated token.
    """
    if text is None or str(text).strip().lower() in ("", "none", "inf"):
        return InferenceCap()
    raw = str(text).strip()
    lowered = raw.lower()
    if lowered.endswith("params"):
        return InferenceCap(params=parse_count(raw[:-6], what="--inference-budget"))
    if lowered[-1:] in ("k", "m", "b"):
        return InferenceCap(params=parse_count(raw, what="--inference-budget"))
    match = _FLOPS.match(lowered.replace("/token", ""))
    if not match:
        raise SpecplanError(
            f"--inference-budget: cannot read {raw!r}; give a parameter count (5M) or "
            f"FLOPs per token (2e7)"
        )
    return InferenceCap(flops_per_token=float(match.group(1)))


def total_cost(generic_flops, spec_flops, n_domains):
    """Reference study Eq. 1: pretraining is shared, specialization is paid per domain.

    Works elementwise on numpy arrays, e.g. to draw cost against a range of N.

    Raises:
        SpecplanError: when ``n_domains`` is negative.
    """
    negative = n_domains < 0
    if negative.any() if hasattr(negative, "any") else negative:
        raise SpecplanError(f"total_cost: n_domains={n_domains} is negative; give a count >= 0")
    return generic_flops + n_domains * spec_flops


@dataclass(frozen=True)
class Budgets:
    """What the user can spend. FLOPs throughout; parsing from device-hours is in
    planner.core.cost."""

    pretrain_flops: float
    spec_flops: float
    inference: InferenceCap = InferenceCap()
    domain_tokens: int | None = None
    domains_count: int = 1
