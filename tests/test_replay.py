"""Record and replay of model calls (`kernel.services.replay`, `kernel.services.cassettes`):
settings, matching on the normalised request, the miss error, streams, embeddings, the
resilience layer above the replay layer, secrets, and the cassette file itself."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kernel import Kernel, KernelSettings
from kernel.contents import ChatMessage, ChatRequest, StreamEvent, TextDelta, ToolCall, ToolChoice, ToolSpec
from kernel.errors import (
    ConfigurationError,
    DeadlineExceededError,
    KernelError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
)
from kernel.services import ReplayChatModel, ReplayMissError, ResilientChatModel, close_cassette, open_cassette
from kernel.settings import RetrySettings, ServiceSettings
from kernel.testing import ScriptedChatModel, error_reply, tool_call

SECRET = "sk-test-replay-9b8a7c6d5e4f"


@pytest.fixture(autouse=True)
def _fresh_cassettes() -> Iterator[None]:
    """Each test opens its cassettes anew (one object per file and process otherwise)."""
    from kernel.services import replay

    yield
    for cassette in list(replay._OPEN.values()):
        close_cassette(cassette)


def kernel(path: Path, mode: str, **settings: Any) -> Kernel:
    return Kernel(KernelSettings(replay=mode, replay_cassette=path, **settings), load_entry_points=False)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user(text)], **kw)


def reopen(path: Path, mode: str = "replay", **settings: Any) -> Kernel:
    """A new kernel on the same file, as a later test run would build it."""
    from kernel.services import replay

    for cassette in list(replay._OPEN.values()):
        close_cassette(cassette)
    return kernel(path, mode, **settings)


async def record_and_replay(tmp_path: Path, requests: Sequence[ChatRequest],
                            replies: Sequence[Any]) -> tuple[Path, list[Any], list[Any]]:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", ScriptedChatModel(replies))
    recorded = [await recording.services.chat("t").complete(r) for r in requests]
    replaying = reopen(path)
    replaying.services.add_service("t", ScriptedChatModel([]))  # answers nothing: replay must
    replayed = [await replaying.services.chat("t").complete(r) for r in requests]
    return path, recorded, replayed


# --- settings ------------------------------------------------------------------------------


def test_settings_from_the_environment_and_the_configuration_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert KernelSettings().replay == "off" and KernelSettings().replay_cassette is None
    monkeypatch.setenv("KERNEL_REPLAY", "replay")
    monkeypatch.setenv("KERNEL_REPLAY_CASSETTE", "tests/cassettes/demo.json")
    settings = KernelSettings()
    assert (settings.replay, settings.replay_cassette) == ("replay", Path("tests/cassettes/demo.json"))
    monkeypatch.delenv("KERNEL_REPLAY")
    monkeypatch.delenv("KERNEL_REPLAY_CASSETTE")
    project = tmp_path / "project"
    project.mkdir()
    (project / "kernel.toml").write_text('replay = "auto"\nreplay_cassette = "cassettes/app.json"\n')
    settings = KernelSettings.load(project / "kernel.toml")
    assert settings.replay == "auto"
    assert settings.replay_cassette == project / "cassettes" / "app.json"  # against the file's folder
    (project / "bad.toml").write_text('replay = "playback"\n')
    with pytest.raises(ConfigurationError, match="replay"):
        KernelSettings.load(project / "bad.toml")


def test_a_mode_without_a_cassette_or_a_missing_cassette_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="replay_cassette"):
        Kernel(KernelSettings(replay="replay"), load_entry_points=False)
    with pytest.raises(ConfigurationError, match=r"missing\.json does not exist.*--kernel-record"):
        kernel(tmp_path / "missing.json", "replay")
    (tmp_path / "other.json").write_text('{"cassettes": []}')
    with pytest.raises(ConfigurationError, match="not a kernel cassette"):
        kernel(tmp_path / "other.json", "replay")


def test_off_adds_no_layer_and_on_the_layer_sits_under_the_resilience_layer(tmp_path: Path) -> None:
    model = ScriptedChatModel([])
    plain = Kernel(KernelSettings(), load_entry_points=False)
    plain.services.add_service("t", model)
    assert plain.services.get("t") is model and plain.services.chat("t").inner is model
    replaying = kernel(tmp_path / "c.json", "record")
    replaying.services.add_service("t", model)
    wrapper = replaying.services.chat("t")
    assert isinstance(wrapper, ResilientChatModel) and isinstance(wrapper.inner, ReplayChatModel)
    assert wrapper.inner.requests is model.requests  # other attributes are the connector's
    assert (wrapper.provider, wrapper.model) == ("scripted", "scripted-model")
    with pytest.raises(KernelError, match="no service named 'nope'"):
        replaying.services.get("nope")


def test_auto_records_a_missing_cassette_and_replays_an_existing_one(tmp_path: Path) -> None:
    path = tmp_path / "auto.json"
    assert open_cassette(path, "auto").mode == "record"
    path.write_text('{"kernel_cassette": 1, "interactions": []}')
    assert open_cassette(path, "auto").mode == "record"  # the open one, for every kernel of the process
    close_cassette(open_cassette(path, "auto"))
    assert open_cassette(path, "auto").mode == "replay"


# --- chat: record, replay, match ----------------------------------------------------------


async def test_replay_answers_exactly_what_was_recorded_without_calling_the_model(tmp_path: Path) -> None:
    requests = [ask("hello"), ask("Weather?", tools=[ToolSpec("w", "weather", {"type": "object"})])]
    _, recorded, replayed = await record_and_replay(tmp_path, requests, ["Hi!", tool_call("w", city="Oslo")])
    assert replayed == recorded
    assert replayed[1].tool_calls[0].arguments == '{"city": "Oslo"}'


async def test_the_same_request_replays_its_recordings_in_order_then_the_last_again(tmp_path: Path) -> None:
    _, _, replayed = await record_and_replay(tmp_path, [ask("roll"), ask("roll")], ["4", "6"])
    assert [r.text for r in replayed] == ["4", "6"]
    replaying = kernel(tmp_path / "c.json", "replay")
    replaying.services.add_service("t", ScriptedChatModel([]))
    assert (await replaying.services.chat("t").complete(ask("roll"))).text == "6"


async def test_ids_timestamps_uuids_argument_spacing_and_the_user_setting_do_not_matter(tmp_path: Path) -> None:
    def history(call_id: str, when: str, run: str, arguments: str, user: str) -> ChatRequest:
        return ChatRequest([
            ChatMessage.user(f"What time is it? (run {run})"),
            ChatMessage.assistant("", [ToolCall(call_id, "time-now", arguments)]),
            ChatMessage("tool", when, tool_call_id=call_id, name="time-now"),
        ], settings={"user": user, "temperature": 0.2})

    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", ScriptedChatModel(["It is late."]))
    await recording.services.chat("t").complete(
        history("call_A1", "2024-05-01T10:00:00Z", "0b8e2f6c-2d6b-4c3e-9d8a-3f1e2a4b5c6d", '{"tz": "UTC", "f": 1}',
                "ada"))
    replaying = reopen(path)
    replaying.services.add_service("t", ScriptedChatModel([]))
    answer = await replaying.services.chat("t").complete(
        history("call_zz9", "2031-12-24T23:59:01.123+01:00", "7a1f0c5e-1b2c-4d3e-8f9a-0b1c2d3e4f5a",
                '{"f":1,"tz":"UTC"}', "grace"))
    assert answer.text == "It is late."
    stored = json.loads(path.read_text())["interactions"][0]["request"]
    assert stored["messages"][1]["tool_calls"][0]["id"] == stored["messages"][2]["tool_call_id"] == "call_1"
    assert stored["messages"][2]["content"] == "<timestamp>"
    assert stored["messages"][0]["content"] == "What time is it? (run <uuid>)"
    assert "user" not in stored["settings"]


@pytest.mark.parametrize("change", ["prompt", "temperature", "tools", "tool_choice", "schema", "service default",
                                    "model"])
async def test_what_changes_the_answer_misses(tmp_path: Path, change: str) -> None:
    tools = [ToolSpec("w", "weather", {"type": "object"})]
    base: dict[str, Any] = {"tools": tools, "tool_choice": ToolChoice("auto"), "settings": {"temperature": 0.0},
                            "output_schema": {"type": "object"}}
    svc = {"svc": ServiceSettings(provider="openai", model="m1", settings={"seed": 1}, api_key=SECRET)}
    path = tmp_path / "c.json"
    recording = kernel(path, "record", services=svc)
    recording.services.add_service("svc", ScriptedChatModel(["{}"]))
    await recording.services.chat("svc").complete(ask("q", **base))
    changed = dict(base)
    text = "q"
    if change == "prompt":
        text = "q?"
    elif change == "temperature":
        changed["settings"] = {"temperature": 0.7}
    elif change == "tools":
        changed["tools"] = [ToolSpec("w", "weather, now", {"type": "object"})]
    elif change == "tool_choice":
        changed["tool_choice"] = ToolChoice("required", "w")
    elif change == "schema":
        changed["output_schema"] = {"type": "array"}
    elif change == "service default":
        svc = {"svc": ServiceSettings(provider="openai", model="m1", settings={"seed": 2}, api_key=SECRET)}
    else:
        svc = {"svc": ServiceSettings(provider="openai", model="m2", settings={"seed": 1}, api_key=SECRET)}
    replaying = reopen(path, services=svc)
    if change in ("service default", "model"):  # the configuration changed: the same request misses
        with pytest.raises(ReplayMissError):
            await replaying.services.chat("svc").complete(ask("q", **base))
        return
    assert (await replaying.services.chat("svc").complete(ask("q", **base))).text == "{}"
    with pytest.raises(ReplayMissError):
        await replaying.services.chat("svc").complete(ask(text, **changed))


async def test_a_miss_is_a_named_kernel_error_with_the_closest_request_and_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", ScriptedChatModel(["Paris", "Rome", "Berlin"]))
    for city in ("France", "Italy", "Germany"):
        await recording.services.chat("t").complete(ask(f"What is the capital of {city}?"))
    replaying = reopen(path, services={"t": ServiceSettings(provider="openai", model="scripted-model",
                                                            fallbacks=["backup"], api_key=SECRET),
                                       "backup": ServiceSettings(provider="openai", model="x", api_key=SECRET)})
    replaying.services.add_service("t", ScriptedChatModel([]))
    replaying.services.add_service("backup", ScriptedChatModel(["a fallback must not answer a miss"]))
    with pytest.raises(ReplayMissError) as info:
        await replaying.services.chat("t").complete(ask("What is the capital of Italia?"))
    error = info.value
    assert isinstance(error, KernelError) and not isinstance(error, ProviderError)  # never retried nor fallen back
    assert "closest recorded request is interaction 2 of 3" in str(error)
    assert '-        "content": "What is the capital of Italy?",' in error.diff.splitlines()
    assert '+        "content": "What is the capital of Italia?",' in error.diff.splitlines()
    assert error.cassette == path and error.request["messages"][0]["content"] == "What is the capital of Italia?"
    assert error.closest is not None and error.closest["messages"][0]["content"] == "What is the capital of Italy?"
    empty = tmp_path / "empty.json"
    empty.write_text('{"kernel_cassette": 1, "interactions": []}')
    nothing = reopen(empty)
    nothing.services.add_service("t", ScriptedChatModel([]))
    with pytest.raises(ReplayMissError, match="the cassette is empty"):
        await nothing.services.chat("t").complete(ask("hi"))


# --- streams --------------------------------------------------------------------------------


class BreakingStream:
    """Streams two pieces of text, then the connection drops."""

    provider, model = "breaking", "b-1"

    async def complete(self, request: ChatRequest) -> Any:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta("Once upon")
        yield TextDelta(" a time")
        raise ProviderConnectionError("connection dropped")


async def test_a_stream_replays_event_by_event_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", ScriptedChatModel([tool_call("math.add", a=1, b=2, id="call_9"),
                                                           "The answer is 3, as computed."]))
    request = ask("add", tools=[ToolSpec("math-add", "add", {"type": "object"})])
    recorded = [[e async for e in recording.services.chat("t").stream(request)] for _ in range(2)]
    replaying = reopen(path)
    replaying.services.add_service("t", ScriptedChatModel([]))
    stream = replaying.services.chat("t").stream(request)
    first = await anext(stream)  # a real stream: one event at a time
    assert first == recorded[0][0]
    assert [first, *[e async for e in stream]] == recorded[0]
    assert [e async for e in replaying.services.chat("t").stream(request)] == recorded[1]
    assert len(recorded[1]) > 3 and [type(e).__name__ for e in recorded[1][-2:]] == ["UsageEvent", "StreamEnd"]


async def test_a_broken_stream_replays_its_events_then_its_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", BreakingStream())
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderConnectionError):
        async for event in recording.services.chat("t").stream(ask("story")):
            seen.append(event)
    replaying = reopen(path)
    replaying.services.add_service("t", ScriptedChatModel([], model="b-1"))  # a service added in code: its model
    again: list[StreamEvent] = []
    with pytest.raises(ProviderConnectionError, match="connection dropped") as info:
        async for event in replaying.services.chat("t").stream(ask("story")):
            again.append(event)
    assert again == seen == [TextDelta("Once upon"), TextDelta(" a time")]
    assert info.value.service == "t"  # filled by the resilience layer, as for a live error


async def test_a_stream_its_consumer_closed_replays_as_far_as_it_went(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("t", ScriptedChatModel(["a long answer in many pieces"]))
    async with aclosing(recording.services.chat("t").stream(ask("long"))) as stream:
        assert isinstance(await anext(stream), TextDelta)
    [entry] = json.loads(path.read_text())["interactions"]
    assert entry["complete"] is False and len(entry["events"]) == 1
    replaying = reopen(path)
    replaying.services.add_service("t", ScriptedChatModel([]))
    async with aclosing(replaying.services.chat("t").stream(ask("long"))) as stream:
        assert await anext(stream) == TextDelta("a long a")
    with pytest.raises(ReplayMissError, match="closed by its consumer after 1 event"):
        _ = [e async for e in replaying.services.chat("t").stream(ask("long"))]


# --- embeddings -----------------------------------------------------------------------------

AWKWARD = [0.1 + 0.2, 1 / 3, -0.0, 5e-324, 1e-310, 1.7976931348623157e308, float(struct.unpack("f", struct.pack(
    "f", 0.1))[0]), -2.5e-8, 123456789.12345679]


class Embedder:
    provider, model, dimension = "fake-embeddings", "e-1", len(AWKWARD)

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[x * (i + 1) if x else x for x in AWKWARD] for i, _ in enumerate(texts)]


def bits(vectors: list[list[float]]) -> list[list[bytes]]:
    return [[struct.pack("<d", x) for x in vector] for vector in vectors]


async def test_embeddings_replay_bit_for_bit_and_know_their_dimension_without_the_model(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    recording = kernel(path, "record")
    recording.services.add_service("e", Embedder(), kind="embedding")
    recorded = await recording.services.embedding("e").embed(["a", "b"])
    replaying = reopen(path, services={"e": ServiceSettings(provider="openai", kind="embedding", model="e-1")})
    embedder = replaying.services.embedding("e")  # an OpenAI service with no key: never built
    assert embedder.dimension == len(AWKWARD) and embedder.model == "e-1"
    replayed = await embedder.embed(["a", "b"])
    assert bits(replayed) == bits(recorded) and math.copysign(1, replayed[0][2]) == -1
    replayed[0][0] = 42.0  # the caller's copy
    assert (await embedder.embed(["a", "b"]))[0][0] == recorded[0][0]
    assert not replaying.services._instances
    text = path.read_text()
    assert text.count("\n        [") == 2  # one vector per line


# --- the resilience layer above -----------------------------------------------------------


async def test_a_recorded_429_is_retried_on_replay_as_it_was_live(tmp_path: Path) -> None:
    retry = RetrySettings(max_attempts=3, initial_backoff=0.0, jitter=0.0)
    svc = {"t": ServiceSettings(provider="openai", model="scripted-model", api_key=SECRET, retry=retry)}
    path = tmp_path / "c.json"
    recording = kernel(path, "record", services=svc)
    recording.services.add_service("t", ScriptedChatModel([
        error_reply(ProviderStatusError("slow down", status_code=429, retry_after=0.01)), "done"]))
    assert (await recording.services.chat("t").complete(ask("go"))).text == "done"
    entries = json.loads(path.read_text())["interactions"]
    assert [e["error"]["status_code"] if "error" in e else "ok" for e in entries] == [429, "ok"]
    replaying = reopen(path, services=svc)
    replaying.services.add_service("t", ScriptedChatModel([]))
    assert (await replaying.services.chat("t").complete(ask("go"))).text == "done"


async def test_fallbacks_replay_the_route_taken(tmp_path: Path) -> None:
    once = RetrySettings(max_attempts=1)
    svc = {"primary": ServiceSettings(provider="openai", model="p", api_key=SECRET, retry=once, fallbacks=["backup"]),
           "backup": ServiceSettings(provider="openai", model="b", api_key=SECRET)}
    path = tmp_path / "c.json"
    recording = kernel(path, "record", services=svc)
    recording.services.add_service("primary", ScriptedChatModel([ProviderStatusError("down", status_code=503)]))
    recording.services.add_service("backup", ScriptedChatModel(["from the backup"]))
    assert (await recording.services.chat("primary").complete(ask("hi"))).text == "from the backup"
    replaying = reopen(path, services=svc)  # no service added: the OpenAI connectors are never built
    assert (await replaying.services.chat("primary").complete(ask("hi"))).text == "from the backup"
    assert [e["service"] for e in json.loads(path.read_text())["interactions"]] == ["primary", "backup"]


async def test_the_deadline_still_bounds_a_replayed_call(tmp_path: Path) -> None:
    svc = {"t": ServiceSettings(provider="openai", model="m", api_key=SECRET, deadline=0.5,
                                retry=RetrySettings(max_attempts=5, max_retry_after=60))}
    path = tmp_path / "c.json"
    recording = kernel(path, "record", services=svc)
    recording.services.add_service("t", ScriptedChatModel([ProviderStatusError("busy", status_code=503,
                                                                                retry_after=30)]))
    with pytest.raises(DeadlineExceededError):
        await recording.services.chat("t").complete(ask("hi"))
    replaying = reopen(path, services=svc)
    async with asyncio.timeout(5):  # the backoff past the deadline fails at once, as it did live
        with pytest.raises(DeadlineExceededError, match="'t'"):
            await replaying.services.chat("t").complete(ask("hi"))


# --- secrets and the file -------------------------------------------------------------------


async def test_a_real_connector_records_no_key_header_or_url_and_replays_with_no_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-test-2025",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"Your key {SECRET} is safe with me."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}})

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    svc = {"gpt": ServiceSettings(provider="openai", model="gpt-test", base_url="https://api.example.test/v1",
                                  options={"default_headers": {"X-Team-Token": "team-token-123456"}},
                                  settings={"extra_body": {"api_key": "body-secret-98765"}})}
    path = tmp_path / "c.json"
    recording = Kernel(KernelSettings(replay="record", replay_cassette=path, services=svc), load_entry_points=False,
                       http_clients={"gpt": httpx2.AsyncClient(transport=httpx2.MockTransport(handler))})
    live = await recording.services.chat("gpt").complete(ask(f"Remember my key: {SECRET}"))
    assert SECRET in live.text and seen[0].headers["authorization"] == f"Bearer {SECRET}"
    text = path.read_text()
    for secret in (SECRET, "team-token-123456", "body-secret-98765", "example.test", "Bearer", "X-Team-Token"):
        assert secret not in text
    assert "Remember my key: ***" in text and "Your key *** is safe with me." in text
    monkeypatch.delenv("OPENAI_API_KEY")
    replaying = reopen(path, services={"gpt": ServiceSettings(provider="openai", model="gpt-test",
                                                              settings={"extra_body": {"api_key": "other-secret"}})})
    answer = await replaying.services.chat("gpt").complete(ask(f"Remember my key: {SECRET}"))
    assert answer.text == "Your key *** is safe with me." and answer.model == "gpt-test-2025"
    assert len(seen) == 1


async def test_the_file_is_readable_stable_json_one_interaction_per_entry(tmp_path: Path) -> None:
    async def record(path: Path) -> None:
        recording = kernel(path, "record")
        recording.services.add_service("t", ScriptedChatModel(["one", "two"]))
        recording.services.add_service("e", Embedder(), kind="embedding")
        await recording.services.chat("t").complete(ask("first", settings={"temperature": 0.1, "max_tokens": 5}))
        await recording.services.chat("t").complete(ask("second"))
        await recording.services.embedding("e").embed(["x"])

    await record(tmp_path / "a.json")
    await record(tmp_path / "b.json")
    a, b = (tmp_path / "a.json").read_text(), (tmp_path / "b.json").read_text()
    assert a == b  # the same calls give the same bytes
    data = json.loads(a)
    assert list(data) == ["kernel_cassette", "interactions"] and len(data["interactions"]) == 3
    assert list(data["interactions"][0]) == ["call", "service", "provider", "model", "request", "response"]
    assert list(data["interactions"][0]["request"]["settings"]) == ["max_tokens", "temperature"]
    lines = a.splitlines()
    vectors = [line for line in lines if line.lstrip().startswith("[") and line.rstrip(",").endswith("]")]
    assert len(vectors) == 1 and json.loads(vectors[0].strip().rstrip(",")) == AWKWARD  # the vector on one line
    assert all(len(line) <= 120 for line in lines if line not in vectors)
    assert a.endswith("}\n") and not list(tmp_path.glob(".*"))  # written atomically, nothing left behind
