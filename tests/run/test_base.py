"""Open-weight bases: local checkpoints of three families (built here with save_pretrained, never
downloaded) as the starting point of slm and slm-is, their sunk cost, and their refusals."""
import json
import math

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from planner.cli import cli
from planner.core.budgets import Budgets, InferenceCap
from planner.core.errors import SpecplanError
from planner.core.args import RunArgs
from planner.engine.evaluate import evaluate_loss
from planner.engine.models import model_shape
from planner.run.config import make_workspace
from planner.run.runner import plan_check, run_strategy
from strategies import get_strategy
from tests.conftest import specplan

FAMILIES = {  # grouped-query attention and an untied head where the family has them
    "qwen2": "d=32,layers=2,heads=4,kv_heads=2,ff=64,family=qwen2,tied=false",
    "llama": "d=32,layers=2,heads=4,kv_heads=1,ff=64",
    "gpt2": "d=32,layers=2,heads=4,ff=64,family=gpt2",
}


def pretrain_briefly(model, windows, steps=40):
    """A few Adam steps on generic windows: a base that knows the corpus a little."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (16,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def bases(tiny_inputs, tmp_path_factory):
    """Checkpoint folders (weights as safetensors, the tiny corpus's tokenizer, 64 positions)."""
    root = tmp_path_factory.mktemp("bases")
    folders = {}
    for family, spec in FAMILIES.items():
        shape = model_shape(spec, vocab_size=len(tiny_inputs.tokenizer), seq_len=64)
        model = shape.build(seed=1)
        pretrain_briefly(model, tiny_inputs.generic.train.ids)
        model.save_pretrained(root / family)
        tiny_inputs.tokenizer.save_pretrained(root / family)
        folders[family] = root / family
    return folders


def workspace(tiny_inputs, tmp_path, base, *, pretrain=0.0, spec=2e9, **run):
    args = RunArgs(base=str(base), batch_size=8, eval_every=10, eval_windows=64, device="cpu",
                   **run)
    return make_workspace(tiny_inputs, Budgets(pretrain, spec, **run.pop("budgets", {})), args,
                          tmp_path / "cache")


@pytest.mark.parametrize("family", FAMILIES)
def test_slm_fine_tunes_the_base_in_its_own_architecture(family, bases, tiny_inputs, tmp_path):
    ws = workspace(tiny_inputs, tmp_path, bases[family])
    law = tiny_inputs.domains["law"]
    report = run_strategy("slm", get_strategy("slm").settings(), ws, {"law": law},
                          out_dir=tmp_path / "out")
    generic = report.generic_ledger.entries
    assert [(e.label, e.flops, e.device) for e in generic] == [
        ("base checkpoint (sunk cost)", 0.0, "sunk")]
    domain = report.domains[0]
    assert domain.ledger.flops("specialization") > 0
    assert domain.ppl_after < domain.ppl_before
    fresh = ws.shape(ws.small).build(seed=1)  # the base's weights are the starting point
    assert domain.ppl_before < math.exp(evaluate_loss(fresh, law.valid.ids)) / 2
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "law")
    assert exported.config.model_type == family
    assert report.estimate.params_inference == exported.num_parameters()


def test_a_counted_base_cost_is_charged_to_the_generic_phase(bases, tiny_inputs, tmp_path):
    ws = workspace(tiny_inputs, tmp_path, bases["llama"], base_cost="1e12")
    report = run_strategy("slm", get_strategy("slm").settings(), ws,
                          {"law": tiny_inputs.domains["law"]})
    assert report.generic_ledger.flops("generic") == 1e12
    assert report.estimate.generic_flops == 1e12
    assert report.generic_ledger.entries[0].label == "base checkpoint pretraining (--base-cost)"


def test_slm_is_continues_the_base_on_resampled_generic_data(bases, tiny_inputs, tmp_path):
    ws = workspace(tiny_inputs, tmp_path, bases["qwen2"], spec=3e9)
    settings = get_strategy("slm-is").settings({"k": 4})
    report = run_strategy("slm-is", settings, ws, {"law": tiny_inputs.domains["law"]})
    labels = [e.label for e in report.domains[0].ledger.entries]
    assert "slm-is continued pretraining of the base on the clusters-resampled stream" in labels
    assert report.domains[0].ppl_after < report.domains[0].ppl_before


