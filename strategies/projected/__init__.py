"""``slm-pn`` and ``slm-hn``: projected networks and histogram hypernetworks."""
from strategies.projected.strategy import (
    HistogramHypernetStrategy,
    ProjectedNetworkStrategy,
)

__all__ = ["HistogramHypernetStrategy", "ProjectedNetworkStrategy"]
