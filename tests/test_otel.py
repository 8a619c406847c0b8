"""OpenTelemetry (`kernel.events.OtelSink`): spans with the GenAI semantic conventions'
names and attributes, in the tree of the run (under the application's current span),
content only on request, token usage and duration metrics. Exported by the real SDK to its
in-memory span exporter and metric reader; the kernel, tool loop, planner, resilience
layer and memory are the real ones, the model the scripted one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from connectors.sqlite_store import SQLiteVectorStore
from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.errors import InvocationError
from kernel.events import OtelSink, attach
from kernel.memory import Document, SemanticMemory
from kernel.planning import execute_plan
from kernel.planning.model import Plan
from kernel.testing import ScriptedChatModel, tool_call

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-otel-test-0123456789SECRETVALUE"


class Embedder:
    provider, model, dimension = "hashing", "hashing-8", 8

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(hashlib.md5(f"{t}{i}".encode()).digest()[0]) for i in range(8)] for t in texts]


class Tools:
    @kernel_function
    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @kernel_function
    def explode(self) -> str:
        """Always fails."""
        raise RuntimeError("boom")


class Telemetry:
    """An SDK tracer and meter provider exporting to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"{name!r}: {[s.name for s in self.spans()]}"
        return found[0]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        return next((s for s in self.spans() if s.context.span_id == span.parent.span_id), None)

    def metric(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [point for resource in data.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name for point in metric.data.data_points]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    found = Telemetry()
    yield found
    found.tracers.shutdown()
    found.meters.shutdown()


def make_kernel(telemetry: Telemetry, model: ScriptedChatModel, *, capture_content: bool = False) -> Kernel:
    settings = KernelSettings(services={"main": {"provider": "openai", "model": "scripted-1", "api_key": SECRET}},
                              default_chat="main")
    kernel = Kernel(settings=settings, load_entry_points=False)
    kernel.services.add_service("main", model)
    kernel.services.add_service("emb", Embedder(), "embedding")
    kernel.add_plugin(Tools(), name="tools")
    kernel.add_function(PromptFunction.from_template("Repeat {{ word }}", name="say", plugin="lang",
                                                     settings={"temperature": 0.2, "max_tokens": 64}))
    attach(kernel, OtelSink(tracer_provider=telemetry.tracers, meter_provider=telemetry.meters,
                            capture_content=capture_content))
    return kernel


async def test_a_prompt_function_is_an_agent_span_over_a_chat_client_span(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(["bonjour"], model="scripted-1"))
    await kernel.invoke("lang.say", word="hello")
    agent = telemetry.span("invoke_agent lang.say")
    render = telemetry.span("render_prompt lang.say")
    chat = telemetry.span("chat scripted-1")
    assert telemetry.parent_of(render) is agent and telemetry.parent_of(chat) is agent
    assert agent.parent is None and chat.kind == SpanKind.CLIENT and agent.kind == SpanKind.INTERNAL
    assert {s.context.trace_id for s in telemetry.spans()} == {agent.context.trace_id}
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "scripted"
    assert attributes["gen_ai.request.model"] == "scripted-1"
    assert attributes["gen_ai.response.model"] == "scripted-1"
    assert attributes["gen_ai.usage.input_tokens"] == 10 and attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.request.temperature"] == 0.2 and attributes["gen_ai.request.max_tokens"] == 64
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attributes["kernel.service"] == "main" and attributes["kernel.retries"] == 0
    agent_attributes = dict(agent.attributes or {})
    assert agent_attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent_attributes["gen_ai.agent.name"] == "lang.say"
    assert agent_attributes["gen_ai.usage.output_tokens"] == 5  # the run's usage, its calls' sum
    assert agent.status.status_code == StatusCode.UNSET and chat.end_time <= agent.end_time  # type: ignore[operator]
    assert chat.start_time >= agent.start_time  # type: ignore[operator]


async def test_a_streamed_invocation_has_the_same_spans(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(["bonjour tout le monde"], model="scripted-1"))
    chunks = [event async for event in kernel.invoke_stream("lang.say", word="hello")]
    assert chunks
    agent = telemetry.span("invoke_agent lang.say")
    chat = telemetry.span("chat scripted-1")
    assert telemetry.parent_of(chat) is agent and chat.attributes is not None
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert chat.end_time is not None and agent.end_time is not None and chat.end_time <= agent.end_time


async def test_content_is_not_on_spans_unless_asked_for(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(["secret answer"], model="scripted-1"))
    await kernel.invoke("lang.say", word="secret question")
    for span in telemetry.spans():
        for key, value in (span.attributes or {}).items():
            assert "secret" not in str(value), (span.name, key)
            assert key not in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments")


async def test_captured_content_is_in_the_conventions_message_form_and_masked(telemetry: Telemetry) -> None:
    model = ScriptedChatModel([tool_call("tools.add", a=2, b=3, id="call-1"), f"five, and the key is {SECRET}"],
                              model="scripted-1")
    kernel = make_kernel(telemetry, model, capture_content=True)
    await kernel.chat(f"What is 2 + 3? My key: {SECRET}", tools=["tools.add"])
    first, second = sorted((s for s in telemetry.spans() if s.name == "chat scripted-1"), key=lambda s: s.start_time
                           or 0)
    assert first.attributes is not None and second.attributes is not None
    sent = str(first.attributes["gen_ai.input.messages"])
    assert '"role": "user"' in sent and '"type": "text"' in sent and "My key: ***" in sent and SECRET not in sent
    answer = str(first.attributes["gen_ai.output.messages"])
    assert '"type": "tool_call"' in answer and '"id": "call-1"' in answer and '"name": "tools-add"' in answer
    assert '"type": "tool_call_response"' in str(second.attributes["gen_ai.input.messages"])
    assert "the key is ***" in str(second.attributes["gen_ai.output.messages"])
    tool = telemetry.span("execute_tool tools.add")
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"a": 2, "b": 3}'
    assert tool.attributes["gen_ai.tool.call.result"] == "5"
    for span in telemetry.spans():
        assert SECRET not in str(dict(span.attributes or {}))


