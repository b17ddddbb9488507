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
from planner.core.errors import SpecplanError
from planner.data.clustering import get_embedder
from planner.data.inputs import Inputs, demo_inputs, load_inputs
from planner.engine.models import SIZES
from planner.engine.train import TrainConfig
from strategies.workspace import Workspace


def check_run_args(run: RunArgs) -> None:
    """What :class:`RunArgs` cannot check on the floor: the model size and the embedder exist.

    Raises:
        ConfigError: naming the field.
    """
    if run.large not in SIZES:
        raise ConfigError("large", f"{run.large!r} is not a model size; choose one of "
                                   f"{', '.join(SIZES)}")
    try:
        get_embedder(run.embedder)
    except SpecplanError as err:
        raise ConfigError("embedder", str(err)) from None


def load_data(data: DataArgs, cache_dir: str | Path, *, domain_tokens: int | None = None,
              seed: int = 0) -> Inputs:
    """The corpora, tokenized and split (cached), each domain cut to ``domain_tokens``.

    Raises:
        SpecplanError: when neither the demo nor both paths are given, or the data is bad.
    """
    kw = dict(seq_len=data.seq_len, vocab_size=data.vocab_size, domain_tokens=domain_tokens,
              seed=seed)
    data.check_source()
    if data.demo:
        return demo_inputs(cache_dir, data.demo_domains, **kw)
    return load_inputs(data.generic, list(data.domains), cache_dir=cache_dir,
                       text_field=data.text_field, tokenizer_dir=data.tokenizer,
                       encoding=data.encoding, **kw)


def train_template(run: RunArgs) -> TrainConfig:
    """The training template of every run; each run sets its own stop from its budget."""
    return TrainConfig(batch_size=run.batch_size, eval_every=run.eval_every,
                       eval_windows=run.eval_windows, device=run.device, seed=run.seed,
                       checkpoint_every=run.checkpoint_every or None)


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
    return Workspace(inputs.generic, inputs.tokenizer, budgets, Path(cache_dir), small=small,
                     large=run.large, train=train_template(run), embedder=run.embedder,
                     on_eval=on_eval, clusterings={} if clusterings is None else clusterings,
                     cross_process_locks=cross_process_locks)
