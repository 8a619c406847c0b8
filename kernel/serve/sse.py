"""Server-sent events that stop their work when the client goes away.

`EventStream(events, ...)` is an ASGI response: a task reads `events` (an async iterator
of ready-made SSE frames) into a small queue, the response writes them, and a watcher
reads the request's `receive` channel. When the client disconnects, the producer is
cancelled at once (the model call under it is cancelled with it: nothing waits for the
next token to notice). Past the deadline the stream ends with the error frame
`on_error(DeadlineExceededError)`; an idle stream sends a comment every `ping` seconds
(proxies keep it open, and a dead client is noticed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import DeadlineExceededError
from ..logging import LazyLogger
from .limits import Receive, Scope, Send, wait_disconnect

__all__ = ["CANCEL_GRACE", "EventStream", "frame"]

log = LazyLogger("kernel.serve")

_DONE = object()
CANCEL_GRACE = 5.0
"""Seconds a stream's closing waits for its cancelled work to end."""


def frame(data: Any, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame: `event:` (optional), `id:` (optional) and `data:` as compact JSON
    (or the text itself for a str)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


class EventStream:
    """A `text/event-stream` response (see the module docstring)."""

    def __init__(self, events: AsyncIterator[bytes], *, timeout: float, on_error: Callable[[BaseException], bytes],
                 headers: dict[str, str] | None = None, ping: float = 15.0,
                 on_close: Callable[[str], Any] | None = None) -> None:
        self.events, self.timeout, self.on_error, self.ping = events, timeout, on_error, ping
        self.headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        self.on_close = on_close
        self.outcome = "pending"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)

        async def produce() -> None:
            try:
                async for item in self.events:
                    await queue.put(item)
                await queue.put(_DONE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # producers send their own error frames; this is the last resort
                await queue.put(exc)
            finally:
                with contextlib.suppress(Exception):
                    await _aclose(self.events)

        async def pump() -> None:
            # Not asyncio.wait_for(queue.get(), ping): on Python 3.11 it returns the item and
            # drops a cancellation that comes as the item arrives (a client leaving as an event
            # is published), and the writer would then wait on an empty queue for ever.
            getter: asyncio.Future[Any] | None = None
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            try:
                while True:
                    if queue.empty():  # a timer only when there is nothing to write yet
                        getter = getter or asyncio.ensure_future(queue.get())
                        done, _ = await asyncio.wait({getter}, timeout=self.ping)
                        if not done:
                            await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                            continue
                        item, getter = getter.result(), None
                    else:
                        item = queue.get_nowait()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        await send({"type": "http.response.body", "body": self.on_error(item), "more_body": True})
                        break
                    await send({"type": "http.response.body", "body": item, "more_body": True})
            finally:
                if getter is not None:
                    getter.cancel()

        producer = asyncio.ensure_future(produce())
        writer = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({writer, watcher}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:
                self.outcome = "done"
                writer.result()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif watcher in done:
                self.outcome = "disconnected"  # nobody to write to: stop the work
            else:
                self.outcome = "deadline"
                writer.cancel()
                producer.cancel()
                error = DeadlineExceededError(f"the stream did not finish within {self.timeout:g} s "
                                              "(serve.request_timeout)")
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": self.on_error(error), "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            self.outcome = "disconnected"
        finally:
            tasks = (producer, writer, watcher)
            for task in tasks:
                if not task.done():
                    task.cancel()
            # bounded: work that ignores its cancellation (a function catching CancelledError)
            # goes on in the background, but does not hold the response open
            _, stuck = await asyncio.wait(tasks, timeout=CANCEL_GRACE)
            if stuck:
                log.warning("serve_stream_work_not_cancelled", tasks=len(stuck), grace=CANCEL_GRACE)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" at exit
            if self.on_close is not None:
                self.on_close(self.outcome)


async def _aclose(events: AsyncIterator[bytes]) -> None:
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()
