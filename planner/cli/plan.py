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
)
from planner.core.args import DataArgs, RunArgs


@click.command()
@data_options
@budget_options
@click.option("--domains-count", type=int, default=1, show_default=True,
              help="Domains sharing the pretraining: total = generic + N x specialization.")
@click.option("--strategies", default=None,
              help="Comma-separated strategies to search (default: all registered; "
                   "`specplan strategies` lists them).")
@click.option("--trials", type=int, default=None, help="Finished trials (default: one per "
              "strategy, plus two).")
@click.option("--frontier", is_flag=True, help="Two objectives (perplexity, total cost): Pareto set.")
@click.option("--storage", default=None, help="Optuna storage URL (default: OUT/study.journal); "
              "postgresql://... lets workers on several machines share the study.")
@click.option("--gpus", default="all", show_default=True, help="all, none, or ids like 0,1.")
@click.option("--gpus-per-trial", type=int, default=1, show_default=True)
@click.option("--sizes", default=None, help="Deployed sizes to search, e.g. tiny,small "
              "(default: those within the inference budget).")
@options_from(RunArgs)
@click.option("--pruner", default="asha", show_default=True, help="asha, hyperband or none.")
@click.option("--out", required=True, help="Output folder: plan.json, trials.csv, model/.")
@click.pass_obj
def plan(obj: Ctx, domains_count, strategies, trials, frontier, storage, gpus, gpus_per_trial,
         sizes, pruner, out, **options) -> None:
    """Search strategies under the budgets, pick the best, build and export it."""
    from planner.data.demo import DEMO_BUDGETS, DEMO_DOMAIN_TOKENS
    from planner.run.config import check_run_args
    from planner.search.plan import plan as run_plan
    from planner.search.study import PlanSpec
    from strategies import available, get_strategy

    data, run_args = args_from(DataArgs, options), args_from(RunArgs, options)
    check_run_args(run_args)
    data.check_source()
    budgets = parse_budgets(obj, **options, domains_count=domains_count,
                            defaults=DEMO_BUDGETS if data.demo else None)
    names = [s.strip() for s in strategies.split(",")] if strategies else available()
    for name in names:
        get_strategy(name)  # unknown names fail here, before any data is loaded
    spec = PlanSpec(
        data=data, run=run_args, pretrain_flops=budgets.pretrain_flops,
        spec_flops=budgets.spec_flops, inference=budgets.inference.__dict__,
        domain_tokens=budgets.domain_tokens or (DEMO_DOMAIN_TOKENS if data.demo else None),
        domains_count=domains_count, strategies=names,
        trials=trials or len(names) + (1 if data.demo else 2),  # the demo stays within minutes
        frontier=frontier, sizes=admitted_sizes(sizes, budgets, data.vocab_size, data.seq_len),
        pruner=pruner, cache_dir=str(obj.cache),
    )
    result = run_plan(spec, out, storage=storage, gpus=gpus, gpus_per_trial=gpus_per_trial)
    obj.emit(result.plan, result.summary)


def admitted_sizes(sizes: str | None, budgets, vocab_size: int, seq_len: int) -> list[str]:
    """Deployed sizes to search: the given ones, or the largest ladder size within the cap."""
    from planner.engine.models import SIZES, model_shape

    if sizes:
        names = [s.strip() for s in sizes.split(",")]
        for name in names:
            model_shape(name, vocab_size=vocab_size, seq_len=seq_len)  # validates the name
        return names
    fits = [name for name in SIZES if name not in ("tiny", "large") and budgets.inference.admits(
        flops_per_token=model_shape(name, vocab_size=vocab_size, seq_len=seq_len)
        .inference_flops_per_token(),
        params=model_shape(name, vocab_size=vocab_size, seq_len=seq_len).params_total)]
    return fits[-1:] or ["tiny"]


@click.command()
@click.option("--study", "study_name", required=True, help="Study name (plan.json 'study').")
@click.option("--storage", required=True, help="The study's storage URL or journal file.")
@click.pass_obj
def worker(obj: Ctx, study_name, storage) -> None:
    """Join a plan's study (on this or another machine) and run trials until it is done."""
    from planner.search.workers import worker as run_worker

    ran = run_worker(study_name, storage, str(obj.cache))
    obj.emit({"trials_run": ran}, f"worker finished: {ran} trial(s) run here")
