"""Plans over HTTP.

    POST /v1/plans       {"goal": "...", "inputs": {...}, "max_steps": 10}: a plan made by the model, validated
                         {"plan": {...}}: a given plan validated; {"valid": false, "problems": [...]} when it is not
    POST /v1/plans/run   {"plan": {...} | "goal": "...", "inputs": {...}}: run it, with server-sent events of its
                         progress (`run`, `step`, `approval`, `approval_decided`, `run_finished`);
                         {"stream": false}: 202 and the run's id, to follow with GET /v1/runs/{id}

Both answer with the plan's graph (`nodes`: its steps, with the function and whether it
needs approval; `edges`: [from, to] where a step uses another's output), which the console
draws before anything runs. Plans use only the functions this key may call.

**Approvals.** A plan with steps whose functions need approval asks before any step runs:
an `approval` event (`{"approval": ID, "kind": "plan", "steps": [...]}`) answered by
`POST /v1/runs/{id}/approve` (`{"approval": ID, "approved": true}`); a refusal ends the run,
no step having run. A gated function called from inside a step (a template or native code
calling it) asks the same way (`"kind": "function"`). Nobody answering before the deadline
(`serve.request_timeout`) is a refusal.

**Progress.** Each step reports `running`, then `done` (with its output) or `failed` (with
why); steps left out because a dependency failed are `skipped`. A client that disconnects
from the event stream cancels the run (its model calls stop); a run started with
`"stream": false` goes on until it finishes or reaches the deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from ..contents import ToolCall
from ..errors import ApprovalDeniedError, PlanExecutionError, PlanValidationError
from .context import ServeContext, endpoint, get_int, get_object, get_str, json_response, jsonable, metered, read_json
from .problems import HttpProblem, problem_for
from .runs import Run
from .sse import EventStream, frame

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..functions import FunctionResult, KernelFunction
    from ..kernel import Kernel
    from ..planning import Plan
    from .auth import Principal

__all__ = ["graph", "routes"]


def graph(kernel: Kernel, plan: Plan) -> dict[str, Any]:
    """The plan as nodes and edges (a dependency: [from, to])."""
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    for step in plan.steps:
        try:
            gated = kernel.get_function(step.function).needs_approval
        except Exception:
            gated = False
        nodes.append({"id": step.id, "function": step.function, "description": step.description,
                      "needs_approval": gated, "arguments": {k: str(v) if not isinstance(v, str | int | float | bool)
                                                             else v for k, v in step.arguments.items()}})
        edges.extend([dep, step.id] for dep in sorted(step.dependencies()))
    output = plan.output_ref
    return {"nodes": nodes, "edges": edges, "output": output.step if output is not None else None}


def _allowed(ctx: ServeContext, principal: Principal) -> list[str]:
    return [fn.fully_qualified_name for fn in ctx.functions_for(principal)]


async def _plan_of(ctx: ServeContext, principal: Principal, body: dict[str, Any]) -> tuple[Plan, list[str]]:
    """The plan given (parsed: structural problems listed) or made from the goal."""
    from ..planning import Plan

    inputs = get_object(body, "inputs")
    max_steps = get_int(body, "max_steps", 10, 1, 100)
    if body.get("plan") is not None:
        try:
            plan = Plan.from_dict(body["plan"], inputs=inputs)
        except PlanValidationError as exc:
            return Plan(""), exc.problems
        problems = plan.problems(ctx.kernel, allowed=set(_allowed(ctx, principal)), max_steps=max_steps,
                                 input_names=plan.inputs.keys())
        return plan, problems
    goal = get_str(body, "goal")
    if not goal or not goal.strip():
        raise HttpProblem(400, "invalid request", "give a 'goal' (a plan is made for it) or a 'plan' (validated)")
    with metered(ctx.kernel):
        plan = await ctx.kernel.plan(goal, inputs=inputs, functions=_allowed(ctx, principal), max_steps=max_steps,
                                     service=get_str(body, "service"),
                                     settings=get_object(body, "settings") or None)
    return plan, []


async def create_plan(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Make a plan from a goal, or validate a given plan."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid request", "the body must be a JSON object")
    plan, problems = await ctx.guarded(request, _plan_of(ctx, principal, body))
    return json_response({"valid": not problems, "problems": problems, "plan": plan.to_dict() if plan.goal or
                          plan.steps else None, "text": str(plan), "graph": graph(ctx.kernel, plan)})


async def run_plan(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Run a plan with server-sent events of its progress (or in the background)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid request", "the body must be a JSON object")
    plan, problems = await ctx.guarded(request, _plan_of(ctx, principal, body))
    if problems:
        raise PlanValidationError(problems)
    run = ctx.runs.start("plan", principal.name, plan.goal or "plan", plan=plan.to_dict())
    run.steps = {step.id: "pending" for step in plan.steps}
    run.emit("run", run=run.id, plan=plan.to_dict(), graph=graph(ctx.kernel, plan))
    allowed = _allowed(ctx, principal)
    timeout = ctx.settings.request_timeout
    if body.get("stream", True) is False:
        ctx.spawn(_deadline(_execute(ctx, run, plan, allowed), timeout, run))
        return json_response({"run": run.id, "status": run.status, "graph": graph(ctx.kernel, plan)}, status=202,
                             headers={"X-Kernel-Run": run.id, "Location": f"/v1/runs/{run.id}"})
    path = request.url.path
    return EventStream(_follow(ctx, run, plan, allowed, path), timeout=timeout, headers={"X-Kernel-Run": run.id},
                       on_error=lambda exc: _error_frame(run, exc, path),
                       on_close=lambda outcome: _closed(run, outcome))


async def _deadline(work: Any, timeout: float, run: Run) -> None:
    try:
        await asyncio.wait_for(work, timeout)
    except TimeoutError:
        run.finish("cancelled", error={"detail": f"the run did not finish within {timeout:g} s "
                                                 "(serve.request_timeout)"})


def _error_frame(run: Run, exc: BaseException, path: str) -> bytes:
    _, body, _ = problem_for(exc, path)
    run.finish("cancelled", error=body)
    return frame(body, event="error")


def _closed(run: Run, outcome: str) -> None:
    if outcome in ("disconnected", "deadline"):
        run.finish("cancelled", error={"detail": f"the event stream ended early: {outcome}; the run was stopped"})


async def _follow(ctx: ServeContext, run: Run, plan: Plan, allowed: list[str], path: str) -> AsyncIterator[bytes]:
    """The run's events as they happen, the run itself in a task of its own (cancelled
    when this stream is closed: the client went away)."""
    events = run.follow()
    yield frame(run.events[-1], event="run")  # subscribed first: no event of the run can be missed
    task = asyncio.ensure_future(_execute(ctx, run, plan, allowed))
    try:
        async for item in events:
            yield frame(item, event=item["event"])
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _RunKernel:
    """The kernel as one plan run sees it: every attribute is the kernel's, except that a
    step's invocation reports its progress to the run, and approvals go to the run's client."""

    def __init__(self, kernel: Kernel, run: Run) -> None:
        self._kernel, self._run = kernel, run
        self.approval = self._approve_call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)

    async def invoke(self, function: KernelFunction, arguments: dict[str, Any], /) -> FunctionResult:
        """A plan step (execute_plan runs each step in a task named `plan-step-ID`)."""
        task = asyncio.current_task()
        step = task.get_name().removeprefix("plan-step-") if task is not None else function.fully_qualified_name
        run = self._run
        run.steps[step] = "running"
        run.emit("step", step=step, status="running", function=function.fully_qualified_name,
                 arguments=jsonable(arguments))
        try:
            result = await self._kernel.invoke(function, arguments)
        except BaseException as exc:
            run.steps[step] = "failed"
            detail = "cancelled" if isinstance(exc, asyncio.CancelledError) else problem_for(exc)[1]["detail"]
            run.emit("step", step=step, status="failed", error=detail)
            raise
        run.steps[step] = "done"
        run.emit("step", step=step, status="done", output=jsonable(result.value),
                 usage={"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens})
        return result

    async def _approve_call(self, fn: KernelFunction, arguments: dict[str, Any], call: ToolCall) -> bool:
        return await self._run.ask(kind="function", function=fn.fully_qualified_name, arguments=jsonable(arguments),
                                   step=call.id.removeprefix("plan-step-"))


async def _execute(ctx: ServeContext, run: Run, plan: Plan, allowed: list[str]) -> None:
    from ..planning import execute_plan

    view = _RunKernel(ctx.kernel, run)
    gated = [step for step in plan.steps if ctx.kernel.get_function(step.function).needs_approval]

    async def approve_plan(_: Plan) -> bool:
        return await run.ask(kind="plan", steps=[{"step": s.id, "function": s.function,
                                                  "arguments": json.loads(json.dumps(s.to_dict()["arguments"],
                                                                                     default=str))}
                                                 for s in gated])

    with metered(ctx.kernel) as meter:
        try:
            done = await execute_plan(cast("Kernel", view), plan, approval=approve_plan if gated else None,
                                      allowed=allowed)
        except PlanExecutionError as exc:
            state = getattr(exc, "run", None)
            if state is not None:
                for step_id, status in state.status.items():
                    if status == "skipped" and run.steps.get(step_id) != "skipped":
                        run.steps[step_id] = "skipped"
                        run.emit("step", step=step_id, status="skipped", error=state.errors.get(step_id))
            run.finish("failed", usage=state.usage if state is not None else None, cost=meter.cost,
                       error=problem_for(exc)[1])
            return
        except ApprovalDeniedError as exc:
            run.finish("failed", cost=meter.cost, error=problem_for(exc)[1])
            return
        except asyncio.CancelledError:
            run.finish("cancelled", error={"detail": "the run was cancelled"})
            raise
        except Exception as exc:
            run.finish("failed", cost=meter.cost, error=problem_for(exc)[1])
            return
    run.finish("done", result=jsonable(done.result), usage=done.usage, cost=meter.cost)


def routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/v1/plans", endpoint(create_plan), methods=["POST"]),
        Route("/v1/plans/run", endpoint(run_plan), methods=["POST"]),
    ]
