"""``plan()``: the product's main job. Search strategies under budgets, pick, build, report.

Flow: load the data (fail early), refuse budgets no strategy can fit (with each strategy's
minimum), open or resume the study, run trials (in this process, or one worker process per GPU
group sharing the study), then evaluate the best feasible trial on the test split and write
``plan.json``, ``trials.csv`` and the exported model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from planner.core.budgets import total_cost
from planner.core.errors import BudgetError, Interrupted, SpecplanError
from planner.core.io import untouched_on_error, writable_folder, write_json, write_text
from planner.core.reference import GUIDANCE, reference_guidance
from planner.core.text import table
from planner.engine.devices import gpu_groups, parse_gpus, resolve_device
from planner.engine.evaluate import macro_perplexity, measure_inference
from planner.engine.models import load_model
from planner.run.results import RESULTS_CSV, TASK_COLUMN, task_columns, write_table
from planner.run.runner import plan_check, run_strategy
from planner.search.study import (
    Objective,
    PlanSpec,
    completed,
    create_study,
    feasible,
    load_plan_inputs,
    mix_weight,
    objective_label,
    objective_value,
    oom_errors,
    open_storage,
    optimize,
    plan_tasks,
    rank_key,
    ranked_task,
    recover_stale_trials,
    settings_from_params,
    task_halves,
)
from planner.search.workers import run_gpu_workers
from planner.engine.tracking import tracked
from strategies import family_of, get_strategy

log = logging.getLogger("specplan")


@dataclass
class PlanDoc:
    """``plan.json``: the choice, what it cost, how good it is and why (keys as written here).

    Costs are FLOPs (estimated analytically before the run, measured by the ledger after it),
    perplexities are per domain and macro-averaged, ``why`` compares the choice to the best
    trial of another strategy, ``reference_guidance`` is what the reference study would pick
    for these budgets (arXiv 2402.01093 v2, Fig. 1) and whether this plan agrees.
    """

    study: str
    strategy: str
    size: str
    settings: dict
    trial: int
    budgets: dict
    estimated_cost: dict
    measured_cost: dict
    perplexity: dict
    why: str
    runner_up: dict | None
    reference_guidance: dict
    ledger: dict
    inference_speed: dict
    pareto_trials: list[int]
    model_dirs: dict[str, str]
    feasibility: list[dict]
    retried_trials: list[int]
    planning: dict
    search_seconds: float
    final_run_seconds: float
    trials: int
    trials_without_results_rows: int
    tasks: dict = dataclasses.field(default_factory=dict)
    objective: dict = dataclasses.field(default_factory=lambda: {"rank_by": "ppl",
                                                                 "min_task": {}})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PlanResult:
    """A plan's folder, its ``plan.json`` and printed summary; an early plan adds the forecast
    it chose from (a :class:`planner.forecast.forecast.ForecastResult`) and its proxy runs."""

    out_dir: Path
    plan: dict
    summary: str
    forecast: object | None = None
    proxy_runs: object | None = None


def feasibility_report(spec: PlanSpec, inputs, cache_dir: Path) -> list[dict]:
    """Each strategy's default configuration against the budgets, before any compute."""

    objective = Objective(spec, inputs, cache_dir)
    rows = []
    for name in spec.strategies:
        strategy = get_strategy(name)
        ws = objective.workspace(spec.sizes[0])
        settings = strategy.settings()
        try:
            estimate, status = plan_check(strategy, settings, ws)
            rows.append({"strategy": name, "ok": True, "status": status,
                         "min_generic_flops": estimate.min_generic_flops,
                         "min_spec_flops": estimate.min_spec_flops, "reason": ""})
        except (BudgetError, SpecplanError) as err:
            try:
                estimate = strategy.estimate(settings, ws)
                minimum = (estimate.min_generic_flops, estimate.min_spec_flops)
            except SpecplanError:  # the estimate itself refused (e.g. k > windows)
                minimum = (math.nan, math.nan)
            rows.append({"strategy": name, "ok": False, "status": "rejected",
                         "min_generic_flops": minimum[0], "min_spec_flops": minimum[1],
                         "reason": str(err)})
    return rows


