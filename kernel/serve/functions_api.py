"""The kernel's functions over HTTP, and the runs of the server.

    GET  /v1/functions                         the functions this key may call, with their schemas
    POST /v1/functions/{plugin.name}/invoke    {"arguments": {...}, "settings": {...}}: result, usage, cost
                                               (?stream=true: server-sent events)
    GET  /v1/runs                              recent runs (this server's, and the journal's when there is one)
    GET  /v1/runs/{id}                         one run: status, steps, events, result, pending approvals
                                               (or a run of the journal, its events as a tree)
    POST /v1/runs/{id}/approve                 {"approval": ID, "approved": true}: answer an approval request

Arguments are validated as `kernel run` validates them (the function's schema; a bad one is
a 422 naming the parameter). A function marked `needs_approval` is refused (403) unless
`serve.allow_needs_approval`: run it in a plan, whose gated steps ask for approval.
A streamed invocation sends `delta` events (text as a prompt function produces it), then
`result` (`{"value", "usage", "cost"}`, the value typed as without streaming), or `error`
(problem details).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..contents import FinalMessage, TextDelta
from ..functions import KernelArguments, KernelFunction
from .context import ServeContext, endpoint, get_object, json_response, jsonable, metered, problem_frame, read_json
from .problems import HttpProblem, problem_for
from .runs import Run, usage_dict
from .sse import EventStream, frame

if TYPE_CHECKING:
    from starlette.requests import Request

    from .auth import Principal

__all__ = ["describe", "routes"]


def describe(fn: KernelFunction) -> dict[str, Any]:
    """A function as the API shows it: names, description, parameters and return schemas."""
    try:
        returns = fn.return_schema
    except Exception:
        returns = {}
    return {"name": fn.fully_qualified_name, "plugin": fn.plugin_name, "function": fn.name,
            "tool_name": fn.tool_name, "kind": "prompt" if fn.streams else "native",
            "description": fn.description, "needs_approval": fn.needs_approval, "streams": fn.streams,
            "parameters": fn.parameters_schema, "returns": returns}


async def list_functions(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """The functions this key may call, by plugin."""
    functions = [describe(fn) for fn in ctx.functions_for(principal)]
    plugins = {name: plugin.description for name, plugin in ctx.kernel.plugins.items()
               if any(f["plugin"] == name for f in functions)}
    return json_response({"functions": functions, "plugins": plugins})


async def invoke(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Invoke one function with JSON arguments."""
    fn = ctx.function_for(principal, request.path_params["name"])
    if fn.needs_approval and not ctx.settings.allow_needs_approval:
        raise HttpProblem(403, "needs approval", f"{fn.fully_qualified_name} needs approval: run it as a step of a "
                          "plan (POST /v1/plans/run), which asks for it, or set serve.allow_needs_approval")
    body = await read_json(request, default={})
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid request", 'the body must be {"arguments": {...}}')
    arguments = get_object(body, "arguments")
    settings = get_object(body, "settings")
    if settings and not fn.streams:
        raise HttpProblem(400, "invalid request", f"'settings' are execution settings of a prompt function; "
                          f"{fn.fully_qualified_name} is a native function")
    fn.validate(arguments)  # 422 before a run is made
    args: dict[str, Any] = KernelArguments(arguments, settings=settings) if settings else dict(arguments)
    run = ctx.runs.start("invoke", principal.name, fn.fully_qualified_name)
    run.emit("invoke", function=fn.fully_qualified_name)
    headers = {"X-Kernel-Run": run.id}
    path = request.url.path
    if request.query_params.get("stream", "").lower() in ("1", "true", "yes"):
        return EventStream(_stream(ctx, run, fn, args, path), timeout=ctx.settings.request_timeout,
                           headers=headers, on_error=lambda exc: problem_frame(exc, path),
                           on_close=lambda outcome: _closed(run, outcome))
    return json_response(await ctx.guarded(request, _invoke(ctx, run, fn, args)), headers=headers)


async def _invoke(ctx: ServeContext, run: Run, fn: KernelFunction, args: dict[str, Any]) -> dict[str, Any]:
    try:
        result = await ctx.kernel.invoke(fn, args)
    except Exception as exc:
        run.finish("failed", error=problem_for(exc)[1])
        raise
    value = jsonable(result.value)
    run.finish("done", result=value, usage=result.usage, cost=result.cost)
    return {"function": result.function, "value": value, "usage": usage_dict(result.usage), "cost": result.cost,
            "run": run.id}


