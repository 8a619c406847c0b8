"""Planning: a goal becomes an inspectable plan of function calls, which runs as a graph.

    model        Plan, Step, InputRef, StepRef: plain data with a canonical JSON form
    validation   every problem of a plan against the kernel's functions, found at once
    generation   create_plan: ask a model (schema-constrained), validate, repair
    cache        PlanCache: valid plans by goal, functions and input names
    execution    execute_plan, PlanRun: steps in parallel where they can be; resume
    solve        solve: the open-ended strategy over the function-calling loop
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .cache import PlanCache, plan_cache
    from .execution import PlanRun, StepStatus, execute_plan
    from .generation import create_plan, plan_schema, planning_messages, select_functions
    from .model import InputRef, Plan, Ref, Step, StepRef
    from .solve import Solution, solve
    from .validation import find_problems

__all__ = [
    "InputRef",
    "Plan",
    "PlanCache",
    "PlanRun",
    "Ref",
    "Solution",
    "Step",
    "StepRef",
    "StepStatus",
    "create_plan",
    "execute_plan",
    "find_problems",
    "plan_cache",
    "plan_schema",
    "planning_messages",
    "select_functions",
    "solve",
]

_LOCATIONS = {
    **dict.fromkeys(("PlanCache", "plan_cache"), "cache"),
    **dict.fromkeys(("PlanRun", "StepStatus", "execute_plan"), "execution"),
    **dict.fromkeys(("create_plan", "plan_schema", "planning_messages", "select_functions"), "generation"),
    **dict.fromkeys(("InputRef", "Plan", "Ref", "Step", "StepRef"), "model"),
    **dict.fromkeys(("Solution", "solve"), "solve"),
    "find_problems": "validation",
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
