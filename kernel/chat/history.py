"""A chat history: a list of messages with JSON round-trip and token-aware trimming.

Trimming keeps every system message, drops the oldest *turns* first (a turn is a user
message and everything after it up to the next user message), and, when only the latest
turn is left and still too long, drops its oldest tool exchanges. An assistant message
with tool calls and the tool messages answering it are always dropped together, so a
trimmed history never holds a tool result without its call (providers reject that).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, overload

from ..contents import ChatMessage, ToolCall, ToolResult

TokenCounter = Callable[[str], int]
MESSAGE_OVERHEAD = 4
"""Tokens counted per message on top of its text (role and separators)."""


def approx_tokens(text: str) -> int:
    """A cheap estimate: about four characters per token (English text, code)."""
    return (len(text) + 3) // 4


def message_tokens(message: ChatMessage, count_tokens: TokenCounter = approx_tokens) -> int:
    """Tokens of one message: text, tool-call names and arguments, plus overhead."""
    total = MESSAGE_OVERHEAD + count_tokens(message.content)
    for call in message.tool_calls:
        total += count_tokens(call.name) + count_tokens(call.arguments)
    return total


class ChatHistory:
    """An ordered list of ChatMessages. `run_chat` appends each turn's new messages."""

    __slots__ = ("messages",)

    def __init__(self, messages: Iterable[ChatMessage] = (), *, system: str | None = None) -> None:
        self.messages: list[ChatMessage] = []
        if system is not None:
            self.add_system(system)
        self.messages.extend(messages)

    # -- building -------------------------------------------------------------------------

    def add(self, message: ChatMessage) -> ChatMessage:
        self.messages.append(message)
        return message

    append = add

    def add_system(self, content: str) -> ChatMessage:
        return self.add(ChatMessage.system(content))

    def add_user(self, content: str) -> ChatMessage:
        return self.add(ChatMessage.user(content))

    def add_assistant(self, content: str = "", tool_calls: list[ToolCall] | None = None) -> ChatMessage:
        return self.add(ChatMessage.assistant(content, tool_calls))

    def add_tool(self, result: ToolResult) -> ChatMessage:
        return self.add(ChatMessage.tool(result))

    def extend(self, messages: Iterable[ChatMessage]) -> None:
        self.messages.extend(messages)

    def clear(self) -> None:
        self.messages.clear()

    # -- list protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self.messages)

    @overload
    def __getitem__(self, index: int) -> ChatMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[ChatMessage]: ...

    def __getitem__(self, index: int | slice) -> ChatMessage | list[ChatMessage]:
        return self.messages[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChatHistory):
            return self.messages == other.messages
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ChatHistory({len(self.messages)} messages)"

    # -- serialization ----------------------------------------------------------------------

    def to_dicts(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.messages]

    def to_json(self, **dumps: Any) -> str:
        return json.dumps(self.to_dicts(), ensure_ascii=False, **dumps)

    @classmethod
    def from_dicts(cls, data: Iterable[dict[str, Any]]) -> ChatHistory:
        return cls(ChatMessage.from_dict(d) for d in data)

    @classmethod
    def from_json(cls, text: str) -> ChatHistory:
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError("a chat history in JSON is a list of message objects")
        return cls.from_dicts(data)

    # -- trimming ----------------------------------------------------------------------------

    def count_tokens(self, count_tokens: TokenCounter = approx_tokens) -> int:
        return sum(message_tokens(m, count_tokens) for m in self.messages)

    def trim(self, max_tokens: int, count_tokens: TokenCounter = approx_tokens) -> list[ChatMessage]:
        """Drop old messages until the history fits `max_tokens`; returns what was dropped.

        System messages always stay, and the latest user message stays, so the result
        may still exceed `max_tokens` when those alone do.
        """
        units = _units(self.messages)
        cost = [sum(message_tokens(self.messages[i], count_tokens) for i in unit) for unit in units]
        total = sum(cost)
        pinned = {i for unit in units for i in unit if self.messages[i].role == "system"}
        dropped: set[int] = set()

        turns = _turns(self.messages, units)
        # Phase 1: whole turns, oldest first, never the last one.
        for turn in turns[:-1]:
            if total <= max_tokens:
                break
            for u in turn:
                if not (set(units[u]) & pinned):
                    dropped.update(units[u])
                    total -= cost[u]
        # Phase 2: inside the last turn, its oldest tool exchanges (the user message stays).
        if total > max_tokens and turns:
            for u in turns[-1]:
                if total <= max_tokens:
                    break
                first = self.messages[units[u][0]]
                if first.role == "assistant" and first.tool_calls and u != turns[-1][-1]:
                    dropped.update(units[u])
                    total -= cost[u]
        removed = [m for i, m in enumerate(self.messages) if i in dropped]
        self.messages = [m for i, m in enumerate(self.messages) if i not in dropped]
        return removed


def _units(messages: list[ChatMessage]) -> list[list[int]]:
    """Group message indexes into units: an assistant tool-call message with the tool
    messages answering it, or a single message."""
    units: list[list[int]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        unit = [i]
        i += 1
        if message.role == "assistant" and message.tool_calls:
            ids = {c.id for c in message.tool_calls}
            while i < len(messages) and messages[i].role == "tool" and messages[i].tool_call_id in ids:
                unit.append(i)
                i += 1
        units.append(unit)
    return units


def _turns(messages: list[ChatMessage], units: list[list[int]]) -> list[list[int]]:
    """Group unit indexes into turns, each starting at a user message (system messages
    belong to the turn they appear in and are pinned anyway)."""
    turns: list[list[int]] = []
    for u, unit in enumerate(units):
        if not turns or messages[unit[0]].role == "user":
            turns.append([u])
        else:
            turns[-1].append(u)
    return turns
