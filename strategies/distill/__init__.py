"""``slm-d``: distillation from one or several teachers; teacher outputs and losses beside it."""
from strategies.distill.strategy import DistillationStrategy

__all__ = ["DistillationStrategy"]
