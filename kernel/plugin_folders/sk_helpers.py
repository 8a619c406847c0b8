"""Semantic Kernel's template helpers, at render time, inside the kernel's sandbox.

    Jinja2Helpers       `template_format: jinja2`: SK's helpers (`message(item)`, `messages`,
                        `message_to_prompt`, `get`, `array`, `double_open`, `camel_case`, ...)
                        and kernel functions as `plugin_function(...)` globals
    HandlebarsHelpers   `template_format: handlebars`: the runtime the translation of
                        `handlebars.py` calls (`hb.var`, `hb.each`, `hb.helper("concat", ...)`)

A helper never reaches an attribute Jinja's sandbox would refuse (lookups go through the
sandbox's `getattr`), and what it builds is checked against the sandbox's size limit
before it exists. Kernel functions are called through the render's `sk_call`, so they get
the caller's variables they take, as in SK. What SK's helpers return as markup (a
`<message>`) is markup here too; every value inside it is escaped.
"""

from __future__ import annotations

import json
import re
from collections import ChainMap
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from jinja2 import Undefined
from jinja2.exceptions import SecurityError
from markupsafe import Markup, escape

from ..errors import FunctionNotFoundError
from ..prompts import ENVIRONMENT, CompiledTemplate

__all__ = ["JINJA2_HELPERS", "HandlebarsHelpers", "HandlebarsRuntime", "Jinja2Helpers", "SKSyntaxHelpers"]

_NOTHING: Any = object()


def _checked(*values: Any) -> None:
    """The sandbox's size check for text made of `values` (raises SecurityError)."""
    ENVIRONMENT.check_concat(values)


def _plain(value: Any) -> Any:
    """A trusted text as ordinary text (helpers compute with values, not markup)."""
    return str.__str__(value) if isinstance(value, Markup) else value


def _text(value: Any) -> str:
    """A value as pybars prints it: nothing for None, `true`/`false`, else `str()`."""
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    _checked(value)
    return str(value)


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    value = ENVIRONMENT.getattr(item, name)
    return None if isinstance(value, Undefined) else value


def _message_like(item: Any) -> bool:
    return _field(item, "role") is not None and not callable(_field(item, "role"))


def _message(item: Any) -> Markup:
    """`<message role="...">content</message>` for a message (a mapping or an object with
    `role` and `content`); the content is escaped: it is text, never markup."""
    role = _field(item, "role")
    role = role.value if isinstance(role, Enum) else role
    content = _text(_field(item, "content"))
    _checked(content)
    return Markup(f'<message role="{escape(_text(role))}">{escape(content)}</message>')


def _messages(history: Any) -> Markup | str:
    if not isinstance(history, list | tuple) or not all(_message_like(item) for item in history):
        return ""
    return Markup("<chat_history>" + "".join(_message(item) for item in history) + "</chat_history>")


def _message_to_prompt(item: Any) -> Any:
    return _message(item) if _message_like(item) else _text(item)


def _camel_case(text: Any, *_: Any) -> str:
    return "".join(word.capitalize() for word in str(_plain(text)).split("_"))


def _snake_case(text: Any, *_: Any) -> str:
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", str(_plain(text)))
    words = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", words)
    return words.replace("-", "_").lower()


def _array(*items: Any) -> list[Any]:
    return [_plain(item) for item in items]


def _jinja2_get(context: Any = None, name: Any = None, default: Any = "") -> Any:
    if context is None or name is None:
        return default
    return context.get(name, default) if isinstance(context, Mapping) else default


JINJA2_HELPERS: dict[str, Callable[..., Any]] = {
    "get": _jinja2_get,
    "double_open": lambda: "{{", "doubleOpen": lambda: "{{",
    "double_close": lambda: "}}", "doubleClose": lambda: "}}",
    "message": _message,
    "message_to_prompt": _message_to_prompt, "messageToPrompt": _message_to_prompt,
    "messages": _messages,
    "array": _array,
    "camel_case": _camel_case, "camelCase": _camel_case,
    "snake_case": _snake_case, "snakeCase": _snake_case,
}
"""SK's helpers for jinja2 prompts (`semantic_kernel/prompt_template/utils/jinja2_system_helpers.py`)."""


class SKSyntaxHelpers:
    """SK's own syntax needs no globals but `sk_call`; its functions pass variables on."""

    passes_variables = True

    def names(self, template: CompiledTemplate) -> frozenset[str]:
        return frozenset()

    def bind(self, arguments: Mapping[str, Any], names: frozenset[str], call: Any) -> dict[str, Any]:
        return {}


