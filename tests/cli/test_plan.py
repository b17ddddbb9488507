"""``specplan plan`` as a process: errors a user can fix are one line."""
import pytest

from tests.search.test_plan import cli


def test_cli_plan_errors_are_one_line(corpus_dir, tmp_path):
    proc = cli("plan", "--generic", str(corpus_dir / "generic.jsonl"), "--domain",
               str(tmp_path / "missing.jsonl"), "--pretrain-budget", "1e9", "--spec-budget",
               "1e9", "--out", str(tmp_path / "o"), cache=tmp_path / "c")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [line for line in stderr.splitlines() if not line.startswith("specplan: ")]
    assert len(lines) == 1 and "missing.jsonl" in lines[0]  # after the progress lines
    assert "Traceback" not in stderr


def test_n_defaults_to_the_domains_given(corpus_dir, tmp_path, monkeypatch, capsys):
    import json

    from tests.conftest import specplan

    code, out, err = specplan(
        monkeypatch, capsys, "--cache", str(tmp_path / "cache"), "--json", "plan",
        "--generic", str(corpus_dir / "generic.jsonl"), "--domain", str(corpus_dir / "law.jsonl"),
        "--domain", str(corpus_dir / "bio.jsonl"), "--pretrain-budget", "8e9", "--spec-budget",
        "2e9", "--sizes", "tiny", "--large", "small", "--strategies", "slm", "--trials", "1",
        "--gpus", "none", "--device", "cpu", "--seq-len", "32", "--vocab-size", "300",
        "--batch-size", "8", "--out", str(tmp_path / "out"))
    assert code == 0, err
    doc = json.loads(out)
    cost = doc["measured_cost"]
    assert doc["budgets"]["domains_count"] == 2
    assert cost["total_flops_for_n_domains"] == pytest.approx(
        cost["generic_flops"] + 2 * cost["spec_flops_per_domain"])


def test_an_early_plan_from_the_command_line_writes_its_forecast_figure(corpus_dir, tmp_path,
                                                                         monkeypatch, capsys):
    import json

    from tests.conftest import specplan

    code, out, err = specplan(
        monkeypatch, capsys, "--cache", str(tmp_path / "cache"), "--json", "plan",
        "--generic", str(corpus_dir / "generic.jsonl"), "--domain", str(corpus_dir / "law.jsonl"),
        "--domain", str(corpus_dir / "bio.jsonl"), "--pretrain-budget", "4e11", "--spec-budget",
        "2e10", "--inference-budget", "200k", "--strategies", "slm,slm-nopt", "--gpus", "none",
        "--seq-len", "32", "--vocab-size", "300", "--batch-size", "8",
        "--out", str(tmp_path / "out"))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "early" and doc["budgets"]["domains_count"] == 2
    assert doc["planning"]["search_flops"] <= 0.5 * doc["planning"]["project_flops"]
    assert "specplan: planning early: proxy runs within 2.2e+11 FLOPs" in err
    assert (tmp_path / "out" / "forecast.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "forecast.svg").is_file()
