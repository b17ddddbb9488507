"""Perplexities: the macro average over domains."""
import math

import pytest

from planner.core.errors import SpecplanError
from planner.engine.evaluate import macro_perplexity


def test_macro_perplexity_is_exp_of_mean_log() -> None:
    assert macro_perplexity([10.0, 40.0]) == pytest.approx(20.0)
    assert math.isnan(macro_perplexity([10.0, float("nan")]))
    with pytest.raises(SpecplanError, match="no perplexities"):
        macro_perplexity([])
