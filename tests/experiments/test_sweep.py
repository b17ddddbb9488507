"""Sweeps: strict config files, a real tiny grid on the synthetic corpus, resume after a kill,
parallel workers and sampled mode."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments import sweep as sweep_mod
from experiments.sweep import SweepConfig, load_config, run_sweep
from planner.core.errors import SpecplanError
from planner.run.results import read_results

DOMAINS = ("law", "bio", "code")


def tiny_toml(corpus_dir, **overrides) -> str:
    """A sweep on the synthetic corpus: slm + slm-nopt, budgets in the 1e9 FLOPs range, two
    domain sizes, and a specialization budget too small for any step (rejected points)."""
    values = {
        "name": "'tiny'",
        "generic": f"'{corpus_dir / 'generic.jsonl'}'",
        "domains": "[" + ", ".join(f"'{corpus_dir / f'{d}.jsonl'}'" for d in DOMAINS) + "]",
        "pretrain_budgets": "[4e9]",
        "spec_budgets": "[1e9, 1e3]",
        "domain_tokens": "['512', '1k']",
        "strategies": "['slm', 'slm-nopt']",
        "sizes": "{small = 'tiny', large = 'small'}",
        "seq_len": "32", "vocab_size": "300", "batch_size": "8", "eval_every": "10",
        "eval_windows": "64", "threads": "1", "device": "'cpu'",
    }
    values.update(overrides)
    return "".join(f"{k} = {v}\n" for k, v in values.items() if v is not None)


def write_config(tmp_path, corpus_dir, **overrides):
    path = tmp_path / "sweep.toml"
    path.write_text(tiny_toml(corpus_dir, **overrides))
    return path


# -- config validation --------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"colour": "'red'"}, "unknown key(s) colour; valid: batch_size"),
    ({"sizes": "{small = 'tiny', huge = 'large'}"}, "unknown key(s) sizes.huge"),
    ({"sizes": "{small = 'giant'}"}, "sizes.small = 'giant': unknown model size"),
    ({"strategies": "['slm', 'gpt-5']"}, "unknown strategy 'gpt-5'"),
    ({"strategies": "['slm', 'slm']"}, "lists a value twice"),
    ({"pretrain_budgets": "['3 parsecs']"}, "cannot read '3 parsecs'"),
    ({"spec_budgets": "[]"}, "spec_budgets must be a non-empty list"),
    ({"seq_len": "'long'"}, "key seq_len must be a int"),
    ({"batch_size": "0"}, "key batch_size must be at least 1"),
    ({"mode": "'sampled'"}, "samples = N goes with mode"),
    ({"mode": "'random'"}, "use \"grid\" or \"sampled\""),
    ({"demo": "true"}, "either demo = true"),
    ({"generic": None}, "give generic = PATH"),
    ({"name": None}, "missing key(s) name"),
    ({"domain_tokens": "['lots']"}, "cannot read 'lots' as a count"),
    ({"inference_budget": "'tiny'"}, "--inference-budget: cannot read"),
    ({"embedder": "'bert'"}, "unknown embedder 'bert'"),
    ({"tracker": "'wandb'"}, "tracker: unknown tracker 'wandb'; use tensorboard"),
])
def test_config_rejects_bad_input_naming_the_key(tmp_path, corpus_dir, overrides, message):
    path = write_config(tmp_path, corpus_dir, **overrides)
    with pytest.raises(SpecplanError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_sweep_file_names_its_tracker_and_compile(tmp_path, corpus_dir):
    config = load_config(write_config(tmp_path, corpus_dir, tracker=f"'tensorboard:{tmp_path}'",
                                      compile="true"))
    assert config.run.tracker == f"tensorboard:{tmp_path}" and config.run.compile is True


def test_config_checks_strategy_settings_tables(tmp_path, corpus_dir):
    path = write_config(tmp_path, corpus_dir)
    path.write_text(path.read_text() + "[settings.slm]\nwarmth = 3\n")
    with pytest.raises(SpecplanError, match=r"\[settings.slm\]: unknown setting\(s\) warmth"):
        load_config(path)
    path.write_text(tiny_toml(corpus_dir) + "[settings.slm-mix]\nk = 4\n")
    with pytest.raises(SpecplanError, match="names a strategy the sweep does not run"):
        load_config(path)
    path.write_text(tiny_toml(corpus_dir) + "[settings.slm]\nft_lr = 3e-4\n")
    assert load_config(path).settings == {"slm": {"ft_lr": 3e-4}}


def test_config_resolves_paths_against_its_folder(tmp_path, corpus_dir):
    config = SweepConfig.from_dict(
        {"name": "x", "generic": "data/g.jsonl", "domains": ["data/d.jsonl"],
         "pretrain_budgets": ["1h@a100"], "spec_budgets": [1e9], "domain_tokens": ["4k"],
         "strategies": ["slm"]}, base_dir=tmp_path)
    assert config.data.generic == str(tmp_path / "data" / "g.jsonl")
    assert config.data.domains == (str(tmp_path / "data" / "d.jsonl"),)
    assert config.pretrain_budgets == ("1h@a100",) and config.spec_budgets == ("1e+09",)
    assert config.domain_tokens == (4000,)


def test_domain_size_beyond_the_data_fails_before_training(tmp_path, corpus_dir):
    config = load_config(write_config(tmp_path, corpus_dir, domain_tokens="['10M']"))
    with pytest.raises(SpecplanError, match="asked for 10000000 train tokens"):
        run_sweep(config, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out" / "results.csv").exists()


# -- a real tiny sweep --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: corpora and tokenizer are built once."""
    return tmp_path_factory.mktemp("sweep-cache")


