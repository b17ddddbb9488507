"""``specplan forecast``: plan for budgets too large to run, from measured runs and fitted laws.

Three modes:

* ``--results PATH|reference``: forecast at the budgets from a results table;
* ``--backtest PATH|reference``: fit on the smaller budgets, predict the largest, print errors;
* ``--calibrate --planning-budget B``: run a ladder of proxy runs on the data, then forecast.
"""
from __future__ import annotations

import math
from pathlib import Path

import click

from planner.cli._shared import (
    Ctx,
    args_from,
    budget_options,
    data_options,
    options_from,
    check_spendable,
    parse_budgets,
)
from planner.core.args import DataArgs, RunArgs
from planner.core.errors import SpecplanError
from planner.core.units import format_count


def _table(rows: list[dict]) -> str:
    from planner.core.text import table

    return table(rows)


def _results(spec: str):
    """(results table, published bounds) for a path or ``reference``."""
    from planner.forecast.reference import load_reference_results, reference_bounds
    from planner.run.results import read_results

    if spec == "reference":
        df = load_reference_results()
        return df, reference_bounds(df)
    return read_results(spec), ()


def _ppl_text(item) -> str:
    if item.status == "bound":
        return f"<= {item.ppl_at_most:.4g} (published)"
    if item.ppl is None:
        return "-"
    if item.ppl_lo is None or not math.isfinite(item.ppl_lo):
        return f"{item.ppl:.4g}"
    return f"{item.ppl:.4g} [{item.ppl_lo:.4g}, {item.ppl_hi:.4g}]"


def _count(value) -> str:
    return "-" if value is None else format_count(value)


def forecast_text(result) -> str:
    """The human answer: budgets, one row per strategy, recommendation, extrapolation, notes."""
    hours = result.hours_device.upper()
    lo, hi = (round(100 * q) for q in result.quantiles)
    per_hour = result.flops_per_device_hour
    head = (f"forecast at pretraining {result.pretrain_flops:.3g} FLOPs "
            f"({result.pretrain_flops / per_hour:.4g} {hours}-h), specialization "
            f"{result.spec_flops:.3g} FLOPs ({result.spec_flops / per_hour:.4g} {hours}-h) per "
            f"domain, inference {result.inference}, "
            f"{format_count(result.domain_tokens)} domain tokens, N = {result.domains_count} "
            f"domain(s); prediction intervals {lo}-{hi}%")
    rows, extrapolation, notes = [], [], []
    for item in result.strategies:
        status = item.status
        if item.within_inference is False and status in ("forecast", "bound"):
            status += " (over inference budget)"
        worst = item.max_extrapolation
        rows.append({
            "strategy": item.strategy, "status": status,
            "params": _count(item.params_inference),
            "pretrain tokens": _count(item.generic_tokens),
            "spec tokens/domain": _count(item.spec_tokens),
            "perplexity": _ppl_text(item),
            f"total FLOPs (N={result.domains_count})":
                "-" if item.total_flops is None else f"{item.total_flops:.3g}",
            f"total {hours}-h": "-" if item.total_hours is None else f"{item.total_hours:.4g}",
            "extrapolation": "-" if worst is None else f"{worst[1]:.2g}x {worst[0]}",
        })
        if item.extrapolation:
            axes = ", ".join(f"{axis} {factor:.3g}x" for axis, factor in item.extrapolation.items())
            extrapolation.append(f"  {item.strategy}: {axes}")
        notes += [f"  {note}" for note in item.notes if f"  {note}" not in notes]
    lines = [head, _table(rows), f"recommendation: {result.reason}",
             f"extrapolation (target / largest measured; refused above "
             f"{result.max_extrapolation:g}x):", *extrapolation]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


