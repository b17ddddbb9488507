"""Run one strategy end to end: estimate, check budgets, pretrain (cached), specialize per
domain, evaluate, export. The library call behind ``specplan run``, plan trials and sweeps."""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from planner.core.args import DataArgs
from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.core.io import atomic_dir, untouched_on_error
from planner.core.units import format_count
from planner.data.corpus import load_documents, load_tokenizer, train_tokenizer
from planner.data.inputs import prepared
from planner.engine.devices import resolve_device
from planner.engine.evaluate import (
    domain_perplexities,
    macro_perplexity,
    measure_inference,
    perplexity,
)
from planner.engine.models import (
    SIZES,
    checkpoint_window,
    load_model,
    model_shape,
    save_model,
    shape_of,
)
from planner.engine.tasks import Task, load_task, score_task
from planner.engine.train import TrainConfig, WindowSampler, evaluate_loss, train
from planner.run.results import TASK_COLUMN
from strategies import get_strategy, strategies_with
from strategies.base import CostEstimate, Settings, Strategy, settings_json


@dataclass
class DomainResult:
    domain: str
    ppl_before: float | None
    ppl_after: float
    ppl_test: float | None
    ledger: Ledger
    history: list[dict]
    notes: dict
    model_dir: str | None = None
    train_tokens: int | None = None  # the domain's training tokens (all of them when uncut)
    tasks: dict[str, dict] = field(default_factory=dict)  # task name -> score_task's scores


@dataclass
class RunReport:
    """Everything one strategy run produced; ``rows()`` gives the results-table rows."""

    run_id: str
    strategy: str
    settings: Settings
    estimate: CostEstimate
    generic_ledger: Ledger
    artifact_reused: bool
    domains: list[DomainResult] = field(default_factory=list)
    status: str = "ok"
    ppl_generic: float | None = None
    device: str = ""

    @property
    def macro_ppl(self) -> float:
        return macro_perplexity(d.ppl_after for d in self.domains)

    def ledger(self) -> Ledger:
        """The whole run's costs: the generic artifact's plus every domain's specialization."""
        combined = Ledger(list(self.generic_ledger.entries))
        for domain in self.domains:
            combined.extend(domain.ledger)
        return combined

    def rows(self, budgets) -> list[dict]:
        generic = self.generic_ledger.totals()["generic"]
        # Without a cut, the run's domain size (what analyses group configs by) is the mean of
        # its domains' training tokens; each domain's own size is in domain_train_tokens.
        sizes = [d.train_tokens for d in self.domains if d.train_tokens]
        shared_tokens = round(sum(sizes) / len(sizes)) if sizes else None
        out = []
        for d in self.domains:
            specialization = d.ledger.totals()["specialization"]
            out.append({
                "run_id": self.run_id, "strategy": self.strategy,
                "settings": settings_json(self.settings), "domain": d.domain,
                "domain_tokens": budgets.domain_tokens or shared_tokens,
                "domain_train_tokens": d.train_tokens,
                "pretrain_budget_flops": budgets.pretrain_flops,
                "spec_budget_flops": budgets.spec_flops,
                "domains_count": budgets.domains_count,
                "params_inference": self.estimate.params_inference,
                "params_pretrain": self.estimate.params_pretrain,
                "inference_flops_per_token": self.estimate.inference_flops_per_token,
                "est_generic_flops": self.estimate.generic_flops,
                "est_spec_flops": self.estimate.spec_flops,
                "generic_flops": generic["flops"], "spec_flops": specialization["flops"],
                "generic_seconds": generic["seconds"],
                "spec_seconds": specialization["seconds"],
                "generic_tokens": generic["tokens"], "spec_tokens": specialization["tokens"],
                "artifact_reused": self.artifact_reused,
                "ppl_generic": self.ppl_generic, "ppl_before": d.ppl_before,
                "ppl_after": d.ppl_after, "ppl_test": d.ppl_test,
                "device": self.device, "status": self.status, "error": "",
                **{f"{TASK_COLUMN}{name}": r["accuracy"] for name, r in d.tasks.items()},
            })
        return out


def plan_check(strategy: Strategy, settings: Settings, ws) -> tuple[CostEstimate, str]:
    """Estimate and check budgets; returns the estimate and the run status.

    Raises:
        BudgetError: when a phase's budget cannot fit the configuration, or the deployed model
            breaks the inference budget for a strategy that must respect it.
    """
    if ws.base is not None and not strategy.accepts_base:
        takers = ", ".join(strategies_with(accepts_base=True))
        raise SpecplanError(f"{strategy.name} does not start from a --base checkpoint yet; "
                            f"strategies that do: {takers}")
    estimate = strategy.estimate(settings, ws)
    strategy.check(estimate, ws.budgets)
    status = "ok"
    cap = ws.budgets.inference
    if not cap.admits(flops_per_token=estimate.inference_flops_per_token,
                      params=estimate.params_inference):
        if strategy.respects_inference_budget and ws.base is None:  # a base is flagged only
            raise BudgetError(
                f"{strategy.name}: the deployed model ({format_count(estimate.params_inference)} "
                f"params, {estimate.inference_flops_per_token:.3g} FLOPs/token) breaks the "
                f"inference budget ({cap.describe()}); {smaller_size_hint(ws, cap)}"
            )
        status = "over-inference-budget"
    return estimate, status


