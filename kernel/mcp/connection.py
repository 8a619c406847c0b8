"""One MCP server as the kernel sees it: started when first needed (or with the kernel),
its listing (tools, prompts, whether it has resources), requests that each have a
deadline, restarts after a crash with backoff, and shutdown.

Everything that touches the session runs on the kernel's MCP runtime loop
(`runtime.Runtime`); the methods without a leading underscore may be called from any loop
or thread. States: `stopped` (not started yet), `starting`, `ready`, `restarting` (after a
crash, waiting out the backoff), `failed` (crashed `max_restarts` times in a row: tried
again on the next need once the longest backoff has passed), `closed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..logging import LazyLogger, mask_text
from .errors import McpError, McpProtocolError, McpServerUnavailableError, McpTimeoutError
from .transport import GRACE, Process, http_transport, stdio_transport

if TYPE_CHECKING:
    from mcp import ClientSession

    from ..settings import McpServerSettings
    from .runtime import Runtime

__all__ = ["BACKOFF_INITIAL", "BACKOFF_MAX", "Listing", "McpConnection", "McpProgress"]

log = LazyLogger("kernel.mcp")

T = TypeVar("T")

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
MAX_PAGES = 50
MAX_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class Listing:
    """What a server offers, as it said at its last start (untrusted: data, never code)."""

    tools: list[Any] = field(default_factory=list)  # mcp.types.Tool
    prompts: list[Any] = field(default_factory=list)  # mcp.types.Prompt
    resources: bool = False
    server: str = ""
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class McpProgress:
    """A progress notification of a running tool call."""

    server: str
    tool: str
    progress: float
    total: float | None
    message: str | None


def backoff(failures: int) -> float:
    return float(min(BACKOFF_INITIAL * 2.0 ** max(failures - 1, 0), BACKOFF_MAX))


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class McpConnection:
    """One configured server and its (re)started sessions."""

    def __init__(self, name: str, settings: McpServerSettings, runtime: Runtime) -> None:
        self.name = name
        self.settings = settings
        self.runtime = runtime
        self.state = "stopped"
        self.error: str | None = None
        self.listing: Listing | None = None
        self.version = 0  # grows with each new listing
        self.starts = 0
        self.failures = 0  # in a row; a successful request resets it
        self.pid: int | None = None
        self.progress_listeners: list[Callable[[McpProgress], Any]] = []
        self._closing = False
        self._attempt = 0  # number of the latest start attempt
        self._last_failed = 0  # number of the latest attempt that failed (or whose server exited)
        self._failed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._process: Process | None = None
        self._changed: asyncio.Event | None = None
        self._wanted: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._broken: asyncio.Event | None = None

    @property
    def transport(self) -> str:
        return "stdio" if self.settings.command is not None else "http"

    def describe(self) -> str:
        """`python -m server` or the URL (its password masked)."""
        if self.settings.command is not None:
            return mask_text(" ".join([self.settings.command, *self.settings.args]))
        return mask_text(self.settings.url or "")

    # -- from any thread -------------------------------------------------------------------

    async def start(self) -> Listing:
        """Start the server if it is not running; its listing (raises a McpError)."""
        return await self.runtime.call(self._listing())

    def start_blocking(self) -> Listing | None:
        """`start` from sync code: blocks this thread up to `startup_timeout`; None when the
        server could not start (logged, and shown by `kernel mcp list`)."""
        if self.runtime.on_thread():
            return self.listing
        try:
            return self.runtime.wait(self._listing(), self.settings.startup_timeout + 2 * GRACE)
        except (McpError, TimeoutError) as exc:
            log.warning("mcp_server_unavailable", server=self.name, error=str(exc) or type(exc).__name__)
            return None

    def start_soon(self) -> None:
        """Start in the background (`start = "eager"`); nothing waits for it."""
        self.runtime.submit(self._kick())

    async def request(self, what: str, op: Callable[[ClientSession], Awaitable[T]],
                      timeout: float | None = None) -> T:
        """Run `op(session)` with a deadline (`timeout`, default the server's); failures
        become named errors (`McpTimeoutError`, `McpServerUnavailableError`, ...)."""
        return await self.runtime.call(self._request(what, op, timeout or self.settings.timeout))

    async def aclose(self) -> None:
        await self.runtime.call(self._close())

    # -- on the runtime loop ---------------------------------------------------------------

    def _events(self) -> tuple[asyncio.Event, asyncio.Event, asyncio.Event]:
        if self._changed is None or self._wanted is None or self._stop is None:
            self._changed, self._wanted, self._stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
            self._broken = asyncio.Event()
        return self._changed, self._wanted, self._stop

    def _set(self, state: str) -> None:
        changed, _, _ = self._events()
        self.state = state
        self._changed = asyncio.Event()
        changed.set()

    async def _kick(self) -> None:
        self._events()
        if self._closing:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._own(), name=f"mcp-{self.name}")
        assert self._wanted is not None
        self._wanted.set()

    async def _listing(self) -> Listing:
        await self._ready(self.settings.startup_timeout)
        assert self.listing is not None
        return self.listing

    async def _ready(self, timeout: float) -> ClientSession:
        """The live session, starting the server when needed (bounded by `timeout`)."""
        loop = asyncio.get_running_loop()
        if self._closing or self.state == "closed":
            raise McpServerUnavailableError(f"MCP server {self.name!r} is shut down")
        if self.state == "ready" and self._session is not None:
            return self._session
        if self.state == "failed":
            wait = self._failed_at + BACKOFF_MAX - loop.time()
            if wait > 0:
                raise McpServerUnavailableError(
                    f"MCP server {self.name!r} failed {self.failures} times in a row ({self.error}); "
                    f"not tried again for {wait:.0f} s")
        # The attempt this caller waits for: the one starting now, else the next one.
        target = self._attempt if self.state == "starting" else self._attempt + 1
        await self._kick()
        try:
            async with asyncio.timeout(timeout):
                while not (self.state == "ready" and self._session is not None):
                    if self._last_failed >= target or self.state == "closed":
                        raise McpServerUnavailableError(f"MCP server {self.name!r} is unavailable: {self.error}")
                    assert self._changed is not None
                    await self._changed.wait()
        except TimeoutError:
            last = f" (last error: {self.error})" if self.error else ""
            raise McpTimeoutError(f"MCP server {self.name!r} did not start within {timeout} s "
                                  f"(startup_timeout){last}") from None
        return self._session

    async def _own(self) -> None:
        """The life of the server: sessions, one after another, until closed."""
        loop = asyncio.get_running_loop()
        _, wanted, stop = self._events()
        while not self._closing:
            self._attempt += 1
            self._set("starting")
            try:
                await self._session_once()
                process = self._process
                error = "the connection closed" if process is None else f"exited ({process.describe_exit()})"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = self._explain(_leaf(exc))
            self._session = None
            if self._closing:
                break
            self.error = error
            self.failures += 1
            self._last_failed = self._attempt
            log.warning("mcp_server_failed", server=self.name, error=error, failures=self.failures)
            if self.failures > self.settings.max_restarts:
                self._failed_at = loop.time()
                wanted.clear()
                self._set("failed")
                await wanted.wait()
            else:
                self._set("restarting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff(self.failures))
        self._set("closed")

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer to the handshake within {self.settings.startup_timeout} s (startup_timeout)"
        if isinstance(exc, FileNotFoundError | PermissionError):
            return f"cannot run {self.settings.command!r}: {exc.strerror}"
        text = f"{type(exc).__name__}: {exc}"
        if self._process is not None and self._process.returncode is not None:
            text += f" ({self._process.describe_exit()})"
        return mask_text(text)[:500]

    async def _session_once(self) -> None:
        from mcp import ClientSession, Implementation

        _, _, stop = self._events()
        self._process = None
        async with contextlib.AsyncExitStack() as stack:
            if self.settings.command is not None:
                read, write, process = await stack.enter_async_context(stdio_transport(self.name, self.settings))
                self._process, self.pid = process, process.pid
            else:
                read, write, _ = await stack.enter_async_context(http_transport(self.name, self.settings))
            session = await stack.enter_async_context(ClientSession(
                read, write, client_info=Implementation(name="orchestration-kernel", version="0.1.0"),
                message_handler=self._on_message))
            self.starts += 1
            async with asyncio.timeout(self.settings.startup_timeout):
                init = await session.initialize()
                listing = await self._list(session, init)
            self._session, self.listing, self.error = session, listing, None
            self.version += 1
            assert self._broken is not None
            self._broken.clear()
            self._set("ready")
            log.info("mcp_server_ready", server=self.name, tools=len(listing.tools), prompts=len(listing.prompts))
            ended = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._broken.wait())]
            if self._process is not None:
                ended.append(asyncio.ensure_future(self._process.exited.wait()))
            try:
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in ended:
                    waiter.cancel()
                self._session = None
                if not self._closing:
                    self._set("restarting")

    async def _list(self, session: ClientSession, init: Any) -> Listing:
        from mcp.types import PaginatedRequestParams

        async def pages(method: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
            items: list[Any] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                result = await method(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
                items.extend(getattr(result, attribute))
                cursor = result.next_cursor
                if not cursor or len(items) >= MAX_ITEMS:
                    break
            return items[:MAX_ITEMS]

        capabilities = init.capabilities
        tools = await pages(session.list_tools, "tools") if capabilities.tools is not None else []
        prompts = (await pages(session.list_prompts, "prompts")
                   if self.settings.prompts and capabilities.prompts is not None else [])
        resources = False
        if self.settings.resources and capabilities.resources is not None:
            # Offered only when there is something to read (many servers declare the capability empty).
            resources = bool((await session.list_resources()).resources)
            if not resources:
                with contextlib.suppress(Exception):
                    resources = bool((await session.list_resource_templates()).resource_templates)
        info = init.server_info
        return Listing(tools, prompts, resources, f"{info.name} {info.version}".strip(), init.instructions)

    async def _on_message(self, message: Any) -> None:
        """Notifications from the server: a changed tool or prompt list is read again."""
        method = getattr(getattr(message, "root", message), "method", None) or getattr(message, "method", None)
        if method in ("notifications/tools/list_changed", "notifications/prompts/list_changed"):
            asyncio.get_running_loop().create_task(self._relist())

    async def _relist(self) -> None:
        session = self._session
        if session is None or session.initialize_result is None:
            return
        try:
            async with asyncio.timeout(self.settings.timeout):
                listing = await self._list(session, session.initialize_result)
        except Exception as exc:
            log.warning("mcp_relist_failed", server=self.name, error=type(_leaf(exc)).__name__)
            return
        self.listing = listing
        self.version += 1

    async def _request(self, what: str, op: Callable[[ClientSession], Awaitable[T]], timeout: float) -> T:
        import anyio
        import mcp_types
        from mcp import MCPError

        session = await self._ready(self.settings.startup_timeout)
        try:
            async with asyncio.timeout(timeout):
                result = await op(session)
        except McpError:
            raise
        except TimeoutError:
            raise McpTimeoutError(f"MCP server {self.name!r}: {what} got no answer within {timeout} s "
                                  "(timeout)") from None
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                raise await self._closed_error(what) from None
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise McpTimeoutError(f"MCP server {self.name!r}: {what} timed out ({exc.message})") from None
            raise McpProtocolError(f"MCP server {self.name!r}: {what}: {mask_text(exc.message)[:500]} "
                                   f"(error {exc.code})", exc.code) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise await self._closed_error(what) from None
        except (RuntimeError, ValueError) as exc:  # the SDK's checks; pydantic's ValidationError
            raise McpProtocolError(f"MCP server {self.name!r}: {what}: invalid answer: "
                                   f"{mask_text(str(exc))[:300]}") from None
        self.failures = 0
        return result

    async def _closed_error(self, what: str) -> McpServerUnavailableError:
        process = self._process
        if process is None:
            if self._broken is not None:
                self._broken.set()
            return McpServerUnavailableError(f"MCP server {self.name!r}: the connection closed during {what}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.proc.wait(), 1.0)
        return McpServerUnavailableError(f"MCP server {self.name!r} exited during {what} ({process.describe_exit()})")

    async def _close(self) -> None:
        _, wanted, stop = self._events()
        self._closing = True
        stop.set()
        wanted.set()
        task = self._task
        if task is not None and not task.done():
            if self.state == "starting":
                task.cancel()
            done, _ = await asyncio.wait([task], timeout=3 * GRACE + 2)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=3 * GRACE + 1)
        self._set("closed")
