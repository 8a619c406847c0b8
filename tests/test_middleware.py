"""Middleware at the three stages: function invocation, prompt rendering, automatic tool calls."""

from __future__ import annotations

import types
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, hookimpl, kernel_function
from kernel.chat import run_chat
from kernel.contents import ToolResult
from kernel.errors import InvocationError, KernelError
from kernel.functions import FunctionResult
from kernel.middleware import FunctionContext, PromptContext, ToolCallContext
from kernel.testing import ScriptedChatModel, tool_call, tool_calls


class Calc:
    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    @kernel_function
    def add(self, a: int, b: int) -> int:
        """Add."""
        self.calls.append({"a": a, "b": b})
        return a + b

    @kernel_function
    def secret(self) -> str:
        """Something a filter hides."""
        self.calls.append({})
        return "classified"


def make_kernel(calc: Calc | None = None, plugins: tuple[Any, ...] = ()) -> Kernel:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False, plugins=plugins)
    kernel.add_plugin(calc or Calc(), name="calc")
    return kernel


# --- function stage ------------------------------------------------------------------------


async def test_function_filter_changes_arguments_and_result() -> None:
    calc = Calc()
    kernel = make_kernel(calc)
    order: list[str] = []

    async def double_a(context: FunctionContext, next: Any) -> None:
        order.append("outer-before")
        context.arguments["a"] = context.arguments["a"] * 2
        await next(context)
        order.append("outer-after")

    async def plus_one(context: FunctionContext, next: Any) -> None:
        order.append("inner-before")
        await next(context)
        assert context.result is not None
        context.result = FunctionResult(context.result.function, context.result.value + 1)
        order.append("inner-after")

    kernel.add_filter("function", double_a)
    kernel.add_filter("function", plus_one)
    result = await kernel.invoke("calc.add", a=5, b=1)
    assert calc.calls == [{"a": 10, "b": 1}]
    assert result.value == 12
    assert order == ["outer-before", "inner-before", "inner-after", "outer-after"]


async def test_function_filter_short_circuits() -> None:
    calc = Calc()
    kernel = make_kernel(calc)

    async def cache(context: FunctionContext, next: Any) -> None:
        context.result = FunctionResult(context.function.fully_qualified_name, "from cache")

    kernel.add_filter("function", cache)
    result = await kernel.invoke("calc.add", a=1, b=2)
    assert result.value == "from cache" and calc.calls == []


async def test_function_filter_that_neither_continues_nor_answers_is_an_error() -> None:
    kernel = make_kernel()

    async def swallow(context: FunctionContext, next: Any) -> None:
        return None

    kernel.add_filter("function", swallow)
    with pytest.raises(InvocationError, match="neither called next"):
        await kernel.invoke("calc.add", a=1, b=2)


async def test_unknown_stage_is_refused() -> None:
    kernel = make_kernel()

    async def f(context: Any, next: Any) -> None:
        await next(context)

    with pytest.raises(KernelError, match="unknown filter stage"):
        kernel.add_filter("render", f)  # type: ignore[arg-type]


# --- prompt stage --------------------------------------------------------------------------


async def test_prompt_filter_alters_the_rendered_text() -> None:
    kernel = make_kernel()
    model = ScriptedChatModel(["ok"])
    kernel.services.add_service("test", model)
    kernel.add_function(PromptFunction.from_template("Tell me about {{ topic }}", name="about", plugin="qa"))

    async def add_rule(context: PromptContext, next: Any) -> None:
        context.arguments["topic"] = context.arguments["topic"].upper()
        await next(context)
        assert context.rendered == f"Tell me about {context.arguments['topic']}"
        context.messages[0].content += " (answer in one line)"  # type: ignore[index]

    kernel.add_filter("prompt", add_rule)
    result = await kernel.invoke("qa.about", topic="cats")
    assert result.value == "ok"
    assert model.last_request.messages[0].content == "Tell me about CATS (answer in one line)"
    rendered = await kernel.render("qa.about", topic="dogs")
    assert [m.content for m in rendered] == ["Tell me about DOGS (answer in one line)"]


async def test_prompt_filter_replaces_the_rendered_text_before_parsing() -> None:
    kernel = make_kernel()
    model = ScriptedChatModel(["ok"])
    kernel.services.add_service("test", model)
    kernel.add_function(PromptFunction.from_template("Hi {{ name }}", name="hi", plugin="qa"))

    async def replace(context: PromptContext, next: Any) -> None:
        context.rendered = '<message role="system">Be terse.</message><message role="user">Hello there</message>'
        await next(context)

    kernel.add_filter("prompt", replace)
    await kernel.invoke("qa.hi", name="x")
    assert [(m.role, m.content) for m in model.last_request.messages] == [("system", "Be terse."),
                                                                          ("user", "Hello there")]


