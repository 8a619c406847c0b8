"""The Kernel object: adding plugins and functions, lookup, the sync wrapper, ad-hoc prompts."""

from __future__ import annotations

import asyncio
import types
from typing import Any

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


async def test_a_failing_kernel_configured_hook_is_reported_not_fatal() -> None:
    from kernel import hookimpl

    class Broken:
        @hookimpl
        def kernel_configured(self, kernel: Kernel) -> None:
            raise RuntimeError("boom")

    k = Kernel(settings=KernelSettings(), plugins=[Broken()], load_entry_points=False, builtins=False)
    assert any("boom" in failure.error for failure in k.plugin_failures)
    with pytest.raises(PluginError, match="boom"):
        Kernel(settings=KernelSettings(), plugins=[Broken()], load_entry_points=False, builtins=False, strict=True)


def test_register_twice_is_a_no_op_and_announces_once() -> None:
    from kernel import hookimpl

    seen: list[Kernel] = []

    class Watcher:
        @hookimpl
        def kernel_configured(self, kernel: Kernel) -> None:
            seen.append(kernel)

    k = make_kernel()
    watcher = Watcher()
    k.register(watcher)
    k.register(watcher)
    assert seen == [k]


def test_a_clashing_merge_changes_nothing() -> None:
    from kernel.errors import DuplicateNameError

    @kernel_function
    def a() -> int:
        return 1

    @kernel_function
    def b() -> int:
        return 2

    k = make_kernel()
    k.add_plugin([a], name="p")
    with pytest.raises(DuplicateNameError, match="'p' already has function"):
        k.add_plugin([a, b], name="p")
    assert sorted(k.plugins["p"].functions) == ["a"]
    with pytest.raises(KernelError):
        k.get_function("p.b")


def test_add_plugin_folder_with_a_name(tmp_path: Any) -> None:
    folder = tmp_path / "travel"
    folder.mkdir()
    (folder / "pack.prompt").write_text("Pack for {{ place }}", encoding="utf-8")
    k = make_kernel()
    plugin = k.add_plugin(folder, name="trip", description="trips")
    assert plugin.name == "trip" and plugin.description == "trips"
    assert k.get_function("trip.pack").fully_qualified_name == "trip.pack"
    assert "travel" not in k.plugins
