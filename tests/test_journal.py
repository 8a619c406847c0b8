"""The journal (`kernel.events.Journal`): every run in SQLite (WAL) or PostgreSQL, written by
a background thread from a bounded queue, secrets masked before the write, content kept or
dropped, old runs pruned, the schema versioned with migrations; off for a plain `Kernel()`
and on for the `kernel` command. The databases are real: SQLite files in the test's folder,
and the PostgreSQL the memory tests start (pgserver)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.cli import main
from kernel.events import SCHEMA_VERSION, Journal, JournalReader, JournalStoreError, open_reader
from kernel.events.store import _V1, open_store
from kernel.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-journal-test-0123456789SECRETKEY"
PASSWORD = "correct-horse-battery-staple"


class Tools:
    @kernel_function
    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @kernel_function
    def login(self, user: str, password: str) -> str:
        """Log in (its password argument is a secret by its name)."""
        return f"welcome {user}"


def make_kernel(path: Path, model: ScriptedChatModel | None = None, **settings: Any) -> Kernel:
    """A kernel journaling to `path`, with a scripted chat model `main` (api key SECRET)."""
    config: dict[str, Any] = {"journal": True, "journal_path": path, "default_chat": "main",
                              "services": {"main": {"provider": "openai", "model": "scripted-1", "api_key": SECRET}},
                              **settings}
    kernel = Kernel(settings=KernelSettings(**config), load_entry_points=False)
    kernel.services.add_service("main", model or ScriptedChatModel(default="ok", model="scripted-1"))
    kernel.add_plugin(Tools(), name="tools")
    kernel.add_function(PromptFunction.from_template("Repeat: {{ word }}", name="say", plugin="writer"))
    return kernel


def journal_of(kernel: Kernel) -> Journal:
    assert kernel.events is not None
    journal = kernel.events.sink(Journal)
    assert journal is not None
    return journal


def reader(path: Path) -> JournalReader:
    return open_reader(path=path)


def raw_bytes(folder: Path) -> bytes:
    """Every byte of every file of the journal (the database, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


# --- on and off -------------------------------------------------------------------------------


async def test_a_plain_kernel_writes_no_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False)
    kernel.add_plugin(Tools(), name="tools")
    await kernel.invoke("tools.add", a=1, b=2)
    await kernel.aclose()
    assert kernel.events is None
    assert not (tmp_path / ".kernel").exists()


def test_the_command_line_journals_by_default_and_journal_false_turns_it_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    assert main(["run", "math.add", "-a", "a:=2", "-a", "b:=3"]) == 0
    assert capsys.readouterr().out.strip() == "5.0"
    with reader(tmp_path / ".kernel" / "journal.db") as journal:
        [run] = journal.runs()
    assert (run["kind"], run["name"], run["status"]) == ("function", "math.add", "ok")

    other = tmp_path / "off"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("KERNEL_JOURNAL", "false")
    assert main(["run", "math.add", "-a", "a:=2", "-a", "b:=3"]) == 0
    assert not (other / ".kernel").exists()


# --- SQLite: WAL, schema, migrations ---------------------------------------------------------


async def test_the_sqlite_journal_is_in_wal_mode_at_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "j" / "journal.db"
    kernel = make_kernel(path)
    await kernel.invoke("tools.add", a=1, b=2)
    await kernel.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        [(kind, name, status, data)] = conn.execute("SELECT kind, name, status, data FROM events").fetchall()
    assert (kind, name, status) == ("function", "tools.add", "ok")
    assert json.loads(data) == {"arguments": {"a": 1, "b": 2}, "result": 3}


def _v1_journal(path: Path) -> None:
    """A journal as version 1 of the schema wrote it: one run of a prompt function."""
    with sqlite3.connect(path) as conn:
        for statement in _V1:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO runs VALUES ('r1', 'function', 'writer.say', 100.0, 0.5, 'ok', 'main', 'm', 10, 5, "
                     "NULL, NULL)")
        conn.execute("INSERT INTO events VALUES ('r1', 'r1', NULL, 'function', 'writer.say', 100.0, 0.5, 'ok', 'main', "
                     "'m', 10, 5, NULL, NULL, ?)", (json.dumps({"arguments": {"word": "aubergine"}}),))
        conn.execute("INSERT INTO events VALUES ('e2', 'r1', 'r1', 'model', 'm', 100.1, 0.3, 'ok', 'main', 'm', 10, 5, "
                     "NULL, NULL, ?)", (json.dumps({"text": "une aubergine"}),))


