"""Model zoo: causal-LM decoder shapes, their exact sizes and costs, and the models they build.

A :class:`ModelShape` is everything a cost estimate needs: parameters and FLOPs per token are
computed exactly from it (grouped-query attention, untied heads, biases, gated or two-matrix
MLPs, attention over the causal context), so costs are known before a model is ever built, and
tests check them against torch's FLOP counter for every family. Shapes come from a preset name
(:data:`PRESETS`: the CPU ladder :data:`SIZES` and sizes up to the reference study's and
beyond), from ``key=value`` specs (``d=768,layers=12,heads=12,kv_heads=4,ff=2048``), from a
local Hugging Face config folder, or, for the large model, from a ratio to the deployed one
(``6x``: the study's 771M:126M, whatever the vocabulary). Models are built from random weights,
never downloaded.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from planner.core.errors import SpecplanError

# The CPU ladder: name -> (hidden_size, num_hidden_layers, num_attention_heads,
# intermediate_size). Same depth, growing width: ``large`` is about 6x ``small`` at a 4,096
# vocabulary. The deployed size is picked from it when no size is given.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (64, 2, 2, 256),
    "small": (128, 4, 4, 512),
    "medium": (224, 4, 7, 896),
    "large": (352, 4, 11, 1408),
}

# Named shapes beyond the ladder (the vocabulary and window come from the plan's tokenizer).
# ``126m`` and ``771m`` are the reference study's SLM and LLM (v2 Table 6: 7 layers, model dim
# 1,024 / 2,816, 8 / 22 heads) with a gated MLP whose inner dim is shrunk (as Llama does) so
# that the counts match the study's 126M / 771M at a 32k vocabulary; ``350m`` and ``1.3b`` are
# the common GPT-3 depths (24 layers) with grouped-query attention.
PRESETS: dict[str, dict] = {
    **{name: dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ff) for name, (d, layers, heads, ff) in SIZES.items()},
    "126m": dict(hidden_size=1024, num_hidden_layers=7, num_attention_heads=8,
                 intermediate_size=2944),
    "350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=4, intermediate_size=3456),
    "771m": dict(hidden_size=2816, num_hidden_layers=7, num_attention_heads=22,
                 intermediate_size=7680),
    "1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=4, intermediate_size=6656),
}

# Decoder families: how each lays out biases, norms, MLP and positions (exact parameter counts
# follow from these), and the transformers config that builds it.
FAMILIES: dict[str, dict] = {
    "llama": dict(config="LlamaConfig", qkv_bias=False, qk_norm=False, gated=True, gpt2=False),
    "mistral": dict(config="MistralConfig", qkv_bias=False, qk_norm=False, gated=True, gpt2=False),
    "qwen2": dict(config="Qwen2Config", qkv_bias=True, qk_norm=False, gated=True, gpt2=False),
    "qwen3": dict(config="Qwen3Config", qkv_bias=False, qk_norm=True, gated=True, gpt2=False),
    "gpt2": dict(config="GPT2Config", qkv_bias=True, qk_norm=False, gated=False, gpt2=True),
}

# ``key=value`` spec keys -> ModelShape fields.
SPEC_KEYS = {"d": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
             "kv_heads": "num_key_value_heads", "ff": "intermediate_size",
             "head_dim": "head_dim", "family": "family", "tied": "tie_embeddings",
             "window": "sliding_window", "positions": "max_positions"}
_RATIO = re.compile(r"^(\d+(?:\.\d+)?)x$")
# bf16 autocast keeps fp32 weights: weights, gradients and Adam's two moments, 4 bytes each.
TRAIN_STATE_BYTES_PER_PARAM = 16


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer: its dimensions, family and the window it is trained on.

    ``num_key_value_heads`` and ``head_dim`` of 0 mean "as many as the attention heads" and
    ``hidden_size / num_attention_heads``; ``sliding_window`` of 0 means full causal attention;
    ``max_positions`` (GPT-2's learned position table) of 0 means one per window position.
    Norms are RMSNorm (LayerNorm with biases for GPT-2); the MLP is gated (SwiGLU) except
    GPT-2's two-matrix one.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    seq_len: int
    num_key_value_heads: int = 0
    head_dim: int = 0
    tie_embeddings: bool = True
    family: str = "llama"
    sliding_window: int = 0
    max_positions: int = 0

    def __post_init__(self) -> None:
        for f in fields(self)[:6]:
            if getattr(self, f.name) <= 0:
                raise SpecplanError(f"model shape: {f.name}={getattr(self, f.name)} must be "
                                    f"positive")
        if self.family not in FAMILIES:
            raise SpecplanError(f"model shape: family {self.family!r} is not supported; choose "
                                f"one of {', '.join(FAMILIES)}")
        heads = self.num_attention_heads
        if self.head_dim == 0 and self.hidden_size % heads:
            raise SpecplanError(
                f"model shape: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={heads}; pick a multiple (or give head_dim)")
        object.__setattr__(self, "num_key_value_heads", self.num_key_value_heads or heads)
        object.__setattr__(self, "head_dim", self.head_dim or self.hidden_size // heads)
        if min(self.num_key_value_heads, self.head_dim, self.sliding_window,
               self.max_positions) < 0:
            raise SpecplanError("model shape: kv_heads, head_dim, window and positions must be "
                                "positive")
        if self.max_positions and self.max_positions < self.seq_len:
            raise SpecplanError(f"model shape: positions={self.max_positions} is shorter than "
                                f"the window ({self.seq_len} tokens)")
        if heads % self.num_key_value_heads:
            raise SpecplanError(
                f"model shape: num_key_value_heads={self.num_key_value_heads} does not divide "
                f"num_attention_heads={heads}; pick a divisor")
        if self.traits["gpt2"] and (self.num_key_value_heads != heads
                                    or self.head_dim * heads != self.hidden_size
                                    or self.sliding_window):
            raise SpecplanError("model shape: gpt2 has full multi-head attention over the whole "
                                "window (no kv_heads, head_dim or window)")

    @property
    def traits(self) -> dict:
        return FAMILIES[self.family]

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    # -- parameters ---------------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Weights of the q, k, v and o projections of one layer (their matmuls)."""
        return 2 * self.hidden_size * (self.q_dim + self.kv_dim)

    @property
    def mlp_params(self) -> int:
        """Weights of one layer's MLP: gate, up and down (GPT-2: up and down)."""
        return (3 if self.traits["gated"] else 2) * self.hidden_size * self.intermediate_size

    @property
    def layer_extra_params(self) -> int:
        """Biases and norms of one layer: elementwise, so in the count but not in the FLOPs."""
        d, t = self.hidden_size, self.traits
        if t["gpt2"]:  # two LayerNorms (weight, bias); c_attn, c_proj, c_fc, mlp c_proj biases
            return 4 * d + (3 * d + d) + (self.intermediate_size + d)
        extra = 2 * d  # two RMSNorms
        if t["qkv_bias"]:
            extra += self.q_dim + 2 * self.kv_dim
        if t["qk_norm"]:
            extra += 2 * self.head_dim
        return extra

    @property
    def params_non_embedding(self) -> int:
        """Everything but the embedding tables: layers, final norm and an untied LM head (as
        transformers' ``num_parameters(exclude_embeddings=True)`` counts)."""
        per_layer = self.attention_params + self.mlp_params + self.layer_extra_params
        final_norm = 2 * self.hidden_size if self.traits["gpt2"] else self.hidden_size
        head = 0 if self.tie_embeddings else self.vocab_size * self.hidden_size
        return self.num_hidden_layers * per_layer + final_norm + head

    @property
    def params_embedding(self) -> int:
        """The token embedding (and GPT-2's learned position table)."""
        table = self.max_positions or self.seq_len
        positions = table * self.hidden_size if self.traits["gpt2"] else 0
        return self.vocab_size * self.hidden_size + positions

    @property
    def params_total(self) -> int:
        return self.params_non_embedding + self.params_embedding

    # -- FLOPs ----------------------------------------------------------------------------------
    def mean_context(self) -> float:
        """Average number of positions a token attends to in a window of ``seq_len``: ``(T+1)/2``
        causally, fewer under a sliding window of ``w`` (``min(i, w)`` for position ``i``)."""
        t, w = self.seq_len, self.sliding_window
        if not w or w >= t:
            return (t + 1) / 2
        return (w * (w + 1) / 2 + (t - w) * w) / t

    def forward_flops_per_token(self, context: float | None = None) -> float:
        """Forward FLOPs for one token: 2 per multiply-add of every matmul, attention included.

        Counted: q/k/v/o and MLP matmuls, the LM head (tied or not, a matmul), and the two
        attention products (q.k and attn.v, over every query head) across the token's context
        (:meth:`mean_context` unless given). Norms, biases, activations, softmax and embedding
        lookups are elementwise or free: not counted.
        """
        context = self.mean_context() if context is None else context
        matmul = self.num_hidden_layers * (self.attention_params + self.mlp_params)
        head = self.hidden_size * self.vocab_size
        attention = self.num_hidden_layers * 2 * self.q_dim * context
        return 2.0 * (matmul + head + attention)

    def train_flops_per_token(self) -> float:
        """Forward plus backward (twice the forward: gradients of inputs and of weights)."""
        return 3.0 * self.forward_flops_per_token()

    def inference_flops_per_token(self) -> float:
        """Cost of generating one token with a KV cache at the average window context."""
        return self.forward_flops_per_token()

    def train_memory_bytes(self, windows: int = 1) -> float:
        """Training memory under bf16 autocast for ``windows`` windows per pass, before the
        framework's own overhead: fp32 weights, gradients and Adam moments
        (:data:`TRAIN_STATE_BYTES_PER_PARAM`), plus the activations kept for the backward pass
        (about ``34 d`` bytes per token and layer with fused attention: Korthikanti et al.
        2022) and the fp32 logits with their gradient (``8 V`` bytes per token)."""
        tokens = windows * self.seq_len
        activations = tokens * (34 * self.hidden_size * self.num_hidden_layers
                                + 8 * self.vocab_size)
        return TRAIN_STATE_BYTES_PER_PARAM * self.params_total + activations

    # -- building -------------------------------------------------------------------------------
    def config(self):
        """The transformers config of this shape (special tokens all id 0, no KV cache)."""
        import transformers

        cls = getattr(transformers, self.traits["config"])
        common = dict(vocab_size=self.vocab_size, tie_word_embeddings=self.tie_embeddings,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.02,
                      use_cache=False)
        if self.traits["gpt2"]:
            return cls(n_embd=self.hidden_size, n_layer=self.num_hidden_layers,
                       n_head=self.num_attention_heads, n_inner=self.intermediate_size,
                       n_positions=self.max_positions or self.seq_len, **common)
        extra = {"qwen2": dict(use_sliding_window=False),
                 "mistral": dict(sliding_window=self.sliding_window or None),
                 "llama": dict(attention_bias=False, mlp_bias=False),
                 "qwen3": dict(attention_bias=False)}[self.family]
        return cls(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                   num_hidden_layers=self.num_hidden_layers,
                   num_attention_heads=self.num_attention_heads,
                   num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
                   max_position_embeddings=self.seq_len, **extra, **common)

    def build(self, seed: int = 0) -> torch.nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""
        from transformers import AutoModelForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(self.config())
        model.config.use_cache = False
        return model

    def describe(self) -> str:
        gqa = (f" kv={self.num_key_value_heads}"
               if self.num_key_value_heads != self.num_attention_heads else "")
        family = "" if self.family == "llama" else f" {self.family}"
        return (
            f"d={self.hidden_size} L={self.num_hidden_layers} H={self.num_attention_heads}{gqa} "
            f"ff={self.intermediate_size} V={self.vocab_size} T={self.seq_len}{family} "
            f"({self.params_total / 1e6:.2f}M params, {self.params_non_embedding / 1e6:.2f}M "
            f"non-embedding)"
        )

    def spec(self) -> str:
        """This shape as a ``key=value`` spec (vocabulary and window left to the plan)."""
        items = [f"d={self.hidden_size}", f"layers={self.num_hidden_layers}",
                 f"heads={self.num_attention_heads}", f"ff={self.intermediate_size}"]
        items += [f"{key}={value}" for key, value in self._non_plain().items()]
        return ",".join(items)

    def _non_plain(self) -> dict:
        """Spec keys whose value differs from a plain Llama with full multi-head attention."""
        plain = {"kv_heads": self.num_attention_heads,
                 "head_dim": self.hidden_size // self.num_attention_heads,
                 "family": "llama", "tied": True, "window": 0, "positions": 0}
        own = {key: getattr(self, SPEC_KEYS[key]) for key in plain}
        if self.hidden_size % self.num_attention_heads:
            plain.pop("head_dim")
        return {key: value for key, value in own.items() if plain.get(key) != value}

    def to_dict(self) -> dict:
        """The dimensions; the newer fields only where they differ from a plain Llama, so that
        shapes (and the artifact keys made from them) written before those fields keep their
        value."""
        data = {f.name: getattr(self, f.name) for f in fields(self)[:6]}
        data.update({SPEC_KEYS[key]: value for key, value in self._non_plain().items()})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelShape":
        kinds = {f.name: f.type for f in fields(cls)}
        convert = {"int": int, "bool": bool, "str": str}
        return cls(**{k: convert[kinds[k]](v) for k, v in data.items() if k in kinds})


