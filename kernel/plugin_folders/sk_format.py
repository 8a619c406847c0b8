"""Semantic Kernel's formats, unchanged: a function folder (`NAME/skprompt.txt` plus an
optional `NAME/config.json`, format versions 1 and 2) and the single-file YAML prompt
(`NAME.yaml`). Templates in SK syntax are translated to Jinja (`sk_syntax`), Handlebars
templates too (`handlebars`, with SK's helpers from `sk_helpers`); `jinja2` templates are
used as they are, with SK's jinja2 helpers. A variable a template uses and nobody declared
renders as empty text, as in SK. `liquid` (SK's .NET release only) is reported; a key SK
does not know (or ignores) is a warning, and the function loads as SK loads it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import KernelError
from ..functions import NAME_PATTERN
from ..prompts import TEMPLATES, InputVariable, PromptFunction
from .declarations import build_input_variable, build_prompt_function, translate_sk
from .reader import FolderReader, Skip, is_mapping_of_mappings, json_key_line, key_line

SK_PROMPT_FILE = "skprompt.txt"
SK_CONFIG_FILE = "config.json"
YAML_SUFFIXES = (".yaml", ".yml")
SK_CONFIG_KEYS = frozenset(
    {"schema", "type", "name", "description", "template_format", "template", "input_variables",
     "output_variable", "execution_settings", "allow_dangerously_set_content",
     # version 1 of the format
     "completion", "input", "default_services"}
)
SK_YAML_KEYS = frozenset(
    {"name", "description", "template_format", "template", "input_variables", "output_variable",
     "execution_settings", "allow_dangerously_set_content"}
)
SK_TEMPLATE_FORMATS = ("semantic-kernel", "handlebars", "jinja2")
SK_INPUT_KEYS = frozenset(
    {"name", "description", "default", "is_required", "json_schema", "allow_dangerously_set_content", "type"}
)

def load_sk_folder(reader: FolderReader, plugin: str, name: str, folder: Path) -> PromptFunction:
    files = {entry_name: path for entry_name, path, is_dir in reader.entries(folder) if not is_dir}
    prompt_path = files.get(SK_PROMPT_FILE)
    config_path = files.get(SK_CONFIG_FILE)
    if prompt_path is None:
        reader.problem(folder, f"missing {SK_PROMPT_FILE}" + (
            "" if config_path else f" (a function folder holds {SK_PROMPT_FILE} and optionally {SK_CONFIG_FILE})"))
        if config_path is not None:  # still check it, to report everything at once
            reader.json_object(config_path, SK_CONFIG_FILE)
        raise Skip
    name = reader.function_name(name, folder)
    config = reader.json_object(config_path, SK_CONFIG_FILE) if config_path is not None else {}
    template = reader.read(prompt_path)
    return sk_function(reader, plugin, name, config, template, prompt_path, config_path or folder,
                            allowed=SK_CONFIG_KEYS, text=None)


def load_sk_yaml(reader: FolderReader, plugin: str, path: Path) -> PromptFunction:
    text = reader.read(path)
    data = reader.load_yaml(text, path, 0)
    if not isinstance(data, dict):
        reader.problem(path, "an SK YAML prompt must be a mapping with at least 'template'")
        raise Skip
    template = data.get("template")
    if not isinstance(template, str):
        message = "missing 'template' (the prompt text)" if template is None else "'template' must be text"
        reader.problem(path, message, key_line(text, "template"))
        raise Skip
    raw_name = data.get("name", path.stem)
    name = reader.function_name(str(raw_name), path)
    offset = _block_scalar_line(text)
    return sk_function(reader, plugin, name, data, template, path, path, allowed=SK_YAML_KEYS, text=text,
                            offset=offset)


def sk_function(reader: FolderReader, plugin: str, name: str, config: dict[str, Any], template: str,
                template_path: Path, config_path: Path, *, allowed: frozenset[str], text: str | None,
                offset: int = 0) -> PromptFunction:
    def line_of(key: str) -> int | None:
        return key_line(text, key) if text is not None else json_key_line(config_path, key)

    problems_before = len(reader.problems)
    for key in config:
        if key not in allowed:
            reader.warn(config_path, f"unknown key {key!r} (ignored, as Semantic Kernel ignores it)", line_of(key))
    template_format = config.get("template_format") or "semantic-kernel"
    if template_format == "liquid":
        reader.problem(config_path, "template_format 'liquid' is not supported (only Semantic Kernel's .NET "
                                  "release renders Liquid); write the template as 'handlebars', 'jinja2' or "
                                  "'semantic-kernel'", line_of("template_format"))
        raise Skip
    if template_format not in SK_TEMPLATE_FORMATS:
        reader.problem(config_path, f"unknown template_format {template_format!r} (expected "
                                  f"{', '.join(repr(f) for f in SK_TEMPLATE_FORMATS)})", line_of("template_format"))
        raise Skip
    description = config.get("description") or ""
    trusted_all = config.get("allow_dangerously_set_content") is True
    inputs = sk_inputs(reader, config, config_path, line_of, trusted_all)
    settings = sk_execution_settings(reader, config, config_path, line_of)
    service = None
    default_services = config.get("default_services")
    if isinstance(default_services, list) and default_services and isinstance(default_services[0], str):
        service = default_services[0]
    if len(reader.problems) > problems_before:
        raise Skip
    declared = {v.name for v in inputs}
    from .sk_helpers import HandlebarsHelpers, Jinja2Helpers, SKSyntaxHelpers  # they need jinja2: not before

    helpers: HandlebarsHelpers | Jinja2Helpers | SKSyntaxHelpers
    if template_format == "semantic-kernel":
        body, helpers = translate_sk(reader, template, template_path, offset), SKSyntaxHelpers()
    elif template_format == "handlebars":
        from .handlebars import HandlebarsError
        from .handlebars import translate as translate_handlebars

        try:
            translation = translate_handlebars(template, frozenset(declared))
        except HandlebarsError as exc:
            reader.problem(template_path, exc.message, exc.line + offset)
            raise Skip from None
        body, helpers = translation.jinja, HandlebarsHelpers(translation.runtime)
    else:
        body, helpers = template, Jinja2Helpers()
    try:
        compiled = TEMPLATES.get(body, str(template_path))
    except KernelError:
        compiled = None  # reported when the function is built
    if compiled is not None:
        for var in sorted(compiled.variables - helpers.names(compiled) - declared):
            inputs.append(InputVariable(var, default="", trusted=trusted_all))  # SK renders it as empty text
    return build_prompt_function(reader,
        body, template_path, offset,
        name=name, plugin_name=plugin, description=str(description), input_variables=inputs,
        execution_settings=settings or None, service=service, helpers=helpers,
    )


def sk_inputs(
    reader: FolderReader, config: dict[str, Any], path: Path, line_of: Any, trusted_all: bool
) -> list[InputVariable]:
    raw = config.get("input_variables")
    legacy = config.get("input")
    if raw is None and isinstance(legacy, dict):
        raw = [
            {"name": p.get("name"), "description": p.get("description", ""),
             **({"default": p["defaultValue"]} if "defaultValue" in p else {})}
            for p in legacy.get("parameters") or [] if isinstance(p, dict)
        ]
    if raw is None:
        return []
    if not isinstance(raw, list):
        reader.problem(path, "input_variables must be a list", line_of("input_variables"))
        return []
    out: list[InputVariable] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            reader.problem(path, "each input variable needs a 'name'", line_of("input_variables"))
            continue
        name = item["name"]

        def line(name: str = name) -> Any:
            return line_of(name)

        if not NAME_PATTERN.match(name):
            reader.problem(path, f"invalid input variable name {name!r}", line())
            continue
        unknown = sorted(str(k) for k in item if k not in SK_INPUT_KEYS)
        if unknown:  # e.g. "required" (SK's .NET samples): SK ignores it, and so does this kernel
            reader.warn(path, f"input variable {name!r}: unknown key(s) {', '.join(unknown)} (ignored, as "
                              "Semantic Kernel ignores them)", line())
        var = build_input_variable(reader, name, item, path, line, sk=True)
        if var is not None:
            var.trusted = var.trusted or trusted_all
            out.append(var)
    return out


def sk_execution_settings(
    reader: FolderReader, config: dict[str, Any], path: Path, line_of: Any
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    completion = config.get("completion")
    if completion is not None:
        if not isinstance(completion, dict):
            reader.problem(path, "completion must be an object", line_of("completion"))
        else:
            out["default"] = sk_settings(completion)
    raw = config.get("execution_settings")
    if raw is None:
        return out
    if not is_mapping_of_mappings(raw):
        reader.problem(path, "execution_settings must map a service id (or 'default') to settings",
                     line_of("execution_settings"))
        return out
    for service, values in raw.items():
        try:
            out[str(service)] = sk_settings(values)
        except ValueError as exc:
            reader.problem(path, f"execution_settings.{service}: {exc}", line_of(str(service)))
    return out

# -- native modules ------------------------------------------------------------------


def sk_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """SK execution settings in our vocabulary.

    `stop_sequences` becomes `stop`; `service_id`/`model_id`/`ai_model_id` are dropped (a
    service is chosen by its key); `extension_data` is merged; `function_choice_behavior`
    becomes the kernel's tool options: `function_choice` ("auto" | "required" | "none"),
    `functions` (`plugin.function` names) and `plugins`.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "stop_sequences":
            out["stop"] = value
        elif key in ("service_id", "model_id", "ai_model_id"):
            continue
        elif key == "extension_data" and isinstance(value, dict):
            out.update(sk_settings(value))
        elif key == "function_choice_behavior":
            out.update(_function_choice(value))
        else:
            out[key] = value
    return out


def _function_choice(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ValueError("function_choice_behavior must be a string or an object")
    kind = str(value.get("type", "auto")).lower()
    if kind not in ("auto", "required", "none"):
        raise ValueError(f"function_choice_behavior type {kind!r} is not one of auto, required, none")
    out: dict[str, Any] = {"function_choice": kind}
    filters = value.get("filters") or {}
    functions = list(value.get("functions") or []) + list(filters.get("included_functions") or [])
    if functions:
        out["functions"] = [str(f).replace("-", ".", 1) for f in functions]
    plugins = filters.get("included_plugins")
    if plugins:
        out["plugins"] = list(plugins)
    return out


def _block_scalar_line(text: str) -> int:
    """The line of `template: |` (the template's lines follow it), else 0."""
    match = re.search(r"^template:\s*[|>][-+0-9]*\s*$", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 0
