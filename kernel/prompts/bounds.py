"""The size models of the sandbox: how big a value is once it becomes text, how big the
result of a growing operation will be, computed *before* it runs, and which methods of the
builtin types a template may reach at all (an allowlist).

The sandbox (`sandbox.py`) calls these checks on operators, methods, format strings,
filters and printed values; a check that fails raises Jinja's `SecurityError`, which the
renderer turns into `SandboxViolationError`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup, escape

MAX_OUTPUT_CHARS = 1_000_000
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_RANGE_TOTAL = 100_000
MAX_POWER_BITS = 4096
MAX_NESTING = 200
MAX_CAPTURED_CHARS = 24 * MAX_OUTPUT_CHARS
MAX_STRING_ITEMS = 100_000
"""Characters of one string that `join`, `sum` or `str.join` may take as separate items: a
character outside Latin-1 becomes an object of about 80 bytes, so a string turned into a
list costs up to 80 times its text before any size check could see the result."""
"""Text one render may print and capture in all, escaping counted at its worst (6 characters
for 1): output captured in macro bodies, `{% set %}` and `{% filter %}` blocks and `caller()`
never reaches the output cap, so all printed text has this budget too."""

CAPTURED: ContextVar[list[int] | None] = ContextVar("kernel_captured_budget", default=None)
"""[characters left] of the running render's printed-text budget."""


_SCALARS, TEXTS = frozenset({int, float, bool, type(None)}), frozenset({str, Markup})


def weight(value: Any, limit: int = MAX_SEQUENCE_LENGTH) -> int:
    """How many characters/items `value` expands to when turned into text (an integer counts
    as its digits): nested containers counted in full (a list holding the same big list a
    million times weighs a million times that list). Shared containers are counted once and
    reused, and counting stops once past `limit`, so the cost stays bounded; flat containers
    of numbers or strings are counted at C speed."""
    memo: dict[int, int] = {}

    def visit(item: Any, depth: int) -> int:
        if isinstance(item, str):
            return len(item) or 1
        if not isinstance(item, list | tuple | set | frozenset | dict):
            return max(item.bit_length() * 1233 >> 12, 1) if isinstance(item, int) else 1
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
            total = max(_digits(members, kinds), len(members))
        elif kinds <= _SCALARS | TEXTS:
            total = max(sum(len(m) for m in members if isinstance(m, str)) + _digits(members, kinds), len(members))
        else:
            total = 0
            for member in members:
                total += visit(member, depth + 1)
                if total > limit:
                    break
        memo[key] = total
        return total

    return visit(value, 0)


def _digits(members: Any, kinds: set[type]) -> int:
    """About how many decimal digits the integers among `members` print as (at C speed)."""
    if int not in kinds:
        return 0
    ints = members if kinds <= {int, bool} else [m for m in members if type(m) is int]
    return sum(map(int.bit_length, ints)) * 1233 >> 12  # bits * log10(2)


def nesting(value: Any, cap: int = 64) -> int:
    """How deeply containers nest inside `value` (at most `cap`). Each level visits each distinct
    container once (10,000 at most), so shared (doubling) structures cost no more than their size."""
    depth, level = 0, [value] if isinstance(value, list | tuple | dict) else []
    while level and depth < cap:
        below: dict[int, Any] = {}
        for container in level:
            members = container.values() if isinstance(container, dict) else container
            below.update((id(item), item) for item in members if isinstance(item, list | tuple | dict))
            if len(below) >= 10_000:
                break
        depth, level = depth + 1, list(below.values())[:10_000]
    return depth


def check_size(size: int, what: str) -> None:
    if size > MAX_SEQUENCE_LENGTH:
        raise SecurityError(f"{what} would make {size:,} or more characters/items, over the "
                            f"{MAX_SEQUENCE_LENGTH:,} limit")


def check_weight(value: Any, what: str) -> Any:
    if not isinstance(value, int | float | bool | None) and not (isinstance(value, str) and len(value) < 4096):
        check_size(weight(value), what)
    return value


_SCALAR_TEXT = {float: 24, bool: 5, type(None): 4, complex: 56}  # longest str()/repr()


