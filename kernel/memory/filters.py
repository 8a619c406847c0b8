"""Metadata filters as data: parsing, validation and evaluation.

A filter is a tree of `Condition`, `And` and `Or` (see `kernel.memory_types`). It is
never evaluated as code: stores either evaluate it here in Python (`matches`) or compile
it to their query language with bound parameters only (the pgvector connector does).

Accepted forms (`parse_filter`):

* data: ``{"field": "source", "op": "eq", "value": "a.md"}``, ``{"and": [...]}``,
  ``{"or": [...]}`` (also as a JSON string starting with ``{``);
* a CLI expression (`parse_expression`)::

      source=a.md        source==a.md      source!=a.md
      year>=2020         year<2020         score<=0.5
      tag in a,b,c       tag not in a,b    tags contains python

  Values are typed: ``true``/``false``/``null``, integers and floats; anything else,
  or text in single or double quotes, is a string. Several expressions are combined
  with AND (`parse_expressions`); use the data form for OR.

Semantics (the same in every store): ``eq``/``in`` compare like values only (a number
never equals a string, ``true`` never equals ``1``); ``ne``/``nin`` are true when the
field is missing; ``lt``/``lte``/``gt``/``gte`` compare two numbers or two strings
(by code point) and are false otherwise; ``contains`` is a substring test on a string
field or a membership test on an array field. Field names are metadata keys matching
``^[A-Za-z_][A-Za-z0-9_.]*$``; dots walk into nested objects.

A filter nests at most `MAX_DEPTH` levels of and/or (deeper is a `FilterError`, never a
`RecursionError`), so that every walk over a parsed filter (here, in the stores, in the
pgvector compiler) stays shallow.
"""

from __future__ import annotations

import functools
import json
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import FilterError
from .types import OPERATORS, And, Condition, Filter, Or

FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
MAX_DEPTH = 64
"""The deepest nesting of and/or (and lists of filters) `parse_filter` accepts."""
_MISSING: Any = object()
Scalar = str | int | float | bool | None

