"""The contract every registered strategy keeps, checked on each one: a new ``@register`` gets
the whole battery (in the manner of Optuna's sampler tests and PEFT's common tester).

Settings survive JSON and the CLI's ``--set KEY=VALUE`` strings; estimates are non-negative and
a budget too small is refused before any compute; a tiny run spends within its estimate and its
budgets, does what its traits say, repeats itself exactly under the same seed, and exports a
model transformers loads.
Runs are shared through one session fixture, so the battery costs one tiny run per strategy
and replica.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from planner.cli._shared import parse_overrides
from planner.core.errors import SpecplanError
from planner.engine.train import evaluate_loss
from planner.run.runner import plan_check, run_strategy
from strategies import available, get_strategy
from strategies.base import settings_json
from tests.conftest import make_workspace

# Enough for one step of every phase of every strategy: slm-d's llm teacher is the dearest,
# and clustering the whole tiny generic corpus (about 9e9 FLOPs) comes out of the pretraining.
BUDGETS = {"pretrain_flops": 1.5e10, "spec_flops": 7e9}


def tiny_settings(name: str) -> dict:
    """The cheapest settings a strategy declares: every integer setting at the low end of its
    range (fewest clusters, experts, basis tensors, patience, teacher tokens)."""
    return {f.name: f.metadata["low"] for f in dataclasses.fields(get_strategy(name).settings_cls)
            if f.metadata.get("low") is not None and type(f.default) is int}


def range_end(name: str, end: int) -> dict:
    """Every ranged or categorical setting at one end (0: low, -1: high) of what it accepts."""
    values = {}
    for f in dataclasses.fields(get_strategy(name).settings_cls):
        meta = f.metadata
        if meta.get("choices") is not None:
            values[f.name] = meta["choices"][end]
        elif meta.get("low") is not None:
            values[f.name] = (meta["low"], meta["high"])[end]
    return values


class Lab:
    """Tiny runs on the law domain, one workspace (and cache) per replica, each run done once."""

    def __init__(self, inputs, root):
        self.inputs, self.root = inputs, root
        self.domain = {"law": inputs.domains["law"].cut(1024)}  # 32 windows: cheap teacher passes
        self._workspaces, self._runs = {}, {}

    def workspace(self, replica: str = "a"):
        if replica not in self._workspaces:
            self._workspaces[replica] = make_workspace(self.inputs, self.root / replica, **BUDGETS)
        return self._workspaces[replica]

    def run(self, name: str, replica: str = "a"):
        if (name, replica) not in self._runs:
            self._runs[name, replica] = run_strategy(
                name, tiny_settings(name), self.workspace(replica), self.domain,
                out_dir=self.root / replica / "models" / name)
        return self._runs[name, replica]


@pytest.fixture(scope="session")
def lab(tiny_inputs, tmp_path_factory):
    return Lab(tiny_inputs, tmp_path_factory.mktemp("contract"))


def every_setting(name: str) -> list:
    strategy = get_strategy(name)
    return [strategy.settings(values) for values in
            ({}, tiny_settings(name), range_end(name, 0), range_end(name, -1))]


@pytest.mark.parametrize("name", available())
def test_settings_round_trip_through_json(name):
    strategy = get_strategy(name)
    for settings in every_setting(name):
        assert strategy.settings(json.loads(settings_json(settings))) == settings


@pytest.mark.parametrize("name", available())
def test_settings_round_trip_through_cli_strings(name):
    strategy = get_strategy(name)
    for settings in every_setting(name):
        items = [f"{key}={value}" for key, value in settings.to_dict().items()]
        assert strategy.settings(parse_overrides(items)) == settings


@pytest.mark.parametrize("name", available())
def test_estimate_is_non_negative_and_a_too_small_budget_is_refused(name, lab):
    strategy = get_strategy(name)
    settings = strategy.settings(tiny_settings(name))
    estimate, _ = plan_check(strategy, settings, lab.workspace())
    numbers = [v for v in estimate.to_dict().values() if isinstance(v, (int, float))]
    assert numbers and all(value >= 0 for value in numbers), estimate
    assert estimate.total(1) > 0
    starved = make_workspace(lab.inputs, lab.root / "a", pretrain_flops=1.0, spec_flops=1.0)
    with pytest.raises(SpecplanError):
        plan_check(strategy, settings, starved)


@pytest.mark.parametrize("name", available())
def test_a_tiny_run_spends_within_its_estimate_and_budgets(name, lab):
    report, budgets = lab.run(name), lab.workspace().budgets
    estimate = report.estimate
    generic = report.generic_ledger.totals()["generic"]["flops"]
    assert generic <= budgets.pretrain_flops
    assert generic == pytest.approx(estimate.generic_flops, rel=0.05)  # pretraining spends it all
    for domain in report.domains:
        spec = domain.ledger.totals()["specialization"]["flops"]
        assert estimate.min_spec_flops <= spec <= budgets.spec_flops
        assert spec <= estimate.spec_flops * (1 + 1e-9)  # early stopping may spend less


@pytest.mark.parametrize("name", available())
def test_the_traits_say_what_a_run_does(name, lab):
    """Forecasts, plans and reports trust the traits instead of names: they must be true."""
    strategy, report, ws = get_strategy(name), lab.run(name), lab.workspace()
    generic = report.generic_ledger.totals()["generic"]["flops"]
    assert (generic > 0) == strategy.has_generic_phase
    assert not (strategy.pretrains_in_specialization and strategy.has_generic_phase)
    deployed = ws.shape(ws.large if strategy.deploys_large else ws.small).params_total
    assert report.estimate.params_inference == deployed


@pytest.mark.parametrize("name", available())
def test_the_same_seed_gives_the_same_numbers(name, lab):
    first, second = lab.run(name, "a"), lab.run(name, "b")  # separate caches: both train
    assert not second.artifact_reused
    assert second.ppl_generic == first.ppl_generic
    assert ([(d.ppl_before, d.ppl_after) for d in second.domains]
            == [(d.ppl_before, d.ppl_after) for d in first.domains])
    def spent(report) -> dict:  # seconds differ from run to run; tokens and FLOPs may not
        return {p: (t["tokens"], t["flops"]) for p, t in report.ledger().totals().items()}

    assert spent(second) == spent(first)


@pytest.mark.parametrize("name", available())
def test_the_exported_model_loads_in_transformers_and_is_the_one_measured(name, lab):
    result = lab.run(name).domains[0]
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    loss = evaluate_loss(model, lab.domain["law"].valid.ids)
    assert torch.exp(torch.tensor(loss)).item() == pytest.approx(result.ppl_after, rel=1e-4)