def preset(name: str, *, vocab_size: int, seq_len: int) -> ModelShape:
    """A named shape from :data:`PRESETS` at the plan's vocabulary and window."""
    if name not in PRESETS:
        raise SpecplanError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}, "
                            f"a spec like d=768,layers=12,heads=12,kv_heads=4,ff=2048, or a "
                            f"model config folder")
    return ModelShape(vocab_size=vocab_size, seq_len=seq_len, **PRESETS[name])


def model_shape(size: str, *, vocab_size: int, seq_len: int,
                relative_to: ModelShape | None = None, **overrides) -> ModelShape:
    """The shape a size names: a preset, a ``key=value`` spec (optionally starting from a
    preset: ``126m,family=qwen2``), a local config folder, or (``relative_to`` given) a
    parameter ratio to that shape such as ``6x``. ``overrides`` replace fields.

    Raises:
        SpecplanError: for a size that names none of these, or a shape that cannot be built.
    """
    size = str(size).strip()
    ratio = _RATIO.match(size)
    if ratio:
        if relative_to is None:
            raise SpecplanError(f"model size {size!r}: a ratio scales the deployed model; use it "
                                f"for the large model only")
        shape = scaled(relative_to, float(ratio.group(1)))
    elif "=" not in size and ("/" in size or Path(size).is_dir()):
        shape = shape_from_folder(Path(size), vocab_size=vocab_size, seq_len=seq_len)
    else:
        shape = _from_spec(size, vocab_size=vocab_size, seq_len=seq_len)
    return replace(shape, **overrides) if overrides else shape


