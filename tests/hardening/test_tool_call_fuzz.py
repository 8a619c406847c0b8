"""The tool loop under random model requests (kernel/chat), property-based.

Whatever the model sends (random JSON of any shape, text that is not JSON, huge or deep
values, arbitrary Unicode with lone surrogates raw or escaped, NaN/Infinity, integers of
thousands of digits, repeated or empty call ids), streaming or not: `kernel.chat` /
`kernel.chat_stream` return normally (or raise the documented ToolLoopError with
`on_exhausted="error"`), a function only ever runs with arguments that validate, each
call gets exactly one result under an id unique in its message, every message of the
next request encodes as UTF-8, and the loop ends within the policy's limits.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Annotated, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from kernel import Kernel, KernelSettings, kernel_function
from kernel.chat import ChatHistory
from kernel.contents import ChatMessage, ChatRequest, ToolCall
from kernel.errors import ToolLoopError
from kernel.testing import ScriptedReply

MAX_ROUNDS, MAX_CALLS = 4, 12


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: float
    label: str = ""


SIGNATURES = {
    "scalars": {"s": str, "i": int, "f": float, "b": bool},
    "containers": {"li": list[int], "d": dict[str, str]},
    "optional_literal": {"o": int | None, "mode": Literal["fast", "slow"]},
    "model_enum": {"p": Point, "c": Color},
}
calls_seen: list[tuple[str, dict[str, object]]] = []


@kernel_function
def scalars(s: str, i: int, f: float, b: bool = False) -> str:
    calls_seen.append(("scalars", {"s": s, "i": i, "f": f, "b": b}))
    return "ok"


@kernel_function
def containers(li: list[int], d: Annotated[dict[str, str], "labels"] | None = None) -> str:
    calls_seen.append(("containers", {"li": li, "d": d}))
    return "ok"


@kernel_function
def optional_literal(o: int | None, mode: Literal["fast", "slow"] = "fast") -> str:
    calls_seen.append(("optional_literal", {"o": o, "mode": mode}))
    return "ok"


@kernel_function
def model_enum(p: Point, c: Color = Color.RED) -> str:
    calls_seen.append(("model_enum", {"p": p, "c": c}))
    return "ok"


ADAPTERS = {
    "scalars": {"s": TypeAdapter(str), "i": TypeAdapter(int), "f": TypeAdapter(float), "b": TypeAdapter(bool)},
    "containers": {"li": TypeAdapter(list[int]), "d": TypeAdapter(dict[str, str] | None)},
    "optional_literal": {"o": TypeAdapter(int | None), "mode": TypeAdapter(Literal["fast", "slow"])},
    "model_enum": {"p": TypeAdapter(Point), "c": TypeAdapter(Color)},
}


def revalidate(name: str, arguments: dict[str, object]) -> None:
    """What the function received must be exactly valid values of its declared types."""
    for param, value in arguments.items():
        adapter = ADAPTERS[name][param]
        assert adapter.validate_python(value, strict=False) == value or isinstance(value, BaseModel)
        if param in ("i",):
            assert type(value) is int
        if param == "f":
            assert isinstance(value, float) and math.isfinite(value)  # NaN/Infinity never reach it
        if param == "b":
            assert type(value) is bool
        if param == "s":
            assert isinstance(value, str)
        if param == "li":
            assert isinstance(value, list) and all(type(v) is int for v in value)
        if param == "p":
            assert isinstance(value, Point)
        if param == "c":
            assert isinstance(value, Color)


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    k = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    k.add_plugin([scalars, containers, optional_literal, model_enum], name="fz")
    return k


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "s": st.text(max_size=20) | json_values, "i": st.integers() | json_values,
        "f": st.floats(allow_nan=False) | json_values, "b": st.booleans() | json_values,
        "li": st.lists(st.integers(), max_size=5) | json_values,
        "d": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3) | json_values,
        "o": st.none() | st.integers() | json_values, "mode": st.sampled_from(["fast", "slow", "FAST", ""]),
        "p": st.fixed_dictionaries({"x": st.integers(), "y": st.floats(allow_nan=False)}) | json_values,
        "c": st.sampled_from(["red", "blue", "green", 1]),
    },
)


def deep(n: int) -> str:
    return '{"li": ' + "[" * n + "]" * n + "}"


def deep_objects(n: int) -> str:
    return '{"d": ' + '{"a": ' * n + "1" + "}" * n + "}"


def insert(text: str, piece: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + piece + text[at:]


any_char = st.characters(exclude_categories=())  # every code point, lone surrogates included
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
unicode_text = st.text(any_char, max_size=30)


raw_arguments = st.one_of(
    plausible.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=60),  # not JSON, mostly
    st.text(any_char, max_size=60),  # raw text with any code point: not JSON, not even valid Unicode
    st.tuples(plausible.map(lambda d: json.dumps(d, ensure_ascii=False)), surrogate, st.integers(0, 500))
    .map(lambda t: insert(*t)),  # JSON with a raw lone surrogate somewhere
    st.fixed_dictionaries({"s": unicode_text}, optional={"d": st.dictionaries(unicode_text, unicode_text,
                                                                              max_size=2)})
    .map(json.dumps),  # lone surrogates as JSON escapes
    st.fixed_dictionaries({"f": st.floats()}, optional={"i": st.floats(), "p": st.fixed_dictionaries(
        {"x": st.integers(), "y": st.floats()})}).map(json.dumps),  # NaN, Infinity
    st.integers(-(10**130), 10**130).map(lambda i: json.dumps({"i": i, "o": i})),  # ints around the bound
    st.tuples(st.sampled_from(["", "-"]), st.integers(90, 6000)).map(lambda t: f'{{"i": {t[0]}{"9" * t[1]}}}'),
    st.sampled_from(['{"f": 1e999}', '{"f": -1e400}', '{"f": 1e308}']),
    st.integers(1, 3000).map(deep),
    st.integers(1, 3000).map(deep_objects),
    st.sampled_from(['{"f": NaN}', '{"f": Infinity, "i": -Infinity}', '{"i": 1e999}', "", "null", "[]",
                     '{"s": "\\ud800"}', '{"i": 1, "i": "two"}', deep(5000), '{"s": "' + "x" * 70_000 + '"}',
                     '{"li": [' + ",".join(["1"] * 20000) + "]}", '{"s": "\u202e\u0000日本"}']),
)
tool_names = st.sampled_from(["fz-scalars", "fz-containers", "fz-optional_literal", "fz-model_enum",
                              "fz-missing", "os-system", "fz.scalars", ""])
call_ids = st.one_of(st.none(), st.sampled_from(["c1", "c1", "c1_2", "", "call_1", "c\ud800"]), unicode_text)
one_call = st.tuples(tool_names, raw_arguments, call_ids)
round_of_calls = st.lists(one_call, min_size=1, max_size=4)
scripts = st.lists(round_of_calls, min_size=1, max_size=MAX_ROUNDS + 3)


def encodable(message: ChatMessage) -> None:
    """What a connector does with a message of the next request: UTF-8 JSON."""
    json.dumps(message.to_dict(), ensure_ascii=False).encode("utf-8")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(script=scripts, stream=st.booleans(), on_exhausted=st.sampled_from(["final_call", "final_call", "error"]))
async def test_random_tool_requests(kernel: Kernel, script: list[list[tuple[str, str, str | None]]], stream: bool,
                                   on_exhausted: str) -> None:
    from kernel.testing import ScriptedChatModel

    calls_seen.clear()
    counter = iter(range(10_000))
    replies: list[object] = []
    for round_calls in script:  # no id: a unique one; else the drawn one, repeated ids included
        calls = [ToolCall(f"c{next(counter)}" if i is None else i, name, raw) for name, raw, i in round_calls]
        replies.append(ScriptedReply(tool_calls=calls))

    def reply(request: ChatRequest) -> object:
        """The scripted rounds, in order; a request that forbids tools gets the answer."""
        choice = request.tool_choice
        if replies and not (choice is not None and choice.mode == "none"):
            return replies.pop(0)
        return "final"

    model = ScriptedChatModel(default=reply)
    kernel.services.add_service("fuzz", model)
    policy = {"max_rounds": MAX_ROUNDS, "max_calls": MAX_CALLS, "max_repeats": 2, "on_exhausted": on_exhausted}
    history = ChatHistory([ChatMessage.user("go")])
    try:  # only the documented error may come out, and only when asked for
        if stream:
            async for _event in kernel.chat_stream(history, service="fuzz", tools="all", policy=policy):
                pass
        else:
            result = await kernel.chat(history, service="fuzz", tools="all", policy=policy)
            assert result.text == "final"
            assert result.rounds <= MAX_ROUNDS
            assert sum(1 for r in result.trace if not r.result.content.startswith("error: not run")) <= MAX_CALLS
            for record in result.trace:
                assert len(record.result.content) <= 500 or not record.is_error
                assert "Traceback" not in record.result.content
        messages = history.messages[1:]
        assert messages[-1].role == "assistant" and messages[-1].content == "final"
    except ToolLoopError as exc:
        assert on_exhausted == "error"
        messages = exc.messages  # type: ignore[attr-defined]

    # 1. every function call had valid arguments
    for name, arguments in calls_seen:
        revalidate(name, arguments)
    # 2. each assistant call gets exactly one result, in order, right after it, under an id
    #    unique in its message; every message (as the next request carries it) encodes
    for index, message in enumerate(messages):
        encodable(message)
        assert len(message.content) <= 20_000 or message.role != "tool"
        if message.role == "assistant" and message.tool_calls:
            ids = [c.id for c in message.tool_calls]
            assert all(ids) and len(set(ids)) == len(ids)
            following = messages[index + 1 : index + 1 + len(ids)]
            assert [m.role for m in following] == ["tool"] * len(ids)
            assert [m.tool_call_id for m in following] == ids
    for request in model.requests:
        for message in request.messages:
            encodable(message)
    assert sum(1 for m in messages if m.role == "tool") == sum(len(m.tool_calls) for m in messages)
    # 3. the loop terminated within the policy
    assert len(model.requests) <= MAX_ROUNDS + 2
    assert len(calls_seen) <= MAX_CALLS
