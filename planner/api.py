"""specplan's Python API in one import: everything the README's examples use.

>>> from planner.api import Budgets, available
>>> "slm-pn" in available()
True
>>> Budgets(pretrain_flops=3e12, spec_flops=1e12).domains_count
1
"""
from planner.core.args import DataArgs, RunArgs
from planner.core.budgets import (
    Budgets,
    InferenceCap,
    parse_budget,
    parse_inference_budget,
)
from planner.core.cost import Ledger
from planner.data.inputs import Inputs, demo_inputs, load_inputs
from planner.data.tasks import continuation_items, write_continuation_task
from planner.engine.tasks import Task, load_task, score_task
from planner.engine.train import TrainConfig
from planner.run.config import load_data, make_workspace
from planner.run.runner import RunReport, evaluate_model, run_strategy, train_once
from planner.search.early import plan_early
from planner.search.plan import PlanResult, plan
from planner.search.study import PlanSpec
from planner.search.workers import worker
from strategies import available, get_strategy
from strategies.workspace import Workspace

__all__ = [
    "Budgets", "DataArgs", "InferenceCap", "Inputs", "Ledger", "PlanResult", "PlanSpec",
    "RunArgs", "RunReport", "Task", "TrainConfig", "Workspace", "available",
    "continuation_items", "demo_inputs", "evaluate_model", "get_strategy", "load_data",
    "load_inputs", "load_task", "make_workspace", "parse_budget", "parse_inference_budget",
    "plan", "plan_early", "run_strategy", "score_task", "train_once", "worker",
    "write_continuation_task",
]
