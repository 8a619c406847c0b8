"""From what a plugin file declares to a `PromptFunction`: input variables checked, the
template compiled, SK syntax translated; every problem at file and line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import KernelError
from ..prompts import TEMPLATES, InputVariable, PromptFunction
from .reader import FolderReader, Skip
from .sk_syntax import SKTemplateError, translate
from .yaml_data import DataError, load_json

JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object"})
_TEMPLATE_LINE = re.compile(r":(\d+): ")


def build_prompt_function(reader: FolderReader, body: str, path: Path, offset: int, **kwargs: Any) -> PromptFunction:
    try:
        fn = PromptFunction(body, source=str(path), **kwargs)
        reader.templates[id(fn)] = (path, offset)
        if reader.tracked is not None:  # the parse cache keeps how it was built
            reader.built = {"body": body, "path": str(path), "offset": offset, "kwargs": kwargs,
                            "template": fn.template.metadata()}
        return fn
    except KernelError as exc:
        message = str(exc)
        line: int | None = None
        prefix = f"{path}:"
        if message.startswith(prefix):
            match = _TEMPLATE_LINE.match(message, len(prefix) - 1)
            if match:
                line = int(match.group(1)) + offset
                message = message[match.end():]
            else:
                message = message[len(prefix):].lstrip()
        reader.problem(path, message, line)
        raise Skip from None
    except Exception as exc:  # e.g. a default that does not fit the declared type
        reader.problem(path, f"{type(exc).__name__}: {exc}")
        raise Skip from None


def build_input_variable(reader: FolderReader, name: str, spec: Mapping[str, Any], path: Path,
                         line: Callable[[], int | None], *, sk: bool) -> InputVariable | None:
    kind = spec.get("type")
    schema = spec.get("json_schema" if sk else "schema")
    if isinstance(schema, str) and sk:
        try:
            schema = load_json(schema) if schema.strip() else None
        except json.JSONDecodeError as exc:
            reader.problem(path, f"input {name!r}: json_schema is not valid JSON ({exc.msg})", line())
            return None
        except DataError as exc:
            reader.problem(path, f"input {name!r}: json_schema: {exc.message}", line())
            return None
    if schema is not None and not isinstance(schema, dict):
        reader.problem(path, f"input {name!r}: the schema must be a JSON schema object", line())
        return None
    if kind is None and schema:
        kind = schema.get("type") if isinstance(schema.get("type"), str) else None
    if kind is not None and kind not in JSON_TYPES:
        if sk:  # SK takes free-form type names ("int", "List<string>") and does not check them
            reader.warn(path, f"input {name!r}: type {kind!r} is not a JSON schema type "
                              f"({', '.join(sorted(JSON_TYPES))}); not checked, as in Semantic Kernel", line())
            kind = None
        else:
            reader.problem(path, f"input {name!r}: unknown type {kind!r} (expected: {', '.join(sorted(JSON_TYPES))})",
                         line())
            return None
    required = spec.get("is_required" if sk else "required")
    trusted = spec.get("allow_dangerously_set_content" if sk else "trusted", False)
    for label, value in (("required", required), ("trusted", trusted)):
        if value is not None and not isinstance(value, bool):
            reader.problem(path, f"input {name!r}: {label} must be true or false", line())
            return None
    var = InputVariable(name, description=str(spec.get("description") or ""), required=required,
                        type=kind, trusted=bool(trusted), schema=dict(schema or {}))
    if "default" in spec:
        var.default = spec["default"]
    return var


def translate_sk(reader: FolderReader, source: str, path: Path, offset: int = 0) -> str:
    try:
        return translate(source)
    except SKTemplateError as exc:
        reader.problem(path, exc.message, exc.line + offset)
        raise Skip from None

# -- Semantic Kernel's formats -------------------------------------------------------


def undeclared(jinja_source: str, name: str) -> frozenset[str]:
    try:
        return TEMPLATES.get(jinja_source, name).variables
    except KernelError:
        return frozenset()  # reported when the function is built
