"""Where the journal lives: SQLite (WAL) by default, PostgreSQL when `journal_dsn` is set.
One schema for both, versioned: `schema_version` holds the version, `MIGRATIONS` bring any
older database to the current one in place (a database newer than this code is refused).

    events       every event of every run, linked by run_id and parent_id; `data` is JSON
    runs         a view: the root event of each run (kind, name, status, service, model,
                 tokens, cost, duration); one write per event, none per run
    events_text  the searchable text of each event (SQLite FTS5; PostgreSQL tsvector)

Connections are made and used in one thread (the journal's writer, or a reader); SQL is
written with `?` placeholders and turned into psycopg's `%s` for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, KernelError

__all__ = ["SCHEMA_VERSION", "JournalStore", "JournalStoreError", "NoJournalError", "open_store"]

SCHEMA_VERSION = 2


class JournalStoreError(KernelError):
    """The journal cannot be opened, migrated or read."""


class NoJournalError(JournalStoreError):
    """There is no journal to read yet (nothing was journaled where the settings point)."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"no journal at {where} (nothing journaled yet)")


_V1 = [
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, started DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION, status TEXT NOT NULL, service TEXT, model TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION, error TEXT)""",
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, parent_id TEXT, kind TEXT NOT NULL, name TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL, duration DOUBLE PRECISION, status TEXT NOT NULL, service TEXT,
        model TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION, error TEXT, data TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX IF NOT EXISTS events_run ON events (run_id)",
    "CREATE INDEX IF NOT EXISTS runs_started ON runs (started)",
]
"""Version 1: runs and events."""

_V2 = [
    "ALTER TABLE events ADD COLUMN function TEXT",
    "ALTER TABLE events ADD COLUMN error_type TEXT",
    "ALTER TABLE events ADD COLUMN priced INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE events ADD COLUMN requests INTEGER NOT NULL DEFAULT 0",
    "UPDATE events SET function = name WHERE kind = 'function'",
    "UPDATE events SET priced = CASE WHEN cost IS NULL AND kind = 'model' THEN 0 ELSE 1 END",
    "UPDATE events SET requests = CASE WHEN kind = 'model' THEN 1 ELSE 0 END",
    # a run's model calls, tokens and cost are its root event's (v1 kept them in `runs` too)
    """UPDATE events SET requests = (SELECT count(*) FROM events m WHERE m.run_id = events.id AND m.kind = 'model'),
        priced = (SELECT coalesce(min(CASE WHEN m.cost IS NULL THEN 0 ELSE 1 END), 1) FROM events m
                  WHERE m.run_id = events.id AND m.kind = 'model')
        WHERE parent_id IS NULL AND kind <> 'model'""",
    "DROP INDEX IF EXISTS runs_started",
    "DROP TABLE runs",
    """CREATE VIEW runs AS SELECT id, kind, name, started, duration, status, service, model, input_tokens,
        output_tokens, cost, priced, requests, error FROM events WHERE parent_id IS NULL""",
    "CREATE INDEX IF NOT EXISTS events_roots ON events (started) WHERE parent_id IS NULL",
    "CREATE INDEX IF NOT EXISTS events_models ON events (started) WHERE kind = 'model'",
]
"""Version 2: `runs` becomes a view over the root events (half the writes); whether a
cost is known (an unpriced call is never a zero cost), model calls per event, the
function an event belongs to, error types; and full-text search (`events_text`, filled
from the events already journaled)."""

_SQLITE_TEXT = ("CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5("
                "body, event_id UNINDEXED, run_id UNINDEXED, tokenize = 'unicode61')")
_SQLITE_TEXT_PLAIN = "CREATE TABLE IF NOT EXISTS events_text (body TEXT, event_id TEXT, run_id TEXT)"
_POSTGRES_TEXT = [
    """CREATE TABLE IF NOT EXISTS events_text (event_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, body TEXT NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)""",
    "CREATE INDEX IF NOT EXISTS events_text_tsv ON events_text USING gin (tsv)",
    "CREATE INDEX IF NOT EXISTS events_text_run ON events_text (run_id)",
]

EVENT_COLUMNS = ("id", "run_id", "parent_id", "kind", "name", "function", "started", "duration", "status", "service",
                 "model", "input_tokens", "output_tokens", "cost", "priced", "requests", "error_type", "error", "data")


def text_of(data: Any) -> str:
    """The searchable text of an event's data: every string in it, one per line."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value:
                out.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return "\n".join(out)


