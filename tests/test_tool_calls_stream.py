"""The tool loop as one event stream (kernel.tool_calls.stream_chat): with the scripted
model, and with the Anthropic connector faked at the HTTP boundary (SSE wire format)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from kernel import Kernel, KernelSettings, kernel_function
from kernel.chat import stream_chat
from kernel.chat.history import ChatHistory
from kernel.contents import (
    FinalMessage,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolChoice,
    UsageEvent,
)
from kernel.errors import ToolLoopError
from kernel.testing import ScriptedChatModel, ScriptedReply, tool_call, tool_calls


class Weather:
    def __init__(self) -> None:
        self.cities: list[str] = []

    @kernel_function
    async def get_temperature(self, city: str) -> str:
        """Current temperature of a city."""
        self.cities.append(city)
        await asyncio.sleep(0)
        return {"Paris": "18C", "Oslo": "9C"}.get(city, "unknown")


def make_kernel(weather: Weather) -> Kernel:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(weather, name="weather")
    return kernel


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- scripted model ------------------------------------------------------------------------


async def test_stream_event_order_with_the_scripted_model() -> None:
    weather = Weather()
    kernel = make_kernel(weather)
    calls = tool_calls(("weather.get_temperature", {"city": "Paris"}, "p"),
                       ("weather.get_temperature", {"city": "Oslo"}, "o")).tool_calls
    model = ScriptedChatModel([ScriptedReply(text="Checking.", tool_calls=calls), "Paris is 18C and Oslo is 9C."])
    kernel.services.add_service("test", model)
    history = ChatHistory()
    history.add_user("weather?")
    events = [e async for e in stream_chat(kernel, history)]

    # round 1: model deltas, usage, then a started/finished pair per call
    first_usage = kinds(events).index("UsageEvent")
    round_one = events[: first_usage + 1]
    assert {type(e) for e in round_one} <= {TextDelta, ToolCallDelta, UsageEvent}
    assert "".join(e.text for e in round_one if isinstance(e, TextDelta)) == "Checking."
    deltas = [e for e in round_one if isinstance(e, ToolCallDelta)]
    assert [d.index for d in deltas] == [0, 0, 1, 1]
    tool_events = [e for e in events if isinstance(e, ToolCallStarted | ToolCallFinished)]
    assert len(tool_events) == 4
    for call_id in ("p", "o"):
        started = next(i for i, e in enumerate(events) if isinstance(e, ToolCallStarted) and e.call.id == call_id)
        finished = next(i for i, e in enumerate(events) if isinstance(e, ToolCallFinished) and e.call.id == call_id)
        assert first_usage < started < finished
    finished_results = {e.call.id: e.result.content for e in events if isinstance(e, ToolCallFinished)}
    assert finished_results == {"p": "18C", "o": "9C"}
    assert sorted(weather.cities) == ["Oslo", "Paris"]
    # round 2: the answer, its usage, then exactly one FinalMessage, last
    last_tool = max(i for i, e in enumerate(events) if isinstance(e, ToolCallFinished))
    tail = events[last_tool + 1 :]
    assert kinds(tail)[-2:] == ["UsageEvent", "FinalMessage"]
    assert "".join(e.text for e in tail if isinstance(e, TextDelta)) == "Paris is 18C and Oslo is 9C."
    final = events[-1]
    assert isinstance(final, FinalMessage)
    assert final.message.content == "Paris is 18C and Oslo is 9C."
    assert final.usage.requests == 2 and final.usage.input_tokens == 20
    assert kinds(events).count("FinalMessage") == 1
    # the history got the whole turn, results paired in call order
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m.tool_call_id for m in history if m.role == "tool"] == ["p", "o"]
    assert history[1].content == "Checking."


async def test_stream_via_kernel_chat_stream_and_bad_call() -> None:
    weather = Weather()
    kernel = make_kernel(weather)
    model = ScriptedChatModel([tool_call("weather.get_temperature", "{not json", id="bad"), "sorry"])
    kernel.services.add_service("test", model)
    events = [e async for e in kernel.chat_stream("weather?", tool_choice="weather.get_temperature")]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len(finished) == 1 and finished[0].result.is_error
    assert finished[0].result.content.startswith("error: arguments of weather.get_temperature are not valid JSON")
    assert weather.cities == []
    assert model.requests[0].tool_choice == ToolChoice("required", "weather-get_temperature")
    assert model.requests[1].tool_choice == ToolChoice("auto")
    assert isinstance(events[-1], FinalMessage) and events[-1].message.content == "sorry"


async def test_stream_exhaustion_modes() -> None:
    weather = Weather()
    kernel = make_kernel(weather)

    def endless(request: Any) -> Any:
        if request.tool_choice == ToolChoice("none"):
            return "best effort"
        return tool_call("weather.get_temperature", city=f"c{len(weather.cities)}")

    kernel.services.add_service("test", ScriptedChatModel(default=endless))
    events = [e async for e in stream_chat(kernel, "go", policy={"max_rounds": 1})]
    assert isinstance(events[-1], FinalMessage) and events[-1].message.content == "best effort"
    assert len(weather.cities) == 1
    not_run = [e for e in events if isinstance(e, ToolCallFinished) and e.result.content.startswith("error: not run")]
    assert len(not_run) == 1
    with pytest.raises(ToolLoopError):
        async for _ in stream_chat(kernel, "go", policy={"max_rounds": 1, "on_exhausted": "error"}):
            pass


async def test_closing_the_stream_mid_round_cancels_running_calls() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Slow:
        @kernel_function
        async def wait(self) -> str:
            """Waits forever."""
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return "never"

    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(Slow(), name="slow")
    kernel.services.add_service("test", ScriptedChatModel([tool_call("slow.wait")]))
    stream = stream_chat(kernel, "go", policy={"tool_timeout": 120})
    async for event in stream:
        if isinstance(event, ToolCallStarted):
            break
    await asyncio.wait_for(started.wait(), 5)
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(cancelled.wait(), 5)


# --- Anthropic connector over SSE -------------------------------------------------------------


def sse(*events: dict[str, Any]) -> httpx2.Response:
    text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def message_start(input_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-20250101",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }


def tool_use_stream() -> httpx2.Response:
    """Text, then two tool_use blocks whose input arrives as input_json_delta pieces."""
    return sse(
        message_start(50),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_01P", "name": "weather-get_temperature", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty": "Par'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'is"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_02O", "name": "weather-get_temperature", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city"'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ': "Oslo"}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 40}},
        {"type": "message_stop"},
    )


def text_stream(text: str) -> httpx2.Response:
    return sse(
        message_start(90),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    )


async def test_anthropic_streamed_tool_use_blocks_are_answered_in_one_user_turn() -> None:
    from connectors.anthropic_models import AnthropicChatModel

    bodies: list[dict[str, Any]] = []
    replies = [tool_use_stream(), text_stream("Paris 18C, Oslo 9C.")]

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path.endswith("/v1/messages")
        bodies.append(json.loads(request.content))
        return replies.pop(0)

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    weather = Weather()
    kernel = make_kernel(weather)
    kernel.services.add_service(
        "claude", AnthropicChatModel("claude-test", api_key="sk-ant-test-0000000000", http_client=client)
    )
    events = [e async for e in stream_chat(kernel, "Weather in Paris and Oslo?", service="claude",
                                           settings={"max_tokens": 256})]

    assert sorted(weather.cities) == ["Oslo", "Paris"]
    started = [e.call for e in events if isinstance(e, ToolCallStarted)]
    assert {(c.id, json.loads(c.arguments)["city"]) for c in started} == {("toolu_01P", "Paris"), ("toolu_02O", "Oslo")}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Let me check.Paris 18C, Oslo 9C."
    final = events[-1]
    assert isinstance(final, FinalMessage) and final.message.content == "Paris 18C, Oslo 9C."
    assert final.usage.input_tokens == 140 and final.usage.output_tokens >= 52

    assert len(bodies) == 2
    first = bodies[0]
    assert first["stream"] is True
    assert [t["name"] for t in first["tools"]] == ["weather-get_temperature"]
    second = bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assistant_blocks = second[1]["content"]
    assert [b["type"] for b in assistant_blocks] == ["text", "tool_use", "tool_use"]
    assert [(b["id"], b["input"]) for b in assistant_blocks[1:]] == [("toolu_01P", {"city": "Paris"}),
                                                                    ("toolu_02O", {"city": "Oslo"})]
    results = second[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result"]
    assert [b["tool_use_id"] for b in results] == ["toolu_01P", "toolu_02O"]
    contents = [b["content"] if isinstance(b["content"], str) else b["content"][0]["text"] for b in results]
    assert contents == ["18C", "9C"]


# --- `kernel chat` --------------------------------------------------------------------------


def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, stdin: str, *argv: str,
            replies: tuple[Any, ...] = ()) -> tuple[int, ScriptedChatModel, Weather]:
    import io

    from kernel.cli import main

    config = tmp_path / "kernel.toml"
    config.write_text("standard_plugins = false\nplugin_autoload = false\n")
    weather = Weather()
    model = ScriptedChatModel(replies)

    def configure(kernel: Kernel) -> None:
        kernel.add_plugin(weather, name="weather")
        kernel.services.add_service("test", model)

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["chat", "--config", str(config), *argv], configure=configure)
    return code, model, weather


def test_cli_chat_streams_answers_and_reports_tool_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, model, weather = run_cli(
        monkeypatch, tmp_path, "weather in Paris?\n\nthanks\n/exit\nnot read\n",
        "--system", "be brief", "--plugin", "weather",
        replies=(tool_call("weather.get_temperature", city="Paris"), "It is 18C.", "You're welcome."),
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "It is 18C.\nYou're welcome.\n"
    assert '[tool] weather.get_temperature({"city": "Paris"}) -> 18C' in err
    assert weather.cities == ["Paris"]
    assert len(model.requests) == 3  # the empty line and the line after /exit were not sent
    assert [m.role for m in model.requests[2].messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert model.requests[0].messages[0].content == "be brief"
    assert [t.name for t in model.requests[0].tools] == ["weather-get_temperature"]


def test_cli_chat_no_tools_json_and_failed_turn(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from kernel.errors import ProviderError
    from kernel.testing import error_reply

    code, model, _ = run_cli(
        monkeypatch, tmp_path, "hello\nagain\n", "--no-tools", "--json",
        replies=(error_reply(ProviderError("bad request", status_code=400)), "hi there"),
    )
    out, err = capsys.readouterr()
    assert code == 1  # one turn failed, the session went on
    assert "error: bad request" in err
    record = json.loads(out.strip())
    assert record["text"] == "hi there" and record["tool_calls"] == [] and record["usage"]["requests"] == 1
    assert model.requests[-1].tools == []
    assert [m.content for m in model.requests[-1].messages] == ["again"]  # the failed turn was dropped


def test_cli_chat_unknown_plugin_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, model, _ = run_cli(monkeypatch, tmp_path, "hi\n", "--plugin", "nope")
    assert code == 2 and "nope" in capsys.readouterr().err and model.requests == []
