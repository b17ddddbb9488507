"""Every sweep file shipped in experiments/ loads and validates (strategies, settings, budgets)."""
from pathlib import Path

import pytest

from experiments.sweep import SweepConfig, load_config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SHIPPED = sorted(EXPERIMENTS.rglob("*.toml"))


def test_the_shipped_sweep_files_are_found():
    assert {"smoke.toml", "replication.toml"} <= {path.name for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_shipped_sweep_file_is_valid(path):
    config = load_config(path)
    assert isinstance(config, SweepConfig)
    assert config.name == path.stem  # its results go to experiments/results/<name>
    assert config.strategies and config.pretrain_budgets and config.spec_budgets