def _from_spec(spec: str, *, vocab_size: int, seq_len: int) -> ModelShape:
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise SpecplanError("model size is empty; give a preset name or a spec like "
                            "d=768,layers=12,heads=12,ff=2048")
    base: dict = {}
    if "=" not in items[0]:
        name = items.pop(0)
        preset(name, vocab_size=vocab_size, seq_len=seq_len)  # refuses an unknown name
        base = dict(PRESETS[name])
    given: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in SPEC_KEYS or not value.strip():
            raise SpecplanError(f"model size {spec!r}: {item!r} is not KEY=VALUE with a key "
                                f"among {', '.join(SPEC_KEYS)}")
        given[SPEC_KEYS[key]] = _spec_value(spec, key, value.strip())
    if "num_attention_heads" in given and "num_key_value_heads" not in given:
        base.pop("num_key_value_heads", None)  # new heads on a preset: full attention
    values = {**base, **given}
    missing = [key for key in ("d", "layers", "heads", "ff") if SPEC_KEYS[key] not in values]
    if missing:
        raise SpecplanError(f"model size {spec!r}: give {', '.join(missing)} (or start from a "
                            f"preset: {', '.join(PRESETS)})")
    try:
        return ModelShape(vocab_size=vocab_size, seq_len=seq_len, **values)
    except SpecplanError as err:
        raise SpecplanError(str(err).replace("model shape:", f"model size {spec!r}:", 1)) \
            from None


