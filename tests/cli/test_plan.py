"""``specplan plan`` as a process: errors a user can fix are one line."""
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
