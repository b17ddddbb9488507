"""The config vocabulary: one declaration per field, the same at every entry point."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.core.args import DataArgs, RunArgs, flag_of
from planner.core.budgets import Budgets
from planner.core.errors import SpecplanError
from planner.run.config import check_run_args, load_data, make_workspace, train_template
from planner.search.study import PlanSpec
from strategies import get_strategy


@pytest.mark.parametrize("command", ["run", "plan", "forecast"])
def test_every_data_and_run_field_is_an_option_of_the_command(command):
    """The options are generated from the fields: a new field reaches every command."""
    help_text = CliRunner().invoke(cli, [command, "--help"]).output
    skipped = {"forecast": {"large", "base", "base_cost", "allow_pickle"}}.get(command, set())
    for cls in (DataArgs, RunArgs):
        for field in dataclasses.fields(cls):
            if field.name not in skipped:
                assert flag_of(field) in help_text, (command, field.name)


def test_a_bad_value_is_refused_under_its_flag():
    result = CliRunner().invoke(cli, ["run", "slm", "--demo", "--batch-size", "0",
                                      "--pretrain-budget", "1e9", "--spec-budget", "1e9"])
    assert isinstance(result.exception, SpecplanError)
    assert str(result.exception) == "--batch-size: 0 must be at least 1"
    with pytest.raises(SpecplanError, match="embedder"):
        check_run_args(RunArgs(embedder="nope"))
    with pytest.raises(SpecplanError, match="large: unknown model size 'huge'"):
        check_run_args(RunArgs(large="huge"))


def test_demo_or_paths_is_one_rule():
    with pytest.raises(SpecplanError, match="not both"):
        DataArgs(demo=True, generic="g.jsonl")
    with pytest.raises(SpecplanError, match="give --generic PATH"):
        load_data(DataArgs(generic="g.jsonl"), "unused")


def test_workspace_takes_the_run_arguments_and_shares_clusterings(tiny_inputs, tmp_path):
    run = RunArgs(batch_size=8, eval_every=10, eval_windows=64, device="cpu", seed=3)
    shared: dict = {}
    ws = make_workspace(tiny_inputs, Budgets(1e10, 1e9), run, tmp_path, small="tiny",
                        clusterings=shared)
    assert ws.train == train_template(run, 32) and ws.train.max_steps is None
    assert (ws.small, ws.train.seed, ws.train.eval_windows) == ("tiny", 3, 64)
    # the default large model: the deployed one widened to 6x its parameters, kept concrete
    assert ws.large == "d=160,layers=2,heads=5,ff=640"
    assert 5.5 < ws.shape(ws.large).params_total / ws.shape("tiny").params_total < 6.5
    first = ws.clustering(2)
    again = make_workspace(tiny_inputs, Budgets(1e10, 1e9), run, tmp_path, clusterings=shared)
    assert again.clustering(2) is first  # fitted once for every workspace of the plan


def test_plan_specs_of_older_studies_still_load():
    """Studies stored before the config vocabulary kept one flat dict."""
    flat = {"generic": "g.jsonl", "domains": ["d.jsonl"], "demo": False, "demo_domains": [],
            "pretrain_flops": 1e12, "spec_flops": 1e11, "inference": {}, "domain_tokens": None,
            "domains_count": 1, "strategies": ["slm"], "trials": 2, "tokenizer_dir": "tok",
            "batch_size": 8, "seed": 4, "device": "cpu", "large": "small", "eval_every": 5}
    spec = PlanSpec.from_dict(flat)
    assert spec.data.tokenizer == "tok" and spec.data.domains == ("d.jsonl",)
    assert (spec.run.batch_size, spec.run.seed, spec.run.large) == (8, 4, "small")
    assert PlanSpec.from_dict(spec.to_dict()) == spec
    moved = dataclasses.replace(spec, run=dataclasses.replace(spec.run, device="cuda:1",
                                                              micro_batch=2, compile=True))
    assert moved.study_name() == spec.study_name()  # how it runs is not what it searches
    bigger = dataclasses.replace(spec, run=dataclasses.replace(spec.run, batch_tokens=512))
    assert bigger.study_name() != spec.study_name()


def test_batch_tokens_and_micro_batches_make_one_optimizer_step():
    """``--batch-tokens`` counts the step in tokens; ``--micro-batch`` splits it into passes."""
    whole = train_template(RunArgs(batch_tokens=256), 32)
    split = train_template(RunArgs(batch_tokens=256, micro_batch=2, compile=True), 32)
    assert (whole.batch_size, whole.grad_accum) == (8, 1)
    assert (split.batch_size, split.grad_accum, split.compile) == (2, 4, True)
    assert whole.tokens_per_step(32) == split.tokens_per_step(32) == 256
    with pytest.raises(SpecplanError, match="not a multiple of the window .* use 96"):
        check_run_args(RunArgs(batch_tokens=100), 32)
    with pytest.raises(SpecplanError, match=r"3 does not divide the batch of 8 windows"):
        check_run_args(RunArgs(batch_size=8, micro_batch=3), 32)


def test_micro_batches_train_the_same_model_as_the_whole_batch(tiny_inputs, tmp_path):
    """Gradient accumulation through a workspace: the same windows, the same losses, the same
    accounted FLOPs; only the memory of one pass differs."""
    results = []
    for micro in (None, 2):
        run = RunArgs(batch_size=8, micro_batch=micro, eval_every=2, eval_windows=16,
                      device="cpu", seed=5, checkpoint_every=0)
        ws = make_workspace(tiny_inputs, Budgets(1e10, 1e9), run, tmp_path / f"m{micro}",
                            small="tiny")
        shape = ws.shape("tiny")
        model = shape.build(seed=0)
        per_token = shape.train_flops_per_token()
        budget = 4 * 8 * ws.seq_len * per_token  # four optimizer steps
        result = ws.pretrain_model(model, tiny_inputs.generic.train.ids, flops_per_token=per_token,
                                   max_flops=budget, lr=1e-3, label="pretrain")
        key = ws.artifact_key(get_strategy("slm"), get_strategy("slm").settings())
        results.append((result, ws.ledger.flops("generic"), key))
    (whole, whole_flops, whole_key), (split, split_flops, split_key) = results
    assert whole.steps == split.steps == 4
    assert whole_flops == split_flops
    assert whole.best_val_loss == pytest.approx(split.best_val_loss, rel=1e-4)
    assert whole_key == split_key  # the same weights: a cached artifact serves both
