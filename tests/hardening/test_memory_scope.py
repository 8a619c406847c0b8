"""Memory scoping: `memory.recall` reads only the collections the application granted.

`KernelSettings.recall_collections` (default `["docs"]`) lists them. The kernel checks the
collection of every `recall` call, wherever its arguments came from (a model's tool call,
a template of a prompt function the model ran, a plan step, a direct invoke): `recall`
is the model-facing way into memory, and the application reads any collection through
`SemanticMemory` directly. A refused call names the collection and the setting, and
touches neither the store nor the embedding service. A real SQLite store, a deterministic
embedding and the scripted model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite_store import SQLiteVectorStore
from kernel import ArgumentError, Kernel, KernelSettings, PromptFunction
from kernel.errors import PlanExecutionError
from kernel.memory import MemoryPlugin, MemoryRecord, SemanticMemory
from kernel.planning import Plan, execute_plan
from kernel.testing import ScriptedChatModel, tool_call


class LetterEmbedding:
    """26 letter counts, normalised: deterministic, no model. Counts its calls."""

    provider, model, dimension = "letters", "letters", 26

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        vectors = []
        for text in texts:
            counts = [float(text.lower().count(chr(97 + i))) for i in range(26)]
            norm = sum(c * c for c in counts) ** 0.5 or 1.0
            vectors.append([c / norm for c in counts])
        return vectors


class Recording:
    """A vector store that records every method called on it, then delegates."""

    def __init__(self, store: SQLiteVectorStore) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(f"{name}({args[0] if args else ''})")
            return attr(*args, **kwargs)

        return recorded


@pytest.fixture
def memory_setup(tmp_path: Path) -> Iterator[tuple[Path, LetterEmbedding]]:
    yield tmp_path / "memory.db", LetterEmbedding()


async def make_kernel(path: Path, embedding: LetterEmbedding, *replies: Any,
                      **settings: Any) -> tuple[Kernel, Recording, ScriptedChatModel]:
    """`docs` holds the public passage, `secrets` the private one."""
    kernel = Kernel(settings=KernelSettings(**settings), load_entry_points=False, builtins=False)
    kernel.add_plugin(MemoryPlugin(), name="memory")
    raw = SQLiteVectorStore(path)
    memory = SemanticMemory(embedding, raw)  # the application: any collection
    for collection, text in (("docs", "zebra zoo opening hours"), ("secrets", "zebra payroll password")):
        await memory.ensure_collection(collection)
        [vector] = await embedding.embed([text])
        await raw.upsert(collection, [MemoryRecord(collection, text, vector, {"source": f"{collection}.md"})])
    store = Recording(raw)
    kernel.services.add_service("letters", embedding, kind="embedding")
    kernel.services.add_service("store", store, kind="memory")
    model = ScriptedChatModel(replies)
    kernel.services.add_service("test", model)
    embedding.calls = 0
    return kernel, store, model


async def test_a_tool_call_for_an_ungranted_collection_is_refused_before_the_store(
    memory_setup: tuple[Path, LetterEmbedding],
) -> None:
    path, embedding = memory_setup
    kernel, store, model = await make_kernel(
        path, embedding, tool_call("memory.recall", question="zebra", collection="secrets"), "sorry")
    result = await kernel.chat("what is the payroll password?")
    error = result.messages[1].content
    assert error.startswith("error:") and "'secrets'" in error and "recall_collections" in error
    assert "password" not in error and "password" not in model.requests[1].messages[-1].content
    assert store.calls == [] and embedding.calls == 0


async def test_a_tool_call_for_a_granted_collection_reads_it(memory_setup: tuple[Path, LetterEmbedding]) -> None:
    path, embedding = memory_setup
    kernel, store, _ = await make_kernel(path, embedding, tool_call("memory.recall", question="zebra"), "open")
    result = await kernel.chat("when is the zoo open?")
    assert result.messages[1].content == "[1] (source: docs.md) zebra zoo opening hours"  # "docs": the default
    assert store.calls and embedding.calls == 1


async def test_a_template_of_a_prompt_function_run_for_the_model_is_refused(
    memory_setup: tuple[Path, LetterEmbedding],
) -> None:
    """The model picks the collection through a prompt function's argument."""
    path, embedding = memory_setup
    kernel, store, model = await make_kernel(
        path, embedding, tool_call("rag.answer", question="zebra", collection="secrets"), "sorry")
    kernel.add_function(PromptFunction.from_template(
        "Sources:\n{{ memory.recall(question, collection=collection) }}\nQ: {{ question }}",
        name="answer", plugin="rag"))
    result = await kernel.chat("what is the payroll password?", tools=["rag.answer"])
    error = result.messages[1].content
    assert error.startswith("error:") and "'secrets'" in error and "recall_collections" in error
    assert len(model.requests) == 2  # the prompt never rendered, so never reached the model
    assert store.calls == [] and embedding.calls == 0


async def test_granting_a_collection_is_the_applications_setting(
    memory_setup: tuple[Path, LetterEmbedding],
) -> None:
    path, embedding = memory_setup
    kernel, _, _ = await make_kernel(
        path, embedding, tool_call("memory.recall", question="zebra", collection="secrets"), "ok",
        recall_collections=["docs", "secrets"])
    result = await kernel.chat("payroll?")
    assert result.messages[1].content == "[1] (source: secrets.md) zebra payroll password"


async def test_no_collection_granted_refuses_even_the_default(memory_setup: tuple[Path, LetterEmbedding]) -> None:
    path, embedding = memory_setup
    kernel, store, _ = await make_kernel(path, embedding, recall_collections=[])
    with pytest.raises(ArgumentError, match=r"'docs'.*grants none") as caught:
        await kernel.invoke("memory.recall", question="zebra")
    assert caught.value.parameter == "collection" and store.calls == []


async def test_every_recall_is_checked_direct_invocations_and_plan_steps_too(
    memory_setup: tuple[Path, LetterEmbedding],
) -> None:
    """The decision: the check is on every `recall`, not only on calls made for a model
    (an application template or a plan step may carry a model's text as the collection)."""
    path, embedding = memory_setup
    kernel, store, _ = await make_kernel(path, embedding)
    with pytest.raises(ArgumentError, match=r"collection 'secrets'.*recall_collections"):
        await kernel.invoke("memory.recall", question="zebra", collection="secrets")
    plan = Plan.from_dict({"goal": "leak", "steps": [
        {"id": "s1", "function": "memory.recall", "arguments": {"question": "zebra", "collection": "secrets"}}],
        "output": {"$step": "s1"}})
    with pytest.raises(PlanExecutionError, match="recall_collections"):
        await execute_plan(kernel, plan)
    assert store.calls == [] and embedding.calls == 0
    # the application reads any collection through SemanticMemory directly
    hits = await SemanticMemory(embedding, store).search("zebra", "secrets", k=1)
    assert hits[0].record.text == "zebra payroll password"
