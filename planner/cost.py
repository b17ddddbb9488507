"""The one cost ledger, budget parsing and hardware profiles.

Every FLOP that specplan spends is charged here, to one of three phases:

* ``generic``: pretraining done before the domain is known, shared by every domain;
* ``specialization``: training done per domain once its data is there (paid N times for N
  domains; reference study Eq. 1: ``C_total(N) = C_generic + N * C_spec``);
* ``inference``: measured generation and evaluation forward passes.

Budgets are given as FLOPs (``3e15``) or device-hours (``2h@a100``, ``10m@cpu``) and converted
with a hardware profile: peak FLOP/s times a utilisation, either measured by the engine on this
machine (cached in ``<cache>/hardware.json``) or given by the user.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from planner.errors import SpecplanError
from planner.units import format_count, parse_count

PHASES = ("generic", "specialization", "inference")


@dataclass(frozen=True)
class HardwareProfile:
    """Peak dense bf16 FLOP/s of one device, and the fraction of it a run achieves (MFU)."""

    name: str
    peak_flops: float
    utilization: float

    @property
    def flops_per_second(self) -> float:
        return self.peak_flops * self.utilization

    def flops_per_hour(self) -> float:
        return self.flops_per_second * 3600.0


# Vendor peak dense bf16 tensor FLOP/s; 40% MFU is a typical well-tuned transformer run.
# The CPU entry is a placeholder peak that `measure_cpu_peak` replaces on first use.
PROFILES: dict[str, HardwareProfile] = {
    "a100": HardwareProfile("a100", 312e12, 0.4),
    "h100": HardwareProfile("h100", 989e12, 0.4),
    "h200": HardwareProfile("h200", 989e12, 0.4),
    "v100": HardwareProfile("v100", 125e12, 0.4),
    "l4": HardwareProfile("l4", 121e12, 0.4),
    "cpu": HardwareProfile("cpu", 50e9, 0.5),
}

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DEVICE_TIME = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*@\s*([a-z0-9_-]+)\s*$", re.IGNORECASE
)
_FLOPS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?:flops?)?\s*$", re.IGNORECASE)


def _hardware_file(cache_dir: str | Path | None) -> Path | None:
    return Path(cache_dir) / "hardware.json" if cache_dir else None


def measure_cpu_peak(seconds: float = 0.3) -> float:
    """FLOP/s of a large fp32 matmul on this CPU: the 'peak' that CPU utilisation refers to."""
    import torch

    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    a @ b  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - start)


def hardware_profile(
    name: str, *, utilization: float | None = None, cache_dir: str | Path | None = None
) -> HardwareProfile:
    """The profile for ``name``, with measured or user-given utilisation applied.

    A utilisation measured by a previous run (``record_utilization``) is used when the user
    gives none; the CPU's peak is measured once and cached.
    """
    key = name.lower()
    if key not in PROFILES:
        raise SpecplanError(
            f"unknown device {name!r} in a budget; use one of {', '.join(PROFILES)} "
            f"(e.g. 2h@a100) or give FLOPs (e.g. 3e15)"
        )
    profile = PROFILES[key]
    cached = _read_hardware(cache_dir).get(key, {})
    if key == "cpu":
        peak = cached.get("peak_flops") or measure_cpu_peak()
        if "peak_flops" not in cached and cache_dir:
            _write_hardware(cache_dir, key, {"peak_flops": peak})
        profile = HardwareProfile(key, peak, profile.utilization)
    util = utilization if utilization is not None else cached.get("utilization", profile.utilization)
    if not 0 < util <= 1:
        raise SpecplanError(f"utilization={util} for {name}: give a fraction in (0, 1]")
    return HardwareProfile(key, profile.peak_flops, util)


def _read_hardware(cache_dir: str | Path | None) -> dict:
    path = _hardware_file(cache_dir)
    if path and path.exists():
        return json.loads(path.read_text())
    return {}


def _write_hardware(cache_dir: str | Path, key: str, values: dict) -> None:
    from planner.io import write_json

    data = _read_hardware(cache_dir)
    data.setdefault(key, {}).update(values)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_json(_hardware_file(cache_dir), data)


def record_utilization(
    device_kind: str, achieved_flops_per_second: float, cache_dir: str | Path
) -> float:
    """Store the utilisation a training run achieved, so later budgets in hours use it."""
    profile = hardware_profile(device_kind, cache_dir=cache_dir)
    util = min(1.0, achieved_flops_per_second / profile.peak_flops)
    _write_hardware(cache_dir, device_kind, {"utilization": util})
    return util


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


@dataclass
class LedgerEntry:
    phase: str
    label: str
    tokens: int
    flops: float
    seconds: float
    device: str


@dataclass
class Ledger:
    """Measured tokens, FLOPs and wall time per phase: the single record of spent compute."""

    entries: list[LedgerEntry] = field(default_factory=list)

    def charge(
        self, phase: str, *, label: str, tokens: int, flops: float, seconds: float, device: str
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        self.entries.append(LedgerEntry(phase, label, int(tokens), float(flops), seconds, device))

    def extend(self, other: "Ledger") -> None:
        self.entries.extend(other.entries)

    def totals(self) -> dict[str, dict[str, float]]:
        out = {p: {"tokens": 0, "flops": 0.0, "seconds": 0.0} for p in PHASES}
        for e in self.entries:
            out[e.phase]["tokens"] += e.tokens
            out[e.phase]["flops"] += e.flops
            out[e.phase]["seconds"] += e.seconds
        return out

    def flops(self, phase: str) -> float:
        return sum(e.flops for e in self.entries if e.phase == phase)

    def devices(self) -> str:
        return ",".join(sorted({e.device for e in self.entries})) or "none"

    def to_dict(self) -> dict:
        return {"entries": [asdict(e) for e in self.entries], "totals": self.totals()}

    @classmethod
    def from_dict(cls, data: dict) -> "Ledger":
        return cls([LedgerEntry(**e) for e in data.get("entries", [])])

    def rows(self) -> list[dict]:
        """One row per phase, for tables."""
        return [
            {"phase": p, "tokens": t["tokens"], "flops": t["flops"], "seconds": t["seconds"]}
            for p, t in self.totals().items()
        ]


def total_cost(generic_flops: float, spec_flops: float, n_domains: int) -> float:
    """Reference study Eq. 1: pretraining is shared, specialization is paid per domain."""
    return generic_flops + n_domains * spec_flops