def test_tiny_sweep_rows_in_csv_and_parquet(tmp_path, corpus_dir, shared_cache):
    config = load_config(write_config(tmp_path, corpus_dir))
    frame = run_sweep(config, tmp_path / "out", cache_dir=shared_cache)

    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    parquet = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(csv) == len(parquet) == len(frame)
    pd.testing.assert_frame_equal(
        csv.sort_values(["point", "domain"]).reset_index(drop=True)[["point", "domain", "status"]],
        parquet.sort_values(["point", "domain"]).reset_index(drop=True)[
            ["point", "domain", "status"]].astype(object),
        check_dtype=False)
    # 2 strategies x 2 spec budgets x 2 domain sizes (slm-nopt has no pretraining axis), each
    # with the three domains.
    assert frame["point"].nunique() == 8
    assert all(sorted(d) == sorted(DOMAINS) for _, d in frame.groupby("point")["domain"])
    ok, rejected = frame[frame["status"] == "ok"], frame[frame["status"] == "rejected"]
    assert len(ok) == len(rejected) == 12
    assert (rejected["spec_budget_flops"] == 1e3).all()
    assert rejected["error"].str.contains("specialization budget").all()
    assert rejected["ppl_after"].isna().all()
    assert (ok["ppl_after"] > 1).all() and (ok["ppl_after"] < 300).all()
    nopt = ok[ok["strategy"] == "slm-nopt"]
    assert (nopt["pretrain_budget_flops"] == 0).all() and nopt["ppl_before"].isna().all()
    slm = ok[ok["strategy"] == "slm"]
    assert (slm["ppl_after"] < slm["ppl_before"]).all()
    # One pretraining, trained by the first slm point and loaded by the second.
    reuse = slm.drop_duplicates("point").sort_values("domain_tokens")["artifact_reused"]
    assert reuse.tolist() == [False, True]
    assert slm["generic_flops"].nunique() == 1 and (slm["generic_flops"] <= 4e9).all()
    for col in ("est_generic_flops", "est_spec_flops", "spec_flops", "spec_seconds",
                "generic_seconds", "est_spec_seconds", "device", "point_seconds"):
        assert ok[col].notna().all(), col
    assert (ok["spec_flops"] <= ok["spec_budget_flops"]).all()
    assert set(ok["device"]) == {"cpu"}
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["config"]["name"] == "tiny"


def test_killed_sweep_resumes_without_losing_or_repeating_points(
        tmp_path, corpus_dir, shared_cache, monkeypatch):
    config = load_config(write_config(tmp_path, corpus_dir, spec_budgets="[1e9]"))
    out = tmp_path / "out"
    real = sweep_mod.run_point
    calls = []

    def dies_after_two(ctx, point):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside the loop
        calls.append(point.key)
        return real(ctx, point)

    monkeypatch.setattr(sweep_mod, "run_point", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, out, cache_dir=shared_cache)
    before = read_results(out)
    assert set(before["point"]) == set(calls) and len(before) == 2 * len(DOMAINS)

    resumed = []

    def counts(ctx, point):
        resumed.append(point.key)
        return real(ctx, point)

    monkeypatch.setattr(sweep_mod, "run_point", counts)
    after = run_sweep(config, out, cache_dir=shared_cache)
    assert not set(resumed) & set(calls)
    assert len(resumed) == 2 and after["point"].nunique() == 4
    kept = after[after["point"].isin(calls)].sort_values(["point", "domain"])
    pd.testing.assert_frame_equal(kept.reset_index(drop=True),
                                  before.sort_values(["point", "domain"]).reset_index(drop=True))
    monkeypatch.setattr(sweep_mod, "run_point", counts)
    resumed.clear()
    run_sweep(config, out, cache_dir=shared_cache)
    assert resumed == []


