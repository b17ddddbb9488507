"""Strategies: one module per method, each registered under the reference study's name.

Importing this package imports every strategy module once, which registers it.
"""
from strategies.base import Budgets, Strategy, available, get_strategy, register
from strategies import small_model  # noqa: F401  (registers slm, llm, slm-nopt)
from strategies import distill  # noqa: F401  (registers slm-d)
from strategies import importance  # noqa: F401  (registers slm-is)
from strategies import mixture  # noqa: F401  (registers slm-mix)
from strategies import projected  # noqa: F401  (registers slm-pn, slm-hn)

__all__ = ["Budgets", "Strategy", "available", "get_strategy", "register"]
