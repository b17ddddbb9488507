"""Multiple-choice task scoring: specplan's scorer against lm-evaluation-harness.

Both sides score the same items on the same model, in one process, alternating run by run
(specplan, harness, specplan, harness...) after one untimed warm-up run of each, so that noise
from other processes on a shared machine falls on both; medians over the repeats are reported,
with the ratio specplan / harness (the baseline is lm-evaluation-harness).

Same on both sides:

* the model: ``planner.engine.models.model_shape(size, ...).build(seed)``, a randomly
  initialised ``LlamaForCausalLM``, fp32 on the CPU, in eval mode, window ``--seq-len``;
* the tokenizer: a byte-level BPE trained by ``planner.data.corpus.train_tokenizer`` on the
  generated text below (offline, seconds; no demo cache needed), eos ``<|endoftext|>``;
* the items: ``--items`` generated ones (seeded), written once to a JSONL of
  ``{"question", "choices", "answer"}``: a context of 2 to 14 sentences of made-up words
  (about 20 to 200 tokens), ``--choices`` continuations of one sentence each (about 6 to 20
  tokens, so the harness's one-token-continuation logits cache does not apply), one of them
  the answer. The harness reads the same JSONL through a task YAML (``dataset_path: json``,
  ``doc_to_text``, ``doc_to_choice``, ``target_delimiter: ""``, metrics acc and acc_norm).
  specplan conditions every context on the eos token and the harness's ``HFLM`` only does so
  with ``add_bos_token``, which the bridge does not set, so the YAML's ``doc_to_text`` starts
  with the eos text: both sides then score identical token rows, and their accuracies must
  agree (checked: within one item);
* ``--batch-size`` rows per forward pass, and the torch thread count (``--threads``, default 1,
  checked to be unchanged after every run); no row is truncated.

What each timed region includes (wall clock around one call; model and tokenizer built
beforehand, the task files written beforehand):

* specplan: ``score_task(model, tokenizer, load_task(jsonl))``: reading and validating the
  JSONL, tokenizing, batching, the forward passes (each context once, its choices on its
  key/value cache), accuracy and normalised accuracy.
* harness: ``score_task(model, tokenizer, load_task(yaml))``, i.e. specplan's bridge
  ``planner.engine.harness.score_harness``: validating the YAML, ``HFLM`` wrapping the model in
  memory, ``simple_evaluate`` with a ``TaskManager`` indexing only the YAML's folder (the
  ``datasets`` json load, served from its cache after the warm-up), building the requests,
  tokenizing, ``HFLM._loglikelihood_tokens`` (sorting, batching, forward passes), metrics.

The forward-pass part of each side (specplan's ``_score_shared``, the harness's
``_loglikelihood_tokens``) is also timed on its own and reported as "scoring only".

Run: ``.venv/bin/python benchmarks/task_scoring.py [--size small] [--json]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Before tqdm, datasets and the harness are imported: their progress bars read these once.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.engine import tasks as specplan_tasks  # noqa: E402
from planner.engine.harness import multiple_choice_config  # noqa: E402
from planner.engine.models import SIZES, model_shape  # noqa: E402



def sentence(rng: random.Random, words: list[str], lo: int, hi: int) -> str:
    text = " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
    return text[0].upper() + text[1:] + "."


def make_texts(args) -> tuple[list[str], list[dict]]:
    """(tokenizer training text, task items): sentences of made-up words, seeded."""
    rng = random.Random(args.seed)
    syllables = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
                    for _ in range(3000)})
    corpus = [" ".join(sentence(rng, words, 6, 16) for _ in range(8)) for _ in range(400)]
    items = []
    for _ in range(args.items):
        context = " ".join(sentence(rng, words, 4, 10) for _ in range(rng.randint(2, 14)))
        choices = [" " + sentence(rng, words, 3, 8) for _ in range(args.choices)]
        items.append({"question": context, "choices": choices,
                      "answer": rng.randrange(args.choices)})
    return corpus, items


def timed(fn) -> tuple[float, float, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def quiet(fn):
    """``fn`` with stderr swallowed: the harness passes ``disable=False`` to its tqdm bars
    explicitly, which ``TQDM_DISABLE`` does not override."""
    def call(*a, **k):
        with contextlib.redirect_stderr(io.StringIO()):
            return fn(*a, **k)
    return call


class Stopwatch:
    """Adds up the wall time spent in one function (the scoring part of a side)."""

    def __init__(self, owner, name: str):
        self.seconds = 0.0
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0

        setattr(owner, name, wrapper)

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternated")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256, help="the model's window")
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides; 0 keeps torch's setting. Default 1: on a "
                        "shared machine, more threads than free cores stall at OpenMP barriers "
                        "and the timings become noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    for name in ("lm_eval", "datasets", "filelock", "fsspec"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        os.environ["HF_DATASETS_CACHE"] = str(folder / "hf_datasets")  # nothing left behind
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        from planner.data.corpus import train_tokenizer

        corpus, items = make_texts(args)
        tokenizer = train_tokenizer(corpus, vocab_size=args.vocab, cache_dir=folder)
        shape = model_shape(args.size, vocab_size=len(tokenizer), seq_len=args.seq_len)
        model = shape.build(seed=args.seed).eval()
        jsonl = folder / "mc.jsonl"
        jsonl.write_text("".join(json.dumps(item) + "\n" for item in items))
        (folder / "harness").mkdir()
        yaml = folder / "harness" / "mc_h.yaml"
        yaml.write_text(multiple_choice_config("mc_h", jsonl, prefix=tokenizer.eos_token))

        rows, _, _ = specplan_tasks._rows(specplan_tasks.load_task(jsonl), tokenizer,
                                          args.seq_len)
        lengths = [len(r) for r in rows]
        if max(lengths) >= args.seq_len:  # the two sides truncate differently
            raise SystemExit(f"rows of up to {max(lengths)} tokens; raise --seq-len above that")

        sides = {"specplan": lambda: specplan_tasks.score_task(
                     model, tokenizer, specplan_tasks.load_task(jsonl),
                     batch_size=args.batch_size),
                 "harness": lambda: quiet(specplan_tasks.score_task)(
                     model, tokenizer, specplan_tasks.load_task(yaml),
                     batch_size=args.batch_size)}
        clocks = {"specplan": Stopwatch(specplan_tasks, "_score_shared"),
                  "harness": Stopwatch(HFLM, "_loglikelihood_tokens")}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
        scores = {}
        for repeat in range(args.repeats + 1):  # round 0 warms up: allocator, imports, caches
            for name, fn in sides.items():
                wall, cpu, scores[name] = timed(fn)
                scoring = clocks[name].take()
                assert torch.get_num_threads() == threads, f"{name} changed the thread count"
                if repeat:
                    runs[name].append((wall, cpu, scoring))

    n = args.items
    for key in ("accuracy", "normalized_accuracy"):
        gap = abs(scores["specplan"][key] - scores["harness"][key]) * n
        if gap > 1 + 1e-6:
            raise SystemExit(f"{key} differs by {gap:.0f} items: specplan "
                             f"{scores['specplan'][key]:.4f}, harness "
                             f"{scores['harness'][key]:.4f}")
    assert scores["harness"]["items"] == scores["specplan"]["items"] == n

    def rate(index: int) -> dict:
        per = {name: [n / r[index] for r in rs] for name, rs in runs.items()}
        med = {name: statistics.median(v) for name, v in per.items()}
        return {"specplan": med["specplan"], "harness": med["harness"],
                "ratio": med["specplan"] / med["harness"],
                "specplan_runs": per["specplan"], "harness_runs": per["harness"]}

    wall, cpu, scoring = rate(0), rate(1), rate(2)
    result = {
        "specplan_items_per_s": wall["specplan"], "harness_items_per_s": wall["harness"],
        "ratio": wall["ratio"],
        "specplan_accuracy": scores["specplan"]["accuracy"],
        "harness_accuracy": scores["harness"]["accuracy"],
        "specplan_normalized_accuracy": scores["specplan"]["normalized_accuracy"],
        "harness_normalized_accuracy": scores["harness"]["normalized_accuracy"],
        "wall": wall, "cpu_time": cpu, "scoring_only": scoring,
        "model": f"{args.size}: {shape.describe()}", "items": n, "choices": args.choices,
        "row_tokens": {"min": min(lengths), "median": statistics.median(lengths),
                       "max": max(lengths)},
        "size": args.size, "seq_len": args.seq_len, "vocab": len(tokenizer), "seed": args.seed,
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": threads,
        "precision": "fp32", "device": "cpu", "torch": torch.__version__,
        "lm_eval": lm_eval.__version__, "baseline": "lm-evaluation-harness",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"model     {result['model']}")
    print(f"task      {n} items x {args.choices} choices, rows of {min(lengths)}-{max(lengths)} "
          f"tokens (median {statistics.median(lengths):.0f}), batch {args.batch_size}, fp32 on "
          f"CPU, {threads} torch thread(s), torch {torch.__version__}, lm-eval "
          f"{lm_eval.__version__}")
    print(f"runs      {args.repeats} per side, alternated, after a warm-up of each; medians")
    print(f"accuracy  specplan {result['specplan_accuracy']:.4f} (norm "
          f"{result['specplan_normalized_accuracy']:.4f}), harness "
          f"{result['harness_accuracy']:.4f} (norm {result['harness_normalized_accuracy']:.4f})")
    for r, what, label in ((cpu, "process CPU time, whole call", "CPU time"),
                           (scoring, "wall clock, scoring only (forward passes)", "scoring"),
                           (wall, "wall clock, whole call (the headline)", "")):
        print(f"-- items/s by {what}")
        for name, side in (("specplan", "specplan (score_task on JSONL)"),
                           ("harness", "lm-evaluation-harness (HFLM)")):
            runs_text = ", ".join(f"{x:.1f}" for x in r[f"{name}_runs"])
            print(f"   {side:32s} {r[name]:8.1f} items/s   (runs: {runs_text})")
        print(f"   ratio {label}: {r['ratio']:.3f}x" if label else
              f"ratio specplan / lm-evaluation-harness (items/s): {r['ratio']:.3f}x")
    return result


if __name__ == "__main__":
    main()
