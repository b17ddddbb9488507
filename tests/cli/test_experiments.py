"""The ``specplan sweep``, ``plot`` and ``report`` commands on a tiny sweep, and their one-line
errors."""
from __future__ import annotations

import pytest

from tests.experiments.test_sweep import write_config


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: corpora and tokenizer are built once."""
    return tmp_path_factory.mktemp("sweep-cache")


@pytest.fixture
def cli():
    from planner.cli import cli as group
    from planner.cli.experiments import plot, report, sweep

    for command in (sweep, plot, report):
        group.add_command(command)
    return group


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``specplan ARGS`` through the real entry point (exit status, stdout, stderr)."""
    from planner.cli import main

    monkeypatch.setattr("sys.argv", ["specplan", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_cli_sweep_plot_report(tmp_path, corpus_dir, shared_cache, cli, monkeypatch, capsys):
    path = write_config(tmp_path, corpus_dir, spec_budgets="[1e9]", domain_tokens="['512']")
    code, out, err = run_main(monkeypatch, capsys, "--cache", str(shared_cache), "sweep",
                              str(path), "--out", str(tmp_path / "res"))
    assert code == 0, err
    assert "results.parquet" in out and "[2/2]" in err
    code, out, _ = run_main(monkeypatch, capsys, "plot", str(tmp_path / "res"), "--kind",
                            "pretrain")
    assert code == 0
    assert (tmp_path / "res" / "plots" / "pretrain.png").stat().st_size > 1000
    code, out, _ = run_main(monkeypatch, capsys, "report", str(tmp_path / "res" / "results.csv"))
    assert code == 0
    page = (tmp_path / "res" / "report.html").read_text()
    assert "data:image/png;base64," in page and "specplan --cache" in page


@pytest.mark.parametrize("args, message", [
    (["sweep", "missing.toml"], "error: sweep config missing.toml: no such file"),
    (["plot", "nowhere.csv", "--kind", "spec"], "error: nowhere.csv: no such results file"),
    (["report", "."], "error: .: no results.parquet or results.csv here"),
])
def test_cli_bad_input_is_one_line_and_exit_2(cli, monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert err.strip().startswith(message) and err.count("\n") == 1
