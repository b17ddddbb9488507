"""lm-evaluation-harness tasks, scored like specplan's own task files.

A team that already has harness tasks on its own data writes ``--task DOMAIN=TASK.yaml``: the
YAML is a harness task config (``task``, ``dataset_path``, ``doc_to_text``, ...), read by the
``lm-eval`` package (the ``lmeval`` extra) and scored on the model in memory through the
harness's ``HFLM`` wrapper, so its accuracy lands in the same ``task:NAME`` columns and
``tasks`` objects as a JSONL task's. Only the YAML's own folder is indexed (not the harness's
hundreds of built-in tasks), and the harness runs with the Hugging Face hub offline: a task whose
data is on the hub is refused before anything runs, with one line saying how to point it at a
local file.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from planner.core.errors import SpecplanError

__all__ = ["HARNESS_SUFFIXES", "harness_task_name", "multiple_choice_config", "score_harness"]

#: Task files read by lm-evaluation-harness rather than as specplan JSONL.
HARNESS_SUFFIXES = (".yaml", ".yml")
# `datasets` builders that read local files (``dataset_kwargs.data_files``), not the hub.
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}
_INSTALL = "install the extra: pip install 'specplan[lmeval]'"


def multiple_choice_config(name: str, data: str | os.PathLike[str], *, prefix: str = "",
                           source: str = "json") -> str:
    """A harness task config (YAML) over a specplan multiple-choice JSONL (``question``,
    ``choices``, ``answer``): the same items scored by the harness, ``acc`` and ``acc_norm``,
    each choice the question's continuation as written. ``prefix`` goes before every question
    (the eos text makes the harness condition on a document start, as specplan's scorer does)."""
    return (f"task: {name}\ndataset_path: {source}\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
            f'doc_to_text: "{prefix}{{{{question}}}}"\ndoc_to_choice: "{{{{choices}}}}"\n'
            'doc_to_target: answer\ntarget_delimiter: ""\nmetric_list:\n  - metric: acc\n'
            "  - metric: acc_norm\n")


def _read_yaml(text: str) -> Any:
    """A harness config; its ``!function`` tags (Python helpers the harness resolves itself)
    are read as plain strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, _tag, node: loader.construct_scalar(node)
                                 if isinstance(node, yaml.ScalarNode) else None)
    return yaml.load(text, Loader=Loader)


def harness_task_name(path: Path) -> str:
    """Validate a harness task YAML and return the harness's name for it.

    Raises:
        SpecplanError: lm-eval not installed, a YAML that is not a task config, or data that is
            not local (hub datasets cannot be reached here, and a plan must not depend on them).
    """
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SpecplanError(f"{path}: an lm-evaluation-harness task needs the lm-eval "
                            f"package; {_INSTALL}") from None
    try:
        config = _read_yaml(path.read_text(encoding="utf-8"))
    except Exception as err:  # yaml's errors have no common public base worth naming
        raise SpecplanError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); write an "
                            "lm-evaluation-harness task config") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise SpecplanError(f"{path}: no 'task: NAME' key; an lm-evaluation-harness task config "
                            "names its task (a group of tasks is not supported)")
    source = config.get("dataset_path")
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    local = (source in _LOCAL_BUILDERS and files) or (source and Path(source).exists())
    if not local:
        raise SpecplanError(
            f"{path}: harness task {config['task']!r} reads dataset_path {source!r} from the "
            "Hugging Face hub, which specplan does not download from; set dataset_path: json "
            "(or csv, parquet) with dataset_kwargs.data_files naming local files, or a local "
            "folder")
    wanted = files.values() if isinstance(files, dict) else [files] if files else []
    for name in (f for group in wanted for f in ([group] if isinstance(group, str) else group)):
        if not Path(name).is_file():
            raise SpecplanError(f"{path}: harness task {config['task']!r} names data file "
                                f"{name!r}, which does not exist; give an absolute path or one "
                                "relative to where specplan runs")
    return config["task"]


#: Where huggingface_hub and datasets keep the offline switches they read from the environment
#: when first imported (setting the variables later changes nothing).
_OFFLINE_FLAGS = {"huggingface_hub.constants": ("HF_HUB_OFFLINE",),
                  "datasets.config": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}


@contextlib.contextmanager
def _offline():
    """The hub off while the harness runs (so nothing is fetched), its progress logs quiet:
    the environment for what imports now, the modules' own flags for what imported before."""
    import importlib
    from unittest import mock

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    quiet = logging.getLogger("lm_eval")
    level, quiet.level = quiet.level, logging.ERROR
    flags = contextlib.ExitStack()
    try:
        for module_name, attributes in _OFFLINE_FLAGS.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for attribute in attributes:
                if hasattr(module, attribute):
                    flags.enter_context(mock.patch.object(module, attribute, True))
        yield
    finally:
        flags.close()
        quiet.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def score_harness(model, tokenizer, task, *, batch_size: int = 32) -> dict[str, Any]:
    """Run ``task`` (a harness :class:`planner.engine.tasks.Task`) on ``model`` in memory.

    Returns:
        ``format`` ("harness"), ``items``, ``truncated`` (0: the harness truncates itself),
        ``accuracy`` (the harness's ``acc``, else ``exact_match``), ``normalized_accuracy``
        when it reports ``acc_norm``, and every metric it reports under ``harness``.

    Raises:
        SpecplanError: the harness failed on the task, or reports neither metric.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    was_training = model.training
    with _offline():
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                      max_length=int(model.config.max_position_embeddings))
            out = simple_evaluate(
                model=lm, tasks=[task.harness],
                task_manager=TaskManager(include_path=str(Path(task.path).parent),
                                         include_defaults=False),
                log_samples=False, bootstrap_iters=0, random_seed=None, numpy_random_seed=None,
                torch_random_seed=None)
        except Exception as err:  # the harness's failures have no common base class
            raise SpecplanError(f"{task.path}: lm-evaluation-harness could not run task "
                                f"{task.harness!r} ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}); check the "
                                "task config against the harness's documentation") from None
        finally:
            model.train(was_training)
    metrics = out["results"][task.harness]
    scores = {key.split(",")[0]: float(value) for key, value in metrics.items()
              if "," in key and "_stderr" not in key and isinstance(value, (int, float))}
    accuracy = scores.get("acc", scores.get("exact_match"))
    if accuracy is None:
        raise SpecplanError(f"{task.path}: harness task {task.harness!r} reports "
                            f"{sorted(scores) or 'no metric'}, not acc or exact_match; add "
                            "'- metric: acc' to its metric_list")
    result = {"format": "harness", "items": int(out["n-samples"][task.harness]["effective"]),
              "truncated": 0, "accuracy": accuracy, "harness": scores}
    if "acc_norm" in scores:
        result["normalized_accuracy"] = scores["acc_norm"]
    return result
