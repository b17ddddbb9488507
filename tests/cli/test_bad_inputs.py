"""A battery of user mistakes through the real entry point: each is exit 2, one line on stderr
naming the input and the fix, no traceback, and the file system as it was.

Progress (``specplan: ...``) and warning (``warning: ...``) lines may come before the error;
the error is the one other line. The cache lives outside the snapshot: it is a cache.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import specplan

CORPUS = ["--seq-len", "32", "--vocab-size", "300"]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def work(tmp_path, corpus_dir):
    """A folder of good and bad inputs; a case may only read it."""
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("generic.jsonl", "law.jsonl"):
        (folder / name).write_bytes((corpus_dir / name).read_bytes())
    (folder / "data.xml").write_text("<doc>text</doc>")
    (folder / "broken.jsonl").write_text('{"text": "fine"}\n{"text": oops\n')
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait\n\nsecond document".encode("latin-1"))
    (folder / "empty.txt").write_text("\n\n   \n")
    (folder / "one-line.txt").write_text("law document: the court shall hereby decide\n")
    (folder / "a-file").write_text("not a folder")
    (folder / "sweep.toml").write_text("name = 'x'\nnot toml = = =\n")
    (folder / "bert").mkdir()
    (folder / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 300,
             "max_position_embeddings": 256}
    bases = {  # checkpoint folders with one thing wrong each (only their files are read)
        "no-tokenizer": (llama, ["model.safetensors"]),
        "pickled": (llama, ["tokenizer.json", "pytorch_model.bin"]),
        "short": ({**llama, "max_position_embeddings": 16}, ["tokenizer.json"]),
        "huge": ({**llama, "hidden_size": 16384, "num_hidden_layers": 400,
                  "num_attention_heads": 128, "intermediate_size": 53248}, []),
    }
    for name, (config, files) in bases.items():
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(config))
        for file in files:
            (folder / name / file).write_text("{}")
    return folder


def plan_args(work, *extra, out="out", generic="generic.jsonl", domain="law.jsonl"):
    return ["plan", "--generic", str(work / generic), "--domain", str(work / domain),
            "--pretrain-budget", "8e9", "--spec-budget", "2e9", "--sizes", "tiny",
            "--strategies", "slm", "--trials", "1", "--gpus", "none", "--device", "cpu",
            *CORPUS, "--out", str(work / out), *extra]


def W(path):  # a path inside the work folder, filled in by the test
    return ("W", path)


CASES = {
    # files and formats
    "missing generic": (["plan", "--generic", W("missing.jsonl"), "--domain", W("law.jsonl")],
                        ["missing.jsonl", "check the corpus path"]),
    "missing domain": (["plan", "--domain", W("nowhere.jsonl")], ["nowhere.jsonl"]),
    "unknown format": (["plan", "--domain", W("data.xml")], ["data.xml", "unknown corpus format"]),
    "broken jsonl": (["plan", "--domain", W("broken.jsonl")], ["broken.jsonl:2", "not valid JSON"]),
    "missing field": (["plan", "--text-field", "body"], ["'body'", "--text-field"]),
    "undecodable bytes": (["plan", "--domain", W("latin1.txt")], ["latin1.txt",
                                                                  "--encoding latin-1"]),
    "unknown encoding": (["plan", "--encoding", "klingon"], ["klingon", "utf-8 or latin-1"]),
    "blank corpus": (["plan", "--domain", W("empty.txt")], ["empty.txt", "no non-blank"]),
    "one-line domain": (["plan", "--domain", W("one-line.txt")],
                        ["one-line", "too small", "at least 3 documents"]),
    # budgets
    "unreadable budget": (["plan", "--pretrain-budget", "lots"], ["--pretrain-budget", "'lots'"]),
    "budget beyond a year": (["plan", "--pretrain-budget", "1e99"],
                             ["--pretrain-budget 1e99", "years", "--yes"]),
    "spec budget beyond a year": (["plan", "--spec-budget", "1e40"], ["--spec-budget", "--yes"]),
    "unknown budget device": (["plan", "--spec-budget", "2h@tpu9"], ["'tpu9'", "2h@a100"]),
    "unknown time unit": (["plan", "--spec-budget", "2w@cpu"], ["unknown time unit", "'w'"]),
    "inference below the smallest": (["plan", "--sizes", "", "--inference-budget", "10"],
                                     ["--inference-budget", "smallest (tiny)", "raise"]),
    "bad domain tokens": (["plan", "--domain-tokens", "many"], ["--domain-tokens", "64k"]),
    # sizes and counts
    "zero trials": (["plan", "--trials", "0"], ["--trials 0", "at least 1"]),
    # ranking by a task
    "objective task without a task": (["plan", "--objective", "task"],
                                      ["--objective: name the task", "add --task DOMAIN=PATH"]),
    "objective mix without a rate": (["plan", "--objective", "mix:qa"],
                                     ["--objective 'mix:qa': a mix is mix:NAME:X"]),
    "objective unknown": (["plan", "--objective", "accuracy"],
                          ["--objective 'accuracy'", "ppl, task, task:NAME", "or mix:NAME:X"]),
    "objective names no task": (["plan", "--objective", "task:nope"],
                                ["--objective: no task named 'nope'", "--task DOMAIN=PATH"]),
    "min task out of range": (["plan", "--min-task", "law_qa=1.5"],
                              ["--min-task 'law_qa=1.5'", "between 0 and 1"]),
    "min task names no task": (["plan", "--min-task", "nope=0.5"],
                               ["--min-task: no task named 'nope'"]),
    # the early plan's planning budget
    "planning budget on an exhaustive plan": (["plan", "--planning-budget", "1e10"],
                                              ["--planning-budget", "--exhaustive"]),
    "planning budget too small": (["plan", "--trials", None, "--planning-budget", "1e3"],
                                  ["--planning-budget 1e+03 FLOPs cannot calibrate slm",
                                   "raise --planning-budget", "--exhaustive"]),
    "planning budget over the project": (["plan", "--trials", None, "--planning-budget",
                                          "1e11"], ["at least the project's own cost",
                                                    "--exhaustive"]),
    "planning budget beyond a year": (["plan", "--trials", None, "--planning-budget", "1e30"],
                                      ["--planning-budget 1e30", "years", "--yes"]),
    "zero seq-len": (["plan", "--seq-len", "0"], ["--seq-len", "at least 1"]),
    "zero batch": (["plan", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    "batch tokens off the window": (["plan", "--batch-tokens", "100"],
                                    ["--batch-tokens", "multiple of the window", "use 96"]),
    "micro-batch off the batch": (["plan", "--batch-size", "8", "--micro-batch", "3"],
                                  ["--micro-batch", "does not divide", "8 windows"]),
    "unknown size": (["plan", "--sizes", "huge"], ["huge"]),
    "unknown large size": (["plan", "--large", "giant"], ["--large", "giant"]),
    "heads off the width": (["plan", "--sizes", "d=100,layers=2,heads=3,ff=64"],
                            ["--sizes", "d=100", "not divisible by num_attention_heads=3"]),
    "kv heads off the heads": (["run", "slm", "--demo", "--small",
                                "d=64,layers=2,heads=4,kv_heads=3,ff=64"],
                               ["--small", "num_key_value_heads=3 does not divide"]),
    "a ratio as the deployed size": (["plan", "--sizes", "6x"], ["--sizes", "for the large"]),
    "encoder-only config": (["plan", "--sizes", W("bert")], ["'bert' is an encoder-only",
                                                             "decoders"]),
    "not a config folder": (["models", W("a-file/")], ["a-file", "no config.json"]),
    "unknown spec key": (["models", "d=64,layers=2,heads=2,ff=64,depth=3"],
                         ["'depth=3'", "KEY=VALUE"]),
    # base checkpoints
    "base not a checkpoint": (["run", "slm", "--demo", "--base", W("a-file/")],
                              ["--base", "not a checkpoint folder (no config.json)"]),
    "base encoder-only": (["run", "slm", "--demo", "--base", W("bert")],
                          ["--base", "'bert' is an encoder-only model"]),
    "base without tokenizer": (["run", "slm", "--demo", "--base", W("no-tokenizer")],
                               ["no-tokenizer", "no tokenizer (tokenizer.json)"]),
    "base pickled weights": (["run", "slm", "--demo", "--base", W("pickled")],
                             ["pytorch_model.bin", "safetensors", "--allow-pickle"]),
    "base shorter than the window": (["run", "slm", "--demo", "--seq-len", "32", "--base",
                                      W("short")], ["--seq-len 32", "16 positions"]),
    "base too big for memory": (["run", "slm", "--demo", "--base", W("huge")],
                                ["huge", "GiB", "free", "smaller checkpoint"]),
    "base cost without base": (["run", "slm", "--demo", "--base-cost", "1e12"],
                               ["--base-cost", "give --base too"]),
    # strategies and settings
    "unknown strategy": (["plan", "--strategies", "slm,magic"], ["magic"]),
    "unknown embedder": (["plan", "--embedder", "word2vec"], ["--embedder", "word2vec"]),
    "unknown pruner": (["plan", "--pruner", "random"], ["--pruner", "asha"]),
    "run unknown strategy": (["run", "magic", "--demo"], ["magic"]),
    "run bad --set": (["run", "slm", "--set", "k"], ["--set 'k'", "KEY=VALUE"]),
    # storages
    "unreachable server": (["plan", "--storage", "postgresql://nobody@127.0.0.1:9/none"],
                           ["postgresql://nobody@127.0.0.1:9/none", "cannot be reached"]),
    "missing driver": (["plan", "--storage", "mysql://user@localhost/db"],
                       ["mysql://user@localhost/db", "driver is not installed"]),
    "unknown database": (["plan", "--storage", "nosuchdb://x"], ["unknown database kind"]),
    # devices
    "unknown device": (["plan", "--device", "tpu"], ["'tpu'", "cpu"]),
    "absent gpus": (["plan", "--gpus", "7"], ["--gpus 7", "not present"]),
    # folders
    "out is a file": (["plan", "--out", W("a-file")], ["a-file", "is a file"]),
    "out under a file": (["plan", "--out", W("a-file/out")], ["a-file", "is a file"]),
    # commands and modes
    "demo and paths": (["plan", "--demo", "--generic", W("generic.jsonl"), "--out", W("o")],
                       ["--demo", "not both"]),
    "no data": (["run", "slm", "--pretrain-budget", "1e9", "--spec-budget", "1e9"],
                ["--generic", "--domain"]),
    "missing --out": (["plan", "--demo", "--out", None], ["--out"]),
    "stats of a missing file": (["data", "stats", W("missing.txt")], ["missing.txt"]),
    "stats of latin-1 bytes": (["data", "stats", W("generic.jsonl"), W("latin1.txt")],
                               ["latin1.txt", "--encoding latin-1"]),
    "train without corpus": (["train", "--steps", "1"], ["--corpus is required"]),
    "train missing config": (["train", "--config", W("none.toml")], ["none.toml", "no such"]),
    "eval of a non-model": (["eval", W("law.jsonl"), "--domain", W("law.jsonl")],
                            ["not a model folder"]),
    "sweep bad toml": (["sweep", W("sweep.toml")], ["sweep.toml"]),
    "calibrate without planning budget": (["forecast", "--calibrate", "--demo"],
                                          ["--planning-budget"]),
    "calibrate beyond a year": (["forecast", "--calibrate", "--demo", "--planning-budget",
                                 "1e60"], ["--planning-budget 1e60", "years", "--yes"]),
}


def build(work, args):
    """Fill in paths; a ``plan`` case without --demo gets the good defaults it leaves out, and
    an option given as None is left out."""
    resolved = [str(work / a[1]) if isinstance(a, tuple) else a for a in args]
    if resolved[0] == "plan" and "--demo" not in resolved:
        given = set(resolved)
        base = plan_args(work)[1:]
        pairs = [base[i:i + 2] for i in range(0, len(base), 2)]
        resolved = ["plan", *[x for flag, value in pairs if flag not in given
                              for x in (flag, value)], *resolved[1:]]
    while None in resolved:
        at = resolved.index(None)
        resolved = resolved[:at - 1] + resolved[at + 1:]
    return resolved


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(case, work, tmp_path, monkeypatch,
                                                          capsys):
    args, expected = CASES[case]
    before = snapshot(work)
    code, out, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "cache"),
                              *build(work, args))
    lines = [line for line in err.splitlines()
             if not line.startswith(("specplan: ", "warning: "))]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert snapshot(work) == before


def test_read_only_out_folder_is_one_line(work, tmp_path, monkeypatch, capsys):
    """A folder without write permission; as root (CI), which writes through permissions, a
    folder of Linux's /proc, where nobody can create one."""
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = "locked/out" if os.geteuid() else "/proc/specplan-out"
    before = snapshot(work)
    try:
        code, _, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "cache"),
                                *plan_args(work, out=out))
    finally:
        locked.chmod(0o755)
    assert code == 2 and err.startswith("error: ") and "is not writable" in err, err
    assert len(err.strip().splitlines()) == 1 and snapshot(work) == before


