"""Open-weight checkpoints as a base: checked in full before a byte of weights is read.

A base is a local Hugging Face folder: ``config.json`` (a family :mod:`planner.engine.models`
counts exactly), its tokenizer (``tokenizer.json``, which becomes the plan's) and its weights as
safetensors. Pickled weights (``.bin``/``.pt``) run code when loaded, so they are refused unless
the user says ``--allow-pickle``. Whether the model can train on the device is judged from the
config's size (:meth:`ModelShape.train_memory_bytes`) before it is loaded.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from planner.core.errors import SpecplanError
from planner.core.units import format_count
from planner.engine.models import ModelShape, quiet_transformers, shape_from_config

SAFETENSORS = "*.safetensors"
PICKLES = ("*.bin", "*.pt", "*.pth")


@dataclass(frozen=True)
class Checkpoint:
    """A checked base checkpoint: its folder, its shape (own vocabulary, the plan's window)
    and a fingerprint of its files (config and weights) that keys what is built from it."""

    folder: Path
    shape: ModelShape
    fingerprint: str
    allow_pickle: bool = False

    def load(self) -> torch.nn.Module:
        """The checkpoint's weights in its own architecture."""
        from transformers import AutoModelForCausalLM

        quiet_transformers()
        model = AutoModelForCausalLM.from_pretrained(
            self.folder, use_safetensors=not self.allow_pickle, dtype=torch.float32)
        model.config.use_cache = False
        return model


@functools.lru_cache(maxsize=32)
def open_checkpoint(folder: str | Path, *, seq_len: int, device: str = "cpu",
                    allow_pickle: bool = False, what: str = "--base") -> Checkpoint:
    """Check a checkpoint folder and describe it, without loading its weights.

    Checked once per process (cached): every trial's workspace opens the same base, and once
    a trial has trained, the device's free memory no longer says whether the model fits.

    Raises:
        SpecplanError: one line naming ``what`` for a folder that is not a checkpoint, an
            architecture that cannot be counted, no tokenizer, pickled weights without
            ``allow_pickle``, a window longer than its positions, or a model too big to train
            in the device's memory.
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise SpecplanError(f"{what} {path}: not a checkpoint folder (no config.json); give a "
                            f"folder written by save_pretrained")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as err:
        raise SpecplanError(f"{what} {path}: config.json cannot be read ({err})") from None
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None)
    shape = shape_from_config(config, seq_len=seq_len, source=f"{what} {path}")
    if positions and seq_len > positions:
        raise SpecplanError(f"{what} {path}: --seq-len {seq_len} is longer than its "
                            f"{positions} positions; use at most {positions}")
    _check_memory(shape, device, f"{what} {path}")
    if not (path / "tokenizer.json").is_file():
        raise SpecplanError(f"{what} {path}: no tokenizer (tokenizer.json) beside the weights; "
                            f"save it there with tokenizer.save_pretrained")
    weights = sorted(path.glob(SAFETENSORS))
    pickles = sorted(p for pattern in PICKLES for p in path.glob(pattern))
    if not weights and not pickles:
        raise SpecplanError(f"{what} {path}: no weights (*.safetensors) in the folder")
    if not weights and not allow_pickle:
        raise SpecplanError(
            f"{what} {path}: weights are pickle files ({pickles[0].name}), which can run code "
            f"when loaded; convert them to safetensors (save_pretrained(..., "
            f"safe_serialization=True)) or pass --allow-pickle")
    return Checkpoint(path, shape, _fingerprint(path / "config.json", weights or pickles),
                      allow_pickle=allow_pickle and not weights)


def _fingerprint(config: Path, weights: list[Path]) -> str:
    """The config, and each weight file's name, size and first MiB (its header and first
    tensors): cheap on a multi-GB checkpoint, and different weights differ in it."""
    digest = hashlib.sha256(config.read_bytes())
    for file in weights:
        digest.update(f"{file.name}:{file.stat().st_size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def device_memory_bytes(device: str) -> float | None:
    """Memory free for training on ``device`` (GPU: free device memory; CPU: available RAM),
    or None when it cannot be told."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return float(torch.cuda.mem_get_info(index)[0])
    if device in ("cpu", "auto") and not torch.cuda.is_available():
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return float(line.split()[1]) * 1024
        except OSError:
            pass
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    return None


def _check_memory(shape: ModelShape, device: str, what: str) -> None:
    need = shape.train_memory_bytes()
    have = device_memory_bytes(device)
    if have is not None and need > have:
        raise SpecplanError(
            f"{what}: training its {format_count(shape.params_total)} parameters needs about "
            f"{need / 2**30:.1f} GiB (16 bytes per parameter under bf16 autocast, plus "
            f"activations) and the device ({device}) has {have / 2**30:.1f} GiB free; pick a "
            f"smaller checkpoint or a bigger device")
