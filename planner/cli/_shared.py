"""What every command shares: the context object, option groups, config files and budget parsing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from planner.core.errors import SpecplanError
from planner.core.text import finite, jsonable

DEFAULT_CACHE = os.environ.get("SPECPLAN_CACHE", ".cache/specplan")


class Ctx:
    def __init__(self, cache: str, as_json: bool):
        self.cache = Path(cache)
        self.as_json = as_json

    def emit(self, data, text: str) -> None:
        """JSON on stdout with ``--json``, the human text otherwise."""
        if self.as_json:  # strict JSON: a missing number (NaN) is null, as parsers expect
            click.echo(json.dumps(finite(data), indent=2, default=jsonable, allow_nan=False))
        else:
            click.echo(text)


def load_toml(path: str | None) -> dict:
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecplanError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecplanError(f"--config {path}: not valid TOML ({err})") from None


def apply_config(ctx: click.Context, path: str | None) -> None:
    """Config file values become option defaults; unknown keys are an error, not ignored."""
    values = load_toml(path)
    names = {p.name for p in ctx.command.params}
    unknown = sorted(set(k.replace("-", "_") for k in values) - names)
    if unknown:
        raise SpecplanError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    for key, value in values.items():
        key = key.replace("-", "_")
        if ctx.get_parameter_source(key) in (click.core.ParameterSource.DEFAULT, None):
            ctx.params[key] = value


def budget_options(f):
    """The budget options shared by run, plan and forecast."""
    options = [
        click.option("--pretrain-budget", default=None,
                     help="Generic pretraining budget: FLOPs (2e14) or device time (2h@a100)."),
        click.option("--spec-budget", default=None,
                     help="Specialization budget per domain: FLOPs or device time."),
        click.option("--inference-budget", default=None,
                     help="Deployed model cap: parameters (5M) or FLOPs per token (2e7)."),
        click.option("--domain-tokens", default=None,
                     help="Cut each domain's training data to this size (e.g. 64k, 1M)."),
        click.option("--utilization", type=float, default=None,
                     help="MFU to convert device time to FLOPs (default: measured or 0.4)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_budgets(obj: Ctx, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                  utilization, domains_count: int = 1, defaults: dict | None = None):
    from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
    from planner.core.units import parse_count

    defaults = defaults or {}
    pretrain_budget = pretrain_budget or defaults.get("pretrain")
    spec_budget = spec_budget or defaults.get("spec")
    if pretrain_budget is None or spec_budget is None:
        raise SpecplanError("--pretrain-budget and --spec-budget are required (e.g. 2e13, 10m@cpu)")
    kw = {"utilization": utilization, "cache_dir": obj.cache}
    return Budgets(
        pretrain_flops=parse_budget(pretrain_budget, what="--pretrain-budget", **kw),
        spec_flops=parse_budget(spec_budget, what="--spec-budget", **kw),
        inference=parse_inference_budget(inference_budget or defaults.get("inference")),
        domain_tokens=parse_count(domain_tokens, "--domain-tokens") if domain_tokens else None,
        domains_count=domains_count,
    )


def data_options(f):
    options = [
        click.option("--generic", default=None, help="Generic corpus (folder, .jsonl, ...)."),
        click.option("--domain", "domains", multiple=True, help="Domain corpus; repeatable."),
        click.option("--demo", is_flag=True, help="Use the embedded demo corpora."),
        click.option("--demo-domain", "demo_domains", multiple=True,
                     help="Demo domains to use (default: legal)."),
        click.option("--text-field", default="text", show_default=True),
        click.option("--seq-len", type=int, default=128, show_default=True),
        click.option("--vocab-size", type=int, default=4096, show_default=True),
        click.option("--tokenizer", "tokenizer_dir", default=None, help="Local tokenizer folder."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_data(obj: Ctx, generic, domains, demo, demo_domains, text_field, seq_len, vocab_size,
              tokenizer_dir, domain_tokens):
    from planner.data.inputs import demo_inputs, load_inputs

    kw = dict(seq_len=seq_len, vocab_size=vocab_size, domain_tokens=domain_tokens)
    if demo:
        return demo_inputs(obj.cache, tuple(demo_domains) or ("legal",), **kw)
    if not generic or not domains:
        raise SpecplanError("give --generic PATH and at least one --domain PATH (or --demo)")
    return load_inputs(generic, list(domains), cache_dir=obj.cache, text_field=text_field,
                       tokenizer_dir=tokenizer_dir, **kw)


def train_template(device: str, batch_size: int, seed: int, eval_every: int = 50):
    from planner.engine.train import TrainConfig

    return TrainConfig(max_steps=1, batch_size=batch_size, seed=seed, device=device,
                       eval_every=eval_every)


def parse_overrides(overrides) -> dict:
    values = {}
    for item in overrides:
        if "=" not in item:
            raise SpecplanError(f"--set {item!r}: write KEY=VALUE, e.g. --set k=8")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values
