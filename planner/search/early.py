"""``plan_early()``: decide before spending. A planning budget buys a ladder of proxy runs, laws
forecast every strategy at the target budgets, and only the pick is built at full price.

The exhaustive search (:func:`planner.search.plan.plan`) runs every strategy at the project's
budgets, which on the demo spends several times the project to choose how to spend it once.
The reference study's advice is to plan early (arXiv 2402.01093 v2, Sec. 6): this module follows
it with the pieces the forecast already has:

1. the calibration ladder (:func:`planner.forecast.calibrate.calibrate`) on the user's data,
   within ``planning_flops``; its runs are kept in the cache, keyed by the plan, so an
   interrupted plan resumes its ladder and never pays a finished proxy run twice;
2. a law per strategy, forecast at the target budgets with prediction intervals;
3. the choice (the lowest forecast within the inference budget), the probability that it is
   the best (:func:`chance_best`), and where the pick would flip (:func:`flip_budgets`);
4. one run of the choice at the full budget, its measured validation and test perplexity
   written beside the forecast in ``plan.json``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
import numpy as np

from planner.core.errors import Interrupted, SpecplanError
from planner.core.io import content_hash, untouched_on_error, writable_folder, write_json
from planner.core.text import table
from planner.engine.evaluate import macro_perplexity
from planner.engine.models import SIZES, model_shape
from planner.engine.tracking import tracked
from planner.forecast.calibrate import (
    CALIBRATION_STRATEGIES,
    calibrate,
    ladder_cost,
    ladder_minimums,
)
from planner.forecast.forecast import forecast
from planner.forecast.task_curve import (
    fit_task_curve,
    forecast_mix,
    forecast_task,
    log_ppl_draws,
)
from planner.run.config import make_workspace
from planner.run.results import read_results
from planner.run.runner import run_strategy
from planner.search.plan import (
    PlanResult,
    budgets_doc,
    feasibility_report,
    guidance_doc,
    measure_chosen,
    no_strategy_fits,
    objective_doc,
    project_flops,
    spent_flops,
    task_lines,
    tasks_doc,
)
from planner.search.plan import plan as exhaustive_plan
from planner.search.study import (
    PlanSpec,
    load_plan_inputs,
    mix_weight,
    objective_label,
    plan_tasks,
    task_halves,
)
from strategies import get_strategy

log = logging.getLogger("specplan")

#: The planning budget when none is given: this share of the project's total cost for N
#: domains (pretraining + N x specialization). See the README for how it was measured.
DEFAULT_PLANNING_SHARE = 0.5

_FLIP_FACTORS = (0.25, 0.5, 2.0, 4.0)  # budget multiples scanned for a change of pick


@tracked
def plan_early(spec: PlanSpec, out_dir: str | Path, *, planning_flops: float | None = None,
               inputs=None, max_extrapolation: float = 10.0, n_boot: int = 30,
               hours=None, early_strategies: list[str] | None = None,
               exhaustive_options: dict | None = None) -> PlanResult:
    """Calibrate within ``planning_flops``, forecast, build only the choice; write plan.json.

    Which strategies are calibrated: those whose cheapest fittable ladder
    (:func:`planner.forecast.calibrate.ladder_minimums`) fits in the planning budget, cheapest
    first; the others are listed in ``plan.json`` with what they would need. Without a given
    ``planning_flops``, when fewer than two strategies fit (the budgets leave too little room
    below them for a ladder, as on the CPU demo), the plan is exhaustive
    (:func:`planner.search.plan.plan` with ``exhaustive_options``) and says why; so is a plan
    ``spec.tasks`` are scored by every proxy run and on the chosen model. A plan that chooses
    by a task (``spec.objective``, ``spec.min_task``) maps each strategy's perplexity forecast to
    the task through a line fitted on the proxy runs (:func:`forecast_tasks`), on the task's
    selection half; the chosen model is scored on its report half.

    Args:
        spec: the plan (``trials`` is used only by the exhaustive fallback).
        early_strategies: the strategies to calibrate, when fewer than ``spec.strategies`` (the
            CLI's default: the study's main comparison; the fallback searches them all).
        planning_flops: what the proxy runs may cost in all (default
            :data:`DEFAULT_PLANNING_SHARE` of :func:`project_flops`).
        max_extrapolation, n_boot, hours: the forecast's, see :func:`forecast`.

    Raises:
        SpecplanError: a given planning budget that cannot pay one strategy's ladder (with the
            minimum), one at least the project's cost (``--exhaustive`` is cheaper), or a
            forecast that refuses; proxy runs that finished are kept for the next try.
    """
    budgets = spec.budgets()
    project = project_flops(budgets)
    planning = planning_flops if planning_flops is not None else DEFAULT_PLANNING_SHARE * project
    if planning >= project:
        raise SpecplanError(
            f"--planning-budget {planning:.3g} FLOPs: at least the project's own cost "
            f"({project:.3g} for {budgets.domains_count} domain(s)); give a smaller one, or use "
            "--exhaustive to run every strategy at the full budget")
    out_dir = writable_folder(out_dir)
    cache_dir = Path(spec.cache_dir)
    fallback = None
    with untouched_on_error(out_dir):
        inputs = inputs or load_plan_inputs(spec)
        tasks = plan_tasks(spec, inputs)  # a bad task file fails before any compute
        log.info(f"checking the budgets against {len(spec.strategies)} strategies")
        checks = feasibility_report(spec, inputs, cache_dir)
        if budgets.domain_tokens is None:  # the law needs the domain size: the data's own
            sizes = [d.train.tokens for d in inputs.domains.values()]
            budgets = dataclasses.replace(budgets, domain_tokens=round(sum(sizes) / len(sizes)))
        feasible = [row["strategy"] for row in checks if row["ok"]
                    and row["strategy"] in (early_strategies or spec.strategies)]
        if not feasible:
            raise no_strategy_fits(checks)
        minimums = ladder_minimums(inputs, budgets, feasible, cache_dir=cache_dir, run=spec.run,
                                   max_extrapolation=max_extrapolation)
        names, left = [], planning
        for name in sorted(feasible, key=minimums.get):
            if minimums[name] <= left:
                names.append(name)
                left -= minimums[name]
        too_dear = {name: f"its ladder needs about {minimums[name]:.3g} FLOPs"
                    if math.isfinite(minimums[name]) else "no room for a ladder below the "
                    "budgets" for name in feasible if name not in names}
        wanted = "two strategies" if len(feasible) > 1 else feasible[0]
        if len(names) < min(2, len(feasible)):
            need = "; ".join(f"{k}: {v}" for k, v in too_dear.items())
            if planning_flops is not None:
                raise SpecplanError(
                    f"--planning-budget {planning:.3g} FLOPs cannot calibrate {wanted} ({need}); "
                    "raise --planning-budget, or use --exhaustive")
            fallback = (f"planning early cannot calibrate {wanted} within "
                        f"{planning:.3g} FLOPs ({DEFAULT_PLANNING_SHARE:.0%} of the project): "
                        f"{need}")
    if fallback:  # outside the clean-up: an interrupted search keeps its journal
        return _exhaustive(spec, out_dir, inputs, checks, exhaustive_options or {},
                           fallback)
    with untouched_on_error(out_dir):
        ladder_csv = cache_dir / "plans" / f"ladder-{ladder_key(spec)}.csv"
        log.info(f"planning early: proxy runs within {planning:.3g} FLOPs "
                 f"({planning / project:.0%} of the project's {project:.3g})")
        started = time.perf_counter()
        calibration = calibrate(  # an interrupt keeps the finished proxy runs, and says so
            inputs, budgets, planning_flops=planning, results_path=ladder_csv,
            cache_dir=cache_dir, strategies=names, run=spec.run,
            max_extrapolation=max_extrapolation, n_boot=n_boot, hours=hours, log=log.info,
            tasks=task_halves(spec, tasks, "selection"))
        search_seconds = time.perf_counter() - started
        result = calibration.forecast
        proxy_runs = read_results(ladder_csv)

        def pick_of(again):
            return pick(spec, again, forecast_tasks(spec, tasks, proxy_runs, again), ladder_csv)

        task_forecasts = forecast_tasks(spec, tasks, proxy_runs, result)
        name, why, odds = pick(spec, result, task_forecasts, ladder_csv)
        chosen = result.get(name)
        flips = flip_budgets(proxy_runs, budgets, name, pick_of,
                             max_extrapolation=max_extrapolation, hours=hours,
                             seed=spec.run.seed)
    strategy = get_strategy(name)
    size = build_size(chosen.params_inference, budgets, spec, len(inputs.tokenizer),
                      inputs.generic.train.seq_len, strategy.deploys_large)
    log.info(f"chose {name} (forecast {chosen.ppl:.3g}, P(best) {odds.get(name, 1.0):.0%}): "
             f"building it at the full budget")
    report_tasks = task_halves(spec, tasks, "report")
    if strategy.deploys_large:  # the forecast's size is the large model's
        ws = make_workspace(inputs, budgets, dataclasses.replace(spec.run, large=size),
                            cache_dir, small=spec.sizes[0])
    else:
        ws = make_workspace(inputs, budgets, spec.run, cache_dir, small=size)
    started = time.perf_counter()
    try:
        with untouched_on_error(out_dir):
            final = run_strategy(name, strategy.settings(), ws, inputs.domains,
                                 out_dir=out_dir / "model", evaluate_test=True,
                                 tasks=report_tasks)
            speed = measure_chosen(final, ws)
            final_seconds = time.perf_counter() - started
            plan_doc = _plan_doc(spec, budgets, ws, name, size, calibration, odds, why, flips,
                                 final, speed, checks, proxy_runs, planning, search_seconds,
                                 final_seconds, task_forecasts)
            plan_doc["planning"]["skipped"].update(too_dear)
            shutil.copyfile(ladder_csv, out_dir / "ladder.csv")
            write_json(out_dir / "plan.json", plan_doc)
    except KeyboardInterrupt:
        raise Interrupted(f"the proxy runs are kept in {ladder_csv}; re-run the same command to "
                          f"build the chosen model ({name})") from None
    return PlanResult(out_dir, plan_doc, summary_text(plan_doc), calibration.forecast,
                      proxy_runs)


def _exhaustive(spec, out_dir, inputs, checks, options: dict, why: str) -> PlanResult:
    """The exhaustive plan, when planning early cannot work; ``plan.json`` says why."""
    log.info(f"{why}: searching exhaustively instead (every strategy at the full budgets)")
    result = exhaustive_plan(spec, out_dir, inputs=inputs, checks=checks,
                             **options)
    result.plan["planning"].update(mode="exhaustive", early_refused=why)
    write_json(Path(out_dir) / "plan.json", result.plan)
    return PlanResult(result.out_dir, result.plan, f"{result.summary}\nnot planned early: {why}")


def ladder_key(spec: PlanSpec) -> str:
    """The plan's identity for its ladder: what its proxy runs measure. Not the planning budget
    (a larger one extends the same ladder), nor how it runs, nor the objective and task
    minimums, which change only the choice; but the tasks they name, which the runs score on
    their selection half."""
    if not spec.chooses_by_task:
        return content_hash(spec.study_name())
    measured = dataclasses.replace(spec, objective="ppl", min_task={})
    return content_hash(f"{measured.study_name()} halved:{sorted(spec.chooses_by_task)}")


def default_strategies(names: list[str]) -> list[str]:
    """The strategies an early plan calibrates when the user names none: the study's main
    comparison (each needs a ladder of its own; the others are for ``--exhaustive`` or an
    explicit ``--strategies``)."""
    return [name for name in names if name in CALIBRATION_STRATEGIES]


def chance_best(items, quantiles=(0.1, 0.9), draws: int = 20_000, seed: int = 0
                ) -> dict[str, float]:
    """The probability that each forecast strategy has the lowest perplexity, from draws of
    each forecast (:func:`planner.forecast.task_curve.log_ppl_draws`). Strategies over the
    inference budget, or without a forecast, are left out."""
    pool, draw = log_ppl_draws(items, quantiles, draws, seed)
    if not pool:
        return {}
    wins = np.bincount(draw.argmin(axis=1), minlength=len(pool)) / draws
    return {f.strategy: float(w) for f, w in zip(pool, wins)}


def flip_budgets(table, budgets, pick: str, pick_of, *, max_extrapolation: float, hours,
                 seed: int) -> list[dict]:
    """The pick (``pick_of(forecast) -> (name, why, odds)``) at multiples of each budget
    (pretraining, specialization), within the forecast's extrapolation limit: where it
    changes, a change of budget changes the plan."""
    names = sorted(set(table["strategy"]))
    out = []
    for axis, field_name in (("pretrain", "pretrain_flops"), ("spec", "spec_flops")):
        if getattr(budgets, field_name) <= 0:
            continue
        for factor in _FLIP_FACTORS:
            moved = dataclasses.replace(budgets, **{field_name: getattr(budgets, field_name)
                                                    * factor})
            try:
                again = forecast(table, moved, strategies=names,
                                 max_extrapolation=max_extrapolation, n_boot=10, hours=hours,
                                 seed=seed)
                moved_pick = pick_of(again)[0]
            except SpecplanError:
                continue  # beyond what the proxy runs can say, or nothing admissible there
            out.append({"budget": axis, "factor": factor, "flops": getattr(moved, field_name),
                        "pick": moved_pick, "flips": moved_pick != pick})
    return out


def forecast_tasks(spec: PlanSpec, tasks: dict, proxy_runs, result) -> dict:
    """Each task's forecast accuracy per strategy (:func:`forecast_task`), read through a line
    fitted on the proxy runs. A task that chooses must have one (else the error says what it
    needs); another task is forecast where its line can be fitted."""
    out = {}
    for name in tasks:
        try:
            curve = fit_task_curve(proxy_runs, name)
        except SpecplanError:
            if name in spec.chooses_by_task:
                raise
            continue
        out[name] = forecast_task(curve, result.strategies, result.quantiles, seed=spec.run.seed)
    return out


def pick(spec: PlanSpec, result, task_forecasts: dict, ladder_csv) -> tuple[str, str, dict]:
    """The choice, why, and each strategy's probability of being the best by the objective.

    By perplexity: the forecast's recommendation. With task minimums: only strategies whose
    median forecast accuracy reaches every minimum. By a task: the highest median forecast
    accuracy (ties to the lower perplexity). By a mix: the lowest median forecast of
    ``ln(ppl) - weight x accuracy``.

    Raises:
        SpecplanError: no strategy can be chosen (the proxy runs are kept for a re-run).
    """
    if not spec.chooses_by_task:
        if result.recommendation is None:
            raise SpecplanError(f"no strategy can be chosen: {result.reason} (the proxy runs "
                                f"are kept in {ladder_csv}; re-run to reuse them)")
        return (result.recommendation, result.reason,
                chance_best(result.strategies, result.quantiles, seed=spec.run.seed))
    pool, _ = log_ppl_draws(result.strategies, result.quantiles, draws=1)
    admitted = pool
    for task, least in spec.min_task.items():
        accuracy = task_forecasts[task].accuracy
        reached = [f for f in admitted if accuracy[f.strategy] >= least]
        if not reached:
            best = max(pool, key=lambda f: accuracy[f.strategy], default=None)
            seen = (f" (the best forecast is {best.strategy} at {accuracy[best.strategy]:.3f})"
                    if best else "")
            raise SpecplanError(
                f"--min-task {task}={least:g}: no strategy's forecast reaches it{seen}; lower "
                "it, raise the budgets, or plan with --exhaustive to measure instead of "
                f"forecast (the proxy runs are kept in {ladder_csv})")
        admitted = reached
    minimums = (" whose forecast reaches " + ", ".join(
        f"{t} >= {v:g}" for t, v in spec.min_task.items())) if spec.min_task else ""
    task = spec.ranked_task
    if task is None:
        best = min(admitted, key=lambda f: f.ppl)
        return (best.strategy, f"the lowest forecast perplexity ({best.ppl:.3g}) of "
                f"{len(admitted)} strateg{'y' if len(admitted) == 1 else 'ies'}{minimums}",
                chance_best(admitted, result.quantiles, seed=spec.run.seed))
    forecast_of = task_forecasts[task]
    weight = mix_weight(spec.objective)
    if weight is not None:
        mix = forecast_mix(forecast_of.curve, admitted, weight, result.quantiles,
                           seed=spec.run.seed)
        best = min(admitted, key=lambda f: mix[f.strategy][0])
        value, (lo, hi), _ = mix[best.strategy]
        return (best.strategy, f"the lowest forecast {objective_label(spec.objective)} "
                f"({value:.3f}, {_span(result.quantiles)} interval [{lo:.3f}, {hi:.3f}]) of "
                f"{len(admitted)} strateg{'y' if len(admitted) == 1 else 'ies'}{minimums}",
                {name: p for name, (_, _, p) in mix.items()})
    best = max(admitted, key=lambda f: (forecast_of.accuracy[f.strategy], -f.ppl))
    lo, hi = forecast_of.interval[best.strategy]
    return (best.strategy, f"the highest forecast {task} accuracy "
            f"({forecast_of.accuracy[best.strategy]:.3f}, {_span(result.quantiles)} interval "
            f"[{lo:.3f}, {hi:.3f}]) of {len(admitted)} "
            f"strateg{'y' if len(admitted) == 1 else 'ies'}{minimums}", forecast_of.p_best)


def _span(quantiles) -> str:
    return f"{quantiles[1] - quantiles[0]:.0%}"


def build_size(params: float | None, budgets, spec: PlanSpec, vocab_size: int, seq_len: int,
               deploys_large: bool) -> str:
    """The preset nearest (in log parameters) to the forecast's model size, within the
    inference budget unless the strategy deploys the large model."""
    if params is None or not params > 0:
        return spec.sizes[0]
    shapes = {name: model_shape(name, vocab_size=vocab_size, seq_len=seq_len) for name in SIZES}
    pool = {name: s for name, s in shapes.items() if deploys_large or budgets.inference.admits(
        flops_per_token=s.inference_flops_per_token(), params=s.params_total)}
    if not pool:
        return spec.sizes[0]
    return min(pool, key=lambda n: abs(math.log(pool[n].params_total / params)))


def _plan_doc(spec, budgets, ws, name, size, calibration, odds, why, flips, final, speed,
              checks, table, planning, search_seconds, final_seconds, task_forecasts) -> dict:
    result = calibration.forecast
    chosen = result.get(name)
    ranked = task_forecasts.get(spec.ranked_task)
    pool = [f for f in result.strategies if f.strategy in odds]
    weight = mix_weight(spec.objective)
    if ranked and weight is not None:  # pick()'s strategies and seed: its very draws
        mix = forecast_mix(ranked.curve, pool, weight, result.quantiles, seed=spec.run.seed)
        pool.sort(key=lambda f: mix[f.strategy][0])
    else:
        pool.sort(key=(lambda f: -ranked.accuracy[f.strategy]) if ranked else (lambda f: f.ppl))
    runner_up = next((f for f in pool if f.strategy != name), None)
    tasks = tasks_doc(final, spec, None)
    for task, forecast_of in task_forecasts.items():  # the measured score beside its forecast
        if name in forecast_of.accuracy:
            tasks[task].update(forecast=forecast_of.accuracy[name],
                               forecast_interval=list(forecast_of.interval[name]))
    ladder_flops = ladder_cost(table)
    project = project_flops(budgets)
    validation = {d.domain: d.ppl_after for d in final.domains}
    return {
        "mode": "early",
        "strategy": name,
        "size": size,
        "settings": final.settings.to_dict(),
        "budgets": budgets_doc(budgets),
        "estimated_cost": final.estimate.to_dict(),
        "measured_cost": {
            "final_run": {d.domain: d.ledger.to_dict()["totals"] for d in final.domains}},
        "perplexity": {
            "forecast": chosen.ppl, "forecast_interval": [chosen.ppl_lo, chosen.ppl_hi],
            "validation": validation,
            "validation_macro": macro_perplexity(validation.values()),
            "test": {d.domain: d.ppl_test for d in final.domains},
            "test_macro": macro_perplexity(d.ppl_test for d in final.domains),
        },
        "p_best": odds,
        "why": why,
        "runner_up": runner_up and {
            "strategy": runner_up.strategy, "forecast": runner_up.ppl,
            "forecast_gap": runner_up.ppl / chosen.ppl - 1.0,
            **({"forecast_accuracy": ranked.accuracy[runner_up.strategy]} if ranked else {})},
        "flips": flips,
        "forecast": result.to_dict(),
        "task_forecast": {task: f.to_dict() for task, f in task_forecasts.items()},
        "reference_guidance": guidance_doc(budgets, ws, name),
        "ledger": final.ledger().totals(),
        "inference_speed": speed,
        "model_dirs": {d.domain: d.model_dir for d in final.domains},
        "feasibility": checks,
        "planning": {
            "mode": "early", "planning_budget_flops": planning,
            "search_flops": ladder_flops, "proxy_runs": int(table["run_id"].nunique()),
            "final_run_flops": spent_flops(final), "project_flops": project,
            "domains_count": budgets.domains_count,
            "search_share_of_project": ladder_flops / project,
            "skipped": calibration.skipped,
        },
        "search_seconds": search_seconds,
        "final_run_seconds": final_seconds,
        "tasks": tasks,
        "objective": objective_doc(spec),
    }


def summary_text(doc: dict) -> str:
    """The forecast per strategy, the choice marked, what planning cost, what would flip it."""
    forecast_doc = doc["forecast"]
    rows = []
    for item in forecast_doc["strategies"]:
        by_task = {}
        for task, f in doc["task_forecast"].items():
            mine = f["strategies"].get(item["strategy"])
            by_task[f"{task} acc"] = mine and mine["accuracy"]
            by_task[f"{task} 80%"] = mine and "[{:.3f}, {:.3f}]".format(*mine["interval"])
        rows.append({" ": "*" if item["strategy"] == doc["strategy"] else "",
                     "strategy": item["strategy"],
                     "forecast ppl": item["ppl"], "80% interval": _interval(item), **by_task,
                     "P(best)": (f"{doc['p_best'][item['strategy']]:.0%}"
                                 if item["strategy"] in doc["p_best"] else ""),
                     "total FLOPs": item["total_flops"],
                     "note": "" if item["within_inference"] is not False
                     else "over the inference budget"})
    rows.sort(key=lambda r: (r["forecast ppl"] is None, r["forecast ppl"] or 0.0))
    p, c = doc["perplexity"], doc["planning"]
    lines = [table(rows), ""]
    lines.append(f"chosen: {doc['strategy']} (size {doc['size']}): forecast "
                 f"{p['forecast']:.2f}, measured validation {p['validation_macro']:.2f}, test "
                 f"{p['test_macro']:.2f} (macro over {len(p['test'])} domain(s))")
    lines.append(f"why: {doc['why']}")
    if doc["runner_up"]:
        r = doc["runner_up"]
        accuracy = (f", forecast accuracy {r['forecast_accuracy']:.3f}"
                    if "forecast_accuracy" in r else "")
        lines.append(f"runner-up: {r['strategy']}, forecast {r['forecast']:.2f} "
                     f"({r['forecast_gap']:+.1%}){accuracy}")
    for f in doc["task_forecast"].values():
        lines.append(f"task curve: {f['curve']['text']}")
    flips = [f for f in doc["flips"] if f["flips"]]
    scanned = sorted({f"{f['budget']} x{f['factor']:g}" for f in doc["flips"]})
    if flips:
        lines.append("the pick flips at: " + "; ".join(
            f"{f['budget']} budget x{f['factor']:g} ({f['flops']:.3g} FLOPs) -> {f['pick']}"
            for f in flips))
    elif scanned:
        lines.append(f"the pick holds at {', '.join(scanned)} of the budgets")
    lines.append(f"planning cost: {c['proxy_runs']} proxy run(s) spent {c['search_flops']:.3g} "
                 f"FLOPs, {c['search_share_of_project']:.0%} of the project's "
                 f"{c['project_flops']:.3g} (pretraining + {c['domains_count']} x "
                 f"specialization); building the choice spent {c['final_run_flops']:.3g}")
    for strategy, why in c["skipped"].items():
        lines.append(f"not forecast: {strategy}: {why}")
    g = doc["reference_guidance"]
    lines.append(f"reference study: {g['strategy']} ({g['reason']}); "
                 + ("this plan agrees" if g["agrees"] else "this plan differs"))
    lines.extend(task_lines(doc))
    return "\n".join(lines)


def _interval(item: dict) -> str:
    lo, hi = item.get("ppl_lo"), item.get("ppl_hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"[{lo:.2f}, {hi:.2f}]"
