"""``specplan strategies``: every registered strategy with its phases and settings, as text and
JSON, and ``run --help`` pointing to it."""
import json
import re

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.core.errors import SpecplanError
from strategies import available, in_study_order


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_lists_every_strategy_with_phases_and_settings():
    result = invoke("strategies")
    assert result.exit_code == 0
    headers = [line.split(":")[0] for line in result.output.splitlines()
               if line and not line.startswith(" ")]
    assert headers == in_study_order() and len(headers) == 9
    assert "phases: generic, specialization" in result.output
    assert re.search(r"\n  ft_patience +3 +1 to 8: validations without gain", result.output)


def test_json_gives_each_setting_its_default_and_range():
    entries = json.loads(invoke("--json", "strategies").stdout)
    assert sorted(e["name"] for e in entries) == sorted(available())
    by_name = {e["name"]: e for e in entries}
    k = {s["name"]: s for s in by_name["slm-mix"]["settings"]}["k"]
    assert (k["default"], k["low"], k["high"], k["log"], k["generic"]) == (4, 2, 64, True, True)
    select = {s["name"]: s for s in by_name["slm-mix"]["settings"]}["select"]
    assert select["default"] == "frequent" and select["choices"] == ["frequent", "loss", "all"]
    assert by_name["slm-is"]["phases"] == ["specialization"]
    assert by_name["slm-is"]["traits"]["pretrains_in_specialization"] is True
    assert by_name["llm"]["traits"]["deploys_large"] is True
    assert all("default" in s and s["help"] for e in entries for s in e["settings"])


def test_names_pick_strategies_and_an_unknown_one_is_refused():
    entries = json.loads(invoke("--json", "strategies", "slm-pn", "slm").stdout)
    assert [e["name"] for e in entries] == ["slm-pn", "slm"]
    with pytest.raises(SpecplanError, match="unknown strategy 'gpt'"):
        invoke("strategies", "gpt")


def test_run_help_points_to_the_list():
    result = invoke("run", "--help")
    assert "specplan strategies" in " ".join(result.output.split())
