"""``specplan sweep | plot | report``: thin click commands over :mod:`experiments`.

They are registered on the main group in :mod:`planner.cli` (``cli.add_command``) and written
like its commands: parse options, call one library function, print. User errors are
:class:`planner.core.errors.SpecplanError`, which the CLI prints as one line with exit status 2.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from planner.core.errors import SpecplanError


def _command_line() -> str:
    """How this command was invoked, recorded so a report says how it was produced."""
    return "specplan " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _sweep_command(folder: Path) -> str | None:
    """The sweep command recorded in the results folder's ``sweep.json``, if any."""
    import json

    from experiments.sweep import SWEEP_JSON

    path = folder / SWEEP_JSON
    return json.loads(path.read_text()).get("command") if path.exists() else None


@click.command("sweep")
@click.argument("config_path", metavar="CONFIG.toml")
@click.option("--out", default=None, help="Results folder (default: results/<name> beside the "
              "config file).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Points run in parallel processes (a pretraining is never trained twice).")
@click.option("--gpus", default=None, help="all or ids like 0,1: worker i runs on GPU i mod n "
              "(CUDA_VISIBLE_DEVICES).")
@click.pass_obj
def sweep(obj, config_path, out, workers, gpus) -> None:
    """Run every point of a sweep file; resume where an earlier run stopped."""
    from experiments.sweep import load_config, run_sweep
    from planner.core.text import table

    config = load_config(config_path)
    out_dir = Path(out) if out else Path(config_path).parent / "results" / config.name
    frame = run_sweep(config, out_dir, workers=workers, gpus=gpus, cache_dir=obj.cache,
                      progress=True, command=_command_line())
    counts = frame.drop_duplicates("point")["status"].value_counts() if len(frame) else {}
    summary = [{"status": k, "points": int(v)} for k, v in dict(counts).items()]
    obj.emit({"out": str(out_dir), "rows": len(frame), "points": summary},
             f"{len(frame)} row(s) in {out_dir / 'results.parquet'} (and results.csv)\n"
             + table(summary))


@click.command("plot")
@click.argument("results")
@click.option("--kind", required=True, type=click.Choice(
    ["pretrain", "spec", "frontier", "total-cost", "winner-map"]),
    help="Which figure: perplexity vs pretraining or specialization cost, the frontier, total "
         "cost vs number of domains, or the winning strategy per budget.")
@click.option("--out", "stem", default=None, help="Output path without extension (PNG and SVG "
              "are written; default: <results folder>/plots/<kind>).")
@click.pass_obj
def plot(obj, results, kind, stem) -> None:
    """Draw one figure from a results table (a sweep or plan folder, .parquet or .csv)."""
    from experiments.plots import save_figure
    from experiments.report import make_figure
    from planner.run.results import read_results

    frame = read_results(results)
    folder = Path(results) if Path(results).is_dir() else Path(results).parent
    target = Path(stem) if stem else folder / "plots" / kind
    paths = save_figure(make_figure(frame, kind), target)
    obj.emit({"paths": [str(p) for p in paths]}, "\n".join(str(p) for p in paths))


@click.command("report")
@click.argument("results")
@click.option("--out", default=None, help="Output folder (default: the results folder).")
@click.option("--chosen", default=None, help="Point key (results 'point' column) to highlight "
              "on the frontier (default: the winner at the largest budgets).")
@click.pass_obj
def report(obj, results, out, chosen) -> None:
    """Write a self-contained HTML page and a Markdown report from a results table."""
    from experiments.report import write_report
    from planner.run.results import read_results

    frame = read_results(results)
    if frame.empty:
        raise SpecplanError(f"{results}: the results table has no rows yet; run the sweep first")
    folder = Path(results) if Path(results).is_dir() else Path(results).parent
    commands = [_sweep_command(folder), _command_line()]
    html_path, md_path = write_report(frame, Path(out) if out else folder, chosen=chosen,
                                      command=" && ".join(c for c in commands if c))
    obj.emit({"html": str(html_path), "markdown": str(md_path)}, f"{html_path}\n{md_path}")
