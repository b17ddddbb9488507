"""``specplan``: a thin click layer over the library API; nothing imports this package.

Each command parses options, calls one library function and prints. Errors a user can fix are
:class:`planner.core.errors.SpecplanError`: printed as one line on stderr, exit status 2, no
traceback. Machine-readable output (``--json``) goes to stdout; logs and progress go to stderr
(the ``specplan`` logger, one line per step). Ctrl-C and SIGTERM stop a command with one line
saying what is kept and how to resume (re-run the same command), exit status 130.

Command modules import the library inside their command functions (the one place the project
does so): ``specplan --help`` then starts without loading torch, which takes seconds.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from planner.cli import data, experiments, forecast, models, plan, run, strategies, train
from planner.cli._shared import DEFAULT_CACHE, Ctx
from planner.core.errors import Interrupted, SpecplanError
from planner.core.threads import cpu_threads


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cache", default=DEFAULT_CACHE, show_default=True, envvar="SPECPLAN_CACHE",
              help="Cache folder for corpora, tokenizers, clusterings and pretraining artifacts.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.version_option(package_name="specplan")
@click.pass_context
def cli(ctx: click.Context, cache: str, as_json: bool) -> None:
    """Budget-aware planner for small specialized language models."""
    ctx.obj = Ctx(cache, as_json)


for command in (data.data, train.train, train.eval_cmd, strategies.strategies_cmd,
                models.models_cmd, run.run,
                plan.plan, plan.worker, experiments.sweep, experiments.plot, experiments.report,
                forecast.forecast_cmd):
    cli.add_command(command)


class _Progress(logging.Handler):
    """Progress lines ``specplan: ...`` and ``warning: ...`` on the current stderr (stdout
    stays for --json)."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning" if record.levelno >= logging.WARNING else "specplan"
        print(f"{prefix}: {record.getMessage()}", file=sys.stderr, flush=True)


def _terminate(signum, frame) -> None:
    """SIGTERM takes the same path as Ctrl-C, so a killed job stops as cleanly."""
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # torch reads it when first imported: one thread per physical core, not per logical CPU
    # or per host CPU a container cannot use (an explicit OMP_NUM_THREADS wins).
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads()))
    log = logging.getLogger("specplan")
    if not any(isinstance(h, _Progress) for h in log.handlers):
        log.addHandler(_Progress())
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        cli.main(standalone_mode=False)
    except SpecplanError as err:
        _fail(f"error: {err}", 2)
    except (KeyboardInterrupt, click.exceptions.Abort) as err:
        cause = err.__cause__ if isinstance(err, click.exceptions.Abort) else err  # click wraps
        if isinstance(cause, Interrupted):
            _fail(f"interrupted: {cause}", 130)
        _fail("interrupted; re-run the same command to resume", 130)
    except click.UsageError as err:  # one line too, with where to read more
        command = err.ctx.command_path if err.ctx else "specplan"
        _fail(f"error: {err.format_message()} (see {command} --help)", 2)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except OSError as err:  # a folder or file the system refuses (read-only, full, not a folder)
        if err.filename is None:
            raise
        _fail(f"error: {err.filename}: {err.strerror}; choose a writable path (check --out and "
              f"--cache) or fix its permissions", 2)


def _fail(line: str, code: int) -> None:
    click.echo(line, err=True)
    sys.exit(code)
