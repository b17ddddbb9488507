"""``specplan plan | worker``: search, choose and build; join a plan's study."""
from __future__ import annotations

import click

from planner.cli._shared import (
    Ctx,
    args_from,
    budget_options,
    data_options,
    options_from,
    parse_budgets,
    parse_tasks,
)
from planner.core.args import DataArgs, RunArgs
from planner.core.errors import SpecplanError


@click.command()
@data_options
@budget_options
@click.option("--domains-count", type=int, default=None,
              help="N, the domains sharing the pretraining (default: the number of --domain "
                   "given): prices the total cost generic + N x specialization and sets the "
                   "reference guidance; with separate budgets it does not change what fits.")
@click.option("--strategies", default=None,
              help="Comma-separated strategies to search (default: all registered; "
                   "`specplan strategies` lists them).")
@click.option("--exhaustive", is_flag=True,
              help="Run every strategy at the full budgets (Optuna trials) instead of planning "
                   "early from proxy runs; implied by --trials, --frontier and --base.")
@click.option("--planning-budget", default=None,
              help="Early plan: what the proxy runs may cost in all, FLOPs or device time "
                   "(default: half the project's total cost, pretraining + N x "
                   "specialization).")
@click.option("--trials", type=int, default=None, help="Finished trials of the exhaustive "
              "search, at least 1 (default: one per strategy, plus two).")
@click.option("--frontier", is_flag=True,
              help="Two objectives (perplexity, total cost): Pareto set.")
@click.option("--storage", default=None, help="Optuna storage URL (default: OUT/study.journal); "
              "postgresql://... lets workers on several machines share the study.")
@click.option("--gpus", default="all", show_default=True, help="all, none, or ids like 0,1.")
@click.option("--gpus-per-trial", type=int, default=1, show_default=True)
@click.option("--sizes", default=None, help="Deployed sizes to search: presets, config "
              "folders or specs, e.g. tiny,small or 'small;d=96,layers=4,heads=3,ff=384' "
              "(';' between sizes when a spec has commas; default: the largest ladder size "
              "within the inference budget).")
@options_from(RunArgs)
@click.option("--pruner", default="asha", show_default=True, help="asha, hyperband or none.")
@click.option("--task", "tasks", multiple=True, metavar="DOMAIN=PATH",
              help="A task file of a --domain, scored in every trial and on the chosen model "
                   "(plan.json 'tasks'); repeatable.")
@click.option("--objective", default="ppl", show_default=True,
              metavar="ppl|task[:NAME]|mix:[NAME:]X",
              help="Choose by validation perplexity, by a task's accuracy (NAME: the task "
                   "file's stem; 'task' alone when one task is given), or by a stated mix: "
                   "mix:NAME:X minimises ln(ppl) - 100 ln(1 + X/100) x accuracy, one accuracy "
                   "point worth X% of perplexity. An early plan forecasts the accuracy from "
                   "perplexity through a line fitted on its proxy runs; an exhaustive one "
                   "measures it in every trial.")
@click.option("--min-task", "min_task", multiple=True, metavar="[NAME=]ACCURACY",
              help="Admit only strategies (early: by median forecast) or trials (exhaustive) "
                   "that reach this accuracy on the task (0..1); repeatable.")
