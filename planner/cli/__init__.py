"""``specplan``: a thin click layer over the library API; nothing imports this package.

Each command parses options, calls one library function and prints. Errors a user can fix are
:class:`planner.core.errors.SpecplanError`: printed as one line on stderr, exit status 2, no
traceback. Machine-readable output (``--json``) goes to stdout; logs and progress go to stderr.

Command modules import the library inside their command functions (the one place the project
does so): ``specplan --help`` then starts without loading torch, which takes seconds.
"""
from __future__ import annotations

import sys

import click

from planner.cli import data, experiments, forecast, plan, run, strategies, train
from planner.cli._shared import DEFAULT_CACHE, Ctx
from planner.core.errors import SpecplanError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cache", default=DEFAULT_CACHE, show_default=True, envvar="SPECPLAN_CACHE",
              help="Cache folder for corpora, tokenizers, clusterings and pretraining artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.version_option(package_name="specplan")
@click.pass_context
def cli(ctx: click.Context, cache: str, as_json: bool) -> None:
    """Budget-aware planner for small specialized language models."""
    ctx.obj = Ctx(cache, as_json)


for command in (data.data, train.train, train.eval_cmd, strategies.strategies_cmd, run.run,
                plan.plan, plan.worker, experiments.sweep, experiments.plot, experiments.report,
                forecast.forecast_cmd):
    cli.add_command(command)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except SpecplanError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