async def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _v1_journal(path)
    with reader(path) as journal:  # opening migrates
        assert journal.store.version() == SCHEMA_VERSION
        [run] = journal.runs()
        assert (run["id"], run["name"], run["input_tokens"], run["requests"]) == ("r1", "writer.say", 10, 1)
        assert not run["priced"] and run["cost"] is None  # its model call had no price: unpriced, not free
        assert [r["id"] for r in journal.runs(text="aubergine")] == ["r1"]  # indexed by the migration
        assert [r["id"] for r in journal.runs(function="writer.*")] == ["r1"]
        [model] = [e for e in journal.events("r1") if e["kind"] == "model"]
        assert model["data"] == {"text": "une aubergine"} and model["requests"] == 1
    # and a kernel goes on writing into it
    kernel = make_kernel(path)
    await kernel.invoke("tools.add", a=1, b=2)
    await kernel.aclose()
    with reader(path) as journal:
        assert [r["name"] for r in journal.runs()] == ["tools.add", "writer.say"]


def test_a_journal_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(JournalStoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this kernel's"):
        open_store(path, None)


def test_reading_a_journal_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(JournalStoreError, match="no journal at"):
        reader(tmp_path / "none" / "journal.db")
    assert not (tmp_path / "none").exists()


# --- what is written ----------------------------------------------------------------------------


async def test_secrets_are_masked_before_they_are_written(tmp_path: Path) -> None:
    model = ScriptedChatModel([f"your key is {SECRET}, and Bearer abcdefgh12345678 too"], model="scripted-1")
    kernel = make_kernel(tmp_path / "journal.db", model)
    await kernel.invoke("writer.say", word=f"the key {SECRET}")
    await kernel.invoke("tools.login", user="ada", password=PASSWORD)
    await kernel.aclose()
    data = raw_bytes(tmp_path)
    assert SECRET.encode() not in data and PASSWORD.encode() not in data and b"abcdefgh12345678" not in data
    with reader(tmp_path / "journal.db") as journal:
        login, say = journal.runs()
        events = journal.events(say["id"])
        assert journal.events(login["id"])[0]["data"]["arguments"] == {"user": "ada", "password": "***"}
    model_event = next(e for e in events if e["kind"] == "model")
    assert model_event["data"]["text"] == "your key is ***, and *** too"
    assert model_event["data"]["messages"][0]["content"] == "Repeat: the key ***"


async def test_journal_content_false_keeps_only_metadata(tmp_path: Path) -> None:
    model = ScriptedChatModel(["zebra-answer"], model="scripted-1")
    kernel = make_kernel(tmp_path / "journal.db", model, journal_content=False)
    await kernel.invoke("writer.say", word="zebra-question")
    await kernel.aclose()
    data = raw_bytes(tmp_path)
    assert b"zebra-question" not in data and b"zebra-answer" not in data
    with reader(tmp_path / "journal.db") as journal:
        [run] = journal.runs()
        assert (run["name"], run["service"], run["model"], run["input_tokens"], run["output_tokens"]) == (
            "writer.say", "main", "scripted-1", 10, 5)
        events = journal.events(run["id"])
        assert journal.runs(text="zebra") == []
    assert [e["kind"] for e in events] == ["function", "prompt", "model"]
    assert all(e["data"].get("content") is False for e in events)
    assert all(k not in e["data"] for e in events for k in ("arguments", "result", "messages", "text"))


async def test_journal_exclude_drops_the_content_of_those_functions_only(tmp_path: Path) -> None:
    model = ScriptedChatModel(["zebra-answer"], model="scripted-1")
    kernel = make_kernel(tmp_path / "journal.db", model, journal_exclude=["writer.*"])
    await kernel.invoke("writer.say", word="zebra-question")
    await kernel.invoke("tools.add", a=20, b=22)
    await kernel.aclose()
    assert b"zebra" not in raw_bytes(tmp_path)
    with reader(tmp_path / "journal.db") as journal:
        add, say = journal.runs()
        assert journal.events(add["id"])[0]["data"] == {"arguments": {"a": 20, "b": 22}, "result": 42}
        assert all(e["data"].get("content") is False for e in journal.events(say["id"]))
        assert say["output_tokens"] == 5


# --- retention ---------------------------------------------------------------------------------------


async def _runs(path: Path, count: int, **settings: Any) -> list[str]:
    kernel = make_kernel(path, **settings)
    for i in range(count):
        await kernel.invoke("tools.add", a=i, b=0)
    await kernel.aclose()
    with reader(path) as journal:
        return [r["id"] for r in journal.runs(limit=10_000)]


async def test_retention_prunes_runs_by_age_and_by_count(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = await _runs(path, 6)  # the latest first
    old = ids[-2:]
    with sqlite3.connect(path) as conn:  # two runs from ten days ago
        conn.execute("UPDATE events SET started = started - 10 * 86400 WHERE run_id IN (?, ?)", old)
    after = await _runs(path, 1, journal_keep_days=1, journal_keep_runs=3)
    assert after[1:] == ids[:3] and len(after) == 4  # pruned when the writer starts, then the new run
    with sqlite3.connect(path) as conn:
        left = {row[0] for row in conn.execute("SELECT DISTINCT run_id FROM events")}
        texts = {row[0] for row in conn.execute("SELECT DISTINCT run_id FROM events_text")}
    assert left == set(after) and texts <= left


async def test_a_running_journal_prunes_as_runs_accumulate(tmp_path: Path) -> None:
    ids = await _runs(tmp_path / "journal.db", 520, journal_keep_runs=10)
    assert 10 <= len(ids) <= 30  # pruned after its 500th run, not only when it started


# --- the background writer -------------------------------------------------------------------------


async def test_the_hot_path_never_waits_for_the_disk_a_full_queue_drops(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    kernel = make_kernel(path, journal_queue_size=50)
    journal = journal_of(kernel)
    await kernel.invoke("tools.add", a=0, b=0)
    await journal.commit()  # the writer has opened the journal
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the disk is "busy": the writer waits (its timeout is 10 s)
    try:
        async with asyncio.timeout(5):  # would hang if an invocation waited for the writer
            for i in range(300):
                await kernel.invoke("tools.add", a=i, b=1)
        assert journal.dropped > 0 and len(journal._queue) <= 50
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await journal.commit()
    dropped = journal.dropped
    await kernel.aclose()
    assert journal.failures == 0
    with reader(path) as rows:
        kept = rows.runs(limit=1000)
    assert 1 < len(kept) < 301 and journal.written + dropped >= 301


async def test_closing_the_kernel_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    kernel = make_kernel(path)
    for i in range(2000):
        await kernel.invoke("tools.add", a=i, b=1)
    await kernel.aclose()
    with reader(path) as rows:
        assert len(rows.runs(limit=5000)) == 2000
        assert rows.runs(limit=1)[0]["status"] == "ok"


def test_an_application_that_never_closes_its_kernel_still_gets_its_journal(tmp_path: Path) -> None:
    script = """
import asyncio
from kernel import Kernel, KernelSettings

async def main():
    kernel = Kernel(settings=KernelSettings(journal=True, journal_path="journal.db"), load_entry_points=False)
    for i in range(300):
        await kernel.invoke("math.add", a=i, b=1)
    # no aclose(): the interpreter exits with events still queued

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with reader(tmp_path / "journal.db") as rows:
        assert len(rows.runs(limit=1000)) == 300


# --- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture
def journal_dsn(postgres_dsn: str) -> Iterator[str]:
    """A database of its own on the test PostgreSQL, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"journal_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(postgres_dsn, dbname=name)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
async def test_the_journal_in_postgresql(journal_dsn: str, tmp_path: Path) -> None:
    model = ScriptedChatModel(["une aubergine violette", f"key {SECRET}"], model="scripted-1")
    kernel = make_kernel(tmp_path / "unused.db", model, journal_dsn=journal_dsn)
    assert journal_of(kernel).dsn == journal_dsn and journal_of(kernel).path is None
    await kernel.invoke("writer.say", word="aubergine")
    await kernel.invoke("tools.add", a=1, b=2)
    await kernel.invoke("writer.say", word="key")
    with pytest.raises(Exception, match="divisor"):
        await kernel.invoke("math.divide", a=1, b=0)
    await kernel.aclose()
    assert not (tmp_path / "unused.db").exists()

    with open_reader(KernelSettings(journal_dsn=journal_dsn)) as journal:
        assert journal.store.dialect == "postgres" and journal.store.version() == SCHEMA_VERSION
        runs = journal.runs()
        assert [r["name"] for r in runs] == ["math.divide", "writer.say", "tools.add", "writer.say"]
        assert [r["name"] for r in journal.runs(status="error")] == ["math.divide"]
        assert [r["name"] for r in journal.runs(text="violette")] == ["writer.say"]
        assert [r["name"] for r in journal.runs(function="tools.*")] == ["tools.add"]
        assert [r["name"] for r in journal.runs(service="main")] == ["writer.say", "writer.say"]
        assert journal.resolve("last") == runs[0]["id"]
        with pytest.raises(LookupError, match="names 4 runs"):  # every id of a process shares its first 12 digits
            journal.resolve(runs[0]["id"][:12])
        tree = journal.tree(journal.resolve(runs[-1]["id"]))
        [function] = tree["events"]
        assert [c["kind"] for c in function["children"]] == ["prompt", "model"]
        assert function["children"][1]["data"]["text"] == "une aubergine violette"
        [by_service] = journal.stats("service")
        assert (by_service["key"], by_service["calls"], by_service["input_tokens"]) == ("main", 2, 20)
        assert journal.stats("day")[0]["calls"] == 2
        dump = json.dumps([journal.events(r["id"]) for r in runs])
    assert SECRET not in dump and "***" in dump
    # a second process opening the same journal migrates nothing and reads the same
    with JournalReader(open_store(None, journal_dsn)) as again:
        assert len(again.runs()) == 4


# --- hostile conditions ---------------------------------------------------------------------------


def test_processes_writing_one_journal_at_once_lose_nothing(tmp_path: Path) -> None:
    """Four processes open a new journal at the same moment (one migrates it, under a lock)
    and write 200 runs each, concurrently."""
    script = """
import asyncio, sys
from kernel import Kernel, KernelSettings

async def main():
    kernel = Kernel(settings=KernelSettings(journal=True, journal_path="journal.db"), load_entry_points=False)
    for i in range(200):
        await kernel.invoke("math.add", a=i, b=int(sys.argv[1]))
    await kernel.aclose()

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=tmp_path, env=env,
                                  stderr=subprocess.PIPE, text=True) for n in range(4)]
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        assert "journal_write_failed" not in err and "journal_unavailable" not in err, err
    with reader(tmp_path / "journal.db") as rows:
        runs = rows.runs(limit=5000)
        assert len(runs) == 800 and len({r["id"] for r in runs}) == 800  # ids unique across processes
        assert rows.store.version() == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1


async def test_a_journal_that_is_not_a_database_never_breaks_an_invocation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.db"
    path.write_text("not a database, only text " * 100, encoding="utf-8")
    kernel = make_kernel(path)
    assert (await kernel.invoke("tools.add", a=1, b=2)).value == 3
    journal = journal_of(kernel)
    await journal.commit()
    await kernel.aclose()
    assert journal.dropped >= 1 and journal.written == 0
    # logged (to the standard library, or to structlog when the CLI configured it in this process)
    logged = "\n".join(r.getMessage() for r in caplog.records) + capfd.readouterr().err
    assert "journal_unavailable" in logged and "file is not a database" in logged, logged
    assert path.read_text(encoding="utf-8").startswith("not a database")  # left as it was


def test_a_forked_child_journals_its_own_runs(tmp_path: Path) -> None:
    """The parent's writer thread does not exist in a forked child: the child starts its
    own, with ids of its own."""
    script = """
import asyncio, os, time
from kernel import Kernel, KernelSettings

kernel = Kernel(KernelSettings(journal=True, journal_path="journal.db"), load_entry_points=False)
asyncio.run(kernel.invoke("math.add", a=1, b=1))
time.sleep(0.2)  # the parent's writer is running
pid = os.fork()
if pid == 0:
    asyncio.run(kernel.invoke("math.add", a=2, b=2))
    asyncio.run(kernel.aclose())
    os._exit(0)
os.waitpid(pid, 0)
asyncio.run(kernel.invoke("math.add", a=3, b=3))
asyncio.run(kernel.aclose())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with reader(tmp_path / "journal.db") as rows:
        runs = rows.runs()
        results = sorted(rows.events(r["id"])[0]["data"]["result"] for r in runs)
    assert results == [2.0, 4.0, 6.0] and len({r["id"] for r in runs}) == 3


async def test_a_new_journal_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".kernel" / "journal.db"
    kernel = make_kernel(path)
    await kernel.invoke("tools.add", a=1, b=2)
    await journal_of(kernel).commit()
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    await kernel.aclose()
    assert modes["journal.db"] == 0o600 and modes.get("journal.db-wal", 0o600) == 0o600, modes
    assert "journal.db-wal" in modes  # the WAL too (it holds the latest runs)


async def test_a_full_queue_never_drops_a_plans_steps(tmp_path: Path) -> None:
    """Durable runs rely on a step's start and end being journaled: a full queue drops
    other events, never these."""
    path = tmp_path / "journal.db"
    kernel = make_kernel(path, journal_queue_size=10)
    journal = journal_of(kernel)
    emitter = kernel.events
    assert emitter is not None
    await kernel.invoke("tools.add", a=0, b=0)
    await journal.commit()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(50):
            await kernel.invoke("tools.add", a=i, b=1)
        dropped = journal.dropped
        assert dropped > 0
        with (emitter.plan({"goal": "g", "steps": [{"id": "s1", "function": "tools.add"}]}, {}, None) as plan,
              emitter.step("s1", kernel.get_function("tools.add"), {"a": 1, "b": 1}) as step):
            step.output = 2
        assert journal.dropped == dropped
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await kernel.aclose()
    with reader(path) as rows:
        [events] = [rows.events(r["id"]) for r in rows.runs(limit=100) if r["id"] == plan.id]
    assert [(e["kind"], e["status"]) for e in events] == [("plan", "ok"), ("step", "ok")]
    assert events[1]["data"]["output"] == 2
