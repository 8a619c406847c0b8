"""MCP servers as kernel plugins.

A kernel built with `[mcp.servers.NAME]` entries gets one plugin per server, named after
it (`attach`, from the kernel's bootstrap); `add_server(kernel, NAME, ...)` adds one in
code. Nothing starts then. A plugin reads its functions from its server when they are
first needed: when the kernel lists or looks up that plugin's functions (a chat turn
offering every tool, `kernel run NAME.tool`, `kernel plugins list`), which blocks the
calling thread until the server has answered (at most `startup_timeout`). Ahead of time,
without blocking an event loop: `await kernel.mcp.start(kernel)` (prefer it in async
applications), or `start = "eager"` to start a server in the background with the kernel.

Servers shut down with the kernel (`Kernel.aclose`), when it is garbage collected, or at
interpreter exit, whichever comes first.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..functions import NAME_PATTERN, KernelFunction, KernelPlugin
from ..logging import LazyLogger
from .connection import McpConnection, backoff
from .functions import build_functions, clean_text
from .runtime import Runtime

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..settings import McpServerSettings

__all__ = ["McpClients", "McpPlugin", "add_server", "attach", "clients", "close_kernel", "start"]

log = LazyLogger("kernel.mcp")

_SLOT: Any = KernelPlugin.__dict__["functions"]  # KernelPlugin's own storage of `functions`


class McpPlugin(KernelPlugin):
    """The plugin of one MCP server: its `functions` come from the server's listing, read
    when first needed and again whenever the server lists something new (a restart, a
    `list_changed` notification)."""

    __slots__ = ("_armed", "_next_try", "_version", "connection", "problems")

    def __init__(self, connection: McpConnection, name: str) -> None:
        self._armed = False
        self._version = -1
        self._next_try = 0.0
        super().__init__(name, description=f"Tools of the MCP server {name!r}", source=f"mcp:{connection.describe()}")
        self.connection = connection
        self.problems: list[str] = []
        """What of the listing was left out (a tool with a bad schema, a `tools` entry the
        server does not offer)."""

    @property
    def functions(self) -> dict[str, KernelFunction]:
        store: dict[str, KernelFunction] = _SLOT.__get__(self, KernelPlugin)
        if self._armed:
            connection = self.connection
            due = connection.listing is None and connection.state != "closed" and time.monotonic() >= self._next_try
            if due and connection.start_blocking() is None:
                self._next_try = time.monotonic() + max(backoff(connection.failures), 1.0)
            if connection.version != self._version:
                self.refresh(store)
        return store

    @functions.setter
    def functions(self, value: dict[str, KernelFunction]) -> None:
        _SLOT.__set__(self, value)

    def refresh(self, store: dict[str, KernelFunction] | None = None) -> None:
        """Rebuild the functions from the connection's listing (in place)."""
        if store is None:
            store = _SLOT.__get__(self, KernelPlugin)
        connection = self.connection
        version = connection.version
        problems: list[str] = []
        functions = build_functions(connection, self.name, problems, self._needs_approval)
        store.clear()
        store.update(functions)
        self._version = version
        if problems != self.problems:
            for problem in problems:
                log.warning("mcp_listing_problem", server=self.name, problem=problem)
        self.problems = problems
        listing = connection.listing
        if listing is not None and listing.server:
            self.description = clean_text(f"Tools of the MCP server {self.name!r} ({listing.server})", 300)

    def _needs_approval(self, remote: str) -> bool:
        wanted = self.connection.settings.needs_approval
        return wanted if isinstance(wanted, bool) else remote in wanted


class McpClients:
    """The MCP servers of one kernel and the thread their sessions live on."""

    def __init__(self) -> None:
        self.runtime = Runtime()
        self.plugins: dict[str, McpPlugin] = {}
        _live.add(self)

    def add(self, kernel: Kernel, name: str, settings: McpServerSettings) -> McpPlugin:
        if not NAME_PATTERN.match(name):
            raise ConfigurationError(f"mcp.servers.{name}: invalid server name: it names a plugin, so use letters, "
                                     "digits and underscores, not starting with a digit")
        if name in kernel.plugins:
            raise ConfigurationError(f"mcp.servers.{name}: a plugin named {name!r} is already registered "
                                     f"({kernel.plugins[name].source or 'in code'}); give the server another name")
        plugin = McpPlugin(McpConnection(name, settings, self.runtime), name)
        kernel.add_plugin(plugin)
        plugin._armed = True
        self.plugins[name] = plugin
        if settings.start == "eager":
            plugin.connection.start_soon()
        return plugin

    async def start(self, names: Iterable[str] | None = None) -> dict[str, str | None]:
        """Start the servers (all, or those named) and read their listings, without
        blocking the caller's loop; {name: None, or why it could not start}."""
        chosen = [self.plugins[n] for n in (names if names is not None else self.plugins)]
        outcomes = await asyncio.gather(*(p.connection.start() for p in chosen), return_exceptions=True)
        report: dict[str, str | None] = {}
        for plugin, outcome in zip(chosen, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                report[plugin.name] = str(outcome) or type(outcome).__name__
            else:
                plugin.refresh()
                report[plugin.name] = None
        return report

    async def aclose(self) -> None:
        if self.runtime.running:
            with contextlib.suppress(Exception):
                await self.runtime.call(self._close_all())
            await asyncio.to_thread(self.runtime.stop)

    def close_blocking(self, timeout: float = 15.0) -> None:
        """`aclose` from sync code (garbage collection, interpreter exit)."""
        if self.runtime.running and not self.runtime.on_thread():
            with contextlib.suppress(Exception):
                self.runtime.wait(self._close_all(), timeout)
            self.runtime.stop()

    async def _close_all(self) -> None:
        await asyncio.gather(*(p.connection._close() for p in self.plugins.values()), return_exceptions=True)


_CLIENTS: weakref.WeakKeyDictionary[Kernel, McpClients] = weakref.WeakKeyDictionary()
_live: weakref.WeakSet[McpClients] = weakref.WeakSet()


def clients(kernel: Kernel) -> McpClients:
    """The MCP servers of `kernel` (made on first use)."""
    found = _CLIENTS.get(kernel)
    if found is None:
        found = _CLIENTS[kernel] = McpClients()
        weakref.finalize(kernel, found.close_blocking, 5.0)
    return found


def attach(kernel: Kernel) -> None:
    """Add a plugin for each server of `kernel.settings.mcp` (nothing starts)."""
    for name, settings in kernel.settings.mcp.servers.items():
        clients(kernel).add(kernel, name, settings)


def add_server(kernel: Kernel, name: str, settings: McpServerSettings | None = None, **fields: Any) -> McpPlugin:
    """Add an MCP server in code, as its plugin `name`: `add_server(kernel, "clock",
    command="uvx", args=["mcp-server-time"])` (fields of `McpServerSettings`)."""
    if settings is None:
        from ..settings import McpServerSettings

        settings = McpServerSettings.model_validate(fields)
    return clients(kernel).add(kernel, name, settings)


async def start(kernel: Kernel, *names: str) -> dict[str, str | None]:
    """Start `kernel`'s MCP servers (all, or those named) and read their tools, without
    blocking the event loop; {name: None when it started, else why not}."""
    found = _CLIENTS.get(kernel)
    return await found.start(names or None) if found is not None else {}


async def close_kernel(kernel: Kernel) -> None:
    """Shut down `kernel`'s MCP servers (from `Kernel.aclose`)."""
    found = _CLIENTS.get(kernel)
    if found is not None:
        await found.aclose()


@atexit.register
def _close_at_exit() -> None:
    for found in list(_live):
        found.close_blocking(5.0)