def _spec_value(spec: str, key: str, value: str):
    if key == "family":
        return value
    if key == "tied":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SpecplanError(f"model size {spec!r}: tied={value!r}: use true or false")
        return value.lower() in ("true", "1", "yes")
    try:
        return int(value)
    except ValueError:
        raise SpecplanError(f"model size {spec!r}: {key}={value!r} is not a whole number") \
            from None


def scaled(shape: ModelShape, ratio: float) -> ModelShape:
    """The shape with about ``ratio`` times the parameters of ``shape``: same depth, family,
    head size, grouping of kv heads and MLP-to-model width ratio, with more heads (the study's
    LLM is its SLM widened: 8 -> 22 heads of 128). The head count whose total is nearest the
    target (in log ratio) wins."""
    if ratio <= 0:
        raise SpecplanError(f"model size {ratio:g}x: the ratio must be positive")
    group = shape.num_attention_heads // shape.num_key_value_heads
    target = ratio * shape.params_total
    best, best_gap = shape, math.inf
    heads = group
    while True:
        d = heads * shape.head_dim
        candidate = replace(shape, hidden_size=d, num_attention_heads=heads,
                            num_key_value_heads=heads // group,
                            intermediate_size=max(1, round(shape.intermediate_size * d
                                                           / shape.hidden_size)))
        gap = abs(math.log(candidate.params_total / target))
        if gap < best_gap:
            best, best_gap = candidate, gap
        if candidate.params_total > target:
            return best
        heads += group


