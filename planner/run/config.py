"""The config vocabulary put to work: data loaded and workspaces built from the arguments.

:class:`planner.core.args.DataArgs` and :class:`~planner.core.args.RunArgs` declare the fields;
this module holds the one rule for "demo or paths" (:func:`load_data`), the training template
(:func:`train_template`) and the one place a :class:`~strategies.workspace.Workspace` is built
(:func:`make_workspace`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from planner.core.args import ConfigError, DataArgs, RunArgs
from planner.core.budgets import parse_budget
from planner.core.errors import SpecplanError
from planner.data.clustering import get_embedder
from planner.data.inputs import Inputs, demo_inputs, load_inputs
from planner.engine.checkpoints import open_checkpoint
from planner.engine.models import check_size
from planner.engine.tracking import check_tracker
from planner.engine.train import TrainConfig
from strategies.workspace import Workspace


def check_run_args(run: RunArgs, seq_len: int | None = None) -> None:
    """What :class:`RunArgs` cannot check on the floor: the model size and the embedder exist,
    (given the window length) the batch splits into whole windows and micro-batches, and a
    base is a checkpoint that can train here (its config, tokenizer, weights and size).

    Raises:
        ConfigError: naming the field.
    """
    if run.base:
        open_checkpoint(run.base, seq_len=seq_len or 1, device=run.device,
                        allow_pickle=run.allow_pickle)
    if run.base_cost is not None:
        if not run.base:
            raise ConfigError("base_cost", "counts a --base's pretraining; give --base too")
        parse_budget(run.base_cost, what="--base-cost")
    try:
        check_size(run.large, large=True)
    except SpecplanError as err:
        raise ConfigError("large", str(err)) from None
    try:
        get_embedder(run.embedder)
    except SpecplanError as err:
        raise ConfigError("embedder", str(err)) from None
    if run.tracker:
        try:
            check_tracker(run.tracker)
        except SpecplanError as err:
            raise ConfigError("tracker", str(err).split(": ", 1)[1]) from None
    if seq_len is not None:
        train_template(run, seq_len)


def load_data(data: DataArgs, cache_dir: str | Path, *, base: str | None = None,
              domain_tokens: int | None = None, seed: int = 0) -> Inputs:
    """The corpora, tokenized and split (cached), each domain cut to ``domain_tokens``; with a
    ``base`` checkpoint, by its tokenizer.

    Raises:
        SpecplanError: when neither the demo nor both paths are given, or the data is bad.
    """
    if base and data.tokenizer and Path(data.tokenizer) != Path(base):
        raise ConfigError("tokenizer", "a --base brings its own tokenizer, which the plan "
                                       "uses; leave --tokenizer out")
    kw = dict(seq_len=data.seq_len, vocab_size=data.vocab_size, domain_tokens=domain_tokens,
              seed=seed, tokenizer_dir=base or data.tokenizer)
    data.check_source()
    if data.demo:
        return demo_inputs(cache_dir, data.demo_domains, **kw)
    return load_inputs(data.generic, list(data.domains), cache_dir=cache_dir,
                       text_field=data.text_field, encoding=data.encoding, **kw)


def batch_windows(run: RunArgs, seq_len: int) -> int:
    """Windows per optimizer step: ``--batch-tokens`` in windows, else ``--batch-size``.

    Raises:
        ConfigError: tokens that are not a whole number of windows.
    """
    if run.batch_tokens is None:
        return run.batch_size
    if run.batch_tokens % seq_len:
        whole = max(1, round(run.batch_tokens / seq_len)) * seq_len
        raise ConfigError("batch_tokens", f"{run.batch_tokens} is not a multiple of the window "
                                          f"({seq_len} tokens); use {whole}")
    return run.batch_tokens // seq_len


def train_template(run: RunArgs, seq_len: int) -> TrainConfig:
    """The training template of every run; each run sets its own stop from its budget.

    The optimizer step's windows are reached by micro-batches of ``--micro-batch`` windows and
    gradient accumulation: the same windows, the same mean loss, less memory.

    Raises:
        ConfigError: a micro-batch that does not divide the batch.
    """
    windows = batch_windows(run, seq_len)
    micro = run.micro_batch or windows
    if windows % micro:
        divisors = [d for d in range(1, windows + 1) if windows % d == 0]
        raise ConfigError("micro_batch", f"{micro} does not divide the batch of {windows} "
                                         f"windows; use one of {divisors[-6:]}")
    return TrainConfig(batch_size=micro, grad_accum=windows // micro, eval_every=run.eval_every,
                       eval_windows=run.eval_windows, device=run.device, seed=run.seed,
                       compile=run.compile, checkpoint_every=run.checkpoint_every or None)


def make_workspace(inputs: Inputs, budgets, run: RunArgs, cache_dir: str | Path, *,
                   small: str = "small", clusterings: dict | None = None,
                   cross_process_locks: bool = False,
                   on_eval: Callable[[int, int, float], None] | None = None) -> Workspace:
    """The workspace of one strategy run.

    Args:
        clusterings: a dict shared by the workspaces of one plan or sweep, so each k is
            clustered once per process.
        cross_process_locks: hold a file lock per cached build (artifacts, clusterings), so
            parallel workers never train the same artifact twice.
    """
    base = None
    if run.base:
        base = open_checkpoint(run.base, seq_len=inputs.generic.train.seq_len,
                               device=run.device, allow_pickle=run.allow_pickle)
        small = str(base.folder)
    return Workspace(inputs.generic, inputs.tokenizer, budgets, Path(cache_dir), small=small,
                     large=run.large, base=base,
                     base_cost=parse_budget(run.base_cost or 0, what="--base-cost",
                                            cache_dir=cache_dir),
                     train=train_template(run, inputs.generic.train.seq_len),
                     embedder=run.embedder,
                     on_eval=on_eval, clusterings={} if clusterings is None else clusterings,
                     cross_process_locks=cross_process_locks)
