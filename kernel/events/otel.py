"""Sink 2: OpenTelemetry spans and metrics with the GenAI semantic conventions.

Needs the `[otel]` extra (`opentelemetry-api`; the SDK and an exporter are the
application's choice): imported only when this sink is built. Every event becomes a span
whose parent is its parent event's span; a run's root span is a child of the span current
in the application (so a request span of the host holds the kernel's spans). Spans:

    invoke_agent {plugin.function}   a function invocation      gen_ai.operation.name = invoke_agent
    invoke_agent chat                a chat turn (the tool loop)  invoke_agent
    chat {model}                     one model call (CLIENT)    chat
    embeddings {model}               one embedding call (CLIENT) embeddings
    execute_tool {plugin.function}   a tool call, a plan step   execute_tool
    invoke_workflow plan             a plan run                 invoke_workflow
    retrieval {collection}           a memory search            retrieval
    upsert_memory {collection}       a memory ingest            upsert_memory
    render_prompt {plugin.function}  a prompt rendered          render_prompt

with `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.usage.input_tokens` / `output_tokens`, `gen_ai.response.finish_reasons`,
`gen_ai.request.*` settings, `gen_ai.tool.name`, `gen_ai.tool.call.id`, `error.type`, and
`kernel.*` attributes of our own (service, retries, fallback, cost). Content (messages,
tool arguments and results, queries) only with `capture_content=True`, masked like every
log line. Errors are span events named `exception`. Metrics: `gen_ai.client.token.usage`
({token}, by `gen_ai.token.type`) and `gen_ai.client.operation.duration` (s), recorded for
model and embedding calls.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..logging import mask_text
from .records import plain

if TYPE_CHECKING:
    from .events import Event

__all__ = ["PROVIDER_NAMES", "OtelSink"]

PROVIDER_NAMES = {
    "openai": "openai", "azure_openai": "azure.ai.openai", "anthropic": "anthropic",
    "anthropic_bedrock": "aws.bedrock", "anthropic_vertex": "gcp.vertex_ai",
}
"""Our provider names -> the semantic conventions' well-known values (others as they are)."""

_SETTINGS = {"max_tokens": "gen_ai.request.max_tokens", "temperature": "gen_ai.request.temperature",
             "top_p": "gen_ai.request.top_p", "top_k": "gen_ai.request.top_k", "seed": "gen_ai.request.seed",
             "presence_penalty": "gen_ai.request.presence_penalty",
             "frequency_penalty": "gen_ai.request.frequency_penalty", "stop": "gen_ai.request.stop_sequences"}
_TOKEN_BUCKETS: list[float] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                               67108864]
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_OPERATIONS = {"function": "invoke_agent", "chat": "invoke_agent", "model": "chat", "embedding": "embeddings",
               "tool": "execute_tool", "step": "execute_tool", "plan": "invoke_workflow",
               "memory_search": "retrieval", "memory_ingest": "upsert_memory", "prompt": "render_prompt"}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _json(value: Any) -> str:
    return mask_text(json.dumps(plain(value), ensure_ascii=False, default=str))


def _parts(message: Any) -> dict[str, Any]:
    """A ChatMessage in the conventions' message form (role, parts)."""
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append({"type": "tool_call_response", "id": message.tool_call_id, "result": message.content})
    elif message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls:
        try:
            arguments: Any = json.loads(call.arguments)
        except ValueError:
            arguments = call.arguments
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments})
    return {"role": message.role, "parts": parts}


