"""The circuit breaker of the resilience layer, per service, against real loopback servers
(chat, OpenAI wire format) and the httpx2 mock transport (embeddings).

After `breaker.failures` consecutive failed calls (a call = every retry of one request on
that service) the service is skipped for `breaker.cooldown` seconds: straight to the
fallback, or `CircuitOpenError`. Then one trial call decides. Requests are counted on the
server, never timed; the cooldowns are a fraction of a second on the event loop's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.openai_models import OpenAIChatModel
from kernel.contents import TextDelta
from kernel.errors import CircuitOpenError, ProviderError, ProviderStatusError
from kernel.services.resilience import ResilientChatModel
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply, openai_completion, openai_text_stream
from tests.test_resilience import FAST_RETRY, SECRET, chat_posts, make_registry, request, service
from tests.test_resilience_embeddings import Fake, always, embedding_service, make_kernel, ok, vectors_of

ATTEMPTS = FAST_RETRY["max_attempts"]
OPEN_LONG = {"failures": 2, "cooldown": 60.0}  # stays open for the whole test
COOLDOWN = 0.3
OPEN_SHORT = {"failures": 2, "cooldown": COOLDOWN}


def unavailable(req: Request) -> Any:
    async def answer() -> Reply:
        return Reply(503, {"error": {"message": "down for maintenance"}})

    return answer()


@pytest.fixture
def backup() -> Iterator[FakeHTTPServer]:
    async def handler(req: Request) -> Reply | StreamReply:
        if req.json().get("stream"):
            return StreamReply(lambda: openai_text_stream(["from ", "backup"]))
        return Reply(200, openai_completion("from backup"))

    with FakeHTTPServer(handler) as server:
        yield server


@pytest.fixture
def down() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer(unavailable) as server:
        yield server


async def test_ten_calls_against_a_503_service_make_few_requests_and_the_fallback_answers(
    down: FakeHTTPServer, backup: FakeHTTPServer
) -> None:
    registry = make_registry({"main": service(down, fallbacks=["backup"], breaker=OPEN_LONG),
                              "backup": service(backup)})
    chat = ResilientChatModel(registry, "main")
    answers = [(await chat.complete(request())).text for _ in range(10)]
    assert answers == ["from backup"] * 10
    # Two failed calls (every retry each) opened the breaker; the eight others skipped the
    # service. Without the breaker: 10 x 3 = 30 requests to a service that is down.
    assert len(chat_posts(down)) == 2 * ATTEMPTS
    assert len(chat_posts(backup)) == 10

    # per registry (kernel): another registry's breaker of the same service is closed
    other = ResilientChatModel(make_registry({"main": service(down, fallbacks=["backup"], breaker=OPEN_LONG),
                                              "backup": service(backup)}), "main")
    assert (await other.complete(request())).text == "from backup"
    assert len(chat_posts(down)) == 3 * ATTEMPTS


async def test_without_a_fallback_an_open_breaker_raises_circuit_open_error(down: FakeHTTPServer) -> None:
    chat = ResilientChatModel(make_registry({"main": service(down, breaker=OPEN_LONG)}), "main")
    for _ in range(2):
        with pytest.raises(ProviderStatusError):
            await chat.complete(request())
    with pytest.raises(CircuitOpenError) as info:
        await chat.complete(request())
    error = info.value
    assert isinstance(error, ProviderError) and not error.retryable
    assert (error.service, error.provider, error.model) == ("main", "openai", "fake-model")
    assert "'main'" in str(error) and "2 consecutive failed calls" in str(error)
    assert error.retry_after is not None and 55 < error.retry_after <= 60  # when it is tried again
    assert "tried again in" in str(error)
    assert len(chat_posts(down)) == 2 * ATTEMPTS  # the open breaker sent nothing
    # the streaming path honours the same breaker
    with pytest.raises(CircuitOpenError):
        async for _ in chat.stream(request()):
            pass
    assert len(chat_posts(down)) == 2 * ATTEMPTS


async def test_after_the_cooldown_one_trial_goes_to_the_primary_and_its_success_closes_the_breaker(
    backup: FakeHTTPServer,
) -> None:
    healthy = False

    async def handler(req: Request) -> Reply:
        if not healthy:
            return Reply(503, {"error": {"message": "down"}})
        await asyncio.sleep(0.2)  # the trial is still running while the other calls arrive
        return Reply(200, openai_completion("from main"))

    with FakeHTTPServer(handler) as main:
        registry = make_registry({"main": service(main, fallbacks=["backup"], breaker=OPEN_SHORT),
                                  "backup": service(backup)})
        chat = ResilientChatModel(registry, "main")
        for _ in range(3):
            assert (await chat.complete(request())).text == "from backup"
        assert len(chat_posts(main)) == 2 * ATTEMPTS  # open after two failed calls
        healthy = True
        await asyncio.sleep(COOLDOWN + 0.05)  # the loop's clock: the cooldown is over
        # half-open: one trial call reaches the primary, the concurrent ones skip it
        texts = [r.text for r in await asyncio.gather(*(chat.complete(request()) for _ in range(4)))]
        assert sorted(texts) == ["from backup"] * 3 + ["from main"]
        assert len(chat_posts(main)) == 2 * ATTEMPTS + 1
        # the trial succeeded: closed, every call goes to the primary again
        assert [(await chat.complete(request())).text for _ in range(3)] == ["from main"] * 3
        assert len(chat_posts(main)) == 2 * ATTEMPTS + 4


async def test_a_failed_trial_opens_the_breaker_for_another_cooldown(
    down: FakeHTTPServer, backup: FakeHTTPServer
) -> None:
    registry = make_registry({"main": service(down, fallbacks=["backup"], breaker=OPEN_SHORT),
                              "backup": service(backup)})
    chat = ResilientChatModel(registry, "main")
    for _ in range(2):
        await chat.complete(request())
    assert len(chat_posts(down)) == 2 * ATTEMPTS
    await asyncio.sleep(COOLDOWN + 0.05)
    assert (await chat.complete(request())).text == "from backup"  # the trial failed (all its retries)
    assert len(chat_posts(down)) == 3 * ATTEMPTS
    # one failed trial is enough to open it again (not `failures` more calls)
    assert (await chat.complete(request())).text == "from backup"
    assert len(chat_posts(down)) == 3 * ATTEMPTS


async def test_a_success_resets_the_count_of_consecutive_failures(backup: FakeHTTPServer) -> None:
    failing = [True]

    async def handler(req: Request) -> Reply:
        if failing[0]:
            return Reply(503, {"error": {"message": "flaky"}})
        return Reply(200, openai_completion("from main"))

    with FakeHTTPServer(handler) as main:
        registry = make_registry({"main": service(main, fallbacks=["backup"], breaker=OPEN_LONG),
                                  "backup": service(backup)})
        chat = ResilientChatModel(registry, "main")
        texts = []
        for call in range(8):  # every other call fails (all of its attempts), the ones between succeed
            failing[0] = call % 2 == 0
            texts.append((await chat.complete(request())).text)
    assert texts == ["from backup", "from main"] * 4  # never two failures in a row: never open
    assert len(chat_posts(main)) == 4 * ATTEMPTS + 4


async def test_request_errors_do_not_count_as_failures_of_the_service(backup: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(400, {"error": {"message": "bad max_tokens"}})

    with FakeHTTPServer(handler) as main:
        chat = ResilientChatModel(make_registry({"main": service(main, breaker={"failures": 1})}), "main")
        for _ in range(4):
            with pytest.raises(ProviderStatusError) as info:
                await chat.complete(request())
            assert info.value.status_code == 400  # never CircuitOpenError
    assert len(chat_posts(main)) == 4


async def test_streams_count_too(down: FakeHTTPServer, backup: FakeHTTPServer) -> None:
    registry = make_registry({"main": service(down, fallbacks=["backup"], breaker={"failures": 1, "cooldown": 60}),
                              "backup": service(backup)})
    chat = ResilientChatModel(registry, "main")
    for _ in range(3):
        events = [e async for e in chat.stream(request())]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "from backup"
    assert len(chat_posts(down)) == ATTEMPTS  # only the first stream tried the primary
    assert len(chat_posts(backup)) == 3


async def test_a_service_added_in_code_gets_the_kernel_breaker(down: FakeHTTPServer) -> None:
    registry = make_registry({}, retry=FAST_RETRY, breaker={"failures": 1, "cooldown": 60})
    registry.add_service("coded", OpenAIChatModel("coded-model", api_key=SECRET, base_url=down.url + "/v1"))
    chat = ResilientChatModel(registry, "coded")
    with pytest.raises(ProviderStatusError):
        await chat.complete(request())
    with pytest.raises(CircuitOpenError, match="'coded'"):
        await chat.complete(request())
    assert len(chat_posts(down)) == ATTEMPTS
    # replacing the service starts it with a closed breaker
    registry.add_service("coded", OpenAIChatModel("coded-model", api_key=SECRET, base_url=down.url + "/v1"))
    with pytest.raises(ProviderStatusError):
        await ResilientChatModel(registry, "coded").complete(request())
    assert len(chat_posts(down)) == 2 * ATTEMPTS


async def test_embedding_services_have_a_breaker_of_their_own() -> None:
    primary, spare = Fake(always(503)), Fake(ok(2.0))
    services = {
        "vectors": embedding_service(fallbacks=["backup"], breaker=OPEN_LONG),
        "backup": embedding_service(),
    }
    async with make_kernel(services, {"vectors": primary, "backup": spare}) as kernel:
        embeddings = kernel.services.embedding("vectors")
        for i in range(10):
            assert await embeddings.embed([f"text {i}"]) == vectors_of([f"text {i}"], 2.0)
        # the chat kind of the same name has its own breaker: (kind, name)
        assert ("embedding", "vectors") in kernel.services.breakers
        assert ("chat", "vectors") not in kernel.services.breakers
    assert len(primary.requests) == 2 * 3  # NO_BACKOFF: 3 attempts per call, 2 calls, then open
    assert len(spare.requests) == 10
