"""Knowledge distillation: the loss, a disk cache of teacher outputs, and teacher combination.

Response-based distillation (Hinton et al. 2015) as the reference study's SLM-d uses it (v2
§2.2): a pretrained student is fine-tuned on the domain's windows against a mixture of the hard
next-token targets and the fine-tuned teachers' next-token distributions. Any strategy can reuse
the pieces:

* :func:`kd_loss` (from :mod:`planner.engine.distillation`, shared with ``slm-prune``):
  ``(1 - alpha) * CE + alpha * T^2 * D(teacher_T || student_T)`` with ``D`` a forward KL,
  reverse KL or Jensen-Shannon divergence.
* :class:`TeacherCache`: runs a teacher once over the domain's train windows and keeps its top-k
  log-probabilities (safetensors under the workspace cache). Every teacher forward pass is
  charged to the ledger's ``specialization`` phase; a cached load charges the same again
  (device ``cache``): a cache saves time, never accounted cost, so a run's budget split does not
  depend on what an earlier run left in the cache.
  Caching turns the per-epoch teacher cost ``2 N_teacher tokens`` into a one-time cost.
* :func:`combine_teachers`: several teachers' distributions into one per token (uniform, fixed
  or per-token confidence weights), the multi-teacher recipe of production practice (reference
  case: LinkedIn's multi-teacher distillation).
* :func:`check_teacher`: teachers must share the student's tokenizer, since the divergence
  compares distributions over the same token ids.

**The top-k approximation.** Only the teacher's ``k`` most likely tokens are stored. The
divergence is computed between the teacher and the student *both restricted to that support and
renormalised on it*. This is exact when ``k`` is the vocabulary size. Otherwise it ignores the
teacher's tail mass (small for a confident teacher) and the student's mass outside the support
gets no gradient from the distillation term; the hard cross-entropy term still covers it.
Storage is ``tokens * k * 6`` bytes (float16 log-probabilities plus int32 ids).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from planner.core.cost import Ledger
from planner.core.errors import SpecplanError
from planner.core.io import atomic_path, content_hash
from planner.data.inputs import tokenizer_fingerprint
from planner.engine.devices import device_label
from planner.engine.distillation import LOG_ZERO, kd_loss
from planner.engine.models import shape_of

WEIGHT_MODES = ("uniform", "confidence")


@dataclass
class TopK:
    """Next-token distributions kept on their ``k`` most likely tokens, per position.

    Attributes:
        logprobs: (N, P, k) float16 log-probabilities (at the temperature they were made with).
        ids: (N, P, k) int32 token ids of those entries.
    """

    logprobs: torch.Tensor
    ids: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.ids.shape[-1])

    def probs(self) -> torch.Tensor:
        """(N, P, k) float32 probabilities renormalised on the stored support."""
        return torch.softmax(self.logprobs.float().clamp(min=LOG_ZERO), dim=-1)


@dataclass
class TeacherOutputs:
    """A teacher's cached outputs over some windows, and what computing them cost.

    Attributes:
        topk: the teacher's distributions at positions ``0 .. T-2`` of every window.
        key: the cache key (teacher fingerprint, windows, k, temperature).
        reused: True when loaded from the cache (charged again, not computed).
        flops: forward FLOPs the outputs cost when they were computed.
    """

    topk: TopK
    key: str
    reused: bool
    flops: float


class DistillLoss:
    """``loss_fn(model, batch)`` for the training engine: :func:`kd_loss` against cached outputs.

    A batch is a ``(B, T)`` tensor of windows or a dict with ``input_ids`` and optionally
    ``index`` (rows of ``windows``). Without an index the rows are found by content: a teacher's
    output depends only on the window's tokens, so equal windows share outputs.

    Args:
        windows: (N, T) the windows the teacher outputs were computed on.
        teacher: their outputs, positions ``0 .. T-2`` of each window.
    """

    def __init__(self, windows: torch.Tensor, teacher: TopK, *, alpha: float, temperature: float,
                 divergence: str) -> None:
        if teacher.logprobs.shape[:2] != (windows.shape[0], windows.shape[1] - 1):
            raise ValueError(
                f"teacher outputs {tuple(teacher.logprobs.shape)} do not cover windows "
                f"{tuple(windows.shape)}"
            )
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.divergence = divergence
        self._rows = {row.numpy().tobytes(): i for i, row in enumerate(windows.cpu())}

    def _index(self, ids: torch.Tensor) -> torch.Tensor:
        try:
            return torch.tensor([self._rows[row.numpy().tobytes()] for row in ids.cpu()])
        except KeyError:
            raise KeyError("a training window has no cached teacher output") from None

    def __call__(self, model: torch.nn.Module, batch) -> torch.Tensor:
        ids = batch["input_ids"] if isinstance(batch, dict) else batch  # (B, T)
        index = batch["index"].cpu() if isinstance(batch, dict) and "index" in batch else None
        index = self._index(ids) if index is None else index
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        t_log = self.teacher.logprobs[index].to(ids.device)  # (B, T-1, k)
        t_ids = self.teacher.ids[index].to(ids.device)
        return kd_loss(logits, t_log, t_ids, ids[:, 1:], alpha=self.alpha,
                       temperature=self.temperature, divergence=self.divergence)


# -- the teacher cache --------------------------------------------------------------------------
def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Content hash of a model's weights: the teacher part of a cache key."""
    parts: list[str | bytes] = []
    for name, tensor in sorted(model.state_dict().items()):
        parts += [name, str(tensor.dtype), str(tuple(tensor.shape)), _tensor_bytes(tensor)]
    return content_hash(*parts)


