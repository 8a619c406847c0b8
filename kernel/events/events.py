"""The typed events: one per top-level invocation, function invoke, prompt render, model
call, tool call, chat turn, plan, plan step, memory search or ingest, embedding call, and
error; linked by `run_id` (the id of the run's root event) and `parent_id`.

An event is built when its operation starts and completed in place when it ends
(`status`, `duration`, results); sinks see it at both moments. Events are plain slotted
objects: building one costs about a microsecond, and nothing is serialized on the hot
path (the journal does that in its own thread).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from ..contents import Usage

if TYPE_CHECKING:
    from .emitter import Emitter

__all__ = [
    "ChatEvent",
    "EmbeddingEvent",
    "ErrorEvent",
    "Event",
    "FunctionEvent",
    "Kind",
    "MemoryEvent",
    "MemoryIngestEvent",
    "MemorySearchEvent",
    "ModelEvent",
    "PlanEvent",
    "PromptEvent",
    "Status",
    "StepEvent",
    "ToolEvent",
    "new_id",
    "now",
]

Kind = Literal["function", "prompt", "model", "tool", "chat", "plan", "step", "memory_search", "memory_ingest",
               "embedding", "error"]
Status = Literal["running", "ok", "error", "cancelled"]

_EPOCH = time.time() - time.perf_counter()
"""Wall-clock time of perf_counter's zero: one clock read gives both a timestamp and a
duration origin."""


def now() -> float:
    """Seconds since the epoch, on the monotonic clock's tick."""
    return _EPOCH + time.perf_counter()


def _prefix() -> str:
    return f"{int(time.time()) & 0xFFFFFF:06x}{os.urandom(3).hex()}"


_PREFIX = _prefix()
_COUNTER: Iterator[int] = itertools.count(1)


def _reseed() -> None:  # a forked child must not reuse its parent's ids
    global _PREFIX, _COUNTER
    _PREFIX, _COUNTER = _prefix(), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A short id, unique across processes: 12 hex digits of process prefix (start time
    and randomness), then a counter. Ids of one process sort in creation order."""
    return f"{_PREFIX}{next(_COUNTER):05x}"


class Event:
    """What every event carries. `content` is False when the event's prompts, arguments
    and answers must not be kept (`journal_content = false`, or a function excluded);
    sinks then record only metadata. `usage` and `cost` cover the event's own model calls
    and those below it; `cost` None means unpriced (or not a model matter)."""

    __slots__ = (
        "content",
        "cost",
        "duration",
        "emitter",
        "error",
        "error_type",
        "function",
        "id",
        "model",
        "name",
        "parent",
        "parent_id",
        "priced",
        "root",
        "run_id",
        "service",
        "started",
        "status",
        "usage",
    )

    kind: Kind = "function"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *,
                 content: bool = True) -> None:
        self.id = new_id()
        self.name = name
        self.parent = parent
        self.emitter = emitter
        if parent is None:
            self.parent_id = None
            self.run_id = self.id
            self.root: Event = self
            self.function: str | None = None
            self.content = content
        else:
            self.parent_id = parent.id
            self.run_id = parent.run_id
            self.root = parent.root
            self.function = parent.function
            self.content = content and parent.content
            if emitter is None:
                self.emitter = parent.emitter
        self.started = now()
        self.status: Status = "running"
        self.duration: float | None = None
        self.error: str | None = None
        self.error_type: str | None = None
        self.service: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.cost: float | None = None
        self.priced = True

    # -- completion ----------------------------------------------------------------------

    def close(self, status: Status = "ok") -> None:
        self.status = status
        self.duration = now() - self.started

    def add_usage(self, usage: Usage, cost: float | None) -> None:
        """A model call below this event (or its own): tokens and cost add up; one
        unpriced call makes the total unpriced for good."""
        if self.usage is None:
            self.usage = Usage()
        self.usage.add(usage)
        if cost is None:
            self.priced = False
            self.cost = None
        elif self.priced:
            self.cost = (self.cost or 0.0) + cost

    def retried(self, service: str, attempt: int, delay: float, error: str) -> None:
        """A retry of the call this event describes (model and embedding calls)."""

    def fell_back(self, service: str, following: str, reason: str) -> None:
        """A fallback to the next service of the chain (model and embedding calls)."""

    def data(self) -> dict[str, Any]:
        """The kind's own fields, for sinks (content included; the journal drops it when
        `content` is False)."""
        return {}

    def content_data(self) -> dict[str, Any]:
        """The fields that are content (prompts, arguments, answers), dropped when
        `content` is False."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.id} {self.status}>"


