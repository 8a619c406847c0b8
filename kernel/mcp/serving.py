"""Running the kernel's MCP server: over stdio (a client starts `kernel mcp serve`), or
over streamable HTTP with uvicorn, bound to loopback unless told otherwise, with an
optional bearer token (required for any other address)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._asgi import is_loopback, run_uvicorn
from ..errors import ConfigurationError
from ..logging import LazyLogger, register_secret

if TYPE_CHECKING:
    from ..functions import KernelFunction
    from ..kernel import Kernel

__all__ = ["BearerAuth", "serve"]

log = LazyLogger("kernel.mcp")


class BearerAuth:
    """ASGI middleware: an HTTP request without `Authorization: Bearer <token>` gets 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            given = next((value for key, value in scope.get("headers", ()) if key.lower() == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b'{"error":"missing or wrong bearer token"}'})
                return
        await self.app(scope, receive, send)


async def _run_draining(server: Any, read: Any, write: Any, patience: float) -> None:
    """`server.run` over stdio, where the end of stdin waits for the requests still being
    answered (at most `patience` s): `printf '...' | kernel mcp serve` gets every answer."""
    import anyio

    pending: set[Any] = set()
    idle = anyio.Event()
    to_server, server_read = anyio.create_memory_object_stream[Any](16)
    server_write, from_server = anyio.create_memory_object_stream[Any](16)
    flushed = anyio.Event()

    async def inbound() -> None:
        nonlocal idle
        async with to_server:
            async for item in read:
                wire: Any = getattr(item, "message", None)
                if getattr(wire, "method", None) is not None and getattr(wire, "id", None) is not None:
                    pending.add(wire.id)
                    idle = anyio.Event()
                await to_server.send(item)
            with anyio.move_on_after(patience):
                while pending:
                    await idle.wait()

    async def outbound() -> None:
        async with from_server, write:
            async for item in from_server:
                wire: Any = getattr(item, "message", None)
                if getattr(wire, "method", None) is None and getattr(wire, "id", None) is not None:
                    pending.discard(wire.id)
                    if not pending:
                        idle.set()
                await write.send(item)
        flushed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(inbound)
        group.start_soon(outbound)
        async with server_write:
            await server.run(server_read, server_write, server.create_initialization_options())
        await flushed.wait()  # every answer written; then stop reading (the server is done)
        group.cancel_scope.cancel()


async def serve(kernel: Kernel, functions: Sequence[KernelFunction], *,
                transport: Literal["stdio", "http"] = "stdio", host: str = "127.0.0.1", port: int = 8000,
                path: str = "/mcp", token: str | None = None, on_ready: Callable[[str], Any] | None = None,
                **server_options: Any) -> None:
    """Serve `functions` over MCP until the client goes away (stdio: stdin closes) or the
    task is cancelled (HTTP). `server_options` go to `build_server` (`prompts`,
    `collections`, `allow_needs_approval`, `max_result_chars`, `timeout`, `name`).
    `on_ready(url)` is called once HTTP listens (`port=0`: a free port, in the URL)."""
    from .server import build_server

    if transport not in ("stdio", "http"):
        raise ConfigurationError(f"unknown MCP transport {transport!r}; use 'stdio' or 'http'")
    if transport == "http" and not is_loopback(host) and not token:
        raise ConfigurationError(f"serving MCP on {host} (not a loopback address) needs a bearer token")
    server = build_server(kernel, functions, **server_options)
    if transport == "stdio":
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read, write):
            if on_ready is not None:
                on_ready("stdio")
            await _run_draining(server, read, write, server_options.get("timeout") or 600.0)
        return
    app: Any = server.streamable_http_app(streamable_http_path=path, host=host)
    if token:
        register_secret(token)
        app = BearerAuth(app, token)
    await run_uvicorn(app, host, port, what="the MCP HTTP server", path=path, on_ready=on_ready, shutdown_wait=5)
