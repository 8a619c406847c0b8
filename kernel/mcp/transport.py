"""How the kernel reaches an MCP server: a child process over stdio (our own transport, so
that an answer is bounded in size and a crash is seen at once), or streamable HTTP (the
SDK's transport).

**Bounded answers.** A line of the server's stdout longer than `max_message_bytes` is never
held whole: its first `HEAD_BYTES` and last bytes are kept, the rest is skipped as it
arrives. When the line is a tool result whose first content is text, the request gets a
result with that text's head and a `_meta` note of the full size (the function says the
answer was cut); otherwise an error naming the size and the limit. Either way the request
ends, with memory bounded by the limit, not by what the server sends.

**Crashes.** The process's stdout closing ends the session (the SDK fails every pending
request with "connection closed"); `Process.exited` is set, with the exit code and the end
of the server's stderr for the error message. Shutdown follows the MCP lifecycle: close
stdin, wait, SIGTERM the process group, wait, SIGKILL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..logging import LazyLogger, mask_text

if TYPE_CHECKING:
    from mcp.shared.message import SessionMessage

    from ..settings import McpServerSettings

__all__ = ["HEAD_BYTES", "TRUNCATED_META", "Process", "http_transport", "stdio_transport"]

log = LazyLogger("kernel.mcp")

HEAD_BYTES = 256 * 1024
"""What is kept of an answer over the size limit (its text head for the model)."""
TAIL_BYTES = 256
STDERR_TAIL = 4096
GRACE = 2.0  # seconds a server has to exit after its stdin closes, then after SIGTERM
TRUNCATED_META = "orchestration-kernel/truncated"
"""`_meta` key of a result cut at the transport: {"bytes": total, "limit": max_message_bytes}."""

_ID_HEAD = re.compile(rb'^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")')
_ID_TAIL = re.compile(rb',\s*"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*\}\s*$')
_TEXT_START = re.compile(  # a result's first content block, a text (`"type"` before or after `"text"`)
    rb'"result"\s*:\s*\{(?:[^{}"]|"(?:[^"\\]|\\.)*"|\{[^{}]*\})*?"content"\s*:\s*\[\s*\{\s*'
    rb'(?:"type"\s*:\s*"text"\s*,\s*)?"text"\s*:\s*"')


class Process:
    """A running stdio server: its exit, exit code and the end of its stderr."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.exited = asyncio.Event()
        self.stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self.in_flight: set[Any] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def stderr_text(self) -> str:
        text = b"".join(self.stderr_tail).decode("utf-8", "replace")
        return mask_text(text.strip())

    def describe_exit(self) -> str:
        """`exit code 3` (or `killed by signal 9`) and the last line of its stderr."""
        code = self.returncode
        what = "still running" if code is None else f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        return what + (f"; stderr: {lines[-1][:300]}" if lines else "")

    def _keep_stderr(self, chunk: bytes) -> None:
        self.stderr_tail.append(chunk)
        self._stderr_size += len(chunk)
        while self._stderr_size > STDERR_TAIL and len(self.stderr_tail) > 1:
            self._stderr_size -= len(self.stderr_tail.popleft())


def _child_environment(settings: McpServerSettings) -> dict[str, str]:
    """What the SDK gives a stdio server (HOME, PATH, ... only: no secrets of ours leak),
    plus the server's own `env`."""
    from mcp.client.stdio import get_default_environment

    return get_default_environment() | dict(settings.env)


@contextlib.asynccontextmanager
async def stdio_transport(name: str, settings: McpServerSettings) -> AsyncIterator[tuple[Any, Any, Process]]:
    """Start the server and yield (read stream, write stream, Process) for a ClientSession."""
    import anyio
    from mcp.shared.message import SessionMessage

    assert settings.command is not None
    proc = await asyncio.create_subprocess_exec(
        settings.command, *settings.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=_child_environment(settings),
        cwd=os.fspath(settings.cwd) if settings.cwd else None, start_new_session=sys.platform != "win32",
        limit=64 * 1024,
    )
    process = Process(name, proc)
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](16)
    limit = settings.max_message_bytes

    async def read_stdout() -> None:
        assert proc.stdout is not None
        try:
            async with to_session:
                async for item in _lines(proc.stdout, limit, process):
                    await to_session.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            await _drain(proc)
            process.exited.set()

    async def read_stderr() -> None:
        assert proc.stderr is not None
        with contextlib.suppress(Exception):
            while chunk := await proc.stderr.read(4096):
                process._keep_stderr(chunk)

    async def write_stdin() -> None:
        assert proc.stdin is not None
        try:
            async with from_session:
                async for message in from_session:
                    wire: Any = message.message
                    method = getattr(wire, "method", None)
                    if method is not None and getattr(wire, "id", None) is not None:
                        process.in_flight.add(wire.id)
                    elif method == "notifications/cancelled":
                        process.in_flight.discard((getattr(wire, "params", None) or {}).get("requestId"))
                    data = wire.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8") + b"\n"
                    proc.stdin.write(data)
                    await proc.stdin.drain()
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    tasks = [asyncio.ensure_future(job()) for job in (read_stdout, read_stderr, write_stdin)]
    try:
        yield read_stream, write_stream, process
    finally:
        # Shielded: a cancelled caller still stops the process (every wait is bounded).
        stop = asyncio.ensure_future(_shutdown(process, tasks, read_stream, write_stream))
        try:
            await asyncio.shield(stop)
        except asyncio.CancelledError:
            await asyncio.wait([stop], timeout=3 * GRACE + 1)
            raise


