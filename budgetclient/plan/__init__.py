"""Planning: the guide's context budget model, allocation targets, and the split of a live request.

``estimate(plan)`` models a session before deployment (per-turn tokens, session cost uncached /
with the fixed prefix cached / with budgetclient's placement, side by side across models);
``analyze(request)`` and ``check_allocation`` measure a real request against allocation targets.
"""

from ..errors import PlanError
from ._allocation import (
    COMPONENTS,
    GUIDE_ALLOCATION,
    AllocationRow,
    AllocationTargets,
    RequestAnalysis,
    analyze,
    check_allocation,
    check_components,
)
from ._estimate import Estimate, ModelCost, TurnRow, estimate, estimate_file
from ._schema import PlanKeyError, PlanSpec, load_plan, parse_plan
from ._simulate import plan_trace

__all__ = [
    "COMPONENTS",
    "GUIDE_ALLOCATION",
    "AllocationRow",
    "AllocationTargets",
    "Estimate",
    "ModelCost",
    "PlanError",
    "PlanKeyError",
    "PlanSpec",
    "RequestAnalysis",
    "TurnRow",
    "analyze",
    "check_allocation",
    "check_components",
    "estimate",
    "estimate_file",
    "load_plan",
    "parse_plan",
    "plan_trace",
]
