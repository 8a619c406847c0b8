"""05 - The planner.

`kernel.plan(goal)` asks the chat model for a plan: plain JSON data naming kernel
functions, whose arguments are literals, goal inputs (`{"$input": "text"}`) or earlier
outputs (`{"$step": "s1"}`). The plan is validated against the functions' schemas (the
problems go back to the model for repair), can be printed, edited and saved, and runs as
a graph: independent steps run concurrently.

The small default local model rarely writes a valid plan; then the sample runs the same
kind of plan written by hand, which is just as inspectable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kernel import Kernel
from kernel.errors import PlanValidationError
from kernel.planning import Plan, execute_plan

GOAL = "Summarize the text in at most 20 words, then count the words of the summary and of the text."
TEXT = (
    "The kernel holds connectors and plugins. Connectors reach model providers and vector stores; "
    "plugins group prompt functions and native functions, which can call each other. "
    "A planner turns a goal into a plan of function calls and runs it."
)
FUNCTIONS = ["writer.summarize", "text.word_count", "text.truncate"]  # the functions the plan may use
HAND_WRITTEN = {
    "steps": [
        {"id": "summary", "function": "writer.summarize", "arguments": {"text": {"$input": "text"}, "max_words": 20}},
        {"id": "summary_words", "function": "text.word_count", "arguments": {"text": {"$step": "summary"}}},
        {"id": "text_words", "function": "text.word_count", "arguments": {"text": {"$input": "text"}}},
    ],
    "output": "summary",
}


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    try:
        plan = await kernel.plan(GOAL, inputs={"text": TEXT}, functions=FUNCTIONS, settings={"max_tokens": 300})
        print("the model's plan:")
    except PlanValidationError as exc:
        print(f"the model's plan was invalid ({len(exc.problems)} problems); running a hand-written one:")
        plan = Plan.from_dict(HAND_WRITTEN, goal=GOAL, inputs={"text": TEXT})
    print(plan.to_json())

    run = await execute_plan(kernel, plan)
    for step in plan.steps:
        print(f"{step.id}: {step.function} -> {str(run.outputs[step.id]).strip()[:100]}")
    print("result:", str(run.result).strip())
    return {"plan": plan.to_dict(), "outputs": run.outputs, "result": run.result}


if __name__ == "__main__":
    asyncio.run(main())