def _repr_size(text: str, ascii_only: bool = False) -> int:
    """At least len(repr(text)) (of ascii(text) with `ascii_only`), without building it."""
    extra = 2 if type(text) is str else 24  # quotes; a subclass adds its name: Markup('...')
    if (text.isascii() or not ascii_only) and text.isprintable():
        return len(text) + text.count("'") + text.count("\\") + extra
    top = ord(max(text))  # the widest escape: \xNN, \uNNNN or \UNNNNNNNN
    return len(text) * (4 if top < 0x100 else 6 if top < 0x10000 else 10) + extra


def text_size(value: Any, conversion: str = "s", limit: int = MAX_SEQUENCE_LENGTH) -> int:
    """At least len(str(value)) (conversion "r": of repr, "a": of ascii), computed before
    converting: builtin containers count their items' repr, shared containers are counted
    once and counting stops past `limit`; any other object is converted once to measure it."""
    memo: dict[tuple[int, str], int] = {}

    def visit(item: Any, conv: str, depth: int) -> int:
        size = _SCALAR_TEXT.get(type(item))
        if size is not None:
            return size
        if isinstance(item, str):
            return len(item) if conv == "s" else _repr_size(item, conv == "a")
        if isinstance(item, int):
            return (item.bit_length() * 1233 >> 12) + 2  # digits and a sign
        known = memo.get(key := (id(item), conv))
        if known is not None:
            return known
        if depth > MAX_NESTING:
            raise SecurityError(f"a value nested more than {MAX_NESTING} levels deep")
        if isinstance(item, list | tuple | set | frozenset | dict):
            total = 16  # brackets, `frozenset(...)`; each item as repr, and a separator
            for member in [*item.keys(), *item.values()] if isinstance(item, dict) else item:
                total += visit(member, "r", depth + 1) + 2
                if total > limit:
                    break
        else:  # an application object: only converting it tells its size
            total = len((str if conv == "s" else repr if conv == "r" else ascii)(item))
        memo[key] = total
        return total

    return visit(value, conversion, 0)


def printed_size(value: Any) -> int:
    """`value` as text: a builtin container by `text_size` (its items' repr), the rest by weight."""
    return text_size(value) if isinstance(value, list | tuple | dict | set | frozenset) else weight(value)


def _number_size(value: Any) -> int:
    """At least len(format(value, spec)) for a numeric spec (any base, grouping, `f`)."""
    return value.bit_length() * 4 // 3 + 8 if isinstance(value, int) else 450 + (
        0 if isinstance(value, float) else text_size(value))


_PERCENT_FIELD = re.compile(r"%(?:\(([^()]*)\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?[hlL]*(.?)", re.DOTALL)


def percent_size(fmt: str, values: Any) -> int:
    """At least len(fmt % values), from the parsed fields: each field counts where it is used
    (`'%(a)s%(a)s' % {'a': s}` counts `s` twice) with its width and precision (`*`: an argument)."""
    args, total = iter(values if isinstance(values, tuple) else (values,)), len(fmt)
    sizes: dict[tuple[int, str], int] = {}
    try:
        for field in _PERCENT_FIELD.finditer(fmt):
            key, width, precision, conv = field.groups()
            total -= len(field.group())  # the field's text is replaced by what it makes
            if conv == "(":
                raise SecurityError("a %-format key with parentheses in it is not supported in templates")
            numbers = [0, 0]  # width, precision; a loop: next() may stop it (in a generator it cannot)
            for i, n in enumerate((width, precision)):
                if n:
                    numbers[i] = abs(operator.index(next(args))) if n == "*" else int(n) if len(n) < 8 else 10**8
            if conv in ("%", ""):
                total += len(conv)
                continue
            value = next(args) if key is None else values[key]
            size = sizes.get((id(value), conv))
            if size is None:  # the same value in many fields: measured once
                size = sizes[id(value), conv] = (text_size(value, conv) if conv in "sra" else
                                                 1 if conv == "c" else _number_size(value))
            size = min(size, numbers[1]) if precision and conv in "sra" else size + numbers[1]
            total += max(numbers[0], size)
    except (StopIteration, LookupError, TypeError):  # Python raises its own error for this format
        pass
    return total * (5 if isinstance(fmt, Markup) else 1)  # Markup escapes every value


