"""Prune, then distil (slm-prune): the cut keeps the right weights, the costs are the estimate's,
and the pruned-and-distilled model beats the same shape trained from scratch on the same tokens."""
import pytest
import torch

from planner.core.errors import SpecplanError
from planner.engine.evaluate import perplexity
from planner.engine.models import model_shape
from planner.run.runner import run_strategy
from strategies import get_strategy
from strategies.prune import activation_importance, check_prunable, prune
from tests.conftest import make_workspace

SHAPES = {"llama": "d=64,layers=3,heads=4,kv_heads=2,ff=96",
          "qwen2": "d=64,layers=3,heads=4,kv_heads=2,ff=96,family=qwen2,tied=false"}


@pytest.mark.parametrize("family", SHAPES)
def test_keeping_everything_keeps_the_model(family):
    shape = model_shape(SHAPES[family], vocab_size=100, seq_len=16)
    model = shape.build(seed=0).eval()
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    importance = activation_importance(model, ids)
    assert {k: tuple(v.shape) for k, v in importance.items()} == {
        "heads": (3, 2), "channels": (3, 96), "embedding": (64,), "layers": (3,)}
    same, kept = prune(model, shape, importance)
    assert kept["layers"] == [0, 1, 2]
    assert torch.allclose(same.eval()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_the_cut_keeps_the_most_important_units():
    large = model_shape(SHAPES["qwen2"], vocab_size=100, seq_len=16)
    small = model_shape("d=32,layers=2,heads=2,kv_heads=1,ff=40,family=qwen2,tied=false",
                        vocab_size=100, seq_len=16)
    model = large.build(seed=0)
    importance = {"heads": torch.tensor([[0.0, 1.0]] * 3),
                  "channels": torch.arange(96.0).repeat(3, 1),
                  "embedding": -torch.arange(64.0), "layers": torch.tensor([3.0, 1.0, 2.0])}
    pruned, kept = prune(model, small, importance)
    assert kept["layers"] == [0, 2]  # the two most important, in order
    big, cut = model.model.layers[2].self_attn, pruned.model.layers[1].self_attn
    # kv group 1 (query heads 2 and 3, rows 32..63), the first 32 embedding channels
    assert torch.equal(cut.k_proj.weight, big.k_proj.weight[16:32, :32])
    assert torch.equal(cut.q_proj.weight, big.q_proj.weight[32:64, :32])
    assert torch.equal(cut.q_proj.bias, big.q_proj.bias[32:64])
    assert torch.equal(pruned.model.layers[1].mlp.down_proj.weight,
                       model.model.layers[2].mlp.down_proj.weight[:32, 56:])
    assert pruned.num_parameters() == small.params_total


def test_a_shape_that_cannot_be_cut_is_refused_in_one_line():
    large = model_shape("small", vocab_size=100, seq_len=16)
    with pytest.raises(SpecplanError, match=r"cannot be cut from the large one .*same head size"):
        check_prunable(large, model_shape("d=64,layers=2,heads=4,ff=96", vocab_size=100,
                                          seq_len=16))


def test_pruned_and_distilled_beats_the_same_shape_from_scratch_on_the_same_tokens(tiny_inputs,
                                                                                    tmp_path):
    ws = make_workspace(tiny_inputs, tmp_path / "cache", pretrain_flops=2e11, spec_flops=5e8)
    report = run_strategy("slm-prune", get_strategy("slm-prune").settings(), ws,
                          {"law": tiny_inputs.domains["law"]})
    lines = {e.label: e for e in report.generic_ledger.entries}
    assert set(lines) == {"large model: llm pretraining", "slm-prune importance pass",
                          "slm-prune distillation from the large model"}
    distilled = lines["slm-prune distillation from the large model"]
    shape = ws.shape(ws.small)
    per_token = shape.train_flops_per_token() + ws.shape(ws.large).forward_flops_per_token()
    assert distilled.flops == pytest.approx(distilled.tokens * per_token)  # teacher passes paid
    notes = report.domains[0].notes
    assert report.ppl_generic < notes["ppl_generic_pruned"]  # distillation repairs the cut
    scratch = ws.pretrain_model(shape.build(seed=0), ws.generic.train.ids,
                                flops_per_token=shape.train_flops_per_token(),
                                max_flops=distilled.tokens * shape.train_flops_per_token(),
                                lr=3e-3, label="from scratch")
    assert scratch.tokens == distilled.tokens
    assert report.ppl_generic < perplexity(scratch.best_val_loss) / 2  # 2.95 against 8.85
