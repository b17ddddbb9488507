"""Shared by the forecast tests: the reference table and its bounds, budgets from strings, and
the domains of the known laws (also used by tests/experiments/test_backtest.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from planner.core.budgets import Budgets, parse_budget, parse_inference_budget
from planner.forecast import reference as ref

N_BOOT = 6  # intervals are not asserted here; the recommendations and errors are


def budgets(pretrain: str, spec: str, inference: str | None, domain_tokens: float,
            domains: int = 1) -> Budgets:
    return Budgets(parse_budget(pretrain), parse_budget(spec), parse_inference_budget(inference),
                   int(domain_tokens), domains)


@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, list[ref.PublishedBound]]:
    df = ref.load_reference_results()
    return df, ref.reference_bounds(df)


# The domains of the known laws and their irreducible losses.
DOMAINS = {"arxiv": 1.8, "freelaw": 2.2}
