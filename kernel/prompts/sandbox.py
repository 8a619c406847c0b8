"""The sandbox every template renders in, and the bounds that hold in it.

Safety model
  * Template *source* is trusted code written by the plugin author; it runs in Jinja's
    `ImmutableSandboxedEnvironment` with strict undefined variables, no `cycler`, `joiner`
    or `lipsum` globals, a bounded `range`, guarded `*`, `**` and `+`, and a cap on the
    rendered size. Violations raise `SandboxViolationError`.
  * Every *value* inserted into a template (variables, function results, recalled memory)
    is XML-escaped on output, so it can never open or close a `<message>` block. After
    parsing the chat structure the escapes are undone in each message's content. An input
    is inserted raw only when it is explicitly marked trusted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import filters as _filters
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_OUTPUT_CHARS = 1_000_000
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_RANGE_TOTAL = 100_000
MAX_POWER_BITS = 4096
MAX_NESTING = 200


class RenderBudget:
    """Per-render budget for `range` items, shared by all loops of one render."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = MAX_RANGE_TOTAL


_SCALARS = frozenset({int, float, bool, type(None)})
_TEXTS = frozenset({str, Markup})


def weight(value: Any, limit: int = MAX_SEQUENCE_LENGTH) -> int:
    """How many characters/items `value` expands to when turned into text: nested
    containers counted in full (a list holding the same big list a million times weighs
    a million times that list). Shared containers are counted once and reused, and
    counting stops once past `limit`, so the cost stays bounded; flat containers of
    numbers or strings are counted at C speed."""
    memo: dict[int, int] = {}

    def visit(item: Any, depth: int) -> int:
        if isinstance(item, str):
            return len(item) or 1
        if not isinstance(item, list | tuple | set | frozenset | dict):
            return 1
        key = id(item)
        known = memo.get(key)
        if known is not None:
            return known
        if depth > MAX_NESTING:
            raise SecurityError(f"a value nested more than {MAX_NESTING} levels deep")
        members: Any = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        kinds = set(map(type, members))
        if not members:
            total = 1
        elif kinds <= _SCALARS:
            total = len(members)
        elif kinds <= _SCALARS | _TEXTS:
            total = max(sum(len(m) for m in members if isinstance(m, str)), len(members))
        else:
            total = 0
            for member in members:
                total += visit(member, depth + 1)
                if total > limit:
                    break
        memo[key] = total
        return total

    return visit(value, 0)


def _nesting(value: Any, cap: int = 64) -> int:
    """How deeply containers nest inside `value` (at most `cap`). Each level visits each
    distinct container once, so shared (doubling) structures cost no more than their size."""
    depth, level = 0, {id(value): value} if isinstance(value, list | tuple | dict) else {}
    while level and depth < cap:
        depth += 1
        below: dict[int, Any] = {}
        for container in level.values():
            for item in container.values() if isinstance(container, dict) else container:
                if isinstance(item, list | tuple | dict):
                    below[id(item)] = item
                    if len(below) >= 10_000:
                        break
            if len(below) >= 10_000:
                break
        level = below
    return depth


def _check_size(size: int, what: str) -> None:
    if size > MAX_SEQUENCE_LENGTH:
        raise SecurityError(f"{what} would make {size:,} or more characters/items, over the "
                            f"{MAX_SEQUENCE_LENGTH:,} limit")


def check_weight(value: Any, what: str) -> Any:
    if not isinstance(value, int | float | bool | None) and not (isinstance(value, str) and len(value) < 4096):
        _check_size(weight(value), what)
    return value


_SPEC_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_format(fmt: str, args: Iterable[Any], braces: bool) -> None:
    """Reject widths and precisions over the size limit in a format string; a width taken
    from the arguments (`{:{w}}`, `%*s`) is checked against the integer arguments."""
    if braces:
        import string

        try:
            specs = [spec or "" for _, field, spec, _ in string.Formatter().parse(fmt) if field is not None]
        except ValueError:
            return  # str.format raises its own error
        dynamic = any("{" in spec for spec in specs)
    else:
        found = _PERCENT_SPEC.findall(fmt)
        specs = [f"{width}.{precision}" for width, precision in found]
        dynamic = any("*" in spec for spec in specs)
    for spec in specs:
        for number in _SPEC_NUMBER.findall(spec):
            _check_size(int(number), f"format width {number}")
    if dynamic:
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool):
                _check_size(abs(arg), f"format width {arg}")


