"""What every command shares: the context object, option groups, config files and budget parsing."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import click

from planner.core.args import ConfigError, DataArgs, flag_of
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
            f"--config {path}: unknown key(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(names))}"
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
        click.option("--yes", is_flag=True,
                     help="Accept a budget beyond a year of this machine's compute."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_budgets(obj: Ctx, pretrain_budget, spec_budget, inference_budget, domain_tokens,
                  utilization, domains_count: int = 1, defaults: dict | None = None,
                  yes: bool = False, spend_on: str | None = None, base: str | None = None):
    """The budgets of a command; ``spend_on`` (a device name) when the command will spend
    them there, so a budget beyond a year of that device is refused unless ``yes``. With a
    ``base`` checkpoint nothing is pretrained: the pretraining budget defaults to 0."""
    from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
    from planner.core.units import parse_count

    defaults = defaults or {}
    pretrain_budget = pretrain_budget or ("0" if base else defaults.get("pretrain"))
    spec_budget = spec_budget or defaults.get("spec")
    if pretrain_budget is None or spec_budget is None:
        raise SpecplanError("--pretrain-budget and --spec-budget are required (e.g. 2e13, 10m@cpu)")
    kw = {"utilization": utilization, "cache_dir": obj.cache}
    budgets = Budgets(
        pretrain_flops=parse_budget(pretrain_budget, what="--pretrain-budget", **kw),
        spec_flops=parse_budget(spec_budget, what="--spec-budget", **kw),
        inference=parse_inference_budget(inference_budget or defaults.get("inference")),
        domain_tokens=parse_count(domain_tokens, "--domain-tokens") if domain_tokens else None,
        domains_count=domains_count,
    )
    if spend_on is not None and not yes:
        check_spendable(obj, budgets.pretrain_flops, "--pretrain-budget", pretrain_budget,
                        spend_on, utilization)
        check_spendable(obj, budgets.spec_flops, "--spec-budget", spec_budget, spend_on,
                        utilization)
    return budgets


YEAR_SECONDS = 365 * 86400


def check_spendable(obj: Ctx, flops: float, flag: str, text, device: str,
                    utilization: float | None) -> None:
    """Refuse a budget this machine could not spend in a year: almost always a typo (1e99 for
    1e9), and one that would otherwise run until killed.

    Raises:
        SpecplanError: naming the flag, the time it would take and the fixes.
    """
    from planner.core.cost import hardware_profile
    from planner.engine.devices import device_kind, resolve_device

    kind = device_kind(resolve_device(device))
    profile = hardware_profile(kind, utilization=utilization, cache_dir=obj.cache)
    years = flops / profile.flops_per_second / YEAR_SECONDS
    if years > 1:
        raise SpecplanError(
            f"{flag} {text}: {flops:.3g} FLOPs would take {years:.3g} years on this machine "
            f"({kind} at {profile.flops_per_second:.3g} FLOP/s); give a smaller budget (FLOPs "
            f"or device time such as 2h@{kind}), or add --yes if you mean it")


def options_from(cls: type, *, skip: tuple[str, ...] = ()):
    """Click options generated from a config dataclass's fields (:mod:`planner.core.args`):
    one flag per field, its help and default from the field; ``skip`` names fields a command
    sets otherwise."""
    def decorate(f):
        for spec in reversed(dataclasses.fields(cls)):
            if spec.name in skip:
                continue
            default = spec.default_factory() if callable(spec.default_factory) else spec.default
            kind = int if "int" in str(spec.type) else str  # "int | None" too
            if isinstance(default, bool):
                option = click.option(flag_of(spec), spec.name, is_flag=True,
                                      help=spec.metadata["help"])
            elif isinstance(default, tuple):
                option = click.option(flag_of(spec), spec.name, multiple=True,
                                      help=spec.metadata["help"])
            else:
                option = click.option(flag_of(spec), spec.name, type=kind, default=default,
                                      show_default=default is not None,
                                      help=spec.metadata["help"])
            f = option(f)
        return f
    return decorate


def args_from(cls: type, options: dict, check=None):
    """Pop ``cls``'s fields out of a command's options and build it (then ``check`` it, for
    what the floor cannot check); a bad value is reported under its flag."""
    values = {f.name: options.pop(f.name) for f in dataclasses.fields(cls) if f.name in options}
    try:
        args = cls(**values)
        if check is not None:
            check(args)
        return args
    except ConfigError as err:
        flag = next(flag_of(f) for f in dataclasses.fields(cls) if f.name == err.name)
        raise SpecplanError(f"{flag}: {err.problem}") from None


data_options = options_from(DataArgs)


def parse_overrides(overrides) -> dict:
    values = {}
    for item in overrides:
        if "=" not in item:
            raise SpecplanError(f"--set {item!r}: write KEY=VALUE, e.g. --set k=8")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def parse_tasks(tasks) -> list[tuple[str, str]]:
    """``--task DOMAIN=PATH`` values as (domain, path) pairs."""
    pairs = []
    for item in tasks:
        domain, sep, path = item.partition("=")
        if not (sep and domain.strip() and path.strip()):
            raise SpecplanError(f"--task {item!r}: write DOMAIN=PATH, e.g. --task law=law_qa.jsonl")
        pairs.append((domain.strip(), path.strip()))
    return pairs
