"""Prompts: Jinja templates in a sandbox, escaping and `<message>` markup, and prompt
functions with their execution.

    sandbox            KernelSandbox: Jinja's immutable sandbox plus size bounds
    templates          CompiledTemplate, the compile cache, kernel functions in templates
    markup             escaping, `trusted`, parsing `<message role="...">` into messages
    function           PromptFunction, InputVariable
    execution          render (prompt filters), service and settings, model call, streaming
    structured_output  JSON output checked against the output schema, one repair turn
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .function import InputVariable, PromptFunction
    from .markup import parse_chat, prepare_variables, trusted, unescape
    from .sandbox import ENVIRONMENT, KernelSandbox
    from .templates import TEMPLATES, CompiledTemplate, PluginNamespace, TemplateCache

__all__ = [
    "ENVIRONMENT",
    "TEMPLATES",
    "CompiledTemplate",
    "InputVariable",
    "KernelSandbox",
    "PluginNamespace",
    "PromptFunction",
    "TemplateCache",
    "parse_chat",
    "prepare_variables",
    "trusted",
    "unescape",
]

_LOCATIONS = {
    **dict.fromkeys(("InputVariable", "PromptFunction"), "function"),
    **dict.fromkeys(("parse_chat", "prepare_variables", "trusted", "unescape"), "markup"),
    **dict.fromkeys(("ENVIRONMENT", "KernelSandbox"), "sandbox"),
    **dict.fromkeys(("TEMPLATES", "CompiledTemplate", "PluginNamespace", "TemplateCache"), "templates"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
