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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from planner.core.errors import SpecplanError
from planner.core.io import write_json

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
    util = (utilization if utilization is not None
            else cached.get("utilization", profile.utilization))
    if not 0 < util <= 1:
        raise SpecplanError(f"utilization={util} for {name}: give a fraction in (0, 1]")
    return HardwareProfile(key, profile.peak_flops, util)


def _read_hardware(cache_dir: str | Path | None) -> dict:
    path = _hardware_file(cache_dir)
    if path and path.exists():
        return json.loads(path.read_text())
    return {}


def _write_hardware(cache_dir: str | Path, key: str, values: dict) -> None:
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


