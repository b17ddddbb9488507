"""``specplan run STRATEGY``: one strategy end to end."""
from __future__ import annotations

from pathlib import Path

import click

from planner.cli._shared import (
    Ctx,
    budget_options,
    data_options,
    load_data,
    parse_budgets,
    parse_overrides,
    train_template,
)
from planner.core.text import ledger_text, table


@click.command()
@click.argument("strategy")
@data_options
@budget_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A strategy setting, e.g. --set k=8; repeatable (`specplan strategies "
                   "STRATEGY` lists them with defaults and ranges).")
@click.option("--small", default="small", show_default=True, help="Deployed model size.")
@click.option("--large", default="large", show_default=True, help="Large model size.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--embedder", default="hashed", show_default=True, help="hashed or minilm.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=None, help="Export each domain's model under OUT/<domain>.")
@click.pass_obj
def run(obj: Ctx, strategy, generic, domains, demo, demo_domains, text_field, seq_len,
        vocab_size, tokenizer_dir, pretrain_budget, spec_budget, inference_budget,
        domain_tokens, utilization, overrides, small, large, batch_size, embedder, device, seed,
        out) -> None:
    """Run one STRATEGY end to end; print perplexities and the per-phase ledger.

    STRATEGY is a registered name such as slm, llm, slm-is or slm-pn: `specplan strategies`
    lists them all with their phases and settings.
    """
    from planner.run.runner import run_strategy
    from strategies import get_strategy
    from strategies.workspace import Workspace

    settings = get_strategy(strategy).settings(parse_overrides(overrides))  # fail before data
    budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                            utilization)
    inputs = load_data(obj, generic, domains, demo, demo_domains, text_field, seq_len,
                       vocab_size, tokenizer_dir, budgets.domain_tokens)
    ws = Workspace(inputs.generic, inputs.tokenizer, budgets, obj.cache, small=small, large=large,
                   train=train_template(device, batch_size, seed), embedder=embedder)
    report = run_strategy(strategy, settings, ws, inputs.domains,
                          out_dir=Path(out) if out else None)
    rows = report.rows(budgets)
    lines = [f"strategy {strategy} ({report.status}); pretraining artifact "
             f"{'reused from cache' if report.artifact_reused else 'trained'}",
             table([{k: r[k] for k in ("domain", "ppl_before", "ppl_after", "generic_flops",
                                       "spec_flops")} for r in rows]),
             "ledger (all domains):"]
    combined = report.ledger()
    lines.append(ledger_text(combined))
    obj.emit({"rows": rows, "ledger": combined.to_dict()["totals"]}, "\n".join(lines))
