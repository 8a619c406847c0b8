"""Structured output: the model's JSON, parsed and checked against the function's
`output_schema` (JSON Schema, draft 2020-12). A reply that is not JSON or does not match
gets one repair turn that lists the problems, as the planner does; then the function
fails with an error naming every problem."""

from __future__ import annotations

import json
from typing import Any

from ..contents import ChatMessage

__all__ = ["MAX_REPAIRS", "check_output", "repair_message"]

MAX_REPAIRS = 1
MAX_PROBLEMS = 8


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped


def _where(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return f"at {parts.lstrip('.')}" if parts else "at the top level"


def schema_problems(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `value` breaks `schema` (at most MAX_PROBLEMS), each with its place."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        validator = Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except SchemaError as exc:  # the schema itself is broken: say so rather than blame the model
        return [f"the output schema is not a valid JSON schema: {exc.message}"]
    problems = [f"{_where(e.absolute_path)}: {_short(e.message)}" for e in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"... and {len(errors) - MAX_PROBLEMS} more")
    return problems


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def check_output(text: str, schema: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """(parsed value, problems): problems is empty when `text` is JSON matching `schema`
    (any JSON when `schema` is None)."""
    try:
        value = json.loads(_strip_fences(text))
    except json.JSONDecodeError as exc:
        return None, [f"the output is not JSON ({exc.msg} at position {exc.pos})"]
    except RecursionError:
        return None, ["the output JSON is nested too deeply"]
    return value, schema_problems(value, schema) if schema is not None else []


def repair_message(problems: list[str]) -> ChatMessage:
    listed = "\n".join(f"- {p}" for p in problems)
    return ChatMessage.user(
        f"That output does not match the required JSON schema:\n{listed}\n"
        "Answer again with one JSON value that matches the schema, and nothing else."
    )
