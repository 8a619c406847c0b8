"""Sink 1: the journal, a local record of every run (SQLite, or PostgreSQL).

The hot path only appends the event to a bounded queue (a deque: no lock, no wake-up
unless the writer sleeps); a writer thread turns events into rows (masked, content kept
or dropped), writes them in batches, one transaction per batch, and prunes by age and
count (`journal_keep_days`, `journal_keep_runs`). A full queue drops the event and counts
it (`Journal.dropped`), except a plan's and its steps' (durable runs need them); nothing ever
waits for the disk, except `commit()`, which a plan
awaits so that a step's start is on disk before the step runs (durable runs), and
`aclose()`/`flush()`, which wait for everything queued.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..logging import LazyLogger
from .records import event_row, start_row
from .store import JournalStore, open_store

if TYPE_CHECKING:
    from ..settings import KernelSettings
    from .events import Event

__all__ = ["DEFAULT_PATH", "Journal"]

log = LazyLogger("kernel.events")

DEFAULT_PATH = Path(".kernel") / "journal.db"
"""Where the journal is kept unless `journal_path` says otherwise: beside the SQLite
store's `.kernel/memory.db`, relative to the working directory."""

_KEPT = ("plan", "step")
"""Kinds never dropped by a full queue: a resumed plan relies on them (a step whose start
was lost would run again even when it must not). There are few of them, and a plan waits
for each to be written."""
_PRUNE_EVERY = 500  # runs ended between two prunes
_BATCH = 2000  # events per transaction at most
_IDLE_POLL = 0.05  # seconds between looks at the queue while events keep coming


