"""Model zoo: causal LMs built from transformers configs (random init, never a hub download).

Sizes follow the reference study's shape at CPU scale: every size has the same depth and the
width grows, so ``large`` has about 6x the parameters of ``small`` (the study's 771M:126M).
Parameter counts and FLOPs per token are computed exactly from the shape, attention included,
so that costs can be estimated before a model is ever built.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from planner.core.errors import SpecplanError

# name -> (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (64, 2, 2, 256),
    "small": (128, 4, 4, 512),
    "medium": (224, 4, 7, 896),
    "large": (352, 4, 11, 1408),
}


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder (RMSNorm, rotary positions, SwiGLU MLP, tied embeddings)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    seq_len: int

    def __post_init__(self) -> None:
        for field, value in asdict(self).items():
            if value <= 0:
                raise SpecplanError(f"model shape: {field}={value} must be positive")
        if self.hidden_size % self.num_attention_heads:
            raise SpecplanError(
                f"model shape: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}; pick a multiple"
            )

    # -- parameters ---------------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """q, k, v, o projections of one layer (no biases)."""
        return 4 * self.hidden_size * self.hidden_size

    @property
    def mlp_params(self) -> int:
        """gate, up and down projections of one layer."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def params_non_embedding(self) -> int:
        """Everything but the (tied) token embedding: layers plus norms."""
        per_layer = self.attention_params + self.mlp_params + 2 * self.hidden_size
        return self.num_hidden_layers * per_layer + self.hidden_size

    @property
    def params_embedding(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def params_total(self) -> int:
        return self.params_non_embedding + self.params_embedding

    # -- FLOPs ----------------------------------------------------------------------------------
    def forward_flops_per_token(self, context: float | None = None) -> float:
        """Forward FLOPs for one token: 2 per multiply-add of every matmul, attention included.

        Counted: q/k/v/o and MLP matmuls, the LM head (tied, but still a matmul), and the two
        attention products (q.k and attn.v) over the token's causal context. The average
        context of a token in a window of ``seq_len`` is ``(seq_len + 1) / 2``. Norms,
        activations, softmax and the embedding lookup are elementwise or free: not counted.
        """
        context = (self.seq_len + 1) / 2 if context is None else context
        matmul = self.num_hidden_layers * (self.attention_params + self.mlp_params)
        head = self.hidden_size * self.vocab_size
        attention = self.num_hidden_layers * 2 * self.hidden_size * context
        return 2.0 * (matmul + head + attention)

    def train_flops_per_token(self) -> float:
        """Forward plus backward (twice the forward: gradients of inputs and of weights)."""
        return 3.0 * self.forward_flops_per_token()

    def inference_flops_per_token(self) -> float:
        """Cost of generating one token with a KV cache at the average window context."""
        return self.forward_flops_per_token()

    # -- building -------------------------------------------------------------------------------
    def config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            max_position_embeddings=self.seq_len,
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            initializer_range=0.02,
            use_cache=False,
        )

    def build(self, seed: int = 0) -> torch.nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""
        from transformers import LlamaForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(self.config())
        model.config.use_cache = False
        return model

    def describe(self) -> str:
        return (
            f"d={self.hidden_size} L={self.num_hidden_layers} H={self.num_attention_heads} "
            f"ff={self.intermediate_size} V={self.vocab_size} T={self.seq_len} "
            f"({self.params_total / 1e6:.2f}M params, {self.params_non_embedding / 1e6:.2f}M "
            f"non-embedding)"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelShape":
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


def model_shape(size: str, *, vocab_size: int, seq_len: int, **overrides: int) -> ModelShape:
    """A named size from :data:`SIZES`, with any dimension overridden (free dimensions).

    Raises:
        SpecplanError: for an unknown size name.
    """
    if size not in SIZES:
        raise SpecplanError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    d, layers, heads, ff = SIZES[size]
    shape = ModelShape(d, layers, heads, ff, vocab_size, seq_len)
    return replace(shape, **overrides) if overrides else shape


def shape_of(model: torch.nn.Module) -> ModelShape:
    """The :class:`ModelShape` of a built Llama model (used after loading a checkpoint)."""
    c = model.config
    return ModelShape(
        c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
        c.vocab_size, c.max_position_embeddings,
    )


def quiet_transformers() -> None:
    """Per-file progress bars of transformers would drown the planner's own output."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def save_model(model: torch.nn.Module, folder: Path) -> None:
    quiet_transformers()
    model.to("cpu").save_pretrained(folder)


def load_model(folder: Path) -> torch.nn.Module:
    """Load a model saved in an artifact (safetensors; never unpickles)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    model.config.use_cache = False
    return model
