"""The Anthropic connector, faked only at the HTTP boundary (httpx2.MockTransport) with
payloads in the documented Messages API wire format, streaming included."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from connectors.anthropic_models import AnthropicChatModel, chat_factory
from kernel.contents import (
    ChatMessage,
    ChatRequest,
    StreamAccumulator,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    UsageEvent,
)
from kernel.errors import MissingSecretError, ProviderStatusError
from kernel.services import ServiceRegistry
from kernel.services.resilience import ResilientChatModel
from kernel.settings import KernelSettings, ServiceSettings

SECRET = "sk-ant-test-SECRET-987654321"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class Recorder:
    """A MockTransport handler answering from a queue and keeping every request."""

    def __init__(self, *responses: httpx2.Response | Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return response(request) if callable(response) else response

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def model(recorder: Recorder, **kw: Any) -> AnthropicChatModel:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    return AnthropicChatModel("claude-test", api_key=SECRET, http_client=client, **kw)


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-20250101",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
        },
    )


def sse(*events: dict[str, Any]) -> httpx2.Response:
    text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def error(status: int, kind: str, text: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"type": "error", "error": {"type": kind, "message": text}}
    return httpx2.Response(status, json=body, headers=headers or {})


HELLO = message([{"type": "text", "text": "Hello!"}])


# -- request mapping ------------------------------------------------------------------


async def test_system_field_tool_results_in_one_user_turn_and_defaults() -> None:
    rec = Recorder(HELLO)
    calls = [
        ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("toolu_2", "get_weather", '{"city": "Oslo"}'),
    ]
    request = ChatRequest(
        [
            ChatMessage.system("Be brief."),
            ChatMessage.user("Weather in Paris and Oslo?"),
            ChatMessage.system("Use Celsius."),
            ChatMessage.assistant("Let me check.", calls),
            ChatMessage("tool", "18C", tool_call_id="toolu_1", name="get_weather"),
            ChatMessage("tool", "9C", tool_call_id="toolu_2", name="get_weather"),
            ChatMessage.user("Thanks, and tomorrow?"),
        ],
        tools=[WEATHER],
        settings={"stop": "END", "seed": 7, "presence_penalty": 0.5},
    )
    response = await model(rec).complete(request)
    assert response.text == "Hello!"
    body = rec.body
    sent = rec.requests[-1]
    assert sent.url.path == "/v1/messages"
    # the key is sent as x-api-key or (SDK 2.x) as a bearer token
    assert SECRET in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert body["system"] == "Be brief.\n\nUse Celsius."
    assert body["max_tokens"] == 1024
    assert body["stop_sequences"] == ["END"]
    assert "seed" not in body and "presence_penalty" not in body
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    assistant = body["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Let me check."}
    assert [(b["type"], b["id"], b["input"]) for b in assistant[1:]] == [
        ("tool_use", "toolu_1", {"city": "Paris"}),
        ("tool_use", "toolu_2", {"city": "Oslo"}),
    ]
    results = body["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert [(b["tool_use_id"], b["content"]) for b in results[:2]] == [("toolu_1", "18C"), ("toolu_2", "9C")]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather of a city", "input_schema": WEATHER.parameters}
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice("auto"), {"type": "auto"}),
        (ToolChoice("required"), {"type": "any"}),
        (ToolChoice("none"), {"type": "none"}),
        (ToolChoice.parse("get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_tool_choice_mapping(choice: ToolChoice, expected: dict[str, Any]) -> None:
    rec = Recorder(HELLO)
    await model(rec).complete(ChatRequest([ChatMessage.user("hi")], tools=[WEATHER], tool_choice=choice))
    assert rec.body["tool_choice"] == expected


async def test_settings_defaults_and_sampling_parameters() -> None:
    rec = Recorder(HELLO)
    chat = model(rec, settings={"max_tokens": 64, "temperature": 0.1})
    await chat.complete(ChatRequest([ChatMessage.user("hi")], settings={"temperature": 0.7, "top_k": 5}))
    body = rec.body
    assert (body["max_tokens"], body["temperature"], body["top_k"]) == (64, 0.7, 5)


# -- responses ------------------------------------------------------------------------


async def test_text_response_with_cache_usage() -> None:
    rec = Recorder(
        message([{"type": "text", "text": "Hi there"}], cache_read_input_tokens=30, cache_creation_input_tokens=4)
    )
    response = await model(rec).complete(ChatRequest([ChatMessage.user("hi")]))
    assert response.text == "Hi there"
    assert response.finish_reason == "stop"
    assert response.model == "claude-test-20250101"
    usage = response.usage
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (44, 30, 4)
    assert (usage.output_tokens, usage.requests) == (5, 1)


async def test_multiple_blocks_with_tool_use() -> None:
    rec = Recorder(
        message(
            [
                {"type": "text", "text": "Checking "},
                {"type": "text", "text": "both."},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
            stop="tool_use",
        )
    )
    response = await model(rec).complete(ChatRequest([ChatMessage.user("w?")], tools=[WEATHER]))
    assert response.text == "Checking both."
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("toolu_a", "get_weather", {"city": "Paris"}),
        ("toolu_b", "get_weather", {"city": "Oslo"}),
    ]


async def test_max_tokens_finish_reason() -> None:
    rec = Recorder(message([{"type": "text", "text": "cut"}], stop="max_tokens"))
    response = await model(rec).complete(ChatRequest([ChatMessage.user("long")]))
    assert response.finish_reason == "length"


async def test_json_output_via_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    rec = Recorder(
        message(
            [{"type": "tool_use", "id": "toolu_o", "name": "person", "input": {"name": "Ada", "age": 36}}],
            stop="tool_use",
        )
    )
    request = ChatRequest([ChatMessage.user("Who?")], output_schema=schema, output_schema_name="person")
    response = await model(rec).complete(request)
    assert json.loads(response.text) == {"name": "Ada", "age": 36}
    assert response.tool_calls == []
    assert response.finish_reason == "stop"
    body = rec.body
    assert body["tool_choice"] == {"type": "tool", "name": "person"}
    assert body["tools"][0]["input_schema"] == schema


async def test_json_output_of_a_non_object_schema_is_wrapped_and_unwrapped() -> None:
    rec = Recorder(
        message([{"type": "tool_use", "id": "t", "name": "output", "input": {"value": ["a", "b"]}}], stop="tool_use")
    )
    request = ChatRequest([ChatMessage.user("list")], output_schema={"type": "array", "items": {"type": "string"}})
    response = await model(rec).complete(request)
    assert json.loads(response.text) == ["a", "b"]
    assert rec.body["tools"][0]["input_schema"]["properties"]["value"]["type"] == "array"


# -- streaming ------------------------------------------------------------------------

STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_s",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-test-20250101",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "output_tokens": 1,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 5,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay, "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "checking."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_s1", "name": "get_weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty": "San Fra'}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ncisco"}'}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_s2", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
]


async def test_stream_text_and_tool_calls_assemble() -> None:
    rec = Recorder(sse(*STREAM))
    events = [e async for e in model(rec).stream(ChatRequest([ChatMessage.user("w?")], tools=[WEATHER]))]
    assert rec.body["stream"] is True
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Okay, ", "checking."]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, "toolu_s1", "get_weather", "")
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], StreamEnd)
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    response = acc.response()
    assert response.text == "Okay, checking."
    assert [(c.id, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("toolu_s1", {"city": "San Francisco"}),
        ("toolu_s2", {"city": "Oslo"}),
    ]
    assert response.finish_reason == "tool_calls"
    assert response.model == "claude-test-20250101"
    usage = response.usage
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.output_tokens) == (40, 10, 5, 89)


async def test_stream_of_json_output_is_text() -> None:
    start = dict(STREAM[0])
    events = [
        start,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "output", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"value": [1, '},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "2]}"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    rec = Recorder(sse(*events))
    request = ChatRequest([ChatMessage.user("nums")], output_schema={"type": "array", "items": {"type": "integer"}})
    acc = StreamAccumulator()
    async for event in model(rec).stream(request):
        acc.add(event)
    response = acc.response()
    assert json.loads(response.text) == [1, 2]
    assert response.tool_calls == []
    assert response.finish_reason == "stop"


async def test_error_event_inside_a_stream_is_overloaded_and_retryable() -> None:
    events = [STREAM[0], {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    rec = Recorder(sse(*events))
    with pytest.raises(ProviderStatusError) as info:
        async for _ in model(rec).stream(ChatRequest([ChatMessage.user("hi")])):
            pass
    assert info.value.status_code == 529
    assert info.value.retryable


# -- errors ---------------------------------------------------------------------------


async def test_429_with_retry_after() -> None:
    rec = Recorder(error(429, "rate_limit_error", "Number of requests exceeded", {"retry-after": "7"}))
    with pytest.raises(ProviderStatusError) as info:
        await model(rec).complete(ChatRequest([ChatMessage.user("hi")]))
    err = info.value
    assert (err.status_code, err.retry_after, err.retryable) == (429, 7.0, True)
    assert (err.provider, err.model) == ("anthropic", "claude-test")
    assert "Number of requests exceeded" in str(err)
    assert len(rec.requests) == 1  # the SDK does not retry on its own


async def test_529_overloaded_is_retryable() -> None:
    rec = Recorder(error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(ProviderStatusError) as info:
        await model(rec).complete(ChatRequest([ChatMessage.user("hi")]))
    assert (info.value.status_code, info.value.retryable) == (529, True)


async def test_400_is_a_request_error_and_hides_the_key() -> None:
    rec = Recorder(error(400, "invalid_request_error", f"bad request with key {SECRET}"))
    with pytest.raises(ProviderStatusError) as info:
        await model(rec).complete(ChatRequest([ChatMessage.user("hi")]))
    assert (info.value.status_code, info.value.retryable) == (400, False)
    assert "bad request" in str(info.value)
    assert SECRET not in str(info.value)


async def test_resilience_retries_529_then_succeeds() -> None:
    rec = Recorder(error(529, "overloaded_error", "Overloaded", {"retry-after": "0"}), HELLO)
    registry = ServiceRegistry(KernelSettings(retry={"max_attempts": 3, "initial_backoff": 0.01}))
    registry.add_service("claude", model(rec), kind="chat")
    response = await ResilientChatModel(registry, "claude").complete(ChatRequest([ChatMessage.user("hi")]))
    assert response.text == "Hello!"
    assert len(rec.requests) == 2


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    svc = ServiceSettings(provider="anthropic", model="claude-test")
    with pytest.raises(MissingSecretError) as info:
        chat_factory("claude", svc, KernelSettings())
    assert "ANTHROPIC_API_KEY" in str(info.value) and "[services.claude]" in str(info.value)


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    chat = chat_factory("claude", ServiceSettings(provider="anthropic", model="claude-test"), KernelSettings())
    assert chat.model == "claude-test" and SECRET not in repr(chat)


async def test_wrapped_schema_keeps_its_definitions_at_the_root() -> None:
    """`$ref`s resolve against the root of the tool's input_schema: a wrapped array of
    pydantic models must carry its `$defs` there, not under `properties.value`."""
    from pydantic import BaseModel, TypeAdapter

    class Item(BaseModel):
        name: str

    schema = TypeAdapter(list[Item]).json_schema()
    assert "$defs" in schema
    rec = Recorder(
        message([{"type": "tool_use", "id": "t", "name": "output", "input": {"value": [{"name": "a"}]}}],
                stop="tool_use")
    )
    response = await model(rec).complete(ChatRequest([ChatMessage.user("list")], output_schema=schema))
    assert json.loads(response.text) == [{"name": "a"}]
    sent = rec.body["tools"][0]["input_schema"]
    assert sent["$defs"] == schema["$defs"]
    assert "$defs" not in sent["properties"]["value"]
    assert sent["properties"]["value"]["items"] == {"$ref": "#/$defs/Item"}