def smaller_size_hint(ws, cap) -> str:
    """A fix that exists: a smaller size that fits the cap, or the cap the smallest one needs."""
    fits = [name for name in SIZES if cap.admits(
        flops_per_token=ws.shape(name).inference_flops_per_token(),
        params=ws.shape(name).params_total)]
    if fits:
        return f"pick a size that fits ({', '.join(fits)}) or raise --inference-budget"
    smallest = ws.shape(next(iter(SIZES)))
    return (f"no model size fits it: the smallest ({next(iter(SIZES))}) has "
            f"{format_count(smallest.params_total)} params and "
            f"{smallest.inference_flops_per_token():.3g} FLOPs/token; raise --inference-budget "
            f"to at least that")


def export_model(model: torch.nn.Module, tokenizer, folder: Path) -> Path:
    """A transformers checkpoint (safetensors) plus tokenizer, written atomically."""
    with atomic_dir(folder) as tmp:
        save_model(model, tmp)
        tokenizer.save_pretrained(tmp)
    return Path(folder)


def run_strategy(
    name: str, settings: dict | Settings | None, ws, domains: dict, *,
    out_dir: Path | None = None, evaluate_test: bool = False, tasks: dict | None = None,
) -> RunReport:
    """Run ``name`` on every domain; budgets are checked before any compute is spent.

    Args:
        settings: a dict (validated against the strategy's settings) or settings object.
        domains: name -> ``CorpusSplits`` (already cut to the domain data size).
        out_dir: when given, each domain's model is exported to ``out_dir/<domain>``; a run
            that fails or is interrupted removes what it added there (no half set of models).
        evaluate_test: also evaluate the test split (only for a final choice, never selection).
        tasks: task name -> (domain name, :class:`Task`), as :func:`load_tasks` gives; each is
            scored on its domain's model (``DomainResult.tasks``, a ``task:NAME`` column).
    """
    strategy = get_strategy(name)
    if not isinstance(settings, Settings):
        settings = strategy.settings(settings)
    estimate, status = plan_check(strategy, settings, ws)
    artifact = ws.artifact(strategy, settings)
    report = RunReport(
        run_id=uuid.uuid4().hex[:12], strategy=name, settings=settings, estimate=estimate,
        generic_ledger=artifact.ledger, artifact_reused=artifact.reused, status=status,
        ppl_generic=artifact.meta.get("ppl_generic"),
        device=str(resolve_device(ws.train.device)),
    )
    with untouched_on_error(out_dir) if out_dir is not None else contextlib.nullcontext():
        for domain_name, domain in domains.items():
            _run_domain(strategy, settings, artifact, ws, report, domain_name, domain,
                        out_dir=out_dir, evaluate_test=evaluate_test, tasks={
                            name: task for name, (of, task) in (tasks or {}).items()
                            if of == domain_name})
    return report


def _run_domain(strategy, settings, artifact, ws, report: RunReport, domain_name: str, domain,
                *, out_dir: Path | None, evaluate_test: bool, tasks: dict) -> None:
    """Specialize one domain, evaluate it, export it, and add its result to ``report``."""
    domain_ledger = Ledger()
    try:
        with ws.charging(domain_ledger):
            specialized = strategy.specialize(settings, artifact, domain, ws)
    finally:  # spent compute stays on the workspace's ledger even when the run fails
        ws.ledger.extend(domain_ledger)
    model = specialized.model
    after = evaluate_loss(model, domain.valid.ids)
    test = perplexity(evaluate_loss(model, domain.test.ids)) if evaluate_test else None
    scores = {name: score_task(model, ws.tokenizer, task) for name, task in tasks.items()}
    model_dir = None
    if out_dir is not None:
        model_dir = str(export_model(model, ws.tokenizer, Path(out_dir) / domain_name))
    report.domains.append(DomainResult(
        domain=domain_name,
        ppl_before=(perplexity(specialized.loss_before)
                    if specialized.loss_before is not None else None),
        ppl_after=perplexity(after), ppl_test=test, ledger=domain_ledger,
        history=specialized.history, notes=specialized.notes, model_dir=model_dir,
        train_tokens=domain.train.tokens, tasks=scores,
    ))


@dataclass
class TrainRun:
    """One standalone pretraining or fine-tuning run (``specplan train``)."""

    result: object
    ledger: Ledger
    ppl_before: float | None
    ppl_after: float
    model_dir: str | None
    shape: str