def backtest_text(result) -> str:
    """Per held-out config errors, per regime ranking, and the summary numbers."""
    configs = [{
        "strategy": r["strategy"], "domain tokens": format_count(r["domain_tokens"]),
        "held-out budget": f"{r[r['held_out']]:.3g}",
        "actual": f"{r['actual']:.4g}",
        "predicted": f"{r['predicted']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}]",
        "error %": f"{r['pct_error']:.2f}", "status": r["status"],
    } for r in result.configs.to_dict("records")]
    regimes = [{
        **{k: format_count(v) if k == "domain_tokens" else f"{v:.3g}" if "flops" in k else v
           for k, v in r.items()
           if k not in ("strategies", "winner_right", "ranking_right", "regret")},
        "winner right": r["winner_right"], "ranking right": r["ranking_right"],
        "regret (ppl)": f"{r['regret']:.3g}",
    } for r in result.regimes.to_dict("records")]
    n_regimes = len(result.regimes)
    lines = [
        "backtest: per strategy, fit on its smaller budgets and predict its largest",
        _table(configs),
        "ranking of in-budget strategies per regime (best held-out config each):",
        _table(regimes),
        f"MAE {result.mae:.3g} perplexity, MAPE {result.mape:.2f}%, interval coverage "
        f"{int(result.configs['covered'].sum())}/{len(result.configs)}, best strategy right in "
        f"{int(result.regimes['winner_right'].sum()) if n_regimes else 0}/{n_regimes} regime(s), "
        f"full ranking right in "
        f"{int(result.regimes['ranking_right'].sum()) if n_regimes else 0}/{n_regimes}",
    ]
    lines += [f"skipped {name}: {why}" for name, why in result.skipped.items()]
    return "\n".join(lines)


def calibration_text(result) -> str:
    """The ladder that ran and the forecast from it."""
    rows = [{"strategy": r.strategy, "size": r.size, "pretrain FLOPs": f"{r.pretrain_flops:.3g}",
             "spec FLOPs/domain": f"{r.spec_flops:.3g}", "estimated": f"{r.est_flops:.3g}",
             "spent": f"{r.spent_flops:.3g}", "status": r.status} for r in result.runs]
    return "\n".join([
        f"calibration ladder: spent {result.spent_flops:.3g} of {result.planning_flops:.3g} "
        f"planning FLOPs; runs appended to {result.results_path}",
        _table(rows), *(f"not calibrated: {name}: {why}" for name, why in result.skipped.items()),
        "", forecast_text(result.forecast)])


def _calibration_path(cache: Path, inputs, domain_tokens: int) -> Path:
    """One file per data set and domain size, so runs on other data never mix in."""
    from planner.core.io import content_hash

    key = content_hash(inputs.generic.fingerprint,
                       *(f"{n}:{d.fingerprint}" for n, d in sorted(inputs.domains.items())),
                       str(domain_tokens))
    return cache / "forecast" / f"calibration-{key}.csv"


@click.command("forecast")
@budget_options
@click.option("--domains-count", type=int, default=None,
              help="N, the domains sharing the pretraining: total = generic + N x "
                   "specialization (default: the number of --domain given with --calibrate, "
                   "else 1).")
@click.option("--results", default=None, metavar="PATH|reference",
              help="Results table (a sweep or plan output folder, a parquet or CSV, a "
                   "calibration CSV) or "
                   "'reference' (the study's published numbers). With --calibrate: the CSV to "
                   "extend.")
@click.option("--strategies", default=None, help="Comma-separated strategies (default: all).")
@click.option("--backtest", "backtest_results", default=None, metavar="PATH|reference",
              help="Back-test on this table: fit on smaller budgets, predict the largest.")
@click.option("--calibrate", is_flag=True, help="Run a ladder of proxy runs on the data first.")
@click.option("--planning-budget", default=None,
              help="What --calibrate may spend: FLOPs or device time (10m@cpu).")
@data_options
@click.option("--sizes", default=None, help="--calibrate: proxy model sizes, e.g. tiny,small "
              "(default: ladder sizes within the inference budget).")
@options_from(RunArgs, skip=("large", "base", "base_cost", "allow_pickle"))
@click.option("--max-extrapolation", type=float, default=10.0, show_default=True,
              help="Refuse targets beyond this factor of the largest measured run, per axis.")
@click.option("--n-boot", type=int, default=40, show_default=True,
              help="Bootstrap refits per strategy for the intervals.")
@click.option("--plot", "plot_stem", default=None, metavar="STEM",
              help="Also draw the forecast along the pretraining budget: STEM.png, STEM.svg.")
@click.option("--json", "as_json", is_flag=True,
              help="Same as specplan --json: machine-readable JSON on stdout.")
@click.pass_context
def forecast_cmd(ctx: click.Context, as_json: bool, **options) -> None:
    """Forecast each strategy at budgets too large to run; recommend one."""
    ctx.obj.as_json = ctx.obj.as_json or as_json
    _forecast(ctx, **options)


