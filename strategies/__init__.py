"""Strategies: one module or package per method, each registered under the reference study's name.

Importing this package imports every method once, which registers it. The import order is the
registration order, which ``available()`` returns and the planner's default trials follow.
"""
# isort: off
from strategies.base import (
    FAMILIES,
    Strategy,
    available,
    describe,
    family_of,
    get_strategy,
    in_study_order,
    register,
    strategies_with,
)
from strategies import small_model  # noqa: F401  (registers slm, llm, slm-nopt)
from strategies import distill  # noqa: F401  (registers slm-d)
from strategies import importance  # noqa: F401  (registers slm-is)
from strategies import mixture  # noqa: F401  (registers slm-mix)
from strategies import projected  # noqa: F401  (registers slm-pn, slm-hn)
from strategies import prune  # noqa: F401  (registers slm-prune)
# isort: on

__all__ = ["FAMILIES", "Strategy", "available", "describe", "family_of", "get_strategy",
           "in_study_order", "register", "strategies_with"]
