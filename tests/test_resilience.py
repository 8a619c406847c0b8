"""The kernel's resilience layer against a real HTTP server on loopback (OpenAI wire format):
retries with Retry-After, no retry on request errors, fallbacks, deadlines, streaming
rules, bounded concurrency, cancellation, and error messages without secrets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.openai_models import OpenAIChatModel, chat_factory
from kernel.contents import ChatMessage, ChatRequest, StreamEnd, TextDelta, UsageEvent
from kernel.errors import (
    DeadlineExceededError,
    ProviderConnectionError,
    ProviderStatusError,
)
from kernel.services import ServiceRegistry
from kernel.services.resilience import ResilientChatModel, backoff_delay
from kernel.settings import KernelSettings, RetrySettings
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply, openai_completion, openai_text_stream

SECRET = "sk-test-SECRET-0123456789"
FAST_RETRY = {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.05, "jitter": 0.5}


def make_registry(services: dict[str, dict[str, Any]], **kw: Any) -> ServiceRegistry:
    settings = KernelSettings(services=services, **kw)
    registry = ServiceRegistry(settings)
    registry.add_connector("chat", "openai", chat_factory, "connectors.openai_models")
    return registry


def service(server: FakeHTTPServer, **kw: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "fake-model",
        "api_key": SECRET,
        "base_url": server.url + "/v1",
        "retry": FAST_RETRY,
        **kw,
    }


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest([ChatMessage.user(text)], settings={"max_tokens": 8})


def chat_posts(server: FakeHTTPServer) -> list[Request]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


@pytest.fixture
def ok_server() -> Iterator[FakeHTTPServer]:
    async def handler(req: Request) -> Reply | StreamReply:
        if req.json().get("stream"):
            return StreamReply(lambda: openai_text_stream(["fall", "back"]))
        return Reply(200, openai_completion("from fallback"))

    with FakeHTTPServer(handler) as server:
        yield server


async def test_429_with_retry_after_is_retried_once_after_the_delay() -> None:
    async def handler(req: Request) -> Reply:
        if len(chat_posts(server)) == 1:
            return Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "0.3"})
        return Reply(200, openai_completion("ok now"))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server)}), "main")
        response = await chat.complete(request())
    assert response.text == "ok now"
    first, second = chat_posts(server)
    # Honoured Retry-After, not the 10 ms backoff. A lower bound on a real sleep (server
    # clock): a slow machine only widens the gap, so this cannot flake.
    assert second.at - first.at >= 0.25


async def test_retry_after_ms_header_is_honoured() -> None:
    async def handler(req: Request) -> Reply:
        if len(chat_posts(server)) == 1:
            return Reply(503, {"error": {"message": "busy"}}, {"retry-after-ms": "250"})
        return Reply(200, openai_completion("ok"))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server)}), "main")
        assert (await chat.complete(request())).text == "ok"
    first, second = chat_posts(server)
    assert second.at - first.at >= 0.2  # a lower bound on a real sleep: machine speed only widens it


async def test_retry_after_above_the_cap_moves_on_without_waiting(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(429, {"error": {"message": "come back tomorrow"}}, {"retry-after": "86400"})

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, fallbacks=["backup"]), "backup": service(ok_server)})
        # Moving on takes milliseconds; sleeping on the provider's day, or on the cap itself,
        # would run into this timeout (the event loop's clock) instead of hanging the run.
        async with asyncio.timeout(RetrySettings().max_retry_after):
            response = await ResilientChatModel(registry, "main").complete(request())
    assert response.text == "from fallback"
    assert len(chat_posts(server)) == 1


async def test_400_is_not_retried_and_not_fallen_back_from(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(400, {"error": {"message": "bad max_tokens", "type": "invalid_request_error"}})

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, fallbacks=["backup"]), "backup": service(ok_server)})
        with pytest.raises(ProviderStatusError) as info:
            await ResilientChatModel(registry, "main").complete(request())
    assert info.value.status_code == 400
    assert not info.value.retryable
    assert len(chat_posts(server)) == 1
    assert chat_posts(ok_server) == []
    assert "bad max_tokens" in str(info.value)


async def test_repeated_500_exhausts_attempts_then_uses_the_fallback(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(500, {"error": {"message": "boom"}})

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, fallbacks=["backup"]), "backup": service(ok_server)})
        response = await ResilientChatModel(registry, "main").complete(request())
    assert response.text == "from fallback"
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]
    assert len(chat_posts(ok_server)) == 1


async def test_when_every_service_fails_the_last_error_names_it_and_lists_the_chain() -> None:
    async def handler(req: Request) -> Reply:
        return Reply(502, {"error": {"message": "bad gateway"}})

    with FakeHTTPServer(handler) as a, FakeHTTPServer(handler) as b:
        registry = make_registry({"main": service(a, fallbacks=["backup"]), "backup": service(b, model="other-model")})
        with pytest.raises(ProviderStatusError) as info:
            await ResilientChatModel(registry, "main").complete(request())
    error = info.value
    assert (error.service, error.provider, error.model) == ("backup", "openai", "other-model")
    assert any("main" in note for note in error.__notes__)


async def test_errors_name_service_provider_model_and_never_the_key() -> None:
    async def handler(req: Request) -> Reply:
        token = req.headers["authorization"].removeprefix("Bearer ")
        return Reply(401, {"error": {"message": f"Incorrect API key provided: {token}"}})

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server)}), "main")
        with pytest.raises(ProviderStatusError) as info:
            await chat.complete(request())
    text = str(info.value) + repr(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "service=main" in text and "provider=openai" in text and "model=fake-model" in text
    assert "Incorrect API key" in text
    assert SECRET not in text
    assert len(chat_posts(server)) == 1  # 401 is not retried


async def test_connection_refused_is_retried_then_falls_back(ok_server: FakeHTTPServer) -> None:
    with FakeHTTPServer(lambda r: asyncio.sleep(0, Reply())) as dead:
        url = dead.url
    registry = make_registry(
        {
            "main": {**service(ok_server, fallbacks=["backup"]), "base_url": url + "/v1"},
            "backup": service(ok_server),
        }
    )
    response = await ResilientChatModel(registry, "main").complete(request())
    assert response.text == "from fallback"


async def test_deadline_covers_a_slowly_dripping_stream() -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["tok"] * 50, delay=0.1))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server, deadline=0.5)}), "main")
        seen: list[Any] = []
        with pytest.raises(DeadlineExceededError) as info:
            async for event in chat.stream(request()):
                seen.append(event)
        assert "'main'" in str(info.value) and "fake-model" in str(info.value)
        # Cut mid-stream (the 50 tokens take 5 s to drip): some tokens arrived, not all,
        # and the client hung up before the server finished. Counted, not timed.
        assert 0 < sum(isinstance(e, TextDelta) for e in seen) < 50
        assert server.wait_for(lambda: server.disconnects == 1)
        assert server.streams_finished == 0


async def test_deadline_covers_retries_of_complete() -> None:
    async def handler(req: Request) -> Reply:
        return Reply(503, {"error": {"message": "busy"}}, {"retry-after": "0.4"})

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, deadline=0.6, retry={"max_attempts": 10})})
        with pytest.raises(DeadlineExceededError, match="'main'"):
            await ResilientChatModel(registry, "main").complete(request())
    # Each retry waits the provider's 0.4 s, so at most two attempts fit in the 0.6 s
    # deadline; without it there would be ten. Counted, not timed: slowness only lowers it.
    assert 1 <= len(chat_posts(server)) <= 2


async def test_stream_failing_before_the_first_token_falls_back(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["never"], fail_after=0))

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, fallbacks=["backup"]), "backup": service(ok_server)})
        events = [e async for e in ResilientChatModel(registry, "main").stream(request())]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "fallback"
    assert isinstance(events[-1], StreamEnd)
    assert any(isinstance(e, UsageEvent) for e in events)
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]  # retried, then fell back
    assert len(chat_posts(ok_server)) == 1


async def test_stream_failing_after_the_first_token_propagates(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["a", "b", "c", "d"], fail_after=2))

    with FakeHTTPServer(handler) as server:
        registry = make_registry({"main": service(server, fallbacks=["backup"]), "backup": service(ok_server)})
        seen: list[str] = []
        with pytest.raises(ProviderConnectionError) as info:
            async for event in ResilientChatModel(registry, "main").stream(request()):
                if isinstance(event, TextDelta):
                    seen.append(event.text)
    assert seen == ["a", "b"]
    assert info.value.service == "main"
    assert len(chat_posts(server)) == 1
    assert chat_posts(ok_server) == []


async def _cancel_in_flight(server: FakeHTTPServer, make_call: Any) -> None:
    before = asyncio.all_tasks()
    task = asyncio.create_task(make_call())
    await asyncio.to_thread(server.wait_for, lambda: len(chat_posts(server)) == 1)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set()
    assert await asyncio.to_thread(server.wait_for, lambda: server.disconnects == 1)


async def test_cancelling_a_stream_in_flight_closes_the_connection() -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: openai_text_stream(["tok"] * 100, delay=0.05))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server)}), "main")

        async def consume() -> None:
            async for _ in chat.stream(request()):
                pass

        await _cancel_in_flight(server, consume)
        assert server.streams_finished == 0


async def test_cancelling_complete_in_flight_closes_the_connection() -> None:
    body = openai_completion("slow").__repr__()  # any payload; never fully sent

    async def drip() -> Any:
        for ch in body:
            await asyncio.sleep(0.05)
            yield ch.encode()

    async def handler(req: Request) -> StreamReply:
        return StreamReply(drip, headers={"content-type": "application/json"})

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server)}), "main")
        await _cancel_in_flight(server, lambda: chat.complete(request()))


async def test_concurrency_is_bounded_per_service() -> None:
    in_flight = 0
    peak = 0

    async def handler(req: Request) -> Reply:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return Reply(200, openai_completion("ok"))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server, max_concurrency=2)}), "main")
        results = await asyncio.gather(*(chat.complete(request()) for _ in range(6)))
    assert [r.text for r in results] == ["ok"] * 6
    assert peak == 2


async def test_service_added_in_code_uses_kernel_retry_and_has_provider_model() -> None:
    async def handler(req: Request) -> Reply:
        if len(chat_posts(server)) < 3:
            return Reply(500, {"error": {"message": "flaky"}})
        return Reply(200, openai_completion("third time lucky"))

    with FakeHTTPServer(handler) as server:
        registry = make_registry({}, retry={"max_attempts": 3, "initial_backoff": 0.01})
        model = OpenAIChatModel("coded-model", api_key=SECRET, base_url=server.url + "/v1")
        registry.add_service("coded", model, kind="chat")
        chat = ResilientChatModel(registry, "coded")
        assert (chat.provider, chat.model) == ("openai", "coded-model")
        assert (await chat.complete(request())).text == "third time lucky"
        assert len(chat_posts(server)) == 3


def test_backoff_grows_exponentially_within_the_jitter_range() -> None:
    retry = RetrySettings(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0, jitter=0.25)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = [backoff_delay(retry, attempt) for _ in range(200)]
        assert all(d is not None and base * 0.75 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered
    full = RetrySettings(initial_backoff=1.0, jitter=1.0)
    assert min(backoff_delay(full, 1) or 1 for _ in range(500)) < 0.1
    assert backoff_delay(retry, 1, retry_after=3.0) == 3.0
    assert backoff_delay(retry, 1, retry_after=retry.max_retry_after + 1) is None


# -- defaults that end: the stream idle timeout, the default deadline ------------------------


async def _stalled_after(first: list[bytes], stall: float = 30.0) -> Any:
    for chunk in first:
        yield chunk
    await asyncio.sleep(stall)  # far past the idle timeout: only a hang-up ends it
    yield b"data: [DONE]\n\n"


async def test_stream_idle_timeout_cuts_a_stream_that_stalls_after_the_first_event() -> None:
    from kernel.errors import ProviderTimeoutError
    from tests.http_fakes import openai_chunk

    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: _stalled_after([openai_chunk("first")]))

    with FakeHTTPServer(handler) as server:
        chat = ResilientChatModel(make_registry({"main": service(server, stream_idle_timeout=0.3)}), "main")
        seen: list[Any] = []
        async with asyncio.timeout(10):  # without the idle timeout this guard would end the test
            with pytest.raises(ProviderTimeoutError) as info:
                async for event in chat.stream(request()):
                    seen.append(event)
        assert [e.text for e in seen if isinstance(e, TextDelta)] == ["first"]
        assert info.value.service == "main" and "stream_idle_timeout" in str(info.value)
        assert "service=main" in str(info.value) and "model=fake-model" in str(info.value)
        assert len(chat_posts(server)) == 1  # the caller saw an event: not retried
        assert server.wait_for(lambda: server.disconnects == 1)  # the connection was closed


async def test_headers_then_nothing_is_retried_then_falls_back(ok_server: FakeHTTPServer) -> None:
    async def handler(req: Request) -> StreamReply:
        return StreamReply(lambda: _stalled_after([]))

    with FakeHTTPServer(handler) as server:
        registry = make_registry(
            {"main": service(server, stream_idle_timeout=0.3, fallbacks=["backup"]), "backup": service(ok_server)}
        )
        async with asyncio.timeout(10):
            events = [e async for e in ResilientChatModel(registry, "main").stream(request())]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "fallback"
    assert len(chat_posts(server)) == FAST_RETRY["max_attempts"]  # a timeout before any event is retried
    assert len(chat_posts(ok_server)) == 1


async def test_a_server_dripping_bytes_slower_than_events_cannot_hold_a_stream() -> None:
    from kernel.errors import ProviderTimeoutError
    from tests.http_fakes import openai_chunk

    event = openai_chunk("never complete")

    async def drip() -> Any:
        for i in range(len(event)):  # one byte every 0.1 s: the connection never goes quiet
            await asyncio.sleep(0.1)
            yield event[i : i + 1]

    async def handler(req: Request) -> StreamReply:
        return StreamReply(drip)

    with FakeHTTPServer(handler) as server:
        retry = {**FAST_RETRY, "max_attempts": 2}
        chat = ResilientChatModel(make_registry({"main": service(server, stream_idle_timeout=0.4, retry=retry)}),
                                  "main")
        async with asyncio.timeout(10):
            with pytest.raises(ProviderTimeoutError, match="service=main"):
                async for _ in chat.stream(request()):
                    pass
        assert len(chat_posts(server)) == 2
        assert server.wait_for(lambda: server.disconnects == 2)
        assert server.streams_finished == 0


def test_defaults_of_service_settings_apply_to_services_added_in_code() -> None:
    from kernel.settings import ServiceSettings

    defaults = ServiceSettings.model_validate({"provider": "x"})
    assert (defaults.deadline, defaults.stream_idle_timeout) == (600.0, 120.0)
    registry = make_registry({}, breaker={"failures": 3, "cooldown": 7.0})
    registry.add_service("coded", OpenAIChatModel("coded-model", api_key=SECRET, base_url="http://127.0.0.1:9/v1"))
    chat = ResilientChatModel(registry, "coded")
    [target] = chat.chain()
    assert chat._deadline == defaults.deadline  # was: no deadline at all
    assert target.idle_timeout == defaults.stream_idle_timeout
    assert target.max_concurrency == defaults.max_concurrency
    assert (target.breaker.failures, target.breaker.cooldown) == (3, 7.0)  # the kernel's breaker
    assert target.retry == registry.settings.retry

    configured = ResilientChatModel(make_registry({"main": {"provider": "openai", "api_key": SECRET}}), "main")
    [main] = configured.chain()
    assert configured._deadline == 600.0 and main.idle_timeout == 120.0