async def _stream(ctx: ServeContext, run: Run, fn: KernelFunction, args: dict[str, Any],
                  path: str) -> AsyncIterator[bytes]:
    final: FinalMessage | None = None
    if not fn.streams:  # a native function produces no text as it goes: one `result`, its value typed
        try:
            done = await _invoke(ctx, run, fn, args)
        except Exception as exc:
            yield problem_frame(exc, path)
            return
        yield frame(done, event="result")
        return
    with metered(ctx.kernel) as meter:
        try:
            async for event in ctx.kernel.invoke_stream(fn, args):
                if isinstance(event, TextDelta):
                    yield frame({"text": event.text}, event="delta")
                elif isinstance(event, FinalMessage):
                    final = event
            if final is not None:  # after the stream: its usage and cost are in the meter now
                run.finish("done", result=final.message.content, usage=final.usage, cost=meter.cost)
                yield frame({"function": fn.fully_qualified_name, "value": final.message.content,
                             "usage": usage_dict(final.usage), "cost": meter.cost, "run": run.id}, event="result")
        except Exception as exc:
            run.finish("failed", error=problem_for(exc)[1])
            yield problem_frame(exc, path)


def _closed(run: Run, outcome: str) -> None:
    if outcome in ("disconnected", "deadline"):
        run.finish("cancelled", error={"detail": f"the stream ended early: {outcome}"})


# --- runs -------------------------------------------------------------------------------------


async def list_runs(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Recent runs: this server's (newest first), then the journal's when it has one."""
    given = request.query_params.get("limit", "50")
    limit = min(max(int(given), 1), 500) if given.isdigit() else 50
    runs = [run.summary() for run in ctx.runs.recent(principal.name, ctx.everyone(principal), limit)]
    journal = await _journal_runs(ctx, limit) if ctx.everyone(principal) else None
    return json_response({"runs": runs, "journal": journal})


def _journal_row(row: dict[str, Any]) -> dict[str, Any]:
    """A run of the journal in the shape of the server's own runs."""
    started, duration = row.get("started"), row.get("duration")
    tokens_in, tokens_out = int(row.get("input_tokens") or 0), int(row.get("output_tokens") or 0)
    return {"id": row.get("id"), "kind": row.get("kind"), "title": row.get("name"), "status": row.get("status"),
            "created": started, "finished": started + duration if started is not None and duration is not None
            else None, "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                 "total_tokens": tokens_in + tokens_out},
            "cost": row.get("cost"), "error": row.get("error"), "service": row.get("service"),
            "model": row.get("model"), "source": "journal"}


async def _read_journal(ctx: ServeContext, read: Callable[[Any], Any]) -> Any:
    """`read(reader)` over the kernel's journal (`journal_path` / `journal_dsn`) in a worker
    thread; None when there is no journal yet."""
    from ..events import JournalStoreError, open_reader

    def work() -> Any:
        try:
            reader = open_reader(ctx.kernel.settings)
        except JournalStoreError:
            return None  # nothing journaled yet
        with reader:
            return read(reader)

    return await asyncio.to_thread(work)


async def _journal_runs(ctx: ServeContext, limit: int) -> list[dict[str, Any]] | None:
    """The most recent runs of the journal; None when there is none."""
    try:
        rows = await _read_journal(ctx, lambda reader: reader.runs(limit=limit))
    except Exception as exc:  # the journal is a view: its failure never fails the request
        return [{"error": problem_for(exc)[1]["detail"], "source": "journal"}]
    return None if rows is None else [jsonable(_journal_row(row)) for row in rows]


async def _journal_run(ctx: ServeContext, run_id: str) -> dict[str, Any] | None:
    """One run of the journal with its events as a tree, or None."""

    def read(reader: Any) -> Any:
        try:
            return reader.tree(run_id)
        except LookupError:
            return None

    try:
        tree = await _read_journal(ctx, read)
    except Exception:
        return None
    if tree is None:
        return None
    return {**_journal_row(tree), "events": jsonable(tree.get("events", []))}


async def get_run(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """One run, with its events (a run of the journal when the server has no keys)."""
    run_id = request.path_params["run"]
    try:
        run = ctx.runs.get(run_id, principal.name, ctx.everyone(principal))
    except HttpProblem:
        journaled = await _journal_run(ctx, run_id) if ctx.everyone(principal) and run_id.isprintable() else None
        if journaled is None:
            raise
        return json_response(journaled)
    return json_response(run.detail())


async def approve(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Answer an approval request of a run."""
    run = ctx.runs.get(request.path_params["run"], principal.name, ctx.everyone(principal))
    body = await read_json(request, default={})
    if not isinstance(body, dict) or not isinstance(body.get("approved", True), bool):
        raise HttpProblem(400, "invalid request", "'approved' must be true or false")
    approval = body.get("approval")
    if approval is not None and not isinstance(approval, str):
        raise HttpProblem(400, "invalid request", "'approval' must be the id of the approval request")
    answered = run.answer(approval, bool(body.get("approved", True)))
    return json_response({"run": run.id, "approval": answered, "approved": bool(body.get("approved", True))})


def routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/v1/functions", endpoint(list_functions), methods=["GET"]),
        Route("/v1/functions/{name}/invoke", endpoint(invoke), methods=["POST"]),
        Route("/v1/runs", endpoint(list_runs), methods=["GET"]),
        Route("/v1/runs/{run}", endpoint(get_run), methods=["GET"]),
        Route("/v1/runs/{run}/approve", endpoint(approve), methods=["POST"]),
    ]
