"""The tool loop under random model requests (kernel/tool_calls.py), property-based.

Whatever the model sends (random JSON of any shape, text that is not JSON, huge or deep
values, unicode, NaN/Infinity), a function only ever runs with arguments that validate,
each call id gets exactly one result, and the loop ends within the policy's limits.
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from kernel import Kernel, KernelSettings, kernel_function
from kernel.contents import ChatRequest, ToolCall
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
            assert isinstance(value, float)
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


raw_arguments = st.one_of(
    plausible.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=60),  # not JSON, mostly
    st.sampled_from(['{"f": NaN}', '{"f": Infinity, "i": -Infinity}', '{"i": 1e999}', "", "null", "[]",
                     '{"s": "\\ud800"}', '{"i": 1, "i": "two"}', deep(5000), '{"s": "' + "x" * 70_000 + '"}',
                     '{"li": [' + ",".join(["1"] * 20000) + "]}", '{"s": "\u202e\u0000日本"}']),
)
tool_names = st.sampled_from(["fz-scalars", "fz-containers", "fz-optional_literal", "fz-model_enum",
                              "fz-missing", "os-system", "fz.scalars", ""])
one_call = st.tuples(tool_names, raw_arguments)
round_of_calls = st.lists(one_call, min_size=1, max_size=4)
scripts = st.lists(round_of_calls, min_size=1, max_size=MAX_ROUNDS + 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(script=scripts)
async def test_random_tool_requests(kernel: Kernel, script: list[list[tuple[str, str]]]) -> None:
    from kernel.testing import ScriptedChatModel

    calls_seen.clear()
    counter = iter(range(10_000))
    replies: list[object] = []
    for round_calls in script:
        calls = [ToolCall(f"c{next(counter)}", name, raw) for name, raw in round_calls]
        replies.append(ScriptedReply(tool_calls=calls))

    def reply(request: ChatRequest) -> object:
        """The scripted rounds, in order; a request that forbids tools gets the answer."""
        choice = request.tool_choice
        if replies and not (choice is not None and choice.mode == "none"):
            return replies.pop(0)
        return "final"

    model = ScriptedChatModel(default=reply)
    kernel.services.add_service("fuzz", model)
    result = await kernel.chat("go", service="fuzz", tools="all",
                               policy={"max_rounds": MAX_ROUNDS, "max_calls": MAX_CALLS, "max_repeats": 2})

    # 1. every function call had valid arguments
    for name, arguments in calls_seen:
        revalidate(name, arguments)
    # 2. each assistant call id gets exactly one result, in order, right after it
    messages = result.messages
    for index, message in enumerate(messages):
        if message.role == "assistant" and message.tool_calls:
            ids = [c.id for c in message.tool_calls]
            following = messages[index + 1 : index + 1 + len(ids)]
            assert [m.role for m in following] == ["tool"] * len(ids)
            assert [m.tool_call_id for m in following] == ids
    answered = [m.tool_call_id for m in messages if m.role == "tool"]
    assert len(answered) == len(set(answered))
    # 3. the loop terminated within the policy
    assert result.rounds <= MAX_ROUNDS
    assert len(model.requests) <= MAX_ROUNDS + 2
    assert sum(1 for r in result.trace if not r.result.content.startswith("error: not run")) <= MAX_CALLS
    assert result.text == "final"
    assert len(calls_seen) <= MAX_CALLS
    for record in result.trace:
        assert len(record.result.content) <= 500 or not record.is_error
        assert "Traceback" not in record.result.content
