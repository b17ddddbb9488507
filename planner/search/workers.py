"""Worker processes of a plan: one per GPU group, torchrun ranks, and joining from another
machine."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from planner.core.errors import SpecplanError
from planner.core.threads import cpu_threads
from planner.engine.tracking import tracking
from planner.search.study import (
    FollowerTrial,
    Objective,
    PlanSpec,
    broadcast,
    load_plan_inputs,
    load_spec,
    oom_errors,
    open_storage,
    optimize,
)


def run_gpu_workers(study_name: str, storage: str, groups: list[list[str]],
                    cache_dir: Path) -> None:
    """One ``specplan worker`` per GPU group, pinned with CUDA_VISIBLE_DEVICES.

    A group of several GPUs runs its worker under torchrun: each trial is one DDP job.
    """
    procs = []
    for index, group in enumerate(groups):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(group)}
        worker_args = ["-m", "planner.cli", "--cache", str(cache_dir), "worker",
                       "--study", study_name, "--storage", storage]
        if len(group) > 1:  # the ranks share this process's threads (torchrun keeps a set value)
            env["OMP_NUM_THREADS"] = str(max(1, cpu_threads() // len(group)))
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                        str(len(group)), "--master-port", str(29500 + index)]
            procs.append(subprocess.Popen([*launcher, *worker_args], env=env))
        else:
            procs.append(subprocess.Popen([sys.executable, *worker_args], env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SpecplanError(f"a GPU worker exited with status {max(codes)}; see its output above")


def worker(study_name: str, storage: str, cache_dir: str | None = None) -> int:
    """Join an existing study from any machine and run trials until it has enough.

    Under torchrun (``WORLD_SIZE`` > 1) the processes form one multi-GPU worker: rank 0 holds
    the Optuna trials and every rank trains each trial's models together with DDP.
    """
    import optuna

    store = open_storage(storage, Path("."))
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise SpecplanError(f"--study {study_name}: no such study in {storage}") from None
    spec = load_spec(study)
    if cache_dir:
        spec.cache_dir = cache_dir
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return distributed_worker(study, spec)
    inputs = load_plan_inputs(spec)
    with tracking(spec.run.tracker):
        return optimize(study, Objective(spec, inputs, Path(spec.cache_dir)), spec.trials,
                        catch=oom_errors())


def distributed_worker(study, spec: PlanSpec) -> int:
    """One trial at a time over all ranks: rank 0 drives the study, the others follow."""
    import optuna
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    spec.run = dataclasses.replace(spec.run, device=f"cuda:{local_rank}" if cuda else "cpu")
    try:
        objective = Objective(spec, load_plan_inputs(spec), Path(spec.cache_dir))
        if dist.get_rank() == 0:  # the only rank that logs (train() logs on rank 0)
            with tracking(spec.run.tracker):
                ran = optimize(study, objective, spec.trials, catch=oom_errors())
            broadcast(None)  # tells the other ranks the study is done
        else:
            ran = 0
            while (params := broadcast(None)) is not None:
                try:
                    objective.evaluate(FollowerTrial(), params)
                except (optuna.TrialPruned, *oom_errors()):
                    pass
        # Every rank is out of its last collective before any tears the group down: rank 0
        # leaving while another still read the final broadcast aborted it now and then (gloo:
        # "terminate called without an active exception").
        dist.barrier()
        return ran
    finally:
        dist.destroy_process_group()
