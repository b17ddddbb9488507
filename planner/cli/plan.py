"""``specplan plan | worker``: search, choose and build; join a plan's study."""
from __future__ import annotations

import click

from planner.cli._shared import (
    Ctx,
    budget_options,
    data_options,
    parse_budgets,
)
from planner.core.errors import SpecplanError


@click.command()
@data_options
@budget_options
@click.option("--domains-count", type=int, default=1, show_default=True,
              help="Domains sharing the pretraining: total = generic + N x specialization.")
@click.option("--strategies", default=None,
              help="Comma-separated strategies to search (default: all registered).")
@click.option("--trials", type=int, default=None, help="Finished trials (default: one per "
              "strategy, plus two).")
@click.option("--frontier", is_flag=True, help="Two objectives (perplexity, total cost): Pareto set.")
@click.option("--storage", default=None, help="Optuna storage URL (default: OUT/study.journal); "
              "postgresql://... lets workers on several machines share the study.")
@click.option("--gpus", default="all", show_default=True, help="all, none, or ids like 0,1.")
@click.option("--gpus-per-trial", type=int, default=1, show_default=True)
@click.option("--sizes", default=None, help="Deployed sizes to search, e.g. tiny,small "
              "(default: those within the inference budget).")
@click.option("--large", default="large", show_default=True, help="Large model size.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--embedder", default="hashed", show_default=True, help="hashed or minilm.")
@click.option("--pruner", default="asha", show_default=True, help="asha, hyperband or none.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, help="Output folder: plan.json, trials.csv, model/.")
@click.pass_obj
def plan(obj: Ctx, generic, domains, demo, demo_domains, text_field, seq_len, vocab_size,
         tokenizer_dir, pretrain_budget, spec_budget, inference_budget, domain_tokens,
         utilization, domains_count, strategies, trials, frontier, storage, gpus, gpus_per_trial,
         sizes, large, batch_size, embedder, pruner, seed, out) -> None:
    """Search strategies under the budgets, pick the best, build and export it."""
    from planner.data.demo import DEMO_BUDGETS, DEMO_DOMAIN_TOKENS
    from planner.search.plan import plan as run_plan
    from planner.search.study import PlanSpec
    from strategies import available

    if not demo and not (generic and domains):
        raise SpecplanError("give --generic PATH and at least one --domain PATH (or --demo)")
    budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                            utilization, domains_count, DEMO_BUDGETS if demo else None)
    names = [s.strip() for s in strategies.split(",")] if strategies else available()
    for name in names:
        from strategies import get_strategy

        get_strategy(name)  # unknown names fail here, before any data is loaded
    spec = PlanSpec(
        generic=generic, domains=list(domains), demo=demo,
        demo_domains=list(demo_domains) or ["legal"], pretrain_flops=budgets.pretrain_flops,
        spec_flops=budgets.spec_flops, inference=budgets.inference.__dict__,
        domain_tokens=budgets.domain_tokens or (DEMO_DOMAIN_TOKENS if demo else None),
        domains_count=domains_count, strategies=names,
        trials=trials or len(names) + (1 if demo else 2),  # the demo stays within minutes
        frontier=frontier, sizes=admitted_sizes(sizes, budgets, vocab_size, seq_len),
        large=large, seq_len=seq_len, vocab_size=vocab_size, text_field=text_field,
        tokenizer_dir=tokenizer_dir, batch_size=batch_size, embedder=embedder, pruner=pruner,
        seed=seed, cache_dir=str(obj.cache),
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
