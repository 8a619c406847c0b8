"""Automatic function calling: one provider-neutral loop, streaming or not.

`run_chat` offers kernel functions to a chat model as tools, runs the calls the model
asks for, sends back one result per call and asks again, until the model answers
without calls. `stream_chat` is the same loop as one event stream. Connectors only
translate one request; the loop lives here, once, for every provider.

Rules of the loop:

* **Pairing.** After an assistant message with tool calls comes exactly one `tool`
  message per call id, in the order of the calls (connectors that need one user turn
  of results, like Anthropic's, merge consecutive tool messages).
* **Concurrency.** Calls of one round run concurrently, at most
  `policy.max_concurrency` at a time. `sequential` functions run one at a time in
  request order (beside the parallel ones); an `exclusive` function runs alone: the
  calls before it finish first, the calls after it wait.
* **Bad requests never crash the loop** and never run the function: an unknown or
  not-offered function, arguments that are not a JSON object, too large, or invalid
  for the parameters (also NaN/Infinity, an integer of over 100 digits, nesting over 32
  levels, lone surrogates), a repeated identical call (beyond `max_repeats`), a function
  that raises or times out, a call the user declined. The model gets a short `error: ...`
  result (secrets masked, paths and host:port stripped, no traceback); the loop goes on.
* **Ids.** A repeated (or empty) call id gets a suffix (`call_1`, `call_1_2`) in the
  assistant message and its tool message alike, so each call is answered once.
* **Results** are text, secrets masked, at most `max_result_chars` characters: a longer
  one is cut, with a note saying how long it was. A plain sync function runs in a worker
  thread (at most 16 in the process) under `tool_timeout`; one that times out is
  abandoned (a thread cannot be stopped) and its result dropped.
* **Named `tool_choice`** (`"plugin.function"`, or `"required"`) forces a call in the
  first request only; later requests use `auto`, otherwise a forced call would loop
  until a limit.
* **Limits** (`ToolLoopSettings`: rounds, calls, token budget): when the model asks for
  more calls than a limit allows, its pending calls are answered with
  `error: not run: ...` and, with `on_exhausted="final_call"`, the model is asked once
  more with `tool_choice="none"` to answer with what it has; with `"error"` a
  `ToolLoopError` is raised (`.messages` holds the messages produced so far).
* **Middleware.** Each call runs through the kernel's `tool_call` filters (they may
  change `context.arguments`, short-circuit with `context.result`, or set
  `context.terminate`), and the function through `kernel.invoke` (function filters
  apply). **Termination** by a filter ends the loop after the current round *without*
  another model call: the returned response is an assistant message whose text is the
  result of the call(s) that terminated (so a prompt function returns that result);
  `ChatResult.messages` ends with the tool messages and `stop_reason="terminated"`.
* **Approval.** A function with `needs_approval=True` runs only when the approval
  callback `(function, arguments, call) -> bool` (sync or async; default
  `kernel.approval`) says yes; no callback means no.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from ..contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    FinalMessage,
    KernelStreamEvent,
    StreamAccumulator,
    StreamEnd,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolChoice,
    ToolResult,
    Usage,
)
from ..errors import ArgumentError, KernelError, ToolLoopError
from ..functions import KernelFunction, parse_function_name, tool_name_for
from ..logging import LazyLogger, mask_text
from ..middleware import ToolCallContext, run_pipeline
from ..settings import ToolLoopSettings
from .history import ChatHistory
from .tools import (
    DECLINED,
    NO_APPROVER,
    cut_result,
    invoke_tool,
    parse_arguments,
    resolve_policy,
    result_text,
    select_functions,
    short_error,
    tool_spec,
    unique_calls,
    valid_unicode,
)

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["ChatOptions", "ChatResult", "ToolCallRecord", "run_chat", "stream_chat"]

log = LazyLogger("kernel.chat")

Approval = Callable[[KernelFunction, dict[str, Any], ToolCall], Any]
StopReason = Literal["answered", "exhausted", "terminated"]
Emit = Callable[[KernelStreamEvent], None]


@dataclass(slots=True)
class ToolCallRecord:
    """One call the loop handled: what the model asked, what it got back."""

    call: ToolCall
    result: ToolResult
    function: str | None
    round: int
    duration: float = 0.0

    @property
    def is_error(self) -> bool:
        return self.result.is_error


@dataclass(slots=True)
class ChatResult:
    """The outcome of a chat turn with automatic function calling.

    `messages` are the messages the turn added (assistant tool-call messages, tool
    results, the final answer); `usage` sums every model call and every function's own
    model usage; `rounds` counts rounds of tool execution.
    """

    response: ChatResponse
    messages: list[ChatMessage]
    usage: Usage
    trace: list[ToolCallRecord] = field(default_factory=list)
    rounds: int = 0
    stop_reason: StopReason = "answered"

    @property
    def text(self) -> str:
        return self.response.message.content


# --- the loop -------------------------------------------------------------------------------


class _Loop:
    """State of one chat turn. `events()` is the loop; both entry points drive it."""

    def __init__(
        self,
        kernel: Kernel,
        messages: Sequence[ChatMessage] | ChatHistory | str,
        *,
        service: str | None = None,
        settings: Mapping[str, Any] | None = None,
        tools: Any = None,
        plugins: Any = None,
        functions: Any = None,
        tool_choice: str | ToolChoice | None = "auto",
        output_schema: dict[str, Any] | None = None,
        output_schema_name: str = "output",
        policy: Any = None,
        loop_policy: Any = None,
        approval: Approval | None = None,
    ) -> None:
        self.kernel = kernel
        self.history = messages if isinstance(messages, ChatHistory) else None
        if isinstance(messages, str):
            base = [ChatMessage.user(messages)]
        elif isinstance(messages, ChatHistory):
            base = list(messages.messages)
        else:
            base = list(messages)
        self.conversation: list[ChatMessage] = base
        self.new: list[ChatMessage] = []
        self.service = service
        services = kernel.settings.services
        configured = services.get(service or kernel.services.default_name("chat")) if services else None
        merged = dict(configured.settings) if configured is not None else {}
        if settings:
            merged.update(settings)
        self.settings = merged
        self.output_schema = output_schema
        self.output_schema_name = output_schema_name
        self.policy = resolve_policy(kernel.settings.tool_loop, policy if policy is not None else loop_policy)
        self.approval = approval if approval is not None else kernel.approval

        offered = select_functions(kernel, tools if tools is not None else functions, plugins)
        choice = ToolChoice.parse(tool_choice)
        if choice.function:
            forced = kernel.get_function(choice.function)
            if forced not in offered:
                offered.append(forced)
            choice = ToolChoice("required", forced.tool_name)
        self.offered: dict[str, KernelFunction] = {fn.tool_name: fn for fn in offered}
        self.specs = [tool_spec(fn) for fn in offered]
        self.first_choice: ToolChoice | None = choice if self.specs else None
        self.next_choice: ToolChoice | None = (
            None if not self.specs else ToolChoice("auto") if choice.mode == "required" else choice
        )

        self.model_usage = Usage()
        self.tool_usage = Usage()
        self.trace: list[ToolCallRecord] = []
        self.rounds = 0
        self.calls = 0
        self.repeats: dict[tuple[str, str], int] = {}
        self.terminated: list[str] = []

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self.model_usage + self.tool_usage

    def _append(self, message: ChatMessage) -> None:
        self.conversation.append(message)
        self.new.append(message)

    def _request(self, choice: ToolChoice | None) -> ChatRequest:
        return ChatRequest(
            list(self.conversation),
            self.specs,
            choice,
            self.settings,
            self.output_schema,
            self.output_schema_name,
        )

    def _exhausted(self, pending: int) -> str | None:
        policy = self.policy
        if self.rounds >= policy.max_rounds:
            return f"the limit of {policy.max_rounds} tool-call rounds (max_rounds) is reached"
        if self.calls + pending > policy.max_calls:
            return (
                f"{pending} more call(s) would exceed the limit of {policy.max_calls} tool calls "
                f"(max_calls; {self.calls} made)"
            )
        if policy.max_tokens is not None and self.usage.total_tokens >= policy.max_tokens:
            return f"the token budget of {policy.max_tokens} tokens (max_tokens) is used up"
        return None

    def _finish(self, response: ChatResponse, stop_reason: StopReason, emit: Emit | None) -> ChatResult:
        if self.history is not None:
            self.history.extend(self.new)
        result = ChatResult(response, self.new, self.usage, self.trace, self.rounds, stop_reason)
        if emit is not None:
            emit(FinalMessage(response.message, result.usage))
        return result

    # -- model calls -----------------------------------------------------------------------

    async def _call_model(self, choice: ToolChoice | None, emit: Emit | None) -> ChatResponse:
        request = self._request(choice)
        if emit is None:
            response = await self.kernel.complete(request, self.service)
        else:
            accumulator = StreamAccumulator()
            async for event in self.kernel.stream(request, self.service):
                accumulator.add(event)
                if not isinstance(event, StreamEnd):
                    emit(event)
            response = accumulator.response()
        self.model_usage.add(response.usage)
        return response

    # -- the loop --------------------------------------------------------------------------

    async def run(self, emit: Emit | None = None) -> ChatResult:
        """The loop. `emit` receives stream events (None: not streaming)."""
        choice = self.first_choice
        while True:
            response = await self._call_model(choice, emit)
            message = response.message
            calls = message.tool_calls
            if not calls:
                self._append(message)
                return self._finish(response, "answered", emit)
            message = unique_calls(message)  # unique ids, encodable text: the next request must carry them
            calls = message.tool_calls
            reason = self._exhausted(len(calls))
            if reason is not None:
                return await self._exhaust(message, reason, emit)
            self.rounds += 1
            self.calls += len(calls)
            self._append(message)
            results: list[ToolResult | None] = [None] * len(calls)
            records: list[ToolCallRecord | None] = [None] * len(calls)
            await self._round(calls, results, records, emit)
            for result in results:
                assert result is not None
                self._append(ChatMessage.tool(result))
            self.trace.extend(r for r in records if r is not None)
            if self.terminated:
                final = ChatMessage("assistant", "\n".join(self.terminated))
                return self._finish(ChatResponse(final, "stop", self.usage, response.model), "terminated", emit)
            choice = self.next_choice

    async def _exhaust(self, message: ChatMessage, reason: str, emit: Emit | None) -> ChatResult:
        log.info("tool_loop_exhausted", reason=reason, rounds=self.rounds, calls=self.calls)
        if self.policy.on_exhausted == "error":
            error = ToolLoopError(f"tool-call loop stopped: {reason}, and the model asked for more calls")
            error.messages = list(self.new)  # type: ignore[attr-defined]
            raise error
        self._append(message)
        for call in message.tool_calls:
            result = ToolResult(call.id, call.name, f"error: not run: {reason}; answer with what you have", True)
            if emit is not None:
                emit(ToolCallStarted(call))
                emit(ToolCallFinished(call, result))
            self._append(ChatMessage.tool(result))
            fn = self._lookup(call.name)
            self.trace.append(ToolCallRecord(call, result, fn.fully_qualified_name if fn else None, self.rounds + 1))
        response = await self._call_model(ToolChoice("none") if self.specs else None, emit)
        final = response.message
        if final.tool_calls:  # the model ignored tool_choice="none": its calls stay unanswered
            final = ChatMessage("assistant", final.content)
            response = ChatResponse(final, "stop", response.usage, response.model)
        self._append(final)
        return self._finish(response, "exhausted", emit)

    # -- one round of calls ----------------------------------------------------------------

    def _lookup(self, name: str) -> KernelFunction | None:
        fn = self.offered.get(name)
        if fn is None:
            try:
                fn = self.offered.get(tool_name_for(*parse_function_name(name)))
            except (ValueError, KernelError):
                return None
        return fn

    async def _round(
        self,
        calls: list[ToolCall],
        results: list[ToolResult | None],
        records: list[ToolCallRecord | None],
        emit: Emit | None,
    ) -> None:
        functions = [self._lookup(call.name) for call in calls]
        if len(calls) == 1:
            await self._handle(0, calls[0], functions[0], results, records, emit)
            return
        limit = asyncio.Semaphore(self.policy.max_concurrency)
        segment: list[int] = []
        for index, fn in enumerate(functions):
            if fn is not None and fn.concurrency == "exclusive":
                await self._segment(segment, calls, functions, results, records, limit, emit)
                segment = []
                await self._handle(index, calls[index], fn, results, records, emit)
            else:
                segment.append(index)
        await self._segment(segment, calls, functions, results, records, limit, emit)

    async def _segment(
        self,
        indexes: list[int],
        calls: list[ToolCall],
        functions: list[KernelFunction | None],
        results: list[ToolResult | None],
        records: list[ToolCallRecord | None],
        limit: asyncio.Semaphore,
        emit: Emit | None,
    ) -> None:
        if not indexes:
            return
        if len(indexes) == 1:
            i = indexes[0]
            await self._handle(i, calls[i], functions[i], results, records, emit)
            return
        sequential = [i for i in indexes if (fn := functions[i]) is not None and fn.concurrency == "sequential"]
        parallel = [i for i in indexes if i not in sequential]

        async def one(i: int) -> None:
            async with limit:
                await self._handle(i, calls[i], functions[i], results, records, emit)

        async def chain() -> None:
            for i in sequential:
                await one(i)

        jobs = [one(i) for i in parallel]
        if sequential:
            jobs.append(chain())
        await asyncio.gather(*jobs)

    async def _handle(
        self,
        index: int,
        call: ToolCall,
        fn: KernelFunction | None,
        results: list[ToolResult | None],
        records: list[ToolCallRecord | None],
        emit: Emit | None,
    ) -> None:
        if emit is not None:
            emit(ToolCallStarted(call))
        start = time.perf_counter()
        events = self.kernel.events
        if events is None:
            result = await self._checked(call, fn)
        else:  # a sink is on: the call is a tool event, what it runs nested under it
            with events.tool(call, fn.fully_qualified_name if fn is not None else None, self.rounds) as event:
                result = await self._checked(call, fn)
                event.result, event.is_error = result.content, result.is_error
        duration = time.perf_counter() - start
        results[index] = result
        name = fn.fully_qualified_name if fn is not None else None
        records[index] = ToolCallRecord(call, result, name, self.rounds, duration)
        if result.is_error:  # successes are in the trace; no per-call logging on the hot path
            log.info("tool_call_failed", function=name or call.name, round=self.rounds)
        if emit is not None:
            emit(ToolCallFinished(call, result))

    async def _checked(self, call: ToolCall, fn: KernelFunction | None) -> ToolResult:
        """`_process`, never raising, its result cut to `max_result_chars`."""
        try:
            result = await self._process(call, fn)
        except Exception as exc:  # a bug in a check must not break the pairing of calls and results
            log.warning("tool_call_unhandled", function=call.name[:80], error=type(exc).__name__)
            result = ToolResult(call.id, call.name, short_error(f"the call failed: {type(exc).__name__}"), True)
        content = cut_result(valid_unicode(result.content), self.policy.max_result_chars)
        if content is not result.content:  # what a filter set is cut too; the full value is not sent
            result = ToolResult(result.call_id, result.name, content, result.is_error)
        return result

    async def _process(self, call: ToolCall, fn: KernelFunction | None) -> ToolResult:
        """Check, filter, approve and run one call; every failure becomes an error result."""

        keep = () if fn is None else (fn.fully_qualified_name,)  # its own name stays, even `report.csv`

        def error(text: str) -> ToolResult:
            return ToolResult(call.id, call.name, short_error(text, keep), True)

        if fn is None:
            names = ", ".join(sorted(self.offered)[:20]) or "none"
            return error(f"unknown function {call.name[:80]!r}; available tools: {names}")
        name = fn.fully_qualified_name
        checked = parse_arguments(call.arguments, name, self.policy.max_argument_bytes)
        if isinstance(checked, str):
            return error(checked)
        parsed, canonical = checked
        key = (fn.tool_name, canonical)
        count = self.repeats.get(key, 0) + 1
        self.repeats[key] = count
        if count > self.policy.max_repeats:
            return error(f"you repeated yourself: {name} was already called {count - 1} time(s) with these "
                         "same arguments; it was not run again; use the earlier result")
        try:
            arguments = fn.validate(parsed)
        except ArgumentError as exc:
            return error(str(exc))
        context = ToolCallContext(self.kernel, fn, call, arguments, self.rounds)
        try:
            filters = self.kernel.filters["tool_call"]
            if filters:
                await run_pipeline(filters, context, self._run_function)
            else:
                await self._run_function(context)
        except TimeoutError as exc:
            if isinstance(exc, KernelError):
                return error(str(exc))
            return error(f"{name} timed out after {self.policy.tool_timeout} s")
        except KernelError as exc:
            return error(str(exc))
        except Exception as exc:
            return error(f"{name} failed: {type(exc).__name__}: {exc}")
        if context.terminate:
            self.terminated.append(context.result.content if context.result is not None else "")
        if context.result is None:
            return error(f"{name}: a tool_call filter neither called next() nor set a result")
        result = context.result
        if result.call_id != call.id or result.name != call.name:
            result = ToolResult(call.id, call.name, result.content, result.is_error)
        return result

    async def _run_function(self, context: ToolCallContext) -> None:
        from .. import _usage

        fn, call = context.function, context.call
        if fn.needs_approval and not await self._approved(fn, context.arguments, call):
            text = DECLINED if self.approval is not None else NO_APPROVER
            context.result = ToolResult(call.id, call.name, text, True)
            return
        # Everything this call runs, however nested (a prompt function's template, a native
        # function's kernel.invoke), serves the model: a gated function reached from it asks
        # the same callback. This call itself was approved above: `granted`, not asked twice.
        scope = _usage.ApprovalScope(self.approval, call, fn.fully_qualified_name if fn.needs_approval else None)
        token = _usage.APPROVAL.set(scope)
        try:
            value = await invoke_tool(self.kernel, fn, context.arguments, self.policy)
        finally:
            _usage.APPROVAL.reset(token)
        self.tool_usage.add(value.usage)
        # Known secrets never go to the model, from an error or from a result.
        context.result = ToolResult(call.id, call.name, mask_text(result_text(value.value)))

    async def _approved(self, fn: KernelFunction, arguments: dict[str, Any], call: ToolCall) -> bool:
        approve = self.approval
        if approve is None:
            return False
        try:
            answer = approve(fn, dict(arguments), call)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            log.warning("approval_failed", function=fn.fully_qualified_name, error=type(exc).__name__)
            return False
        return answer is True


# --- entry points ---------------------------------------------------------------------------


class ChatOptions(TypedDict, total=False):
    """The options of `Kernel.chat` / `run_chat` (and `chat_stream` / `stream_chat`)."""

    service: str | None
    settings: Mapping[str, Any] | None
    tools: str | Iterable[str | KernelFunction] | bool | None
    plugins: str | Iterable[str] | None
    functions: str | Iterable[str | KernelFunction] | bool | None
    tool_choice: str | ToolChoice | None
    output_schema: dict[str, Any] | None
    output_schema_name: str
    policy: Mapping[str, Any] | ToolLoopSettings | None
    loop_policy: Mapping[str, Any] | ToolLoopSettings | None
    approval: Approval | None


async def run_chat(
    kernel: Kernel,
    messages: Sequence[ChatMessage] | ChatHistory | str,
    *,
    service: str | None = None,
    settings: Mapping[str, Any] | None = None,
    tools: str | Iterable[str | KernelFunction] | bool | None = None,
    plugins: str | Iterable[str] | None = None,
    functions: str | Iterable[str | KernelFunction] | bool | None = None,
    tool_choice: str | ToolChoice | None = "auto",
    output_schema: dict[str, Any] | None = None,
    output_schema_name: str = "output",
    policy: Mapping[str, Any] | ToolLoopSettings | None = None,
    loop_policy: Mapping[str, Any] | ToolLoopSettings | None = None,
    approval: Approval | None = None,
) -> ChatResult:
    """One chat turn with kernel functions as tools (see the module docstring).

    `tools`: None (all functions, or those of `plugins`), `"all"`, or a list of names
    (`plugin.function`) / KernelFunctions; `[]` offers none. `functions` and
    `loop_policy` are aliases of `tools` and `policy` (prompt execution settings).
    A ChatHistory given as `messages` gets the new messages appended.
    """
    loop = _Loop(kernel, messages, service=service, settings=settings, tools=tools, plugins=plugins,
                 functions=functions, tool_choice=tool_choice, output_schema=output_schema,
                 output_schema_name=output_schema_name, policy=policy, loop_policy=loop_policy, approval=approval)
    return await (loop.run() if kernel.events is None else kernel.events.chat(loop, loop.run()))


async def stream_chat(
    kernel: Kernel,
    messages: Sequence[ChatMessage] | ChatHistory | str,
    **options: Unpack[ChatOptions],
) -> AsyncIterator[KernelStreamEvent]:
    """`run_chat` as one event stream: TextDelta / ToolCallDelta / UsageEvent from each
    model call, ToolCallStarted and ToolCallFinished per call, then one FinalMessage
    with the total usage. Takes the same options as `run_chat`."""
    loop = _Loop(kernel, messages, **options)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()
    # The loop runs as a task (it inherits this context: usage meters, call depth) and
    # emits into a queue; closing this generator cancels it, and the running calls.
    task = asyncio.ensure_future(loop.run(queue.put_nowait) if kernel.events is None
                                 else kernel.events.chat(loop, loop.run(queue.put_nowait)))
    task.add_done_callback(lambda _task: queue.put_nowait(done))
    try:
        while True:
            event = await queue.get()
            if event is done:
                break
            yield event
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