class BoundedFormatter(SandboxedFormatter):
    """`str.format`/`format_map` in the sandbox, counting the text as it is built: each field
    is refused *before* it is converted or formatted when its size model would take the
    text past the limit, so a value used in a thousand fields counts a thousand times."""

    factor = 1  # Markup escapes every field: up to 5 characters for one

    def vformat(self, format_string: Any, args: Any, kwargs: Any) -> str:
        self.used = sum(len(literal) for literal, *_ in self.parse(format_string))
        return super().vformat(format_string, args, kwargs)

    def _reserve(self, size: int) -> None:
        check_size(self.used + size * self.factor, "formatted text")

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            self._reserve(text_size(value, conversion))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:  # the value and every number in the spec
        numbers = sum(int(d) if len(d) < 8 else 10**8 for d in re.findall(r"\d+", format_spec))
        self._reserve(numbers + (_number_size(value) if isinstance(value, int | float) else text_size(value)))
        text = super().format_field(value, format_spec)
        self.used += len(text)
        check_size(self.used, "formatted text")
        return text


class BoundedEscapeFormatter(BoundedFormatter, SandboxedEscapeFormatter):
    factor = 5


# --- methods of the builtin types: an allowlist, and a size model for each growing one --------

_STR_SAFE = frozenset({  # not `encode`: bytes have no use in a prompt, and codecs are a large surface
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format", "format_map", "index",
    "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable",
    "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix",
    "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines",
    "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"})
_INT_SAFE = frozenset({"as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator", "imag",
                       "is_integer", "numerator", "real"})  # not `to_bytes(10**9)`, `from_bytes`
_SET_SAFE = frozenset({"copy", "difference", "intersection", "isdisjoint", "issubset", "issuperset",
                       "symmetric_difference", "union"})
_BYTES_SAFE = frozenset({"count", "endswith", "find", "index", "isalnum", "isalpha", "isascii", "isdigit",
                         "islower", "isspace", "istitle", "isupper", "rfind", "rindex", "startswith"})
ALLOWED_ATTRIBUTES: dict[type, frozenset[str]] = {
    str: _STR_SAFE, Markup: _STR_SAFE | {"striptags", "unescape"}, int: _INT_SAFE, bool: _INT_SAFE,
    float: frozenset({"as_integer_ratio", "conjugate", "hex", "imag", "is_integer", "real"}),
    complex: frozenset({"conjugate", "imag", "real"}), list: frozenset({"copy", "count", "index"}),
    tuple: frozenset({"count", "index"}), dict: frozenset({"copy", "get", "items", "keys", "values"}),
    set: _SET_SAFE, frozenset: _SET_SAFE, range: frozenset({"count", "index", "start", "step", "stop"}),
    bytes: _BYTES_SAFE, bytearray: _BYTES_SAFE,
}
"""The only public attributes a template may read on these types (and their subclasses:
there, the type's own other attributes stay refused). Everything else is refused by name."""
EXACT, SUBCLASS, CLASS, OTHER = range(4)
POLICIES: dict[type, tuple[frozenset[str], int]] = {cls: (names, EXACT) for cls, names in ALLOWED_ATTRIBUTES.items()}


def attribute_policy(cls: type) -> tuple[frozenset[str], int]:
    """(allowed names, EXACT) for a listed type; (refused names, mode) for any other."""
    policy = POLICIES.get(cls)
    if policy is None:
        base = next((b for b in cls.__mro__ if b in ALLOWED_ATTRIBUTES), None)
        refused = frozenset() if base is None else frozenset(dir(base)) - ALLOWED_ATTRIBUTES[base]
        policy = (refused, SUBCLASS if base else CLASS if issubclass(cls, type) else OTHER)
        if len(POLICIES) < 4096:  # classes made at run time: the cache stays bounded
            POLICIES[cls] = policy
    return policy


_CASE_METHODS = frozenset({"capitalize", "casefold", "lower", "swapcase", "title", "upper"})
# The `str` methods that can return more than they are given (split, strip, ... cannot).
_GROWING_METHODS = _CASE_METHODS | {"center", "expandtabs", "join", "ljust", "replace", "rjust", "translate", "zfill"}


