"""The event stream (`kernel.events`): one typed event per invocation, prompt render, model
call, tool call, chat turn, plan and plan step, memory search and ingest, embedding call
and error, linked by run id and parent id; off (`kernel.events is None`) until a sink is
attached. The kernel, the tool loop, the resilience layer, the planner and semantic memory
are the real ones; the model is the scripted one of `kernel.testing`, served through a
connector registered by a plugin (so retries and fallbacks come from configuration)."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite_store import SQLiteVectorStore
from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.contents import FinalMessage
from kernel.errors import InvocationError, ProviderStatusError
from kernel.events import (
    ChatEvent,
    ErrorEvent,
    Event,
    FunctionEvent,
    MemorySink,
    ModelEvent,
    StepEvent,
    ToolEvent,
    attach,
    current_event,
    detach,
)
from kernel.hookspecs import hookimpl
from kernel.memory import Document, SemanticMemory
from kernel.planning import PlanRun, execute_plan
from kernel.planning.model import Plan
from kernel.testing import ScriptedChatModel, error_reply, tool_call

FAST_RETRY = {"max_attempts": 2, "initial_backoff": 0.001, "max_backoff": 0.002, "jitter": 0.0}


class HashingEmbedder:
    """A deterministic bag-of-words embedder (the embedding model is not under test)."""

    provider, model, dimension = "hashing", "hashing-16", 16

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vector = [0.0] * self.dimension
            for word in text.lower().split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


class Scripted:
    """A plugin offering the `scripted` provider: each configured service gets the
    ScriptedChatModel of its name (so services carry retries and fallbacks)."""

    def __init__(self, models: dict[str, ScriptedChatModel]) -> None:
        self.models = models

    @hookimpl
    def register_connectors(self, register: Any) -> None:
        register("chat", "scripted", lambda name, service, settings: self.models[name])
        register("embedding", "hashing", lambda name, service, settings: HashingEmbedder())


class Tools:
    @kernel_function
    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @kernel_function
    def explode(self, reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"exploded: {reason}")

    @kernel_function
    async def outer(self, kernel: Kernel, reason: str) -> str:
        """Calls `explode` (a nested invocation)."""
        result = await kernel.invoke("tools.explode", reason=reason)
        return str(result.value)


def build(models: dict[str, ScriptedChatModel], fallbacks: Sequence[str] = (), **settings: Any) -> Kernel:
    """A kernel whose chat services are `models` (the first the default, falling back to
    `fallbacks`), with the `tools` plugin and the prompt function `writer.say`."""
    services: dict[str, Any] = {name: {"provider": "scripted", "model": model.model, "retry": FAST_RETRY}
                                for name, model in models.items()}
    services[next(iter(models))]["fallbacks"] = list(fallbacks)
    services["hash"] = {"provider": "hashing", "kind": "embedding"}
    config: dict[str, Any] = {"services": services, "default_chat": next(iter(models)), "default_embedding": "hash",
                              **settings}
    kernel = Kernel(settings=KernelSettings(**config), load_entry_points=False, plugins=[Scripted(models)])
    kernel.add_plugin(Tools(), name="tools")
    kernel.add_function(PromptFunction.from_template("Say {{ word }} in French.", name="say", plugin="writer"))
    return kernel


@pytest.fixture
def model() -> ScriptedChatModel:
    return ScriptedChatModel(model="scripted-1")


@pytest.fixture
def kernel(model: ScriptedChatModel) -> Kernel:
    return build({"main": model}, prices={"scripted-1": {"input": 1.0, "output": 2.0}})


def by_id(sink: MemorySink) -> dict[str, Event]:
    return {e.id: e for e in sink.events}


def assert_one_run(sink: MemorySink) -> Event:
    """Every event of the sink is in one run, under its root; returns the root."""
    roots = [e for e in sink.events if e.parent_id is None]
    assert len(roots) == 1, roots
    root = roots[0]
    known = by_id(sink)
    for event in sink.events:
        assert event.run_id == root.id
        if event is not root:
            assert event.parent_id in known, f"{event} has a parent that was never emitted"
    return root


# --- on and off ---------------------------------------------------------------------------


async def test_events_are_off_until_a_sink_is_attached_and_off_again_after(kernel: Kernel,
                                                                          model: ScriptedChatModel) -> None:
    assert kernel.events is None
    filters = list(kernel.filters["prompt"])
    model.queue("un")
    await kernel.invoke("writer.say", word="one")
    sink = MemorySink()
    emitter = attach(kernel, sink)
    assert kernel.events is emitter and len(kernel.filters["prompt"]) == len(filters) + 1
    model.queue("deux")
    await kernel.invoke("writer.say", word="two")
    assert [e.kind for e in sink.events] == ["prompt", "model", "function"]
    await detach(kernel)
    assert kernel.events is None and kernel.filters["prompt"] == filters
    model.queue("trois")
    await kernel.invoke("writer.say", word="three")
    assert len(sink.events) == 3  # nothing more arrived
    assert current_event() is None


async def test_a_plain_kernel_has_no_sink_and_the_cli_default_turns_the_journal_on(tmp_path: Path) -> None:
    assert Kernel(settings=KernelSettings(), load_entry_points=False).events is None
    settings = KernelSettings(journal_path=tmp_path / "j.db")
    on = Kernel(settings=settings, load_entry_points=False, journal=True)
    assert on.events is not None and [type(s).__name__ for s in on.events.sinks] == ["Journal"]
    await on.aclose()
    off = Kernel(settings=KernelSettings(journal=False, journal_path=tmp_path / "k.db"), load_entry_points=False,
                 journal=True)
    assert off.events is None  # `journal = false` wins over the command's default


# --- invocations ---------------------------------------------------------------------------------


async def test_a_prompt_function_is_a_function_event_with_its_render_and_model_call(
        kernel: Kernel, model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.queue("bonjour")
    result = await kernel.invoke("writer.say", word="hello")
    root = assert_one_run(sink)
    assert isinstance(root, FunctionEvent) and root.name == "writer.say" and root.status == "ok"
    assert root.arguments == {"word": "hello"} and root.result == "bonjour" == result.value
    [prompt] = sink.of("prompt")
    [call] = sink.of("model")
    assert prompt.parent_id == root.id and call.parent_id == root.id
    assert [m.content for m in prompt.messages] == ["Say hello in French."]  # type: ignore[attr-defined]
    assert isinstance(call, ModelEvent)
    assert (call.service, call.provider, call.model, call.text) == ("main", "scripted", "scripted-1", "bonjour")
    assert call.finish_reason == "stop" and call.duration is not None and call.duration >= 0
    assert call.usage is not None and (call.usage.input_tokens, call.usage.output_tokens) == (10, 5)
    assert call.cost == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
    # the model call's usage and cost are its invocation's too, and the run's service is the call's
    assert root.usage is not None and root.usage.input_tokens == 10 and root.cost == pytest.approx(call.cost)
    assert (root.service, root.model) == ("main", "scripted-1")
    # sinks see the start, in order, and the end, inner first
    assert [e.kind for e in sink.started] == ["function", "prompt", "model"]
    assert [e.kind for e in sink.events] == ["prompt", "model", "function"]


async def test_an_unpriced_call_makes_its_run_unpriced(model: ScriptedChatModel) -> None:
    kernel = build({"main": model})  # no price for scripted-1
    sink = MemorySink()
    attach(kernel, sink)
    model.queue("salut")
    await kernel.invoke("writer.say", word="hi")
    [call] = sink.of("model")
    [root] = sink.of("function")
    assert call.cost is None and not call.priced and root.cost is None and not root.priced


async def test_a_stream_is_one_function_event_with_a_streamed_model_call(kernel: Kernel,
                                                                        model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.queue("bonjour tout le monde")
    final = [e async for e in kernel.invoke_stream("writer.say", word="hello") if isinstance(e, FinalMessage)]
    assert final[0].message.content == "bonjour tout le monde"
    root = assert_one_run(sink)
    assert isinstance(root, FunctionEvent) and root.streamed and root.result == "bonjour tout le monde"
    [call] = sink.of("model")
    assert isinstance(call, ModelEvent) and call.streamed and call.text == "bonjour tout le monde"
    assert call.parent_id == root.id and call.usage is not None and call.usage.output_tokens == 5


async def test_concurrent_invocations_are_separate_runs(kernel: Kernel, model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.default = "ok"
    await asyncio.gather(*(kernel.invoke("writer.say", word=str(i)) for i in range(5)))
    roots = [e for e in sink.events if e.parent_id is None]
    assert len(roots) == 5 and len({r.run_id for r in roots}) == 5
    for call in sink.of("model"):
        root = by_id(sink)[call.parent_id or ""]
        assert call.run_id == root.id and root.kind == "function"
        assert root.arguments["word"] in call.messages[0].content  # type: ignore[attr-defined]


# --- chat and tools --------------------------------------------------------------------------


async def test_a_chat_turn_holds_its_model_calls_and_tool_calls(kernel: Kernel, model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.queue(tool_call("tools.add", a=2, b=3), "five")
    answer = await kernel.chat("What is 2 + 3?", tools=["tools.add"])
    assert answer.text == "five"
    root = assert_one_run(sink)
    assert isinstance(root, ChatEvent) and root.rounds == 1 and root.text == "five"
    assert root.tools == ["tools-add"]  # the names the model was offered
    calls = sink.of("model")
    [tool] = sink.of("tool")
    [fn] = sink.of("function")
    assert len(calls) == 2 and all(c.parent_id == root.id for c in calls)
    assert isinstance(tool, ToolEvent) and tool.parent_id == root.id and tool.name == "tools.add"
    assert tool.call_id == calls[0].tool_calls[0].id  # type: ignore[attr-defined]
    assert tool.result == "5" and not tool.is_error and tool.round == 1
    assert fn.parent_id == tool.id and fn.result == 5  # type: ignore[attr-defined]
    assert root.usage is not None and root.usage.requests == 2 and root.usage.input_tokens == 20


async def test_a_tool_that_fails_is_an_error_event_under_its_tool_call(kernel: Kernel,
                                                                       model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.queue(tool_call("tools.explode", reason="test"), "sorry")
    await kernel.chat("Explode.", tools=["tools.explode"])
    [tool] = sink.of("tool")
    assert tool.status == "error" and "exploded: test" in (tool.error or "")
    errors = [e for e in sink.events if isinstance(e, ErrorEvent)]
    assert errors and all(e.run_id == tool.run_id for e in errors)
    assert any(e.parent_id == tool.id for e in errors) or any(
        by_id(sink)[e.parent_id or ""].parent_id == tool.id for e in errors)
    assert sink.of("chat")[0].status == "ok"  # the model got the error and answered


# --- errors ---------------------------------------------------------------------------------------


async def test_an_error_is_one_error_event_where_it_happened(kernel: Kernel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    with pytest.raises(InvocationError, match="exploded: deep"):
        await kernel.invoke("tools.outer", reason="deep")
    root = assert_one_run(sink)
    inner = next(e for e in sink.of("function") if e.name == "tools.explode")
    assert inner.parent_id == root.id
    assert root.status == inner.status == "error" and root.error_type == inner.error_type == "InvocationError"
    [error] = sink.of("error")  # once, not again at each level the exception passes
    assert error.parent_id == inner.id and error.error_type == "InvocationError"
    assert "tools.explode failed: RuntimeError: exploded: deep" in (error.error or "")


async def test_a_retried_call_and_a_fallback_are_on_the_model_event() -> None:
    main = ScriptedChatModel([error_reply(ProviderStatusError("busy", status_code=503)),
                              error_reply(ProviderStatusError("still busy", status_code=503))], model="main-model")
    backup = ScriptedChatModel(["from backup"], model="backup-model")
    kernel = build({"main": main, "backup": backup}, fallbacks=["backup"])
    sink = MemorySink()
    attach(kernel, sink)
    result = await kernel.invoke("writer.say", word="x")
    assert result.value == "from backup"
    [call] = sink.of("model")
    assert isinstance(call, ModelEvent) and call.status == "ok"
    assert call.retries == 1 and call.fallback == "backup"
    assert any(f.startswith("main: attempt 1: ProviderStatusError; retried") for f in call.failures)
    assert any("fell back to backup" in f for f in call.failures)


async def test_a_model_error_ends_the_model_event_in_error(model: ScriptedChatModel) -> None:
    kernel = build({"main": model})
    model.queue(error_reply(ProviderStatusError("bad request", status_code=400)))
    sink = MemorySink()
    attach(kernel, sink)
    with pytest.raises(ProviderStatusError):
        await kernel.invoke("writer.say", word="x")
    [call] = sink.of("model")
    assert call.status == "error" and call.error_type == "ProviderStatusError" and call.retries == 0  # type: ignore[attr-defined]
    [error] = sink.of("error")
    assert error.parent_id == call.id
    assert sink.of("function")[0].status == "error"


async def test_a_cancelled_invocation_is_cancelled_not_an_error(kernel: Kernel) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    kernel.add_function(slow, plugin="slowness")
    sink = MemorySink()
    attach(kernel, sink)
    task = asyncio.create_task(kernel.invoke("slowness.slow"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = sink.events
    assert event.status == "cancelled" and not sink.of("error")


async def test_a_broken_sink_never_breaks_an_invocation(kernel: Kernel, model: ScriptedChatModel) -> None:
    class Broken(MemorySink):
        def start(self, event: Event) -> None:
            raise OSError("disk full")

        def end(self, event: Event) -> None:
            raise OSError("disk full")

    good = MemorySink()
    attach(kernel, Broken())
    attach(kernel, good)
    model.queue("ok")
    assert (await kernel.invoke("writer.say", word="x")).value == "ok"
    assert [e.kind for e in good.events] == ["prompt", "model", "function"]


# --- content ---------------------------------------------------------------------------------------


async def test_an_excluded_function_keeps_no_content_below_it(model: ScriptedChatModel) -> None:
    kernel = build({"main": model}, journal_exclude=["writer.*"])
    sink = MemorySink()
    attach(kernel, sink)
    model.queue("secret answer", "five")
    await kernel.invoke("writer.say", word="private")
    root = sink.of("function")[0]
    assert not root.content and root.arguments is None  # type: ignore[attr-defined]
    assert all(not e.content for e in sink.events)
    [call] = sink.of("model")
    assert call.messages == [] and call.text == ""  # type: ignore[attr-defined]
    assert call.usage is not None and call.usage.output_tokens == 5  # metadata stays
    await kernel.invoke("tools.add", a=1, b=2)  # not excluded
    assert sink.events[-1].content and sink.events[-1].arguments == {"a": 1, "b": 2}  # type: ignore[attr-defined]


# --- plans -----------------------------------------------------------------------------------------


PLAN = {"goal": "add then say", "steps": [
    {"id": "s1", "function": "tools.add", "arguments": {"a": 2, "b": 3}},
    {"id": "s2", "function": "writer.say", "arguments": {"word": "$s1"}},
], "output": "s2"}


async def test_a_plan_is_a_run_of_steps_each_holding_its_invocation(kernel: Kernel, model: ScriptedChatModel) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    model.queue("cinq")
    run = await execute_plan(kernel, Plan.from_dict(PLAN))
    assert run.result == "cinq"
    root = assert_one_run(sink)
    assert root.kind == "plan" and root.name == "add then say" and root.result == "cinq"  # type: ignore[attr-defined]
    steps = sink.of("step")
    assert [s.step for s in steps] == ["s1", "s2"]  # type: ignore[attr-defined]
    assert all(s.parent_id == root.id for s in steps)
    assert steps[0].output == 5 and steps[1].output == "cinq"  # type: ignore[attr-defined]
    assert steps[1].arguments == {"word": "5"}  # type: ignore[attr-defined]  # resolved, coerced
    for step in steps:
        [fn] = [e for e in sink.of("function") if e.parent_id == step.id]
        assert fn.name == step.name
    [call] = sink.of("model")
    assert by_id(sink)[call.parent_id or ""].parent_id == steps[1].id
    assert root.usage is not None and root.usage.output_tokens == 5


async def test_a_resumed_plan_records_the_steps_it_did_not_run_again(kernel: Kernel,
                                                                     model: ScriptedChatModel) -> None:
    plan = Plan.from_dict(PLAN)
    sink = MemorySink()
    attach(kernel, sink)
    previous = PlanRun(plan, {}, {"s1": 5}, {"s1": "done"})
    model.queue("cinq")
    await execute_plan(kernel, plan, resume=previous)
    [carried, ran] = sink.of("step")
    assert isinstance(carried, StepEvent) and carried.carried and carried.step == "s1" and carried.output == 5
    assert not ran.carried and ran.step == "s2"  # type: ignore[attr-defined]
    assert not [e for e in sink.of("function") if e.name == "tools.add"]  # s1 did not run


# --- memory -------------------------------------------------------------------------------------------


async def test_memory_ingest_and_search_are_events_with_their_embedding_calls(kernel: Kernel, tmp_path: Path) -> None:
    sink = MemorySink()
    attach(kernel, sink)
    store = SQLiteVectorStore(tmp_path / "memory.db")
    try:
        memory = SemanticMemory(kernel.services.embedding(), store)
        report = await memory.ingest_documents(
            [Document("soup", "Tomato soup: simmer tomatoes."), Document("tea", "Green tea: steep leaves.")], "docs")
        hits = await memory.search("tomato soup", "docs", k=1)
    finally:
        await store.close()
    [ingest] = sink.of("memory_ingest")
    [search] = sink.of("memory_search")
    assert ingest.parent_id is None and search.parent_id is None  # outside a run: each its own run
    assert ingest.collection == "docs" and ingest.counts["added"] == report.added == 2  # type: ignore[attr-defined]
    assert search.query == "tomato soup" and search.k == 1 and search.mode == "hybrid"  # type: ignore[attr-defined]
    assert [h["id"] for h in search.hits] == [h.record.id for h in hits]  # type: ignore[attr-defined]
    embeddings = sink.of("embedding")
    assert {e.parent_id for e in embeddings} == {ingest.id, search.id}
    assert all(e.model == "hashing-16" and e.service == "hash" and e.dimension == 16 for e in embeddings)  # type: ignore[attr-defined]


async def test_memory_inside_an_invocation_belongs_to_its_run(kernel: Kernel, tmp_path: Path) -> None:
    store = SQLiteVectorStore(tmp_path / "memory.db")
    memory = SemanticMemory(kernel.services.embedding(), store)

    async def lookup(question: str) -> str:
        hits = await memory.search(question, "docs", k=1)
        return hits[0].record.text if hits else ""

    kernel.add_function(lookup, plugin="kb")
    try:
        await memory.ingest_documents([Document("soup", "Tomato soup: simmer tomatoes.")], "docs")
        sink = MemorySink()
        attach(kernel, sink)
        await kernel.invoke("kb.lookup", question="soup")
    finally:
        await store.close()
    root = assert_one_run(sink)
    [search] = sink.of("memory_search")
    [embedding] = sink.of("embedding")
    assert search.parent_id == root.id and embedding.parent_id == search.id


async def test_an_excluded_function_keeps_no_content_as_a_tool_call_or_a_plan_step(model: ScriptedChatModel) -> None:
    kernel = build({"main": model}, journal_exclude=["tools.add"])
    sink = MemorySink()
    attach(kernel, sink)
    model.queue(tool_call("tools.add", a=20, b=22), "done")
    await kernel.chat("Add.", tools=["tools.add"])
    [tool] = sink.of("tool")
    assert not tool.content and tool.call_id  # type: ignore[attr-defined]  # metadata stays
    assert sink.of("chat")[0].content  # the turn itself is not excluded
    await execute_plan(kernel, Plan.from_dict({"goal": "g", "steps": [
        {"id": "s1", "function": "tools.add", "arguments": {"a": 1, "b": 2}}], "output": "s1"}))
    [step] = sink.of("step")
    assert not step.content and step.step == "s1"  # type: ignore[attr-defined]
    assert all(not e.content for e in sink.of("function") if e.name == "tools.add")