async def test_a_chat_turn_with_a_tool_call(telemetry: Telemetry) -> None:
    model = ScriptedChatModel([tool_call("tools.add", a=2, b=3, id="call-42"), "five"], model="scripted-1")
    kernel = make_kernel(telemetry, model)
    await kernel.chat("What is 2 + 3?", tools=["tools.add"])
    turn = telemetry.span("invoke_agent chat")
    tool = telemetry.span("execute_tool tools.add")
    function = telemetry.span("invoke_agent tools.add")
    chats = [s for s in telemetry.spans() if s.name == "chat scripted-1"]
    assert len(chats) == 2 and all(telemetry.parent_of(c) is turn for c in chats)
    assert telemetry.parent_of(tool) is turn and telemetry.parent_of(function) is tool
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "tools.add"
    assert tool.attributes["gen_ai.tool.call.id"] == "call-42"
    assert tool.attributes["gen_ai.tool.type"] == "function"
    assert turn.attributes is not None
    assert turn.attributes["gen_ai.usage.input_tokens"] == 20 and turn.attributes["kernel.chat.rounds"] == 1


async def test_errors_are_span_status_error_type_and_an_exception_event(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(model="scripted-1"))
    with pytest.raises(InvocationError):
        await kernel.invoke("tools.explode")
    span = telemetry.span("invoke_agent tools.explode")
    assert span.status.status_code == StatusCode.ERROR and "boom" in (span.status.description or "")
    assert span.attributes is not None and span.attributes["error.type"] == "InvocationError"
    [event] = span.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "InvocationError"
    assert "boom" in str(event.attributes["exception.message"])


async def test_a_plan_is_a_workflow_span_over_its_steps(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(["cinq"], model="scripted-1"))
    plan = Plan.from_dict({"goal": "add and say", "steps": [
        {"id": "s1", "function": "tools.add", "arguments": {"a": 2, "b": 3}},
        {"id": "s2", "function": "lang.say", "arguments": {"word": "$s1"}}], "output": "s2"})
    await execute_plan(kernel, plan)
    workflow = telemetry.span("invoke_workflow plan")
    step1 = telemetry.span("execute_tool tools.add")
    step2 = telemetry.span("execute_tool lang.say")
    assert workflow.parent is None and telemetry.parent_of(step1) is workflow and telemetry.parent_of(step2) is workflow
    assert step2.attributes is not None and step2.attributes["kernel.plan.step"] == "s2"
    assert step2.attributes["gen_ai.tool.call.id"] == "plan-step-s2"
    assert workflow.attributes is not None and workflow.attributes["kernel.plan.steps"] == 2
    chat = telemetry.span("chat scripted-1")
    assert telemetry.parent_of(telemetry.parent_of(chat)) is step2  # type: ignore[arg-type]