def test_a_domain_that_is_the_generic_corpus_is_warned_with_the_overlap(work, tmp_path,
                                                                        monkeypatch, capsys):
    # --pruner fails after the data is read, so the warning shows without any training.
    code, _, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "cache"),
                            *plan_args(work, "--pruner", "random", domain="generic.jsonl"))
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 2 and len(warnings) == 1
    assert "is the generic corpus file" in warnings[0] and "100%" in warnings[0]


def test_a_domain_copied_from_the_generic_corpus_is_warned(work, tmp_path, monkeypatch, capsys):
    texts = [json.loads(line)["text"] for line in (work / "generic.jsonl").read_text().splitlines()]
    copy = work / "copy.jsonl"
    copy.write_text("".join(json.dumps({"text": t.upper()}) + "\n" for t in texts[:40]))
    code, _, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "cache"),
                            *plan_args(work, "--pruner", "random", domain="copy.jsonl"))
    assert "overlaps the generic corpus: 100% of its 40 documents" in err


def test_progress_starts_at_once_and_json_stays_clean(work, tmp_path, monkeypatch, capsys):
    code, out, err = specplan(monkeypatch, capsys, "--cache", str(tmp_path / "cache"), "--json",
                              *plan_args(work, "--pruner", "random"))
    assert out == ""
    assert "specplan: reading the generic corpus" in err
    assert "specplan: training a 300-token BPE tokenizer" in err


