"""``specplan strategies [NAME...]``: what ``run`` and ``plan`` can choose from, and how to set
it."""
from __future__ import annotations

import click

from planner.cli._shared import Ctx


def _accepts(setting: dict) -> str:
    """What a setting accepts, as ``--set`` takes it: choices, a range, or any value."""
    if setting["choices"] is not None:
        return "one of " + ", ".join(str(c) for c in setting["choices"])
    if setting["low"] is not None:
        return f"{setting['low']:g} to {setting['high']:g}" + (" (log)" if setting["log"] else "")
    return "any"


def _text(entry: dict) -> str:
    lines = [f"{entry['name']}: {entry['summary']}",
             f"  family {entry['family']}; phases: {', '.join(entry['phases'])}; settings "
             "(default, accepted values):"]
    width = max(len(s["name"]) for s in entry["settings"])
    for s in entry["settings"]:
        shapes = "; shapes the pretraining artifact" if s["generic"] else ""
        lines.append(f"  {s['name']:<{width}}  {s['default']!s:<10} {_accepts(s)}: "
                     f"{s['help']}{shapes}")
    return "\n".join(lines)


@click.command("strategies")
@click.argument("names", nargs=-1)
@click.pass_obj
def strategies_cmd(obj: Ctx, names) -> None:
    """List the strategies (or the NAMES given): summary, phases and settings.

    Each setting shows its default and what it accepts; pass one to ``run`` with
    ``--set NAME=VALUE``. Settings that shape the pretraining artifact key its cache.
    """
    from strategies import describe, in_study_order

    entries = [describe(name) for name in (names or in_study_order())]
    obj.emit(entries, "\n\n".join(_text(e) for e in entries))
