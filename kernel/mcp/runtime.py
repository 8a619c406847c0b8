"""The event loop MCP client sessions live on: one daemon thread per kernel, started when
the first server is needed.

A session belongs to the loop it was opened on (the SDK's task groups and streams), while
the kernel is called from whatever loop the application runs, or from none at all (a
function list read in sync code, `Kernel.run` opening a new loop per call). So sessions
live here, and callers reach them by handing coroutines over: `await runtime.call(...)`
from any loop (cancelling the caller cancels the request), `runtime.wait(...)` from sync
code (bounded by a timeout)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_numbers = itertools.count(1)


class Runtime:
    """A daemon thread running an asyncio loop, made on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, started),
                                          name=f"kernel-mcp-{next(_numbers)}", daemon=True)
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def on_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the runtime's loop and wait for it from the caller's loop;
        cancelling the caller cancels it there."""
        if self.on_thread():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def wait(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` there and block this thread until it ends (at most `timeout` s)."""
        if self.on_thread():
            coro.close()
            raise RuntimeError("the MCP runtime cannot wait for itself")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join the thread (what runs on it should have ended first)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)
