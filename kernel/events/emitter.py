"""The emitter: builds the events of a kernel and hands them to its sinks.

A kernel has no emitter (`kernel.events is None`) until a sink is attached: then the hot
path's one test (`if self.events is not None`) sends each invocation through here. The
event of the running operation is carried by a context variable (`kernel._usage.EVENT`,
beside the usage meter), so a nested event knows its parent and its run; a task started
inside an operation inherits it.

Sinks implement `Sink`: `start(event)` and `end(event)` are called on the hot path, in the
caller's thread, and must not block (the journal only queues); `commit()` is awaited where
a record must be durable before going on (a plan step's start); `aclose()` flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .. import _usage
from ..contents import FinalMessage, StreamAccumulator, Usage
from ..logging import LazyLogger
from .events import (
    ChatEvent,
    EmbeddingEvent,
    ErrorEvent,
    Event,
    FunctionEvent,
    MemoryIngestEvent,
    MemorySearchEvent,
    ModelEvent,
    PlanEvent,
    PromptEvent,
    Status,
    StepEvent,
    ToolEvent,
)

if TYPE_CHECKING:
    from ..contents import ChatRequest, ChatResponse, KernelStreamEvent, StreamEvent, ToolCall
    from ..functions import FunctionResult, KernelFunction
    from ..kernel import Kernel
    from ..middleware import Next, PromptContext

__all__ = ["Emitter", "Sink", "attach", "configure", "current_event", "detach"]

log = LazyLogger("kernel.events")
T = TypeVar("T")
E = TypeVar("E", bound=Event)

_STOPPED = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)


class Sink(Protocol):
    """Where events go. `start` and `end` run on the hot path: queue, never block."""

    def start(self, event: Event) -> None: ...

    def end(self, event: Event) -> None: ...

    async def commit(self) -> None:
        """Return when what was sent so far is durable (nothing to do for most sinks)."""

    async def aclose(self) -> None:
        """Flush and let go of resources."""


def current_event() -> Event | None:
    """The event of the operation running in this context (None outside any)."""
    return _usage.EVENT.get()


class Emitter:
    """A kernel's events and their sinks. `exclude`: patterns of function names
    (`plugin.function`, `plugin.*`) whose events, and everything below them, keep no
    content (prompts, arguments, answers)."""

    def __init__(self, kernel: Kernel, *, exclude: Iterable[str] = ()) -> None:
        self.kernel = kernel
        self.sinks: list[Sink] = []
        self.exclude = tuple(exclude)
        self._content: dict[str, bool] = {}
        self._filter = self.render_filter
        self._failed_sinks: set[int] = set()

    # -- sinks -----------------------------------------------------------------------------

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def sink(self, kind: type[T]) -> T | None:
        """The first sink of type `kind` (the journal: `kernel.events.sink(Journal)`)."""
        return next((s for s in self.sinks if isinstance(s, kind)), None)

    def install(self) -> None:
        kernel = self.kernel
        kernel.events = self
        if self._filter not in kernel.filters["prompt"]:
            kernel.filters["prompt"].insert(0, self._filter)  # outermost: it sees the final messages
        kernel.services.events = self  # type: ignore[attr-defined]  # memory outside a run finds it here

    def uninstall(self) -> None:
        kernel = self.kernel
        if kernel.events is self:
            kernel.events = None
            kernel.services.events = None  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):
            kernel.filters["prompt"].remove(self._filter)

    async def commit(self) -> None:
        """Wait until every sink holds what was sent so far (a durable point)."""
        for sink in self.sinks:
            await sink.commit()

    async def aclose(self) -> None:
        self.uninstall()
        for sink in self.sinks:
            try:
                await sink.aclose()
            except Exception as exc:
                log.warning("event_sink_close_failed", sink=type(sink).__name__, error=type(exc).__name__)

    def content_for(self, function: str) -> bool:
        """Whether events of `function` keep their content."""
        known = self._content.get(function)
        if known is None:
            known = self._content[function] = not any(fnmatchcase(function, p) for p in self.exclude)
        return known

    # -- the life of an event ----------------------------------------------------------------

    def begin(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.start(event)
            except Exception as exc:  # a broken sink never breaks the invocation
                self._sink_failed(sink, exc)

    def finish(self, event: Event, status: Status = "ok") -> None:
        if status == "ok" and type(event) is ToolEvent and event.is_error:
            status = "error"
            event.error_type, event.error = "ToolCallError", event.result[:2000]
            self._error(event, None)
        event.close(status)
        for sink in self.sinks:
            try:
                sink.end(event)
            except Exception as exc:
                self._sink_failed(sink, exc)

    def fail(self, event: Event, exc: BaseException) -> None:
        stopped = isinstance(exc, _STOPPED)
        event.error_type = type(exc).__name__
        event.error = str(exc) or type(exc).__name__
        if not stopped:
            self._error(event, exc)
        self.finish(event, "cancelled" if stopped else "error")

    def _error(self, event: Event, exc: BaseException | None) -> None:
        """An error event where the error happened (not again at each level it passes)."""
        if exc is not None:
            if getattr(exc, "_kernel_event", None) is not None:
                return
            with contextlib.suppress(AttributeError, TypeError):
                exc._kernel_event = event.id  # type: ignore[attr-defined]
        error = ErrorEvent(event.error_type or "Error", event.error or "", event)
        self.begin(error)
        for sink in self.sinks:
            try:
                sink.end(error)
            except Exception as failure:
                self._sink_failed(sink, failure)

    def _sink_failed(self, sink: Sink, exc: Exception) -> None:
        if id(sink) not in self._failed_sinks:
            self._failed_sinks.add(id(sink))
            log.warning("event_sink_failed", sink=type(sink).__name__, error=f"{type(exc).__name__}: {exc}")

    def span(self, event: E) -> _Span[E]:
        """Run the `with` block as `event`: begun, current, then finished or failed."""
        return _Span(self, event)

    @staticmethod
    def propagate(event: Event, usage: Usage, cost: float | None) -> None:
        """A model call's usage and cost on its event and every event above it; the
        first service and model used are the run's."""
        node: Event | None = event
        while node is not None:
            node.add_usage(usage, cost)
            if node.service is None or (node.model is None and node.service == event.service):
                node.service, node.model = event.service, event.model  # a chat turn knows its service only
            node = node.parent

    # -- invocations -------------------------------------------------------------------------

    def records(self) -> bool:
        """Whether `Kernel.invoke` must hand the call to `invoke` (False: this very call is
        the one `invoke` made, and runs the function)."""
        current = _usage.EVENT.get()
        if type(current) is FunctionEvent and current.entering:
            current.entering = False
            return False
        return True

    async def invoke(self, kernel: Kernel, fn: KernelFunction, args: dict[str, Any]) -> FunctionResult:
        name = fn.fully_qualified_name
        content = self.content_for(name)
        event = FunctionEvent(name, _usage.EVENT.get(), self, arguments=dict(args) if content else None,
                              content=content)
        self.begin(event)
        token = _usage.EVENT.set(event)
        try:
            result = await kernel.invoke(fn, args)
        except BaseException as exc:
            _usage.EVENT.reset(token)
            self.fail(event, exc)
            raise
        _usage.EVENT.reset(token)
        event.result = result.value
        event.usage, event.cost, event.priced = result.usage, result.cost, result.cost is not None
        self.finish(event)
        return result

    async def stream(self, fn: KernelFunction, args: Mapping[str, Any], events: AsyncIterator[KernelStreamEvent],
                     scope: _usage.Scope, meter: FunctionResult) -> AsyncIterator[KernelStreamEvent]:
        """`Kernel.invoke_stream` of a streaming function, as one function event."""
        name = fn.fully_qualified_name
        content = self.content_for(name)
        event = FunctionEvent(name, _usage.EVENT.get(), self, arguments=dict(args) if content else None,
                              content=content)
        event.entering, event.streamed = False, True
        self.begin(event)
        try:
            async for item in _usage.scoped(_within(event, events), scope):
                if isinstance(item, FinalMessage):
                    event.result = item.message.content
                yield item
        except BaseException as exc:
            self.fail(event, exc)
            raise
        event.usage, event.cost, event.priced = meter.usage, meter.cost, meter.cost is not None
        self.finish(event)

    # -- model calls ----------------------------------------------------------------------

    def _model_event(self, request: ChatRequest, service: Any) -> ModelEvent:
        event = ModelEvent(service.name, _usage.EVENT.get(), self)
        event.service = service.name
        event.settings = dict(request.settings)
        event.tools = [tool.name for tool in request.tools]
        if event.content:
            event.messages = list(request.messages)
        return event

    def _describe(self, event: ModelEvent, service: Any) -> None:
        """Provider and model of the service (building it: a failure is the call's)."""
        try:
            event.provider, model = service.provider or None, service.model or None
        except BaseException as exc:
            self.begin(event)
            self.fail(event, exc)
            raise
        event.model = model
        event.name = model or event.name

    def _answered(self, event: ModelEvent, response: ChatResponse, kernel: Kernel) -> None:
        """The answer on the event (the caller adds the usage to the running invocation)."""
        event.finish_reason = response.finish_reason
        event.response_model = response.model or None
        raw = response.usage
        usage = Usage(raw.input_tokens, raw.output_tokens, raw.cached_tokens, raw.cache_write_tokens,
                      max(raw.requests, 1))
        self.propagate(event, usage, _usage.price(usage, response.model, kernel.settings.prices))
        if event.content:
            event.text = response.message.content
            event.tool_calls = list(response.message.tool_calls)
        else:
            event.tool_calls = [None] * len(response.message.tool_calls)
        self.finish(event)

    async def complete(self, kernel: Kernel, request: ChatRequest, service: str | None) -> ChatResponse:
        chat = kernel.services.chat(service)
        event = self._model_event(request, chat)
        self._describe(event, chat)
        self.begin(event)
        token = _usage.EVENT.set(event)
        try:
            response = await chat.complete(request)
        except BaseException as exc:
            _usage.EVENT.reset(token)
            self.fail(event, exc)
            raise
        _usage.EVENT.reset(token)
        self._answered(event, response, kernel)
        return response

    async def stream_model(self, kernel: Kernel, request: ChatRequest,
                           service: str | None) -> AsyncIterator[StreamEvent]:
        chat = kernel.services.chat(service)
        event = self._model_event(request, chat)
        event.streamed = True
        self._describe(event, chat)
        self.begin(event)
        accumulator = StreamAccumulator()
        events = chat.stream(request)
        try:
            while True:
                token = _usage.EVENT.set(event)  # current while the call works (retries, fallback)
                try:
                    item = await anext(events)
                except StopAsyncIteration:
                    break
                finally:
                    _usage.EVENT.reset(token)
                accumulator.add(item)
                yield item
        except BaseException as exc:
            self.fail(event, exc)
            raise
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()
        self._answered(event, accumulator.response(), kernel)

    async def embed(self, service: Any, count: int, call: Awaitable[list[list[float]]]) -> list[list[float]]:
        """One embedding call through the resilience layer."""
        event = EmbeddingEvent(service.name, _usage.EVENT.get(), self, texts=count)
        event.service = service.name
        with contextlib.suppress(Exception):  # building failed: the call fails the same way, inside the span
            event.provider, event.model = service.provider or None, service.model or None
        event.name = event.model or event.name
        with self.span(event):
            vectors = await call
            event.dimension = len(vectors[0]) if vectors else None
        return vectors

    # -- chat, tools, prompts ------------------------------------------------------------------

    async def chat(self, loop: Any, run: Awaitable[T]) -> T:
        """A chat turn (`run`: the tool loop of `loop`)."""
        event = ChatEvent("chat", _usage.EVENT.get(), self)
        event.service = loop.service
        event.tools = list(loop.offered)
        if event.content:
            event.messages = list(loop.conversation)
        with self.span(event):
            result = await run
            event.text = getattr(result, "text", "") if event.content else ""
            event.rounds = getattr(result, "rounds", 0)
            event.stop_reason = getattr(result, "stop_reason", None)
        return result

    def tool(self, call: ToolCall, function: str | None, round: int) -> contextlib.AbstractContextManager[ToolEvent]:
        """A tool call of the loop; set `result` and `is_error` on the event before the
        block ends (an error result makes the event an error)."""
        return self.span(ToolEvent(function or call.name, _usage.EVENT.get(), call_id=call.id,
                                   arguments=call.arguments, round=round,
                                   content=function is None or self.content_for(function)))

    async def render_filter(self, context: PromptContext, next: Next) -> None:
        """The `prompt` filter the emitter adds: a prompt event for each render inside a
        run (a render outside any, `kernel render`, is not recorded)."""
        parent = _usage.EVENT.get()
        if parent is None:
            await next(context)
            return
        with self.span(PromptEvent(context.function.fully_qualified_name, parent)) as event:
            await next(context)
            if event.content:
                event.messages = list(context.messages or [])

    # -- plans ------------------------------------------------------------------------------------

    def plan(self, plan: dict[str, Any], inputs: dict[str, Any],
             resumes: str | None) -> contextlib.AbstractContextManager[PlanEvent]:
        goal = str(plan.get("goal") or "plan")
        return self.span(PlanEvent(goal, _usage.EVENT.get(), self, plan=plan, inputs=inputs, resumes=resumes))

    def step(self, step: str, function: KernelFunction,
             arguments: dict[str, Any]) -> contextlib.AbstractContextManager[StepEvent]:
        name = function.fully_qualified_name
        return self.span(StepEvent(name, _usage.EVENT.get(), step=step, arguments=arguments,
                                   idempotent=getattr(function, "idempotent", True), content=self.content_for(name)))

    def carried(self, step: str, function: str, output: Any) -> None:
        """A step done by the run being resumed: recorded in this run, not run again."""
        event = StepEvent(function, _usage.EVENT.get(), step=step, arguments={}, idempotent=True, carried=True,
                          content=self.content_for(function))
        event.output = output
        self.begin(event)
        self.finish(event)

    # -- memory -----------------------------------------------------------------------------

    def memory_search(self, collection: str, query: str, k: int, mode: str,
                      store: Any) -> contextlib.AbstractContextManager[MemorySearchEvent]:
        event = MemorySearchEvent(collection, _usage.EVENT.get(), self, collection=collection, query=query, k=k,
                                  mode=mode)
        event.store = getattr(store, "name", None) or type(store).__name__
        return self.span(event)

    def memory_ingest(self, collection: str, store: Any) -> contextlib.AbstractContextManager[MemoryIngestEvent]:
        event = MemoryIngestEvent(collection, _usage.EVENT.get(), self, collection=collection)
        event.store = getattr(store, "name", None) or type(store).__name__
        return self.span(event)


