"""Fault injection through the kernel's real path, the auditor's view (issue #8).

Every provider test calls `Kernel.invoke` / `Kernel.invoke_stream` of a prompt function
whose service is configured like an application would (provider "openai" or "anthropic",
`base_url` pointing at a real HTTP server on loopback that speaks the provider's wire
format). `tests/test_resilience.py` covers the same rules at the `ResilientChatModel`
level; here the whole stack (template, settings, registry, connector, SDK, sockets) runs.

The store tests kill an embedded SQLite writer in the middle of one large transaction,
and restart PostgreSQL while concurrent upserts are in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction
from kernel.contents import FinalMessage, TextDelta
from kernel.errors import (
    DeadlineExceededError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
)
from kernel.settings import RetrySettings
from tests.hardening.fake_openai_server import (
    anthropic_error,
    anthropic_message,
    anthropic_sse,
    echo_openai,
    last_user_text,
)
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply, openai_completion, openai_text_stream
from tests.test_resilience import FAST_RETRY, SECRET, chat_posts

ROOT = Path(__file__).resolve().parents[2]
ANTHROPIC_KEY = "sk-ant-faults-SECRET-24680"
PROMPT = "Say {{ word }}"


def openai_service(server: FakeHTTPServer, **kw: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "fake-model",
        "api_key": SECRET,
        "base_url": server.url + "/v1",
        "retry": FAST_RETRY,
        **kw,
    }


def anthropic_service(server: FakeHTTPServer, **kw: Any) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "model": "claude-fake",
        "api_key": ANTHROPIC_KEY,
        "base_url": server.url,
        "retry": FAST_RETRY,
        **kw,
    }


def anthropic_posts(server: FakeHTTPServer) -> list[Request]:
    return [r for r in server.requests if r.path.endswith("/messages")]


@asynccontextmanager
async def kernel_with(services: dict[str, dict[str, Any]], default: str = "main") -> AsyncIterator[Kernel]:
    kernel = Kernel(KernelSettings(services=services, default_chat=default), load_entry_points=False)
    kernel.add_function(PromptFunction.from_template(PROMPT, name="ask", plugin="faults", settings={"max_tokens": 8}))
    try:
        yield kernel
    finally:
        await kernel.aclose()


async def stream_text(kernel: Kernel, seen: list[str] | None = None, **args: Any) -> tuple[str, list[Any]]:
    """Consume `faults.ask` as a stream; bounded so a hang fails the test instead of the run."""
    seen = [] if seen is None else seen
    events: list[Any] = []
    async with asyncio.timeout(10):
        async for event in kernel.invoke_stream("faults.ask", **args):
            events.append(event)
            if isinstance(event, TextDelta):
                seen.append(event.text)
    return "".join(seen), events


@pytest.fixture
def anthropic_ok() -> Iterator[FakeHTTPServer]:
    """A fallback speaking the Anthropic Messages wire format, plain and streamed."""

    async def handler(req: Request) -> Reply | StreamReply:
        if not req.path.endswith("/messages"):
            return Reply(404, anthropic_error("not_found_error", req.path))
        if req.json().get("stream"):
            return StreamReply(lambda: anthropic_sse(["from ", "claude"]))
        return Reply(200, anthropic_message("claude says: " + last_user_text(req)))

    with FakeHTTPServer(handler) as server:
        yield server


# -- retries -----------------------------------------------------------------------------


async def test_429_with_retry_after_is_honoured_then_succeeds() -> None:
    async def handler(req: Request) -> Reply:
        if len(chat_posts(server)) == 1:
            return Reply(429, {"error": {"message": "rate limited"}}, {"retry-after": "0.4"})
        return await echo_openai()(req)

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server)}) as kernel:
            result = await kernel.invoke("faults.ask", word="hi")
    assert result.value == "echo: Say hi"
    first, second = chat_posts(server)
    # The provider's delay, not the 10 ms backoff: a lower bound on a real sleep (server
    # clock), which a slow machine only widens.
    assert second.at - first.at >= 0.35
    assert second.at - first.at < RetrySettings().max_retry_after  # nor the 60 s cap
    assert result.usage.requests == 1  # the answered request is what is metered


async def test_retry_after_beyond_the_cap_goes_to_the_fallback_at_once(anthropic_ok: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(429, {"error": {"message": "quota exhausted"}}, {"retry-after": "3600"})

    import anthropic  # noqa: F401  (warm: the first use of the SDK costs seconds on a busy machine)

    cap = 30.0
    retry = {**FAST_RETRY, "max_retry_after": cap}
    with FakeHTTPServer(handler) as server:
        services = {
            "main": openai_service(server, retry=retry, fallbacks=["claude"]),
            "claude": anthropic_service(anthropic_ok),
        }
        async with kernel_with(services) as kernel:
            # Did not sleep on the provider's hour, nor on the cap: either would run into
            # this timeout (the event loop's clock). Going to the fallback takes well under
            # a second; the generous cap leaves room for a busy machine.
            async with asyncio.timeout(cap):
                result = await kernel.invoke("faults.ask", word="cap")
    assert result.value == "claude says: Say cap"
    (refused,) = chat_posts(server)
    (answered,) = anthropic_posts(anthropic_ok)
    assert refused.at <= answered.at  # refused first, then the fallback answered


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retried_then_succeeds(status: int) -> None:
    async def handler(req: Request) -> Reply:
        if len(chat_posts(server)) < 3:
            return Reply(status, {"error": {"message": f"transient {status}"}})
        return await echo_openai()(req)

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server)}) as kernel:
            result = await kernel.invoke("faults.ask", word=str(status))
    assert result.value == f"echo: Say {status}"
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]


async def test_anthropic_overloaded_529_is_retried_then_succeeds() -> None:
    async def handler(req: Request) -> Reply:
        if len(anthropic_posts(server)) == 1:
            return Reply(529, anthropic_error("overloaded_error", "Overloaded"))
        return Reply(200, anthropic_message("claude says: " + last_user_text(req)))

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": anthropic_service(server)}) as kernel:
            result = await kernel.invoke("faults.ask", word="again")
    assert result.value == "claude says: Say again"
    assert len(anthropic_posts(server)) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_repeated_5xx_exhausts_attempts_then_the_fallback_answers(
    status: int, anthropic_ok: FakeHTTPServer
) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(status, {"error": {"message": "down"}})

    with FakeHTTPServer(handler) as server:
        services = {"main": openai_service(server, fallbacks=["claude"]), "claude": anthropic_service(anthropic_ok)}
        async with kernel_with(services) as kernel:
            result = await kernel.invoke("faults.ask", word="fallback")
    assert result.value == "claude says: Say fallback"
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]
    assert len(anthropic_posts(anthropic_ok)) == 1
    assert result.usage.input_tokens == 10  # usage of the service that answered (Anthropic's)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_request_errors_are_never_retried(status: int, anthropic_ok: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(status, {"error": {"message": f"refused with {status}"}})

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server)}) as kernel:
            with pytest.raises(ProviderStatusError) as info:
                await kernel.invoke("faults.ask", word="x")
        assert len(chat_posts(server)) == 1  # exactly one request: no retry
        error = info.value
        assert error.status_code == status and not error.retryable
        assert (error.service, error.provider, error.model) == ("main", "openai", "fake-model")
        assert f"refused with {status}" in str(error) and SECRET not in str(error)

        # With a fallback: still one request to the primary. 400/422 reject the request
        # itself (no fallback); 401/403/404 are this service's problem (fallback answers).
        server.requests.clear()
        services = {"main": openai_service(server, fallbacks=["claude"]), "claude": anthropic_service(anthropic_ok)}
        async with kernel_with(services) as kernel:
            if status in (400, 422):
                with pytest.raises(ProviderStatusError):
                    await kernel.invoke("faults.ask", word="x")
            else:
                assert (await kernel.invoke("faults.ask", word="x")).value == "claude says: Say x"
        assert len(chat_posts(server)) == 1
        assert len(anthropic_posts(anthropic_ok)) == (0 if status in (400, 422) else 1)


# -- timeouts and deadlines ------------------------------------------------------------------


async def test_request_timeout_is_retried_then_succeeds() -> None:
    first_answered = False
    retried_while_first_pending: bool | None = None

    async def handler(req: Request) -> Reply:
        nonlocal first_answered, retried_while_first_pending
        if len(chat_posts(server)) == 1:
            await asyncio.sleep(30)  # far past ServiceSettings.timeout
            first_answered = True
        else:
            retried_while_first_pending = not first_answered
        return await echo_openai()(req)

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server, timeout=0.3)}) as kernel:
            result = await kernel.invoke("faults.ask", word="late")
    assert result.value == "echo: Say late"
    first, second = chat_posts(server)
    # Gave up on the first request at the timeout: the retry arrived while the server was
    # still sitting on the first one (the order of events, not a time window), and not
    # before the timeout (a lower bound on a real wait: slowness only widens it).
    assert retried_while_first_pending is True
    assert second.at - first.at >= 0.25


async def test_timeouts_are_retried_until_the_deadline_passes() -> None:
    async def handler(req: Request) -> Reply:
        await asyncio.sleep(3)
        return await echo_openai()(req)

    retry = {**FAST_RETRY, "max_attempts": 20}
    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server, timeout=0.25, deadline=1.0, retry=retry)}) as kernel:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(DeadlineExceededError) as info:
                await kernel.invoke("faults.ask", word="never")
            elapsed = loop.time() - start
    # Not given up before the deadline (the deadline runs on this same loop clock; a lower
    # bound, which slowness only widens).
    assert elapsed >= 0.9
    # Each timeout was retried until the deadline, and the deadline, not max_attempts (20),
    # ended it: every attempt lasts at least its 0.25 s timeout, so at most four start
    # within the 1 s deadline (five allows for the boundary). Counted, not timed.
    assert 3 <= len(chat_posts(server)) <= 5
    assert "'main'" in str(info.value) and "fake-model" in str(info.value)
    assert isinstance(info.value.__cause__, ProviderTimeoutError | type(None))


# -- dropped connections and streams --------------------------------------------------------


async def test_connection_dropped_mid_response_is_retried() -> None:
    body = openai_completion("echo: Say drop").__repr__().encode()

    async def half_then_drop() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        raise ConnectionResetError("dropped on purpose")

    async def handler(req: Request) -> Reply | StreamReply:
        if len(chat_posts(server)) == 1:
            return StreamReply(half_then_drop, headers={"content-type": "application/json"})
        return await echo_openai()(req)

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server)}) as kernel:
            result = await kernel.invoke("faults.ask", word="drop")
    assert result.value == "echo: Say drop"
    assert len(chat_posts(server)) == 2


async def test_stream_dropped_before_the_first_token_falls_back(anthropic_ok: FakeHTTPServer) -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["never", "seen"], fail_after=0))

    with FakeHTTPServer(handler) as server:
        services = {"main": openai_service(server, fallbacks=["claude"]), "claude": anthropic_service(anthropic_ok)}
        async with kernel_with(services) as kernel:
            text, events = await stream_text(kernel, word="s")
    assert text == "from claude"
    assert isinstance(events[-1], FinalMessage) and events[-1].message.content == "from claude"
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]  # retried, then fell back
    assert len(anthropic_posts(anthropic_ok)) == 1
    assert server.disconnects == FAST_RETRY["max_attempts"]


async def test_openai_stream_dropped_after_the_first_token_raises_to_the_caller(
    anthropic_ok: FakeHTTPServer,
) -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["a", "b", "c", "d"], fail_after=2))

    with FakeHTTPServer(handler) as server:
        services = {"main": openai_service(server, fallbacks=["claude"]), "claude": anthropic_service(anthropic_ok)}
        async with kernel_with(services) as kernel:
            seen: list[str] = []
            with pytest.raises(ProviderConnectionError) as info:
                await stream_text(kernel, seen, word="s")  # bounded by stream_text's 10 s timeout
    assert seen == ["a", "b"]
    assert (info.value.service, info.value.provider, info.value.model) == ("main", "openai", "fake-model")
    assert "service=main" in str(info.value) and "provider=openai" in str(info.value)
    assert len(chat_posts(server)) == 1  # no retry once the caller saw part of an answer
    assert anthropic_posts(anthropic_ok) == []


async def test_anthropic_stream_dropped_after_the_first_token_raises_to_the_caller() -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: anthropic_sse(["one ", "two ", "three"], fail_after=1))

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": anthropic_service(server)}) as kernel:
            seen: list[str] = []
            with pytest.raises(ProviderError) as info:
                await stream_text(kernel, seen, word="s")
    assert seen == ["one "]
    assert (info.value.service, info.value.provider, info.value.model) == ("main", "anthropic", "claude-fake")
    assert "model=claude-fake" in str(info.value) and ANTHROPIC_KEY not in str(info.value)
    assert len(anthropic_posts(server)) == 1


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelling_in_flight_invocations_leaves_nothing_running() -> None:
    """Cancel a blocking invoke and a streaming invoke mid-flight: the connection closes,
    no task is left, and the service's concurrency slot is free again (bound of 1)."""
    body = openai_completion("slow").__repr__().encode()

    async def drip() -> AsyncIterator[bytes]:
        for i in range(len(body)):
            await asyncio.sleep(0.05)
            yield body[i : i + 1]

    async def handler(req: Request) -> Reply | StreamReply:
        word = last_user_text(req)
        if word == "Say quick":
            return await echo_openai()(req)
        if req.json().get("stream"):
            return StreamReply(lambda: openai_text_stream(["tok"] * 200, delay=0.05))
        return StreamReply(drip, headers={"content-type": "application/json"})

    async def consume(kernel: Kernel) -> None:
        async for _ in kernel.invoke_stream("faults.ask", word="slowly"):
            pass

    with FakeHTTPServer(handler) as server:
        async with kernel_with({"main": openai_service(server, max_concurrency=1)}) as kernel:
            before = asyncio.all_tasks()
            calls = (lambda: kernel.invoke("faults.ask", word="slowly"), lambda: consume(kernel))
            for n, call in enumerate(calls, start=1):
                task = asyncio.create_task(call())
                assert await asyncio.to_thread(server.wait_for, lambda n=n: len(chat_posts(server)) == n)
                await asyncio.sleep(0.15)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await asyncio.to_thread(server.wait_for, lambda n=n: server.disconnects == n)
                await asyncio.sleep(0.05)
                assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
                # the slot of max_concurrency=1 was released: the next call goes through
                async with asyncio.timeout(5):
                    assert (await kernel.invoke("faults.ask", word="quick")).value == "echo: Say quick"
            assert server.streams_finished == 0


