import math

import pytest
import torch

from planner.core.cost import Ledger
from planner.core.errors import BudgetError, SpecplanError
from planner.engine.devices import resolve_device
from planner.engine.models import model_shape
from planner.engine.train import TrainConfig, WindowSampler, train

SHAPE = model_shape("tiny", vocab_size=64, seq_len=32)


def learnable_windows(n=256, seed=0):
    """Windows of a deterministic periodic pattern with a random phase: easy to learn."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.randint(0, 8, (n, 1), generator=gen)
    return ((torch.arange(32) + phase) % 8 + 1).long()


def run(cfg, ledger=None, windows=None, model=None):
    windows = learnable_windows() if windows is None else windows
    model = model or SHAPE.build(seed=0)
    ledger = ledger if ledger is not None else Ledger()
    result = train(model, WindowSampler(windows[:200], cfg.batch_size, cfg.grad_accum, cfg.seed),
                   cfg, seq_len=32, flops_per_token=SHAPE.train_flops_per_token(), ledger=ledger,
                   phase="generic", valid=windows[200:])
    return model, result, ledger


def test_loss_falls_on_learnable_corpus():
    _, result, _ = run(TrainConfig(max_steps=40, batch_size=8, eval_every=10, lr=1e-2,
                                   warmup_steps=5))
    losses = [h["val_loss"] for h in result.history]
    assert losses == sorted(losses, reverse=True)  # validation loss falls at every check
    assert losses[-1] < 0.25 * math.log(64)  # far below the uniform guess


def test_flop_budget_stops_and_is_charged():
    per_step = 8 * 32 * SHAPE.train_flops_per_token()
    cfg = TrainConfig(max_flops=5.5 * per_step, batch_size=8, eval_every=100)
    _, result, ledger = run(cfg)
    assert result.steps == 5
    assert ledger.totals()["generic"]["flops"] == pytest.approx(5 * per_step)
    assert ledger.totals()["generic"]["tokens"] == 5 * 8 * 32


def test_budget_below_one_step_is_refused_before_training():
    cfg = TrainConfig(max_flops=10.0, batch_size=8)
    ledger = Ledger()
    with pytest.raises(BudgetError, match="smaller than one optimizer step"):
        run(cfg, ledger)
    assert ledger.entries == []


def test_same_seed_same_result():
    cfg = TrainConfig(max_steps=6, batch_size=8, eval_every=3)
    _, a, _ = run(cfg)
    _, b, _ = run(cfg)
    assert a.history == b.history


def test_grad_accumulation_matches_larger_batch():
    big = TrainConfig(max_steps=4, batch_size=8, eval_every=2, seed=1, grad_clip=0.0)
    acc = TrainConfig(max_steps=4, batch_size=4, grad_accum=2, seed=1, grad_clip=0.0)
    windows = learnable_windows()
    m1, _, _ = run(big, windows=windows)
    # the same global batches: accumulate two halves of each 8-window batch
    m2 = SHAPE.build(seed=0)

    class Halves:
        def __init__(self):
            self.full = WindowSampler(windows[:200], 8, 1, seed=1)

        def batch(self, step, micro):
            return self.full.batch(step, 0)[micro * 4:(micro + 1) * 4]

    train(m2, Halves(), acc, seq_len=32, flops_per_token=1.0, ledger=Ledger(), phase="generic")
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_resume_continues_from_saved_step(tmp_path):
    full = TrainConfig(max_steps=10, batch_size=8, eval_every=5, seed=2)
    m_full, r_full, _ = run(full)
    first = TrainConfig(max_steps=10, batch_size=8, eval_every=5, seed=2,
                        checkpoint_dir=str(tmp_path), checkpoint_every=5)

    class Stop(Exception):
        pass

    def stop_after_checkpoint(step, tokens, loss):
        if step == 5:
            raise Stop

    model = SHAPE.build(seed=0)
    windows = learnable_windows()
    with pytest.raises(Stop):
        train(model, WindowSampler(windows[:200], 8, 1, 2), first, seq_len=32,
              flops_per_token=1.0, ledger=Ledger(), phase="generic", valid=windows[200:],
              on_eval=stop_after_checkpoint)
    assert (tmp_path / "last" / "model.safetensors").exists()
    resumed_cfg = TrainConfig(max_steps=10, batch_size=8, eval_every=5, seed=2,
                              checkpoint_dir=str(tmp_path), resume=True)
    ledger = Ledger()
    m2, r2, ledger = run(resumed_cfg, ledger=ledger)
    # The run's cost is all 10 steps: 5 spent before the interruption (recorded in the
    # checkpoint, with their device time) and the 5 run now.
    before, now = ledger.entries
    assert before.label.endswith("(steps 1-5, before resuming)") and before.seconds > 0
    assert before.tokens == now.tokens == 5 * 8 * 32
    assert ledger.totals()["generic"]["tokens"] == 10 * 8 * 32
    assert r2.steps == 10
    assert [h["val_loss"] for h in r2.history] == pytest.approx(
        [h["val_loss"] for h in r_full.history], rel=1e-4)
    for p, q in zip(m_full.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_early_stopping_restores_best_weights():
    windows = learnable_windows()
    # validation on unrelated random windows: loss rises as the model fits the pattern
    noise = torch.randint(1, 64, (32, 32), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(max_steps=200, batch_size=8, eval_every=2, lr=1e-2, warmup_steps=1,
                      early_stopping_patience=2)
    model = SHAPE.build(seed=0)
    result = train(model, WindowSampler(windows[:200], 8), cfg, seq_len=32, flops_per_token=1.0,
                   ledger=Ledger(), phase="specialization", valid=noise)
    assert result.stopped == "early-stopping"
    assert result.steps < 200
    from planner.engine.train import evaluate_loss
    assert evaluate_loss(model, noise) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_unknown_device_is_one_clear_error():
    with pytest.raises(SpecplanError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpecplanError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_a_pass_out_of_memory_is_retried_in_smaller_passes_with_the_same_step():
    """A loss that runs out of memory above 2 windows: the step is redone in passes of 2
    windows, and training follows the same curve as passes of the whole batch."""
    from planner.engine.train import lm_loss

    def small_memory(model, batch):
        if len(batch) > 2:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return lm_loss(model, batch)

    cfg = TrainConfig(max_steps=6, batch_size=8, eval_every=3, lr=1e-2, warmup_steps=1)
    windows = learnable_windows()
    _, whole, _ = run(cfg)
    model = SHAPE.build(seed=0)
    split = train(model, WindowSampler(windows[:200], 8, 1, 0), cfg, seq_len=32,
                  flops_per_token=SHAPE.train_flops_per_token(), ledger=Ledger(),
                  phase="generic", valid=windows[200:], loss_fn=small_memory,
                  eval_loss_fn=lm_loss)
    assert (whole.windows_per_pass, split.windows_per_pass) == (8, 2)
    assert split.steps == whole.steps == 6
    assert [h["val_loss"] for h in split.history] == pytest.approx(
        [h["val_loss"] for h in whole.history], rel=1e-4)


def test_out_of_memory_at_one_window_is_one_line():
    def no_memory(model, batch):
        raise torch.OutOfMemoryError("simulated")

    ledger = Ledger()
    with pytest.raises(SpecplanError, match=r"out of memory on cpu at 1 window\(s\) per pass; "
                                            r"the model does not fit"):
        train(SHAPE.build(seed=0), WindowSampler(learnable_windows(), 8, 1, 0),
              TrainConfig(max_steps=2, batch_size=6), seq_len=32, flops_per_token=1.0,
              ledger=ledger, phase="generic", loss_fn=no_memory)
    assert ledger.entries == []  # no step finished: nothing charged


def test_learning_rates_fall_as_the_square_root_of_size_above_the_presets():
    from planner.engine.train import scaled_lr

    assert scaled_lr(3e-3, SHAPE.build(seed=0)) == 3e-3  # CPU presets: as given
    body = torch.nn.Linear(2000, 20000, bias=False)  # 40M non-embedding parameters
    assert scaled_lr(3e-3, body) == pytest.approx(1.5e-3)
    cfg = TrainConfig(lr=1.0, warmup_steps=20)
    assert cfg.lr_at(9, 1000) == pytest.approx(10 / 20)  # short runs: the given warm-up
    assert cfg.lr_at(49, 10_000) == pytest.approx(50 / 100)  # long ones: 1% of the steps
    stopping = TrainConfig(lr=1.0, warmup_steps=10, early_stopping_patience=3)
    assert stopping.lr_at(9, 10_000) == 1.0  # fine-tuning stops early: its own warm-up
