"""ChatHistory: building, JSON round trip, token-aware trimming that keeps tool pairs whole."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.chat.history import ChatHistory, approx_tokens, message_tokens
from kernel.contents import ChatMessage, ToolCall, ToolResult


def exchange(call_id: str, result: str = "r") -> list[ChatMessage]:
    return [
        ChatMessage.assistant("", [ToolCall(call_id, "math-add", '{"a": 1, "b": 2}')]),
        ChatMessage.tool(ToolResult(call_id, "math-add", result)),
    ]


def assert_paired(messages: list[ChatMessage]) -> None:
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.role == "assistant" and message.tool_calls:
            ids = [c.id for c in message.tool_calls]
            assert [m.tool_call_id for m in messages[i + 1 : i + 1 + len(ids)]] == ids
            i += 1 + len(ids)
        else:
            assert message.role != "tool", f"orphan tool result at {i}"
            i += 1


def test_building_and_list_protocol() -> None:
    history = ChatHistory(system="sys")
    history.add_user("hi")
    history.add_assistant("hello")
    history.extend(exchange("c1"))
    history.add_tool(ToolResult("c9", "x-y", "late"))
    assert len(history) == 6
    assert [m.role for m in history] == ["system", "user", "assistant", "assistant", "tool", "tool"]
    assert history[1].content == "hi" and [m.role for m in history[-2:]] == ["tool", "tool"]
    assert repr(history) == "ChatHistory(6 messages)"


def test_json_round_trip_keeps_tool_calls_and_ids() -> None:
    history = ChatHistory(system="sys")
    history.add_user("2+1?")
    history.extend(exchange("call_7", "3"))
    history.add_assistant("3")
    text = history.to_json()
    data = json.loads(text)
    assert data[2]["tool_calls"] == [{"id": "call_7", "name": "math-add", "arguments": '{"a": 1, "b": 2}'}]
    assert data[3]["tool_call_id"] == "call_7"
    restored = ChatHistory.from_json(text)
    assert restored == history
    with pytest.raises(ValueError, match="list of message objects"):
        ChatHistory.from_json('{"role": "user"}')


def test_approx_tokens_and_message_cost() -> None:
    assert approx_tokens("") == 0 and approx_tokens("abcd") == 1 and approx_tokens("abcde") == 2
    call = ChatMessage.assistant("", [ToolCall("1", "abcd", "abcdabcd")])
    assert message_tokens(call) == 4 + 0 + 1 + 2


def test_trim_keeps_system_and_drops_oldest_turns_first() -> None:
    history = ChatHistory(system="S" * 40)
    for n in range(4):
        history.add_user(f"question {n} " + "q" * 36)
        history.add_assistant(f"answer {n} " + "a" * 36)
    before = history.count_tokens()
    removed = history.trim(before - 1)
    assert [m.content[:10] for m in removed] == ["question 0", "answer 0 a"]
    assert history[0].role == "system" and history[1].content.startswith("question 1")
    history.trim(1)  # impossible budget: only the system message and the last turn remain
    assert [m.role for m in history] == ["system", "user", "assistant"]
    assert history[1].content.startswith("question 3")


def test_trim_drops_a_tool_call_with_its_results_as_a_unit() -> None:
    history = ChatHistory()
    history.add_user("old question")
    history.add_assistant("", [ToolCall("a", "t-f", "{}"), ToolCall("b", "t-f", "{}")])
    history.add_tool(ToolResult("a", "t-f", "x" * 400))
    history.add_tool(ToolResult("b", "t-f", "y" * 400))
    history.add_assistant("old answer")
    history.add_user("new question")
    removed = history.trim(20)
    assert [m.role for m in removed] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m.content for m in history] == ["new question"]


def test_trim_inside_one_long_agentic_turn_drops_oldest_exchanges() -> None:
    history = ChatHistory(system="sys")
    history.add_user("do the task")
    for n in range(4):
        history.extend(exchange(f"c{n}", "z" * 200))
    kept_before = history.count_tokens()
    history.trim(kept_before - 10)
    ids = [m.tool_call_id for m in history if m.role == "tool"]
    assert ids == ["c1", "c2", "c3"]
    assert [m.role for m in history[:2]] == ["system", "user"]
    assert_paired(history.messages)
    history.trim(1)
    assert [m.tool_call_id for m in history if m.role == "tool"] == ["c3"]  # the latest exchange stays


def test_injected_token_counter_is_used() -> None:
    words = []

    def count(text: str) -> int:
        words.append(text)
        return len(text.split())

    history = ChatHistory()
    history.add_user("one two three")
    history.add_assistant("four")
    history.add_user("five six")
    assert history.count_tokens(count) == 3 + 1 + 2 + 3 * 4
    removed = history.trim(2 + 4, count)
    assert [m.content for m in removed] == ["one two three", "four"]
    assert words  # the injected counter did the counting


# --- properties ------------------------------------------------------------------------------

_turn = st.tuples(
    st.text(min_size=0, max_size=60),
    st.lists(st.lists(st.text(max_size=80), min_size=1, max_size=3), max_size=3),  # tool rounds
    st.one_of(st.none(), st.text(max_size=60)),
)


@settings(max_examples=150, deadline=None)
@given(
    system=st.one_of(st.none(), st.text(max_size=40)),
    turns=st.lists(_turn, min_size=1, max_size=6),
    budget=st.integers(min_value=0, max_value=400),
)
def test_trim_invariants(system: str | None, turns: list[tuple[str, list[list[str]], str | None]],
                         budget: int) -> None:
    history = ChatHistory(system=system)
    ids = iter(range(10_000))
    for question, rounds, answer in turns:
        history.add_user(question)
        for results in rounds:
            calls = [ToolCall(f"id{next(ids)}", "p-f", "{}") for _ in results]
            history.add_assistant("", calls)
            for call, result in zip(calls, results, strict=True):
                history.add_tool(ToolResult(call.id, call.name, result))
        if answer is not None:
            history.add_assistant(answer)
    original = list(history.messages)
    last_user = max(i for i, m in enumerate(original) if m.role == "user")
    removed = history.trim(budget)

    kept = history.messages
    assert len(kept) + len(removed) == len(original)
    positions = [next(i for i, o in enumerate(original) if o is m) for m in kept]
    assert positions == sorted(positions)  # order preserved, nothing invented
    assert [m for m in original if m.role == "system"] == [m for m in kept if m.role == "system"]
    assert any(m is original[last_user] for m in kept)
    assert_paired(kept)
    non_system = [m for m in kept if m.role != "system"]
    assert non_system and non_system[0].role == "user"  # providers want a user message first
    if history.count_tokens() > budget:
        # only the protected part is left: system messages, the last user message, and at
        # most the latest turn's answer and last tool exchange
        assert all(positions[i] >= last_user or kept[i].role == "system" for i in range(len(kept)))