# -- the embedded store killed in the middle of one large transaction ----------------------

BIG, FIRST, DIM = 20_000, 100, 128

KILL_CHILD = r"""
import asyncio, os, sys
from connectors.sqlite_store import SQLiteVectorStore
from kernel.memory import MemoryRecord

db, marker, first, big, dim = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])

def rec(i):
    v = [((i * 31 + j) % 97) / 97.0 + 0.01 for j in range(dim)]
    return MemoryRecord(f"r{i:06d}", f"record {i} of the big transaction", v, {"i": i})

def mark(text):
    with open(marker, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

async def main():
    store = SQLiteVectorStore(db)
    await store.upsert("big", [rec(i) for i in range(first)])
    records = [rec(i) for i in range(first, first + big)]
    mark("begin")
    await store.upsert("big", records)  # one call, one transaction
    mark("done")
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _wal_size(db: Path) -> int:
    wal = Path(str(db) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.slow
async def test_sqlite_killed_inside_one_large_upsert_shows_all_or_nothing(tmp_path: Path) -> None:
    """SIGKILL while one 20,000-record upsert is being written (its pages already spilling
    into the WAL): after reopening, none of that batch is visible, the earlier batch is
    whole, and the FTS index agrees with the records table. Re-running the upsert completes."""
    from connectors.sqlite_store import SQLiteVectorStore

    db, marker = tmp_path / "big.db", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(db), str(marker), str(FIRST), str(BIG), str(DIM)]
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, *args], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text() == "begin"):
            assert proc.poll() is None and time.monotonic() < deadline, "child never reached the big upsert"
            time.sleep(0.002)
        committed_wal = _wal_size(db)
        while _wal_size(db) <= committed_wal:  # the transaction is now writing pages
            assert marker.read_text() == "begin", "the transaction committed before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text() == "begin"  # killed before the upsert returned
    assert _wal_size(db) > committed_wal  # uncommitted frames of the big batch are on disk

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES ('integrity-check', 1)")
        rows = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        fts_rows = conn.execute("SELECT count(*) FROM records_fts").fetchone()[0]
    assert rows == FIRST  # nothing of the killed batch
    assert fts_rows == rows

    store = SQLiteVectorStore(db)
    try:
        assert await store.count("big") == FIRST
        assert len(await store.keyword_search("big", "record", k=BIG)) == FIRST
        assert len(await store.search("big", [1.0] * DIM, k=BIG)) == FIRST
        # the same batch again completes, without duplicates
        from kernel.memory import MemoryRecord

        records = [
            MemoryRecord(f"r{i:06d}", f"record {i} of the big transaction", [((i * 31 + j) % 97) / 97.0 + 0.01
                         for j in range(DIM)], {"i": i})
            for i in range(FIRST, FIRST + BIG)
        ]
        assert await store.upsert("big", records) == BIG
        assert await store.count("big") == FIRST + BIG
        assert len(set(await store.list_ids("big"))) == FIRST + BIG
        assert len(await store.keyword_search("big", "transaction", k=2 * BIG)) == FIRST + BIG
    finally:
        await store.close()


# -- PostgreSQL restarted while concurrent upserts are in flight ---------------------------


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgres_restart_during_concurrent_upserts_loses_and_duplicates_nothing(postgres: Any) -> None:
    from connectors.pgvector_store import PgVectorStore
    from kernel.memory import MemoryRecord

    writers, batches, size = 6, 12, 40
    name = f"restart{os.getpid()}{int(time.time() * 1000) % 100000}"
    store = PgVectorStore(postgres.dsn, min_size=2, max_size=4)

    def batch(w: int, b: int) -> list[MemoryRecord]:
        return [
            MemoryRecord(f"w{w}b{b}r{r}", f"writer {w} batch {b} record {r}", [1.0, float(w), float(b) + r / size], {})
            for r in range(size)
        ]

    committed: list[int] = []

    async def writer(w: int) -> None:
        for b in range(batches):
            assert await store.upsert(name, batch(w, b)) == size
            committed.append(1)
            await asyncio.sleep(0.01)

    try:
        await store.create_collection(name, 3)
        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        while len(committed) < writers * 2:  # restart once every writer is under way
            await asyncio.sleep(0.005)
        before_restart = len(committed)
        await asyncio.to_thread(postgres.restart)  # cuts every connection, in-flight included
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
        assert before_restart < writers * batches  # the restart really hit the run midway
        assert await store.count(name) == writers * batches * size
        hits = await store.keyword_search(name, "writer", k=writers * batches * size)
        assert len({h.record.id for h in hits}) == writers * batches * size
    finally:
        await store.delete_collection(name)
        await store.close()
