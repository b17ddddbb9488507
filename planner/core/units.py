"""Parsing and printing of human quantities: token counts, parameter counts, FLOPs."""
from __future__ import annotations

import re

from planner.core.errors import SpecplanError

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float, what: str = "count") -> int:
    """Parse ``"64k"``, ``"1M"``, ``"1.5e6"`` or a number into an int.

    Raises:
        SpecplanError: naming ``what`` when the text is not a count.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if not match:
            raise SpecplanError(
                f"{what}: cannot read {text!r} as a count; write e.g. 64k, 8M, 1.5e6 or 1B"
            )
        value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value < 0:
        raise SpecplanError(f"{what}: {text!r} is negative; give a positive count")
    return int(round(value))


def format_count(value: float) -> str:
    """``1234567 -> '1.23M'`` for tables."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