def str_method_size(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """At least len(text.<name>(*args, **kwargs)), computed before it runs (TypeError: bad arguments)."""
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(text), operator.index(args[0]) if args else 0)
    if name == "expandtabs":
        return len(text) + text.count("\t") * max(operator.index(kwargs.get("tabsize", args[0] if args else 8)), 0)
    if name == "join":
        items = args[0] if args else ()
        size = text_size(items) * 5 if isinstance(text, Markup) else weight(items)  # Markup escapes each item
        return size + len(text) * max(len(items) - 1, 0)
    if name == "replace" and len(args) >= 2:
        old, new = (str(escape(a)) for a in args[:2]) if isinstance(text, Markup) else args[:2]
        hits = text.count(old) if old else len(text) + 1
        count = operator.index(args[2] if len(args) > 2 else kwargs.get("count", -1))
        return len(text) + (min(hits, count) if count >= 0 else hits) * max(len(new) - len(old), 0)
    if name == "translate":  # each character maps to one table entry: count the growing entries' hits
        table = args[0] if args else None
        if isinstance(table, str | bytes):
            return len(text)  # table[ord(c)] is one character
        if not isinstance(table, Mapping | list | tuple):
            raise SecurityError(f"str.translate takes a dict, list, tuple or str table, not {type(table).__name__}")
        entries = table.items() if isinstance(table, Mapping) else enumerate(table)
        growing = [(k, len(v) - 1) for k, v in entries if isinstance(v, str) and len(v) > 1]
        if len(growing) > 256 or not all(isinstance(k, int | float | str) for k, _ in growing):
            return len(text) * (1 + max((extra for _, extra in growing), default=0))
        points = [(int(k), e) for k, e in growing if isinstance(k, int) or (isinstance(k, float) and k.is_integer())]
        return len(text) + sum(text.count(chr(k)) * e for k, e in points if 0 <= k < 0x110000)
    if name in _CASE_METHODS:  # special casing: at most 3 characters for 1 (lower: only U+0130, to 2)
        return len(text) + (0 if text.isascii() else text.count("\u0130") if name == "lower" else 2 * len(text))
    return len(text)


def string_items(value: Any, what: str) -> list[Any]:
    """`list(value)`, refusing a string longer than MAX_STRING_ITEMS characters."""
    if isinstance(value, str) and len(value) > MAX_STRING_ITEMS:
        raise SecurityError(f"{what} over the characters of a {len(value):,}-character string: more than "
                            f"{MAX_STRING_ITEMS:,} items")
    return list(value)


def guard_str_method(method: Any, text: str) -> Callable[..., Any] | None:
    """`method` of `text` checked by its size model, or None if it cannot grow `text` at all."""
    name = method.__name__
    if name not in _GROWING_METHODS or (name in _CASE_METHODS and 3 * len(text) <= MAX_SEQUENCE_LENGTH):
        return None

    def checked(*args: Any, **kwargs: Any) -> Any:
        if name == "join" and args:
            args = (string_items(args[0], "str.join"), *args[1:])  # an iterator is read once, here
        size = str_method_size(text, name, args, kwargs)
        if size > len(text):
            check_size(size, f"str.{name}")
        return method(*args, **kwargs)

    checked.__name__ = checked.__qualname__ = f"str.{name}"
    return checked


def join_captured(parts: Iterable[str]) -> str:
    """Join captured output once its size fits the running render's budget (checked
    before the join allocates: 200 macro calls printing a 1 MB value refuse at once)."""
    items = parts if isinstance(parts, list) else list(parts)
    size = sum(map(len, items))
    budget = CAPTURED.get()
    left = budget[0] if budget is not None else MAX_CAPTURED_CHARS
    if size > left:
        raise SecurityError(f"captured output (macros, set and filter blocks) exceeds {MAX_CAPTURED_CHARS:,} "
                            "characters in this render")
    if budget is not None:
        budget[0] = left - size
    return "".join(items)


def spend_printed(size: int) -> None:
    """Count `size` characters of printed text against the running render's budget."""
    budget = CAPTURED.get()
    if budget is None:
        return
    budget[0] -= size
    if budget[0] < 0:
        raise SecurityError(f"the text this render prints (captured in macros and blocks included) exceeds "
                            f"{MAX_CAPTURED_CHARS // 6:,} characters")