class FunctionEvent(Event):
    """A function invocation (`Kernel.invoke`, `invoke_stream`, a nested call)."""

    __slots__ = ("arguments", "entering", "result", "streamed")
    kind: Kind = "function"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *,
                 arguments: dict[str, Any] | None = None, content: bool = True) -> None:
        super().__init__(name, parent, emitter, content=content)
        self.function = name
        self.arguments = arguments
        self.result: Any = None
        self.entering = True  # the next Kernel.invoke in this context runs the function itself
        self.streamed = False

    def content_data(self) -> dict[str, Any]:
        return {"arguments": self.arguments, "result": self.result}

    def data(self) -> dict[str, Any]:
        return {"streamed": self.streamed} if self.streamed else {}


class PromptEvent(Event):
    """A prompt function's template rendered to chat messages."""

    __slots__ = ("messages",)
    kind: Kind = "prompt"

    def __init__(self, name: str, parent: Event | None) -> None:
        super().__init__(name, parent)
        self.messages: list[Any] = []

    def content_data(self) -> dict[str, Any]:
        return {"messages": self.messages}

    def data(self) -> dict[str, Any]:
        return {"message_count": len(self.messages)}


class _CallEvent(Event):
    """A call through the resilience layer: its retries and the fallback taken."""

    __slots__ = ("failures", "fallback", "provider", "retries")

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None) -> None:
        super().__init__(name, parent, emitter)
        self.provider: str | None = None
        self.retries = 0
        self.fallback: str | None = None
        self.failures: list[str] = []

    def retried(self, service: str, attempt: int, delay: float, error: str) -> None:
        self.retries += 1
        self.failures.append(f"{service}: attempt {attempt}: {error}; retried after {delay:.3f} s")

    def fell_back(self, service: str, following: str, reason: str) -> None:
        self.fallback = following
        self.failures.append(f"{service}: {reason}; fell back to {following}")

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"provider": self.provider, "retries": self.retries}
        if self.fallback is not None:
            data["fallback"] = self.fallback
        if self.failures:
            data["failures"] = self.failures
        return data


class ModelEvent(_CallEvent):
    """One chat call: request (service, model, settings, messages, tools), response (text,
    tool calls, finish reason, usage, cost or unpriced), latency, retries, fallback."""

    __slots__ = ("finish_reason", "messages", "response_model", "settings", "streamed", "text", "tool_calls",
                 "tools")
    kind: Kind = "model"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None) -> None:
        super().__init__(name, parent, emitter)
        self.settings: dict[str, Any] = {}
        self.messages: list[Any] = []
        self.tools: list[str] = []
        self.text = ""
        self.tool_calls: list[Any] = []
        self.finish_reason: str | None = None
        self.response_model: str | None = None
        self.streamed = False

    def content_data(self) -> dict[str, Any]:
        return {"messages": self.messages, "text": self.text, "tool_calls": self.tool_calls}

    def data(self) -> dict[str, Any]:
        return {**super().data(), "settings": self.settings, "tools": self.tools, "finish_reason": self.finish_reason,
                "response_model": self.response_model, "streamed": self.streamed,
                "tool_call_count": len(self.tool_calls), "priced": self.priced}


class EmbeddingEvent(_CallEvent):
    """One embedding call: how many texts, the dimension returned."""

    __slots__ = ("dimension", "texts")
    kind: Kind = "embedding"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *, texts: int = 0) -> None:
        super().__init__(name, parent, emitter)
        self.texts = texts
        self.dimension: int | None = None

    def data(self) -> dict[str, Any]:
        return {**super().data(), "texts": self.texts, "dimension": self.dimension}


class ToolEvent(Event):
    """A tool call the model asked for: its id, arguments, result, and whether the model
    got an error."""

    __slots__ = ("arguments", "call_id", "is_error", "result", "round")
    kind: Kind = "tool"

    def __init__(self, name: str, parent: Event | None, *, call_id: str, arguments: str, round: int,
                 content: bool = True) -> None:
        super().__init__(name, parent, content=content)
        self.call_id = call_id
        self.arguments = arguments
        self.round = round
        self.result = ""
        self.is_error = False

    def content_data(self) -> dict[str, Any]:
        return {"arguments": self.arguments, "result": self.result}

    def data(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "round": self.round, "is_error": self.is_error}


