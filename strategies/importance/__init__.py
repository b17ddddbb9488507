"""``slm-is``: importance sampling of generic data to a domain; the resamplers beside it."""
from strategies.importance.strategy import ImportanceSamplingStrategy

__all__ = ["ImportanceSamplingStrategy"]
