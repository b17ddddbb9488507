"""Pretraining throughput of ``slm-pn`` against ``slm`` at the same inference size.

Both models train through the one engine (:func:`planner.engine.train.train`) on the same windows
for the same number of steps, in one process, alternating in rounds so that load from other jobs
falls on both alike. Wall-clock tokens/s come from the engine; tokens per process CPU-second are
printed beside them because on shared cores the wall clock also counts other jobs' time. The
reference study measured the projected network 1.6x slower to pretrain (3.6 vs 2.2 GPUh per 1B
tokens, v2 Table 2). Also timed: materialising one expert as a plain
model (the closed-form step of specialization).

Usage:
    .venv/bin/python benchmarks/projected_network.py            # random windows, size small
    .venv/bin/python benchmarks/projected_network.py --demo     # demo corpora, real clusters
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from planner.core.cost import Ledger
from planner.engine.devices import resolve_device
from planner.engine.models import SIZES, model_shape
from planner.engine.train import TrainConfig, WindowSampler, train
from strategies.projected.strategy import (
    ClusterBatches,
    ExpertCoefficients,
    ProjectedNetwork,
    basis_params,
    conditioned_loss,
    materialise,
    projected_train_flops_per_token,
    shared_params,
)

PAPER_SLOWDOWN = 3.6 / 2.2  # GPUh per 1B tokens, PN / SLM (v2 Table 2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=list(SIZES), help="deployed size")
    parser.add_argument("--k", type=int, default=8, help="experts (clusters)")
    parser.add_argument("--h", type=int, default=8, help="basis tensors per MLP matrix")
    parser.add_argument("--m", type=int, default=8, help="expert vector dimension")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per model")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per window")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary of random windows")
    parser.add_argument("--demo", action="store_true",
                        help="demo corpora and a real k-means clustering instead of random windows")
    parser.add_argument("--cache", default=".cache/specplan", help="cache folder for --demo")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto...")
    return parser.parse_args()


def windows_and_clusters(args) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(windows (n, T), cluster of each (n,), vocabulary size)."""
    if args.demo:
        from planner.data.clustering import fit_clustering
        from planner.data.inputs import demo_inputs

        inputs = demo_inputs(Path(args.cache))
        clustering = fit_clustering(inputs.generic.train, k=args.k, cache_dir=args.cache)
        return inputs.generic.train.ids, clustering.generic_assignments, len(inputs.tokenizer)
    gen = torch.Generator().manual_seed(0)
    n = max(64 * args.k, args.batch_size * args.steps * args.rounds)
    ids = torch.randint(0, args.vocab, (n, args.seq_len), generator=gen)  # (n, T)
    return ids, torch.randint(0, args.k, (n,), generator=gen), args.vocab


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids, clusters, vocab = windows_and_clusters(args)
    shape = model_shape(args.size, vocab_size=vocab, seq_len=ids.shape[1])
    tokens_per_batch = args.batch_size * shape.seq_len
    layers = shape.num_hidden_layers
    coefficient_flops = ExpertCoefficients.flops(args.k, args.m, layers, args.h)
    runs = {
        "slm": (shape.build(seed=0), WindowSampler(ids, args.batch_size, seed=0),
                shape.train_flops_per_token()),
        "slm-pn": (ProjectedNetwork("pn", shape, k=args.k, m=args.m, h=args.h, seed=0),
                   ClusterBatches(ids, clusters, args.k, args.batch_size, seed=0),
                   projected_train_flops_per_token(shape, args.h, coefficient_flops,
                                                   tokens_per_batch)),
    }
    loss_fns = {"slm": {}, "slm-pn": {"loss_fn": conditioned_loss}}
    totals = {name: [0, 0.0, 0.0] for name in runs}  # tokens, wall seconds, CPU seconds
    for round_ in range(args.rounds + 1):  # round 0 warms up (allocations, first-call costs)
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            model, source, per_token = runs[name]
            cfg = TrainConfig(lr=3e-3, warmup_steps=1, max_steps=2 if round_ == 0 else args.steps,
                              batch_size=args.batch_size, device=args.device, seed=round_)
            cpu = time.process_time()
            result = train(model, source, cfg, seq_len=shape.seq_len, flops_per_token=per_token,
                           ledger=Ledger(), phase="generic", label=name, **loss_fns[name])
            if round_:
                totals[name][0] += result.tokens
                totals[name][1] += result.seconds
                totals[name][2] += time.process_time() - cpu

    device = resolve_device(args.device)
    data = "demo" if args.demo else "random"
    print(f"device={device} threads={torch.get_num_threads()} data={data}"
          f" windows={len(ids)} batch={args.batch_size}x{shape.seq_len} "
          f"steps={args.steps}x{args.rounds} rounds")
    print(f"deployed shape: {shape.describe()}")
    print(f"slm-pn: k={args.k} h={args.h} m={args.m}")
    print(f"{'model':8} {'params':>12} {'FLOPs/token':>12} {'tokens/s':>10} {'GFLOP/s':>8} "
          f"{'tokens/CPU-s':>13}")
    speed, cpu_speed = {}, {}
    for name, (model, _, per_token) in runs.items():
        tokens, seconds, cpu_seconds = totals[name]
        speed[name], cpu_speed[name] = tokens / seconds, tokens / cpu_seconds
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:8} {params:12,d} {per_token:12.4g} {speed[name]:10.0f} "
              f"{speed[name] * per_token / 1e9:8.2f} {cpu_speed[name]:13.0f}")
    expected = shared_params(shape) + basis_params(shape, args.h) + ExpertCoefficients.params(
        args.k, args.m, layers, args.h)
    assert sum(p.numel() for p in runs["slm-pn"][0].parameters()) == expected
    flop_ratio = runs["slm-pn"][2] / runs["slm"][2]
    print(f"slm-pn pretraining is {speed['slm'] / speed['slm-pn']:.2f}x slower than slm "
          f"({cpu_speed['slm'] / cpu_speed['slm-pn']:.2f}x in CPU time; FLOP ratio "
          f"{flop_ratio:.3f}; reference study {PAPER_SLOWDOWN:.2f}x)")

    network = runs["slm-pn"][0].to(device).eval()
    timings = []
    for expert in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        materialise(network, expert % args.k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(5):
        shape.build(seed=0)
    build = (time.perf_counter() - start) / 5
    print(f"materialise one expert: {statistics.median(timings) * 1e3:.1f} ms median of 5 "
          f"(of which building an empty slm-shaped model: {build * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
