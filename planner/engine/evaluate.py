"""Evaluation: perplexity per domain, macro-averaged over domains, and inference speed.

Macro-averaging follows the reference study: mean token loss within each domain, averaged over
domains (each domain weighs the same whatever its size), then exponentiated.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from planner.core.cost import Ledger
from planner.core.errors import SpecplanError
from planner.engine.devices import device_label
from planner.engine.train import evaluate_loss


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def macro_perplexity(ppls: Iterable[float]) -> float:
    """Macro-average perplexity: ``exp(mean(log ppl))`` over domains.

    The reference study's Pile average (arXiv 2402.01093 v2, §3): mean per-token loss within each
    domain, averaged over domains, exponentiated, so every domain weighs the same whatever its
    size. A NaN input gives NaN, so a missing domain is never silently averaged away.

    Raises:
        SpecplanError: when ``ppls`` is empty or holds a non-positive value.
    """
    values = [float(v) for v in ppls]
    if not values:
        raise SpecplanError("macro_perplexity: no perplexities given; pass one value per domain")
    if any(v <= 0 for v in values):
        raise SpecplanError(
            "macro_perplexity: perplexities must be > 0; pass perplexities, not losses or deltas"
        )
    return math.exp(sum(math.log(v) for v in values) / len(values))


def domain_perplexities(
    model: torch.nn.Module, windows: dict[str, torch.Tensor], *, batch_size: int = 32
) -> dict[str, float]:
    """Perplexity of ``model`` on each domain's windows, plus the ``macro`` average."""
    losses = {name: evaluate_loss(model, w, batch_size=batch_size) for name, w in windows.items()}
    out = {name: perplexity(loss) for name, loss in losses.items()}
    out["macro"] = macro_perplexity(out.values())
    return out


@dataclass
class InferenceSpeed:
    tokens_per_second: float
    latency_ms_per_token: float
    batch_size: int
    new_tokens: int


@torch.no_grad()
def measure_inference(
    model: torch.nn.Module,
    *,
    flops_per_token: float,
    ledger: Ledger | None = None,
    prompt_len: int = 16,
    new_tokens: int = 32,
    batch_size: int = 8,
    seed: int = 0,
) -> InferenceSpeed:
    """Greedy generation with a KV cache: throughput over a batch, latency at batch size 1.

    The generated tokens are charged to the ledger's ``inference`` phase. Prompt and
    generation stay within the model's window (GPT-2's position table has no slot beyond it).
    """
    window = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    if window:
        prompt_len = max(1, min(prompt_len, window // 2))
        new_tokens = max(1, min(new_tokens, window - prompt_len))
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    model.eval()

    def run(batch: int) -> float:
        prompt = torch.randint(1, vocab, (batch, prompt_len), generator=gen).to(device)
        mask = torch.ones_like(prompt)
        model.generate(  # warm-up: first call builds caches and kernels
            prompt, attention_mask=mask, max_new_tokens=2, do_sample=False, use_cache=True,
            pad_token_id=0,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.generate(
            prompt, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, use_cache=True, pad_token_id=0,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    batch_seconds = run(batch_size)
    single_seconds = run(1)
    tokens = new_tokens * (batch_size + 1)
    if ledger is not None:
        ledger.charge(
            "inference", label="generation", tokens=tokens, flops=tokens * flops_per_token,
            seconds=batch_seconds + single_seconds, device=device_label(device),
        )
    return InferenceSpeed(
        tokens_per_second=batch_size * new_tokens / batch_seconds,
        latency_ms_per_token=1000 * single_seconds / new_tokens,
        batch_size=batch_size,
        new_tokens=new_tokens,
    )
