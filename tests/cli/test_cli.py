"""The CLI as a user runs it: help, JSON output, train/eval round trip, one-line errors."""
import json

import pytest
from click.testing import CliRunner

from planner.cli import cli, main


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr("sys.argv", ["specplan", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_help_everywhere():
    for args in ([], ["data"], ["data", "demo"], ["train"], ["eval"], ["run"], ["plan"],
                 ["worker"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_train_then_fine_tune_then_eval(corpus_dir, tmp_path):
    cache, base, tuned = tmp_path / "cache", tmp_path / "base", tmp_path / "tuned"
    result = invoke("--cache", str(cache), "--json", "train", "--corpus",
                    str(corpus_dir / "generic.jsonl"), "--size", "tiny", "--seq-len", "32",
                    "--steps", "30", "--batch-size", "8", "--eval-every", "10", "--out", str(base))
    pre = json.loads(result.stdout)
    assert pre["ledger"]["generic"]["tokens"] == 30 * 8 * 32
    assert (base / "model.safetensors").exists() and (base / "tokenizer.json").exists()
    config = tmp_path / "ft.toml"
    config.write_text(f'corpus = "{corpus_dir / "law.jsonl"}"\ninit = "{base}"\nsteps = 20\n'
                      f'batch-size = 8\neval-every = 5\nearly-stopping = 2\nlr = 1e-3\n'
                      f'out = "{tuned}"\n')
    result = invoke("--cache", str(cache), "--json", "train", "--config", str(config))
    ft = json.loads(result.stdout)
    assert ft["ppl_after"] < ft["ppl_before"]  # fine-tuning on the domain helps it
    assert ft["ledger"]["specialization"]["tokens"] > 0
    assert ft["ledger"]["generic"]["tokens"] == 0
    result = invoke("--cache", str(cache), "--json", "eval", str(tuned), "--domain",
                    str(corpus_dir / "law.jsonl"), "--domain", str(corpus_dir / "code.jsonl"))
    ev = json.loads(result.stdout)
    assert ev["perplexity"]["law"] < ev["perplexity"]["code"]
    assert ev["speed"]["tokens_per_second"] > 0
    assert ev["ledger"]["inference"]["tokens"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["train", "--corpus", "nowhere.jsonl", "--steps", "1"], "nowhere.jsonl"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--budget", "2h@tpu"], "unknown device"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--budget", "10"], "smaller than one optimizer"),
    (["train", "--corpus", "{corpus}/law.jsonl", "--steps", "1", "--device", "abacus"],
     "unknown device"),
    (["run", "gpt", "--demo", "--pretrain-budget", "1e9", "--spec-budget", "1e9"],
     "unknown strategy"),
    (["run", "slm", "--generic", "{corpus}/generic.jsonl", "--domain", "{corpus}/law.jsonl",
      "--pretrain-budget", "1e9", "--spec-budget", "1e9", "--set", "k=3"], "unknown setting"),
    (["train", "--config", "{tmp}/bad.toml"], "unknown key"),
])
def test_bad_input_is_one_line_exit_2(args, fragment, corpus_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.toml").write_text('corpus = "x"\nlearning_rate = 1\n')
    args = [a.format(corpus=corpus_dir, tmp=tmp_path) for a in args]
    code, out, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), *args)
    assert code == 2
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("specplan: "))  # progress lines may come first
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list((tmp_path / "c").glob("**/model.safetensors"))  # nothing trained


def test_undecodable_and_tiny_corpora(tmp_path, monkeypatch, capsys):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.txt").write_bytes(b"\xff\xfe\xfa not text")
    code, _, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), "train",
                            "--corpus", str(tmp_path / "bin"), "--steps", "1")
    assert code == 2 and "a.txt" in err
    (tmp_path / "small.txt").write_text("one short document\n\nanother\n\nthird")
    code, _, err = run_main(monkeypatch, capsys, "--cache", str(tmp_path / "c"), "train",
                            "--corpus", str(tmp_path / "small.txt"), "--steps", "1",
                            "--vocab-size", "300")
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("specplan: "))  # progress lines come first
    assert code != 0 and err.count("\n") == 1