def train_once(
    corpus: str | Path, *, cache_dir: Path, init: str | Path | None = None, size: str = "small",
    phase: str = "generic", budget_flops: float | None = None, steps: int | None = None,
    tokens: int | None = None, early_stopping: int | None = None, out_dir: Path | None = None,
    seq_len: int | None = None, vocab_size: int = 4096, text_field: str = "text",
    encoding: str = "utf-8", **train_kwargs,
) -> TrainRun:
    """Pretrain a fresh model (``init=None``) or fine-tune a saved one on ``corpus``.

    The tokenizer is the one saved with ``init`` when fine-tuning, else trained on ``corpus``.
    """

    docs = load_documents(corpus, text_field=text_field, encoding=encoding)
    if init is not None:
        tokenizer = load_tokenizer(init)
        model = load_model(Path(init))
        seq_len = checkpoint_window(model, seq_len)
        shape = shape_of(model, seq_len)
    else:
        tokenizer = train_tokenizer(docs.texts, vocab_size=vocab_size, cache_dir=cache_dir)
        seq_len = seq_len or DataArgs().seq_len
        shape = model_shape(size, vocab_size=len(tokenizer), seq_len=seq_len)
        model = shape.build(seed=train_kwargs.get("seed", 0))
    splits = prepared(docs, tokenizer, seq_len=seq_len, cache_dir=cache_dir)
    cfg = TrainConfig(max_flops=budget_flops, max_steps=steps, max_tokens=tokens,
                      early_stopping_patience=early_stopping, **train_kwargs)
    ledger = Ledger()
    before = evaluate_loss(model, splits.valid.ids) if init is not None else None
    result = train(
        model, WindowSampler(splits.train.ids, cfg.batch_size, cfg.grad_accum, seed=cfg.seed),
        cfg, seq_len=seq_len, flops_per_token=shape.train_flops_per_token(), ledger=ledger,
        phase=phase, label=f"train {docs.name}", valid=splits.valid.ids,
    )
    after = evaluate_loss(model, splits.valid.ids)
    model_dir = str(export_model(model, tokenizer, Path(out_dir))) if out_dir else None
    return TrainRun(result, ledger, perplexity(before) if before is not None else None,
                    perplexity(after), model_dir, shape.describe())


def load_tasks(tasks: list[tuple[str, str | Path]],
               domains: dict[str, str]) -> dict[str, tuple[str, Task]]:
    """Read ``--task DOMAIN=PATH`` files: task name (file stem) -> (domain name, task).

    ``domains`` maps each domain as the user gave it (a path) to its corpus name; a task may
    name its domain either way. Called before any model loads or trains, so a mistake costs
    nothing.

    Raises:
        SpecplanError: a bad task file, two tasks with one name, or a domain not in ``domains``.
    """
    names = {**domains, **{name: name for name in domains.values()}}
    loaded = {}
    for domain, path in tasks:
        task = load_task(path)
        if task.name in loaded:
            raise SpecplanError(f"--task {domain}={path}: a second task named {task.name!r} "
                                f"(tasks are named by file stem); rename one of the files")
        if str(domain) not in names:
            raise SpecplanError(
                f"--task {domain}={path}: domain {domain!r} is not evaluated (the domains are "
                f"{', '.join(sorted(set(names.values())))}); attach the task to one of them or "
                f"add that domain")
        loaded[task.name] = (names[str(domain)], task)
    return loaded


def tasks_for(tasks: list[tuple[str, str | Path]], given, names) -> dict[str, tuple[str, Task]]:
    """:func:`load_tasks` for a run's domains: ``names`` are their corpus names, ``given`` the
    ``--domain`` paths they came from (not the demo's, whose corpora have names only)."""
    paths = list(given) if len(given) == len(names) else []
    return load_tasks(tasks, {**{str(p): n for p, n in zip(paths, names)},
                              **{n: n for n in names}})


def evaluate_model(
    model_dir: str | Path, domains: list[str | Path], *, cache_dir: Path, text_field: str = "text",
    split: str = "test", speed: bool = True, tasks: list[tuple[str, str | Path]] = (),
) -> dict:
    """Perplexity of a saved model per domain and macro-averaged, plus inference speed, and
    its score on each task file (``tasks``: (domain, path) pairs; the domain is a corpus name
    or path as given in ``domains``).

    Raises:
        SpecplanError: a bad task file, two tasks with one name, or a task's domain not among
            ``domains`` (all checked before the model is loaded).
    """
    docs_of = [load_documents(path, text_field=text_field) for path in domains]
    loaded = load_tasks(tasks, {str(path): docs.name for path, docs in zip(domains, docs_of)})
    tokenizer = load_tokenizer(model_dir)
    model = load_model(Path(model_dir))
    shape = shape_of(model, checkpoint_window(model))
    windows = {}
    for docs in docs_of:
        splits = prepared(docs, tokenizer, seq_len=shape.seq_len, cache_dir=cache_dir)
        windows[docs.name] = getattr(splits, split).ids
    ledger = Ledger()
    out = {"perplexity": domain_perplexities(model, windows), "split": split,
           "params": shape.params_total,
           "inference_flops_per_token": shape.inference_flops_per_token()}
    if loaded:
        out["tasks"] = {name: {"domain": domain, **score_task(model, tokenizer, task)}
                        for name, (domain, task) in loaded.items()}
    if speed:
        model.config.use_cache = True
        out["speed"] = measure_inference(
            model, flops_per_token=shape.inference_flops_per_token(), ledger=ledger
        ).__dict__
    out["ledger"] = ledger.to_dict()["totals"]
    return out