@tracked
def plan(
    spec: PlanSpec, out_dir: str | Path, *, storage: str | None = None, gpus: str | None = None,
    gpus_per_trial: int = 1, inputs=None, checks: list[dict] | None = None,
) -> PlanResult:
    """Search, choose and build the specialized model; see the module docstring.

    ``spec.tasks`` are checked before the search, scored in every trial and on the chosen model
    of their domain (``plan.json``'s ``tasks``); they choose only through ``spec.objective`` and
    ``spec.min_task`` (see :mod:`planner.search.study`). ``checks`` is the
    :func:`feasibility_report` when the caller has made it already (an early plan falling back).

    A failure or an interrupt before the search starts leaves ``out_dir`` as it was; an
    interrupt during the search keeps the finished trials and queues the interrupted one again
    for the next run of the same command.
    """
    out_dir = writable_folder(out_dir)
    cache_dir = Path(spec.cache_dir)
    devices = parse_gpus(gpus)
    groups = gpu_groups(devices, gpus_per_trial)
    with untouched_on_error(out_dir):
        store = open_storage(storage, out_dir)
        inputs = inputs or load_plan_inputs(spec)
        plan_tasks(spec, inputs)  # a bad task file fails before any compute
        if checks is None:
            log.info(f"checking the budgets against {len(spec.strategies)} strategies")
            checks = feasibility_report(spec, inputs, cache_dir)
        if not any(row["ok"] for row in checks):
            raise no_strategy_fits(checks)
        study = create_study(spec, store)
        retried = recover_stale_trials(study)
    if retried:
        log.info(f"trial(s) {', '.join(map(str, retried))} did not finish last time: queued again")
    log.info(f"searching: {spec.trials} finished trial(s) wanted, study {study.study_name}")
    started = time.perf_counter()
    try:
        if len(groups) > 1 or gpus_per_trial > 1:
            run_gpu_workers(study.study_name, storage or str(out_dir / "study.journal"), groups,
                            cache_dir)
        else:
            if devices:
                spec.run = dataclasses.replace(spec.run, device="cuda")
            optimize(study, Objective(spec, inputs, cache_dir), spec.trials,
                     catch=oom_errors())
    except KeyboardInterrupt:
        done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
        raise Interrupted(f"{done} of {spec.trials} trial(s) finished and are kept in "
                          f"{storage or out_dir / 'study.journal'}; re-run the same command to "
                          f"resume (the interrupted trial runs again)") from None
    search_seconds = time.perf_counter() - started
    log.info("search done: building the chosen model and evaluating it on the test split")
    try:
        return finish(study, spec, inputs, out_dir, checks, retried, search_seconds)
    except KeyboardInterrupt:
        raise Interrupted(f"the search finished ({spec.trials} trial(s) kept); re-run the same "
                          f"command to build the chosen model") from None


# -- results ------------------------------------------------------------------------------------
def no_strategy_fits(checks: list[dict]) -> BudgetError:
    """The error for budgets no strategy fits: each one's minimums (from the feasibility
    report), so the user sees how far off each is."""
    needs = "; ".join(f"{r['strategy']} needs >= {r['min_generic_flops']:.2g} pretraining "
                      f"and >= {r['min_spec_flops']:.2g} specialization FLOPs" for r in checks)
    return BudgetError(f"the budgets fit no strategy: {needs}")


def trial_row(t) -> dict:
    attrs = t.user_attrs
    return {
        "trial": t.number, "state": t.state.name, "strategy": t.params.get("strategy"),
        "size": t.params.get("size"),
        "macro_ppl": attrs.get("macro_ppl"), "macro_ppl_before": _macro(attrs.get("ppl_before")),
        "generic_flops": attrs.get("generic_flops"),
        "spec_flops": attrs.get("spec_flops"), "total_flops": attrs.get("total_flops"),
        "generic_seconds": attrs.get("generic_seconds"), "spec_seconds": attrs.get("spec_seconds"),
        "train_seconds": attrs.get("train_seconds"), "run_seconds": attrs.get("run_seconds"),
        "artifact_reused": attrs.get("artifact_reused"), "feasible": feasible(t)
        if t.state.name == "COMPLETE" else False,
        **{f"{TASK_COLUMN}{name}": score for name, score in attrs.get("tasks", {}).items()},
        "status": attrs.get("status") or attrs.get("rejected") or attrs.get("failure") or "",
        "settings": json.dumps(attrs.get("settings") or settings_from_params(
            t.params, t.params.get("strategy", ""))),
    }