class Jinja2Helpers:
    """SK's jinja2 globals: `JINJA2_HELPERS`, and every kernel function as
    `plugin_function(...)` (SK's `plugin-function` with `_`): a name a template calls that is
    not an input is such a function (two functions with that name: an error naming both)."""

    passes_variables = True

    def names(self, template: CompiledTemplate) -> frozenset[str]:
        return (template.variables & JINJA2_HELPERS.keys()) | template.called_names

    def bind(self, arguments: Mapping[str, Any], names: frozenset[str], call: Any) -> dict[str, Any]:
        bound: dict[str, Any] = {name: JINJA2_HELPERS[name] for name in names & JINJA2_HELPERS.keys()}
        wanted = names - JINJA2_HELPERS.keys()
        if wanted:
            by_name: dict[str, list[str]] = {}
            for qualified in call.function_names():
                by_name.setdefault(qualified.replace(".", "_", 1), []).append(qualified)
            for name in wanted:
                bound[name] = _function(call, name, by_name.get(name, []))
        return bound


def _function(call: Any, name: str, candidates: list[str]) -> Callable[..., Any]:
    async def invoke(*args: Any, **kwargs: Any) -> Any:
        if len(candidates) != 1:
            raise FunctionNotFoundError(
                f"{name}(): no kernel function is named {name!r} (write plugin_function)" if not candidates else
                f"{name}() is ambiguous: {', '.join(sorted(candidates))}")
        return await call(candidates[0], *args, **kwargs)

    return invoke


class HandlebarsHelpers:
    """The globals a Handlebars translation uses: its runtime (named `runtime`), and
    `sk_call` seeing the variables `{{set}}` defines."""

    passes_variables = True

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime

    def names(self, template: CompiledTemplate) -> frozenset[str]:
        return frozenset({self.runtime}) & template.called_names

    def bind(self, arguments: Mapping[str, Any], names: frozenset[str], call: Any) -> dict[str, Any]:
        runtime = HandlebarsRuntime(arguments)
        return {self.runtime: runtime, "sk_call": call.with_variables(ChainMap(runtime.vars, dict(call.variables)))}


