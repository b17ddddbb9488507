"""GPU checks (``pytest -m gpu``; skipped without CUDA, never part of ``make test``).

``SPECPLAN_GPU_CHECK_DEVICE=cpu pytest -m gpu tests/run/test_gpu.py`` runs the same check on the
CPU, slowly, to try the code path where no GPU is lent.
"""
from __future__ import annotations

import os

import pytest
import torch

from planner.core.args import RunArgs
from planner.core.budgets import Budgets
from planner.engine.models import model_shape
from planner.run.config import make_workspace
from planner.run.runner import run_strategy

DEVICE = os.environ.get("SPECPLAN_GPU_CHECK_DEVICE", "cuda")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")]


def test_slm_fine_tunes_a_126m_base_and_reports_its_speed(tiny_inputs, tmp_path):
    """The study's 126M shape as a local checkpoint (random weights, saved with
    save_pretrained), fine-tuned by ``slm --base`` on the device; tokens/s from the ledger."""
    shape = model_shape("126m", vocab_size=len(tiny_inputs.tokenizer), seq_len=64)
    shape.build(seed=0).save_pretrained(tmp_path / "base")
    tiny_inputs.tokenizer.save_pretrained(tmp_path / "base")
    run = RunArgs(base=str(tmp_path / "base"), batch_size=16, eval_every=20, eval_windows=32,
                  device=DEVICE)
    steps = 40 if DEVICE == "cuda" else 3
    spec_flops = steps * 16 * tiny_inputs.generic.train.seq_len * shape.train_flops_per_token()
    ws = make_workspace(tiny_inputs, Budgets(0.0, spec_flops), run, tmp_path / "cache")
    report = run_strategy("slm", {}, ws, {"law": tiny_inputs.domains["law"]})
    [domain] = report.domains
    training = [e for e in domain.ledger.entries if e.tokens]
    tokens, seconds = sum(e.tokens for e in training), sum(e.seconds for e in training)
    print(f"slm --base 126m on {training[0].device}: {tokens / seconds:.0f} tokens/s "
          f"({tokens} tokens in {seconds:.1f} s)")
    assert tokens > 0 and domain.ppl_after <= domain.ppl_before * 1.05
