"""The breadth budget of one top-level invocation (`max_model_calls`, `max_function_calls`).

Depth alone (`max_call_depth`) does not bound a fan-out: 8 prompt functions that each call
the next one 4 times from their template make 4^0 + ... + 4^7 = 21,845 model calls from one
`kernel.invoke`. One top-level invocation (`invoke`, `chat`, `chat_stream`, `invoke_stream`,
a plan step) has one budget, shared by everything nested under it; past it the kernel
raises `BudgetExceededError` and makes no further call. Everything runs on the scripted
model: the counts are exact, not timings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.chat import run_chat
from kernel.contents import ChatRequest, TextDelta
from kernel.errors import BudgetExceededError, InvocationError
from kernel.planning import Plan, execute_plan
from kernel.testing import ScriptedChatModel, ScriptedReply, tool_call

LEVELS, FAN_OUT = 8, 4
LOOP = {"max_rounds": 1000, "max_calls": 10_000}  # the tool loop's own limits out of the way


def make_kernel(model: ScriptedChatModel | None = None, **settings: Any) -> Kernel:
    kernel = Kernel(settings=KernelSettings(**settings), load_entry_points=False, builtins=False)
    if model is not None:
        kernel.services.add_service("test", model)
    return kernel


def add_fan_out(kernel: Kernel) -> None:
    """f.p0 ... f.p7: each renders the next one FAN_OUT times, then calls the model once."""
    for level in range(LEVELS):
        calls = "".join(f"{{{{ f.p{level + 1}() }}}}" for _ in range(FAN_OUT)) if level < LEVELS - 1 else "leaf"
        kernel.add_function(PromptFunction.from_template(calls, name=f"p{level}", plugin="f"))


def add_leaves(kernel: Kernel, count: int) -> None:
    """p.leaf: one model call; p.top: `count` model calls in all (count - 1 leaves + its own)."""
    kernel.add_function(PromptFunction.from_template("leaf", name="leaf", plugin="p"))
    kernel.add_function(PromptFunction.from_template("{{ p.leaf() }}" * (count - 1), name="top", plugin="p"))


# --- model calls ------------------------------------------------------------------------------


async def test_prompt_fan_out_stops_at_exactly_max_model_calls() -> None:
    """The 8 x 4 fan-out: 21,845 model calls without a budget; with the default budget of
    100 the 101st call is refused before it reaches the model, and the error says which
    budget, its size and the setting to raise."""
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model)
    add_fan_out(kernel)
    with pytest.raises(BudgetExceededError, match=r"100 model calls \(max_model_calls\)") as caught:
        await kernel.invoke("f.p0")
    assert len(model.requests) == 100
    assert "raise max_model_calls" in str(caught.value)
    assert isinstance(caught.value, InvocationError)


async def test_max_model_calls_is_the_setting_read() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=7)
    add_fan_out(kernel)
    with pytest.raises(BudgetExceededError, match=r"7 model calls \(max_model_calls\)"):
        await kernel.invoke("f.p0")
    assert len(model.requests) == 7


async def test_a_budget_that_suffices_changes_nothing() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=5)
    add_leaves(kernel, 5)
    result = await kernel.invoke("p.top")
    assert result.value == "x" and len(model.requests) == 5 and result.usage.requests == 5


async def test_streamed_invocation_has_the_same_budget() -> None:
    """`invoke_stream` of a prompt function is one top-level invocation: the calls its
    template makes count, and the budget never leaks into the caller's context."""
    model = ScriptedChatModel(default="streamed")
    kernel = make_kernel(model, max_model_calls=3)
    add_leaves(kernel, 4)  # 4 calls: one too many
    with pytest.raises(BudgetExceededError, match="max_model_calls"):
        async for _ in kernel.invoke_stream("p.top"):
            pass
    assert len(model.requests) == 3

    kernel.add_function(PromptFunction.from_template("{{ p.leaf() }}{{ p.leaf() }}", name="top3", plugin="p"))
    events = [e async for e in kernel.invoke_stream("p.top3")]  # exactly 3: fits
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "streamed"
    assert len(model.requests) == 6
    assert (await kernel.invoke("p.top3")).value == "streamed"  # the caller's context got no budget


