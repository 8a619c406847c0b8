"""Our `.prompt` format: optional YAML front matter between `---` lines, then a Jinja body.

Front-matter keys: `description`, `inputs`, `settings`, `execution_settings`,
`output_schema` (inline or a JSON file in the folder), `service`, `needs_approval`,
`template_format` (`jinja`, default, or `semantic-kernel`). Unknown keys are errors: a
typo must not be silently ignored; so is, once `inputs` is declared, a variable the
template reads that is not declared there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..functions import NAME_PATTERN
from ..prompts import InputVariable, PromptFunction
from .declarations import build_input_variable, build_prompt_function, translate_sk
from .reader import FolderReader, Skip, is_mapping_of_mappings, key_line
from .references import suggestion, variable_lines
from .yaml_data import DataError, load_yaml

PROMPT_SUFFIX = ".prompt"
PROMPT_KEYS = frozenset(
    {"description", "inputs", "settings", "execution_settings", "output_schema", "service",
     "needs_approval", "template_format"}
)
INPUT_KEYS = frozenset({"description", "default", "type", "required", "trusted", "schema"})


def parse_front_matter(text: str) -> tuple[dict[str, Any], str, int]:
    """Split a `.prompt` file into (front matter, body, lines before the body).

    The front matter is YAML between a first line `---` and the next line `---`; without
    it the whole file is the body.
    """
    if not text.startswith("---"):
        return {}, text, 0
    first_end = text.find("\n")
    if first_end < 0 or text[:first_end].rstrip() != "---":
        return {}, text, 0
    match = re.compile(r"^---[ \t]*$", re.MULTILINE).search(text, first_end + 1)
    if match is None:
        raise DataError("front matter is not closed: add a line '---' after it", 1)
    header = text[first_end + 1 : match.start()]
    body_start = match.end() + 1 if text.startswith("\n", match.end()) else match.end()
    offset = text.count("\n", 0, body_start)
    if not header.strip():
        return {}, text[body_start:], offset
    try:
        meta = load_yaml(header)
    except DataError as exc:
        raise DataError(exc.message, None if exc.line is None else exc.line + 1) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise DataError("front matter must be a mapping (key: value lines)", 2)
    return meta, text[body_start:], offset


def split_front_matter(reader: FolderReader, text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """(metadata, body, number of lines before the body)."""
    try:
        return parse_front_matter(text)
    except DataError as exc:
        reader.problem(path, exc.message, exc.line)
        raise Skip from None


def prompt_inputs(reader: FolderReader, raw: Any, path: Path, text: str) -> list[InputVariable]:
    if raw is None:
        return []
    items: list[tuple[str, Any]]
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        items = [(v, None) for v in raw]
    else:
        reader.problem(path, "inputs must map each input name to its description or settings",
                     key_line(text, "inputs"))
        return []
    out: list[InputVariable] = []
    for name, spec in items:

        def line(name: str = name) -> int | None:
            return key_line(text, name)

        if not NAME_PATTERN.match(name):
            reader.problem(path, f"invalid input name {name!r}", line())
            continue
        if spec is None:
            out.append(InputVariable(name))
            continue
        if isinstance(spec, str):
            out.append(InputVariable(name, description=spec))
            continue
        if not isinstance(spec, Mapping):
            reader.problem(path, f"input {name!r}: expected a description or a mapping", line())
            continue
        unknown = sorted(str(k) for k in spec if k not in INPUT_KEYS)
        if unknown:
            reader.problem(path, f"input {name!r}: unknown key(s) {', '.join(unknown)} "
                               f"(expected: {', '.join(sorted(INPUT_KEYS))})", line())
            continue
        var = build_input_variable(reader, name, spec, path, line, sk=False)
        if var is not None:
            out.append(var)
    return out


def load_prompt_file(reader: FolderReader, plugin: str, path: Path) -> PromptFunction:
    name = reader.function_name(path.name[: -len(PROMPT_SUFFIX)], path)
    text = reader.read(path)
    meta, body, offset = split_front_matter(reader, text, path)
    for key in meta:
        if key not in PROMPT_KEYS:
            reader.problem(path, f"unknown front matter key {key!r} "
                               f"(expected one of: {', '.join(sorted(PROMPT_KEYS))})", key_line(text, key))
    errors_before = len(reader.problems)
    inputs = prompt_inputs(reader, meta.get("inputs"), path, text)
    inputs_ok = len(reader.problems) == errors_before
    settings: dict[str, dict[str, Any]] = {}
    raw_settings = meta.get("execution_settings")
    if raw_settings is not None:
        if not is_mapping_of_mappings(raw_settings):
            reader.problem(path, "execution_settings must map a service name (or 'default') to settings",
                         key_line(text, "execution_settings"))
        else:
            settings = {str(k): dict(v) for k, v in raw_settings.items()}
    default_settings = meta.get("settings")
    if default_settings is not None:
        if not isinstance(default_settings, Mapping):
            reader.problem(path, "settings must be a mapping (max_tokens: 200, ...)", key_line(text, "settings"))
        else:
            settings["default"] = {**settings.get("default", {}), **default_settings}
    output_schema = meta.get("output_schema")
    if isinstance(output_schema, str):
        output_schema = reader.json_file(path.parent, output_schema, "output_schema", path)
    elif output_schema is not None and not isinstance(output_schema, dict):
        reader.problem(path, "output_schema must be a JSON schema (a mapping) or a .json file name",
                     key_line(text, "output_schema"))
        output_schema = None
    service = meta.get("service")
    if service is not None and not isinstance(service, str):
        reader.problem(path, "service must be a service name", key_line(text, "service"))
        service = None
    needs_approval = meta.get("needs_approval", False)
    if not isinstance(needs_approval, bool):
        reader.problem(path, "needs_approval must be true or false", key_line(text, "needs_approval"))
        needs_approval = False
    description = meta.get("description", "")
    if not isinstance(description, str):
        reader.problem(path, "description must be text", key_line(text, "description"))
        description = ""
    template_format = meta.get("template_format", "jinja")
    if template_format in ("semantic-kernel", "semantic_kernel"):
        body = translate_sk(reader, body, path, offset)
    elif template_format not in ("jinja", "jinja2"):
        reader.problem(path, f"template_format {template_format!r} is not supported "
                           "(use 'jinja' or 'semantic-kernel')", key_line(text, "template_format"))
        raise Skip
    fn = build_prompt_function(reader,
        body, path, offset,
        name=name, plugin_name=plugin, description=description, input_variables=inputs,
        execution_settings=settings or None, output_schema=output_schema, service=service,
        needs_approval=needs_approval,
    )
    if "inputs" in meta and inputs_ok:
        undeclared_inputs(reader, fn, {v.name for v in inputs}, path, offset)
    return fn


def undeclared_inputs(reader: FolderReader, fn: PromptFunction, declared: set[str], path: Path, offset: int) -> None:
    """With `inputs:` declared, a variable the template reads that is not one of them is
    an error (a typo would otherwise become a new required input)."""
    extra = sorted(fn.template.variables - declared)
    if not extra:
        return
    lines = variable_lines(fn.template_source, extra)
    for var in extra:
        line = lines.get(var)
        reader.problem(path, f"variable {var!r} is not declared in inputs{suggestion(var, declared)}: "
                             "declare it under inputs, or correct the name", None if line is None else line + offset)
