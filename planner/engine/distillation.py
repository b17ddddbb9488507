"""Knowledge distillation's loss, shared by every strategy that distils (cached top-k teacher
outputs in ``slm-d``, an online teacher in ``slm-prune``).

:func:`kd_loss` is ``(1 - alpha) * CE + alpha * T^2 * D(teacher_T || student_T)`` (Hinton et al.
2015) with ``D`` a forward KL, reverse KL (MiniLLM) or Jensen-Shannon divergence, on the
teacher's top-k support renormalised there, or on the whole vocabulary.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from planner.core.errors import SpecplanError

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
# A float16 log-probability of a token the teacher gives exactly zero mass is -inf; clamping it
# keeps 0 * log 0 terms at 0 instead of nan (exp(-1e4) is 0 in float32).
LOG_ZERO = -1e4


def _divergence(t_log: torch.Tensor, s_log: torch.Tensor, name: str) -> torch.Tensor:
    """Per-position divergence between two log-distributions on the same support: (...,)."""
    if name == "forward_kl":  # mean-seeking: the student covers every teacher mode
        return (t_log.exp() * (t_log - s_log)).sum(-1)
    if name == "reverse_kl":  # mode-seeking (MiniLLM): the student avoids the teacher's tails
        return (s_log.exp() * (s_log - t_log)).sum(-1)
    m_log = torch.logaddexp(t_log, s_log) - math.log(2.0)  # bounded, symmetric
    return 0.5 * ((t_log.exp() * (t_log - m_log)).sum(-1) + (s_log.exp() * (s_log - m_log)).sum(-1))


def kd_loss(
    student_logits: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    teacher_topk_ids: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    divergence: str = "forward_kl",
) -> torch.Tensor:
    """Hard next-token cross-entropy mixed with a divergence to the teacher's distribution.

    ``(1 - alpha) * CE(student, targets) + alpha * T^2 * D(teacher_T || student_T)``, averaged
    over positions. ``T^2`` keeps the soft term's gradient scale independent of ``T`` (Hinton et
    al. 2015). The divergence is computed on the teacher's top-k support with both distributions
    renormalised there (see the module docstring): exact when k is the vocabulary size.

    Args:
        student_logits: (..., V) student logits at the positions being predicted.
        teacher_topk_logprobs: (..., k) teacher log-probabilities at temperature ``T``.
        teacher_topk_ids: (..., k) their token ids; None when the teacher's log-probabilities
            cover the whole vocabulary (an online teacher: exact, no gather).
        targets: (...) the true next tokens.
        alpha: weight of the distillation term in [0, 1].
        temperature: softening temperature ``T`` > 0 (the teacher's must match).
        divergence: ``forward_kl`` (Hinton), ``reverse_kl`` (MiniLLM) or ``jsd``.

    Raises:
        SpecplanError: unknown divergence, alpha outside [0, 1] or non-positive temperature.
    """
    if divergence not in DIVERGENCES:
        raise SpecplanError(f"divergence={divergence!r}: use one of {', '.join(DIVERGENCES)}")
    if not 0.0 <= alpha <= 1.0:
        raise SpecplanError(f"alpha={alpha}: the distillation weight must be in [0, 1]")
    if temperature <= 0:
        raise SpecplanError(f"temperature={temperature}: must be positive")
    logits = student_logits.float()  # (..., V)
    hard = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    if alpha == 0.0:
        return hard
    t_log = teacher_topk_logprobs.float().clamp(min=LOG_ZERO)  # (..., k)
    t_log = t_log - t_log.logsumexp(-1, keepdim=True)
    s_log = logits / temperature  # (..., V)
    if teacher_topk_ids is not None:
        s_log = s_log.gather(-1, teacher_topk_ids.long())  # (..., k)
    s_log = s_log - s_log.logsumexp(-1, keepdim=True)
    soft = _divergence(t_log, s_log, divergence).mean()
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft
