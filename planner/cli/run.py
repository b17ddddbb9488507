"""``specplan run STRATEGY``: one strategy end to end."""
from __future__ import annotations

from pathlib import Path

import click

from planner.cli._shared import (
    Ctx,
    args_from,
    budget_options,
    data_options,
    options_from,
    parse_budgets,
    parse_overrides,
    parse_tasks,
)
from planner.core.args import DataArgs, RunArgs
from planner.core.text import ledger_text, table


@click.command()
@click.argument("strategy")
@data_options
@budget_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A strategy setting, e.g. --set k=8; repeatable (`specplan strategies "
                   "STRATEGY` lists them with defaults and ranges).")
@click.option("--small", default="small", show_default=True,
              help="Deployed model: a preset (`specplan models`), a spec like "
                   "d=768,layers=12,heads=12,kv_heads=4,ff=2048, or a model config folder.")
@options_from(RunArgs)
@click.option("--task", "tasks", multiple=True, metavar="DOMAIN=PATH",
              help="A task file of a --domain, scored on its model (a task:NAME column); "
                   "repeatable.")
@click.option("--out", default=None, help="Export each domain's model under OUT/<domain>.")
@click.pass_obj
def run(obj: Ctx, strategy, overrides, small, tasks, out, **options) -> None:
    """Run one STRATEGY end to end; print perplexities and the per-phase ledger.

    STRATEGY is a registered name such as slm, llm, slm-is or slm-pn: `specplan strategies`
    lists them all with their phases and settings.
    """
    from planner.core.errors import SpecplanError
    from planner.core.io import writable_folder
    from planner.engine.models import check_size
    from planner.engine.tracking import tracking
    from planner.run.config import check_run_args, load_data, make_workspace
    from planner.run.results import TASK_COLUMN
    from planner.run.runner import run_strategy, tasks_for
    from strategies import get_strategy

    settings = get_strategy(strategy).settings(parse_overrides(overrides))  # fail before data
    try:
        check_size(small)
    except SpecplanError as err:
        raise SpecplanError(f"--small: {err}") from None
    data = args_from(DataArgs, options)
    run_args = args_from(RunArgs, options,
                         check=lambda run: check_run_args(run, data.seq_len))
    if out:
        writable_folder(out)
    budgets = parse_budgets(obj, **options, spend_on=run_args.device, base=run_args.base)
    tasks = parse_tasks(tasks)
    inputs = load_data(data, obj.cache, base=run_args.base, domain_tokens=budgets.domain_tokens)
    loaded = tasks_for(tasks, data.domains, list(inputs.domains))  # before any training
    ws = make_workspace(inputs, budgets, run_args, obj.cache, small=small)
    with tracking(run_args.tracker):
        report = run_strategy(strategy, settings, ws, inputs.domains,
                              out_dir=Path(out) if out else None, tasks=loaded)
    rows = report.rows(budgets)
    columns = ("domain", "ppl_before", "ppl_after", "generic_flops", "spec_flops",
               *(f"{TASK_COLUMN}{name}" for name in loaded))
    lines = [f"strategy {strategy} ({report.status}); pretraining artifact "
             f"{'reused from cache' if report.artifact_reused else 'trained'}",
             table([{k: r.get(k) for k in columns} for r in rows]),
             "ledger (all domains):"]
    combined = report.ledger()
    lines.append(ledger_text(combined))
    obj.emit({"rows": rows, "ledger": combined.to_dict()["totals"]}, "\n".join(lines))