def _str_method_size(method: str, text: str, args: tuple[Any, ...]) -> int | None:
    """Size of the result of a growing `str` method, computed before running it."""
    if method in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return max(len(text), args[0])
    if method == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        return len(text) + text.count("\t") * max(tab, 0)
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        hits = text.count(old) if old else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            hits = min(hits, args[2])
        return len(text) + hits * max(len(new) - len(old), 0)
    return None


def _guarded_filters() -> dict[str, Callable[..., Any]]:
    """Jinja filters that can build large values, checked before they allocate."""

    def center(value: Any, width: int = 80) -> str:
        _check_size(int(width), f"center width {width}")
        return _filters.do_center(value, width)

    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text = str(s)
        pad = width if isinstance(width, str) else " " * 0
        pad_len = len(pad) if isinstance(width, str) else int(width)
        _check_size(len(text) + (text.count("\n") + 1) * pad_len, "indent")
        return _filters.do_indent(s, width, first, blank)

    def join_checked(eval_ctx: Any, items: list[Any], d: str, attribute: Any) -> str:
        if attribute is None:
            _check_size(weight(items) + len(str(d)) * max(len(items) - 1, 0), "join")
        return _filters.sync_do_join(eval_ctx, items, d, attribute)

    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        if hasattr(value, "__aiter__"):  # async rendering: a filter chain's async generator

            async def collect() -> str:
                from jinja2.async_utils import auto_to_list

                return join_checked(eval_ctx, await auto_to_list(value), d, attribute)

            return collect()
        return join_checked(eval_ctx, list(value), d, attribute)

    def replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> str:
        size = _str_method_size("replace", str(s), (str(old), str(new), -1 if count is None else count))
        _check_size(size or 0, "replace")
        return _filters.do_replace(eval_ctx, s, old, new, count)

    def format_(value: str, *args: Any, **kwargs: Any) -> str:
        _check_format(str(value), [*args, *kwargs.values()], braces=False)
        _check_size(weight(value) + weight([*args, *kwargs.values()]), "formatted text")
        return _filters.do_format(value, *args, **kwargs)

    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        _check_size(int(linecount), f"batch size {linecount}")
        return _filters.do_batch(value, linecount, fill_with)

    def slice_(value: Any, slices: int, fill_with: Any = None) -> Any:
        _check_size(int(slices), f"slice count {slices}")
        return _filters.do_slice(value, slices, fill_with)

    def string(value: Any) -> str:
        return str(_filters.soft_str(check_weight(value, "string")))  # type: ignore[attr-defined]

    def sum_checked(environment: Any, items: list[Any], attribute: Any, start: Any) -> Any:
        if not isinstance(start, int | float):
            _check_size(weight(items) + weight(start), "sum")
        return _filters.sync_do_sum(environment, items, attribute, start)

    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if hasattr(iterable, "__aiter__"):

            async def collect() -> Any:
                from jinja2.async_utils import auto_to_list

                return sum_checked(environment, await auto_to_list(iterable), attribute, start)

            return collect()
        return sum_checked(environment, list(iterable), attribute, start)

    def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        # Indented JSON repeats the indent on every line at every depth: bound it up front.
        spaces = len(indent) if isinstance(indent, str) else int(indent or 0)
        _check_size(weight(value) * (1 + spaces * _nesting(value)), "tojson output")
        return _filters.do_tojson(eval_ctx, value, indent)

    def wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
                 wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
        # Every break may insert `wrapstring`: at most one per character.
        _check_size(weight(s) * (1 + len(wrapstring or "")), "wordwrap output")
        return _filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    guarded: dict[str, Callable[..., Any]] = {
        "center": center, "indent": indent, "join": join, "replace": replace, "format": format_,
        "batch": batch, "slice": slice_, "string": string, "sum": sum_, "tojson": tojson,
        "wordwrap": wordwrap,
    }
    for name, wrapper in guarded.items():
        pass_arg = getattr(_filters.FILTERS[name], "jinja_pass_arg", None)
        if pass_arg is not None:
            wrapper.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        if name in ("join", "sum"):  # may return a coroutine: no compile-time folding
            wrapper.jinja_async_variant = True  # type: ignore[attr-defined]
    for name, original in _filters.FILTERS.items():
        if name in guarded or name in ("length", "count", "first", "last", "default", "d", "safe"):
            continue

        def checked(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            # Every input counts (keyword arguments too), and so does the result.
            inputs = [a for a in args
                      if not isinstance(a, jinja2.runtime.Context | jinja2.nodes.EvalContext | jinja2.Environment)]
            _check_size(sum(weight(a) for a in (*inputs, *kwargs.values())
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
    """Jinja's immutable sandbox plus size guards on operators, growing `str` methods,
    format widths, `~` concatenation, some filters and every printed value."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.filters.update(_guarded_filters())

    @staticmethod
    def _finalize(value: Any) -> Any:
        """Every `{{ value }}` passes here before it becomes text."""
        if (isinstance(value, str) and len(value) < 4096) or isinstance(value, int | float | bool | None):
            return value
        return check_weight(value, "printed value")

    @staticmethod
    def check_concat(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _check_size(sum(weight(part) for part in parts), "concatenation with '~'")
        return parts

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            values = list(args[0].values()) if is_map and args and isinstance(args[0], Mapping) else [
                *args, *kwargs.values()]
            _check_format(fmt, values, braces=True)
            _check_size(len(fmt) + sum(weight(v) for v in values), "formatted text")
            result = wrapped(*args, **kwargs)
            _check_size(len(result), "formatted text")
            return result

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "join" and args:
                items = list(args[0])
                _check_size(weight(items) + len(owner) * max(len(items) - 1, 0), "str.join")
                args = (items, *args[1:])
            else:
                size = _str_method_size(name, owner, args)
                if size is not None:
                    _check_size(size, f"str.{name}")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if (
                isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS
            ):
                raise SecurityError(f"'{left} ** {right}' is too large for a template")
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE_LENGTH:
                    raise SecurityError(
                        f"repeating a sequence of {len(seq)} items {n} times exceeds the "
                        f"{MAX_SEQUENCE_LENGTH:,} item limit"
                    )
                if isinstance(seq, list | tuple) and isinstance(n, int) and n > 1:
                    # [big_list] * n: few items, but each one is big
                    _check_size(weight(seq, MAX_SEQUENCE_LENGTH // n + 1) * n, "repeating a sequence")
            return left * right
        if operator == "%":
            if isinstance(left, str):
                values = right if isinstance(right, tuple) else (
                    list(right.values()) if isinstance(right, Mapping) else [right])
                _check_format(left, values, braces=False)
                _check_size(len(left) + weight(right), "formatted text")
            return left % right
        if (
            isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > MAX_SEQUENCE_LENGTH
        ):
            raise SecurityError(f"concatenation exceeds the {MAX_SEQUENCE_LENGTH:,} item limit")
        if isinstance(left, list | tuple) and isinstance(right, list | tuple):
            _check_size(weight(left) + weight(right), "concatenation")
        return left + right


def bounded_range(budget: RenderBudget) -> Callable[..., range]:
    def bounded_range(*args: int) -> range:
        rng = range(*args)
        budget.remaining -= len(rng)
        if budget.remaining < 0:
            raise SecurityError(f"loops in this template exceed {MAX_RANGE_TOTAL:,} range items")
        return rng

    return bounded_range


def _make_environment(enable_async: bool = True) -> KernelSandbox:
    env = KernelSandbox(
        enable_async=enable_async,
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
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
