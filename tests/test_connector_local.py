"""The in-process llama.cpp connector with the real Gemma 3 270M model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from connectors.llamacpp import LlamaCppChatModel, chat_factory
from kernel.contents import ChatMessage, ChatRequest, StreamAccumulator, StreamEnd, TextDelta, UsageEvent
from kernel.errors import ConfigurationError, ProviderTimeoutError
from kernel.settings import KernelSettings, ServiceSettings

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


@pytest.fixture(scope="module")
def local(gemma_model_path: Path) -> LlamaCppChatModel:
    return LlamaCppChatModel(gemma_model_path, settings={"temperature": 0.0, "seed": 1})


def ask(text: str, **kw: object) -> ChatRequest:
    return ChatRequest([ChatMessage.system("Answer briefly."), ChatMessage.user(text)], **kw)  # type: ignore[arg-type]


async def test_chat(local: LlamaCppChatModel) -> None:
    response = await local.complete(ask("What is the capital of France?", settings={"max_tokens": 16}))
    assert response.text.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert response.model == "gemma-3-270m-q4_k_m"


async def test_streaming(local: LlamaCppChatModel) -> None:
    events = [e async for e in local.stream(ask("Count from one to five.", settings={"max_tokens": 16}))]
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert len(texts) >= 2
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], StreamEnd)
    acc = StreamAccumulator()
    for event in events:
        acc.add(event)
    response = acc.response()
    assert response.text == "".join(t.text for t in texts) and response.text.strip()
    assert 0 < response.usage.output_tokens <= 17
    assert response.usage.input_tokens > 0


async def test_json_schema_output_parses(local: LlamaCppChatModel) -> None:
    request = ask("Give a city and its population as JSON.", settings={"max_tokens": 48}, output_schema=SCHEMA)
    response = await local.complete(request)
    data = json.loads(response.text)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


async def test_closing_a_stream_early_stops_generation_and_frees_the_model(local: LlamaCppChatModel) -> None:
    stream = local.stream(ask("Write a long story about a dragon.", settings={"max_tokens": 400}))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    # the worker let go of the model: the next call runs at once
    response = await asyncio.wait_for(local.complete(ask("Say yes.", settings={"max_tokens": 4})), 30)
    assert response.usage.output_tokens <= 4


async def test_cancelling_complete_stops_the_worker(local: LlamaCppChatModel) -> None:
    before = asyncio.all_tasks()
    task = asyncio.create_task(local.complete(ask("Write a long story.", settings={"max_tokens": 400})))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
    assert not local._thread_lock.locked()  # the generation really stopped
    response = await asyncio.wait_for(local.complete(ask("Say yes.", settings={"max_tokens": 4})), 30)
    assert response.text is not None


async def test_timeout_stops_generation(local: LlamaCppChatModel) -> None:
    local.timeout = 0.3
    try:
        with pytest.raises(ProviderTimeoutError, match=r"0\.3s"):
            await local.complete(ask("Write a very long story.", settings={"max_tokens": 1000}))
        assert not local._thread_lock.locked()  # generation stopped, not left running
    finally:
        local.timeout = None


async def test_unknown_setting_is_refused(local: LlamaCppChatModel) -> None:
    with pytest.raises(ConfigurationError, match=r"provider local.*'temprature'"):
        await local.complete(ask("hi", settings={"temprature": 0.5}))


def test_factory_uses_the_cache_dir_and_rejects_unknown_options(tmp_path: Path, gemma_model_path: Path) -> None:
    settings = KernelSettings(cache_dir=tmp_path)
    model = chat_factory(
        "local", ServiceSettings(provider="local", options={"model_path": str(gemma_model_path)}), settings
    )
    assert model.model == gemma_model_path.stem
    with pytest.raises(ConfigurationError, match="n_ctxx"):
        chat_factory("local", ServiceSettings(provider="local", options={"n_ctxx": 5}), settings)
    with pytest.raises(ConfigurationError, match="not a file"):
        chat_factory(
            "local", ServiceSettings(provider="local", options={"model_path": str(tmp_path / "x.gguf")}), settings
        )


def test_default_model_is_assembled_once_into_the_cache_dir(
    tmp_path: Path, gemma_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First use assembles the packaged GGUF into `cache_dir/models` with a note on stderr;
    later uses find it there silently."""
    from connectors.llamacpp import default_model_path

    first = default_model_path(tmp_path)
    assert first.parent == tmp_path / "models" and first.is_file()
    assert "preparing the local model" in capsys.readouterr().err
    with first.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert first.stat().st_size == gemma_model_path.stat().st_size
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".part")]
    assert default_model_path(tmp_path) == first
    assert capsys.readouterr().err == ""
