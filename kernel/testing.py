"""Test support shipped with the library: a scripted chat model.

`ScriptedChatModel` answers from a queue of replies (text, tool calls, structured output,
errors, or a function of the request) and records every request it receives, so users can
test prompt functions, tool loops and plans without a model or a network:

    model = ScriptedChatModel(["Hello!", tool_call("math.add", a=1, b=2), "3"])
    kernel.services.add_service("test", model)
    await kernel.invoke("greet.hello", name="Ada")
    assert model.requests[0].messages[-1].content == "Say hello to Ada"
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from .errors import KernelError
from .functions import TOOL_NAME_SEPARATOR

_ids = itertools.count(1)


@dataclass(slots=True)
class ScriptedReply:
    """One queued answer: text and/or tool calls, or an exception to raise."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: BaseException | None = None
    usage: Usage | None = None
    finish_reason: str | None = None


def _tool_name(name: str) -> str:
    return name.replace(".", TOOL_NAME_SEPARATOR, 1) if "." in name else name


def tool_call(
    name: str, arguments: dict[str, Any] | str | None = None, /, *, id: str | None = None, **kwargs: Any
) -> ScriptedReply:
    """A reply that calls one function (`plugin.function` or its tool name). `arguments`
    may be raw text, to script a model that sends invalid JSON."""
    return tool_calls((name, arguments if arguments is not None else kwargs, id))


def tool_calls(
    *calls: tuple[str, dict[str, Any] | str] | tuple[str, dict[str, Any] | str, str | None],
) -> ScriptedReply:
    """A reply with several parallel calls: `tool_calls(("a.b", {...}), ("c.d", {...}))`."""
    built = []
    for call in calls:
        name, arguments = call[0], call[1]
        call_id = call[2] if len(call) > 2 and call[2] else f"call_{next(_ids)}"
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        built.append(ToolCall(call_id, _tool_name(name), raw))
    return ScriptedReply(tool_calls=built)


def json_reply(value: Any) -> ScriptedReply:
    """A structured-output reply: the JSON text of `value`."""
    return ScriptedReply(text=json.dumps(value))


def error_reply(error: BaseException) -> ScriptedReply:
    return ScriptedReply(error=error)


Reply = str | ScriptedReply | ChatResponse | BaseException | Callable[[ChatRequest], Any]


class ScriptedChatModel:
    """A chat model that plays back queued replies and records requests.

    When the queue is empty it answers `default` if given, else raises a KernelError
    that says how many requests it has seen (a test asked for more than it scripted).
    """

    provider = "scripted"

    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None,
                 model: str = "scripted-model", usage: Usage | None = None) -> None:
        self.model = model
        self.replies: deque[Reply] = deque(replies)
        self.default = default
        self.requests: list[ChatRequest] = []
        self.usage = usage if usage is not None else Usage(input_tokens=10, output_tokens=5)

    def queue(self, *replies: Reply) -> ScriptedChatModel:
        self.replies.extend(replies)
        return self

    @property
    def last_request(self) -> ChatRequest:
        if not self.requests:
            raise KernelError("the scripted model has received no request")
        return self.requests[-1]

    def _next(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self.replies:
            reply = self.replies.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            raise KernelError(
                f"ScriptedChatModel: no reply queued for request #{len(self.requests)} "
                f"(last message: {request.messages[-1].content[:80] if request.messages else ''!r})"
            )
        if callable(reply) and not isinstance(reply, BaseException | ScriptedReply | ChatResponse | str):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, ChatResponse):
            return reply
        if isinstance(reply, str):
            reply = ScriptedReply(text=reply)
        if reply.error is not None:
            raise reply.error
        calls = [ToolCall(c.id, c.name, c.arguments) for c in reply.tool_calls]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        usage = reply.usage or Usage(self.usage.input_tokens, self.usage.output_tokens, requests=1)
        return ChatResponse(ChatMessage("assistant", reply.text, calls), finish, usage, self.model)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return self._next(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        response = self._next(request)
        text = response.message.content
        for piece in _chunks(text):
            yield TextDelta(piece)
        for index, call in enumerate(response.message.tool_calls):
            half = len(call.arguments) // 2
            yield ToolCallDelta(index, call.id, call.name, call.arguments[:half])
            yield ToolCallDelta(index, None, None, call.arguments[half:])
        yield UsageEvent(response.usage)
        yield StreamEnd(response.finish_reason, response.model)


def _chunks(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