def _forecast(ctx: click.Context, *, pretrain_budget, spec_budget, inference_budget,
              domain_tokens, utilization, yes, domains_count, results, strategies, backtest_results,
              calibrate, planning_budget, sizes, max_extrapolation, n_boot, plot_stem,
              **options) -> None:
    """The command's body: pick the mode, call the library, print."""
    from experiments.backtest import backtest
    from planner.core.budgets import parse_budget
    from planner.core.cost import hardware_profile
    from planner.data.demo import DEMO_BUDGETS
    from planner.forecast.calibrate import calibrate as run_calibration
    from planner.forecast.forecast import forecast
    from planner.run.config import check_run_args, load_data
    from planner.run.results import read_results

    obj: Ctx = ctx.obj
    data = args_from(DataArgs, options)
    run_args = args_from(RunArgs, options, check=lambda run: check_run_args(
        run, data.seq_len) if calibrate else None)
    seed = run_args.seed
    names = [s.strip() for s in strategies.split(",")] if strategies else None
    if n_boot < 1:
        raise SpecplanError(f"--n-boot {n_boot}: give at least 1 bootstrap refit")
    if backtest_results:
        if plot_stem:
            raise SpecplanError("--plot draws a forecast; a back-test prints its table only")
        df, _ = _results(backtest_results)
        result = backtest(df, strategies=names, n_boot=n_boot, seed=seed)
        obj.emit(result.to_dict(), backtest_text(result))
        return
    hours = hardware_profile("a100", utilization=utilization, cache_dir=obj.cache)
    if calibrate:
        if results == "reference":
            raise SpecplanError("--calibrate runs proxies on your data; --results names the CSV "
                                "to extend, not 'reference'")
        if not planning_budget:
            raise SpecplanError("--calibrate needs --planning-budget (FLOPs or device time, "
                                "e.g. 20m@cpu)")
        data.check_source("--calibrate needs data: ")
        domains_count = data.domains_given if domains_count is None else domains_count
        budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget,
                                domain_tokens or ("64k" if data.demo else None), utilization,
                                domains_count, DEMO_BUDGETS if data.demo else None)
        if budgets.domain_tokens is None:
            raise SpecplanError("--calibrate needs --domain-tokens (the domain data size)")
        planning = parse_budget(planning_budget, what="--planning-budget",
                                utilization=utilization, cache_dir=obj.cache)
        if not yes:  # the planning budget is spent here; the others are forecast targets
            check_spendable(obj, planning, "--planning-budget", planning_budget,
                            run_args.device, utilization)
        inputs = load_data(data, obj.cache, domain_tokens=budgets.domain_tokens)
        path = Path(results) if results else _calibration_path(obj.cache, inputs,
                                                                budgets.domain_tokens)
        outcome = run_calibration(
            inputs, budgets, planning_flops=planning, results_path=path, cache_dir=obj.cache,
            strategies=names, sizes=[s.strip() for s in sizes.split(",")] if sizes else None,
            run=run_args,
            max_extrapolation=max_extrapolation, n_boot=n_boot, hours=hours,
            log=lambda line: click.echo(line, err=True),
        )
        obj.emit(outcome.to_dict(), calibration_text(outcome))
        draw_forecast(outcome.forecast, read_results(path), plot_stem)
        return
    if not results:
        raise SpecplanError("give --results PATH|reference, --backtest PATH|reference, or "
                            "--calibrate with data")
    df, bounds = _results(results)
    budgets = parse_budgets(obj, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                            utilization, 1 if domains_count is None else domains_count)
    result = forecast(df, budgets, strategies=names, max_extrapolation=max_extrapolation,
                         n_boot=n_boot, bounds=bounds, hours=hours, seed=seed)
    obj.emit(result.to_dict(), forecast_text(result))
    draw_forecast(result, df, plot_stem)


def draw_forecast(result, measured, stem: str | None) -> None:
    """Write the forecast figure (``--plot``) and say where, on stderr. It comes after the
    forecast is printed, so a figure that cannot be drawn costs a warning, not the answer."""
    if not stem:
        return
    from experiments.plots import plot_forecast, save_figure

    try:
        paths = save_figure(plot_forecast(result, measured), stem)
    except SpecplanError as err:
        click.echo(f"warning: no forecast plot: {err}", err=True)
        return
    click.echo("forecast plot: " + ", ".join(map(str, paths)), err=True)
