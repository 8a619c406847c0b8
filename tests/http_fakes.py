"""A tiny real HTTP/1.1 server on loopback, run in its own thread and event loop.

Tests give it an async handler that answers each request with a `Reply` (status, JSON or
bytes, headers) or a `StreamReply` (chunks sent as they are produced, e.g. server-sent
events with delays). It records every request and notices when a client hangs up in the
middle of a stream, so tests can check that cancellation really closed the connection.
Speaks enough HTTP for the OpenAI and Anthropic SDKs (keep-alive, chunked responses).
Also provides the canned wire-format payloads of OpenAI chat completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when the server received it

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    chunks: Callable[[], AsyncIterator[bytes]]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})


Handler = Callable[[Request], Awaitable[Reply | StreamReply]]


class FakeHTTPServer:
    """`with FakeHTTPServer(handler) as server: server.url ...`"""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.disconnects = 0  # streams the client closed before the server finished
        self.streams_finished = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeHTTPServer:
        self._thread = threading.Thread(target=self._run, name="fake-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake HTTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        loop.run_until_complete(start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = await self.handler(request)
                if isinstance(reply, StreamReply):
                    await self._stream(reply, reader, writer)
                    return
                await self._reply(reply, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _reply(reply: Reply, writer: asyncio.StreamWriter) -> None:
        body = reply.body
        headers = {k.lower(): v for k, v in reply.headers.items()}
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers.setdefault("content-type", "application/json")
        data = body.encode() if isinstance(body, str) else body
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        headers["content-length"] = str(len(data))
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode() + data)
        await writer.drain()

    async def _stream(self, reply: StreamReply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        headers = {**{k.lower(): v for k, v in reply.headers.items()}}
        headers["transfer-encoding"] = "chunked"
        headers["connection"] = "close"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode())
        await writer.drain()
        hangup = asyncio.ensure_future(reader.read(1))  # b"" once the client closes
        chunks = reply.chunks()
        try:
            while True:
                step = asyncio.ensure_future(anext(chunks))
                done, _ = await asyncio.wait({step, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if hangup in done and hangup.result() == b"":
                    step.cancel()
                    self.disconnects += 1
                    return
                try:
                    chunk = await step
                except StopAsyncIteration:
                    break
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.streams_finished += 1
        except ConnectionError:
            self.disconnects += 1
        finally:
            hangup.cancel()
            with contextlib.suppress(BaseException):
                await chunks.aclose()  # type: ignore[attr-defined]


# -- OpenAI wire format ---------------------------------------------------------------


def openai_completion(
    text: str = "hello",
    *,
    model: str = "fake-model",
    tool_calls: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 5,
    completion_tokens: int = 2,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


def openai_chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    usage: bool = False,
    model: str = "fake-model",
) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": []
        if usage
        else [{"index": 0, "delta": {} if content is None else {"content": content}, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    return f"data: {json.dumps(data)}\n\n".encode()


async def openai_text_stream(
    words: list[str], delay: float = 0.0, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    """SSE chunks of a streamed completion; `fail_after` raises (drops the connection)
    after that many words."""
    for i, word in enumerate(words):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("dropped on purpose")
        if delay:
            await asyncio.sleep(delay)
        yield openai_chunk(word)
    yield openai_chunk(finish="stop")
    yield openai_chunk(usage=True)
    yield b"data: [DONE]\n\n"