class ChatEvent(Event):
    """A chat turn with automatic function calling (`Kernel.chat`, a prompt function
    offering tools): rounds, calls, why it stopped."""

    __slots__ = ("messages", "rounds", "stop_reason", "text", "tools")
    kind: Kind = "chat"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None) -> None:
        super().__init__(name, parent, emitter)
        self.messages: list[Any] = []
        self.tools: list[str] = []
        self.text = ""
        self.rounds = 0
        self.stop_reason: str | None = None

    def content_data(self) -> dict[str, Any]:
        return {"messages": self.messages, "text": self.text}

    def data(self) -> dict[str, Any]:
        return {"tools": self.tools, "rounds": self.rounds, "stop_reason": self.stop_reason}


class PlanEvent(Event):
    """A plan run: the plan itself (steps), its inputs and result, which run it resumes."""

    __slots__ = ("host", "inputs", "pid", "plan", "result", "resumes")
    kind: Kind = "plan"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *,
                 plan: dict[str, Any], inputs: dict[str, Any], resumes: str | None = None) -> None:
        super().__init__(name, parent, emitter)
        self.plan = plan
        self.inputs = inputs
        self.resumes = resumes
        self.result: Any = None
        self.pid = os.getpid()
        self.host = os.uname().nodename if hasattr(os, "uname") else ""

    def content_data(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "result": self.result}

    def data(self) -> dict[str, Any]:
        return {"plan": self.plan, "resumes": self.resumes, "pid": self.pid, "host": self.host}


class StepEvent(Event):
    """A plan step: its function, resolved arguments and output. `carried` marks a step
    done in the run this one resumes (not run again)."""

    __slots__ = ("arguments", "call_id", "carried", "idempotent", "output", "step")
    kind: Kind = "step"

    def __init__(self, name: str, parent: Event | None, *, step: str, arguments: dict[str, Any],
                 idempotent: bool, carried: bool = False, content: bool = True) -> None:
        super().__init__(name, parent, content=content)
        self.step = step
        self.call_id = f"plan-step-{step}"
        self.arguments = arguments
        self.idempotent = idempotent
        self.carried = carried
        self.output: Any = None

    def content_data(self) -> dict[str, Any]:
        return {"arguments": self.arguments, "output": self.output}

    def data(self) -> dict[str, Any]:
        return {"step": self.step, "idempotent": self.idempotent, "carried": self.carried}


class MemoryEvent(Event):
    """A memory operation on one collection of a store."""

    __slots__ = ("collection", "store")

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *, collection: str) -> None:
        super().__init__(name, parent, emitter)
        self.collection = collection
        self.store: str | None = None


class MemorySearchEvent(MemoryEvent):
    """A memory search: collection, query, k, mode, the hits (their ids and scores)."""

    __slots__ = ("hits", "k", "mode", "query")
    kind: Kind = "memory_search"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *, collection: str,
                 query: str, k: int, mode: str) -> None:
        super().__init__(name, parent, emitter, collection=collection)
        self.query = query
        self.k = k
        self.mode = mode
        self.hits: list[Any] = []

    def content_data(self) -> dict[str, Any]:
        return {"query": self.query, "hits": self.hits}

    def data(self) -> dict[str, Any]:
        return {"collection": self.collection, "k": self.k, "mode": self.mode, "hit_count": len(self.hits),
                "store": self.store}


class MemoryIngestEvent(MemoryEvent):
    """A memory ingest: collection, files, chunks added, skipped and removed."""

    __slots__ = ("counts",)
    kind: Kind = "memory_ingest"

    def __init__(self, name: str, parent: Event | None, emitter: Emitter | None = None, *, collection: str) -> None:
        super().__init__(name, parent, emitter, collection=collection)
        self.counts: dict[str, Any] = {}

    def data(self) -> dict[str, Any]:
        return {"collection": self.collection, "store": self.store, **self.counts}


class ErrorEvent(Event):
    """An error where it happened: the exception type and its (masked) message. Also a
    tool call answered with an error."""

    __slots__ = ()
    kind: Kind = "error"

    def __init__(self, error_type: str, message: str, parent: Event) -> None:
        super().__init__(error_type, parent)
        self.error_type = error_type
        self.error = message
        self.status = "error"
        self.duration = 0.0
