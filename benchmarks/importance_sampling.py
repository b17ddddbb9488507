"""Data selection for a domain: specplan's cluster importance sampler against DSIR.

Both selectors pick generic training data for the same domain, in one process, on the same data
(the offline demo corpora: ``generic`` and the ``legal`` domain cut to ``--domain-tokens``):

* ``clusters`` (``slm-is``, reference study v2 §2.4): a k-means clustering of the generic train
  windows (hashed n-gram embedder), the domain's cluster histogram, and a draw of windows with
  replacement that matches it (:func:`strategies.importance.resample.resample_to_histogram`). The
  clustering is shared by every domain, so it is timed apart ("one-off"); the per-domain part is the
  domain's histogram plus the draw.
* ``dsir`` (Xie et al. 2023, the ``data-selection`` package): hashed n-gram models of both
  corpora, a log importance weight per generic document, a seeded draw of documents without
  replacement, mapped to their windows (:func:`strategies.importance.strategy.dsir_window_stream`,
  the code ``slm-is`` runs with ``resampler="dsir"``). All of it depends on the domain: per-domain.
* ``uniform``: generic windows in shuffled order, no selection (the reference point).

Throughput is reported per second of selection wall time, in **generic documents/s** and
**generic windows/s** (``seq_len``-token windows): the size of the pool each selector scores,
divided by the time it took. Each selection then trains the same fresh model (same size, seed,
learning rate and number of steps: an equal FLOP budget, charged through the one engine) on the
selected stream, and the domain's validation perplexity is reported, with the ratios DSIR /
clusters at the end. Nothing here fine-tunes: the numbers isolate the selection.

Run: ``.venv/bin/python benchmarks/importance_sampling.py [--budget 1.5e12] [--cache DIR]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# data-selection's progress bars would interleave with the table; tqdm reads this at import,
# and importing torch imports tqdm.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.core.budgets import Budgets
from planner.data.clustering import fit_clustering, histogram_entropy  # noqa: E402
from planner.engine.evaluate import perplexity  # noqa: E402
from planner.engine.train import TrainConfig  # noqa: E402
from strategies.base import step_flops, steps_within
from strategies.importance.resample import resample_to_histogram  # noqa: E402
from strategies.importance.strategy import dsir_window_stream  # noqa: E402
from strategies.workspace import Workspace  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budget", type=float, default=1.5e12,
                        help="training FLOPs per selection (the same for each; default 1.5e12)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder for the demo corpora (default: a temporary folder)")
    parser.add_argument("--domain", default="legal", help="demo domain (default legal)")
    parser.add_argument("--domain-tokens", type=int, default=64 * 1024,
                        help="domain train tokens the selectors may read (default 65536)")
    parser.add_argument("--k", type=int, default=16, help="clusters (default 16)")
    parser.add_argument("--size", default="small", help="model size trained on each selection")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on cores shared with other processes, "
                             "more threads were measured slower)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def select_clusters(ws: Workspace, domain, k: int, n_draws: int, seed: int) -> dict:
    """Fit the clustering (one-off), then histogram the domain and draw (per domain)."""
    start = time.perf_counter()
    clustering = fit_clustering(ws.generic.train, k=k, embedder="hashed", seed=seed)
    one_off = time.perf_counter() - start
    start = time.perf_counter()
    hist = clustering.histogram(domain.train)  # (k,)
    stream = resample_to_histogram(clustering.generic_assignments, hist, n_draws, seed=seed)
    per_domain = time.perf_counter() - start
    return {"clustering": clustering, "hist": hist, "indices": stream.indices,
            "one_off_s": one_off, "per_domain_s": per_domain,
            "ess": f"{stream.effective_sample_size:.0f} windows", "distinct": stream.distinct}


def select_dsir(ws: Workspace, domain, n_draws: int, seed: int, work_dir: Path) -> dict:
    start = time.perf_counter()
    stream, documents = dsir_window_stream(ws.generic, domain.texts["train"], n_draws, seed=seed,
                                           work_dir=work_dir)
    per_domain = time.perf_counter() - start
    return {"indices": stream.indices, "one_off_s": 0.0, "per_domain_s": per_domain,
            "ess": f"{stream.effective_sample_size:.0f} docs", "distinct": stream.distinct,
            "documents": documents}


def select_uniform(ws: Workspace, n_draws: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, ws.generic.train.n, (n_draws,), generator=gen)
    return {"indices": indices, "one_off_s": 0.0, "per_domain_s": 0.0, "ess": "-",
            "distinct": int(torch.unique(indices).numel())}


def train_on(ws: Workspace, indices: torch.Tensor, domain, lr: float, label: str) -> float:
    """Train a fresh model on the stream within the budget; its domain validation loss."""
    shape = ws.shape(ws.small)
    result = ws.pretrain_model(
        shape.build(seed=ws.train.seed), ws.generic.train.ids,
        flops_per_token=shape.train_flops_per_token(), max_flops=ws.budgets.spec_flops, lr=lr,
        order=indices, valid=domain.valid.ids, phase="specialization", label=label,
    )
    return result.history[-1]["val_loss"]  # the engine validates the final model on all of it


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from planner.data.inputs import demo_inputs

    with tempfile.TemporaryDirectory(prefix="is-bench-") as tmp:
        cache = args.cache or Path(tmp)
        start = time.perf_counter()
        inputs = demo_inputs(cache, (args.domain,), domain_tokens=args.domain_tokens)
        load_s = time.perf_counter() - start
        domain = inputs.domains[args.domain]
        ws = Workspace(inputs.generic, inputs.tokenizer,
                       Budgets(pretrain_flops=0.0, spec_flops=args.budget), cache, small=args.size,
                       train=TrainConfig(batch_size=args.batch_size, device="cpu",
                                         seed=args.seed, eval_every=10**9, eval_windows=None))
        shape = ws.shape(ws.small)
        steps = steps_within(args.budget, shape, ws)
        if steps < 1:
            sys.exit(f"--budget {args.budget:.3g} pays for no step of {step_flops(shape, ws):.3g} "
                     f"FLOPs; raise it")
        n_draws = steps * args.batch_size
        generic = ws.generic
        n_docs, n_windows = len(generic.texts["train"]), generic.train.n
        print(f"generic: {n_docs} documents, {n_windows} windows of {ws.seq_len} tokens; "
              f"domain {args.domain}: {domain.train.n} train / {domain.valid.n} valid windows "
              f"(inputs ready in {load_s:.1f}s)")
        print(f"each selection trains a fresh {shape.describe()} model for {steps} steps "
              f"({n_draws} windows, {steps * step_flops(shape, ws):.3g} FLOPs), "
              f"lr {args.lr}, seed {args.seed}, {args.threads} thread(s)\n")

        results = {
            "clusters": select_clusters(ws, domain, args.k, n_draws, args.seed),
            "dsir": select_dsir(ws, domain, n_draws, args.seed, Path(tmp) / "dsir"),
            "uniform": select_uniform(ws, n_draws, args.seed),
        }
        clustering, hist = results["clusters"]["clustering"], results["clusters"]["hist"]
        print(f"domain histogram on k={args.k}: entropy {histogram_entropy(hist):.2f} nats, "
              f"top cluster {float(hist.max()):.2f}\n")
        header = (f"{'selection':<9} {'one-off s':>9} {'per-domain s':>12} {'docs/s':>9} "
                  f"{'windows/s':>10} {'distinct':>8} {'ESS':>14} {'TV to domain':>12} "
                  f"{'train s':>8} {'val ppl':>8}")
        print(header)
        print("-" * len(header))
        for name, r in results.items():
            labels = clustering.generic_assignments[r["indices"]]
            drawn = torch.bincount(labels, minlength=args.k).double() / labels.numel()
            r["tv"] = 0.5 * float((drawn - hist.double()).abs().sum())
            start = time.perf_counter()
            r["ppl"] = perplexity(train_on(ws, r["indices"], domain, args.lr, f"train on {name}"))
            r["train_s"] = time.perf_counter() - start
            seconds = r["one_off_s"] + r["per_domain_s"]
            rate = (lambda n: f"{n / seconds:.0f}") if seconds else (lambda n: "-")
            print(f"{name:<9} {r['one_off_s']:>9.2f} {r['per_domain_s']:>12.2f} "
                  f"{rate(n_docs):>9} {rate(n_windows):>10} {r['distinct']:>8} {r['ess']:>14} "
                  f"{r['tv']:>12.3f} {r['train_s']:>8.1f} {r['ppl']:>8.2f}")
        clusters, dsir = results["clusters"], results["dsir"]
        print(f"\ndsir selected its windows from the top {dsir['documents']} of {n_docs} documents")
        print("docs/s and windows/s: generic pool size / (one-off + per-domain) selection time")
        with_fit = clusters["one_off_s"] + clusters["per_domain_s"]
        print(f"ratio dsir / clusters: selection time per domain "
              f"{dsir['per_domain_s'] / clusters['per_domain_s']:.1f}x, "
              f"{dsir['per_domain_s'] / with_fit:.2f}x with the one-off clustering counted; "
              f"validation perplexity {dsir['ppl'] / clusters['ppl']:.3f}x")


if __name__ == "__main__":
    main()
