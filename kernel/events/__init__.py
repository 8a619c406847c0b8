"""One record of everything that happens: typed events, emitted once, with sinks.

    events    the typed events (function, prompt, model, tool, chat, plan, step, memory,
              embedding, error), linked by run id and parent id
    emitter   Emitter: builds events around the kernel's operations, hands them to sinks;
              attach / detach / configure (from the settings)
    journal   Journal: sink 1, every run in SQLite (WAL) or PostgreSQL, written in the
              background (bounded queue), masked, pruned
    store     the journal's schema, versioned with migrations; SQLite and PostgreSQL
    records   events as rows: plain JSON, secrets masked, content kept or dropped
    query     reading the journal: runs, one run's tree, stats, a plan run's state (resume)
    otel      OtelSink: sink 2, OpenTelemetry spans and metrics (GenAI semantic conventions)
    memory    MemorySink: events kept in a list (tests, tools)

While no sink is attached `kernel.events` is None and the kernel's hot path pays one
test. Nothing here imports sqlite3, psycopg or opentelemetry until a sink needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .emitter import Emitter, Sink, attach, configure, current_event, detach
    from .events import (
        ChatEvent,
        EmbeddingEvent,
        ErrorEvent,
        Event,
        FunctionEvent,
        MemoryEvent,
        MemoryIngestEvent,
        MemorySearchEvent,
        ModelEvent,
        PlanEvent,
        PromptEvent,
        StepEvent,
        ToolEvent,
    )
    from .journal import Journal
    from .memory import MemorySink
    from .otel import OtelSink
    from .query import JournalReader, PlanState, load_plan_state, local_time, open_reader, parse_since
    from .store import SCHEMA_VERSION, JournalStoreError, NoJournalError

__all__ = [
    "SCHEMA_VERSION",
    "ChatEvent",
    "EmbeddingEvent",
    "Emitter",
    "ErrorEvent",
    "Event",
    "FunctionEvent",
    "Journal",
    "JournalReader",
    "JournalStoreError",
    "MemoryEvent",
    "MemoryIngestEvent",
    "MemorySearchEvent",
    "MemorySink",
    "ModelEvent",
    "NoJournalError",
    "OtelSink",
    "PlanEvent",
    "PlanState",
    "PromptEvent",
    "Sink",
    "StepEvent",
    "ToolEvent",
    "attach",
    "configure",
    "current_event",
    "detach",
    "load_plan_state",
    "local_time",
    "open_reader",
    "parse_since",
]

_LOCATIONS = {
    **dict.fromkeys(("Emitter", "Sink", "attach", "configure", "current_event", "detach"), "emitter"),
    **dict.fromkeys(("ChatEvent", "EmbeddingEvent", "ErrorEvent", "Event", "FunctionEvent", "MemoryEvent",
                     "MemoryIngestEvent", "MemorySearchEvent", "ModelEvent", "PlanEvent", "PromptEvent", "StepEvent",
                     "ToolEvent"), "events"),
    "Journal": "journal",
    "MemorySink": "memory",
    "OtelSink": "otel",
    **dict.fromkeys(("JournalReader", "PlanState", "load_plan_state", "local_time", "open_reader", "parse_since"),
                    "query"),
    **dict.fromkeys(("SCHEMA_VERSION", "JournalStoreError", "NoJournalError"), "store"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