async def test_memory_search_is_a_retrieval_span_over_an_embeddings_span(telemetry: Telemetry, tmp_path: Path) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(model="scripted-1"))
    store = SQLiteVectorStore(tmp_path / "memory.db")
    try:
        memory = SemanticMemory(kernel.services.embedding("emb"), store)
        await memory.ingest_documents([Document("soup", "Tomato soup.")], "docs")
        telemetry.exporter.clear()
        await memory.search("tomato", "docs", k=2)
    finally:
        await store.close()
    retrieval = telemetry.span("retrieval docs")
    embeddings = telemetry.span("embeddings hashing-8")
    assert telemetry.parent_of(embeddings) is retrieval and embeddings.kind == SpanKind.CLIENT
    assert retrieval.attributes is not None and embeddings.attributes is not None
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.data_source.id"] == "docs"
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 2
    assert retrieval.attributes["kernel.memory.hits"] == 1
    assert embeddings.attributes["gen_ai.operation.name"] == "embeddings"
    assert embeddings.attributes["gen_ai.request.model"] == "hashing-8"
    assert embeddings.attributes["gen_ai.embeddings.dimension.count"] == 8


async def test_a_run_is_a_child_of_the_applications_current_span(telemetry: Telemetry) -> None:
    kernel = make_kernel(telemetry, ScriptedChatModel(["ok"], model="scripted-1"))
    tracer = telemetry.tracers.get_tracer("app")
    with tracer.start_as_current_span("POST /translate") as request:
        await kernel.invoke("lang.say", word="x")
    agent = telemetry.span("invoke_agent lang.say")
    assert agent.parent is not None and agent.parent.span_id == request.get_span_context().span_id
    assert agent.context.trace_id == request.get_span_context().trace_id


async def test_token_usage_and_duration_metrics(telemetry: Telemetry) -> None:
    model = ScriptedChatModel(["one", "two"], model="scripted-1")
    kernel = make_kernel(telemetry, model)
    await kernel.invoke("lang.say", word="a")
    await kernel.invoke("lang.say", word="b")
    tokens = telemetry.metric("gen_ai.client.token.usage")
    by_type = {point.attributes["gen_ai.token.type"]: point for point in tokens}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == 20 and by_type["input"].count == 2
    assert by_type["output"].sum == 10 and by_type["output"].count == 2
    for point in tokens:
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "scripted"
        assert point.attributes["gen_ai.request.model"] == "scripted-1"
    [duration] = telemetry.metric("gen_ai.client.operation.duration")
    assert duration.count == 2 and duration.sum > 0 and duration.attributes["gen_ai.operation.name"] == "chat"


def test_telemetry_setting_attaches_the_sink_and_import_kernel_loads_no_opentelemetry(tmp_path: Path) -> None:
    script = """
import asyncio, sys
from kernel import Kernel, KernelSettings
kernel = Kernel(settings=KernelSettings(), load_entry_points=False)
asyncio.run(kernel.invoke("math.add", a=1, b=2))
assert kernel.events is None
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "opentelemetry imported"
on = Kernel(settings=KernelSettings(telemetry={"enabled": True, "capture_content": True}), load_entry_points=False)
sink = on.events.sinks[0]
assert type(sink).__name__ == "OtelSink" and sink.capture_content
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_console_sample_prints_the_span_tree(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, str(ROOT / "samples" / "telemetry_console.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    decoder, text, spans = json.JSONDecoder(), done.stdout, []
    index = text.find("{")
    while index != -1:
        span, end = decoder.raw_decode(text, index)
        spans.append(span)
        index = text.find("{", end)
    assert text.rstrip().endswith("6 times 7 is 42.")
    by_name = {span["name"]: span for span in spans}
    assert sorted(by_name) == ["answer a question", "chat scripted-model", "execute_tool math.multiply",
                               "invoke_agent chat", "invoke_agent math.multiply"]
    assert len(spans) == 6  # two model calls

    def parent(name: str) -> str:
        return next(s["name"] for s in spans if s["context"]["span_id"] == by_name[name]["parent_id"])

    assert parent("invoke_agent chat") == "answer a question"
    assert parent("execute_tool math.multiply") == "invoke_agent chat"
    assert parent("invoke_agent math.multiply") == "execute_tool math.multiply"
    assert all(parent(s["name"]) == "invoke_agent chat" for s in spans if s["name"] == "chat scripted-model")
    tool = by_name["execute_tool math.multiply"]["attributes"]
    assert tool["gen_ai.tool.name"] == "math.multiply" and tool["gen_ai.tool.call.arguments"] == '{"a": 6, "b": 7}'
    assert "gen_ai.usage.input_tokens" not in by_name["invoke_agent math.multiply"]["attributes"]  # no model call
    turn = by_name["invoke_agent chat"]["attributes"]
    assert turn["gen_ai.usage.input_tokens"] == 20 and turn["gen_ai.usage.output_tokens"] == 10
