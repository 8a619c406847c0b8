"""Native kernel functions: schemas from type hints, validation, injection, names, timeouts."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from kernel import Kernel, KernelArguments, KernelSettings, NativeFunction, kernel_function
from kernel.errors import (
    ArgumentError,
    FunctionNotFoundError,
    FunctionTimeoutError,
    InvocationError,
    PluginError,
    RecursionLimitError,
)
from kernel.functions import KernelPlugin, parse_function_name, tool_name_for

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def make_kernel(**settings: object) -> Kernel:
    return Kernel(settings=KernelSettings(**settings), load_entry_points=False, builtins=False)


class Point(BaseModel):
    x: int
    y: int = 0


calls: list[dict[str, object]] = []


@kernel_function
def everything(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    numbers: list[int],
    mapping: dict[str, int],
    maybe: int | None = None,
    mode: Literal["fast", "slow"] = "fast",
    point: Point | None = None,
    documented: Annotated[int, "how many widgets"] = 3,
    short: Annotated[str, Field(description="a short word", max_length=5)] = "abc",
) -> str:
    """Accept every kind of parameter.

    This second paragraph is not part of the description.
    """
    calls.append(dict(text=text, count=count, point=point, short=short))
    return "ok"


GOOD = dict(text="t", count=1, ratio=0.5, flag=True, numbers=[1, 2], mapping={"a": 1})


class TestSchema:
    def test_types_defaults_and_descriptions(self) -> None:
        fn = NativeFunction(everything, plugin_name="demo")
        schema = fn.parameters_schema
        props = schema["properties"]
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert schema["required"] == ["text", "count", "ratio", "flag", "numbers", "mapping"]
        assert props["text"] == {"type": "string"}
        assert props["count"] == {"type": "integer"}
        assert props["ratio"] == {"type": "number"}
        assert props["flag"] == {"type": "boolean"}
        assert props["numbers"] == {"type": "array", "items": {"type": "integer"}}
        assert props["mapping"] == {"type": "object", "additionalProperties": {"type": "integer"}}
        assert {"type": "integer"} in props["maybe"]["anyOf"] and {"type": "null"} in props["maybe"]["anyOf"]
        assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
        assert props["documented"] == {"type": "integer", "description": "how many widgets", "default": 3}
        assert props["short"]["description"] == "a short word"
        assert fn.description == "Accept every kind of parameter."

    def test_field_constraints_reach_the_schema(self) -> None:
        props = NativeFunction(everything, plugin_name="demo").parameters_schema["properties"]
        assert props["short"].get("maxLength") == 5

    def test_pydantic_model_refs_resolve_from_the_root(self) -> None:
        """A `$ref` in a property must resolve against the whole parameters schema."""
        schema = NativeFunction(everything, plugin_name="demo").parameters_schema
        point = schema["properties"]["point"]
        refs = [alt["$ref"] for alt in point["anyOf"] if "$ref" in alt]
        assert refs, point
        target: object = schema
        for part in refs[0].removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{refs[0]} does not resolve"
            target = target[part]
        assert isinstance(target, dict) and target["properties"]["x"]["type"] == "integer"

    def test_injected_parameters_are_not_offered(self) -> None:
        @kernel_function
        async def uses(kernel: Kernel, args: KernelArguments, city: str) -> str:
            return city

        fn = NativeFunction(uses, plugin_name="p")
        assert list(fn.parameters_schema["properties"]) == ["city"]

    def test_var_args_rejected(self) -> None:
        def bad(*items: int) -> int:
            return 0

        with pytest.raises(PluginError, match=r"p\.bad"):
            NativeFunction(bad, plugin_name="p")


class TestValidation:
    async def test_valid_arguments_are_coerced(self) -> None:
        k = make_kernel()
        k.add_plugin([everything], name="demo")
        calls.clear()
        result = await k.invoke("demo.everything", GOOD | {"count": "7", "point": {"x": 2}})
        assert result.value == "ok"
        assert calls[-1]["count"] == 7
        assert calls[-1]["point"] == Point(x=2, y=0)

    @pytest.mark.parametrize(
        ("arguments", "parameter", "problem"),
        [
            (GOOD | {"count": "many"}, "count", "valid integer"),
            ({k: v for k, v in GOOD.items() if k != "ratio"}, "ratio", "missing"),
            (GOOD | {"colour": "red"}, "colour", "unexpected"),
            (GOOD | {"mode": "medium"}, "mode", "fast"),
            (GOOD | {"short": "much too long"}, "short", "at most 5"),
        ],
    )
    async def test_bad_arguments_name_function_parameter_problem(
        self, arguments: dict[str, object], parameter: str, problem: str
    ) -> None:
        k = make_kernel()
        k.add_plugin([everything], name="demo")
        calls.clear()
        with pytest.raises(ArgumentError) as info:
            await k.invoke("demo.everything", arguments)
        assert info.value.function == "demo.everything"
        assert info.value.parameter == parameter
        assert "demo.everything" in str(info.value) and parameter in str(info.value)
        assert problem in str(info.value)
        assert calls == [], "the function must not run on bad input"

    async def test_no_parameter_function_rejects_arguments(self) -> None:
        @kernel_function
        async def nothing() -> int:
            return 1

        k = make_kernel()
        fn = k.add_function(nothing, plugin="p")
        assert (await k.invoke(fn)).value == 1
        with pytest.raises(ArgumentError, match="unexpected"):
            await k.invoke(fn, x=1)


class TestRunning:
    async def test_sync_and_async(self) -> None:
        @kernel_function
        def add(a: int, b: int) -> int:
            return a + b

        @kernel_function
        async def mul(a: int, b: int) -> int:
            await asyncio.sleep(0)
            return a * b

        k = make_kernel()
        k.add_plugin([add, mul], name="math")
        assert (await k.invoke("math.add", a=2, b=3)).value == 5
        assert (await k.invoke("math.mul", {"a": 2, "b": 3})).value == 6
        assert (await k.invoke("math-mul", a=4, b=5)).value == 20  # tool name works too

    async def test_methods_of_an_object_and_a_module(self) -> None:
        class Greeter:
            def __init__(self, greeting: str) -> None:
                self.greeting = greeting

            @kernel_function(description="Greet someone.")
            def greet(self, name: str) -> str:
                return f"{self.greeting}, {name}"

            def not_a_function(self) -> None:
                raise AssertionError

        k = make_kernel()
        plugin = k.add_plugin(Greeter("Hi"), name="greeter")
        assert list(plugin.functions) == ["greet"]
        assert plugin["greet"].description == "Greet someone."
        assert (await k.invoke("greeter.greet", name="Ada")).value == "Hi, Ada"

    async def test_kernel_and_arguments_injection(self) -> None:
        @kernel_function
        def double(x: int) -> int:
            return 2 * x

        @kernel_function
        async def quadruple(kernel: Kernel, arguments: KernelArguments, x: int) -> int:
            assert arguments["x"] == x
            once = await kernel.invoke("math.double", x=x)
            twice = await kernel.invoke("math.double", x=once.value)
            return int(twice.value)

        k = make_kernel()
        k.add_plugin([double, quadruple], name="math")
        assert (await k.invoke("math.quadruple", x=3)).value == 12

    async def test_thread_true_runs_outside_the_loop_thread(self) -> None:
        seen: list[int] = []

        @kernel_function(thread=True)
        def blocking() -> str:
            seen.append(threading.get_ident())
            time.sleep(0.05)
            return "done"

        @kernel_function
        def inline() -> str:
            seen.append(threading.get_ident())
            return "done"

        k = make_kernel()
        k.add_plugin([blocking, inline], name="io")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert (await k.invoke("io.blocking")).value == "done"
        finally:
            task.cancel()
        assert (await k.invoke("io.inline")).value == "done"
        assert seen[0] != threading.get_ident()
        assert seen[1] == threading.get_ident()
        assert ticks >= 2, "the event loop must keep running while a thread=True function blocks"

    async def test_timeout(self) -> None:
        cancelled = False

        @kernel_function(timeout=0.05)
        async def slow() -> str:
            nonlocal cancelled
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled = True
                raise
            return "late"

        k = make_kernel()
        k.add_plugin([slow], name="p")
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(FunctionTimeoutError, match=r"p\.slow"):
            await k.invoke("p.slow")
        assert cancelled  # the function was stopped, not left running or awaited to the end
        # On the event loop's clock: less than the function's own sleep, so the caller did
        # not wait for it (only a machine stalled for 30 s could fail this).
        assert loop.time() - start < 30

    async def test_failure_is_invocation_error_with_cause(self) -> None:
        @kernel_function
        def broken(x: int) -> int:
            raise ZeroDivisionError("division by zero")

        k = make_kernel()
        k.add_plugin([broken], name="p")
        with pytest.raises(InvocationError) as info:
            await k.invoke("p.broken", x=1)
        assert "p.broken" in str(info.value) and "ZeroDivisionError" in str(info.value)
        assert isinstance(info.value.__cause__, ZeroDivisionError)

    async def test_mutual_recursion_through_injected_kernel(self) -> None:
        calls: list[int] = []

        @kernel_function
        async def ping(kernel: Kernel, n: int) -> int:
            calls.append(n)
            return int((await kernel.invoke("game.pong", n=n + 1)).value)

        @kernel_function
        async def pong(kernel: Kernel, n: int) -> int:
            calls.append(n)
            return int((await kernel.invoke("game.ping", n=n + 1)).value)

        k = make_kernel(max_call_depth=10)
        k.add_plugin([ping, pong], name="game")
        with pytest.raises(RecursionLimitError) as info:
            await k.invoke("game.ping", n=0)
        assert re.search(r"game\.p[io]ng", str(info.value))
        assert "10" in str(info.value)
        assert calls == list(range(10))  # stopped at the limit: ten nested calls, counted not timed

    async def test_unknown_function(self) -> None:
        k = make_kernel()
        k.add_plugin([everything], name="demo")
        with pytest.raises(FunctionNotFoundError, match="everything"):
            await k.invoke("demo.missing")
        with pytest.raises(FunctionNotFoundError, match="nope"):
            await k.invoke("nope.everything")


class TestNames:
    def test_fully_qualified_and_tool_names_round_trip(self) -> None:
        fn = NativeFunction(everything, plugin_name="my_plugin")
        assert fn.fully_qualified_name == "my_plugin.everything"
        assert TOOL_NAME.match(fn.tool_name)
        assert parse_function_name(fn.tool_name) == ("my_plugin", "everything")
        assert parse_function_name(fn.fully_qualified_name) == ("my_plugin", "everything")

    def test_kernel_finds_function_by_tool_name(self) -> None:
        k = make_kernel()
        k.add_plugin([everything], name="my_plugin")
        fn = k.get_function("my_plugin.everything")
        assert k.get_function(fn.tool_name) is fn
        assert k.get_function("my_plugin", "everything") is fn

    def test_overlong_names_rejected(self) -> None:
        with pytest.raises(PluginError, match="64"):
            tool_name_for("p" * 40, "f" * 30)
        long_name = "f" * 70
        with pytest.raises(PluginError):
            NativeFunction(everything, plugin_name="p", name=long_name).tool_name  # noqa: B018

    @pytest.mark.parametrize("bad", ["has space", "1starts_with_digit", "dash-ed", "dot.ted"])
    def test_invalid_names_rejected(self, bad: str) -> None:
        with pytest.raises(PluginError, match="invalid"):
            NativeFunction(everything, plugin_name="p", name=bad)
        with pytest.raises(PluginError, match="invalid"):
            KernelPlugin(bad)

    def test_parse_rejects_non_names(self) -> None:
        with pytest.raises(ValueError, match="not a function name"):
            parse_function_name("justone")

    def test_duplicate_function_rejected(self) -> None:
        from kernel.errors import DuplicateNameError

        k = make_kernel()
        k.add_plugin([everything], name="demo")
        with pytest.raises(DuplicateNameError, match="everything"):
            k.add_plugin([everything], name="demo")


def test_fast_validation_path_agrees_with_pydantic() -> None:
    """Exactly-typed scalar arguments skip pydantic; the result must be the same."""
    from kernel.functions import KernelFunction

    def scalars(a: int, b: float, c: str = "x", d: bool = False) -> str:
        return f"{a}{b}{c}{d}"

    fn = NativeFunction(scalars, plugin_name="p")
    cases = ({"a": 1, "b": 2.5}, {"a": 1, "b": 2.5, "c": "y", "d": True}, {"a": 3, "b": 1}, {"a": "4", "b": 1.0})
    for arguments in cases:
        assert fn.validate(arguments) == KernelFunction.validate(fn, arguments)
    for bad in ({"a": 1}, {"a": 1, "b": 2.0, "e": 1}, {"a": "x", "b": 1.0}, {"a": None, "b": 1.0}):
        with pytest.raises(ArgumentError):
            fn.validate(bad)
