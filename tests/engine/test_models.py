import re
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from planner.core.errors import SpecplanError
from planner.engine.models import SIZES, ModelShape, model_shape, size_name


def test_param_counts_match_built_models():
    for size in SIZES:
        shape = model_shape(size, vocab_size=300, seq_len=32)
        model = shape.build(seed=0)
        assert shape.params_total == model.num_parameters()
        assert shape.params_non_embedding == model.num_parameters(exclude_embeddings=True)


def test_large_is_about_six_times_small():
    small = model_shape("small", vocab_size=4096, seq_len=128)
    large = model_shape("large", vocab_size=4096, seq_len=128)
    assert 5.5 < large.params_total / small.params_total < 6.5


def test_forward_flops_match_hand_count():
    shape = ModelShape(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=16, vocab_size=10, seq_len=4)
    # per layer: attention 4*8*8=256, mlp 3*8*16=384; head 8*10=80; attention products
    # 2 (qk and av) * 8 dims * mean causal context (4+1)/2 = 40 per layer
    hand = 2 * (2 * (256 + 384) + 80 + 2 * 40)
    assert shape.forward_flops_per_token() == hand
    assert shape.train_flops_per_token() == 3 * hand


def test_matmul_flops_agree_with_torch_counter():
    """torch's counter sees the full (non-causal) attention square: compare that variant."""
    shape = model_shape("tiny", vocab_size=128, seq_len=16)
    model = shape.build(seed=0)
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 128, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    per_token = counter.get_total_flops() / ids.numel()
    assert abs(per_token - shape.forward_flops_per_token(context=16)) / per_token < 1e-6


