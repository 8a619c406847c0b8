"""Metadata filters compiled to PostgreSQL (JSONB) with bound parameters only.

The filter semantics are the kernel's (`kernel.memory.filters`): this module only
translates them to SQL, so the PostgreSQL dialect stays out of the core.
"""

from __future__ import annotations

import json
from typing import Any

from kernel.errors import FilterError
from kernel.memory import And, Filter, Or

_PG_CMP = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def to_postgres(f: Filter | None, column: str = "metadata") -> tuple[str, list[Any]]:
    """SQL boolean expression over the JSONB `column` and its bound parameters (`%s`).

    `column` is a trusted identifier chosen by the store, never user input; every value
    and every field path is a bound parameter.
    """
    if f is None:
        return "TRUE", []
    if isinstance(f, And | Or):
        parts, params = [], []
        for c in f.conditions:
            sql, p = to_postgres(c, column)
            parts.append(f"({sql})")
            params.extend(p)
        return (" AND " if isinstance(f, And) else " OR ").join(parts), params
    path = f.field.split(".") if f.field.count(".") else [f.field]
    # a literal key with dots that exists as-is is looked up first, as in `lookup`
    target = f"COALESCE({column} -> %s::text, {column} #> %s::text[])"
    tparams: list[Any] = [f.field, path]
    op, value = f.op, f.value
    if op in ("eq", "ne"):
        sql = f"COALESCE({target} = %s::jsonb, FALSE)"
        sql = f"NOT {sql}" if op == "ne" else sql
        return sql, [*tparams, json.dumps(value)]
    if op in ("in", "nin"):
        sql = (
            f"COALESCE(EXISTS (SELECT 1 FROM jsonb_array_elements(%s::jsonb) AS e(v) "
            f"WHERE e.v = {target}), FALSE)"
        )
        sql = f"NOT {sql}" if op == "nin" else sql
        return sql, [json.dumps(list(value)), *tparams]
    if op in _PG_CMP:
        sym = _PG_CMP[op]
        if isinstance(value, str):
            sql = (
                f"COALESCE(jsonb_typeof({target}) = 'string' AND "
                f"({target} #>> '{{}}') COLLATE \"C\" {sym} %s COLLATE \"C\", FALSE)"
            )
            return sql, [*tparams, *tparams, value]
        sql = (
            f"COALESCE(CASE WHEN jsonb_typeof({target}) = 'number' "
            f"THEN ({target} #>> '{{}}')::numeric {sym} %s::numeric ELSE FALSE END, FALSE)"
        )
        return sql, [*tparams, *tparams, value]
    if op == "contains":
        sql = (
            f"COALESCE(CASE jsonb_typeof({target}) "
            f"WHEN 'string' THEN %s::text IS NOT NULL "
            f"AND strpos({target} #>> '{{}}', %s::text) > 0 "
            f"WHEN 'array' THEN {target} @> jsonb_build_array(%s::jsonb) ELSE FALSE END, FALSE)"
        )
        text = value if isinstance(value, str) else None
        return sql, [*tparams, text, *tparams, text, *tparams, json.dumps(value)]
    raise FilterError(f"unknown filter operator {op!r} on field {f.field!r}")
