"""The OpenAI connector against a real OpenAI-compatible server: llama-cpp-python's server
with Gemma 3 270M on loopback (the `llama_server` fixture)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from connectors.openai_models import OpenAIChatModel, OpenAIEmbeddingModel, chat_factory, embedding_factory
from kernel.contents import (
    ChatMessage,
    ChatRequest,
    StreamAccumulator,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolChoice,
    ToolSpec,
    UsageEvent,
)
from kernel.errors import ConfigurationError, MissingSecretError, ProviderConnectionError
from kernel.settings import KernelSettings, ServiceSettings
from tests.fixtures_llama import LlamaServer

pytestmark = pytest.mark.llama_server

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def chat(llama_server: LlamaServer) -> OpenAIChatModel:
    svc = ServiceSettings(
        provider="openai",
        model=llama_server.model,
        base_url=llama_server.base_url,
        settings={"temperature": 0.0, "seed": 1},
        options={"json_schema_mode": "json_object"},
        timeout=120,
    )
    return chat_factory("gemma", svc, KernelSettings())


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user(text)], **kw)


async def test_chat(chat: OpenAIChatModel) -> None:
    response = await chat.complete(ask("What is the capital of France?", settings={"max_tokens": 16}))
    assert response.text.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert response.usage.requests == 1
    assert response.model  # the provider's model id


async def test_streaming_text_then_usage_then_end(chat: OpenAIChatModel) -> None:
    events = [e async for e in chat.stream(ask("Count from one to ten.", settings={"max_tokens": 20}))]
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert len(texts) >= 3
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], StreamEnd)
    first_usage = next(i for i, e in enumerate(events) if isinstance(e, UsageEvent))
    assert all(isinstance(e, TextDelta) for e in events[:first_usage])
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    assert acc.response().text == "".join(t.text for t in texts)


async def test_forced_tool_call(chat: OpenAIChatModel) -> None:
    request = ask(
        "What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice=ToolChoice.parse("get_weather"),
        settings={"max_tokens": 48},
    )
    response = await chat.complete(request)
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "get_weather" and call.id
    arguments = json.loads(call.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str)


async def test_tool_result_round_trip_is_accepted(chat: OpenAIChatModel) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    request = ChatRequest(
        [
            ChatMessage.system("You report the weather."),
            ChatMessage.user("Weather in Paris?"),
            ChatMessage.assistant("", [call]),
            ChatMessage("tool", "18 degrees and sunny", tool_call_id="call_1", name="get_weather"),
        ],
        tools=[WEATHER],
        settings={"max_tokens": 16},
    )
    response = await chat.complete(request)
    assert response.finish_reason in ("stop", "length", "tool_calls")


async def test_json_schema_output_parses(chat: OpenAIChatModel) -> None:
    request = ask("Invent a person, as JSON.", output_schema=PERSON, settings={"max_tokens": 48})
    data = json.loads((await chat.complete(request)).text)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


async def test_unknown_setting_is_refused_before_any_request(chat: OpenAIChatModel) -> None:
    with pytest.raises(ConfigurationError, match=r"'max_token'.*service 'gemma'|service 'gemma'.*'max_token'"):
        await chat.complete(ask("hi", settings={"max_token": 3}))
    with pytest.raises(ConfigurationError, match="n=2"):
        await chat.complete(ask("hi", settings={"n": 2}))


async def test_request_body_mapping() -> None:
    """The wire body for messages, tools, tool_choice and structured output (json_schema mode)."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        return httpx2.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-test-2025",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": 2,
                    "total_tokens": 102,
                    "prompt_tokens_details": {"cached_tokens": 64},
                },
            },
        )

    chat = OpenAIChatModel(
        "gpt-test",
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        settings={"temperature": 0.2},
    )
    call = ToolCall("c1", "get_weather", '{"city":"Oslo"}')
    request = ChatRequest(
        [
            ChatMessage.system("sys"),
            ChatMessage.user("q"),
            ChatMessage.assistant("", [call]),
            ChatMessage("tool", "9C", tool_call_id="c1"),
        ],
        tools=[WEATHER],
        tool_choice=ToolChoice("required"),
        settings={"max_tokens": 5, "stop": ["\n"], "seed": 3},
        output_schema=PERSON,
        output_schema_name="person",
    )
    response = await chat.complete(request)
    body = bodies[0]
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "9C"}
    assert body["tools"][0]["function"]["parameters"] == WEATHER.parameters
    assert body["tool_choice"] == "required"
    assert (body["max_tokens"], body["stop"], body["seed"], body["temperature"]) == (5, ["\n"], 3, 0.2)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": False},
    }
    assert (response.usage.input_tokens, response.usage.cached_tokens) == (100, 64)
    assert response.model == "gpt-test-2025"
    # Without tools, no tool options: the API refuses tool_choice/parallel_tool_calls alone.
    await chat.complete(ChatRequest([ChatMessage.user("q")], tool_choice=ToolChoice("none"),
                                    settings={"parallel_tool_calls": False}))
    assert "tool_choice" not in bodies[1] and "parallel_tool_calls" not in bodies[1] and "tools" not in bodies[1]