# -- interrupts ---------------------------------------------------------------------------------
def cli(*args, cache):
    """``specplan ARGS`` as a child process that a SIGINT interrupts. A suite started in the
    background by a non-interactive shell (``make test &``) inherits SIGINT ignored, and Python
    keeps an ignored SIGINT ignored: the child gets the default back, as at a terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "planner.cli", "--cache", str(cache), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def trials_of(out):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(out / "study.journal")
    if not os.path.exists(path):
        return []
    storage = optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=names[0], storage=storage).get_trials() if names else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_and_the_rerun_retries_the_trial(sig, corpus_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["plan", "--generic", str(corpus_dir / "generic.jsonl"), "--domain",
            str(corpus_dir / "law.jsonl"), "--pretrain-budget", "6e10", "--spec-budget", "2e9",
            "--sizes", "tiny", "--large", "small", *CORPUS, "--batch-size", "8", "--strategies",
            "slm,slm-nopt", "--trials", "3", "--gpus", "none", "--device", "cpu",
            "--out", str(out)]
    proc = cli(*args, cache=cache)
    deadline, states = time.time() + 240, []
    while time.time() < deadline:
        states = [t.state.name for t in trials_of(out)]
        if "COMPLETE" in states and "RUNNING" in states:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"never a finished and a running trial ({states}): {proc.communicate()[1]}")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "re-run the same command" in last
    before = {t.number: t.value for t in trials_of(out) if t.state.name == "COMPLETE"}
    interrupted = [t for t in trials_of(out) if t.user_attrs.get("failure") == "interrupted"]
    # A one-second trial can finish between the poll and the signal, which then lands while
    # the next one is sampled: no trial is interrupted then, and none is retried.
    assert len(interrupted) <= 1 and not (out / "plan.json").exists()
    rerun = cli(*args, cache=cache)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    trials = trials_of(out)
    after = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    assert all(after[n] == v for n, v in before.items())  # kept, not run again
    for stopped in interrupted:
        retries = [t for t in trials if t.user_attrs.get("retry_of") == stopped.number]
        # The retry starts from what the interrupted trial had sampled (all of it, or only the
        # strategy when the signal landed while it was still sampling).
        assert len(retries) == 1 and stopped.params.items() <= retries[0].params.items()
        assert retries[0].state.name in ("COMPLETE", "PRUNED")
    assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 3
    assert (out / "plan.json").exists()


def test_an_interrupted_run_leaves_no_half_set_of_models(work, tmp_path, monkeypatch, capsys):
    from strategies.small_model import SmallModelStrategy

    real, calls = SmallModelStrategy.specialize, []

    def interrupted_on_the_second_domain(self, *args):
        calls.append(1)
        if len(calls) == 2:  # the first domain's model is exported by now
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(SmallModelStrategy, "specialize", interrupted_on_the_second_domain)
    before = snapshot(work)
    code, _, err = specplan(
        monkeypatch, capsys, "--cache", str(tmp_path / "cache"), "run", "slm",
        "--generic", str(work / "generic.jsonl"), "--domain", str(work / "law.jsonl"),
        "--domain", str(work / "generic.jsonl"), "--pretrain-budget", "8e9",
        "--spec-budget", "1e9", "--small", "tiny", "--device", "cpu", *CORPUS,
        "--out", str(work / "models"))
    assert code == 130 and len(calls) == 2, err
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert snapshot(work) == before  # no OUT folder with one domain's model in it


def interrupt_when(args, ready, *, cache, sig=signal.SIGINT, timeout=240):
    """Start ``specplan ARGS``, send ``sig`` once ``ready()`` holds; (exit code, stderr)."""
    proc = cli(*args, cache=cache)
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"never ready to interrupt: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def rows_of(path):
    import pandas as pd

    if not (path.is_file() and path.stat().st_size):
        return None
    return pd.read_csv(path, dtype={"run_id": str})  # a hex id like 3702e07 is not a number


def assert_one_interrupted_line(code, stderr, kept):
    assert code == 130 and "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and kept in last and "re-run the same command" in last


def test_an_interrupted_sweep_keeps_whole_points_and_resumes(corpus_dir, tmp_path):
    out, config = tmp_path / "out", tmp_path / "sweep.toml"
    config.write_text(
        f"name = 'stop'\ngeneric = '{corpus_dir / 'generic.jsonl'}'\n"
        f"domains = ['{corpus_dir / 'law.jsonl'}', '{corpus_dir / 'bio.jsonl'}']\n"
        "pretrain_budgets = [4e9]\nspec_budgets = [1e9]\ndomain_tokens = ['512', '1k', '2k']\n"
        "strategies = ['slm', 'slm-nopt']\nsizes = {small = 'tiny', large = 'small'}\n"
        "seq_len = 32\nvocab_size = 300\nbatch_size = 8\neval_every = 10\neval_windows = 64\n"
        "threads = 1\ndevice = 'cpu'\n")
    args = ["sweep", str(config), "--out", str(out)]
    results = out / "results.csv"
    code, stderr = interrupt_when(args, lambda: rows_of(results) is not None,
                                  cache=tmp_path / "cache", sig=signal.SIGTERM)
    assert_one_interrupted_line(code, stderr, "finished point(s) are saved")
    kept = rows_of(results)
    assert set(kept.groupby("point").size()) == {2}  # every kept point has both domains
    rerun = cli(*args, cache=tmp_path / "cache")
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    done = rows_of(results)
    assert done["point"].nunique() == 6 and len(done) == 12
    again = done[done["point"].isin(kept["point"])].sort_values(["point", "domain"])
    assert list(again["run_id"]) == list(kept.sort_values(["point", "domain"])["run_id"])


def test_an_interrupted_calibration_keeps_its_runs_and_resumes(corpus_dir, tmp_path):
    path = tmp_path / "calibration.csv"
    args = ["forecast", "--calibrate", "--generic", str(corpus_dir / "generic.jsonl"),
            "--domain", str(corpus_dir / "law.jsonl"), "--domain-tokens", "1k",
            "--pretrain-budget", "4e11", "--spec-budget", "5e9", "--inference-budget", "200k",
            "--planning-budget", "1.2e11", "--strategies", "slm", "--results", str(path),
            *CORPUS, "--batch-size", "8", "--device", "cpu", "--n-boot", "5"]
    code, stderr = interrupt_when(args, lambda: rows_of(path) is not None,
                                  cache=tmp_path / "cache")
    assert_one_interrupted_line(code, stderr, "calibration run(s) of this session are saved")
    kept = rows_of(path)
    rerun = cli(*args, cache=tmp_path / "cache")
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    done = rows_of(path)
    assert set(kept["run_id"]) <= set(done["run_id"]) and len(done) > len(kept)