def _macro(ppls: dict | None) -> float | None:
    """The macro perplexity over domains (None when any domain has none)."""
    if not ppls or any(v is None for v in ppls.values()):
        return None
    return macro_perplexity(ppls.values())


def finish(study, spec, inputs, out_dir: Path, checks, retried, search_seconds) -> PlanResult:
    """Pick the best feasible trial, evaluate it on test, export it, write the reports."""
    import pandas as pd

    trials = study.get_trials(deepcopy=False)
    frame = pd.DataFrame([trial_row(t) for t in trials])
    write_text(out_dir / "trials.csv", frame.to_csv(index=False))
    finished = completed(study)
    results = [{"trial": t.number, "size": t.params.get("size"), **row}
               for t in finished for row in t.user_attrs.get("results", [])]
    if results:  # the finished trials as a results table: `specplan forecast --results OUT`
        write_table(out_dir / RESULTS_CSV, pd.DataFrame(results))
    # Trials a resumed study finished before specplan recorded their rows.
    rowless = sum(1 for t in finished if "results" not in t.user_attrs)
    done = [t for t in finished if feasible(t)]
    if not done:
        raise no_feasible_trial(study, finished, spec, out_dir)
    best, runner_up = choose(done, spec.objective)
    pareto = []
    if spec.frontier:
        pareto = [t.number for t in study.best_trials if feasible(t)]
    name = best.params["strategy"]
    objective = Objective(spec, inputs, Path(spec.cache_dir))
    ws = objective.workspace(best.params["size"])
    started = time.perf_counter()
    final = run_strategy(name, best.user_attrs["settings"], ws, inputs.domains,
                         out_dir=out_dir / "model", evaluate_test=True,
                         tasks=task_halves(spec, plan_tasks(spec, inputs), "report"))
    speed = measure_chosen(final, ws)
    final_seconds = time.perf_counter() - started
    budgets = spec.budgets()
    plan_doc = PlanDoc(
        study=study.study_name,
        strategy=name,
        size=best.params["size"],
        settings=best.user_attrs["settings"],
        trial=best.number,
        budgets=budgets_doc(budgets),
        estimated_cost=best.user_attrs["estimate"],
        measured_cost={
            "generic_flops": best.user_attrs["generic_flops"],
            "spec_flops_per_domain": best.user_attrs["spec_flops"],
            "total_flops_for_n_domains": best.user_attrs["total_flops"],
            "final_run": {d.domain: d.ledger.to_dict()["totals"] for d in final.domains},
        },
        perplexity={
            "validation_macro": best.user_attrs["macro_ppl"],
            "validation": best.user_attrs["ppl"],
            "before_fine_tuning": best.user_attrs["ppl_before"],
            "test": {d.domain: d.ppl_test for d in final.domains},
            "test_macro": macro_perplexity(d.ppl_test for d in final.domains),
        },
        why=why_text(best, runner_up, budgets.domains_count, spec.ranked_task, spec.objective),
        runner_up=runner_up and {"strategy": runner_up.params["strategy"],
                                 "trial": runner_up.number,
                                 "validation_macro": runner_up.user_attrs["macro_ppl"],
                                 "tasks": runner_up.user_attrs.get("tasks", {}),
                                 "total_flops": runner_up.user_attrs["total_flops"]},
        reference_guidance=guidance_doc(budgets, ws, name),
        ledger=final.ledger().totals(),
        inference_speed=speed,
        pareto_trials=pareto,
        model_dirs={d.domain: d.model_dir for d in final.domains},
        feasibility=checks,
        retried_trials=retried,
        planning=planning_cost(trials, budgets, final),
        search_seconds=search_seconds,
        final_run_seconds=final_seconds,
        trials=len(trials),
        trials_without_results_rows=rowless,
        tasks=tasks_doc(final, spec, best.user_attrs.get("tasks", {})),
        objective=objective_doc(spec),
    ).to_dict()
    write_json(out_dir / "plan.json", plan_doc)
    return PlanResult(out_dir, plan_doc, summary_text(frame, plan_doc))