async def test_chat_tool_loop_counts_its_model_calls() -> None:
    """A model that keeps asking for tool calls (new arguments each time, so the repeat
    rule never stops it) is stopped by the model-call budget of the chat turn."""
    steps: list[int] = []

    @kernel_function
    def step(i: int) -> int:
        """One more step."""
        steps.append(i)
        return i

    def keep_calling(request: ChatRequest) -> ScriptedReply:
        return tool_call("t.step", i=len(model.requests))

    model = ScriptedChatModel(default=keep_calling)
    kernel = make_kernel(model, max_model_calls=5)
    kernel.add_plugin([step], name="t")
    with pytest.raises(BudgetExceededError, match=r"5 model calls \(max_model_calls\)"):
        await kernel.chat("go", policy=LOOP)
    assert len(model.requests) == 5 and steps == [1, 2, 3, 4, 5]

    with pytest.raises(BudgetExceededError, match="max_model_calls"):  # the streamed turn too
        async for _ in kernel.chat_stream("go", policy=LOOP):
            pass
    assert len(model.requests) == 10


async def test_model_calls_of_a_tool_share_the_chat_turns_budget() -> None:
    """A prompt function offered as a tool spends the turn's budget; when it runs out
    inside the tool, the model gets an error result but is not asked again."""
    kernel = make_kernel(max_model_calls=3)
    kernel.add_function(PromptFunction.from_template("Summarize {{ text }}", name="summarize", plugin="w"))

    def script() -> ScriptedChatModel:
        model = ScriptedChatModel([tool_call("w.summarize", text="long"), "short", "done"])
        kernel.services.add_service("test", model)
        return model

    model = script()
    assert (await kernel.chat("go", tools=["w.summarize"])).text == "done"
    assert len(model.requests) == 3  # the loop's two + the tool's own

    kernel = make_kernel(max_model_calls=2)
    kernel.add_function(PromptFunction.from_template("Summarize {{ text }}", name="summarize", plugin="w"))
    model = script()
    with pytest.raises(BudgetExceededError, match=r"2 model calls"):
        await kernel.chat("go", tools=["w.summarize"])
    assert len(model.requests) == 2  # the tool's call was refused; no third request


async def test_prompt_function_running_the_tool_loop_counts_against_its_invocation() -> None:
    steps: list[int] = []

    @kernel_function
    def step(i: int) -> int:
        """One more step."""
        steps.append(i)
        return i

    model = ScriptedChatModel()
    model.default = lambda request: tool_call("t.step", i=len(model.requests))
    kernel = make_kernel(model, max_model_calls=4)
    kernel.add_plugin([step], name="t")
    kernel.add_function(PromptFunction.from_template(
        "go", name="agent", plugin="a", settings={"function_choice": "auto", "plugins": ["t"], "loop_policy": LOOP}))
    with pytest.raises(BudgetExceededError, match="max_model_calls"):
        await kernel.invoke("a.agent")
    assert len(model.requests) == 4 and len(steps) == 4


# --- function calls ---------------------------------------------------------------------------


class Fan:
    def __init__(self) -> None:
        self.runs = 0

    @kernel_function
    async def fan(self, n: int, width: int, kernel: Kernel) -> int:
        """Calls itself `width` times with n - 1."""
        self.runs += 1
        for _ in range(n and width):
            await kernel.invoke("t.fan", n=n - 1, width=width)
        return n


async def test_native_recursion_stops_at_exactly_max_function_calls() -> None:
    """A native function calling itself twice per level, 10 levels deep (within the depth
    limit of 16): 2,047 invocations without a budget, the default budget allows 1,000."""
    fan = Fan()
    kernel = make_kernel()
    kernel.add_plugin(fan, name="t")
    with pytest.raises(BudgetExceededError, match=r"1000 function calls \(max_function_calls\)") as caught:
        await kernel.invoke("t.fan", n=10, width=2)
    assert fan.runs == 1000  # the top-level invocation is the first of them
    assert "t.fan" in str(caught.value) and "raise max_function_calls" in str(caught.value)