async def _shutdown(process: Process, tasks: list[asyncio.Task[None]], *streams: Any) -> None:
    proc = process.proc
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    if not await _exited(proc, GRACE):
        _signal_group(proc, signal.SIGTERM)
        if not await _exited(proc, GRACE):
            _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            await _exited(proc, GRACE)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for stream in streams:
        with contextlib.suppress(Exception):
            await stream.aclose()
    process.exited.set()
    log.debug("mcp_server_stopped", server=process.name, pid=proc.pid, returncode=proc.returncode)


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout)
    return proc.returncode is not None


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if sys.platform == "win32":  # pragma: no cover
            proc.kill()
        else:
            os.killpg(proc.pid, sig)  # the server and whatever it started (start_new_session)


async def _drain(proc: asyncio.subprocess.Process) -> None:
    """Read and drop what is left on stdout, so a server flushing output can still exit."""
    if proc.stdout is None:
        return
    with contextlib.suppress(Exception):
        while await asyncio.wait_for(proc.stdout.read(65536), GRACE):
            pass


async def _lines(stdout: asyncio.StreamReader, limit: int,
                 process: Process) -> AsyncIterator[SessionMessage | Exception]:
    """The messages of the server's stdout, one per line; a line over `limit` bytes is cut
    (see the module docstring)."""
    parts: list[bytes] = []
    size = 0
    head = b""
    tail = b""
    over = False
    while chunk := await stdout.read(65536):
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if over:
                size += len(piece)
                tail = (tail + piece)[-TAIL_BYTES:]
            elif size + len(piece) > limit:
                over = True
                head = _head(parts, piece)
                tail = ((parts[-1] if parts else b"") + piece)[-TAIL_BYTES:]
                size += len(piece)
                parts = []
            else:
                parts.append(piece)
                size += len(piece)
            if end < 0:
                break
            if over:
                yield _oversized(head, tail, size, limit, process)
            elif size or parts:
                item = _parse(b"".join(parts), process)
                if item is not None:
                    yield item
            parts, size, head, tail, over = [], 0, b"", b"", False
            start = end + 1


def _head(parts: list[bytes], piece: bytes) -> bytes:
    """The first HEAD_BYTES of `parts` + `piece`, without joining all of them."""
    kept: list[bytes] = []
    size = 0
    for part in [*parts, piece]:
        kept.append(part[: HEAD_BYTES - size])
        size += len(kept[-1])
        if size >= HEAD_BYTES:
            break
    return b"".join(kept)


def _parse(line: bytes, process: Process) -> SessionMessage | Exception | None:
    import mcp_types
    from mcp.shared.message import SessionMessage

    if not line.strip():
        return None
    try:
        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:
        log.warning("mcp_invalid_message", server=process.name, error=mask_text(str(exc)[:200]))
        return exc
    if isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
        process.in_flight.discard(message.id)
    return SessionMessage(message)


def _oversized(head: bytes, tail: bytes, size: int, limit: int, process: Process) -> SessionMessage | Exception:
    """What a request gets for an answer over the limit: its text head, or an error."""
    import mcp_types
    from mcp.shared.message import SessionMessage

    request_id = _answer_id(head, tail, process)
    log.warning("mcp_message_too_large", server=process.name, bytes=size, limit=limit)
    if request_id is None:
        return ValueError(f"a message of {size} bytes from the server is over the limit of {limit} bytes; dropped")
    process.in_flight.discard(request_id)
    text = _text_head(head)
    if text is not None:
        result = {"content": [{"type": "text", "text": text}], "isError": False,
                  "_meta": {TRUNCATED_META: {"bytes": size, "limit": limit}}}
        message: Any = mcp_types.JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
    else:
        error = mcp_types.ErrorData(code=mcp_types.INTERNAL_ERROR, message=(
            f"the server's answer has {size} bytes, over the limit of {limit} bytes (max_message_bytes)"))
        message = mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
    return SessionMessage(message)


def _answer_id(head: bytes, tail: bytes, process: Process) -> Any:
    """The id the oversized answer answers: at its start (`{"jsonrpc":"2.0","id":7,...`) or
    its end (`...,"id":7}`), and in flight; else the one request in flight, if only one is."""
    for pattern, text in ((_ID_HEAD, head[:200]), (_ID_TAIL, tail)):
        match = pattern.search(text)
        if match:
            with contextlib.suppress(ValueError):
                value = json.loads(match.group(1))
                if value in process.in_flight:
                    return value
    if len(process.in_flight) == 1:
        return next(iter(process.in_flight))
    return None


def _text_head(head: bytes) -> str | None:
    """The decoded start of a tool result's first text content, or None."""
    match = _TEXT_START.search(head)
    if match is None:
        return None
    raw = head[match.end():].decode("utf-8", "ignore")
    end = re.search(r'(?<!\\)(?:\\\\)*"', raw)
    if end is not None:
        raw = raw[: end.end() - 1]
    for cut in range(0, 7):  # an escape sequence cut in the middle (`\u00`, `\`)
        try:
            value = json.loads('"' + (raw[: len(raw) - cut] if cut else raw) + '"')
        except ValueError:
            continue
        return str(value)
    return None


@contextlib.asynccontextmanager
async def http_transport(name: str, settings: McpServerSettings) -> AsyncIterator[tuple[Any, Any, None]]:
    """The SDK's streamable HTTP transport, with the configured headers."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert settings.url is not None
    timeout = httpx2.Timeout(settings.timeout, read=max(settings.timeout, 300.0))
    async with httpx2.AsyncClient(headers=dict(settings.headers), timeout=timeout) as client, \
            streamable_http_client(settings.url, http_client=client) as (read_stream, write_stream):
        yield read_stream, write_stream, None
