"""The kernel over HTTP (`kernel serve`): an OpenAI-compatible chat API, the kernel's own
API (functions, plans, runs, memory) and a web console, on Starlette and uvicorn (the
`[serve]` extra, imported only when a server is built: `import kernel` never loads it).

    app           create_app (the ASGI app), serve (uvicorn, loopback by default)
    context       ServeContext, the route wrapper, the usage meter of a request
    auth          API keys (hashed in the configuration), callers, rate limits
    limits        host and origin checks, body sizes, security headers, deadlines
    problems      errors as RFC 9457 problem details with the kernel's error type
    sse           server-sent events that stop their work when the client goes away
    runs          the runs of the server: events, approvals, a bounded registry
    openai_api    /v1/chat/completions, /v1/models
    functions_api /v1/functions, /v1/runs
    plans_api     /v1/plans, /v1/plans/run
    memory_api    /v1/memory
    openapi       the OpenAPI document
    console/      the web console: plain HTML, JavaScript and CSS
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .app import CONSOLE, create_app, serve
    from .auth import generate_key, hash_key, verify_key
    from .context import ServeContext
    from .problems import HttpProblem

__all__ = ["CONSOLE", "HttpProblem", "ServeContext", "create_app", "generate_key", "hash_key", "serve", "verify_key"]

_LOCATIONS = {
    **dict.fromkeys(("CONSOLE", "create_app", "serve"), "app"),
    **dict.fromkeys(("generate_key", "hash_key", "verify_key"), "auth"),
    "ServeContext": "context",
    "HttpProblem": "problems",
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