def test_failed_point_is_recorded_and_retried(tmp_path, corpus_dir, shared_cache, monkeypatch):
    config = load_config(write_config(tmp_path, corpus_dir, spec_budgets="[1e9]",
                                      domain_tokens="['512']", strategies="['slm-nopt']"))
    monkeypatch.setattr("experiments.sweep.run_strategy",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    frame = run_sweep(config, tmp_path / "out", cache_dir=shared_cache)
    assert set(frame["status"]) == {"failed"}
    assert frame["error"].str.contains("RuntimeError: disk on fire").all()
    monkeypatch.undo()
    frame = run_sweep(config, tmp_path / "out", cache_dir=shared_cache)
    assert set(frame["status"]) == {"ok"} and len(frame) == len(DOMAINS)


def test_two_workers_share_the_grid_and_train_each_artifact_once(tmp_path, corpus_dir):
    config = load_config(write_config(tmp_path, corpus_dir, spec_budgets="[1e9]"))
    frame = run_sweep(config, tmp_path / "out", workers=2, cache_dir=tmp_path / "cache")
    assert frame["point"].nunique() == 4 and len(frame) == 4 * len(DOMAINS)
    assert set(frame["status"]) == {"ok"}
    slm = frame[frame["strategy"] == "slm"].drop_duplicates("point")
    assert sorted(slm["artifact_reused"]) == [False, True]
    assert len(list((tmp_path / "cache" / "artifacts").glob("slm-*"))) == 1


def test_gpus_that_do_not_exist_are_refused(tmp_path, corpus_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    config = load_config(write_config(tmp_path, corpus_dir))
    with pytest.raises(SpecplanError, match="--gpus 0: device"):
        run_sweep(config, tmp_path / "out", gpus="0", cache_dir=tmp_path / "cache")


def test_sampled_mode_is_an_optuna_study_in_the_output_folder(tmp_path, corpus_dir,
                                                               shared_cache):
    import optuna

    from planner.search.study import open_storage

    config = load_config(write_config(tmp_path, corpus_dir, mode="'sampled'", samples="3",
                                      spec_budgets="[1e9]"))
    frame = run_sweep(config, tmp_path / "out", cache_dir=shared_cache)
    storage = open_storage(None, tmp_path / "out")
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = [t for t in study.trials if t.state.is_finished()]
    assert len(trials) == 3
    assert {t.user_attrs["point"] for t in trials} == set(frame["point"])
    assert set(frame["status"]) == {"ok"}


def test_a_sweep_scores_its_tasks_in_a_column_per_task(tmp_path, corpus_dir, shared_cache):
    from planner.data.tasks import continuation_items
    from tests.conftest import synthetic_documents

    texts = synthetic_documents("law", 20, seed=99, words_per_doc=80)
    items = continuation_items(texts, items=12, context_chars=40, continuation_chars=12)
    (tmp_path / "law_mc.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    path = write_config(tmp_path, corpus_dir, strategies="['slm-nopt']", spec_budgets="[1e9]",
                        domain_tokens="['512']", tasks="{law = 'law_mc.jsonl'}")
    frame = run_sweep(load_config(path), tmp_path / "out", cache_dir=shared_cache)
    law = frame[frame["domain"] == "law"]
    assert len(law) == 1 and 0.0 <= law["task:law_mc"].iloc[0] <= 1.0
    steps = law["task:law_mc"].iloc[0] * 12  # one accuracy over the task's 12 items
    assert abs(steps - round(steps)) < 1e-9
    assert frame[frame["domain"] != "law"]["task:law_mc"].isna().all()
    assert read_results(tmp_path / "out")["task:law_mc"].dtype == "float64"
    with pytest.raises(SpecplanError, match="domain 'news' is not evaluated"):
        run_sweep(load_config(write_config(tmp_path, corpus_dir, tasks="{news = 'law_mc.jsonl'}")),
                  tmp_path / "out2", cache_dir=shared_cache)
    with pytest.raises(SpecplanError, match="tasks must be a table of domain = task file"):
        load_config(write_config(tmp_path, corpus_dir, tasks="['law_mc.jsonl']"))