@click.option("--out", required=True, help="Output folder: plan.json, trials.csv, model/.")
@click.pass_obj
def plan(obj: Ctx, domains_count, strategies, exhaustive, planning_budget, trials, frontier,
         storage, gpus, gpus_per_trial, sizes, pruner, tasks, objective, min_task, out,
         **options) -> None:
    """Pick the strategy for the budgets, build and export it.

    By default the plan is early: proxy runs within a planning budget, a forecast per strategy,
    and only the choice built at the full budgets. --exhaustive runs every strategy in full."""
    from planner.data.demo import DEMO_BUDGETS, DEMO_DOMAIN_TOKENS
    from planner.core.io import writable_folder
    from planner.run.config import check_run_args
    from planner.search.plan import plan as run_plan
    from planner.search.study import PlanSpec
    from strategies import available, get_strategy, strategies_with

    if trials is not None and trials < 1:
        raise SpecplanError(f"--trials {trials}: must be at least 1 (leave it out for one per "
                            f"strategy plus two)")
    data = args_from(DataArgs, options)
    run_args = args_from(RunArgs, options,
                         check=lambda run: check_run_args(run, data.seq_len))
    data.check_source()
    writable_folder(out)
    domains_count = data.domains_given if domains_count is None else domains_count
    budgets = parse_budgets(obj, **options, domains_count=domains_count,
                            defaults=DEMO_BUDGETS if data.demo else None,
                            spend_on="cuda" if gpus != "none" and gpus_available() else
                            run_args.device, base=run_args.base)
    takers = strategies_with(accepts_base=True) if run_args.base else available()
    names = [s.strip() for s in strategies.split(",")] if strategies else takers
    for name in names:
        get_strategy(name)  # unknown names fail here, before any data is loaded
        if name not in takers:
            raise SpecplanError(f"--strategies: {name} does not start from a --base checkpoint "
                                f"yet; strategies that do: {', '.join(takers)}")
    tasks = parse_tasks(tasks)
    objective, min_task = parse_objective(objective, min_task, tasks)
    exhaustive = exhaustive or trials is not None or frontier or bool(run_args.base)
    if planning_budget and exhaustive:
        raise SpecplanError("--planning-budget is what an early plan's proxy runs may cost; "
                            "leave it out with --exhaustive, --trials, --frontier or --base")
    if run_args.base and sizes:
        raise SpecplanError("--sizes: the deployed model is the --base checkpoint; leave "
                            "--sizes out")
    spec = PlanSpec(
        data=data, run=run_args, pretrain_flops=budgets.pretrain_flops,
        spec_flops=budgets.spec_flops, inference=budgets.inference.__dict__,
        domain_tokens=budgets.domain_tokens or (DEMO_DOMAIN_TOKENS if data.demo else None),
        domains_count=domains_count, strategies=names,
        # the demo stays within minutes
        trials=trials if trials is not None else len(names) + (0 if data.demo else 2),
        frontier=frontier, sizes=[run_args.base] if run_args.base else
        admitted_sizes(sizes, budgets, data.vocab_size, data.seq_len),
        pruner=pruner, cache_dir=str(obj.cache), tasks=[list(pair) for pair in tasks],
        objective=objective, min_task=min_task,
    )
    if not exhaustive and gpus == "none" and run_args.device == "auto":
        import dataclasses

        spec.run = dataclasses.replace(spec.run, device="cpu")  # proxy runs honour --gpus none
    if exhaustive:
        result = run_plan(spec, out, storage=storage, gpus=gpus, gpus_per_trial=gpus_per_trial)
    else:
        result = _plan_early(obj, spec, out, planning_budget, strategies is None, options,
                             device=run_args.device,
                             exhaustive_options={"storage": storage, "gpus": gpus,
                                                 "gpus_per_trial": gpus_per_trial})
    obj.emit(result.plan, result.summary)
    if result.forecast is not None:  # each strategy's forecast, the proxy runs, the choice
        from planner.cli.forecast import draw_forecast

        draw_forecast(result.forecast, result.proxy_runs, str(result.out_dir / "forecast"))