class JournalStore:
    """One connection to the journal's database, made in the thread that uses it."""

    def __init__(self, dialect: str, connection: Any, where: str) -> None:
        self.dialect = dialect
        self.conn = connection
        self.where = where
        self.fts = True

    # -- SQL -------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self.sql(statement), params)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect == "postgres":
            with self.conn.cursor() as cursor:
                cursor.executemany(self.sql(statement), rows)
        else:
            self.conn.executemany(statement, rows)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.execute(statement, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing must not raise on the way out
            self.conn.close()

    # -- schema ----------------------------------------------------------------------------

    def version(self) -> int:
        exists = ("SELECT to_regclass('schema_version') IS NOT NULL" if self.dialect == "postgres"
                  else "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'")
        if not self.execute(exists).fetchone()[0]:
            return 0
        row = self.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> int:
        """Bring the database to SCHEMA_VERSION, in one transaction that holds a lock
        (two processes opening a new journal at once migrate it once); returns the version
        it had."""
        if self.dialect == "postgres":
            self.execute("SELECT pg_advisory_xact_lock(7242651)")
        else:
            self.execute("BEGIN IMMEDIATE")
        try:
            found = self.version()
            if found > SCHEMA_VERSION:
                raise JournalStoreError(
                    f"the journal at {self.where} has schema version {found}, newer than this kernel's "
                    f"({SCHEMA_VERSION}); upgrade orchestration-kernel or point journal_path elsewhere")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](self)
                self.execute("DELETE FROM schema_version")
                self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        self.fts = self._has_fts()
        return found

    def _has_fts(self) -> bool:
        if self.dialect == "postgres":
            return True
        row = self.execute("SELECT sql FROM sqlite_master WHERE name = 'events_text'").fetchone()
        return bool(row and "fts5" in (row[0] or "").lower())

    # -- writes ------------------------------------------------------------------------------

    def write_events(self, rows: list[tuple[Any, ...]], texts: list[tuple[str, str, str]],
                     updates: list[tuple[Any, ...]] | None = None) -> None:
        """Insert `rows`, insert or update `updates` (events whose start row is there)."""
        columns = ", ".join(EVENT_COLUMNS)
        insert = f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        self.executemany(insert, rows)
        if updates:
            changes = ", ".join(f"{c} = excluded.{c}" for c in EVENT_COLUMNS[1:])
            self.executemany(f"{insert} ON CONFLICT (id) DO UPDATE SET {changes}", updates)
        if texts:
            if self.dialect == "postgres":
                self.executemany("INSERT INTO events_text (body, event_id, run_id) VALUES (?, ?, ?) "
                                 "ON CONFLICT (event_id) DO UPDATE SET body = excluded.body", texts)
            else:
                self.executemany("INSERT INTO events_text (body, event_id, run_id) VALUES (?, ?, ?)", texts)

    def prune(self, keep_days: float | None, keep_runs: int | None) -> int:
        """Delete runs older than `keep_days`, and beyond the newest `keep_runs`; returns
        how many runs went."""
        doomed: list[str] = []
        if keep_days is not None:
            cutoff = time.time() - keep_days * 86400
            doomed += [r["id"] for r in self.query("SELECT id FROM runs WHERE started < ?", (cutoff,))]
        if keep_runs is not None:
            doomed += [r["id"] for r in self.query(
                "SELECT id FROM runs ORDER BY started DESC LIMIT -1 OFFSET ?" if self.dialect == "sqlite"
                else "SELECT id FROM runs ORDER BY started DESC OFFSET ?", (keep_runs,))]
        doomed = list(dict.fromkeys(doomed))
        for start in range(0, len(doomed), 500):
            chunk = doomed[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            self.execute(f"DELETE FROM events_text WHERE run_id IN ({marks})", chunk)
            self.execute(f"DELETE FROM events WHERE run_id IN ({marks})", chunk)
        self.commit()
        return len(doomed)


def _to_v1(store: JournalStore) -> None:
    for statement in _V1:
        store.execute(statement)


def _to_v2(store: JournalStore) -> None:
    for statement in _V2:
        store.execute(statement)
    if store.dialect == "postgres":
        for statement in _POSTGRES_TEXT:
            store.execute(statement)
    else:
        try:
            store.execute(_SQLITE_TEXT)
        except Exception:  # an SQLite built without FTS5: plain text, searched with LIKE
            store.execute(_SQLITE_TEXT_PLAIN)
    rows = store.query("SELECT id, run_id, data FROM events")
    texts = []
    for row in rows:
        try:
            body = text_of(json.loads(row["data"] or "{}"))
        except ValueError:
            body = ""
        if body:
            texts.append((body, row["id"], row["run_id"]))
    store.write_events([], texts)


MIGRATIONS: dict[int, Callable[[JournalStore], None]] = {1: _to_v1, 2: _to_v2}
"""Version -> the step that brings a database of the version before it there."""


def _create_private(target: Path) -> None:
    """A new journal file readable by its owner only (it holds prompts and answers); SQLite
    gives its WAL and shared-memory files the same mode. An existing file keeps its own."""
    import os

    with contextlib.suppress(FileExistsError):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_store(path: str | Path | None, dsn: str | None, *, migrate: bool = True,
               create: bool = True) -> JournalStore:
    """A connection to the journal: PostgreSQL at `dsn`, else SQLite at `path` (WAL,
    created with its folder when `create`). Migrated to the current schema."""
    if dsn:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                'journal_dsn needs psycopg: pip install "orchestration-kernel[postgres]"') from None
        from ..logging import mask_text

        try:
            conn: Any = psycopg.connect(dsn)
        except Exception as exc:
            raise JournalStoreError(f"cannot open the journal at {mask_text(dsn)}: {mask_text(str(exc))}") from None
        store = JournalStore("postgres", conn, mask_text(dsn))
    else:
        import sqlite3

        if path is None:
            raise ConfigurationError("the journal needs journal_path or journal_dsn")
        target = Path(path)
        if not create and not target.exists():
            raise NoJournalError(str(target))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _create_private(target)
            conn = sqlite3.connect(target, timeout=10.0, isolation_level="DEFERRED")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise JournalStoreError(f"cannot open the journal at {target}: {exc}") from None
        store = JournalStore("sqlite", conn, str(target))
    if migrate:
        try:
            store.migrate()
        except JournalStoreError:
            store.close()
            raise
        except Exception as exc:
            store.close()
            raise JournalStoreError(f"cannot migrate the journal at {store.where}: {exc}") from None
    return store
