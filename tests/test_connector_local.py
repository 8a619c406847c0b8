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


# --- defaults on the local model (issue 14) ---------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402

from connectors import llamacpp  # noqa: E402
from kernel.errors import ProviderError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


async def test_the_context_is_sized_from_the_model(gemma_model_path: Path) -> None:
    """8192 tokens by default: the planner's prompt over every standard plugin (~3,000) with
    room for the answer; the model's trained context comes from its GGUF metadata."""
    model = LlamaCppChatModel(gemma_model_path)
    assert model.context_window == llamacpp.DEFAULT_N_CTX == 8192
    tokens = await model.count_tokens("Add 2 and 3")  # loads the model
    assert tokens == len(model._llama.tokenize(b"Add 2 and 3", add_bos=False)) > 0
    assert model._llama.metadata["gemma3.context_length"] == "32768" and model.trained_context == 32768
    assert model.context_window == model._llama.n_ctx() == 8192
    await model.aclose()


async def test_a_model_trained_on_a_shorter_context_keeps_to_it(
    gemma_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llamacpp, "_trained_context", lambda metadata: 1024)
    model = LlamaCppChatModel(gemma_model_path)
    await model.count_tokens("x")
    assert model.context_window == 1024
    await model.aclose()
    chosen = LlamaCppChatModel(gemma_model_path, n_ctx=2048)  # options.n_ctx is the user's word
    await chosen.count_tokens("x")
    assert chosen.context_window == 2048
    await chosen.aclose()


def test_n_ctx_option_overrides_the_default_and_is_checked(tmp_path: Path, gemma_model_path: Path) -> None:
    settings = KernelSettings(cache_dir=tmp_path)

    def build(n_ctx: object) -> LlamaCppChatModel:
        options = {"model_path": str(gemma_model_path), "n_ctx": n_ctx}
        return chat_factory("local", ServiceSettings(provider="local", options=options), settings)

    assert build(1024).context_window == 1024 and build("4096").context_window == 4096
    for bad in (0, "lots", 1.5, True):
        with pytest.raises(ConfigurationError, match=r"options\.n_ctx must be an integer"):
            build(bad)


def test_defaults_answer_cap_stop_sequences_and_greedy_json(gemma_model_path: Path) -> None:
    """`max_tokens` 512 unless the request or the service says otherwise; Gemma's turn
    markers added to the stop sequences; greedy decoding under a grammar unless set."""
    model = LlamaCppChatModel(gemma_model_path)

    def params(request: ChatRequest, of: LlamaCppChatModel = model) -> dict[str, object]:
        return of._params(request, threading.Event())

    plain = params(ask("hi"))
    assert plain["max_tokens"] == llamacpp.DEFAULT_MAX_TOKENS == 512
    assert plain["stop"] == ["<end_of_turn>", "<start_of_turn>"] and "temperature" not in plain
    given = params(ask("hi", settings={"max_tokens": 16, "stop": ["END", "<end_of_turn>"], "temperature": 0.7}))
    assert given["max_tokens"] == 16 and given["temperature"] == 0.7
    assert given["stop"] == ["END", "<end_of_turn>", "<start_of_turn>"]
    structured = params(ask("a city", output_schema=SCHEMA))
    assert structured["temperature"] == 0.0 and "grammar" in structured and "response_format" not in structured
    assert "logits_processor" not in structured  # never with a grammar
    service = LlamaCppChatModel(gemma_model_path, settings={"max_tokens": 100, "temperature": 0.5})
    assert params(ask("a city", output_schema=SCHEMA), service)["max_tokens"] == 100
    assert params(ask("a city", output_schema=SCHEMA), service)["temperature"] == 0.5
    other = LlamaCppChatModel(gemma_model_path, chat_format="chatml")
    assert "stop" not in params(ask("hi"), other)


