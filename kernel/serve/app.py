"""The ASGI application: `create_app(kernel)` (Starlette), and `serve(kernel)` (uvicorn).

    /                      the web console (static files of the package)
    /openapi.json          the OpenAPI document
    /healthz               {"status": "ok"} (no key needed)
    /v1/...                the API: OpenAI-compatible chat and models, functions, plans,
                           runs, memory (see each module); every route needs a key when
                           keys are configured

Binds to 127.0.0.1 unless told otherwise; any other address needs at least one API key
configured (`[serve.keys.NAME]`), or `serve` refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._asgi import is_loopback, run_uvicorn
from ..errors import ConfigurationError
from ..logging import LazyLogger
from . import functions_api, memory_api, openai_api, plans_api
from .context import ServeContext, json_response, problem_response
from .limits import Guard
from .openapi import openapi_document
from .problems import HttpProblem

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

    from ..kernel import Kernel
    from ..settings import ServeSettings

__all__ = ["CONSOLE", "create_app", "serve"]

log = LazyLogger("kernel.serve")

CONSOLE = Path(__file__).resolve().parent / "console"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("orchestration-kernel")
    except Exception:
        return "0"


def create_app(kernel: Kernel, settings: ServeSettings | None = None, *, host: str | None = None) -> Starlette:
    """The server's ASGI app for `kernel` (`settings`: default `kernel.settings.serve`;
    `host`: the address it is bound to, for the loopback Host check; default the settings')."""
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
        from starlette.responses import FileResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError as exc:
        from ..errors import ExtraNotInstalledError

        raise ExtraNotInstalledError("kernel serve", "serve", exc.name or "starlette") from None

    settings = settings if settings is not None else kernel.settings.serve
    ctx = ServeContext(kernel, settings)
    document = openapi_document(_version(), keys=not ctx.keys.open)

    async def openapi(request: Request) -> Any:
        return json_response(document)

    async def health(request: Request) -> Any:
        return json_response({"status": "ok"})

    async def index(request: Request) -> Any:
        return FileResponse(CONSOLE / "index.html", headers={"cache-control": "no-cache"})

    async def http_error(request: Request, exc: Exception) -> Any:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        title = {404: "not found", 405: "method not allowed"}.get(status, "HTTP error")
        detail = f"{request.method} {request.url.path} is not an endpoint of this server (GET /openapi.json)" \
            if status in (404, 405) else str(getattr(exc, "detail", ""))
        return problem_response(HttpProblem(status, title, detail), request.url.path)

    routes: list[Any] = [
        *openai_api.routes(), *functions_api.routes(), *plans_api.routes(), *memory_api.routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    if settings.console:
        routes += [Route("/", index, methods=["GET"]),
                   Mount("/console", app=StaticFiles(directory=CONSOLE), name="console")]
    middleware = []
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                                     allow_methods=["GET", "POST"], allow_headers=["authorization", "x-api-key",
                                                                                   "content-type"],
                                     expose_headers=["x-kernel-run", "retry-after"], max_age=600))
    middleware.append(Middleware(Guard, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes,
                                 upload_paths=memory_api.is_upload, loopback_only=is_loopback(host or settings.host),
                                 cors_origins=settings.cors_origins))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for task in list(ctx.background):  # runs started with "stream": false end with the server
            task.cancel()
        await asyncio.gather(*ctx.background, return_exceptions=True)

    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error},
                    lifespan=lifespan)
    app.state.serve = ctx
    return app


async def serve(kernel: Kernel, *, host: str | None = None, port: int | None = None,
                settings: ServeSettings | None = None, on_ready: Callable[[str], Any] | None = None,
                max_requests: int | None = None) -> None:
    """Serve `kernel` over HTTP with uvicorn until cancelled (or, with `max_requests`, until
    that many requests were answered). `on_ready(url)` is called once it listens (`port=0`:
    a free port, in the URL)."""
    settings = settings if settings is not None else kernel.settings.serve
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    if not is_loopback(host) and not settings.keys:
        raise ConfigurationError(f"serving on {host} (not a loopback address) needs API keys: add "
                                 "[serve.keys.NAME] hash = \"...\" (kernel serve hash-key makes one)")
    app = create_app(kernel, settings, host=host)
    await run_uvicorn(app, host, port, what="kernel serve", on_ready=on_ready, server_header=False,
                      limit_max_requests=max_requests, timeout_graceful_shutdown=5, ws="none")