_SYMBOLS = {"==": "eq", "=": "eq", "!=": "ne", ">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
_SYMBOL_OPS = re.compile(
    r"^\s*(?P<field>[^=!<>\s]+)\s*(?P<op>==|!=|>=|<=|=|>|<)(?P<value>.*)$", re.DOTALL
)
_WORD_OPS = re.compile(
    r"^\s*(?P<field>\S+?)\s+(?P<op>not\s+in|nin|in|contains)\s+(?P<value>.*?)\s*$", re.IGNORECASE
)


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 4, 120, 120
_SHOW.maxdict = _SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxset = 12


def _show(value: object) -> str:
    """`repr(value)` for messages, bounded in depth and length (a deep value's repr would
    raise RecursionError)."""
    return _SHOW.repr(value)


def _too_deep() -> FilterError:
    return FilterError(f"the filter is nested too deeply (more than {MAX_DEPTH} levels of and/or)")


# -- construction and validation ----------------------------------------------------------


def check_field(field: object) -> str:
    if not isinstance(field, str) or FIELD_PATTERN.fullmatch(field) is None or ".." in field:
        raise FilterError(
            f"invalid filter field {_show(field)}: use a metadata key matching {FIELD_PATTERN.pattern}"
        )
    return field


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _value_error(field: str, op: str, needs: str, got: object) -> FilterError:
    return FilterError(f"operator {op!r} on field {field!r} needs {needs}, got {_show(got)}")


def condition(field: str, op: str, value: Any) -> Condition:
    """Build a validated `Condition` (lists become tuples)."""
    check_field(field)
    if not isinstance(op, str) or op not in OPERATORS:
        raise FilterError(
            f"unknown filter operator {_show(op)} on field {field!r}; "
            f"expected one of {', '.join(OPERATORS)}"
        )
    if op in ("in", "nin"):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise _value_error(field, op, "a list of values", value)
        value = tuple(value)
        bad = [v for v in value if not _is_scalar(v)]
        if bad:
            raise _value_error(field, op, "scalar list items", bad[0])
    elif op in ("lt", "lte", "gt", "gte"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _value_error(field, op, "a number or a string", value)
    elif not _is_scalar(value):
        raise _value_error(field, op, "a scalar value", value)
    return Condition(field, op, value)


def parse_filter(spec: Filter | Mapping[str, Any] | str | Sequence[str] | None) -> Filter | None:
    """Any accepted filter form to a validated `Filter` tree (None stays None)."""
    return _parse(spec, 0)


def _parse(spec: Any, depth: int) -> Filter | None:
    if depth > MAX_DEPTH:
        raise _too_deep()
    if spec is None:
        return None
    if isinstance(spec, Condition):
        return condition(spec.field, spec.op, spec.value)
    if isinstance(spec, And | Or):
        parts = tuple(_required(_parse(c, depth + 1)) for c in spec.conditions)
        return type(spec)(parts)
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FilterError(f"invalid JSON filter: {exc}") from None
            except RecursionError:  # json.loads recurses: far deeper than MAX_DEPTH
                raise _too_deep() from None
            return _parse(data, depth)
        return parse_expression(text)
    if isinstance(spec, Mapping):
        return _from_dict(spec, depth)
    if isinstance(spec, Sequence):
        return _parse_all(list(spec), depth + 1)
    raise FilterError(f"unsupported filter of type {type(spec).__name__}")


def _required(f: Filter | None) -> Filter:
    if f is None:
        raise FilterError("empty filter inside and/or")
    return f


def _from_dict(spec: Mapping[str, Any], depth: int) -> Filter:
    keys = set(spec)
    for combinator, cls in (("and", And), ("or", Or)):
        if keys == {combinator}:
            items = spec[combinator]
            if isinstance(items, str | Mapping) or not isinstance(items, Sequence) or not items:
                raise FilterError(
                    f"{combinator!r} needs a non-empty list of filters, got {_show(items)}"
                )
            return cls(tuple(_required(_parse(item, depth + 1)) for item in items))
    if keys == {"field", "op", "value"}:
        return condition(spec["field"], spec["op"], spec["value"])
    raise FilterError(
        f"unrecognised filter {_show(dict(spec))}: expected {{'field', 'op', 'value'}}, "
        "{'and': [...]} or {'or': [...]}"
    )


def _literal(text: str) -> Scalar:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_expression(text: str) -> Condition:
    """One CLI expression (`year>=2020`, `tag in a,b`) to a `Condition`."""
    m = _WORD_OPS.match(text)
    if m and FIELD_PATTERN.match(m["field"]):  # else `title=Life in Rome` is an `=` with a value
        word = " ".join(m["op"].lower().split())
        op = {"not in": "nin", "nin": "nin", "in": "in", "contains": "contains"}[word]
        raw = m["value"]
        if op in ("in", "nin"):
            values = [_literal(v) for v in raw.split(",") if v.strip()]
            return condition(m["field"], op, values)
        return condition(m["field"], op, _literal(raw))
    m = _SYMBOL_OPS.match(text)
    if m:
        return condition(m["field"], _SYMBOLS[m["op"]], _literal(m["value"]))
    raise FilterError(
        f"cannot parse filter expression {text!r}: expected FIELD OP VALUE with OP one of "
        "= == != < <= > >= 'in' 'not in' 'contains' "
        "(e.g. 'source=a.md', 'year>=2020', 'tag in a,b')"
    )


def parse_expressions(texts: Sequence[str]) -> Filter | None:
    """Several CLI expressions (or JSON filters), combined with AND."""
    return _parse_all(texts, 0)


def _parse_all(texts: Sequence[Any], depth: int) -> Filter | None:
    parts = [_required(_parse(t, depth)) for t in texts]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def to_dict(f: Filter) -> dict[str, Any]:
    """The data form of a filter (inverse of `parse_filter` on dicts)."""
    if isinstance(f, Condition):
        value = list(f.value) if isinstance(f.value, tuple) else f.value
        return {"field": f.field, "op": f.op, "value": value}
    key = "and" if isinstance(f, And) else "or"
    return {key: [to_dict(c) for c in f.conditions]}


# -- evaluation in Python -----------------------------------------------------------------


def lookup(metadata: Mapping[str, Any], field: str) -> Any:
    """`metadata[field]` walking dots into nested objects; `_MISSING` when absent."""
    if field in metadata:
        return metadata[field]
    current: Any = metadata
    for part in field.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _key(v: object) -> tuple[str, Any] | None:
    """A hashable key such that `_same(a, b)` iff `_key(a) == _key(b)` (None: matches nothing)."""
    if v is None:
        return ("null", None)
    if isinstance(v, bool):
        return ("bool", v)
    if _is_number(v):
        return ("num", v)
    if isinstance(v, str):
        return ("str", v)
    return None


@functools.lru_cache(maxsize=256)
def _key_set(values: tuple[Any, ...]) -> frozenset[tuple[str, Any]]:
    return frozenset(k for k in map(_key, values) if k is not None)


def _member(v: object, values: tuple[Any, ...]) -> bool:
    k = _key(v)
    return k is not None and k in _key_set(values)


def _compare(op: str, a: Any, b: Any) -> bool:
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "lt":
        return bool(a < b)
    if op == "lte":
        return bool(a <= b)
    if op == "gt":
        return bool(a > b)
    return bool(a >= b)


def matches(f: Filter | None, metadata: Mapping[str, Any]) -> bool:
    """Whether `metadata` satisfies the filter (None matches everything)."""
    if f is None:
        return True
    if isinstance(f, And):
        return all(matches(c, metadata) for c in f.conditions)
    if isinstance(f, Or):
        return any(matches(c, metadata) for c in f.conditions)
    v = lookup(metadata, f.field)
    op = f.op
    if op == "ne":
        return v is _MISSING or not _same(v, f.value)
    if op == "nin":
        return v is _MISSING or not _member(v, f.value)
    if v is _MISSING:
        return False
    if op == "eq":
        return _same(v, f.value)
    if op == "in":
        return _member(v, f.value)
    if op == "contains":
        if isinstance(v, str):
            return isinstance(f.value, str) and f.value in v
        if isinstance(v, list):
            return any(_same(e, f.value) for e in v)
        return False
    if op in ("lt", "lte", "gt", "gte"):
        return _compare(op, v, f.value)
    raise FilterError(f"unknown filter operator {op!r} on field {f.field!r}")
