"""Plain text output shared by every command: aligned tables and strict JSON values."""
from __future__ import annotations

import math
from pathlib import Path


def finite(value):
    """``value`` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def table(rows: list[dict], floatfmt: str = "{:.4g}") -> str:
    """A plain aligned text table (pandas, no index)."""
    import pandas as pd

    if not rows:
        return "(none)"
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda x: floatfmt.format(x))


def ledger_text(ledger) -> str:
    rows = [{**r, "device-seconds": r.pop("seconds")} for r in ledger.rows()]
    return table(rows)
