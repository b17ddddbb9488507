"""CPU threads for torch: the physical cores this process may use (standard library only, so
the CLI sets ``OMP_NUM_THREADS`` before torch is imported)."""
from __future__ import annotations

import os
from pathlib import Path


def cpu_threads() -> int:
    """Torch threads for a CPU run: ``OMP_NUM_THREADS`` when set, else the physical cores this
    process may run on (logical siblings share one core's vector units and only contend),
    capped by a cgroup CPU quota (containers often see every host CPU but get a few)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        cores.add(siblings.read_text().strip() if siblings.exists() else str(cpu))
    count = len(cores) or os.cpu_count() or 1
    quota = Path("/sys/fs/cgroup/cpu.max")
    if quota.exists():
        limit, _, period = quota.read_text().partition(" ")
        if limit.isdigit() and period.strip().isdigit():
            count = min(count, max(1, int(limit) // int(period)))
    return count
