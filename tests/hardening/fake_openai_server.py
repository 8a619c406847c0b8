"""Loopback fakes for the hardening tests, built on `tests.http_fakes.FakeHTTPServer`.

`CountingServer` is a `FakeHTTPServer` that also measures what a load test needs to see
from the server's side: open TCP connections (now, peak, total) and requests being
handled at once (now, peak; a streamed answer counts until its last chunk is sent or its
client hangs up). It can keep only the last few requests, so thousands of
calls do not grow its memory. `echo_openai` answers every chat completion with the last
user message, so a test can check that each caller got its own answer. The Anthropic
helpers produce Messages API payloads (documented wire format), plain and as SSE.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from tests.http_fakes import FakeHTTPServer, Handler, Reply, Request, StreamReply, openai_completion

_CONNECTION: ContextVar[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = ContextVar("_CONNECTION")


def _peer_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the client already closed this connection (its EOF or RST is waiting in the
    socket even if the server's event loop has not got round to reading it yet)."""
    if reader.at_eof() or writer.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    if sock is None:
        return True
    probe = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset by the peer
        return True
    finally:
        probe.close()


class CountingServer(FakeHTTPServer):
    """A `FakeHTTPServer` counting connections and concurrent requests (server side).

    Requests in hand: plain requests until their reply is written, streams until their
    connection ends. When a request arrives, streams whose client has already hung up
    (the hang-up is in the socket but not yet processed by this server's loop) are not
    counted: the peak is what the clients really had open at that moment."""

    def __init__(self, handler: Handler, *, keep_requests: int | None = None) -> None:
        super().__init__(self._counted)
        self._inner = handler
        if keep_requests is not None:
            self.requests = deque(maxlen=keep_requests)  # type: ignore[assignment]
        self.request_count = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.total_connections = 0
        self.peak_in_flight = 0
        self._plain = 0
        self._streams: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    @property
    def in_flight(self) -> int:
        """Requests in hand now (streams until the server has processed their end)."""
        return self._plain + len(self._streams)

    def reset_peaks(self) -> None:
        """Start a new measuring round (called from the test thread between rounds)."""
        self.peak_in_flight = self.in_flight
        self.peak_connections = self.open_connections

    async def _counted(self, request: Request) -> Reply | StreamReply:
        self.request_count += 1
        live_streams = sum(1 for r, w in list(self._streams.values()) if not _peer_closed(r, w))
        self.peak_in_flight = max(self.peak_in_flight, self._plain + 1 + live_streams)
        self._plain += 1
        try:
            reply = await self._inner(request)
        finally:
            self._plain -= 1
        if isinstance(reply, StreamReply):  # in hand until its connection ends (a stream closes it)
            connection = _CONNECTION.get()
            self._streams[id(connection)] = connection
        return reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = (reader, writer)
        _CONNECTION.set(connection)  # this connection's task context, seen by _counted
        self.open_connections += 1
        self.total_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            await super()._serve(reader, writer)
        finally:
            self.open_connections -= 1
            self._streams.pop(id(connection), None)


def last_user_text(request: Request) -> str:
    messages = request.json().get("messages", [])
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # Anthropic / OpenAI content blocks
                return "".join(part.get("text", "") for part in content)
            return str(content)
    return ""


def echo_openai(delay: float = 0.0) -> Handler:
    """An OpenAI chat-completions handler answering `echo: <last user message>`."""

    async def handler(request: Request) -> Reply:
        if delay:
            await asyncio.sleep(delay)
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return Reply(404, {"error": {"message": f"no route {request.path}"}})
        return Reply(200, openai_completion("echo: " + last_user_text(request)))

    return handler


# -- Anthropic Messages wire format --------------------------------------------------------


def anthropic_message(text: str, model: str = "claude-fake") -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }


def anthropic_error(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def anthropic_sse(
    words: list[str], *, model: str = "claude-fake", fail_after: int | None = None
) -> AsyncIterator[bytes]:
    """A streamed Messages answer; `fail_after` drops the connection after that many words."""
    start = anthropic_message("", model)
    start["content"] = []
    start["stop_reason"] = None
    yield _event({"type": "message_start", "message": start})
    yield _event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    for i, word in enumerate(words):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("dropped on purpose")
        await asyncio.sleep(0)
        yield _event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        )
    yield _event({"type": "content_block_stop", "index": 0})
    yield _event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(words)},
        }
    )
    yield _event({"type": "message_stop"})
