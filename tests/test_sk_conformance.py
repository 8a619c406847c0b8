"""Semantic Kernel conformance: every case of tests/sk_conformance/cases.yaml (SK's own
sample prompts and one case per form of SK's template syntax, message parsing, jinja2
helpers and Handlebars) loads from tests/sk_conformance/plugins and renders exactly the
messages SK sends for it, written down from SK's source. What SK refuses or this kernel
reports (an ambiguous function, an unknown role, Liquid) is checked too."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel import ChatMessage, Kernel, KernelSettings, PluginLoadError, PromptFunction, kernel_function
from kernel.contents import ChatRequest
from kernel.errors import TemplateRenderError
from kernel.plugin_folders import load_plugins
from kernel.testing import ScriptedChatModel

HERE = Path(__file__).parent / "sk_conformance"
CASES: list[dict[str, Any]] = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
SENT_ROLES = {"developer": "system"}
"""SK's `developer` role is sent as `system` until `kernel.contents.Role` has it."""


def reply(request: ChatRequest) -> str:
    return f"(model saw: {request.messages[-1].content})"


@cache
def conformance_kernel() -> Kernel:
    kernel = Kernel(settings=KernelSettings.load(None, standard_plugins=False), load_entry_points=False)
    kernel.services.add_service("test", ScriptedChatModel(default=reply))
    kernel.add_plugin(HERE / "plugins")
    return kernel


def arguments(raw: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$messages"}:
            return [ChatMessage(role, content) for role, content in value["$messages"]]
        return value

    return {name: convert(value) for name, value in raw.items()}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
async def test_renders_the_messages_sk_sends(case: dict[str, Any]) -> None:
    messages = await conformance_kernel().render(case["function"], **arguments(case.get("arguments") or {}))
    expected = [(SENT_ROLES.get(role, role), content) for role, content in case["messages"]]
    assert [(m.role, m.content) for m in messages] == expected


def test_every_function_of_the_fixture_folder_loads_and_has_a_case() -> None:
    kernel = conformance_kernel()
    prompts = {fn.fully_qualified_name for fn in kernel.functions() if isinstance(fn, PromptFunction)}
    covered = {case["function"] for case in CASES}
    assert prompts - covered == {"Messages.UnknownRole"}  # an error case, below
    assert covered <= prompts


def test_helper_names_are_not_inputs() -> None:
    chat = conformance_kernel().get_function("Jinja.Chat")
    assert [p.name for p in chat.parameters] == ["persona", "history", "question"]
    helpers = conformance_kernel().get_function("Jinja.Helpers")
    assert sorted(p.name for p in helpers.parameters) == ["missing", "obj"]  # not get, array, Text_describe
    assert not next(p for p in helpers.parameters if p.name == "missing").required


async def test_a_role_sk_does_not_know_is_an_error() -> None:
    with pytest.raises(TemplateRenderError, match="unknown role"):
        await conformance_kernel().render("Messages.UnknownRole", input="hi")


async def test_a_function_name_in_two_plugins_is_an_error_naming_both() -> None:
    """`{{date}}` is looked up when the template renders: plugins added after the folder
    count, and two of them with a `date` make the call ambiguous (SK takes the first)."""
    kernel = Kernel(settings=KernelSettings.load(None, standard_plugins=False), load_entry_points=False)
    kernel.add_plugin(HERE / "ambiguous")
    kernel.add_plugin([kernel_function(lambda: "clock date", name="date")], name="Clock")
    assert [m.content for m in await kernel.render("Caller.Today")] == ["Today is clock date."]
    kernel.add_plugin([kernel_function(lambda: "calendar date", name="date")], name="Calendar")
    with pytest.raises(TemplateRenderError) as info:
        await kernel.render("Caller.Today")
    assert "Calendar.date, Clock.date" in str(info.value)


def test_liquid_is_reported_as_not_supported() -> None:
    with pytest.raises(PluginLoadError) as info:
        load_plugins(HERE / "unsupported")
    (problem,) = info.value.problems
    assert problem.path.endswith("LiquidPrompt.yaml") and problem.line == 24
    assert "'liquid' is not supported" in problem.message
