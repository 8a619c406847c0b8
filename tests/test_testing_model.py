"""kernel.testing.ScriptedChatModel: the scripted model users test their plugins with."""

from __future__ import annotations

import json

import pytest

from kernel.contents import ChatMessage, ChatRequest, StreamAccumulator, StreamEnd, TextDelta, ToolCallDelta, Usage
from kernel.errors import KernelError, ProviderStatusError
from kernel.testing import ScriptedChatModel, ScriptedReply, error_reply, json_reply, tool_call, tool_calls


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest([ChatMessage("user", text)])


async def test_replies_in_order_and_requests_recorded() -> None:
    model = ScriptedChatModel(["one", "two"])
    first = await model.complete(request("a"))
    second = await model.complete(request("b"))
    assert (first.message.content, second.message.content) == ("one", "two")
    assert first.finish_reason == "stop" and first.model == "scripted-model"
    assert first.usage.requests == 1 and first.usage.input_tokens == 10
    assert [r.messages[0].content for r in model.requests] == ["a", "b"]
    assert model.last_request.messages[0].content == "b"


async def test_empty_queue_is_a_clear_error_and_default_answers() -> None:
    model = ScriptedChatModel(["only"])
    await model.complete(request())
    with pytest.raises(KernelError, match=r"no reply queued for request #2.*second"):
        await model.complete(request("second"))
    fallback = ScriptedChatModel(default="always")
    assert (await fallback.complete(request())).message.content == "always"
    assert (await fallback.complete(request())).message.content == "always"
    with pytest.raises(KernelError, match="no request"):
        ScriptedChatModel().last_request  # noqa: B018


async def test_tool_calls_json_errors_and_callables() -> None:
    boom = ProviderStatusError("rate limited", status_code=429)
    model = ScriptedChatModel([
        tool_call("math.add", a=1, b=2),
        tool_calls(("math.add", {"a": 1}), ("time.now", {}, "my-id")),
        json_reply({"x": [1, 2]}),
        error_reply(boom),
        ValueError("raised directly"),
        lambda req: f"echo {req.messages[-1].content}",
        ScriptedReply("custom", usage=Usage(3, 4, requests=1), finish_reason="length"),
    ])
    single = await model.complete(request())
    assert single.finish_reason == "tool_calls"
    call = single.message.tool_calls[0]
    assert call.name == "math-add" and json.loads(call.arguments) == {"a": 1, "b": 2}
    double = await model.complete(request())
    assert [c.name for c in double.message.tool_calls] == ["math-add", "time-now"]
    assert double.message.tool_calls[1].id == "my-id"
    assert double.message.tool_calls[0].id != double.message.tool_calls[1].id
    assert json.loads((await model.complete(request())).message.content) == {"x": [1, 2]}
    with pytest.raises(ProviderStatusError):
        await model.complete(request())
    with pytest.raises(ValueError, match="raised directly"):
        await model.complete(request())
    assert (await model.complete(request("ping"))).message.content == "echo ping"
    custom = await model.complete(request())
    assert custom.finish_reason == "length" and custom.usage.output_tokens == 4


async def test_raw_invalid_tool_arguments_can_be_scripted() -> None:
    model = ScriptedChatModel([tool_call("math.add", "{not json")])
    assert (await model.complete(request())).message.tool_calls[0].arguments == "{not json"


async def test_stream_events_accumulate_to_the_reply() -> None:
    model = ScriptedChatModel(["a fairly long streamed answer", tool_call("math.add", a=1)])
    events = [e async for e in model.stream(request())]
    assert sum(isinstance(e, TextDelta) for e in events) > 1
    assert isinstance(events[-1], StreamEnd)
    acc = StreamAccumulator()
    for e in events:
        acc.add(e)
    assert acc.response().message.content == "a fairly long streamed answer"
    events = [e async for e in model.stream(request())]
    assert any(isinstance(e, ToolCallDelta) for e in events)
    acc = StreamAccumulator()
    for e in events:
        acc.add(e)
    call = acc.response().message.tool_calls[0]
    assert call.name == "math-add" and json.loads(call.arguments) == {"a": 1}
    assert len(model.requests) == 2


async def test_queue_more_later() -> None:
    model = ScriptedChatModel().queue("x", "y")
    assert [(await model.complete(request())).message.content for _ in range(2)] == ["x", "y"]
