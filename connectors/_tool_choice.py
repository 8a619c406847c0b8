"""Tool choice within what a server honours (`ModelProfile.tool_choices`).

OpenAI-compatible servers differ in the `tool_choice` values they honour: Ollama ignores the
field, llama-cpp-python's server forces a *named* function through a grammar but takes no
`auto` or `required` (unless it runs a function-calling chat format), LM Studio takes
`auto`, `required` and `none`. A request's choice is sent as is when the profile honours
it, else replaced by its nearest equivalent:

* `none` -> the request offers no tools at all (the model cannot call what it is not offered);
* a named function -> `required` with only that tool offered (the same thing), else only that
  tool with `auto` or no choice: the call is not forced (warned);
* `required` -> the named form when exactly one tool is offered (the same thing), else `auto`
  or no choice: the call is not forced (warned);
* `auto` -> no `tool_choice` field (the server's default; warned, as the server may ignore
  the tools altogether).

A warning is logged once per service and case (the connector keeps the set).
"""

from __future__ import annotations

from collections.abc import Iterable

from kernel.contents import ToolChoice, ToolSpec
from kernel.errors import ConfigurationError
from kernel.logging import LazyLogger

TOOL_CHOICES = frozenset({"auto", "required", "none", "function"})
"""Every tool-choice mode: the three of `ToolChoice.mode` and a named `function`."""

log = LazyLogger("kernel.services")


def parse_tool_choices(value: object, where: str) -> frozenset[str]:
    """`options.tool_choices` (a list of modes), checked."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}: options.tool_choices must be a list of {', '.join(sorted(TOOL_CHOICES))}")
    unknown = sorted(set(value) - TOOL_CHOICES)
    if unknown:
        known = ", ".join(sorted(TOOL_CHOICES))
        raise ConfigurationError(f"{where}: options.tool_choices: unknown mode(s) {', '.join(unknown)}; known: {known}")
    return frozenset(value)


def fit_tool_choice(
    choice: ToolChoice | None, tools: list[ToolSpec], supported: Iterable[str]
) -> tuple[list[ToolSpec], ToolChoice | None, str | None]:
    """(the tools to offer, the choice to send or None, a warning or None)."""
    honoured = frozenset(supported)
    if choice is None or not tools:
        return tools, (choice if tools else None), None
    fallback = ToolChoice("auto") if "auto" in honoured else None
    if choice.function:
        if "function" in honoured:
            return tools, choice, None
        only = [t for t in tools if t.name == choice.function] or tools
        if "required" in honoured:
            return only, ToolChoice("required"), None
        return only, fallback, "a named tool_choice is not honoured by the server: the call is not forced"
    if choice.mode == "required":
        if "required" in honoured:
            return tools, choice, None
        if len(tools) == 1 and "function" in honoured:
            return tools, ToolChoice("required", tools[0].name), None
        return tools, fallback, "tool_choice 'required' is not honoured by the server: the call is not forced"
    if choice.mode == "none":
        return (tools, choice, None) if "none" in honoured else ([], None, None)
    if "auto" in honoured:
        return tools, choice, None
    return tools, None, "tool_choice 'auto' is not honoured by the server: it may answer without calling tools"


def warn_once(warned: set[str], message: str, service: str, provider: str) -> None:
    """Log `message` once per connector instance (its `warned` set)."""
    key = f"tool_choice:{message}"
    if key not in warned:
        warned.add(key)
        log.warning(message, service=service, provider=provider)