class _Span(Generic[E]):
    """`Emitter.span`: a plain context manager (a generator-based one costs twice as much,
    and a prompt function's run goes through three)."""

    __slots__ = ("emitter", "event", "token")

    def __init__(self, emitter: Emitter, event: E) -> None:
        self.emitter, self.event = emitter, event

    def __enter__(self) -> E:
        self.emitter.begin(self.event)
        self.token = _usage.EVENT.set(self.event)
        return self.event

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        _usage.EVENT.reset(self.token)
        if exc is None:
            self.emitter.finish(self.event)
        else:
            self.emitter.fail(self.event, exc)


async def _within(event: Event, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """`events`, produced with `event` current (in the producing task's own context)."""
    _usage.EVENT.set(event)
    async for item in events:
        yield item


# --- attaching sinks ------------------------------------------------------------------------


def attach(kernel: Kernel, sink: Sink) -> Emitter:
    """Send `kernel`'s events to `sink` too (the first sink turns events on)."""
    emitter = kernel.events
    if emitter is None:
        emitter = Emitter(kernel, exclude=kernel.settings.journal_exclude)
        emitter.install()
    emitter.add(sink)
    return emitter


async def detach(kernel: Kernel, sink: Sink | None = None) -> None:
    """Close `sink` (every sink when None) and stop sending it events; with no sink left
    the kernel's events are off again (`kernel.events is None`)."""
    emitter = kernel.events
    if emitter is None:
        return
    for item in [s for s in emitter.sinks if sink is None or s is sink]:
        emitter.sinks.remove(item)
        await item.aclose()
    if not emitter.sinks:
        emitter.uninstall()


def configure(kernel: Kernel, journal: bool | None = None) -> None:
    """The sinks the settings ask for: the journal (`journal`, or when unset the
    caller's default: on for the `kernel` command) and OpenTelemetry (`telemetry`)."""
    settings = kernel.settings
    if settings.journal if settings.journal is not None else journal:
        from .journal import Journal

        attach(kernel, Journal.from_settings(settings))
    if settings.telemetry.enabled:
        from .otel import OtelSink

        attach(kernel, OtelSink(capture_content=settings.telemetry.capture_content))