class OtelSink:
    """Spans and metrics through the OpenTelemetry API. `tracer_provider` and
    `meter_provider` default to the global ones the application set up."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None,
                 capture_content: bool = False) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            from ..errors import ConfigurationError

            raise ConfigurationError(
                'telemetry needs OpenTelemetry: pip install "orchestration-kernel[otel]"') from None
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace = trace
        self._kinds = SpanKind
        self._error = (Status, StatusCode)
        version = _version()
        tracers = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self.tracer = tracers.get_tracer("orchestration-kernel", version)
        meter = meters.get_meter("orchestration-kernel", version)
        self.capture_content = capture_content
        self.token_usage = _histogram(meter, "gen_ai.client.token.usage", "{token}",
                                      "Number of input and output tokens used.", _TOKEN_BUCKETS)
        self.duration = _histogram(meter, "gen_ai.client.operation.duration", "s", "GenAI operation duration.",
                                   _DURATION_BUCKETS)
        self._spans: dict[str, Any] = {}

    # -- the sink --------------------------------------------------------------------------

    def start(self, event: Event) -> None:
        if event.kind == "error":
            self._error_event(event)
            return
        parent = self._spans.get(event.parent_id) if event.parent_id is not None else None
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        kind = self._kinds.CLIENT if event.kind in ("model", "embedding") else self._kinds.INTERNAL
        self._spans[event.id] = self.tracer.start_span(
            self._name(event), context=context, kind=kind, attributes=self._start_attributes(event),
            start_time=_ns(event.started), record_exception=False, set_status_on_exception=False)

    def end(self, event: Event) -> None:
        span = self._spans.pop(event.id, None)
        if span is None:
            return
        attributes = self._end_attributes(event)
        if attributes:
            span.set_attributes(attributes)
        if event.status != "ok":
            status, code = self._error
            span.set_status(status(code.ERROR, mask_text(event.error or event.status)))
        span.end(end_time=_ns(event.started + (event.duration or 0.0)))
        if event.kind in ("model", "embedding"):
            self._metrics(event)

    async def commit(self) -> None:
        """Nothing to wait for: the application's span processor exports."""

    async def aclose(self) -> None:
        for span in self._spans.values():  # runs that never ended (the kernel closed under them)
            span.end()
        self._spans.clear()

    # -- names and attributes ----------------------------------------------------------------

    @staticmethod
    def _name(event: Event) -> str:
        operation = _OPERATIONS.get(event.kind, event.kind)
        if event.kind == "chat":
            return "invoke_agent chat"
        if event.kind == "plan":
            return "invoke_workflow plan"
        if event.kind in ("model", "embedding"):
            return f"{operation} {event.model or event.service or ''}".rstrip()
        if event.kind == "step":
            return f"execute_tool {event.name}"
        if event.kind in ("memory_search", "memory_ingest"):
            return f"{operation} {getattr(event, 'collection', '')}".rstrip()
        return f"{operation} {event.name}"

    def _start_attributes(self, event: Event) -> dict[str, Any]:
        kind = event.kind
        attributes: dict[str, Any] = {"gen_ai.operation.name": _OPERATIONS.get(kind, kind),
                                      "kernel.run_id": event.run_id, "kernel.event_id": event.id}
        content = self.capture_content and event.content
        if kind in ("function", "chat"):
            attributes["gen_ai.agent.name"] = event.name
        elif kind in ("model", "embedding"):
            provider = getattr(event, "provider", None)
            if provider:
                attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(provider, provider)
            if event.model:
                attributes["gen_ai.request.model"] = event.model
            if event.service:
                attributes["kernel.service"] = event.service
            for key, name in _SETTINGS.items():
                value = getattr(event, "settings", {}).get(key)
                if value is not None:
                    attributes[name] = [value] if key == "stop" and isinstance(value, str) else value
            if content and kind == "model":
                attributes["gen_ai.input.messages"] = _json([_parts(m) for m in getattr(event, "messages", [])])
        elif kind in ("tool", "step"):
            attributes["gen_ai.tool.name"] = event.name
            attributes["gen_ai.tool.call.id"] = getattr(event, "call_id", "")
            attributes["gen_ai.tool.type"] = "function"
            if kind == "step":
                attributes["kernel.plan.step"] = getattr(event, "step", "")
            if content:
                arguments = getattr(event, "arguments", None)
                attributes["gen_ai.tool.call.arguments"] = (mask_text(arguments) if isinstance(arguments, str)
                                                            else _json(arguments))
        elif kind == "plan":
            attributes["gen_ai.workflow.name"] = "plan"
            attributes["kernel.plan.steps"] = len(getattr(event, "plan", {}).get("steps", []))
        elif kind in ("memory_search", "memory_ingest"):
            attributes["gen_ai.data_source.id"] = getattr(event, "collection", "")
            if kind == "memory_search":
                attributes["gen_ai.retrieval.top_k"] = getattr(event, "k", 0)
                if content:
                    attributes["gen_ai.retrieval.query.text"] = mask_text(getattr(event, "query", ""))
        return attributes

    def _end_attributes(self, event: Event) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        kind = event.kind
        if event.status == "error":
            attributes["error.type"] = event.error_type or "_OTHER"
        usage = event.usage
        if usage is not None and kind not in ("tool", "prompt") and (usage.requests or usage.input_tokens
                                                                     or usage.output_tokens):  # no model: no usage
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            if usage.cache_write_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
            if event.priced and event.cost is not None:
                attributes["kernel.cost"] = event.cost
        content = self.capture_content and event.content
        if kind == "model":
            finish = getattr(event, "finish_reason", None)
            if finish:
                attributes["gen_ai.response.finish_reasons"] = [finish]
            response_model = getattr(event, "response_model", None)
            if response_model:
                attributes["gen_ai.response.model"] = response_model
            attributes["kernel.retries"] = getattr(event, "retries", 0)
            fallback = getattr(event, "fallback", None)
            if fallback:
                attributes["kernel.fallback"] = fallback
            if content and event.status == "ok":
                output = {"role": "assistant", "parts": _parts(_Message(event))["parts"], "finish_reason": finish}
                attributes["gen_ai.output.messages"] = _json([output])
        elif kind == "embedding":
            dimension = getattr(event, "dimension", None)
            if dimension:
                attributes["gen_ai.embeddings.dimension.count"] = dimension
            attributes["kernel.retries"] = getattr(event, "retries", 0)
        elif kind in ("tool", "step") and content:
            result = getattr(event, "result", None) if kind == "tool" else getattr(event, "output", None)
            attributes["gen_ai.tool.call.result"] = mask_text(result) if isinstance(result, str) else _json(result)
        elif kind == "memory_search":
            attributes["kernel.memory.hits"] = len(getattr(event, "hits", []))
        elif kind == "memory_ingest":
            for key, value in getattr(event, "counts", {}).items():
                if isinstance(value, int):
                    attributes[f"kernel.memory.{key}"] = value
        elif kind == "chat":
            attributes["kernel.chat.rounds"] = getattr(event, "rounds", 0)
        return attributes

    def _error_event(self, event: Event) -> None:
        span = self._spans.get(event.parent_id or "")
        if span is not None:
            span.add_event("exception", {"exception.type": event.error_type or event.name,
                                         "exception.message": mask_text(event.error or "")},
                           timestamp=_ns(event.started))

    def _metrics(self, event: Event) -> None:
        attributes: dict[str, Any] = {"gen_ai.operation.name": _OPERATIONS[event.kind]}
        provider = getattr(event, "provider", None)
        if provider:
            attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(provider, provider)
        if event.model:
            attributes["gen_ai.request.model"] = event.model
        response_model = getattr(event, "response_model", None)
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if event.status == "error":
            attributes["error.type"] = event.error_type or "_OTHER"
        self.duration.record(event.duration or 0.0, attributes)
        usage = event.usage
        if usage is not None and event.status == "ok" and event.kind == "model":
            self.token_usage.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.token_usage.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})


class _Message:
    """The answer of a model event, shaped as a message for `_parts`."""

    def __init__(self, event: Event) -> None:
        self.role = "assistant"
        self.content = getattr(event, "text", "")
        self.tool_calls = getattr(event, "tool_calls", [])
        self.tool_call_id = None


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: list[float]) -> Any:
    try:
        return meter.create_histogram(name, unit=unit, description=description,
                                      explicit_bucket_boundaries_advisory=buckets)
    except TypeError:  # an API older than the bucket advisory
        return meter.create_histogram(name, unit=unit, description=description)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("orchestration-kernel")
    except Exception:
        return "0"
