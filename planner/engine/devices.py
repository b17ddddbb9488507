"""Devices: which one to train on, its ledger label, its autocast dtype, GPU groups of workers."""
from __future__ import annotations

import torch

from planner.core.errors import SpecplanError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; explicit names are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecplanError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecplanError(f"device {name!r}: no CUDA device is visible; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecplanError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SpecplanError(f"device {name!r}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SpecplanError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def device_kind(device: torch.device) -> str:
    """The hardware-profile key (``a100``, ``h100``, ``cpu``...) for a device, best effort."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for kind in ("a100", "h100", "h200", "v100", "l4"):
        if kind in name:
            return kind
    return "a100"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it, or when asked on the CPU; fp32 elsewhere. A CPU
    training run measures instead (:func:`planner.engine.speed.step_settings`)."""
    if precision == "fp32":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if precision == "bf16":
        if device.type == "cpu":
            return torch.bfloat16
        raise SpecplanError(f"precision=bf16 is not supported on {device}; use fp32 or auto")
    return None


def parse_gpus(gpus: str | None) -> list[str]:
    """``all``, ``none`` or ``0,2``: the CUDA devices to use, checked to exist."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus is None or gpus == "all":
        return [str(i) for i in range(visible)]
    if gpus in ("none", "cpu", ""):
        return []
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    bad = [g for g in ids if not g.isdigit() or int(g) >= visible]
    if bad:
        raise SpecplanError(f"--gpus {gpus}: device(s) {', '.join(bad)} not present "
                            f"({visible} CUDA device(s) visible); use --gpus all or valid ids")
    return ids


def gpu_groups(devices: list[str], per_trial: int) -> list[list[str]]:
    """Split the devices into one group per worker; a group runs one trial at a time."""
    if per_trial < 1:
        raise SpecplanError(f"--gpus-per-trial {per_trial}: give 1 or more")
    if per_trial > 1 and len(devices) < per_trial:
        raise SpecplanError(f"--gpus-per-trial {per_trial}: only {len(devices)} GPU(s) selected; "
                            f"lower it or select more with --gpus")
    usable = len(devices) - len(devices) % per_trial
    return [devices[i:i + per_trial] for i in range(0, usable, per_trial)]
