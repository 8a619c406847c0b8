"""What every command shares: exit codes, the usage error, `--arg name=value` parsing, the
common options, and output helpers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..functions import KernelFunction

__all__ = [
    "COMMON_DEFAULTS",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PLUGINS",
    "EXIT_USAGE",
    "UsageError",
    "common_parser",
    "describe_function",
    "parse_arg",
    "parse_args_list",
    "print_function",
    "print_json",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PLUGINS = 4
EXIT_INTERRUPTED = 130

COMMON_DEFAULTS: dict[str, Any] = {"config": None, "service": None, "plugins": None, "json": False, "debug": False}
"""The common options' values when not given (the parsers suppress their defaults, so that a
value given before the command is not overwritten by the sub-command's parser)."""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


# --- arguments ------------------------------------------------------------------------


def parse_arg(text: str) -> tuple[str, Any]:
    """`name=value` (a string) or `name:=JSON` (a typed value)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"bad --arg {text!r}: expected name=value or name:=JSON")
    typed = name.endswith(":")
    if typed:
        name = name[:-1]
    if not name.isidentifier():
        raise UsageError(f"bad --arg {text!r}: {name!r} is not a parameter name")
    if not typed:
        return name, value
    try:
        return name, json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"bad --arg {text!r}: the value after ':=' is not JSON ({exc.msg})") from None


def parse_args_list(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, value = parse_arg(item)
        if name in out:
            raise UsageError(f"--arg {name} given twice")
        out[name] = value
    return out


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts (defaults suppressed so that a value given before
    the command is not overwritten by the sub-parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="configuration file (default: $KERNEL_CONFIG or ./kernel.toml)")
    group.add_argument("--service", metavar="NAME", default=argparse.SUPPRESS,
                       help="chat service to use by default (overrides default_chat)")
    group.add_argument("--plugins", metavar="DIR", action="append", default=argparse.SUPPRESS,
                       help="load a plugin folder (repeatable)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging and tracebacks")
    return common


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _json_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        if kind == "array" and isinstance(schema.get("items"), dict):
            return f"array[{_json_type(schema['items'])}]"
        return kind
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        return " | ".join(_json_type(o) for o in options if isinstance(o, dict))
    if "enum" in schema:
        return "enum"
    return "any"


def describe_function(fn: KernelFunction) -> dict[str, Any]:
    return {
        "name": fn.fully_qualified_name,
        "plugin": fn.plugin_name,
        "function": fn.name,
        "kind": "prompt" if getattr(fn, "streams", False) else "native",
        "description": fn.description,
        "parameters": [
            {
                "name": p.name,
                "type": _json_type(p.schema),
                "required": p.required,
                **({} if p.required else {"default": p.default}),
                "description": p.description,
                "schema": p.schema,
            }
            for p in fn.parameters
        ],
    }


def print_function(info: dict[str, Any]) -> None:
    print(f"{info['name']}  ({info['kind']})" + (f"  {info['description']}" if info["description"] else ""))
    for p in info["parameters"]:
        state = "required" if p["required"] else f"default {json.dumps(p.get('default'), default=str)}"
        line = f"    {p['name']}: {p['type']}, {state}"
        if p["description"]:
            line += f"  {p['description']}"
        print(line)
