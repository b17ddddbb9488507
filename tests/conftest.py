"""Shared fixtures: a synthetic multi-domain corpus with real signal, and a tiny workspace.

Three "domains" draw words from their own vocabularies plus a shared one, so clustering,
importance weights and specialization have something real to find, in milliseconds.
"""
from __future__ import annotations

import os
import random

import pytest
import torch

# Tiny models: one thread is faster and avoids oversubscription; OMP_NUM_THREADS tells the engine
# (planner.core.threads.cpu_threads) and the CLI subprocesses the same.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def probe_cache(tmp_path_factory):
    """Speed probes (planner.engine.speed) cached in the session's folder, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECPLAN_PROBE_CACHE", str(tmp_path_factory.mktemp("probes") / "p.json"))
        yield

WORDS = {
    "law": "court shall licence party agreement liability warranty clause hereby statute".split(),
    "bio": "protein gene cell phenotype abnormal tissue enzyme clinical patient syndrome".split(),
    "code": "def return import class self lambda yield assert raise elif".split(),
}
SHARED = "the of and to in a is that for it".split()


def synthetic_documents(domain: str, n_docs: int, seed: int, words_per_doc: int = 60) -> list[str]:
    rng = random.Random(f"{domain}-{seed}")
    own = WORDS[domain]
    docs = []
    for i in range(n_docs):
        words = [rng.choice(own) if rng.random() < 0.7 else rng.choice(SHARED)
                 for _ in range(words_per_doc)]
        docs.append(f"{domain} document {i}: " + " ".join(words))
    return docs


def write_jsonl(path, texts):
    import json

    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """generic.jsonl (all three domains mixed) and one jsonl per domain (disjoint documents)."""
    folder = tmp_path_factory.mktemp("corpus")
    generic = []
    for domain in WORDS:
        generic += synthetic_documents(domain, 120, seed=0)
        write_jsonl(folder / f"{domain}.jsonl", synthetic_documents(domain, 60, seed=1))
    random.Random(0).shuffle(generic)
    write_jsonl(folder / "generic.jsonl", generic)
    return folder


@pytest.fixture(scope="session")
def tiny_inputs(corpus_dir, tmp_path_factory):
    from planner.data.inputs import load_inputs

    cache = tmp_path_factory.mktemp("cache")
    return load_inputs(corpus_dir / "generic.jsonl",
                       [corpus_dir / f"{d}.jsonl" for d in WORDS],
                       cache_dir=cache, seq_len=32, vocab_size=300)


def make_workspace(inputs, cache_dir, *, pretrain_flops=2e10, spec_flops=5e9, **budget_kwargs):
    from planner.core.budgets import Budgets
    from planner.engine.train import TrainConfig
    from strategies.workspace import Workspace

    budgets = Budgets(pretrain_flops=pretrain_flops, spec_flops=spec_flops, **budget_kwargs)
    return Workspace(inputs.generic, inputs.tokenizer, budgets, cache_dir, small="tiny",
                     large="small", train=TrainConfig(batch_size=8, eval_every=10,
                                                      eval_windows=64, device="cpu"))


def specplan(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``specplan ARGS`` through the console entry point :func:`planner.cli.main`;
    (exit code, stdout, stderr)."""
    import sys

    from planner import cli

    monkeypatch.setattr(sys, "argv", ["specplan", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_ws(tiny_inputs, tmp_path):
    """A workspace on the synthetic corpus with a fresh cache: deployed model 'tiny'."""
    return make_workspace(tiny_inputs, tmp_path / "cache")


@pytest.fixture(scope="session")
def warm_clusters(tiny_inputs, tmp_path_factory):
    """A clusters cache folder holding the k=4 and k=16 clusterings, fitted once per session.

    Copy it into a fresh workspace cache (``shutil.copytree``) to skip re-fitting k-means.
    """
    cache = tmp_path_factory.mktemp("cluster-cache")
    ws = make_workspace(tiny_inputs, cache)
    for k in (4, 16):
        ws.clustering(k)
    return cache / "clusters"