def test_same_seed_same_weights():
    shape = model_shape("tiny", vocab_size=64, seq_len=8)
    a, b = shape.build(seed=3), shape.build(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


# -- families, specs, presets, ratios ------------------------------------------------------------
FAMILY_SPECS = {  # grouped-query attention where the family has it; untied heads on some
    "llama": "d=64,layers=2,heads=4,kv_heads=2,ff=96",
    "mistral": "d=64,layers=2,heads=4,kv_heads=1,ff=96,family=mistral,tied=false",
    "qwen2": "d=64,layers=2,heads=4,kv_heads=2,ff=96,family=qwen2,tied=false",
    "qwen3": "d=64,layers=2,heads=4,kv_heads=2,head_dim=24,ff=96,family=qwen3",
    "gpt2": "d=64,layers=2,heads=4,ff=96,family=gpt2",
}


@pytest.mark.parametrize("family", FAMILY_SPECS)
def test_every_family_counts_params_and_flops_exactly(family):
    from planner.engine.models import shape_of

    shape = model_shape(FAMILY_SPECS[family], vocab_size=100, seq_len=16)
    model = shape.build(seed=0)
    assert model.config.model_type == family
    assert shape.params_total == model.num_parameters()
    assert shape.params_non_embedding == model.num_parameters(exclude_embeddings=True)
    assert shape_of(model) == shape  # the config round-trips
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 100, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    assert counter.get_total_flops() / ids.numel() == shape.forward_flops_per_token(context=16)


def test_sliding_window_shortens_the_mean_context():
    full = model_shape("d=64,layers=2,heads=4,ff=96,family=mistral", vocab_size=100, seq_len=16)
    windowed = replace(full, sliding_window=4)
    # positions 1..4 see 1..4 tokens, the 12 after see 4 each: (10 + 48) / 16
    assert (full.mean_context(), windowed.mean_context()) == (8.5, 58 / 16)
    assert windowed.config().sliding_window == 4
    assert windowed.forward_flops_per_token() < full.forward_flops_per_token()


def test_presets_reach_the_reference_study_sizes():
    counts = {name: model_shape(name, vocab_size=32768, seq_len=1024).params_total
              for name in ("126m", "350m", "771m", "1.3b")}
    assert abs(counts["126m"] / 126e6 - 1) < 0.01 and abs(counts["771m"] / 771e6 - 1) < 0.01
    assert abs(counts["350m"] / 350e6 - 1) < 0.01 and abs(counts["1.3b"] / 1.3e9 - 1) < 0.01


def test_spec_strings_and_presets_with_overrides():
    shape = model_shape("d=768,layers=12,heads=12,kv_heads=4,ff=2048", vocab_size=32000,
                        seq_len=512)
    assert (shape.num_key_value_heads, shape.head_dim, shape.kv_dim) == (4, 64, 256)
    assert model_shape(shape.spec(), vocab_size=32000, seq_len=512) == shape
    qwen = model_shape("126m,family=qwen2,tied=false", vocab_size=32000, seq_len=512)
    assert (qwen.hidden_size, qwen.family, qwen.tie_embeddings) == (1024, "qwen2", False)
    regrouped = model_shape("350m,heads=8", vocab_size=32000, seq_len=512)
    assert regrouped.num_key_value_heads == 8  # new heads on a preset: full attention


@pytest.mark.parametrize("spec, message", [
    ("d=100,layers=2,heads=3,ff=64", "not divisible by num_attention_heads=3"),
    ("d=64,layers=2,heads=4,kv_heads=3,ff=64", "num_key_value_heads=3 does not divide"),
    ("d=64,layers=2,heads=4", "give ff"),
    ("d=64,layers=2,heads=4,ff=64,depth=3", "'depth=3' is not KEY=VALUE"),
    ("d=64,layers=two,heads=4,ff=64", "layers='two' is not a whole number"),
    ("d=64,layers=2,heads=4,ff=64,family=bert", "family 'bert' is not supported"),
    ("d=64,layers=2,heads=4,kv_heads=2,ff=64,family=gpt2", "gpt2 has full multi-head"),
    ("huge", "unknown model size 'huge'"),
    ("6x", "a ratio scales the deployed model"),
])
def test_bad_shapes_say_what_is_wrong(spec, message):
    with pytest.raises(SpecplanError, match=re.escape(message)):
        model_shape(spec, vocab_size=100, seq_len=16)


def test_a_ratio_keeps_the_study_six_times_whatever_the_vocabulary():
    for vocab in (512, 4096, 32768):
        small = model_shape("small", vocab_size=vocab, seq_len=128)
        large = model_shape("6x", vocab_size=vocab, seq_len=128, relative_to=small)
        assert 5.5 < large.params_total / small.params_total < 6.5
        assert (large.num_hidden_layers, large.head_dim) == (small.num_hidden_layers, 32)
    at_4096 = model_shape("small", vocab_size=4096, seq_len=128)
    assert size_name(model_shape("6x", vocab_size=4096, seq_len=128,
                                 relative_to=at_4096)) == "large"  # the ladder's own large


def test_config_folders_give_their_shape_at_the_plan_vocabulary(tmp_path):
    from transformers import BertConfig, Qwen2Config

    Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=151936,
                max_position_embeddings=131072).save_pretrained(tmp_path / "qwen")
    shape = model_shape(str(tmp_path / "qwen"), vocab_size=300, seq_len=64)
    assert (shape.family, shape.vocab_size, shape.seq_len, shape.num_key_value_heads) == \
        ("qwen2", 300, 64, 2)
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(SpecplanError, match="'bert' is an encoder-only model"):
        model_shape(str(tmp_path / "bert"), vocab_size=300, seq_len=64)
    with pytest.raises(SpecplanError, match="no config.json there"):
        model_shape(str(tmp_path), vocab_size=300, seq_len=64)


def test_older_shape_dicts_keep_their_value():
    shape = model_shape("small", vocab_size=300, seq_len=32)
    assert set(shape.to_dict()) == {"hidden_size", "num_hidden_layers", "num_attention_heads",
                                    "intermediate_size", "vocab_size", "seq_len"}
    gqa = replace(shape, num_key_value_heads=2, family="qwen3")
    assert ModelShape.from_dict(gqa.to_dict()) == gqa


def test_a_checkpoint_window_is_its_positions_capped_or_what_is_asked():
    from planner.engine.models import checkpoint_window

    long = model_shape("d=32,layers=1,heads=2,ff=64", vocab_size=50, seq_len=131072).build()
    assert (checkpoint_window(long), checkpoint_window(long, 512)) == (2048, 512)
    short = model_shape("d=32,layers=1,heads=2,ff=64,family=gpt2", vocab_size=50,
                        seq_len=64).build()
    assert checkpoint_window(short) == 64
    with pytest.raises(SpecplanError, match="--seq-len 65 is longer than the model's 64"):
        checkpoint_window(short, 65)