def choose(done: list, objective: str) -> tuple:
    """The best feasible finished trial by ``objective``, and the best of another strategy
    (None when every trial is of one strategy)."""
    best = min(done, key=lambda t: rank_key(t, objective))
    runner_up = min((t for t in done if t.params["strategy"] != best.params["strategy"]),
                    key=lambda t: rank_key(t, objective), default=None)
    return best, runner_up


def no_feasible_trial(study, finished, spec: PlanSpec, out_dir: Path) -> SpecplanError:
    """Why no trial can be chosen: a task minimum no trial reached (with the best score seen),
    or budgets the measured runs broke."""
    for name, least in spec.min_task.items():
        scores = [t.user_attrs.get("tasks", {}).get(name) for t in finished]
        scores = [s for s in scores if s is not None]
        if scores and max(scores) < least:
            return SpecplanError(
                f"--min-task {name}={least:g}: no trial reached it (the best reached "
                f"{max(scores):.3f} on the task's selection half, {len(scores)} trial(s)); "
                f"lower it, or raise the budgets or --trials")
    return SpecplanError(f"no feasible trial finished in study {study.study_name}; see "
                         f"{out_dir / 'trials.csv'} for why, and raise the budgets or --trials")


def tasks_doc(report, spec: PlanSpec, selection: dict | None) -> dict:
    """Each task's scores on the chosen model of its domain. A task that chose was scored on
    its report half; an exhaustive plan adds the chosen trial's score on the selection half
    (``selection_accuracy``, what ranked the trials); an early plan (``selection`` None) adds
    the forecast instead."""
    out = {}
    for d in report.domains:
        for name, scores in d.tasks.items():
            out[name] = {"domain": d.domain, **scores}
            if name in spec.chooses_by_task:
                out[name]["half"] = "report"
                if selection is not None:
                    out[name]["selection_accuracy"] = selection.get(name)
    return out


def objective_doc(spec: PlanSpec) -> dict:
    """How trials were ranked and which task minimums they had to reach."""
    doc = {"rank_by": spec.objective, "min_task": dict(spec.min_task)}
    weight = mix_weight(spec.objective)
    if weight is not None:
        doc["mix"] = {"task": spec.ranked_task, "minimises": objective_label(spec.objective),
                      "point_worth_ppl_percent": float(spec.objective.rpartition(":")[2]),
                      "nats_per_accuracy": weight}
    return doc


def project_flops(budgets) -> float:
    """The project's total cost for N domains (the study's Eq. 1)."""
    return float(total_cost(budgets.pretrain_flops, budgets.spec_flops, budgets.domains_count))


def spent_flops(report) -> float:
    """What a run spent: its ledger, less what a cache supplied (already spent elsewhere)."""
    return sum(e.flops for e in report.ledger().entries if e.device != "cache")


def guidance_doc(budgets, ws, name: str) -> dict:
    """The reference study's pick for these budgets, and whether ``name`` agrees with it."""
    large = ws.shape(ws.large)
    guided = reference_guidance(budgets, large.params_total, large.inference_flops_per_token())
    return {"strategy": guided, "reason": GUIDANCE[guided],
            "agrees": family_of(name) == family_of(guided)}


def budgets_doc(budgets) -> dict:
    """The budgets as ``plan.json`` writes them."""
    return {"pretrain_flops": budgets.pretrain_flops, "spec_flops": budgets.spec_flops,
            "inference": budgets.inference.describe(), "domain_tokens": budgets.domain_tokens,
            "domains_count": budgets.domains_count}


def planning_cost(trials, budgets, final) -> dict:
    """What choosing cost, against what the project costs (generic + N x specialization).

    ``search_flops`` is the compute the trials spent (pruned ones included; what a cache
    supplied is not spent again), ``final_run_flops`` what building the choice spent on top.
    Trials of a study older than this record (no ``spent_flops``) are counted in
    ``trials_uncounted``, so the share is never silently low.
    """
    counted = [t.user_attrs["spent_flops"] for t in trials if "spent_flops" in t.user_attrs]
    project = project_flops(budgets)
    search = float(sum(counted))
    return {"mode": "exhaustive", "search_flops": search, "final_run_flops": spent_flops(final),
            "project_flops": project, "domains_count": budgets.domains_count,
            "search_share_of_project": search / project if project else math.nan,
            "trials_counted": len(counted), "trials_uncounted": len(trials) - len(counted)}


