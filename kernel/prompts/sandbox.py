"""The sandbox every template renders in, and the bounds that hold in it.

Safety model
  * Template *source* is trusted code written by the plugin author; it runs in Jinja's
    `ImmutableSandboxedEnvironment` with strict undefined variables, no `cycler`, `joiner`
    or `lipsum` globals, a bounded `range`, guarded `*`, `**`, `+` and `%`, and a cap on the
    rendered size. Violations raise `SandboxViolationError`.
  * The builtin types' methods are reachable only from an allowlist (`ALLOWED_ATTRIBUTES`);
    each allowed method that can grow a value is checked by its size model before it runs.
  * Every *value* inserted into a template (variables, function results, recalled memory)
    is XML-escaped on output, so it can never open or close a `<message>` block. After
    parsing the chat structure the escapes are undone in each message's content. An input
    is inserted raw only when it is explicitly marked trusted.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import jinja2
from jinja2 import filters as _filters
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup, escape

from .bounds import (
    CLASS,
    EXACT,
    MAX_POWER_BITS,
    MAX_SEQUENCE_LENGTH,
    POLICIES,
    SUBCLASS,
    TEXTS,
    BoundedEscapeFormatter,
    BoundedFormatter,
    attribute_policy,
    check_size,
    check_weight,
    guard_str_method,
    join_captured,
    nesting,
    percent_size,
    printed_size,
    spend_printed,
    str_method_size,
    string_items,
    text_size,
    weight,
)

_TEXT_FILTERS = frozenset({"capitalize", "e", "escape", "forceescape", "lower", "safe", "striptags", "title", "trim",
                           "truncate", "upper", "urlencode", "urlize", "wordcount", "xmlattr"})


def _listed(value: Any, then: Callable[[list[Any]], Any], what: str) -> Any:
    """`then(list(value))`, awaitable for an async generator (a filter chain, async rendering)."""
    if not hasattr(value, "__aiter__"):
        return then(string_items(value, what))

    async def collect() -> Any:
        from jinja2.async_utils import auto_to_list
        return then(await auto_to_list(value))

    return collect()


def _guarded_filters() -> dict[str, Callable[..., Any]]:
    """Jinja filters that can build large values, checked before they allocate."""

    def center(value: Any, width: int = 80) -> str:
        check_size(int(width), f"center width {width}")
        return _filters.do_center(value, width)

    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text, pad = str(s), len(width) if isinstance(width, str) else int(width)
        check_size(len(text) + (text.count("\n") + 1) * pad, "indent")
        return _filters.do_indent(s, width, first, blank)

    def join_checked(eval_ctx: Any, items: list[Any], d: str, attribute: Any) -> str:
        if attribute is None:
            size = weight(items) if set(map(type, items)) <= TEXTS else text_size(items)  # str() of each
            check_size(size + len(str(d)) * max(len(items) - 1, 0), "join")
        return _filters.sync_do_join(eval_ctx, items, d, attribute)

    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        return _listed(value, lambda items: join_checked(eval_ctx, items, d, attribute), "join")

    def list_(_passed: Any, value: Any) -> Any:  # Jinja's `list` takes the environment first (async variant)
        return _listed(value, lambda items: items, "list")

    def replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> str:
        marked = eval_ctx.autoescape and not isinstance(s, Markup) and (
            hasattr(old, "__html__") or hasattr(new, "__html__"))  # as do_replace decides
        text = escape(s) if marked else s if isinstance(s, str) else str(check_weight(s, "replace"))
        strings = tuple(a if isinstance(a, str) else str(a) for a in (old, new))  # Markup stays Markup
        size = str_method_size(text, "replace", (*strings, -1 if count is None else count), {})
        if size > len(text):
            check_size(size, "replace")
        return _filters.do_replace(eval_ctx, text, old, new, count)

    def format_(value: str, *args: Any, **kwargs: Any) -> str:
        text = value if isinstance(value, str) else str(check_weight(value, "format"))
        check_size(percent_size(text, kwargs or args), "formatted text")
        return _filters.do_format(text, *args, **kwargs)

    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        check_size(int(linecount), f"batch size {linecount}")
        return _filters.do_batch(value, linecount, fill_with)

    def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
        check_size(int(slices), f"slice count {slices}")
        return _filters.do_slice(value, slices, fill_with)

    def string(value: Any) -> str:
        check_size(printed_size(value), "string")
        return str(_filters.soft_str(value))  # type: ignore[attr-defined]

    def sum_checked(environment: Any, items: list[Any], attribute: Any, start: Any) -> Any:
        if not isinstance(start, int | float):
            check_size(weight(items) + weight(start), "sum")
        return _filters.sync_do_sum(environment, items, attribute, start)

    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        return _listed(iterable, lambda items: sum_checked(environment, items, attribute, start), "sum")

    def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        # Indented JSON repeats the indent on every line at every depth: bound it up front.
        spaces = len(indent) if isinstance(indent, str) else int(indent or 0)
        check_size(weight(value) * (1 + spaces * nesting(value)), "tojson output")
        return _filters.do_tojson(eval_ctx, value, indent)

    def wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
                 wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
        # Every break may insert `wrapstring`: at most one per character.
        check_size(weight(s) * (1 + len(wrapstring or "")), "wordwrap output")
        return _filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    guarded: dict[str, Callable[..., Any]] = {
        "center": center, "indent": indent, "join": join, "list": list_, "replace": replace, "format": format_,
        "batch": batch, "slice": slice_, "string": string, "sum": sum_, "tojson": tojson,
        "wordwrap": wordwrap,
    }
    for name, wrapper in guarded.items():
        pass_arg = getattr(_filters.FILTERS[name], "jinja_pass_arg", None)
        if pass_arg is not None:
            wrapper.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        if name in ("join", "list", "sum"):  # may return a coroutine: no compile-time folding
            wrapper.jinja_async_variant = True  # type: ignore[attr-defined]
    for name, original in _filters.FILTERS.items():
        if name in guarded or name in ("length", "count", "first", "last", "default", "d"):
            continue
        # A filter that turns its input into text counts it as text (a list by its items' repr)
        measure = printed_size if name in _TEXT_FILTERS else weight
        if name == "pprint":  # a line per item, indented by its depth
            measure = lambda value: text_size(value) * (1 + nesting(value))  # noqa: E731

        def checked(*args: Any, _original: Any = original, _name: str = name, _measure: Any = measure,
                    **kwargs: Any) -> Any:
            # Every input counts (keyword arguments too), and so does the result.
            inputs = [a for a in args
                      if not isinstance(a, jinja2.runtime.Context | jinja2.nodes.EvalContext | jinja2.Environment)]
            check_size(sum(_measure(a) for a in (*inputs, *kwargs.values())
                            if not isinstance(a, int | float | bool | None)), _name)
            return check_weight(_original(*args, **kwargs), _name)

        for marker in ("jinja_pass_arg", "jinja_async_variant"):
            if hasattr(original, marker):
                setattr(checked, marker, getattr(original, marker))
        guarded[name] = checked
    return guarded


class _GuardedCodeGenerator(CodeGenerator):
    """Checks the parts of `a ~ b` before joining them (Jinja joins them directly)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        func = "markup_join" if frame.eval_ctx.volatile or frame.eval_ctx.autoescape else "str_join"
        self.write(f"{func}(environment.check_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _Namespace(Namespace):
    """`namespace()` whose attributes cannot grow past the size limit (a loop doubling a
    nested list through a namespace would otherwise grow exponentially)."""

    def __setitem__(self, name: str, value: Any) -> None:
        check_weight(value, f"namespace attribute {name!r}")
        super().__setitem__(name, value)


class KernelSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus an allowlist of the builtin types' methods, and size
    guards on operators, growing `str` methods, format fields, `~` concatenation, filters
    and every printed value."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.filters.update(_guarded_filters())

    @staticmethod
    def _finalize(value: Any) -> Any:
        """Every `{{ value }}` passes here before it becomes text, and counts toward the
        render's printed-text budget (output captured in macros and blocks never reaches
        the output cap)."""
        if isinstance(value, int | float | bool | None):
            return value
        if isinstance(value, str) and len(value) < 4096:
            spend_printed(len(value) * 6)  # escaping makes at most 6 characters of one
            return value
        size = printed_size(value)
        check_size(size, "printed value")
        spend_printed(size * 6)
        return value

    concat = staticmethod(join_captured)  # Jinja's generated code joins every captured buffer with this

    @staticmethod
    def check_concat(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        check_size(sum(printed_size(part) for part in parts), "concatenation with '~'")
        return parts

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The allowlist for the builtin types (one dict lookup on the object's type), Jinja's
        rules (no `_private`, no internals, no mutation of known containers) for the rest."""
        if attr.startswith("_"):
            return False
        names, mode = POLICIES.get(type(obj)) or attribute_policy(type(obj))
        if mode == EXACT:
            return attr in names
        if attr in names:
            return False
        if mode == CLASS:  # `dict.fromkeys`, `int.from_bytes`: the class's own allowlist applies
            own, own_mode = attribute_policy(obj)
            if (attr not in own) if own_mode == EXACT else (own_mode == SUBCLASS and attr in own):
                return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., Any] | None:
        """Called by Jinja on every attribute it reads: a `str` method that can grow its text
        comes back wrapped in its size check (`format`/`format_map` in a bounded formatter)."""
        kind = type(value)
        if kind is not types.BuiltinMethodType and kind is not types.MethodType:
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        if value.__name__ not in ("format", "format_map"):
            return guard_str_method(value, text)
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument and no keyword arguments")
                kwargs, args = args[0], ()
            formatter = (BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup)
                         else BoundedFormatter(self))
            return type(text)(formatter.vformat(text, args, kwargs))

        checked.__name__ = checked.__qualname__ = f"str.{value.__name__}"
        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A method that did not come through `getattr` (a function returned it): same checks."""
        kind = type(__obj)
        if kind is types.BuiltinMethodType or kind is types.MethodType:
            owner = __obj.__self__
            if owner is not None and not isinstance(owner, types.ModuleType):
                if not __self.is_safe_attribute(owner, __obj.__name__, __obj):
                    raise SecurityError(f"{type(owner).__name__}.{__obj.__name__} is not allowed in a template")
                __obj = __self.wrap_str_format(__obj) or __obj
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator in ("*", "**") and isinstance(left, int) and isinstance(right, int):
            # the result's bits: at most the sum of the factors' (right times left's for **)
            bits = right * left.bit_length() if operator == "**" else left.bit_length() + right.bit_length()
            if abs(left) > 1 and (right > 0 if operator == "**" else abs(right) > 1) and bits > MAX_POWER_BITS:
                raise SecurityError(f"an integer of up to {bits:,} bits from '{operator}' is too large for a template "
                                    f"(over {MAX_POWER_BITS:,} bits)")
            return left**right if operator == "**" else left * right
        if operator == "**":
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, _SEQUENCES) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE_LENGTH:
                    raise SecurityError(f"repeating a sequence of {len(seq)} items {n} times exceeds the "
                                        f"{MAX_SEQUENCE_LENGTH:,} item limit")
                if isinstance(seq, list | tuple) and isinstance(n, int) and n > 1:
                    # [big_list] * n: few items, but each one is big
                    check_size(weight(seq, MAX_SEQUENCE_LENGTH // n + 1) * n, "repeating a sequence")
            return left * right
        if operator == "%":
            if isinstance(left, str | bytes | bytearray):  # bytes: an application's value
                fmt = left if isinstance(left, str) else left.decode("latin-1")
                check_size(percent_size(fmt, right), "formatted text")
            return left % right
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES) and len(left) + len(
                right) > MAX_SEQUENCE_LENGTH:
            raise SecurityError(f"concatenation exceeds the {MAX_SEQUENCE_LENGTH:,} item limit")
        if isinstance(left, list | tuple) and isinstance(right, list | tuple):
            check_size(weight(left) + weight(right), "concatenation")
        return left + right


_SEQUENCES = (str, list, tuple, bytes, bytearray)


def _make_environment(enable_async: bool = True) -> KernelSandbox:
    env = KernelSandbox(enable_async=enable_async, undefined=jinja2.StrictUndefined, autoescape=True,
                        keep_trailing_newline=True, auto_reload=False)
    for unsafe in ("cycler", "joiner", "lipsum", "range", "dict"):
        env.globals.pop(unsafe, None)
    env.globals["dict"] = dict
    env.globals["namespace"] = _Namespace
    return env


REMOVED_GLOBALS = frozenset({"cycler", "joiner", "lipsum"})
ENVIRONMENT = _make_environment()
SYNC_ENVIRONMENT = _make_environment(enable_async=False)
"""Same sandbox, rendering synchronously: for templates that call no kernel function
(Jinja's async rendering costs several times more than its sync rendering)."""
