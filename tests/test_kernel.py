"""The Kernel object: adding plugins and functions, lookup, the sync wrapper, ad-hoc prompts."""

from __future__ import annotations

import asyncio
import types

import pytest

from kernel import Kernel, KernelPlugin, KernelSettings, PromptFunction, kernel_function
from kernel.errors import KernelError, PluginError
from kernel.testing import ScriptedChatModel


def make_kernel() -> Kernel:
    return Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)


@kernel_function
def double(x: int) -> int:
    """Double a number."""
    return 2 * x


def test_add_plugin_forms() -> None:
    k = make_kernel()
    module = types.ModuleType("numbers_mod", "Number helpers.")
    module.double = double  # type: ignore[attr-defined]
    double.__module__ = "numbers_mod"
    try:
        assert list(k.add_plugin(module).functions) == ["double"]
    finally:
        double.__module__ = __name__
    assert "numbers_mod" in k.plugins
    assert k.add_plugin(double, name="single").name == "single"
    assert k.add_plugin(KernelPlugin("custom"), name="renamed").name == "renamed"
    with pytest.raises(PluginError, match="needs a plugin name"):
        k.add_plugin([double])
    with pytest.raises(PluginError, match="no @kernel_function"):
        k.add_plugin(object(), name="empty")
    names = {f.fully_qualified_name for f in k.functions()}
    assert {"numbers_mod.double", "single.double"} <= names
    assert [f.fully_qualified_name for f in k.functions(["single"])] == ["single.double"]


def test_add_function_checks_plugin() -> None:
    k = make_kernel()
    fn = PromptFunction.from_template("hi", name="t", plugin="p")
    assert k.add_function(fn) is fn and k.get_function("p.t") is fn
    with pytest.raises(PluginError, match="belongs to plugin"):
        k.add_function(PromptFunction.from_template("hi", name="u", plugin="p"), plugin="other")


def test_sync_run_outside_a_loop_and_refused_inside() -> None:
    k = make_kernel()
    k.add_plugin([double], name="math")
    assert k.run("math.double", x=21).value == 42

    async def inside() -> None:
        with pytest.raises(KernelError, match="running event loop"):
            k.run("math.double", x=1)

    asyncio.run(inside())


async def test_invoke_prompt_ad_hoc_template() -> None:
    model = ScriptedChatModel(["answer"])
    k = make_kernel()
    k.services.add_service("test", model)
    result = await k.invoke_prompt("Question: {{ q }}", q="why?", settings={"max_tokens": 3})
    assert result.value == "answer"
    assert model.last_request.messages[0].content == "Question: why?"
    assert model.last_request.settings == {"max_tokens": 3}


async def test_render_refuses_native_functions() -> None:
    k = make_kernel()
    k.add_plugin([double], name="math")
    with pytest.raises(KernelError, match="native function"):
        await k.render("math.double", x=1)


async def test_async_context_manager_closes_services() -> None:
    closed: list[bool] = []

    class Closable(ScriptedChatModel):
        async def aclose(self) -> None:
            closed.append(True)

    async with make_kernel() as k:
        k.services.add_service("test", Closable())
    assert closed == [True]


async def test_renamed_plugin_renames_its_functions() -> None:
    k = make_kernel()
    original = KernelPlugin.from_object(types.SimpleNamespace(double=double), name="maths")
    k.add_plugin(original, name="numbers")
    fn = k.get_function("numbers.double")
    assert fn.fully_qualified_name == "numbers.double"
    assert fn.tool_name == "numbers-double"
    assert (await k.invoke("numbers.double", x=4)).value == 8
    assert original["double"].fully_qualified_name == "maths.double"  # the original is untouched
