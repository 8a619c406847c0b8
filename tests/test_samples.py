"""Every sample runs: its `main(kernel)` with a scripted chat model (real embeddings and a
real SQLite store where the sample needs memory), and samples/demo.py for real, on the
default local configuration, in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connectors.sentence_transformers_embeddings import SentenceTransformerEmbeddings
from connectors.sqlite_store import SQLiteVectorStore
from kernel import Kernel, KernelSettings
from kernel.contents import ToolChoice
from kernel.testing import ScriptedChatModel, json_reply, tool_call

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
NUMBERED = sorted(p.stem for p in SAMPLES.glob("[0-9][0-9]_*.py"))


def load_sample(name: str) -> ModuleType:
    path = SAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sample_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbeddings]:
    yield SentenceTransformerEmbeddings(batch_size=16)


@pytest.fixture
def model() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
async def kernel(model: ScriptedChatModel, tmp_path: Path) -> Any:
    k = Kernel(settings=KernelSettings(), load_entry_points=False)
    k.services.add_service("test", model)
    k.services.add_service("store", SQLiteVectorStore(tmp_path / "memory.db"), kind="memory")
    yield k
    await k.aclose()


def test_every_sample_is_numbered_documented_and_runnable() -> None:
    assert NUMBERED == [
        "01_native_function", "02_prompt_function", "03_functions_calling_each_other",
        "04_automatic_function_calling", "05_planner", "06_retrieval", "07_switching_provider",
        "08_plugin_folder_own_format", "09_plugin_folder_sk_format", "10_third_party_plugin",
    ]
    for name in [*NUMBERED, "demo"]:
        source = (SAMPLES / f"{name}.py").read_text()
        module = load_sample(name)
        assert module.__doc__ and len(module.__doc__.strip()) > 40, f"{name}: needs a docstring saying what it shows"
        assert "async def main(kernel: Kernel | None = None" in source, name
        assert 'if __name__ == "__main__":\n    asyncio.run(main())' in source, name
        assert len(source.splitlines()) < 120, f"{name}: samples are documentation, keep them short"


async def test_01_native_function(kernel: Kernel, model: ScriptedChatModel, capsys: pytest.CaptureFixture[str]) -> None:
    result = await load_sample("01_native_function").main(kernel)
    assert result == {"apples": 1.5, "basket": 3.75}
    out = capsys.readouterr().out
    assert "refused: parameter 'quantity' of shop.price" in out
    assert model.requests == []  # no model involved


async def test_02_prompt_function(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue("The moon is a bright ball in the sky.", "The sea is wide and salty, sailor.")
    result = await load_sample("02_prompt_function").main(kernel)
    assert result == {"reply": "The moon is a bright ball in the sky.",
                      "streamed": "The sea is wide and salty, sailor."}
    invoked, streamed = model.requests
    assert [(m.role, m.content) for m in invoked.messages] == [
        ("system", "You write one short, friendly sentence."), ("user", "Describe the moon to a child.")]
    assert streamed.messages[-1].content == "Describe the sea to a sailor."
    assert invoked.settings == {"max_tokens": 60, "temperature": 0.3}


async def test_03_functions_calling_each_other(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue("Parser shipped, two bugs fixed.")
    result = await load_sample("03_functions_calling_each_other").main(kernel)
    assert result["rendered"].startswith("It is Thursday 2024-07-04. The notes have 6 words.")
    assert result["report"] == "PARSER SHIPPED, TWO BUGS FIXED."
    [request] = model.requests
    assert "It is Thursday 2024-07-04" in request.messages[-1].content


async def test_04_automatic_function_calling(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue(tool_call("math.evaluate", expression="2480 * 12.5 / 100"), "It is 310.")
    result = await load_sample("04_automatic_function_calling").main(kernel)
    assert result == {"calls": [("math.evaluate", "310.0")], "answer": "It is 310."}
    first, second = model.requests
    assert sorted(t.name for t in first.tools) == ["math-evaluate", "time-today"]
    assert first.tool_choice is not None and first.tool_choice.mode == "required"
    assert first.tool_choice.function in ("math.evaluate", "math-evaluate")
    assert second.tool_choice in (None, ToolChoice("auto"))
    tool_messages = [m for m in second.messages if m.role == "tool"]
    assert [m.content for m in tool_messages] == ["310.0"]


MODEL_PLAN = {
    "steps": [
        {"id": "s1", "function": "writer.summarize", "arguments": {"text": {"$input": "text"}, "max_words": 20}},
        {"id": "s2", "function": "text.word_count", "arguments": {"text": {"$step": "s1"}}},
    ],
    "output": "s1",
}


async def test_05_planner_runs_the_models_plan(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue(json_reply(MODEL_PLAN), "A kernel with connectors, plugins and a planner.")
    sample = load_sample("05_planner")
    result = await sample.main(kernel)
    assert [s["function"] for s in result["plan"]["steps"]] == ["writer.summarize", "text.word_count"]
    assert result["outputs"] == {"s1": "A kernel with connectors, plugins and a planner.", "s2": 8}
    assert result["result"] == "A kernel with connectors, plugins and a planner."
    planning, summarizing = model.requests
    assert planning.output_schema is not None  # the plan's JSON schema, for structured output
    assert sample.GOAL in "\n".join(m.content for m in planning.messages)
    assert sample.TEXT in summarizing.messages[-1].content


async def test_05_planner_falls_back_to_the_hand_written_plan(kernel: Kernel, model: ScriptedChatModel) -> None:
    bad = json_reply({"steps": [{"id": "s1", "function": "nope.missing", "arguments": {}}]})
    model.queue(bad, bad, bad, "Short summary.")
    sample = load_sample("05_planner")
    result = await sample.main(kernel)
    assert [s["id"] for s in result["plan"]["steps"]] == ["summary", "summary_words", "text_words"]
    assert result["outputs"]["summary_words"] == 2
    assert result["outputs"]["text_words"] == len(sample.TEXT.split())
    assert result["result"] == "Short summary."
    assert "nope.missing" in model.requests[1].messages[-1].content  # the problems went back for repair


async def test_06_retrieval_cites_the_retrieved_sources(
    kernel: Kernel, model: ScriptedChatModel, minilm: SentenceTransformerEmbeddings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kernel.services.add_service("minilm", minilm, kind="embedding")
    model.queue("Edit kernel.toml or set KERNEL_DEFAULT_CHAT [1].")
    sample = load_sample("06_retrieval")
    result = await sample.main(kernel)
    assert result["answer"] == "Edit kernel.toml or set KERNEL_DEFAULT_CHAT [1]."
    assert "guide.md#Configuration" in result["sources"]
    assert len(result["sources"]) == 3
    system = model.requests[0].messages[0].content
    for number, source in enumerate(result["sources"], 1):  # the numbers the model saw are the ones printed
        assert f"[{number}] (source: {source})" in system
    assert model.requests[0].messages[-1].content == sample.QUESTION

    first = re.search(r"ingested \d+ files: (\d+) chunks embedded, 0 already stored", capsys.readouterr().out)
    assert first is not None and int(first.group(1)) > 0

    async with Kernel(settings=KernelSettings(), load_entry_points=False) as second:  # same store, new process
        second.services.add_service("test", ScriptedChatModel(["Again [1]."]))
        second.services.add_service("minilm", minilm, kind="embedding")
        second.services.add_service("store", SQLiteVectorStore(tmp_path / "memory.db"), kind="memory")
        again = await sample.main(second)
    assert again["sources"] == result["sources"]
    assert f"0 chunks embedded, {first.group(1)} already stored" in capsys.readouterr().out


@pytest.mark.parametrize(("env", "served_by"), [(None, "local"), ("anthropic", "anthropic"), ("openai", "openai")])
async def test_07_provider_is_chosen_by_configuration(
    monkeypatch: pytest.MonkeyPatch, env: str | None, served_by: str
) -> None:
    if env is None:
        monkeypatch.delenv("KERNEL_DEFAULT_CHAT", raising=False)
    else:
        monkeypatch.setenv("KERNEL_DEFAULT_CHAT", env)
    sample = load_sample("07_switching_provider")
    kernel = sample.build_kernel()
    assert {"local", "openai", "anthropic"} <= set(kernel.services.names())
    models = {name: ScriptedChatModel(default=f"a fact from {name}") for name in ("local", "openai", "anthropic")}
    for name, scripted in models.items():  # stand-ins under the configured names
        kernel.services.add_service(name, scripted)
    result = await sample.main(kernel)
    assert result == {"service": served_by, "answer": f"a fact from {served_by}"}
    assert {name: len(m.requests) for name, m in models.items()} == {
        name: int(name == served_by) for name in models}
    request = models[served_by].last_request
    assert request.messages[-1].content == "Name one fact about Mars in one sentence."
    assert request.settings["max_tokens"] == kernel.settings.services[served_by].settings["max_tokens"]


async def test_08_plugin_folder_own_format(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue("sunscreen\nhat\nsandals")
    result = await load_sample("08_plugin_folder_own_format").main(kernel)
    assert result["functions"] == ["packing_list", "trip_days"]
    expected = "List 5 things to pack for a 4-day trip to Lisbon, leaving on a Thursday."
    assert result["prompt"] == expected
    assert result["list"] == "sunscreen\nhat\nsandals"
    [request] = model.requests
    assert request.messages[-1].content == expected.replace("List 5", "List 3")
    assert request.settings == {"max_tokens": 80, "temperature": 0.3}


async def test_09_plugin_folder_sk_format(kernel: Kernel, model: ScriptedChatModel) -> None:
    model.queue("There once was a cat in the hall...", "Cat Mayor Mandates Naps")
    sample = load_sample("09_plugin_folder_sk_format")
    result = await sample.main(kernel)
    assert result["poem"] == "There once was a cat in the hall..."
    assert result["headline"] == "Cat Mayor Mandates Naps"
    assert result["headline_prompt"].startswith(
        "Write a newspaper headline of at most 8 words for this story (17 words long):")
    poem, headline = model.requests
    assert poem.messages[-1].content.endswith(f"Event:{sample.STORY}")
    assert poem.settings == {"max_tokens": 60, "temperature": 0.5}
    assert "at most 6 words" in headline.messages[-1].content


async def test_10_third_party_plugin(kernel: Kernel, model: ScriptedChatModel) -> None:
    result = await load_sample("10_third_party_plugin").main(kernel)
    assert result == "parrot: Hello from a plugin package!!"
    assert model.requests == []  # the plugin's own `echo` provider served it
    assert kernel.services.connectors[("chat", "echo")].source.endswith("kernel_echo")


def test_10_third_party_plugin_loads_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, the package is found through the `orchestration_kernel` entry point."""
    dist = tmp_path / "kernel_echo-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kernel-echo\nVersion: 0.1.0\n")
    entry = (SAMPLES / "thirdparty_plugin" / "pyproject.toml").read_text().split(
        "[project.entry-points.orchestration_kernel]")[1].strip()
    assert entry == 'echo = "kernel_echo"'
    (dist / "entry_points.txt").write_text("[orchestration_kernel]\necho = kernel_echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(SAMPLES / "thirdparty_plugin"))
    kernel = Kernel(settings=KernelSettings(plugin_allowlist="kernel-echo"), load_entry_points=True)
    assert ("chat", "echo") in kernel.services.connectors
    assert "shout" in kernel.plugins
    off = Kernel(settings=KernelSettings(plugin_allowlist="something_else"), load_entry_points=True)
    assert ("chat", "echo") not in off.services.connectors


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_local_model(tmp_path: Path) -> None:
    """`make demo` for real: local Gemma through llama.cpp, MiniLM, SQLite in ./.kernel.
    The model cache (the assembled GGUF) is shared with the rest of the suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(SAMPLES / "demo.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "chat: local" in out
    assert re.search(r"\d+ files, \d+ chunks: [1-9]\d* embedded, 0 already stored", out)
    assert "sources:\n  [1] " in out
    assert "faq.md#Which vector stores are supported?" in out or "guide.md#Memory" in out
    for step in ("notes memory.recall", "brief writer.summarize", "length text.word_count", "date time.today"):
        assert step in " ".join(out.split()), step
    assert "Traceback" not in done.stderr
    assert (tmp_path / ".kernel" / "memory.db").is_file()