@torch.no_grad()
def teacher_topk(teacher: torch.nn.Module, windows: torch.Tensor, *, top_k: int,
                 temperature: float, batch_size: int = 32, device: torch.device | None = None,
                 dtype: torch.dtype | None = None, vocab: int | None = None) -> TopK:
    """Run ``teacher`` over windows; keep its top-k log-probabilities at ``temperature``.

    Args:
        vocab: the tokenizer's size; output rows beyond it (a padded embedding) are dropped
            before the softmax, so every kept id is a token the student has.

    Returns:
        :class:`TopK` of shape (N, T-1, k): the prediction of each next token.
    """
    device = device or next(teacher.parameters()).device
    teacher.to(device).eval()
    vocab = vocab or int(teacher.config.vocab_size)
    k = min(top_k, vocab)
    logprobs, ids = [], []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)  # (b, T)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = teacher(input_ids=batch).logits[:, :-1, :vocab]  # (b, T-1, V)
        values, index = torch.log_softmax(logits.float() / temperature, -1).topk(k, dim=-1)
        logprobs.append(values.half().cpu())
        ids.append(index.int().cpu())
    return TopK(torch.cat(logprobs), torch.cat(ids))


class TeacherCache:
    """Teacher outputs on disk, computed once per (teacher weights, windows, k, temperature).

    Charges: every teacher forward pass to ``specialization`` (tokens x the teacher's forward
    FLOPs per token, :mod:`planner.engine.models`); a load from the cache charges the same
    FLOPs, tokens and recorded seconds on device ``cache``, and its ledger line says so.
    Reference study v2 §2.2 (SLM-d); caching as in TextBrewer.

    Args:
        cache_dir: the workspace cache; outputs live in ``cache_dir/teacher-outputs/``.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.folder = Path(cache_dir) / "teacher-outputs"

    def key(self, teacher: torch.nn.Module, windows: torch.Tensor, *, top_k: int,
            temperature: float, vocab: int | None = None) -> str:
        vocab = min(vocab or int(teacher.config.vocab_size), int(teacher.config.vocab_size))
        parts = [model_fingerprint(teacher), str(tuple(windows.shape)), _tensor_bytes(windows),
                 str(min(top_k, vocab)), repr(float(temperature))]
        if vocab != int(teacher.config.vocab_size):  # padded rows dropped: other outputs
            parts.append(f"vocab={vocab}")
        return content_hash(*parts)

    def outputs(
        self, teacher: torch.nn.Module, windows: torch.Tensor, *, ledger: Ledger, label: str,
        top_k: int, temperature: float, device: torch.device | None = None,
        dtype: torch.dtype | None = None, vocab: int | None = None,
    ) -> TeacherOutputs:
        """The teacher's top-k outputs over ``windows``, from the cache or computed and charged.

        Args:
            windows: (N, T) token windows (the domain's train windows).
            label: the ledger line (e.g. ``teacher llm passes``).
            vocab: the tokenizer's size (see :func:`teacher_topk`).
        """
        from safetensors.torch import load_file, save_file

        key = self.key(teacher, windows, top_k=top_k, temperature=temperature, vocab=vocab)
        path = self.folder / f"{key}.safetensors"
        flops = windows.numel() * shape_of(teacher, windows.shape[1]).forward_flops_per_token()
        if path.exists():  # saves the time, not the accounted cost: the same charge again
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                seconds = float((f.metadata() or {}).get("seconds", 0.0))
            tensors = load_file(str(path))
            ledger.charge("specialization", label=f"{label} (cached outputs)",
                          tokens=windows.numel(), flops=flops, seconds=seconds, device="cache")
            return TeacherOutputs(TopK(tensors["logprobs"], tensors["ids"]), key, True, flops)
        device = device or next(teacher.parameters()).device
        t0 = time.perf_counter()
        topk = teacher_topk(teacher, windows, top_k=top_k, temperature=temperature,
                            device=device, dtype=dtype, vocab=vocab)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        ledger.charge("specialization", label=label, tokens=windows.numel(), flops=flops,
                      seconds=seconds, device=device_label(device))
        with atomic_path(path) as tmp:
            save_file({"logprobs": topk.logprobs, "ids": topk.ids}, str(tmp),
                      metadata={"label": label, "flops": repr(flops), "seconds": repr(seconds)})
        return TeacherOutputs(topk, key, False, flops)


# -- several teachers ---------------------------------------------------------------------------
def _checked(values: list[float], n_teachers: int, text: str) -> list[float]:
    if len(values) != n_teachers:
        raise SpecplanError(
            f"teacher_weights={text!r}: {len(values)} weight(s) for {n_teachers} teacher(s)"
        )
    if any(v < 0 or not math.isfinite(v) for v in values) or sum(values) <= 0:
        raise SpecplanError(
            f"teacher_weights={text!r}: weights must be non-negative with a positive sum"
        )
    return values


def parse_weights(text: str, n_teachers: int) -> str | list[float]:
    """``uniform``, ``confidence`` or ``n_teachers`` comma-separated non-negative floats.

    Raises:
        SpecplanError: anything else, naming the setting and the expected form.
    """
    text = str(text).strip()
    if text in WEIGHT_MODES:
        return text
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise SpecplanError(
            f"teacher_weights={text!r}: use uniform, confidence or {n_teachers} comma-separated "
            f"numbers"
        ) from None
    return _checked(values, n_teachers, text)


def teacher_weights(dists: list[TopK], weights: str | list[float] = "uniform") -> torch.Tensor:
    """Per-token weight of each teacher: (n_teachers, N, P), summing to one over teachers.

    ``uniform`` averages (TextBrewer's MultiTeacherDistiller); a list gives fixed weights;
    ``confidence`` weights each token by each teacher's max probability (its top-1 probability
    at the cache temperature), normalised over teachers, so the surest teacher leads per token.
    """
    n = len(dists)
    shape = dists[0].logprobs.shape[:2]
    if isinstance(weights, str):
        weights = parse_weights(weights, n)
    if weights == "uniform":
        raw = torch.ones(n, *shape)
    elif weights == "confidence":
        raw = torch.stack([d.logprobs.float().amax(-1).exp() for d in dists])  # (n, N, P)
    else:
        raw = torch.tensor(_checked(list(weights), n, str(weights))).view(n, 1, 1)
        raw = raw.expand(n, *shape).float()
    return raw / raw.sum(0, keepdim=True)


def combine_teachers(dists: list[TopK], weights: str | list[float] = "uniform", *,
                     top_k: int | None = None, chunk: int = 16) -> TopK:
    """Mix several teachers' distributions into one per token (a mixture in probability space).

    Each teacher's distribution is renormalised on its own support, weighted per token
    (:func:`teacher_weights`), summed over the union of supports, and the mixture's ``top_k``
    most likely tokens (default: the largest teacher k) are kept, renormalised.

    Args:
        dists: per-teacher outputs over the same windows, each (N, P, k_i).
        chunk: windows mixed at a time (the mixture is dense over the vocabulary per chunk).
    """
    if not dists:
        raise ValueError("combine_teachers needs at least one teacher")
    if len(dists) == 1:
        return dists[0]
    w = teacher_weights(dists, weights)  # (n, N, P)
    k = top_k or max(d.k for d in dists)
    vocab = int(max(d.ids.max() for d in dists)) + 1
    n_windows, positions = w.shape[1:]
    logprobs, ids = [], []
    for start in range(0, n_windows, chunk):
        end = min(start + chunk, n_windows)
        mix = torch.zeros(end - start, positions, vocab)  # (c, P, V)
        for i, d in enumerate(dists):
            part = d.probs()[start:end] * w[i, start:end, :, None]  # (c, P, k_i)
            mix.scatter_add_(-1, d.ids[start:end].long(), part)
        values, index = mix.topk(min(k, vocab), dim=-1)  # (c, P, k)
        values = values / values.sum(-1, keepdim=True)
        logprobs.append(values.log().half())
        ids.append(index.int())
    return TopK(torch.cat(logprobs), torch.cat(ids))


# -- vocabulary check ---------------------------------------------------------------------------
def check_teacher(name: str, *, vocab_size: int, tokenizer, student_vocab_size: int,
                  student_tokenizer) -> None:
    """Refuse a teacher whose vocabulary or tokenizer is not the student's.

    A teacher with the student's tokenizer and more output rows than tokens (an embedding
    padded to a multiple of 64 or 128, as open checkpoints ship) is accepted: the rows beyond
    the tokenizer are no token, and :func:`teacher_topk` drops them.

    Args:
        name: how the error names the teacher (``teacher llm``).
        tokenizer: the teacher's tokenizer, or None when only its vocabulary size is known.
        student_vocab_size: the tokens of the student's tokenizer.

    Raises:
        SpecplanError: naming the teacher, both vocabulary sizes and tokenizer fingerprints.
    """

    student_fp = tokenizer_fingerprint(student_tokenizer)
    teacher_fp = tokenizer_fingerprint(tokenizer) if tokenizer is not None else student_fp
    if vocab_size < student_vocab_size or teacher_fp != student_fp:
        raise SpecplanError(
            f"{name}: its vocabulary ({vocab_size} tokens, tokenizer {teacher_fp}) is "
            f"not the student's ({student_vocab_size} tokens, tokenizer {student_fp}); "
            f"distillation compares token distributions, so teachers must use the student's "
            f"tokenizer"
        )

