"""How a training step runs fastest here: a measured precision and attention kernel.

What is fastest depends on the shape and the machine, so it is measured, not assumed. On this
project's 2-core AVX-512-BF16 CPU, bf16 autocast made a training step of the 1.6M-parameter
preset 1.35x faster and of the 9.4M one 1.5x (one thread), and PyTorch's flash-attention kernel
for the CPU, whose backward is slow at these head sizes, lost to the plain ``math`` kernel under
bf16 by 1.26x (small) and 1.19x (large); yet under other load one shape was once slower in bf16.

So before a run on the CPU of at least :data:`PROBE_MIN_STEPS` steps (rank 0 of a DDP job, which
shares the choice), :func:`step_settings` times a few forward and backward passes of the
run's own loss on its first batch under each candidate (fp32 or bf16 autocast, default or
``math`` attention), rejects a candidate whose loss differs from fp32's by more than 1%, and
keeps the fastest; bf16 must win by 5% to replace fp32. The result is cached per machine,
threads, torch version, model shape, loss and batch shape in ``~/.cache/specplan/step-probes.json``
(``SPECPLAN_PROBE_CACHE`` moves it), so a shape is probed once per machine. A step under
:data:`PROBE_MIN_FLOPS` is not probed (overheads dominate, the precision hardly matters, and the
probe would cost more than it saves): it runs in fp32, as explicit ``precision`` does when given.
The probe's seconds are counted in the run's device time (the run did spend them) but no
tokens or FLOPs: it trains nothing, and the model, its gradients and the random state are left
as they were. CUDA runs bf16 where supported (no probe: it always pays there).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from planner.core.io import write_json
from planner.engine.devices import autocast_dtype

#: Training FLOPs per optimizer pass below which a step is not probed (fp32 default kernels).
PROBE_MIN_FLOPS = 1e10
#: Optimizer steps a run needs for a probe (about 12 passes) to pay back; shorter runs use a
#: cached choice when there is one, else the defaults.
PROBE_MIN_STEPS = 50
#: Relative loss difference from fp32 above which a candidate is not "the same training".
LOSS_TOLERANCE = 0.01
#: How much faster bf16 must be to replace exact fp32.
MIN_GAIN = 1.05


@dataclass(frozen=True)
class StepSettings:
    """The precision and attention kernel a run's forward and backward passes use."""

    precision: str = "fp32"  # fp32 | bf16
    attention: str = "default"  # default (PyTorch's choice) | math

    @property
    def dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @contextlib.contextmanager
    def apply(self, device: torch.device) -> Iterator[None]:
        """Autocast and the attention kernel, around a forward (and its backward)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        math = self.attention == "math"
        kernel = sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()
        with kernel, torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
            yield


def step_settings(model: torch.nn.Module, batch, loss_fn: Callable, device: torch.device,
                  precision: str, flops_per_pass: float, *, may_probe: bool = True
                  ) -> StepSettings:
    """The settings a run uses: read from the probe cache, or measured on its first batch
    (when ``may_probe``; else the defaults).

    ``precision`` is the run's (``auto``, ``bf16`` or ``fp32``): only ``auto`` lets the probe
    choose bf16 or fp32; the attention kernel is probed under either.
    """
    if device.type != "cpu":
        return StepSettings("bf16" if autocast_dtype(precision, device) else "fp32")
    fixed = None if precision == "auto" else precision
    if flops_per_pass < PROBE_MIN_FLOPS:
        return StepSettings(fixed or "fp32")
    key = _probe_key(model, batch, loss_fn, precision)
    cache = _probe_cache()
    known = _read(cache).get(key)
    if known:
        return StepSettings(known["precision"], known["attention"])
    if not may_probe:
        return StepSettings(fixed or "fp32")
    t0 = time.perf_counter()
    try:
        chosen, timings = _probe(model, batch, loss_fn, device, fixed)
    except torch.OutOfMemoryError:  # the run will split its passes; nothing worth caching
        model.zero_grad(set_to_none=True)
        return StepSettings(fixed or "fp32")
    seconds = time.perf_counter() - t0
    entries = _read(cache)
    entries[key] = {**asdict(chosen), "step_seconds": timings, "probe_seconds": round(seconds, 3),
                    "probed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        write_json(cache, entries)
    except OSError:
        pass  # an unwritable cache costs a probe next time, never the run
    return chosen


def _probe(model, batch, loss_fn, device, fixed: str | None,
           rounds: int = 3) -> tuple[StepSettings, dict[str, float]]:
    """Time each candidate's forward and backward, alternated round by round; the first round
    warms up. The model, its gradients and the RNG are restored afterwards."""
    precisions = [fixed] if fixed else ["fp32", "bf16"]
    candidates = [StepSettings(p, a) for p in precisions for a in ("default", "math")]
    rng = torch.get_rng_state()
    was_training = model.training
    model.train()
    times: dict[StepSettings, list[float]] = {c: [] for c in candidates}
    losses: dict[StepSettings, float] = {}
    try:
        for round_ in range(rounds):
            for cand in candidates:
                torch.manual_seed(0)  # the same dropout masks, were there any, for each
                t0 = time.perf_counter()
                with cand.apply(device):
                    loss = loss_fn(model, batch)
                loss.backward()
                value = loss.item()
                if round_:
                    times[cand].append(time.perf_counter() - t0)
                losses.setdefault(cand, value)
                model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
        torch.set_rng_state(rng)
    best = {c: min(ts) for c, ts in times.items()}
    reference = losses.get(StepSettings("fp32"))
    if reference is not None:
        best = {c: t for c, t in best.items()
                if abs(losses[c] - reference) <= LOSS_TOLERANCE * abs(reference)}
    fastest = min(best, key=best.get)
    exact = [c for c in best if c.precision == "fp32"]
    if fastest.precision == "bf16" and exact:
        fastest_exact = min(exact, key=best.get)
        if best[fastest_exact] < MIN_GAIN * best[fastest]:
            fastest = fastest_exact
    return fastest, {f"{c.precision}/{c.attention}": round(t, 5) for c, t in best.items()}


def _probe_cache() -> Path:
    where = os.environ.get("SPECPLAN_PROBE_CACHE")
    if where:
        return Path(where)
    home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(home) / "specplan" / "step-probes.json"


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: probe again
    return entries if isinstance(entries, dict) else {}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe_key(model, batch, loss_fn, precision: str) -> str:
    """Machine, threads, torch, precision asked, model class and parameter shapes, loss, batch."""
    ids = batch["input_ids"] if isinstance(batch, dict) else batch
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    parts = [platform.node(), _cpu_name(), str(torch.get_num_threads()), torch.__version__,
             precision, type(model).__qualname__, repr(shapes),
             getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__), repr(tuple(ids.shape))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