def measure_chosen(report, ws) -> dict:
    """Throughput and latency of the chosen model, charged to the run's inference phase."""

    result = report.domains[0]
    model = load_model(Path(result.model_dir)).to(resolve_device(ws.train.device))
    model.config.use_cache = True
    speed = measure_inference(model, flops_per_token=report.estimate.inference_flops_per_token,
                              ledger=result.ledger)
    return speed.__dict__


def task_lines(plan_doc: dict) -> list[str]:
    """The summary's line per task: the chosen model's score, and how trials were ranked."""
    lines = []
    objective = plan_doc.get("objective", {})
    rank_by = objective.get("rank_by", "ppl")
    if "mix" in objective:
        mix = objective["mix"]
        lines.append(f"ranked by: {mix['minimises']} (one {mix['task']} accuracy point worth "
                     f"{mix['point_worth_ppl_percent']:g}% of perplexity)")
    elif rank_by != "ppl":
        lines.append(f"ranked by: {rank_by} accuracy (ties by perplexity)")
    for name, r in plan_doc.get("tasks", {}).items():
        least = plan_doc.get("objective", {}).get("min_task", {}).get(name)
        required = f", at least {least:g} required" if least is not None else ""
        held = ""
        if "selection_accuracy" in r:
            held = f" on its report half (selection half {r['selection_accuracy']:.3f}{required})"
        elif "forecast" in r:
            lo, hi = r["forecast_interval"]
            held = (f" (forecast {r['forecast']:.3f}, interval [{lo:.3f}, {hi:.3f}]"
                    f"{required})")
            if r.get("half") == "report":
                held = f" on its report half{held}"
        lines.append(f"task {name} ({r['domain']}, {r['items']} items): accuracy "
                     f"{r['accuracy']:.3f}{held}")
    return lines


def why_text(best, runner_up, n_domains: int, task: str | None = None,
             objective: str = "ppl") -> str:
    """Why the choice beat the runner-up: by perplexity, by ``task``'s accuracy when the trials
    were ranked by it, or by the stated mix of the two."""
    b = best.user_attrs
    if runner_up is None:
        return f"{best.params['strategy']} was the only strategy with a feasible finished trial"
    r = runner_up.user_attrs
    if mix_weight(objective) is not None:
        return (f"{best.params['strategy']} scored {objective_label(objective)} = "
                f"{objective_value(b, objective):.3f} against "
                f"{objective_value(r, objective):.3f} for the runner-up "
                f"{runner_up.params['strategy']} (accuracy {b['tasks'][task]:.3f} against "
                f"{r['tasks'][task]:.3f} on the selection half, validation perplexity "
                f"{b['macro_ppl']:.2f} against {r['macro_ppl']:.2f})")
    if task is not None:
        return (f"{best.params['strategy']} reached accuracy {b['tasks'][task]:.3f} on task "
                f"{task} (selection half) against {r['tasks'][task]:.3f} for the runner-up "
                f"{runner_up.params['strategy']} (validation perplexity {b['macro_ppl']:.2f} "
                f"against {r['macro_ppl']:.2f}), at a total cost for {n_domains} domain(s) of "
                f"{b['total_flops']:.3g} FLOPs against {r['total_flops']:.3g}")
    return (f"{best.params['strategy']} reached validation perplexity {b['macro_ppl']:.2f} "
            f"against {r['macro_ppl']:.2f} for the runner-up {runner_up.params['strategy']}, "
            f"at a total cost for {n_domains} domain(s) of {b['total_flops']:.3g} FLOPs against "
            f"{r['total_flops']:.3g}")