async def test_a_plain_generation_ends_when_the_model_opens_a_new_turn(local: LlamaCppChatModel) -> None:
    """llama.cpp ends at `<end_of_turn>` (an end-of-generation token) by itself; a
    `<start_of_turn>` token renders as empty text (no stop string can see it), so the
    connector ends there: end-of-sequence becomes the only choice."""
    await local.count_tokens("x")
    start = local._llama.tokenize(b"<start_of_turn>", add_bos=False, special=True)
    assert len(start) == 1 and local._turn_tokens == {start[0]}
    end = local._llama.tokenize(b"<end_of_turn>", add_bos=False, special=True)[0]
    import llama_cpp

    assert llama_cpp.llama_vocab_is_eog(local._llama._model.vocab, end)  # llama.cpp stops there itself
    processor = local._params(ask("hi"), threading.Event())["logits_processor"][0]  # type: ignore[index]
    vocab = local._llama.n_vocab()
    scores = processor(np.array([2, 107, start[0]]), np.zeros(vocab, dtype=np.float32))
    assert int(np.argmax(scores)) == local._eos and np.isinf(scores).sum() == vocab - 1
    untouched = processor(np.array([2, 107]), np.zeros(vocab, dtype=np.float32))
    assert not np.isinf(untouched).any()


async def test_a_schema_the_grammar_cannot_follow_is_an_error_not_free_json(local: LlamaCppChatModel) -> None:
    """llama-cpp-python falls back to a free-form JSON grammar when it cannot convert a
    schema; the connector says so instead."""
    bad = {"type": "object", "properties": {"code": {"type": "string", "pattern": "no anchors"}}}
    with pytest.raises(ProviderError, match="output schema cannot be turned into a grammar"):
        await local.complete(ask("a code", output_schema=bad, settings={"max_tokens": 8}))


async def test_a_prompt_longer_than_the_context_names_the_option(gemma_model_path: Path) -> None:
    small = LlamaCppChatModel(gemma_model_path, n_ctx=256)
    with pytest.raises(ProviderError, match=r"does not fit the local model's context.*options\.n_ctx \(now 256\)"):
        await small.complete(ask("word " * 400, settings={"max_tokens": 4}))
    await small.aclose()


QUIET_SCRIPT = """
import asyncio, sys
from connectors.llamacpp import chat_factory
from kernel.contents import ChatMessage, ChatRequest
from kernel.settings import KernelSettings, ServiceSettings

options = {"model_path": sys.argv[1], "n_ctx": 1024}
model = chat_factory("local", ServiceSettings(provider="local", options=options),
                     KernelSettings(log={"level": sys.argv[2]}))
schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

async def main():
    plain = await model.complete(ChatRequest([ChatMessage.user("Say yes.")], settings={"max_tokens": 4}))
    data = await model.complete(ChatRequest([ChatMessage.user("A city as JSON.")], settings={"max_tokens": 16},
                                            output_schema=schema))
    print("ok", plain.usage.output_tokens > 0, data.text.startswith("{"))

asyncio.run(main())
"""


@pytest.mark.parametrize("level", ["warning", "debug"])
def test_llama_cpp_chatter_stays_off_stderr_unless_debug(gemma_model_path: Path, level: str) -> None:
    """Loading the model and generating (plain and under a grammar) writes nothing on
    file descriptor 2; at the debug log level llama.cpp's own lines show."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(gemma_model_path), level], env=env,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert done.stdout.decode().split() == ["ok", "True", "True"]
    if level == "debug":
        assert b"llama_" in done.stderr  # llama.cpp's loading log, shown for debugging
    else:
        assert done.stderr == b""


@pytest.mark.slow
async def test_the_readme_example_on_the_local_model_stops_on_its_own() -> None:
    """The README's example with the scripted-model line deleted: no `max_tokens` anywhere,
    yet the answer is capped (llama-cpp-python would fill the whole context)."""
    from kernel import Kernel, PromptFunction, kernel_function

    @kernel_function
    def shout(text: str) -> str:
        return text.upper()

    kernel = Kernel()
    kernel.add_function(shout, plugin="demo")
    kernel.add_function(PromptFunction.from_template("Translate to French: {{ demo.shout(text) }}", name="fr",
                                                     plugin="demo"))
    result = await kernel.invoke("demo.fr", text="hello")
    assert isinstance(result.value, str)
    assert 0 < result.usage.output_tokens <= llamacpp.DEFAULT_MAX_TOKENS
    await kernel.aclose()