def size_name(shape: ModelShape) -> str:
    """A preset's name when ``shape`` is one at its vocabulary and window, else its spec."""
    for name in PRESETS:
        if preset(name, vocab_size=shape.vocab_size, seq_len=shape.seq_len) == shape:
            return name
    return shape.spec()


def check_size(size: str, *, large: bool = False) -> None:
    """Refuse a size that names no shape, before any data is read (vocabulary unknown yet).

    Raises:
        SpecplanError: naming what is wrong.
    """
    base = preset("small", vocab_size=256, seq_len=16) if large else None
    model_shape(size, vocab_size=256, seq_len=16, relative_to=base)


# -- checkpoints --------------------------------------------------------------------------------
def shape_from_config(config, *, vocab_size: int | None = None, seq_len: int | None = None,
                      source: str = "model config") -> ModelShape:
    """The :class:`ModelShape` of a transformers config (vocabulary and window overridable).

    Raises:
        SpecplanError: for an architecture specplan cannot count exactly (encoder-only
            models, other families, biases the family does not have).
    """
    kind = getattr(config, "model_type", "?")
    if kind not in FAMILIES:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        if getattr(config, "is_encoder_decoder", False):
            what = "an encoder-decoder"
        elif kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", 0):
            what = "an encoder-only"
        else:
            what = "not a supported decoder"
        raise SpecplanError(f"{source}: model_type {kind!r} is {what} model; specplan trains "
                            f"decoders of the families {', '.join(FAMILIES)}")
    for flag in ("attention_bias", "mlp_bias"):
        expected = FAMILIES[kind]["qkv_bias"] if flag == "attention_bias" else False
        if kind != "gpt2" and getattr(config, flag, expected) != expected:
            raise SpecplanError(f"{source}: {flag}={getattr(config, flag)} is not supported for "
                                f"{kind} (its parameters would be miscounted)")
    if kind == "gpt2":
        dims = dict(hidden_size=config.n_embd, num_hidden_layers=config.n_layer,
                    num_attention_heads=config.n_head,
                    intermediate_size=config.n_inner or 4 * config.n_embd)
        window = config.n_positions
        if seq_len and seq_len != config.n_positions:  # a table longer than the window
            dims["max_positions"] = config.n_positions
    else:
        window_attention = getattr(config, "use_sliding_window", True)
        dims = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
                    num_attention_heads=config.num_attention_heads,
                    num_key_value_heads=getattr(config, "num_key_value_heads", 0) or 0,
                    head_dim=getattr(config, "head_dim", 0) or 0,
                    intermediate_size=config.intermediate_size,
                    sliding_window=(getattr(config, "sliding_window", 0) or 0)
                    if window_attention else 0)
        window = config.max_position_embeddings
    return ModelShape(vocab_size=vocab_size or config.vocab_size, seq_len=seq_len or window,
                      tie_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
                      family=kind, **dims)


