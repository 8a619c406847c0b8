"""Tests of tests/test_connector_openai.py (llama.cpp's OpenAI-compatible server with Gemma 3
270M) run from cassettes recorded against the real server, through the `kernel_cassette`
fixture of the package's pytest plugin: offline, with no server and no model.

The cassettes are tests/cassettes/test_replay_llama_server/<test>.json. Record them again
with `pytest tests/test_replay_llama_server.py --kernel-record` (the `llama_server` fixture
then starts the real server, and the local MiniLM embeddings run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings
from kernel.contents import (
    ChatMessage,
    ChatRequest,
    StreamAccumulator,
    StreamEnd,
    TextDelta,
    ToolChoice,
    ToolSpec,
    UsageEvent,
)
from kernel.services import ReplayMissError
from kernel.services.pytest_plugin import KernelCassette
from kernel.settings import ServiceSettings

CASSETTES = Path(__file__).resolve().parent / "cassettes" / Path(__file__).stem
SECRET = "sk-replay-demo-4f1c9a7be0d2"
"""The key of the recording service: llama.cpp's server takes any; it must never reach a cassette."""
NOWHERE = "http://127.0.0.1:9/v1"  # replaying never connects: the connector is not even built

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def gemma(base_url: str) -> ServiceSettings:
    """The service of tests/test_connector_openai.py, with a key."""
    return ServiceSettings(
        provider="openai",
        model="gemma-3-270m",
        base_url=base_url,
        api_key=SECRET,
        settings={"temperature": 0.0, "seed": 1},
        options={"json_schema_mode": "json_object"},
        timeout=120,
    )


@pytest.fixture
def kernel(kernel_cassette: KernelCassette, request: pytest.FixtureRequest) -> Kernel:
    """A kernel whose `gemma` service is the llama.cpp server when recording, and nothing at
    all when replaying."""
    base_url = request.getfixturevalue("llama_server").base_url if kernel_cassette.recording else NOWHERE
    return kernel_cassette.kernel(KernelSettings(services={"gemma": gemma(base_url)}), load_entry_points=False)


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user(text)], **kw)


# --- copies of tests/test_connector_openai.py, through the kernel --------------------------


async def test_chat(kernel: Kernel, kernel_cassette: KernelCassette) -> None:
    response = await kernel.services.chat("gemma").complete(
        ask("What is the capital of France?", settings={"max_tokens": 16}))
    assert response.text.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert response.usage.requests == 1
    assert response.model  # the provider's model id
    if not kernel_cassette.recording:
        assert not kernel.services._instances, "a replayed call builds no connector"


async def test_streaming_text_then_usage_then_end(kernel: Kernel) -> None:
    stream = kernel.services.chat("gemma").stream(ask("Count from one to ten.", settings={"max_tokens": 20}))
    events = [e async for e in stream]
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert len(texts) >= 3
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], StreamEnd)
    first_usage = next(i for i, e in enumerate(events) if isinstance(e, UsageEvent))
    assert all(isinstance(e, TextDelta) for e in events[:first_usage])
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    assert acc.response().text == "".join(t.text for t in texts)


async def test_forced_tool_call(kernel: Kernel) -> None:
    request = ask(
        "What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice=ToolChoice.parse("get_weather"),
        settings={"max_tokens": 48},
    )
    response = await kernel.services.chat("gemma").complete(request)
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "get_weather" and call.id
    arguments = json.loads(call.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str)


async def test_a_key_in_the_prompt_is_masked_and_still_matches(kernel: Kernel, kernel_cassette: KernelCassette) -> None:
    """The cassette holds the prompt and the answer with the key masked; the live prompt,
    masked the same way, finds its recording."""
    response = await kernel.services.chat("gemma").complete(
        ask(f"Repeat after me: my API key is {SECRET}", settings={"max_tokens": 32}))
    assert response.finish_reason in ("stop", "length")
    if not kernel_cassette.recording:
        assert SECRET not in response.text and "***" in response.text  # the model repeated it: masked


async def test_local_embeddings_replay_exactly(kernel: Kernel, kernel_cassette: KernelCassette) -> None:
    """The local MiniLM model (sentence-transformers provider) recorded; its vectors come
    back bit for bit, and replaying loads no model."""
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by 12%."]
    embedder = kernel.services.embedding("local-embedding")
    vectors = await embedder.embed(texts)
    assert len(vectors) == 2 and len(vectors[0]) == embedder.dimension == 384
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-4  # normalised, as MiniLM's are
    [entry] = json.loads(kernel_cassette.path.read_text())["interactions"]
    assert entry["vectors"] == vectors  # exact floats, as returned
    if not kernel_cassette.recording:
        assert not kernel.services._instances, "replaying loads no embedding model"


# --- what the cassettes hold, and what a changed request gets ------------------------------


def test_the_cassettes_hold_no_secret() -> None:
    files = sorted(CASSETTES.glob("*.json"))
    assert len(files) == 5
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert SECRET not in text and SECRET[:12] not in text, path.name
        lowered = text.lower()
        for forbidden in ("authorization", "bearer", "api_key", "api-key", "127.0.0.1", "base_url", "header"):
            assert forbidden not in lowered, f"{path.name} holds {forbidden!r}"
    prompt = json.loads((CASSETTES / "test_a_key_in_the_prompt_is_masked_and_still_matches.json").read_text())
    [entry] = prompt["interactions"]
    assert entry["request"]["messages"][0]["content"] == "Repeat after me: my API key is ***"


async def test_a_changed_prompt_fails_with_the_closest_request_and_the_difference() -> None:
    settings = KernelSettings(services={"gemma": gemma(NOWHERE)}, replay="replay",
                              replay_cassette=CASSETTES / "test_chat.json")
    kernel = Kernel(settings, load_entry_points=False)
    with pytest.raises(ReplayMissError) as info:
        await kernel.services.chat("gemma").complete(ask("What is the capital of Italy?", settings={"max_tokens": 16}))
    message = str(info.value)
    assert "test_chat.json" in message and "service 'gemma'" in message
    assert "closest recorded request is interaction 1 of 1" in message
    assert '-        "content": "What is the capital of France?",' in info.value.diff.splitlines()
    assert '+        "content": "What is the capital of Italy?",' in info.value.diff.splitlines()
    assert info.value.closest is not None and info.value.closest["settings"]["max_tokens"] == 16
    assert not kernel.services._instances  # the miss reached no server
