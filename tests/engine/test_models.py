import torch
from torch.utils.flop_counter import FlopCounterMode

from planner.engine.models import SIZES, ModelShape, model_shape


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