class _Barrier:
    """A point in the queue: everything before it is committed when it is reached."""

    __slots__ = ("future", "loop", "thread_event")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self.thread_event = threading.Event()

    def release(self) -> None:
        self.thread_event.set()
        future, loop = self.future, self.loop
        if future is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Journal:
    """The journal sink. `path` (SQLite) or `dsn` (PostgreSQL); `content=False` keeps
    only metadata (no prompt, argument or answer); `keep_days`/`keep_runs` prune old runs;
    `max_queue` bounds what waits for the writer."""

    def __init__(self, path: str | Path | None = None, *, dsn: str | None = None, content: bool = True,
                 keep_days: float | None = None, keep_runs: int | None = None, max_queue: int = 10_000) -> None:
        self.path = Path(path) if path is not None else (None if dsn else DEFAULT_PATH)
        self.dsn = dsn
        self.content = content
        self.keep_days = keep_days
        self.keep_runs = keep_runs
        self.max_queue = max_queue
        self.dropped = 0
        """Events dropped because the queue was full."""
        self.written = 0
        """Events written so far (ended; a run's start row is not counted)."""
        self.failures = 0
        """Batches the database refused (logged; their events are lost)."""
        self._closing = False
        self._fresh()
        _JOURNALS.add(self)

    def _fresh(self) -> None:
        """The writer's state, as new (also in a forked child: the parent's thread, its
        queue and its connection are the parent's; the child writes its own events)."""
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ended_runs = 0
        self._opened: set[str] = set()  # events whose start row is written and whose end is not

    @classmethod
    def from_settings(cls, settings: KernelSettings) -> Journal:
        dsn = settings.journal_dsn.get_secret_value() if settings.journal_dsn is not None else None
        return cls(None if dsn else settings.journal_path, dsn=dsn, content=settings.journal_content,
                   keep_days=settings.journal_keep_days, keep_runs=settings.journal_keep_runs,
                   max_queue=settings.journal_queue_size)

    @property
    def where(self) -> str:
        from ..logging import mask_text

        return mask_text(self.dsn) if self.dsn else str(self.path)

    # -- the sink (hot path) -----------------------------------------------------------------

    def start(self, event: Event) -> None:
        if event.parent is None or event.kind in ("plan", "step"):
            self._put(("start", event))

    def end(self, event: Event) -> None:
        self._put(("end", event))

    def _put(self, item: Any) -> None:
        queue = self._queue
        if (len(queue) >= self.max_queue and item[1].kind not in _KEPT) or self._closing:
            self.dropped += 1
            return
        queue.append(item)
        if self._idle:
            if self._thread is None:
                self._start_thread()
            self._wake.set()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="kernel-journal", daemon=True)
            self._thread.start()
            atexit.register(_flush_at_exit, weakref.ref(self))

    # -- barriers ------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Wait until every event queued so far is committed (without blocking the loop)."""
        if self._thread is None and not self._queue:
            return
        barrier = _Barrier(asyncio.get_running_loop())
        self._queue.append(barrier)  # never dropped: a barrier is no event
        if self._thread is None:
            self._start_thread()
        self._wake.set()
        assert barrier.future is not None
        await barrier.future

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait (blocking) until everything queued is written; False on timeout."""
        if self._thread is None:
            return not self._queue
        barrier = _Barrier(None)
        self._queue.append(barrier)
        self._wake.set()
        return barrier.thread_event.wait(timeout)

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None and self._thread.is_alive():
            await self.commit()
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout)

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        store: JournalStore | None = None
        try:
            store = open_store(self.path, self.dsn)
            if self.keep_days is not None or self.keep_runs is not None:
                store.prune(self.keep_days, self.keep_runs)
        except Exception as exc:
            log.warning("journal_unavailable", where=self.where, error=f"{type(exc).__name__}: {exc}")
            if store is not None:
                store.close()
            store = None
        try:
            self._loop(store)
        finally:
            if store is not None:
                store.close()

    def _loop(self, store: JournalStore | None) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._idle = True
                if not queue:  # an event appended before `_idle` was set is seen here
                    self._wake.wait()
                self._wake.clear()
                self._idle = False
                continue
            batch: list[Any] = []
            while queue and len(batch) < _BATCH:
                batch.append(queue.popleft())
            self._write(store, batch)
            if not queue and not self._closing:  # let the next events gather: fewer, larger transactions
                self._wake.wait(_IDLE_POLL)  # (a barrier or close() ends the wait at once)
                self._wake.clear()

    def _write(self, store: JournalStore | None, batch: list[Any]) -> None:
        barriers = [item for item in batch if isinstance(item, _Barrier)]
        items = [item for item in batch if not isinstance(item, _Barrier)]
        if store is None:
            self.dropped += len(items)
        elif items:
            try:
                self._store(store, items)
                self.written += sum(1 for phase, _ in items if phase == "end")
            except Exception as exc:
                self.failures += 1
                self.dropped += len(items)
                log.warning("journal_write_failed", where=self.where, events=len(items),
                            error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    store.rollback()
        for barrier in barriers:
            barrier.release()

    def _store(self, store: JournalStore, items: list[Any]) -> None:
        """One transaction. A start row is written only for an event still running at the
        end of the batch (a run, a plan, a step): most events arrive whole, in one row."""
        ended = {id(event) for phase, event in items if phase == "end"}
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        texts: list[tuple[str, str, str]] = []
        opened = self._opened
        for phase, event in items:
            if phase == "start":
                if id(event) not in ended:
                    updates.append(start_row(event, self.content))
                    opened.add(event.id)
                continue
            found: list[str] = []
            row = event_row(event, self.content, found)
            if event.id in opened:
                opened.discard(event.id)
                updates.append(row)
            else:
                inserts.append(row)
            if event.error:
                found.append(row[17])
            if found:
                texts.append(("\n".join(found), event.id, event.run_id))
            if event.parent is None:
                self._ended_runs += 1
        store.write_events(inserts, texts, updates)
        store.commit()
        if self._ended_runs >= _PRUNE_EVERY and (self.keep_days is not None or self.keep_runs is not None):
            self._ended_runs = 0
            store.prune(self.keep_days, self.keep_runs)


_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _after_fork() -> None:
    for journal in list(_JOURNALS):
        journal._fresh()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _flush_at_exit(ref: weakref.ref[Journal]) -> None:
    """At interpreter exit, what an application left queued is still written."""
    journal = ref()
    if journal is not None and journal._thread is not None and journal._thread.is_alive():
        journal.flush(5.0)
        journal.close(5.0)