async def test_native_fan_out_with_a_small_function_budget() -> None:
    fan = Fan()
    kernel = make_kernel(max_function_calls=50)
    kernel.add_plugin(fan, name="t")
    with pytest.raises(BudgetExceededError, match=r"50 function calls"):
        await kernel.invoke("t.fan", n=3, width=10)  # 1 + 10 + 100 + 1000 invocations
    assert fan.runs == 50
    fan.runs = 0
    assert (await kernel.invoke("t.fan", n=1, width=49)).value == 1  # exactly 50: fits, a fresh budget
    assert fan.runs == 50


async def test_template_calls_are_function_calls() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_function_calls=6)
    add_fan_out(kernel)
    with pytest.raises(BudgetExceededError, match=r"6 function calls \(max_function_calls\)"):
        await kernel.invoke("f.p0")
    assert model.requests == []  # p0 .. p5 entered, p6 refused: no leaf reached the model


async def test_tool_calls_and_their_nested_calls_share_the_chat_turns_function_budget() -> None:
    fan = Fan()
    model = ScriptedChatModel([tool_call("t.fan", n=1, width=3), tool_call("t.fan", n=1, width=4), "done"])
    kernel = make_kernel(model, max_function_calls=6)
    kernel.add_plugin(fan, name="t")
    result = await kernel.chat("go", policy=LOOP)
    # first call: 1 + 3 invocations; second: 2 more fit, the third is refused
    assert fan.runs == 6
    assert result.messages[1].content == "1"
    assert "max_function_calls" in result.messages[3].content and result.messages[3].content.startswith("error:")


# --- one budget per top-level invocation ------------------------------------------------------


async def test_each_top_level_invocation_gets_a_fresh_budget() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=3)
    add_leaves(kernel, 3)
    for _ in range(4):
        assert (await kernel.invoke("p.top")).value == "x"
    assert len(model.requests) == 12
    for _ in range(2):
        await kernel.chat("hi")  # a chat turn is a top-level invocation too
    assert len(model.requests) == 14


async def test_concurrent_top_level_invocations_do_not_share_budgets() -> None:
    """Four invocations interleaved on one loop, each using its whole budget of 3."""
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=3)
    add_leaves(kernel, 3)

    @kernel_function
    async def three(kernel: Kernel) -> int:
        for _ in range(3):
            await kernel.invoke("p.leaf")
            await asyncio.sleep(0)  # let the other invocations run in between
        return 3

    kernel.add_plugin([three], name="n")
    results = await asyncio.gather(*(kernel.invoke("n.three") for _ in range(4)))
    assert [r.value for r in results] == [3, 3, 3, 3] and len(model.requests) == 12
    turns = await asyncio.gather(*(kernel.chat("hi") for _ in range(5)))
    assert [t.text for t in turns] == ["x"] * 5 and len(model.requests) == 17


async def test_concurrent_nested_calls_share_their_invocations_budget() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=3)
    add_leaves(kernel, 3)

    @kernel_function
    async def four_at_once(kernel: Kernel) -> None:
        await asyncio.gather(*(kernel.invoke("p.leaf") for _ in range(4)))

    kernel.add_plugin([four_at_once], name="n")
    with pytest.raises(BudgetExceededError, match="max_model_calls"):
        await kernel.invoke("n.four_at_once")
    assert len(model.requests) == 3


async def test_each_plan_step_is_a_top_level_invocation() -> None:
    model = ScriptedChatModel(default="x")
    kernel = make_kernel(model, max_model_calls=3)
    add_leaves(kernel, 3)
    plan = Plan.from_dict({"goal": "twice", "steps": [
        {"id": "a", "function": "p.top", "arguments": {}},
        {"id": "b", "function": "p.top", "arguments": {}},
    ], "output": {"$step": "b"}})
    run = await execute_plan(kernel, plan)
    assert run.ok and len(model.requests) == 6


async def test_direct_run_chat_outside_an_invocation_still_bounds_each_tool_call() -> None:
    """`run_chat` called directly (not through `kernel.chat`): each tool call is then its
    own top-level invocation, with its own budget."""
    fan = Fan()
    model = ScriptedChatModel([tool_call("t.fan", n=2, width=10), "done"])
    kernel = make_kernel(model, max_function_calls=20)
    kernel.add_plugin(fan, name="t")
    result = await run_chat(kernel, "go")
    assert fan.runs == 20 and "max_function_calls" in result.messages[1].content