async def test_connection_refused_maps_to_connection_error() -> None:
    chat = OpenAIChatModel("m", api_key="sk-secret-value-123", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ProviderConnectionError) as info:
        await chat.complete(ask("hi"))
    assert info.value.retryable and "sk-secret-value-123" not in str(info.value)


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingSecretError, match=r"OPENAI_API_KEY.*\[services\.gpt\]"):
        chat_factory("gpt", ServiceSettings(provider="openai", model="gpt-4o"), KernelSettings())
    # a local OpenAI-compatible server needs no key
    local = chat_factory(
        "l", ServiceSettings(provider="openai", model="m", base_url="http://127.0.0.1:1/v1"), KernelSettings()
    )
    assert local.model == "m"
    svc = ServiceSettings(provider="openai", model="m", base_url="http://x/v1", options={"api_key_required": True})
    with pytest.raises(MissingSecretError):
        chat_factory("l", svc, KernelSettings())


async def test_embeddings_batching_and_dimension() -> None:
    seen: list[list[str]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        texts = json.loads(request.content)["input"]
        seen.append(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.0, 1.0]} for i, t in enumerate(texts)
        ]
        return httpx2.Response(
            200, json={"object": "list", "data": data, "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        )

    embedder = OpenAIEmbeddingModel(
        "my-embedder",
        api_key="sk-test",
        options={"dimension": 3, "batch_size": 2},
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    assert embedder.dimension == 3
    vectors = await embedder.embed(["a", "bb", "ccc", "dddd", "eeeee"])
    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [len(batch) for batch in seen] == [2, 2, 1]
    assert embedding_factory("e", ServiceSettings(provider="openai", api_key="k"), KernelSettings()).dimension == 1536
    with pytest.raises(ConfigurationError, match=r"options\.dimension"):
        embedding_factory("e", ServiceSettings(provider="openai", api_key="k", model="custom"), KernelSettings())


async def test_embeddings_give_up_at_once_on_a_retry_after_beyond_the_cap() -> None:
    """Embeddings go through the kernel's resilience layer, as chat does: a provider asking
    to wait longer than max_retry_after ends the call now instead of sleeping. The HTTP
    client is injected into the *configured* service, which keeps its retry settings."""
    from kernel import Kernel
    from kernel.errors import ProviderStatusError
    from kernel.settings import RetrySettings

    calls: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(429, headers={"retry-after": "3600"},
                               json={"error": {"message": "slow down", "type": "rate_limit"}})

    cap = 30.0
    settings = KernelSettings(services={"vectors": ServiceSettings(
        provider="openai", kind="embedding", model="my-embedder", api_key="sk-test", options={"dimension": 3},
        retry=RetrySettings(max_attempts=3, max_retry_after=cap))})
    kernel = Kernel(settings, load_entry_points=False,
                    http_clients={"vectors": httpx2.AsyncClient(transport=httpx2.MockTransport(handler))})
    with pytest.raises(ProviderStatusError) as info:
        # "Now": sleeping on the provider's hour, or on the cap, would run into this timeout
        # (the event loop's clock) instead of hanging; giving up takes milliseconds.
        async with asyncio.timeout(cap):
            await kernel.services.embedding("vectors").embed(["a"])
    assert info.value.status_code == 429 and info.value.service == "vectors"
    assert len(calls) == 1  # no retry: one request, then the 429 is the answer
    await kernel.aclose()
