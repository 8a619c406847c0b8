"""`kernel services`: the services a command can use, as configured: name, kind, provider,
model, whether the API key is there (never the key), and which are the defaults.

The built-in defaults (`local`, `local-embedding`, `sqlite`) are listed when a default
points at them. Nothing is built and no model is called: `kernel config check` builds each
connector.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_OK, exit_codes, print_json

if TYPE_CHECKING:
    from ..hookspecs import ServiceKind
    from ..kernel import Kernel
    from ..services import ServiceRegistry
    from ..settings import ServiceSettings

KINDS: tuple[ServiceKind, ...] = ("chat", "embedding", "memory")


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("services", cmd_services, help="list the configured services: provider, model, key, defaults",
             description="List the services a command can use: name, kind, provider, model, whether its API key is "
                         "set (the key itself is never shown) and which are the defaults. Nothing is built and no "
                         "model is called ('kernel config check' builds each one).",
             epilog=exit_codes({EXIT_CONFIG: "configuration error (missing or invalid config file)"}))


def provider_key_env(provider: str) -> str | None:
    """The variable a provider reads its key from by default (None: it needs no key)."""
    from ..services import Provider

    stack = list(Provider.__subclasses__())
    while stack:
        cls = stack.pop()
        if getattr(cls, "name", None) == provider:
            return cls.key_env
        stack.extend(cls.__subclasses__())
    return None


def key_status(svc: ServiceSettings, known_provider: bool = True) -> tuple[str, str | None]:
    """(`set`, `not set`, `not needed` or `?` (an unknown provider), and where the key is
    read from: `api_key` or a variable). Whether a key that is not set is required (an
    OpenAI-compatible server at a `base_url` often needs none) is `config check`'s call."""
    if svc.api_key is not None:
        return "set", "api_key"
    env = svc.api_key_env or provider_key_env(svc.provider)
    if env is None:
        return ("not needed" if known_provider else "?"), None
    return ("set" if os.environ.get(env) else "not set"), env


def service_rows(kernel: Kernel) -> list[dict[str, Any]]:
    """One row per configured service, per service added in code, and per built-in
    default service a default points at."""
    from ..services import DEFAULT_SERVICES
    from ..settings import ServiceSettings

    registry: ServiceRegistry = kernel.services
    defaults = {kind: registry.default_name(kind) for kind in KINDS}
    rows: list[dict[str, Any]] = []
    configured = dict(kernel.settings.services)
    for kind in KINDS:
        name, entry = DEFAULT_SERVICES[kind]
        if defaults[kind] == name and name not in configured and name not in registry.names():
            configured[name] = ServiceSettings(**entry, kind=kind)
    for name in sorted(set(configured) | set(registry.names())):
        svc = configured.get(name)
        if svc is None:  # added in code (kernel.services.add_service)
            found: ServiceKind | None = next((k for k in KINDS if defaults[k] == name), None)
            instance = registry.get(name, found) if found else None
            rows.append({"name": name, "kind": found, "provider": getattr(instance, "provider", None),
                         "model": getattr(instance, "model", None), "key": "not needed", "key_from": None,
                         "default_for": [k for k in KINDS if defaults[k] == name], "built_in": False,
                         "fallbacks": []})
            continue
        service_kind = registry.kind_of(svc)
        status, source = key_status(svc, service_kind is not None)
        rows.append({
            "name": name,
            "kind": service_kind,
            "provider": svc.provider,
            "model": svc.model,
            "base_url": svc.base_url,
            "key": status,
            "key_from": source,
            "default_for": [k for k in KINDS if defaults[k] == name],
            "built_in": name not in kernel.settings.services,
            "fallbacks": list(svc.fallbacks),
        })
    return rows


async def cmd_services(args: argparse.Namespace, kernel: Kernel) -> int:
    rows = service_rows(kernel)
    if getattr(args, "json", False):
        print_json(rows)
        return EXIT_OK
    table = [["NAME", "KIND", "PROVIDER", "MODEL", "KEY", "DEFAULT"]]
    for row in rows:
        key = row["key"] + (f" (${row['key_from']})" if row["key_from"] not in (None, "api_key") else "")
        default = ", ".join(f"default {k}" for k in row["default_for"])
        if row["built_in"]:
            default = (default + ", " if default else "") + "built in"
        table.append([row["name"], row["kind"] or "?", row["provider"] or "?", row["model"] or "-", key,
                      default or "-"])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
    return EXIT_OK
