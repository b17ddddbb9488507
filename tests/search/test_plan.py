"""The planner end to end on the synthetic corpus: search, choice, outputs, resume, errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from transformers import AutoModelForCausalLM

from planner.core.errors import BudgetError, SpecplanError
from planner.search.study import PlanSpec

STRATEGIES = ["slm", "slm-nopt"]


def spec_for(cache, **overrides):
    values = dict(
        generic=None, domains=[], demo=False, demo_domains=[], pretrain_flops=8e9,
        spec_flops=2e9, inference={"params": None, "flops_per_token": None}, domain_tokens=None,
        domains_count=1, strategies=STRATEGIES, trials=3, sizes=["tiny"], large="small",
        seq_len=32, vocab_size=300, batch_size=8, eval_every=10, cache_dir=str(cache),
        device="cpu",
    )
    values.update(overrides)
    return PlanSpec.from_dict(values)


def test_plan_chooses_builds_and_reports(tiny_inputs, tmp_path):
    from planner.search.plan import plan

    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    # Priced for 50 domains, under a cap the large model breaks: the study's guidance is
    # importance sampling (50 x 2e9 specialization FLOPs reach the 8e9 of pretraining).
    task = tmp_path / "law_qa.jsonl"
    task.write_text(json.dumps({"question": "law document 3: the court",
                                "choices": [" shall", " protein", " lambda"], "answer": 0}))
    spec = spec_for(tmp_path / "cache", domains_count=50, inference={"params": 200_000},
                    tasks=[["law", str(task)]])
    result = plan(spec, tmp_path / "out", inputs=inputs)
    doc = json.loads((tmp_path / "out" / "plan.json").read_text())
    qa = doc["tasks"]["law_qa"]  # scored on the chosen model, recorded beside its perplexity
    assert qa["domain"] == "law" and qa["items"] == 1 and qa["accuracy"] in (0.0, 1.0)
    assert "task law_qa (law, 1 items): accuracy" in result.summary
    assert doc["strategy"] in STRATEGIES
    assert doc["perplexity"]["test"]["law"] > 1
    assert doc["measured_cost"]["generic_flops"] <= 8e9
    trials = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 3
    tried = {line.split(",")[2] for line in trials[1:]}
    assert tried == set(STRATEGIES)  # a default trial per strategy ran
    model = AutoModelForCausalLM.from_pretrained(doc["model_dirs"]["law"])
    assert model.num_parameters() == doc["estimated_cost"]["params_inference"]
    assert "chosen:" in result.summary and "*" in result.summary
    # the second trial of a strategy reuses its pretraining: said in trials.csv
    assert "reference study's guidance" in result.summary
    # The finished trials, one row per domain, in the results-table layout forecasts read.
    from planner.run.results import read_results

    table = read_results(tmp_path / "out")
    assert sorted(table["trial"]) == [0, 1, 2] and set(table["domain"]) == {"law"}
    # Every trial scored the task (informative only: the choice is by perplexity).
    assert set(table["task:law_qa"]) <= {0.0, 1.0} and table["task:law_qa"].notna().all()
    assert doc["objective"] == {"rank_by": "ppl", "min_task": {}}
    best = table[table["trial"] == doc["trial"]].iloc[0]
    assert best["ppl_after"] == pytest.approx(doc["perplexity"]["validation"]["law"])
    assert best["generic_tokens"] > 0 or best["strategy"] == "slm-nopt"
    # No --domain-tokens: the domain's size is what its training split holds.
    assert (table["domain_tokens"] == inputs.domains["law"].train.tokens).all()
    # The report on this folder states the plan's guidance: both price the same N.
    from experiments.conclusions import regimes

    assert doc["budgets"]["domains_count"] == 50 and (table["domains_count"] == 50).all()
    assert doc["reference_guidance"]["strategy"] == "slm-is"
    assert set(regimes(table)["guided"]) == {"slm-is"}
    assert "at a total cost for 50 domain(s)" in doc["why"]
    # What choosing cost: every trial's spend, against pretraining + 50 x specialization.
    cost = doc["planning"]
    assert cost["project_flops"] == 8e9 + 50 * 2e9 and cost["trials_counted"] == 3
    assert 0 < cost["search_flops"] <= 3 * (8e9 + 2e9)
    assert cost["search_share_of_project"] == pytest.approx(cost["search_flops"] / 1.08e11)
    assert "planning cost: the search spent" in result.summary


def test_budgets_that_fit_no_strategy_name_each_minimum(tiny_inputs, tmp_path):
    from planner.search.plan import plan

    with pytest.raises(BudgetError, match="fit no strategy: slm needs >= .* slm-nopt needs"):
        plan(spec_for(tmp_path, pretrain_flops=10.0, spec_flops=10.0), tmp_path / "out",
             inputs=tiny_inputs)
    assert not (tmp_path / "out" / "plan.json").exists()


def test_unreachable_storage_is_one_clear_error(tmp_path):
    from planner.search.study import open_storage

    with pytest.raises(SpecplanError, match="cannot open the study storage"):
        open_storage("postgresql://nobody@127.0.0.1:9/none", tmp_path)


def test_absent_gpus_are_refused():
    from planner.engine.devices import parse_gpus

    with pytest.raises(SpecplanError, match="not present"):
        parse_gpus("7")


def cli(*args, cache, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "planner.cli", "--cache", str(cache), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            **kwargs)


def plan_args(corpus_dir, out, trials=4, pretrain_budget="8e9"):
    return ["plan", "--generic", str(corpus_dir / "generic.jsonl"),
            "--domain", str(corpus_dir / "law.jsonl"), "--pretrain-budget", pretrain_budget,
            "--spec-budget", "2e9", "--sizes", "tiny", "--large", "small", "--seq-len", "32",
            "--vocab-size", "300", "--batch-size", "8", "--strategies", "slm,slm-nopt",
            "--trials", str(trials), "--gpus", "none", "--out", str(out)]


def finished(out):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(out / "study.journal")
    if not os.path.exists(path):
        return []
    storage = optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        return []
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    return study.get_trials(deepcopy=False)


def test_sigkill_then_rerun_keeps_finished_trials(corpus_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # Pretraining long enough (about a second a trial) that the kill lands inside a trial.
    args = plan_args(corpus_dir, out, pretrain_budget="6e10")
    proc = cli(*args, cache=cache)
    deadline = time.time() + 240
    while time.time() < deadline:
        states = [t.state.name for t in finished(out)]
        if "COMPLETE" in states and "RUNNING" in states:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        out_text, err_text = proc.communicate()
        pytest.fail(f"the plan never had a finished and a running trial (last: {states}); "
                    f"{err_text[-1500:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.value for t in finished(out) if t.state.name == "COMPLETE"}
    assert before and not (out / "plan.json").exists()
    rerun = cli(*args, cache=cache)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    trials = finished(out)
    after = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    for number, value in before.items():
        assert after[number] == value  # kept, not run again
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4  # the killed trial was retried, nothing ran twice
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["failure"] == "worker killed"
    assert (out / "plan.json").exists()


def test_frontier_mode_returns_the_pareto_set(tiny_inputs, tmp_path):
    from planner.search.plan import plan

    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    result = plan(spec_for(tmp_path / "cache", frontier=True, trials=2), tmp_path / "out",
                  inputs=inputs)
    pareto = result.plan["pareto_trials"]
    assert pareto  # non-dominated in (perplexity, total cost)
    import pandas as pd

    trials = pd.read_csv(tmp_path / "out" / "trials.csv").set_index("trial")
    for number in pareto:
        others = trials.drop(index=number)
        me = trials.loc[number]
        dominated = ((others["macro_ppl"] <= me["macro_ppl"])
                     & (others["total_flops"] <= me["total_flops"])
                     & ((others["macro_ppl"] < me["macro_ppl"])
                        | (others["total_flops"] < me["total_flops"])))
        assert not dominated.any()


def test_out_of_memory_trial_fails_with_reason_and_study_goes_on(tiny_inputs, tmp_path,
                                                                 monkeypatch):
    import torch

    import planner.run.runner
    import planner.search.study
    from planner.search.plan import plan

    real = planner.run.runner.run_strategy

    def run(name, *args, **kwargs):
        if name == "slm-nopt":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(planner.search.study, "run_strategy", run)
    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    result = plan(spec_for(tmp_path / "cache", trials=2), tmp_path / "out", inputs=inputs)
    assert result.plan["strategy"] == "slm"
    import pandas as pd

    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) >= 1 and (failed["strategy"] == "slm-nopt").all()
    assert failed["status"].str.contains("out of memory").all()


def test_a_trial_its_domain_refuses_is_rejected_and_the_search_goes_on(tiny_inputs, tmp_path):
    """Without --domain-tokens, slm-d prices its teacher passes only once it sees the domain:
    the trial is rejected with the reason, not the plan."""
    from planner.search.plan import plan

    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    spec = spec_for(tmp_path / "cache", strategies=["slm", "slm-d"], trials=2, spec_flops=4e9)
    result = plan(spec, tmp_path / "out", inputs=inputs)
    trials = {row["strategy"]: row for row in
              __import__("csv").DictReader((tmp_path / "out" / "trials.csv").open())}
    assert trials["slm-d"]["state"] == "PRUNED"
    assert "teacher passes" in trials["slm-d"]["status"]
    assert result.plan["strategy"] == "slm"


def test_a_killed_trial_resumes_its_pretraining_from_the_last_checkpoint(corpus_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*plan_args(corpus_dir, out, trials=1, pretrain_budget="6e10"),
            "--checkpoint-every", "5"]
    args[args.index("--strategies") + 1] = "slm"

    def checkpointed_step():
        states = list((cache / "checkpoints").glob("*/*/last/state.json"))
        return json.loads(states[0].read_text())["step"] if states else 0

    proc = cli(*args, cache=cache)
    deadline = time.time() + 240
    while checkpointed_step() < 20:
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no checkpoint at step 20: {proc.communicate()[1][-1500:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpointed_step()
    rerun = cli(*args, cache=cache)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-1500:]
    (artifact,) = (cache / "artifacts").glob("slm-*")
    entries = json.loads((artifact / "ledger.json").read_text())["entries"]
    before, now = [e for e in entries if e["label"].startswith("slm pretraining")]
    # The retry ran only the steps after the checkpoint, yet the artifact's cost is all of them.
    assert before["label"].endswith(f"(steps 1-{killed_at}, before resuming)")
    assert before["tokens"] == killed_at * 8 * 32 and now["tokens"] > 0
    one_step = before["flops"] / killed_at
    assert 6e10 - one_step < before["flops"] + now["flops"] <= 6e10
    assert not list((cache / "checkpoints").glob("*/*"))  # spent once the artifact is built


def test_plan_refuses_a_task_of_another_domain_before_searching(tiny_inputs, tmp_path):
    from planner.search.plan import plan

    inputs = type(tiny_inputs)(tiny_inputs.generic, {"law": tiny_inputs.domains["law"]},
                               tiny_inputs.tokenizer)
    task = tmp_path / "bio_qa.jsonl"
    task.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 1}))
    with pytest.raises(SpecplanError, match="domain 'bio' is not evaluated .*are law"):
        plan(spec_for(tmp_path / "cache", tasks=[["bio", str(task)]]), tmp_path / "out",
             inputs=inputs)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
