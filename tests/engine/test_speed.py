"""The measured step settings: a probe picks among precisions and attention kernels at equal
loss, leaves the model as it was, is cached per shape, and is skipped where it cannot pay."""
from __future__ import annotations

import json
import os

import pytest
import torch

from planner.core.cost import Ledger
from planner.core.threads import cpu_threads
from planner.engine import speed
from planner.engine.models import model_shape
from planner.engine.train import TrainConfig, WindowSampler, lm_loss, train

SHAPE = model_shape("tiny", vocab_size=64, seq_len=32)
CPU = torch.device("cpu")


@pytest.fixture
def probed(monkeypatch, tmp_path):
    """Probe even the tiny model, into a fresh cache file."""
    monkeypatch.setattr(speed, "PROBE_MIN_FLOPS", 0.0)
    cache = tmp_path / "probes.json"
    monkeypatch.setenv("SPECPLAN_PROBE_CACHE", str(cache))
    return cache


def batch(n=8):
    return torch.randint(1, 64, (n, 32), generator=torch.Generator().manual_seed(0))


def test_the_probe_leaves_the_model_and_rng_as_they_were_and_caches_its_choice(probed):
    model = SHAPE.build(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    rng = torch.get_rng_state()
    chosen = speed.step_settings(model, batch(), lm_loss, CPU, "auto", 1.0)
    assert chosen.precision in ("fp32", "bf16") and chosen.attention in ("default", "math")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    [entry] = json.loads(probed.read_text()).values()
    assert set(entry["step_seconds"]) == {"fp32/default", "fp32/math", "bf16/default", "bf16/math"}
    assert all(s > 0 for s in entry["step_seconds"].values())
    assert (entry["precision"], entry["attention"]) == (chosen.precision, chosen.attention)


def test_a_cached_shape_is_not_probed_again_and_another_shape_is(probed, monkeypatch):
    model = SHAPE.build(seed=0)
    first = speed.step_settings(model, batch(), lm_loss, CPU, "auto", 1.0)
    calls = []
    real = speed._probe
    monkeypatch.setattr(speed, "_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert speed.step_settings(model, batch(), lm_loss, CPU, "auto", 1.0) == first
    assert calls == []
    speed.step_settings(model, batch(4), lm_loss, CPU, "auto", 1.0)  # another batch shape
    assert calls == [1] and len(json.loads(probed.read_text())) == 2


def test_bf16_is_refused_when_it_changes_the_loss(probed):
    def drifting(model, ids):  # bf16 "trains something else": its loss is 5% higher
        loss = lm_loss(model, ids)
        return loss * 1.05 if torch.is_autocast_enabled("cpu") else loss

    chosen = speed.step_settings(SHAPE.build(seed=0), batch(), drifting, CPU, "auto", 1.0)
    assert chosen.precision == "fp32"


def test_an_explicit_precision_is_kept_and_a_small_step_is_not_probed(probed, monkeypatch):
    model = SHAPE.build(seed=0)
    assert speed.step_settings(model, batch(), lm_loss, CPU, "fp32", 1.0).precision == "fp32"
    assert speed.step_settings(model, batch(), lm_loss, CPU, "bf16", 1.0).precision == "bf16"
    monkeypatch.setattr(speed, "PROBE_MIN_FLOPS", 1e10)
    probed.unlink()
    assert speed.step_settings(model, batch(), lm_loss, CPU, "auto", 1e9) == speed.StepSettings()
    assert not probed.exists()


def test_a_run_records_what_it_ran_in(probed):
    cfg = TrainConfig(max_steps=2, batch_size=8, precision="bf16", device="cpu")
    result = train(SHAPE.build(seed=0), WindowSampler(batch(64), 8, 1, 0), cfg, seq_len=32,
                   flops_per_token=SHAPE.train_flops_per_token(), ledger=Ledger(),
                   phase="generic")
    assert result.precision == "bf16" and result.attention in ("default", "math")


def test_cpu_threads_follow_omp_num_threads_else_physical_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