@functools.lru_cache(maxsize=64)
def shape_from_folder(folder: Path, *, vocab_size: int, seq_len: int) -> ModelShape:
    """The shape of a local Hugging Face model folder's ``config.json``, at the plan's
    vocabulary and window (its weights are not read: the model trains here from scratch)."""
    if not (folder / "config.json").is_file():
        raise SpecplanError(f"model size {str(folder)!r}: not a preset, a spec, nor a model "
                            f"config folder (no config.json there)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, OSError, json.JSONDecodeError) as err:
        raise SpecplanError(f"model config {folder}: cannot be read ({err})") from None
    return shape_from_config(config, vocab_size=vocab_size, seq_len=seq_len,
                             source=f"model config {folder}")


#: The window a loaded checkpoint trains and evaluates on by default: its own positions up to
#: this (a Llama-3 config's 131,072 positions are what it can reach, not what a run needs).
DEFAULT_CHECKPOINT_WINDOW = 2048


def checkpoint_window(model: torch.nn.Module, requested: int | None = None) -> int:
    """The window of a run on a loaded model: ``requested`` when given (within the model's
    positions), else its positions capped at :data:`DEFAULT_CHECKPOINT_WINDOW`.

    Raises:
        SpecplanError: a requested window longer than the model's positions.
    """
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or config.n_positions
    if requested is None:
        return min(positions, DEFAULT_CHECKPOINT_WINDOW)
    if requested > positions:
        raise SpecplanError(f"--seq-len {requested} is longer than the model's {positions} "
                            f"positions; use at most {positions}")
    return requested


def shape_of(model: torch.nn.Module, seq_len: int | None = None) -> ModelShape:
    """The :class:`ModelShape` of a built model (used after loading a checkpoint), trained or
    evaluated on windows of ``seq_len`` (default: its positions)."""
    return shape_from_config(model.config, seq_len=seq_len)


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


def model_card(size: str, *, vocab_size: int, seq_len: int) -> dict:
    """What ``specplan models`` lists for a size: its shape, exact counts and costs."""
    shape = model_shape(size, vocab_size=vocab_size, seq_len=seq_len)
    return {
        "name": size, "family": shape.family, "d": shape.hidden_size,
        "layers": shape.num_hidden_layers, "heads": shape.num_attention_heads,
        "kv_heads": shape.num_key_value_heads, "ff": shape.intermediate_size,
        "tied": shape.tie_embeddings, "vocab_size": vocab_size, "seq_len": seq_len,
        "params": shape.params_total, "params_non_embedding": shape.params_non_embedding,
        "train_flops_per_token": shape.train_flops_per_token(),
        "inference_flops_per_token": shape.inference_flops_per_token(),
        "train_memory_bytes_bf16": shape.train_memory_bytes(),
    }
