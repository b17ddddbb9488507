"""The config vocabulary: the data and run arguments every entry point shares, declared once.

``specplan run``, ``plan``, ``forecast --calibrate``, sweep files, the plan spec and the
calibration ladder all take :class:`DataArgs` (where the text comes from, how it becomes
windows) and :class:`RunArgs` (how each strategy run trains). Each field is declared once with
its help and its bound; the CLI's options are generated from the fields and a sweep file's keys
are the field names, in the style of litgpt's argument dataclasses. This module is the floor
(standard library only), so the CLI can build its options without loading torch;
:mod:`planner.run.config` turns the arguments into data and workspaces.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from planner.core.errors import SpecplanError


def arg(default: Any, help: str, *, flag: str | None = None, minimum: int | None = None) -> Any:
    """A config field: its default, its help, its CLI flag (default ``--field-name``) and, for
    counts, the lower bound the dataclass checks."""
    meta = {"help": help, "flag": flag, "minimum": minimum}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


class ConfigError(SpecplanError):
    """A field's value is wrong; front ends name it as the user wrote it (flag or TOML key)."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name}: {problem}")


def _check(args: Any) -> None:
    """Every field's lower bound (metadata of :func:`arg`)."""
    for f in dataclasses.fields(args):
        value, minimum = getattr(args, f.name), f.metadata.get("minimum")
        if minimum is not None and value is not None and value < minimum:
            raise ConfigError(f.name, f"{value} must be at least {minimum}")


@dataclass(frozen=True)
class DataArgs:
    """Where the text comes from and how it becomes token windows."""

    generic: str | None = arg(None, "Generic corpus (folder, .txt, .jsonl, .parquet, .csv, "
                                    "a saved datasets folder, hf:NAME).")
    domains: tuple[str, ...] = arg((), "Domain corpus; repeatable.", flag="--domain")
    demo: bool = arg(False, "Use the embedded demo corpora.")
    demo_domains: tuple[str, ...] = arg(("legal",), "Demo domains to use; repeatable.",
                                        flag="--demo-domain")
    text_field: str = arg("text", "JSONL field or table column holding the text.")
    encoding: str = arg("utf-8", "Text encoding of .txt/.jsonl/.csv files (e.g. latin-1).")
    seq_len: int = arg(128, "Tokens per window.", minimum=1)
    vocab_size: int = arg(4096, "BPE vocabulary trained on the generic corpus when no "
                                "--tokenizer is given.")
    tokenizer: str | None = arg(None, "Local tokenizer folder (else a BPE is trained).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "demo_domains", tuple(self.demo_domains) or ("legal",))
        _check(self)
        if self.demo and (self.generic or self.domains):
            raise ConfigError("demo", "give either --demo or --generic and --domain paths, "
                                      "not both")

    @property
    def domains_given(self) -> int:
        """How many domains the data names: the default N of "N domains share pretraining"."""
        return len(self.demo_domains) if self.demo else len(self.domains)

    def check_source(self, what: str = "") -> None:
        """The one "demo or paths" rule: the demo corpora, or a generic and a domain corpus.

        Raises:
            SpecplanError: when neither is given (``what`` names the command's mode).
        """
        if not self.demo and not (self.generic and self.domains):
            raise SpecplanError(f"{what}give --generic PATH and at least one --domain PATH "
                                f"(or --demo)")


@dataclass(frozen=True)
class RunArgs:
    """How every strategy run trains: shared by all runs of a plan, sweep or calibration."""

    large: str = arg("6x", "Large model (llm, distillation teachers): a size as --sizes takes "
                           "it, or a parameter ratio to the deployed model.")
    batch_size: int = arg(16, "Windows per optimizer step.", minimum=1)
    batch_tokens: int | None = arg(None, "Tokens per optimizer step, a multiple of --seq-len "
                                         "(instead of --batch-size).", minimum=1)
    micro_batch: int | None = arg(None, "Windows per forward/backward pass, dividing the batch; "
                                        "the rest is gradient accumulation (default: the whole "
                                        "batch at once).", minimum=1)
    compile: bool = arg(False, "torch.compile every training run (pays on GPUs, in long runs).")
    eval_every: int = arg(50, "Optimizer steps between validations.", minimum=1)
    eval_windows: int = arg(256, "Validation windows per evaluation.", minimum=1)
    embedder: str = arg("hashed", "Clustering embedder: hashed or minilm.")
    device: str = arg("auto", "auto, cpu, cuda[:N] or mps.")
    seed: int = arg(0, "Seed of data order, initialisation and splits.")
    base: str | None = arg(None, "A local checkpoint folder (safetensors weights and its "
                                 "tokenizer) to start from instead of pretraining: slm "
                                 "fine-tunes it, slm-is continues its pretraining on resampled "
                                 "generic data; its tokenizer becomes the plan's.")
    base_cost: str | None = arg(None, "What the base's own pretraining cost, as FLOPs or device "
                                      "time (2000h@a100), charged to the generic phase for "
                                      "comparisons (default: 0, a sunk cost).")
    allow_pickle: bool = arg(False, "Load a --base whose weights are pickle files (.bin), which "
                                    "can run code.")
    tracker: str | None = arg(None, "Log training curves and the ledger to tensorboard[:DIR] or "
                                    "mlflow[:URI] (optional packages: specplan[track]).")
    checkpoint_every: int = arg(500, "Optimizer steps between checkpoints of a pretraining run "
                                     "(0: none); a killed trial resumes from its last one.",
                                minimum=0)

    def __post_init__(self) -> None:
        _check(self)


def from_mapping(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from the keys of ``values`` that are its fields (others ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def field_names(*classes: type) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}
