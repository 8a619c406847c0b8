"""Reading the journal: recent runs (filtered), one run as a tree, usage stats, and the
state of a plan run for `execute_plan(..., resume=RUN)`.

Readers open their own connection (SQLite readers never wait for the writer: WAL).
A run is named by its id, any unique prefix of it, or `last`.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import JournalStore, JournalStoreError, open_store

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..settings import KernelSettings

__all__ = ["JournalReader", "PlanState", "load_plan_state", "local_time", "open_reader", "parse_since"]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """`30m`, `2h`, `7d`, `1w` (ago), or an ISO date or date-time: seconds since the epoch."""
    match = _SPAN.match(text)
    if match:
        return time.time() - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad --since {text!r}: expected 30m, 2h, 7d, 1w or a date (2026-01-31)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a local time, as written
    return moment.timestamp()


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class JournalReader:
    """Queries over one journal."""

    def __init__(self, store: JournalStore) -> None:
        self.store = store

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------

    def runs(self, *, limit: int = 20, function: str | None = None, service: str | None = None,
             since: float | None = None, status: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
        """The most recent runs first, filtered: `function` (a name or `plugin.*`, any
        function of the run), `service` (any model call of the run), `since` (epoch
        seconds), `status` (ok, error, cancelled, running), `text` (full-text, anywhere in
        the run's prompts, answers, arguments and errors)."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("started >= ?")
            params.append(since)
        if status:
            where.append("status = ?")
            params.append(status)
        if service:
            where.append("(service = ? OR EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id AND e.service = ?))")
            params += [service, service]
        if function:
            where.append("EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id AND e.kind = 'function' "
                         "AND e.name LIKE ? ESCAPE '\\')")
            params.append(_like(function))
        if text:
            where.append(f"id IN ({self._text_query()})")
            params.append(self._text_param(text))
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started DESC LIMIT ?"
        params.append(limit)
        return self.store.query(sql, params)

    def _text_query(self) -> str:
        if self.store.dialect == "postgres":
            return "SELECT run_id FROM events_text WHERE tsv @@ plainto_tsquery('simple', ?)"
        if self.store.fts:
            return "SELECT run_id FROM events_text WHERE events_text MATCH ?"
        return "SELECT run_id FROM events_text WHERE body LIKE ? ESCAPE '\\'"

    def _text_param(self, text: str) -> str:
        if self.store.dialect == "postgres":
            return text
        if self.store.fts:  # every word must appear (prefixes too); FTS syntax is not exposed
            return " ".join('"' + word.replace('"', '""') + '"*' for word in text.split()) or '""'
        return "%" + _like(text) + "%"

    def resolve(self, run: str | None) -> str:
        """The full id of `run` (an id, a unique prefix, `last` or None: the latest run)."""
        if run is None or run == "last":
            rows = self.store.query("SELECT id FROM runs ORDER BY started DESC LIMIT 1")
            if not rows:
                raise LookupError("no run journaled yet")
            return str(rows[0]["id"])
        rows = self.store.query("SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY started DESC LIMIT 5",
                                (_like(run) + "%",))
        if not rows:
            plans = self.store.query("SELECT run_id FROM events WHERE id = ?", (run,))
            if plans:
                return str(plans[0]["run_id"])
            raise LookupError(f"no run {run!r} in the journal")
        exact = [r for r in rows if r["id"] == run]
        if len(rows) > 1 and not exact:
            raise LookupError(f"{run!r} names {len(rows)} runs ({', '.join(r['id'] for r in rows)}); give more of it")
        return str(rows[0]["id"])

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.store.query("SELECT * FROM runs WHERE id = ?", (run_id,))
        return rows[0] if rows else None

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of the run, in the order they started, `data` parsed."""
        rows = self.store.query("SELECT * FROM events WHERE run_id = ? ORDER BY started, id", (run_id,))
        for row in rows:
            try:
                row["data"] = json.loads(row["data"] or "{}")
            except ValueError:
                row["data"] = {}
        return rows

    def tree(self, run_id: str) -> dict[str, Any]:
        """The run with its events nested: each event's `children`, in order."""
        run = self.run(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} in the journal")
        events = self.events(run_id)
        by_id = {e["id"]: {**e, "children": []} for e in events}
        roots: list[dict[str, Any]] = []
        for event in by_id.values():
            parent = by_id.get(event["parent_id"]) if event["parent_id"] else None
            (parent["children"] if parent is not None else roots).append(event)
        return {**run, "events": roots}

    def conversation(self, run: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        """The conversation of chat run `run` (an id, a prefix; None or `last`: the latest
        chat turn that ended ok) as its last model call saw it, then that call's answer:
        what continuing the chat sends next (`kernel chat --continue`). Secrets in it are
        masked, as everything in the journal."""
        if run is None or run == "last":
            rows = self.store.query("SELECT id FROM runs WHERE kind = 'chat' AND status = 'ok' "
                                    "ORDER BY started DESC LIMIT 1")
            if not rows:
                raise LookupError("no chat in the journal to continue")
            run_id = str(rows[0]["id"])
        else:
            run_id = self.resolve(run)
        calls = [e for e in self.events(run_id) if e["kind"] == "model" and e["status"] == "ok"]
        if not calls:
            raise LookupError(f"run {run_id} made no model call that answered: no conversation to continue")
        data = calls[-1]["data"]
        if "messages" not in data:
            raise LookupError(f"run {run_id} was journaled without content (journal_content = false, or "
                              "journal_exclude): its messages were not kept")
        answer: dict[str, Any] = {"role": "assistant", "content": data.get("text") or ""}
        calls_made = [c for c in data.get("tool_calls") or [] if isinstance(c, dict)]
        if calls_made:
            answer["tool_calls"] = calls_made
        return run_id, [*data["messages"], answer]

    # -- stats -------------------------------------------------------------------------------------

    def stats(self, by: str, *, since: float | None = None) -> list[dict[str, Any]]:
        """Model calls, tokens and cost grouped `by` service, function or day (UTC)."""
        keys = {
            "service": "coalesce(service, '-')",
            "function": "coalesce(function, (SELECT r.name FROM runs r WHERE r.id = events.run_id), '-')",
            "day": ("to_char(to_timestamp(started) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
                    if self.store.dialect == "postgres" else "date(started, 'unixepoch')"),
        }
        if by not in keys:
            raise ValueError(f"stats by {by!r}: expected service, function or day")
        sql = (f"SELECT {keys[by]} AS key, count(*) AS calls, coalesce(sum(input_tokens), 0) AS input_tokens, "
               "coalesce(sum(output_tokens), 0) AS output_tokens, sum(cost) AS cost, min(priced) AS priced, "
               "sum(duration) AS duration FROM events WHERE kind = 'model'")
        params: list[Any] = []
        if since is not None:
            sql += " AND started >= ?"
            params.append(since)
        sql += f" GROUP BY {keys[by]} ORDER BY " + ("key DESC" if by == "day" else "calls DESC, key")
        rows = self.store.query(sql, params)
        for row in rows:
            row["priced"] = bool(row["priced"])
            if not row["priced"]:
                row["cost"] = None  # one unpriced call: the total is unknown
        return rows


def open_reader(settings: KernelSettings | None = None, *, path: str | Path | None = None,
                dsn: str | None = None) -> JournalReader:
    """A reader of the journal the settings name (or of `path` / `dsn`)."""
    if path is None and dsn is None and settings is not None:
        dsn = settings.journal_dsn.get_secret_value() if settings.journal_dsn is not None else None
        path = settings.journal_path
    if dsn is None and path is None:
        from .journal import DEFAULT_PATH

        path = DEFAULT_PATH
    return JournalReader(open_store(path, dsn, create=False))


# --- durable runs -------------------------------------------------------------------------------


@dataclass(slots=True)
class PlanState:
    """What the journal holds of a plan run: the plan, its inputs, the steps done (with
    their outputs), those that were running when it stopped, and those that failed."""

    run_id: str
    status: str
    plan: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, str] = field(default_factory=dict)  # step id -> function
    failed: dict[str, str] = field(default_factory=dict)  # step id -> error
    content: bool = True  # False: journaled without content, outputs unknown
    pid: int | None = None
    host: str | None = None

    @property
    def alive(self) -> bool:
        """Whether the process that ran it is still running (this host only)."""
        if self.status != "running" or self.pid is None or self.host != _host():
            return False
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""


def read_plan_state(reader: JournalReader, run: str) -> PlanState:
    run_id = reader.resolve(run)
    events = reader.events(run_id)
    plans = [e for e in events if e["kind"] == "plan"]
    if not plans:
        raise LookupError(f"run {run_id} is not a plan run")
    plan = next((p for p in plans if p["id"] == run), plans[0])
    data = plan["data"]
    state = PlanState(run_id, plan["status"], data.get("plan") or {}, data.get("inputs") or {},
                      content="inputs" in data or "content" not in data, pid=data.get("pid"), host=data.get("host"))
    for step in (e for e in events if e["kind"] == "step" and e["parent_id"] == plan["id"]):
        info = step["data"]
        step_id = str(info.get("step"))
        if step["status"] == "ok":
            if "output" not in info:
                state.content = False
            state.outputs[step_id] = info.get("output")
            state.in_flight.pop(step_id, None)
            state.failed.pop(step_id, None)
        elif step_id not in state.outputs:
            if step["status"] in ("running", "cancelled"):  # it may have taken effect
                state.in_flight[step_id] = step["name"]
            else:
                state.failed[step_id] = step["error"] or "failed"
    return state


async def load_plan_state(kernel: Kernel, run: str) -> PlanState:
    """The journaled state of plan run `run` (its id, a prefix or `last`), for resuming it.
    What this kernel still has queued is written first."""
    import asyncio

    journal = None
    if kernel.events is not None:
        await kernel.events.commit()
        from .journal import Journal

        journal = kernel.events.sink(Journal)

    def read() -> PlanState:
        if journal is not None:
            reader = JournalReader(open_store(journal.path, journal.dsn, create=False))
        else:
            reader = open_reader(kernel.settings)
        with reader:
            return read_plan_state(reader, run)

    try:
        return await asyncio.to_thread(read)
    except JournalStoreError as exc:
        raise LookupError(f"cannot resume {run!r}: {exc}") from None


def local_time(seconds: float | None) -> str:
    """`2026-01-31 12:00:03` (local time) of epoch seconds."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