def parse_objective(objective: str, min_task, tasks) -> tuple[str, dict[str, float]]:
    """``--objective`` as ``ppl`` or ``task:NAME`` and ``--min-task`` as {name: accuracy}; a
    bare ``task`` or ``ACCURACY`` names the one task given. Whether NAME is a given task is
    checked when the task files load."""
    from pathlib import Path

    stems = [Path(path).stem for _, path in tasks]

    def only_task(option: str) -> str:
        if len(stems) != 1:
            given = ", ".join(stems) or "none: add --task DOMAIN=PATH"
            raise SpecplanError(f"{option}: name the task ({option} task:NAME or NAME=...), as "
                                f"{len(stems)} tasks are given ({given})")
        return stems[0]

    objective = objective.strip()
    if objective == "task":
        objective = f"task:{only_task('--objective')}"
    if objective.startswith("mix:"):
        parts = objective.split(":")

        def number(text: str) -> float | None:
            try:
                return float(text)
            except ValueError:
                return None

        if len(parts) == 2 and number(parts[1]) is not None:
            parts = ["mix", only_task("--objective"), parts[1]]
        percent = number(parts[2]) if len(parts) == 3 and parts[1].strip() else None
        if percent is None or not 0 < percent < 1e4:
            raise SpecplanError(f"--objective {objective!r}: a mix is mix:NAME:X (or mix:X with "
                                "one task), X the percent of perplexity one accuracy point is "
                                "worth, e.g. mix:qa:5")
        objective = f"mix:{parts[1].strip()}:{percent:g}"
    elif objective != "ppl" and not (objective.startswith("task:") and objective[5:].strip()):
        raise SpecplanError(f"--objective {objective!r}: use ppl, task, task:NAME (NAME: a "
                            f"task file's stem) or mix:NAME:X")
    least = {}
    for item in min_task:
        name, sep, value = item.rpartition("=")
        name = name.strip() if sep else only_task("--min-task")
        try:
            accuracy = float(value)
        except ValueError:
            accuracy = None
        if accuracy is None or not 0.0 <= accuracy <= 1.0:
            raise SpecplanError(f"--min-task {item!r}: give an accuracy between 0 and 1, e.g. "
                                f"--min-task {name}=0.6")
        least[name] = accuracy
    return objective, least


def _plan_early(obj: Ctx, spec, out, planning_budget, default_names: bool, options, *,
                device, exhaustive_options):
    """The early plan: the study's main strategies unless named, the planning budget parsed
    and checked against what this machine can spend."""
    from planner.cli._shared import check_spendable
    from planner.core.budgets import parse_budget
    from planner.core.cost import hardware_profile
    from planner.search.early import default_strategies, plan_early

    planning = None
    if planning_budget:
        planning = parse_budget(planning_budget, what="--planning-budget",
                                utilization=options.get("utilization"), cache_dir=obj.cache)
        if not options.get("yes"):
            check_spendable(obj, planning, "--planning-budget", planning_budget, device,
                            options.get("utilization"))
    hours = hardware_profile("a100", utilization=options.get("utilization"),
                             cache_dir=obj.cache)
    return plan_early(spec, out, planning_flops=planning, hours=hours,
                      early_strategies=default_strategies(spec.strategies) if default_names
                      else None, exhaustive_options=exhaustive_options)


def gpus_available() -> bool:
    import torch

    return torch.cuda.is_available()


def admitted_sizes(sizes: str | None, budgets, vocab_size: int, seq_len: int) -> list[str]:
    """Deployed sizes to search: the given ones, or the largest ladder size within the cap."""
    from planner.core.units import format_count
    from planner.engine.models import SIZES, model_shape

    if sizes:
        separator = ";" if ";" in sizes or "=" in sizes else ","
        names = [s.strip() for s in sizes.split(separator) if s.strip()]
        for name in names:
            try:
                model_shape(name, vocab_size=vocab_size, seq_len=seq_len)
            except SpecplanError as err:
                raise SpecplanError(f"--sizes: {err}") from None
        return names
    shapes = {name: model_shape(name, vocab_size=vocab_size, seq_len=seq_len) for name in SIZES}
    fits = [name for name, shape in shapes.items() if budgets.inference.admits(
        flops_per_token=shape.inference_flops_per_token(), params=shape.params_total)]
    if not fits:
        name, shape = next(iter(shapes.items()))
        raise SpecplanError(
            f"--inference-budget {budgets.inference.describe()}: no model size fits; the "
            f"smallest ({name}) has {format_count(shape.params_total)} params and "
            f"{shape.inference_flops_per_token():.3g} FLOPs/token; raise --inference-budget to "
            f"at least that")
    return [name for name in fits if name not in ("tiny", "large")][-1:] or ["tiny"]


@click.command()
@click.option("--study", "study_name", required=True, help="Study name (plan.json 'study').")
@click.option("--storage", required=True, help="The study's storage URL or journal file.")
@click.pass_obj
def worker(obj: Ctx, study_name, storage) -> None:
    """Join a plan's study (on this or another machine) and run trials until it is done."""
    from planner.search.workers import worker as join_study

    ran = join_study(study_name, storage, str(obj.cache))
    obj.emit({"trials_run": ran}, f"worker finished: {ran} trial(s) run here")