# --- tool_call stage -----------------------------------------------------------------------


async def test_tool_call_filter_changes_arguments() -> None:
    calc = Calc()
    kernel = make_kernel(calc)
    model = ScriptedChatModel([tool_call("calc.add", a=1, b=2, id="c1"), "done"])
    kernel.services.add_service("test", model)
    seen: list[tuple[str, int, str]] = []

    async def clamp(context: ToolCallContext, next: Any) -> None:
        seen.append((context.function.fully_qualified_name, context.round, context.call.id))
        context.arguments["b"] = 100
        await next(context)

    kernel.add_filter("tool_call", clamp)
    result = await run_chat(kernel, "go")
    assert seen == [("calc.add", 1, "c1")]
    assert calc.calls == [{"a": 1, "b": 100}]
    assert result.messages[1].content == "101"


async def test_tool_call_filter_short_circuits_with_a_result() -> None:
    calc = Calc()
    kernel = make_kernel(calc)
    model = ScriptedChatModel([tool_calls(("calc.secret", {}, "s1"), ("calc.add", {"a": 1, "b": 1}, "a1")), "done"])
    kernel.services.add_service("test", model)

    async def guard(context: ToolCallContext, next: Any) -> None:
        if context.function.name == "secret":
            context.result = ToolResult("whatever", "whatever", "access denied by policy", is_error=True)
            return
        await next(context)

    kernel.add_filter("tool_call", guard)
    result = await run_chat(kernel, "go")
    assert calc.calls == [{"a": 1, "b": 1}]
    secret_msg, add_msg = result.messages[1], result.messages[2]
    assert (secret_msg.tool_call_id, secret_msg.content) == ("s1", "access denied by policy")
    assert (add_msg.tool_call_id, add_msg.content) == ("a1", "2")
    assert result.trace[0].is_error and not result.trace[1].is_error


async def test_tool_call_filter_terminates_the_loop_after_the_round() -> None:
    calc = Calc()
    kernel = make_kernel(calc)
    model = ScriptedChatModel([tool_calls(("calc.add", {"a": 2, "b": 2}), ("calc.add", {"a": 3, "b": 3})),
                               "never asked"])
    kernel.services.add_service("test", model)

    async def stop_on_four(context: ToolCallContext, next: Any) -> None:
        await next(context)
        if context.result is not None and context.result.content == "4":
            context.terminate = True

    kernel.add_filter("tool_call", stop_on_four)
    result = await run_chat(kernel, "go")
    assert len(model.requests) == 1  # no further model call
    assert result.stop_reason == "terminated"
    assert result.text == "4"
    assert len(calc.calls) == 2  # the rest of the round still ran
    assert [m.role for m in result.messages] == ["assistant", "tool", "tool"]


async def test_tool_call_filter_raising_becomes_an_error_result() -> None:
    calc = Calc()
    kernel = make_kernel(calc)
    model = ScriptedChatModel([tool_call("calc.add", a=1, b=2), "done"])
    kernel.services.add_service("test", model)

    async def broken(context: ToolCallContext, next: Any) -> None:
        raise LookupError("filter bug in /opt/app/filters.py")

    kernel.add_filter("tool_call", broken)
    result = await run_chat(kernel, "go")
    assert calc.calls == []
    assert result.messages[1].content == "error: calc.add failed: LookupError: filter bug in <path>"
    assert result.text == "done"


async def test_tool_calls_go_through_function_filters_and_hook_registered_filters() -> None:
    calc = Calc()
    stages: list[str] = []

    async def tool_stage(context: ToolCallContext, next: Any) -> None:
        stages.append("tool_call")
        await next(context)

    async def function_stage(context: FunctionContext, next: Any) -> None:
        stages.append("function")
        await next(context)

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_filters(register: Any) -> None:
        register("tool_call", tool_stage)
        register("function", function_stage)

    plugin.register_filters = register_filters
    kernel = make_kernel(calc, plugins=(plugin,))
    kernel.services.add_service("test", ScriptedChatModel([tool_call("calc.add", a=1, b=2), "done"]))
    await run_chat(kernel, "go")
    assert stages == ["tool_call", "function"]
    assert calc.calls == [{"a": 1, "b": 2}]


async def test_function_filters_also_see_streamed_prompt_functions() -> None:
    kernel = make_kernel()
    kernel.services.add_service("test", ScriptedChatModel(["streamed reply"]))
    kernel.add_function(PromptFunction.from_template("Say {{ word }}", name="say", plugin="p"))
    seen: list[str] = []

    async def audit(context: FunctionContext, next: Any) -> None:
        seen.append(context.function.fully_qualified_name)
        await next(context)

    kernel.add_filter("function", audit)
    events = [event async for event in kernel.invoke_stream("p.say", word="hi")]
    assert seen == ["p.say"]
    assert events[-1].message.content == "streamed reply"
