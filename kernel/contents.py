"""Provider-neutral content types: messages, tool calls, usage, requests, responses, events.

Plain dataclasses (no validation on assignment) so they are cheap to build on the hot path.
Connectors translate these to and from one provider call; no vendor type leaves `connectors/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    """A function call requested by the model. `arguments` is the raw JSON text it sent."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(slots=True)
class ToolResult:
    """The answer to one tool call, paired with it by `call_id`."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(slots=True)
class ChatMessage:
    """One chat message.

    `role="tool"` messages carry the result of the call `tool_call_id`; assistant messages
    may carry `tool_calls`.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: list[ToolCall] | None = None) -> ChatMessage:
        return cls("assistant", content, list(tool_calls or []))

    @classmethod
    def tool(cls, result: ToolResult) -> ChatMessage:
        return cls("tool", result.content, tool_call_id=result.call_id, name=result.name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=[ToolCall(c["id"], c["name"], c.get("arguments", "{}")) for c in data.get("tool_calls", [])],
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )


@dataclass(slots=True)
class Usage:
    """Token usage. `cached_tokens` are input tokens read from a provider cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.requests + other.requests,
        )

    def add(self, other: Usage) -> None:
        """Accumulate `other` in place."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.requests += other.requests


@dataclass(slots=True)
class ToolSpec:
    """A function offered to the model: provider-safe name, description, JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ToolChoice:
    """`auto`: the model decides; `required`: it must call one (`function` names which);
    `none`: it must not call any."""

    mode: Literal["auto", "required", "none"] = "auto"
    function: str | None = None

    @classmethod
    def parse(cls, value: str | ToolChoice | None) -> ToolChoice:
        if value is None:
            return cls()
        if isinstance(value, ToolChoice):
            return value
        if value in ("auto", "required", "none"):
            return cls(value)  # type: ignore[arg-type]
        return cls("required", value)


@dataclass(slots=True)
class ChatRequest:
    """One provider-neutral chat call.

    `settings` holds normalized execution settings (`max_tokens`, `temperature`, `top_p`,
    `stop`, `seed`, `presence_penalty`, `frequency_penalty`, ...). Connectors map each to
    their provider's parameter, raise for a setting they cannot honour, or drop it with
    a logged warning (each connector documents which).
    """

    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    output_schema_name: str = "output"


@dataclass(slots=True)
class ChatResponse:
    """The answer to a ChatRequest. `finish_reason` is one of stop, length, tool_calls,
    content_filter, error, unknown; `model` is the provider's own model id."""

    message: ChatMessage
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""

    @property
    def text(self) -> str:
        return self.message.content

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls


# --- stream events (from connectors) -----------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call. `index` identifies the call within the turn; `id` and
    `name` arrive with its first delta, `arguments` in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class UsageEvent:
    usage: Usage


@dataclass(slots=True)
class StreamEnd:
    finish_reason: str = "stop"
    model: str = ""


# --- stream events added by the kernel's loop ---------------------------------------------


@dataclass(slots=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(slots=True)
class ToolCallFinished:
    call: ToolCall
    result: ToolResult


@dataclass(slots=True)
class FinalMessage:
    message: ChatMessage
    usage: Usage = field(default_factory=Usage)


StreamEvent = TextDelta | ToolCallDelta | UsageEvent | StreamEnd
KernelStreamEvent = StreamEvent | ToolCallStarted | ToolCallFinished | FinalMessage


class StreamAccumulator:
    """Folds connector stream events into a ChatResponse (text, tool calls, usage)."""

    __slots__ = ("_calls", "_text", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, ToolCall] = {}
        self.usage = Usage()
        self.finish_reason = "stop"
        self.model = ""

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is None:
                call = self._calls[event.index] = ToolCall(event.id or "", event.name or "", "")
            if event.id:
                call.id = event.id
            if event.name:
                call.name = event.name
            call.arguments += event.arguments
        elif isinstance(event, UsageEvent):
            self.usage.add(event.usage)
        elif isinstance(event, StreamEnd):
            self.finish_reason = event.finish_reason
            self.model = event.model or self.model

    def response(self) -> ChatResponse:
        calls = [self._calls[i] for i in sorted(self._calls)]
        for call in calls:
            call.arguments = call.arguments or "{}"
        message = ChatMessage("assistant", "".join(self._text), calls)
        return ChatResponse(message, self.finish_reason, self.usage, self.model)