def summary_text(frame, plan_doc: dict) -> str:
    """A table per strategy (best feasible trial of each), the choice marked with '*'."""

    lines = []
    ok = frame[frame["state"] == "COMPLETE"]
    objective = plan_doc["objective"]["rank_by"]
    ranked = ranked_task(objective)

    def rank(ppl: float, accuracy: float | None) -> tuple[float, float]:
        """The objective (as the study ranked trials; unscored last), then perplexity."""
        value = objective_value({"macro_ppl": ppl, "tasks": {ranked: accuracy}}, objective)
        return (math.inf if value != value else value), ppl

    tasks = task_columns(frame)
    rows = []
    for name, group in ok.groupby("strategy"):
        good = group[group["feasible"]]
        pool = good if len(good) else group
        pick = pool.loc[min(pool.index, key=lambda i: rank(
            pool.at[i, "macro_ppl"], pool.at[i, f"{TASK_COLUMN}{ranked}"] if ranked else None))]
        rows.append({
            " ": "*" if name == plan_doc["strategy"] else "",
            "strategy": name, "trials": int((frame["strategy"] == name).sum()),
            "ppl before FT": pick["macro_ppl_before"], "val ppl": pick["macro_ppl"],
            "generic FLOPs": pick["generic_flops"],
            "spec FLOPs": pick["spec_flops"], "total FLOPs": pick["total_flops"],
            **{f"{c[len(TASK_COLUMN):]} acc": pick[c] for c in tasks},
            "feasible": bool(pick["feasible"]), "note": pick["status"] if pick["status"] != "ok"
            else "",
        })
    rows.sort(key=lambda r: rank(r["val ppl"], r[f"{ranked} acc"] if ranked else None))
    untried = sorted(set(frame["strategy"].dropna()) - set(ok["strategy"]))
    for name in untried:
        reason = frame[frame["strategy"] == name]["status"].iloc[0]
        rows.append({" ": "", "strategy": name, "trials": int((frame["strategy"] == name).sum()),
                     "ppl before FT": float("nan"), "val ppl": float("nan"),
                     "generic FLOPs": float("nan"), "spec FLOPs": float("nan"),
                     "total FLOPs": float("nan"),
                     **{f"{c[len(TASK_COLUMN):]} acc": float("nan") for c in tasks},
                     "feasible": False,
                     "note": reason[:60]})
    p = plan_doc
    lines.append(table(rows))
    lines.append("")
    lines.append(f"chosen: {p['strategy']} (size {p['size']}, trial {p['trial']}): test perplexity "
                 f"{p['perplexity']['test_macro']:.2f} (macro over {len(p['perplexity']['test'])} "
                 f"domain(s))")
    lines.append(f"why: {p['why']}")
    c = p["planning"]
    uncounted = (f" ({c['trials_uncounted']} trial(s) of an older study not counted)"
                 if c["trials_uncounted"] else "")
    lines.append(f"planning cost: the search spent {c['search_flops']:.3g} FLOPs in "
                 f"{c['trials_counted']} trial(s), {c['search_share_of_project']:.1f}x the "
                 f"project's {c['project_flops']:.3g} (pretraining + {c['domains_count']} x "
                 f"specialization){uncounted}; building the choice spent "
                 f"{c['final_run_flops']:.3g} more")
    g = p["reference_guidance"]
    lines.append(f"reference study's guidance: {g['strategy']} ({g['reason']}); "
                 f"{'this plan agrees' if g['agrees'] else 'this plan differs at this scale'}")
    lines.append(f"model: {', '.join(p['model_dirs'].values())}")
    lines.extend(task_lines(p))
    if p.get("trials_without_results_rows"):
        lines.append(f"results.csv leaves out {p['trials_without_results_rows']} trial(s) "
                     "finished by an older specplan (no per-domain rows were recorded)")
    speed = p["inference_speed"]
    lines.append(f"inference: {speed['tokens_per_second']:.0f} tokens/s (batch "
                 f"{speed['batch_size']}), {speed['latency_ms_per_token']:.2f} ms/token (batch 1)")
    lines.append(f"cost ledger of the chosen plan's final run (generic shared; specialization "
                 f"summed over its {len(p['model_dirs'])} domain(s)):")
    lines.append(table([{"phase": phase, **values} for phase, values in p["ledger"].items()]))
    return "\n".join(lines)