class HandlebarsRuntime:
    """What a translated Handlebars template calls, as `hb("operation", ...)` (one global,
    so no name of it looks like a plugin call): lookups as pybars makes them, output as
    pybars prints it, and SK's helpers. `vars` holds what `{{set}}` defined."""

    __slots__ = ("_arguments", "vars")

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        self._arguments = arguments
        self.vars: dict[str, Any] = {}

    def __call__(self, operation: str, /, *args: Any, **kwargs: Any) -> Any:
        if operation not in _OPERATIONS:
            raise ValueError(f"no Handlebars operation {operation!r}")
        return getattr(self, operation)(*args, **kwargs)

    # lookups

    def var(self, name: str, value: Any = _NOTHING) -> Any:
        """A name of the root context: what `{{set}}` gave it, else the function's variable."""
        if name in self.vars:
            return self.vars[name]
        if value is _NOTHING or isinstance(value, Undefined):
            return self._arguments.get(name)
        return value

    def root(self) -> dict[str, Any]:
        return {**self._arguments, **self.vars}

    def path(self, value: Any, *names: str) -> Any:
        """`value.a.b` as pybars resolves it (mapping keys first, list indexes), through the
        sandbox's attribute rules; a missing step or a method is None (printed as nothing)."""
        for name in names:
            if value is None or isinstance(value, Undefined):
                return None
            if isinstance(value, Mapping):
                value = value.get(name)
            elif isinstance(value, list | tuple) and re.fullmatch(r"-?\d+", name):
                index = int(name)
                value = value[index] if -len(value) <= index < len(value) else None
            else:
                value = ENVIRONMENT.getattr(value, name)
                if isinstance(value, Undefined):
                    if getattr(value, "_undefined_exception", None) is SecurityError:
                        raise SecurityError(f"access to attribute {name!r} is not allowed in a template")
                    return None
                if callable(value):
                    return None
        return value

    def each(self, value: Any) -> list[tuple[Any, Any]]:
        """(key, item) pairs `#each` visits: a mapping's keys and values, else the items."""
        if value is None or isinstance(value, Undefined):
            return []
        try:
            if not len(value):
                return []
        except TypeError:
            return []
        if isinstance(value, Mapping):
            return [(key, value[key]) for key in value]
        return [(None, item) for item in value]

    def section(self, value: Any, this: Any) -> list[tuple[Any, Any]]:
        """`{{#name}}` without a helper of that name (pybars's blockHelperMissing)."""
        if isinstance(value, list | tuple):
            return self.each(value)
        if value is True:
            return [(None, this)]
        if value != "" and not self.truthy(value):
            return []
        return [(None, value)]

    @staticmethod
    def truthy(value: Any) -> bool:
        return False if isinstance(value, Undefined) else bool(value)

    # output

    @staticmethod
    def esc(value: Any) -> Markup:
        """`{{x}}`: always escaped, trusted or not (pybars escapes every double-stash)."""
        return escape(str.__str__(_text(value)))

    @staticmethod
    def raw(value: Any) -> Any:
        """`{{{x}}}`: a trusted value as it is; any other value is escaped by the sandbox."""
        return value if isinstance(value, Markup) else _text(value)

    @staticmethod
    def message(**attributes: Any) -> Markup:
        """`{{#message role="user"}}`: the opening tag, every attribute value escaped."""
        written = "".join(f' {name}="{escape(_text(_plain(value)))}"' for name, value in attributes.items()
                          if value is not None)
        return Markup(f"<message{written}>")

    # SK's helpers

    def helper(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        values = [_plain(arg) for arg in args]
        method = _HELPERS[name]
        return method(self, *values, **{key: _plain(value) for key, value in kwargs.items()})

    def _set(self, *args: Any, **kwargs: Any) -> str:
        if "name" in kwargs and "value" in kwargs:
            _checked(kwargs["value"])
            self.vars[str(kwargs["name"])] = kwargs["value"]
        if len(args) == 2 and isinstance(args[0], str):
            _checked(args[1])
            self.vars[args[0]] = args[1]
        return ""

    def _get(self, *args: Any, **kwargs: Any) -> Any:
        name = args[0] if args else kwargs.get("name")
        return "" if name is None else self.var(str(name))

    def _lookup(self, context: Any = None, key: Any = None, *_: Any) -> Any:
        if isinstance(context, list | tuple) and isinstance(key, int):
            return context[key] if -len(context) <= key < len(context) else None
        return None if key is None else self.path(context, str(key))

    def _range(self, bounded_range: Callable[..., range], *args: Any, **_: Any) -> list[int]:
        numbers: list[int] = []
        for arg in args:
            try:
                numbers.append(int(arg))
            except (TypeError, ValueError):
                continue
        return list(bounded_range(*numbers)) if 1 <= len(numbers) <= 3 else []


def _concat(_: HandlebarsRuntime, *args: Any, **__: Any) -> str:
    _checked(*args)
    return "".join(str(value) for value in args)


def _json(_: HandlebarsRuntime, *args: Any, **__: Any) -> str:
    if not args:
        return ""
    _checked(args[0])
    return json.dumps(args[0])


def _floats(args: tuple[Any, ...]) -> list[float]:
    return [float(value) for value in args]


_HELPERS: dict[str, Callable[..., Any]] = {
    "set": HandlebarsRuntime._set,
    "get": HandlebarsRuntime._get,
    "lookup": HandlebarsRuntime._lookup,
    "range": HandlebarsRuntime._range,
    "array": lambda _, *args, **__: list(args),
    "concat": _concat,
    "json": _json,
    "or": lambda _, *args, **__: any(args),
    "add": lambda _, *args, **__: sum(_floats(args)),
    "subtract": lambda _, *args, **__: _floats(args)[0] - sum(_floats(args[1:])),
    "equals": lambda _, *args, **__: args[0] == args[1],
    "less_than": lambda _, *args, **__: float(args[0]) < float(args[1]),
    "greater_than": lambda _, *args, **__: float(args[0]) > float(args[1]),
    "less_than_or_equal": lambda _, *args, **__: float(args[0]) <= float(args[1]),
    "greater_than_or_equal": lambda _, *args, **__: float(args[0]) >= float(args[1]),
    "double_open": lambda *_, **__: "{{",
    "double_close": lambda *_, **__: "}}",
    "camel_case": lambda _, *args, **__: _camel_case(*args),
    "snake_case": lambda _, *args, **__: _snake_case(*args),
    "message_to_prompt": lambda _, this=None, *__, **___: _message_to_prompt(this),
    "messages": lambda _, history=None, *__, **___: _messages(history),
    "log": lambda *_, **__: "",
}
for _camel, _snake in (("lessThan", "less_than"), ("greaterThan", "greater_than"),
                       ("lessThanOrEqual", "less_than_or_equal"), ("greaterThanOrEqual", "greater_than_or_equal"),
                       ("doubleOpen", "double_open"), ("doubleClose", "double_close"), ("camelCase", "camel_case"),
                       ("snakeCase", "snake_case"), ("messageToPrompt", "message_to_prompt")):
    _HELPERS[_camel] = _HELPERS[_snake]

_OPERATIONS = frozenset({"var", "root", "path", "each", "section", "truthy", "esc", "raw", "message", "helper"})
