"""What every request goes through before a route sees it (one ASGI middleware, `Guard`):

* **Host check**: bound to loopback, the `Host` header must name this machine
  (`localhost`, `127.0.0.1`, `[::1]`): a web page cannot reach the server through a DNS
  name rebound to 127.0.0.1.
* **Origin check**: a state-changing request (POST, PUT, PATCH, DELETE) from a browser
  page of another origin is refused (403) unless that origin is in `serve.cors_origins`:
  no cross-site request forgery, even of `multipart/form-data` uploads, which browsers
  send without asking first.
* **Body size**: a body over `serve.max_body_bytes` (`serve.max_upload_bytes` for document
  uploads) is refused with 413, by its `Content-Length` before it is read, or as soon as
  the bytes read pass the limit.
* **Security headers** on every response: `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and a strict
  `Content-Security-Policy` (the console loads only its own files).

And `run_guarded`: a request's work under its deadline, cancelled when the client goes
away (the model call stops with it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import DeadlineExceededError
from .problems import MEDIA_TYPE, HttpProblem, encode, problem_for

__all__ = ["ClientGone", "Guard", "run_guarded", "wait_disconnect"]

T = TypeVar("T")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                  b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                  b"base-uri 'none'; form-action 'self'"),
]

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: Any, *, max_body: int, max_upload: int, upload_paths: Callable[[str], bool],
                 loopback_only: bool, cors_origins: Collection[str]) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload
        self.upload_paths = upload_paths
        self.loopback_only = loopback_only
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        try:
            self._check_host(scope)
            self._check_origin(scope)
            limit = self.max_upload if self.upload_paths(path) else self.max_body
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise HttpProblem(413, "request body too large",
                                  f"the body has {length} bytes; this endpoint takes at most {limit}")
        except HttpProblem as problem:
            await _send_problem(send, problem, path)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HttpProblem(413, "request body too large", f"this endpoint takes at most {limit} bytes")
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers.extend(item for item in SECURITY_HEADERS if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, secured_send)

    def _check_host(self, scope: Scope) -> None:
        if not self.loopback_only:
            return
        host = _header(scope, b"host") or ""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in LOOPBACK_NAMES and not name.startswith("127."):
            raise HttpProblem(421, "misdirected request",
                              "this server is bound to loopback and answers only to localhost or 127.0.0.1")

    def _check_origin(self, scope: Scope) -> None:
        if scope.get("method", "GET") not in UNSAFE_METHODS:
            return
        origin = _header(scope, b"origin")
        if origin is None:
            return  # not a browser page: API clients send no Origin
        origin = origin.rstrip("/")
        host = _header(scope, b"host") or ""
        own = f"{scope.get('scheme', 'http')}://{host}"
        if origin == own or origin in self.cors_origins:
            return
        parts = urlsplit(origin)
        shown = f"{parts.scheme}://{parts.netloc}" if parts.netloc else origin[:80]
        raise HttpProblem(403, "cross-origin request refused",
                          f"a page from {shown} may not call this server (add it to serve.cors_origins to allow it)")


async def _send_problem(send: Send, problem: HttpProblem, path: str) -> None:
    status, body, headers = problem_for(problem, path)
    raw = [(b"content-type", MEDIA_TYPE.encode()), *SECURITY_HEADERS]
    raw.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": encode(body)})


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client has gone (call once the body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_guarded(receive: Receive, work: Awaitable[T], timeout: float) -> T:
    """Await `work` under a deadline of `timeout` seconds; cancel it when the client
    disconnects (`ClientGone`) or the deadline passes (`DeadlineExceededError`)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if watcher in done:
            raise ClientGone()
        raise DeadlineExceededError(f"the request did not finish within {timeout:g} s (serve.request_timeout)")
    finally:
        if not task.done():  # the request itself was cancelled (server shutdown)
            task.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
