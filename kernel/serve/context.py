"""What every route shares: the `ServeContext` (kernel, settings, keys, rate limits, runs),
the `endpoint` wrapper (authentication, rate limit, errors as problem details), reading a
JSON body, JSON responses, and the usage meter of a request.

Each request is one top-level invocation of the kernel: everything it runs shares one
budget of `max_model_calls` and `max_function_calls`, and its usage and cost are metered
(`metered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..contents import Usage
from ..errors import FunctionNotFoundError
from ..functions import FunctionResult, KernelFunction
from .auth import ANONYMOUS, KeyRing, Principal, RateLimiter, matches
from .limits import ClientGone, run_guarded
from .problems import MEDIA_TYPE, HttpProblem, encode, openai_error, problem_for
from .runs import RunRegistry
from .sse import frame

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ..kernel import Kernel
    from ..settings import ServeSettings

__all__ = ["ServeContext", "endpoint", "json_response", "jsonable", "metered", "read_json"]


class ServeContext:
    """The state of one server."""

    def __init__(self, kernel: Kernel, settings: ServeSettings) -> None:
        self.kernel = kernel
        self.settings = settings
        self.keys = KeyRing(settings)
        self.limiter = RateLimiter()
        self.runs = RunRegistry(settings.max_runs)
        self.background: set[asyncio.Task[Any]] = set()

    # -- what is served ---------------------------------------------------------------------

    def served(self, fn: KernelFunction) -> bool:
        names = self.settings.functions
        return names is None or matches(names, fn)

    def functions_for(self, principal: Principal, names: list[str] | None = None) -> list[KernelFunction]:
        """The functions this caller may reach (served, allowed to its key, and among
        `names` when given)."""
        return [fn for fn in self.kernel.functions() if self.served(fn) and principal.may_call(fn)
                and (names is None or matches(names, fn))]

    def function_for(self, principal: Principal, name: str) -> KernelFunction:
        try:
            fn = self.kernel.get_function(name)
        except FunctionNotFoundError:
            fn = None
        if fn is None or not self.served(fn):
            raise FunctionNotFoundError(f"no function {name[:80]!r} is served here (GET /v1/functions lists them)")
        if not principal.may_call(fn):
            raise HttpProblem(403, "function not allowed", f"this key may not call {fn.fully_qualified_name}")
        return fn

    def everyone(self, principal: Principal) -> bool:
        """Whether the caller sees every run (the server has no keys)."""
        return principal.name == ANONYMOUS

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def guarded(self, request: Request, work: Awaitable[Any]) -> Any:
        return await run_guarded(request.receive, work, self.settings.request_timeout)


# --- the route wrapper ----------------------------------------------------------------------

Handler = Callable[["Request", ServeContext, Principal], Awaitable[Any]]


def endpoint(handler: Handler, *, openai: bool = False) -> Callable[[Request], Awaitable[Any]]:
    """A route: the caller authenticated and rate-limited, every error a problem details
    response (with OpenAI's `error` member on the OpenAI-compatible routes)."""

    async def route(request: Request) -> Any:
        from starlette.responses import Response

        ctx: ServeContext = request.app.state.serve
        try:
            principal = await ctx.keys.authenticate(request.headers, request.client.host if request.client else "")
            ctx.limiter.check(principal)
            request.state.principal = principal.name
            return await handler(request, ctx, principal)
        except ClientGone:
            return Response(status_code=499)  # nobody is left to read it
        except Exception as exc:
            return problem_response(exc, request.url.path, openai)

    route.__name__ = handler.__name__
    route.__doc__ = handler.__doc__
    return route


def problem_response(exc: BaseException, path: str, openai: bool = False) -> Response:
    from starlette.responses import Response

    status, body, headers = problem_for(exc, path)
    if openai:
        body = openai_error(body)
    return Response(encode(body), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def problem_frame(exc: BaseException, path: str, openai: bool = False) -> bytes:
    """An error in the middle of a stream: an `error` event (OpenAI's streams: a data
    frame with an `error` member, which the SDK raises as an APIError)."""
    _, body, _ = problem_for(exc, path)
    if openai:
        return frame(openai_error(body))
    return frame(body, event="error")


# --- bodies and responses -------------------------------------------------------------------


async def read_json(request: Request, *, default: Any = None) -> Any:
    body = await request.body()
    if not body.strip():
        if default is not None:
            return default
        raise HttpProblem(400, "missing body", "this endpoint takes a JSON body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpProblem(400, "invalid JSON", f"the body is not valid JSON: {str(exc)[:200]}") from None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    from starlette.responses import Response

    text = json.dumps(jsonable(data), ensure_ascii=False, default=str)
    return Response(text, status_code=status, headers=headers, media_type="application/json")


def jsonable(value: Any, depth: int = 0) -> Any:
    """A value as plain JSON data: models and dataclasses as dicts, NaN/Infinity as null,
    anything else as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 64:
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), depth + 1)
    return str(value)


def get_str(data: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise HttpProblem(400, "invalid request", f"'{key}' must be a string")
    return value


def get_object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HttpProblem(400, "invalid request", f"'{key}' must be a JSON object")
    return value


def get_int(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpProblem(400, "invalid request", f"'{key}' must be an integer from {low} to {high}")
    return value


# --- usage ---------------------------------------------------------------------------------


@contextlib.contextmanager
def metered(kernel: Kernel) -> Iterator[FunctionResult]:
    """Run what follows as one top-level invocation: one call budget, and its usage and
    cost added up in the meter yielded (cost None when a model is unpriced)."""
    from .. import _usage

    meter = FunctionResult("serve", None, Usage(), 0.0)
    settings = kernel.settings
    budget: _usage.Budget = [0, 0, settings.max_function_calls, settings.max_model_calls]
    token = _usage.METER.set((0, meter, budget))
    try:
        yield meter
    finally:
        with contextlib.suppress(ValueError):  # a stream closed from another context
            _usage.METER.reset(token)