def test_strategies_that_cannot_start_from_a_base_say_so(bases, tiny_inputs, tmp_path):
    ws = workspace(tiny_inputs, tmp_path, bases["llama"])
    with pytest.raises(SpecplanError, match="llm does not start from a --base checkpoint yet; "
                                            "strategies that do: slm, slm-d, slm-is, slm-mix, "
                                            "slm-pn, slm-hn, slm-prune"):
        plan_check(get_strategy("llm"), get_strategy("llm").settings(), ws)


def test_slm_prune_cuts_the_base_and_distils_the_cut_from_it(bases, tiny_inputs, tmp_path):
    """Minitron on an open checkpoint: the base is the uncut teacher (a sunk cost), the deployed
    model half of it in its own architecture."""
    ws = workspace(tiny_inputs, tmp_path, bases["qwen2"], pretrain=2e9)
    settings = get_strategy("slm-prune").settings({"pruned": "0.5x"})
    law = tiny_inputs.domains["law"]
    report = run_strategy("slm-prune", settings, ws, {"law": law}, out_dir=tmp_path / "out")
    generic = [(e.label, e.device) for e in report.generic_ledger.entries]
    assert generic[0] == ("base checkpoint (sunk cost)", "sunk")
    assert [label for label, _ in generic[1:]] == [
        "slm-prune importance pass", "slm-prune distillation from the large model"]
    assert report.generic_ledger.flops("generic") <= 2e9
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "law")
    assert exported.config.model_type == "qwen2" and exported.config.hidden_size == 16
    assert exported.config.num_key_value_heads == 1  # the base's grouping: 2 query heads each
    assert report.estimate.params_inference == exported.num_parameters()
    base_params = ws.base.shape.params_total
    assert 0.35 < exported.num_parameters() / base_params < 0.65
    notes = report.domains[0].notes
    assert notes["ppl_generic_pruned"] > report.ppl_generic  # the distillation recovered some
    assert report.domains[0].ppl_after < report.domains[0].ppl_before
    with pytest.raises(SpecplanError, match="cannot be cut from the large one"):
        plan_check(get_strategy("slm-prune"), get_strategy("slm-prune").settings(
            {"pruned": "d=32,layers=2,heads=4,ff=64"}), ws)  # llama: another family


def test_a_base_over_the_inference_budget_is_flagged_not_refused(bases, tiny_inputs, tmp_path):
    args = RunArgs(base=str(bases["llama"]), batch_size=8, device="cpu")
    budgets = Budgets(0.0, 2e9, inference=InferenceCap(params=1000))
    ws = make_workspace(tiny_inputs, budgets, args, tmp_path / "cache")
    _, status = plan_check(get_strategy("slm"), get_strategy("slm").settings(), ws)
    assert status == "over-inference-budget"


def test_run_with_a_base_needs_no_pretraining_budget(bases, corpus_dir, tmp_path):
    """The issue's command line: a local Qwen2 checkpoint in, a Qwen2 model out."""
    out = tmp_path / "models"
    result = CliRunner().invoke(cli, [
        "--cache", str(tmp_path / "cache"), "--json", "run", "slm", "--base", str(bases["qwen2"]),
        "--generic", str(corpus_dir / "generic.jsonl"), "--domain", str(corpus_dir / "law.jsonl"),
        "--spec-budget", "1e9", "--seq-len", "32", "--device", "cpu", "--out", str(out)],
        catch_exceptions=False)
    row = json.loads(result.stdout)["rows"][0]
    assert (row["pretrain_budget_flops"], row["generic_flops"]) == (0.0, 0.0)
    assert AutoModelForCausalLM.from_pretrained(out / "law").config.model_type == "qwen2"


