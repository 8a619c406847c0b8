"""`kernel config show`: the effective configuration as TOML (or JSON), secrets masked."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_OK, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    config = register("config", None, help="configuration")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION")
    p = actions.add_parser("show", help="the effective configuration, secrets masked")
    p.set_defaults(handler=cmd_config_show, needs_kernel=False)


async def cmd_config_show(args: argparse.Namespace, kernel: Kernel | None) -> int:
    del kernel
    data = mask_config(args.settings.masked())
    if getattr(args, "json", False):
        print_json(data)
    else:
        print(to_toml(data), end="")
    return EXIT_OK


def mask_config(value: Any, key: str = "") -> Any:
    """Mask secret-looking keys and headers, secret-shaped values and every known secret
    (belt and braces over `KernelSettings.masked()`, which does the same)."""
    from ..logging import mask_data
    from ..settings import SHOWN_MASK

    return mask_data(value, key, SHOWN_MASK)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text of plain data (None values are left out: TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict) and value:
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        scalars = {k: v for k, v in value.items() if not (isinstance(v, dict) and v)}
        nested = {k: v for k, v in value.items() if isinstance(v, dict) and v}
        if scalars or not nested:
            out += f"\n[{name}]\n" + to_toml(scalars, name)
        if nested:
            out += to_toml(nested, name)
    return out
