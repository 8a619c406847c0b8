"""Serving an ASGI app with uvicorn until it stops, for the kernel's two servers
(`kernel serve` and `kernel mcp serve --transport http`); and what counts as loopback."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError
from .logging import LazyLogger

log = LazyLogger("kernel.serve")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address to bind) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def run_uvicorn(app: Any, host: str, port: int, *, what: str, path: str = "",
                      on_ready: Callable[[str], Any] | None = None, shutdown_wait: float = 10.0,
                      **options: Any) -> None:
    """Serve `app` on host:port until cancelled or uvicorn stops by itself. `on_ready(url)`
    is called once it listens (`port=0`: the free port it got, in the URL); a server that
    cannot listen is a ConfigurationError naming `what` and the address."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **options)
    web = uvicorn.Server(config)
    task = asyncio.ensure_future(web.serve())
    try:
        while not web.started:
            if task.done():
                task.result()
                raise ConfigurationError(f"{what} could not listen on {host}:{port}")
            await asyncio.sleep(0.02)
        bound = web.servers[0].sockets[0].getsockname()[1] if web.servers else port
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}{path}"
        log.info("serving", what=what, url=url)
        if on_ready is not None:
            on_ready(url)
        await task
    finally:
        if not task.done():
            web.should_exit = True
            await asyncio.wait([task], timeout=shutdown_wait)
            task.cancel()