def test_plan_searches_the_strategies_that_start_from_the_base(bases, corpus_dir, tmp_path,
                                                               monkeypatch, capsys):
    common = ["--cache", str(tmp_path / "cache"), "plan", "--base", str(bases["llama"]),
              "--generic", str(corpus_dir / "generic.jsonl"),
              "--domain", str(corpus_dir / "law.jsonl"), "--spec-budget", "1e9", "--seq-len",
              "32", "--device", "cpu", "--gpus", "none"]
    code, _, err = specplan(monkeypatch, capsys, *common, "--strategies", "slm,llm",
                            "--out", str(tmp_path / "refused"))
    assert code == 2 and err.strip() == (
        "error: --strategies: llm does not start from a --base checkpoint yet; strategies "
        "that do: slm, slm-d, slm-is, slm-mix, slm-pn, slm-hn, slm-prune")
    code, out, err = specplan(monkeypatch, capsys, "--json", *common, "--strategies", "slm",
                              "--trials", "1", "--out", str(tmp_path / "plan"))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["strategy"] == "slm" and plan["size"] == str(bases["llama"])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "plan" / "model" / "law")
    assert exported.config.num_key_value_heads == 1  # the base's architecture


def test_slm_mix_experts_each_continue_the_base(bases, tiny_inputs, tmp_path):
    ws = workspace(tiny_inputs, tmp_path, bases["qwen2"], pretrain=1.5e10, spec=1e9)
    report = run_strategy("slm-mix", get_strategy("slm-mix").settings({"k": 2}), ws,
                          {"law": tiny_inputs.domains["law"]})
    labels = [e.label for e in report.generic_ledger.entries]
    assert "base checkpoint (sunk cost)" in labels
    assert "slm-mix expert 1 continued pretraining of the base" in labels
    assert report.generic_ledger.flops("generic") <= 1.5e10
    assert report.domains[0].ppl_after < report.domains[0].ppl_before


@pytest.mark.parametrize("name", ["slm-pn", "slm-hn"])
def test_projected_networks_start_every_member_as_the_base(name, bases, tiny_inputs, tmp_path):
    """Before any step the materialised member is the base (its logits to float rounding);
    pretraining then continues it on the clusters, and fine-tuning helps."""
    from strategies.projected.strategy import ProjectedNetwork, materialise

    ws = workspace(tiny_inputs, tmp_path, bases["qwen2"], pretrain=1.5e10, spec=1e9)
    base = ws.base.load()
    network = ProjectedNetwork(name[-2:], ws.base.shape, k=4, m=4, h=4, base=ws.base.load())
    ids = tiny_inputs.generic.valid.ids[:4]
    member = materialise(network, 2 if name == "slm-pn" else torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert torch.allclose(member(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-4)
    report = run_strategy(name, get_strategy(name).settings({"k": 2, "h": 2}), ws,
                          {"law": tiny_inputs.domains["law"]})
    labels = [e.label for e in report.generic_ledger.entries]
    assert "base checkpoint (sunk cost)" in labels
    assert f"{name} continued pretraining of the base" in labels
    assert report.domains[0].ppl_after < report.domains[0].ppl_before
    gpt2 = workspace(tiny_inputs, tmp_path, bases["gpt2"]).base
    with pytest.raises(SpecplanError, match="the base's MLP is not gated"):
        ProjectedNetwork("pn", gpt2.shape, k=2, m=2, h=2, base=gpt2.load())


def test_slm_d_distils_a_checkpoint_teacher_into_the_base(bases, tiny_inputs, tmp_path):
    """Teacher and student both from checkpoints, as the production recipe starts."""
    ws = workspace(tiny_inputs, tmp_path, bases["qwen2"], spec=3e9)
    settings = {"teachers": str(bases["llama"]), "top_k": 16}
    report = run_strategy("slm-d", get_strategy("slm-d").settings(settings), ws,
                          {"law": tiny_inputs.domains["law"]})
    assert {e.label for e in report.generic_ledger.entries} == {
        "teacher llama: base checkpoint (sunk cost)", "student: base checkpoint (sunk cost)"}
    assert report.generic_ledger.flops("generic") == 0.0
    spec = [e.label for e in report.domains[0].ledger.entries]
    assert spec == ["teacher llama: fine-tune", "teacher llama passes", "student: distillation"]
    assert report.domains[0].ppl_after < report.domains[0].ppl_before
