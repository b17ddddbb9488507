"""Trackers: a run's curves and ledger land in TensorBoard and MLflow as logged; a plan's study
opens in optuna-dashboard; a tracker that cannot run is one line."""
from __future__ import annotations

import io
import json

import pytest
import torch

from planner.core.cost import Ledger
from planner.core.errors import SpecplanError
from planner.engine import tracking
from planner.engine.models import model_shape
from planner.engine.train import TrainConfig, WindowSampler, train
from tests.conftest import specplan

SHAPE = model_shape("tiny", vocab_size=64, seq_len=32)


def run_tracked(spec: str):
    """Two runs under one tracker: 25 steps in scope "trial 0", then one with the same label."""
    windows = torch.randint(1, 64, (96, 32), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(max_steps=25, batch_size=8, eval_every=10, device="cpu")
    ledger, results = Ledger(), []
    with tracking.tracking(spec):
        for scope in ("trial 0", "trial 0"):
            with tracking.scope(scope):
                results.append(train(SHAPE.build(seed=0), WindowSampler(windows[:64], 8, 1, 0),
                                     cfg, seq_len=32, flops_per_token=1e3, ledger=ledger,
                                     phase="generic", label="pretrain slm",
                                     valid=windows[64:]))
    assert not tracking.active()
    return results, ledger


def test_tensorboard_holds_the_losses_lr_speed_and_ledger(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, ledger = run_tracked(f"tensorboard:{tmp_path}")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"trial 0/pretrain slm/train_loss", "trial 0/pretrain slm/lr",
            "trial 0/pretrain slm/tokens_per_s", "trial 0/pretrain slm/val_loss",
            "trial 0/pretrain slm-2/val_loss", "ledger/generic/flops"} <= tags
    val = events.Scalars("trial 0/pretrain slm/val_loss")
    assert [e.step for e in val] == [h["step"] for h in results[0].history] == [10, 20, 25]
    assert [e.value for e in val] == pytest.approx([h["val_loss"] for h in results[0].history])
    assert [e.step for e in events.Scalars("trial 0/pretrain slm/train_loss")] == [10, 20, 25]
    flops = events.Scalars("ledger/generic/flops")
    assert [e.step for e in flops] == [1, 2]
    assert flops[-1].value == pytest.approx(ledger.totals()["generic"]["flops"])


def test_mlflow_holds_the_same_metrics(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results, ledger = run_tracked(f"mlflow:{uri}")
    client = mlflow.tracking.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("specplan").experiment_id])
    val = client.get_metric_history(run.info.run_id, "trial 0/pretrain slm/val_loss")
    assert [m.value for m in val] == pytest.approx([h["val_loss"] for h in results[0].history])
    assert run.data.metrics["ledger/generic/tokens"] == ledger.totals()["generic"]["tokens"]


def test_a_tracker_that_cannot_run_is_one_line(monkeypatch, capsys):
    with pytest.raises(SpecplanError, match="unknown tracker 'wandb'; use tensorboard"):
        tracking.check_tracker("wandb")
    monkeypatch.setitem(tracking.KINDS, "tensorboard", "no_such_package_here")
    code, out, err = specplan(monkeypatch, capsys, "run", "slm", "--demo",
                              "--tracker", "tensorboard")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --tracker: the no_such_package_here package is not installed; pip install "
        "'specplan[track]' (or leave --tracker out)"]


def test_a_plan_study_opens_in_optuna_dashboard(tmp_path):
    """The dashboard reads a plan's default storage (a journal file) through its own loader."""
    pytest.importorskip("optuna_dashboard")
    import optuna
    import optuna_dashboard

    from planner.search.study import STATE_FILE, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plan-x", storage=open_storage(None, tmp_path))
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1e-2), n_trials=3)
    app = optuna_dashboard.wsgi(str(tmp_path / STATE_FILE))
    status = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies",
                         "QUERY_STRING": "", "SERVER_NAME": "x", "SERVER_PORT": "80",
                         "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(),
                         "wsgi.url_scheme": "http"},
                        lambda s, h, *exc: status.append(s)))
    assert status == ["200 OK"]
    [summary] = json.loads(body)["study_summaries"]
    assert summary["study_name"] == "plan-x"


def test_a_failing_tracker_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    pytest.importorskip("tensorboard")

    def unreachable(self, metrics, step):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(tracking._TensorBoard, "log", unreachable)
    with caplog.at_level("WARNING", logger="specplan"):
        results, ledger = run_tracked(f"tensorboard:{tmp_path}")
    assert [r.steps for r in results] == [25, 25] and ledger.entries
    warnings = [r.getMessage() for r in caplog.records if "tracker failed" in r.getMessage()]
    assert warnings == ["tracker failed (ConnectionError: tracking server unreachable); "
                        "training goes on without it"]
