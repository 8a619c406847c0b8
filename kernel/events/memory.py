"""A sink that keeps events in memory: for tests, and for tools that look at one run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Event

__all__ = ["MemorySink"]


class MemorySink:
    """Every ended event, in the order they ended (`started`: in the order they began).
    Holds at most `limit` events (the oldest go first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.events: list[Event] = []
        self.started: list[Event] = []
        self.limit = limit

    def start(self, event: Event) -> None:
        self.started.append(event)
        if len(self.started) > self.limit:
            del self.started[: len(self.started) - self.limit]

    def end(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > self.limit:
            del self.events[: len(self.events) - self.limit]

    async def commit(self) -> None:
        """Nothing to make durable."""

    async def aclose(self) -> None:
        """Nothing to close: the events stay readable."""

    def of(self, kind: str) -> list[Event]:
        """The ended events of one kind."""
        return [e for e in self.events if e.kind == kind]

    def run(self, run_id: str) -> list[Event]:
        return [e for e in self.events if e.run_id == run_id]
