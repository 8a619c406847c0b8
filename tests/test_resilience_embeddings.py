"""The one resilience layer around embedding services (and a configured chat service), with
the HTTP client injected into *configured* services: `Kernel(http_clients={name: client})`.

The provider is faked at the HTTP boundary only (`httpx2.MockTransport`; the openai SDK is
built on httpx2) with OpenAI's `/v1/embeddings` and `/v1/chat/completions` wire formats.
The services keep their configuration (retries, Retry-After, fallbacks, deadline, the
concurrency bound), which `add_service` with a hand-built client could not give.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from kernel import Kernel
from kernel.contents import ChatMessage, ChatRequest
from kernel.errors import ConfigurationError, DeadlineExceededError, ProviderStatusError
from kernel.settings import KernelSettings, RetrySettings, ServiceSettings

MODEL = "emb-model"
DIMENSION = 3
NO_BACKOFF = RetrySettings(max_attempts=3, initial_backoff=0, jitter=0)

Answer = Callable[["Fake", httpx2.Request], Awaitable[httpx2.Response]]


@dataclass
class Fake:
    """An async MockTransport handler: answers with `answer(self, request)` and keeps
    every request and when it arrived, and how many requests were in flight at most."""

    answer: Answer
    requests: list[httpx2.Request] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.answer(self, request)
        finally:
            self.in_flight -= 1

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))


def vectors_of(texts: list[str], mark: float, dimension: int = DIMENSION) -> list[list[float]]:
    """The vectors a fake server answers: [mark, len(text), 0, ...] per text."""
    return [[mark, float(len(t)), *([0.0] * (dimension - 2))] for t in texts]


def embeddings(request: httpx2.Request, mark: float, dimension: int = DIMENSION) -> httpx2.Response:
    """OpenAI's /v1/embeddings answer for the texts of `request`."""
    body = json.loads(request.content)
    assert request.url.path == "/v1/embeddings"
    assert body["model"] and body["encoding_format"] == "float"
    data = [
        {"object": "embedding", "index": i, "embedding": vector}
        for i, vector in enumerate(vectors_of(body["input"], mark, dimension))
    ]
    return httpx2.Response(
        200,
        json={"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3}},
    )


def failure(status: int, message: str = "busy", headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers or {}, json={"error": {"message": message, "type": "server_error"}})


def ok(mark: float, dimension: int = DIMENSION) -> Answer:
    async def answer(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        return embeddings(request, mark, dimension)

    return answer


def always(status: int) -> Answer:
    async def answer(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        return failure(status)

    return answer


def embedding_service(**kw: Any) -> ServiceSettings:
    settings: dict[str, Any] = {
        "provider": "openai",
        "kind": "embedding",
        "model": MODEL,
        "base_url": "http://fake/v1",
        "options": {"dimension": DIMENSION},
        "retry": NO_BACKOFF,
        **kw,
    }
    return ServiceSettings.model_validate(settings)


def make_kernel(services: dict[str, ServiceSettings], fakes: dict[str, Fake]) -> Kernel:
    return Kernel(
        KernelSettings(services=services),
        load_entry_points=False,
        http_clients={name: fake.client() for name, fake in fakes.items()},
    )


# -- retries -------------------------------------------------------------------------


async def test_a_503_then_a_200_is_retried_once_and_answers() -> None:
    async def answer(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        return failure(503) if len(fake.requests) == 1 else embeddings(request, 1.0)

    fake = Fake(answer)
    async with make_kernel({"vectors": embedding_service()}, {"vectors": fake}) as kernel:
        vectors = await kernel.services.embedding("vectors").embed(["a", "bb"])
    assert vectors == vectors_of(["a", "bb"], 1.0)
    assert len(fake.requests) == 2
    assert json.loads(fake.requests[0].content) == json.loads(fake.requests[1].content)  # the same request again


@pytest.mark.parametrize("header", [{"retry-after": "0.2"}, {"retry-after-ms": "200"}])
async def test_a_retry_after_within_the_cap_is_waited_for(header: dict[str, str]) -> None:
    async def answer(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        return failure(429, "slow down", header) if len(fake.requests) == 1 else embeddings(request, 1.0)

    fake = Fake(answer)
    # Without the header the retry would follow at once (no backoff, no jitter).
    service = embedding_service(retry=RetrySettings(max_attempts=2, initial_backoff=0, jitter=0, max_retry_after=1))
    async with make_kernel({"vectors": service}, {"vectors": fake}) as kernel:
        vectors = await kernel.services.embedding("vectors").embed(["abc"])
    assert vectors == vectors_of(["abc"], 1.0)
    first, second = fake.arrivals
    assert 0.2 - 0.005 <= second - first < 1.0  # asyncio's timers may fire a clock tick early


async def test_400_is_neither_retried_nor_fallen_back_from() -> None:
    primary = Fake(always(400))
    backup = Fake(ok(2.0))
    services = {"vectors": embedding_service(fallbacks=["backup"]), "backup": embedding_service()}
    async with make_kernel(services, {"vectors": primary, "backup": backup}) as kernel:
        with pytest.raises(ProviderStatusError) as info:
            await kernel.services.embedding("vectors").embed(["a"])
    assert info.value.status_code == 400 and not info.value.retryable
    assert (info.value.service, info.value.provider, info.value.model) == ("vectors", "openai", MODEL)
    assert len(primary.requests) == 1
    assert backup.requests == []


# -- fallbacks -----------------------------------------------------------------------


async def test_an_exhausted_service_falls_back_to_one_with_the_same_model_and_dimension() -> None:
    primary = Fake(always(503))
    backup = Fake(ok(2.0))
    services = {"vectors": embedding_service(fallbacks=["backup"]), "backup": embedding_service()}
    async with make_kernel(services, {"vectors": primary, "backup": backup}) as kernel:
        vectors = await kernel.services.embedding("vectors").embed(["a", "bb", "ccc"])
    assert vectors == vectors_of(["a", "bb", "ccc"], 2.0)  # the backup's answer
    assert len(primary.requests) == NO_BACKOFF.max_attempts
    assert len(backup.requests) == 1


@pytest.mark.parametrize(
    ("backup_settings", "backup_dimension"),
    [({"model": "other-model"}, DIMENSION), ({"options": {"dimension": 4}}, 4)],
    ids=["other-model", "other-dimension"],
)
async def test_a_fallback_serving_another_model_or_dimension_is_a_configuration_error(
    backup_settings: dict[str, Any], backup_dimension: int
) -> None:
    primary = Fake(always(503))
    backup = Fake(ok(2.0, backup_dimension))
    services = {"vectors": embedding_service(fallbacks=["backup"]), "backup": embedding_service(**backup_settings)}
    async with make_kernel(services, {"vectors": primary, "backup": backup}) as kernel:
        with pytest.raises(ConfigurationError) as info:
            await kernel.services.embedding("vectors").embed(["a"])
    message = str(info.value)
    assert "'vectors'" in message and "'backup'" in message
    assert backup.requests == []  # no vector of another model is ever fetched, let alone returned
    assert primary.requests == []  # found on the first call, not only once the primary fails


# -- deadline and concurrency -------------------------------------------------------


async def test_the_deadline_ends_a_hanging_call_with_an_error_naming_the_service() -> None:
    async def hang(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        return embeddings(request, 1.0)

    fake = Fake(hang)
    async with make_kernel({"vectors": embedding_service(deadline=0.3)}, {"vectors": fake}) as kernel:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeadlineExceededError) as info:
            await kernel.services.embedding("vectors").embed(["a"])
        elapsed = loop.time() - start
    assert 0.3 <= elapsed < 30  # ended by the deadline, not by the server (which holds 30 s)
    assert "'vectors'" in str(info.value) and MODEL in str(info.value)
    assert len(fake.requests) == 1 and fake.in_flight == 0  # the hanging request was cancelled


async def test_at_most_max_concurrency_calls_are_in_flight() -> None:
    async def slow(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0.1)
        return embeddings(request, 1.0)

    fake = Fake(slow)
    async with make_kernel({"vectors": embedding_service(max_concurrency=2)}, {"vectors": fake}) as kernel:
        service = kernel.services.embedding("vectors")
        results = await asyncio.gather(*(service.embed([f"text {i}"]) for i in range(6)))
    assert results == [vectors_of([f"text {i}"], 1.0) for i in range(6)]
    assert len(fake.requests) == 6
    assert fake.peak == 2  # bounded, and the bound was reached (the calls did overlap)


# -- a configured chat service with an injected client -------------------------------


def completion(text: str) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    )


def chat_service(**kw: Any) -> ServiceSettings:
    settings: dict[str, Any] = {
        "provider": "openai",
        "model": "m",
        "base_url": "http://fake/v1",
        "retry": NO_BACKOFF,
        "fallbacks": ["backup"],
        "deadline": 5.0,
        **kw,
    }
    return ServiceSettings.model_validate(settings)


async def test_a_configured_chat_service_with_an_injected_client_keeps_its_retries() -> None:
    async def answer(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        return failure(503) if len(fake.requests) <= 2 else completion("third time lucky")

    primary = Fake(answer)
    backup = Fake(lambda fake, request: asyncio.sleep(0, completion("from backup")))
    services = {"chat": chat_service(), "backup": chat_service(fallbacks=[])}
    async with make_kernel(services, {"chat": primary, "backup": backup}) as kernel:
        response = await kernel.complete(ChatRequest([ChatMessage.user("hi")]), service="chat")
    assert response.text == "third time lucky"
    assert len(primary.requests) == 3 and backup.requests == []
    assert json.loads(primary.requests[0].content)["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_configured_chat_service_with_an_injected_client_keeps_fallbacks_and_deadline() -> None:
    primary = Fake(always(503))
    backup = Fake(lambda fake, request: asyncio.sleep(0, completion("from backup")))
    services = {"chat": chat_service(), "backup": chat_service(fallbacks=[])}
    async with make_kernel(services, {"chat": primary, "backup": backup}) as kernel:
        result = await kernel.invoke_prompt("hi", service="chat")
    assert str(result) == "from backup"
    assert len(primary.requests) == NO_BACKOFF.max_attempts and len(backup.requests) == 1

    async def hang(fake: Fake, request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        return completion("too late")

    slow = Fake(hang)
    services = {"chat": chat_service(deadline=0.3), "backup": chat_service(fallbacks=[])}
    async with make_kernel(services, {"chat": slow, "backup": Fake(always(503))}) as kernel:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeadlineExceededError, match="'chat'"):
            await kernel.complete(ChatRequest([ChatMessage.user("hi")]), service="chat")
        assert loop.time() - start < 30  # the deadline ended it, not the server
    assert len(slow.requests) == 1
