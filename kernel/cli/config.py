"""`kernel config show`: the effective configuration as TOML (or JSON), secrets masked.
`kernel config check [--probe]`: every configuration problem a model call would meet,
found before the first call (exit 3 when there is one).

`config check` reports, per service: an unknown provider (with "did you mean"), a provider
that offers no service of the kind asked for, a fallback naming a missing service or one of
another kind, and whatever building its connector raises (a missing key variable, unknown
options, a missing package or model file); then a `default_chat`, `default_embedding` or
`default_memory` naming a missing service. Chat and embedding connectors are built (that
reads keys and options, loads no model and sends nothing); stores are built only with
`--probe`, since building one opens or creates its database. `--probe` also connects to
each configured `base_url` (a TCP connection, no request: an unreachable server is a
problem) and lists each store's collections.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_OK, exit_codes, print_json

if TYPE_CHECKING:
    from ..hookspecs import ServiceKind
    from ..kernel import Kernel
    from ..services import ServiceRegistry

PROBE_TIMEOUT = 5.0
"""Seconds a `--probe` connection to a base_url may take."""


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    config = register("config", None, help="show or check the configuration",
                      epilog=exit_codes({EXIT_CONFIG: "configuration error (config check: a problem found)"}))
    actions = config.add_subparsers(dest="config_command", metavar="ACTION")
    p = actions.add_parser("show", help="the effective configuration, secrets masked",
                           description="The effective configuration (kernel.toml, KERNEL_* variables, .env and "
                                       "defaults merged) as TOML, or JSON with --json; secrets masked.",
                           epilog=exit_codes({EXIT_CONFIG: "missing or invalid config file"}))
    p.set_defaults(handler=cmd_config_show, needs_kernel=False)
    p = actions.add_parser("check", help="find configuration problems before the first model call; exit 3 on any",
                           description=__doc__.split("\n\n", 1)[1],
                           epilog=exit_codes({EXIT_CONFIG: "a configuration problem was found (or the file is "
                                                           "missing or invalid)"}))
    p.add_argument("--probe", action="store_true",
                   help="also connect to each configured base_url and open each store")
    p.set_defaults(handler=cmd_config_check, needs_kernel=True)


async def cmd_config_show(args: argparse.Namespace, kernel: Kernel | None) -> int:
    del kernel
    data = mask_config(args.settings.masked())
    if getattr(args, "json", False):
        print_json(data)
    else:
        print(to_toml(data), end="")
    return EXIT_OK


def _did_you_mean(word: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


async def _reachable(url: str) -> str | None:
    """None when a TCP connection to the URL's host and port opens, else why not."""
    import asyncio
    import contextlib
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return f"base_url {url!r} has no host"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        return f"base_url {url!r}: {exc}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), PROBE_TIMEOUT)
    except TimeoutError:
        return f"base_url {url!r} is unreachable: no answer from {parts.hostname}:{port} in {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return f"base_url {url!r} is unreachable: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


class _Check:
    """The problems of one configuration, found without calling a model."""

    def __init__(self, kernel: Kernel, probe: bool) -> None:
        self.kernel, self.probe = kernel, probe
        self.registry: ServiceRegistry = kernel.services
        self.problems: list[dict[str, Any]] = []

    def kind_of(self, name: str) -> ServiceKind | None:
        from ..services import DEFAULT_SERVICES

        svc = self.kernel.settings.services.get(name)
        if svc is not None:
            return self.registry.kind_of(svc)
        return next((kind for kind, (default, _) in DEFAULT_SERVICES.items() if default == name), None)

    def problem(self, service: str | None, message: str) -> None:
        from ..logging import mask_text

        self.problems.append({"service": service, "message": mask_text(message)})

    async def service(self, name: str) -> dict[str, Any]:
        from ..services import DEFAULT_SERVICES, SERVICE_KINDS

        svc = self.registry.service_settings(name, self.kind_of(name) or "chat")
        kind = self.registry.kind_of(svc)
        row = {"name": name, "kind": kind, "provider": svc.provider, "model": svc.model, "built": False,
               "probed": False}
        before = len(self.problems)
        providers = sorted({provider for _, provider in self.registry.connectors})
        if kind is None:
            self.problem(name, f"service {name!r}: unknown provider {svc.provider!r}"
                               f"{_did_you_mean(svc.provider, providers)}; known providers: {', '.join(providers)}")
        elif (kind, svc.provider) not in self.registry.connectors:
            offered = sorted(p for k, p in self.registry.connectors if k == kind)
            self.problem(name, f"service {name!r}: provider {svc.provider!r} offers no {kind} service; "
                               f"{kind} providers: {', '.join(offered)}")
            kind = None
        built_in = {default for default, _ in DEFAULT_SERVICES.values()}
        for fallback in svc.fallbacks:
            other = self.kind_of(fallback)
            if fallback == name:
                self.problem(name, f"service {name!r} names itself as a fallback")
            elif fallback not in self.kernel.settings.services and fallback not in built_in:
                known = sorted(self.kernel.settings.services)
                self.problem(name, f"service {name!r}: fallback {fallback!r} is not a configured service"
                                   f"{_did_you_mean(fallback, known)}")
            elif kind is not None and other is not None and other != kind:
                self.problem(name, f"service {name!r}: fallback {fallback!r} is a {other} service, not {kind}")
        if kind in SERVICE_KINDS and (kind != "memory" or self.probe):
            await self._build(name, kind, row)
        if self.probe and svc.base_url:
            row["probed"] = True
            reason = await _reachable(svc.base_url)
            if reason:
                self.problem(name, f"service {name!r}: {reason}")
        row["ok"] = len(self.problems) == before
        return row

    async def _build(self, name: str, kind: ServiceKind, row: dict[str, Any]) -> None:
        from ..errors import KernelError

        try:
            instance = self.registry.get(name, kind)  # the connector: keys, options, packages; no call
            row["built"] = True
            if kind == "memory":  # only with --probe: building a store opens it
                row["probed"] = True
                await instance.list_collections()  # type: ignore[union-attr]
        except KernelError as exc:
            self.problem(name, " ".join(str(exc).split()))
        except Exception as exc:  # a third-party connector's own error
            self.problem(name, f"service {name!r}: {type(exc).__name__}: {exc}")

    async def run(self) -> list[dict[str, Any]]:
        from ..services import DEFAULT_SERVICES

        settings = self.kernel.settings
        names = list(settings.services)
        in_code = set(self.registry.names()) - set(settings.services)  # added by `configure`, not configured
        defaults: tuple[tuple[ServiceKind, str], ...] = (
            ("chat", "default_chat"), ("embedding", "default_embedding"), ("memory", "default_memory"))
        for kind, field in defaults:
            value = getattr(settings, field)
            other = self.kind_of(value) if value else None
            built_in = {default for default, _ in DEFAULT_SERVICES.values()}
            if value and value not in settings.services and value not in in_code and value not in built_in:
                self.problem(None, f"{field} = {value!r} names no configured service"
                                   f"{_did_you_mean(value, sorted(settings.services))}; configured: "
                                   f"{', '.join(sorted(settings.services)) or 'none'}")
            elif value and other is not None and other != kind:
                self.problem(None, f"{field} = {value!r} is a {other} service, not {kind}")
            default = self.registry.default_name(kind)
            if default == DEFAULT_SERVICES[kind][0] and default not in names and default not in in_code:
                names.append(default)  # the built-in default that commands will use
        return [await self.service(name) for name in names]


async def cmd_config_check(args: argparse.Namespace, kernel: Kernel) -> int:
    check = _Check(kernel, bool(args.probe))
    rows = await check.run()
    source = getattr(kernel.settings, "config_file", None)
    if getattr(args, "json", False):
        print_json({"ok": not check.problems, "config_file": str(source) if source else None,
                    "probe": check.probe, "services": rows, "problems": check.problems})
        return EXIT_CONFIG if check.problems else EXIT_OK
    print(f"configuration: {source or 'no file (defaults and KERNEL_* variables)'}")
    by_service: dict[str | None, list[str]] = {}
    for item in check.problems:
        by_service.setdefault(item["service"], []).append(item["message"])
    for row in rows:
        what = f"{row['kind'] or '?'} service, provider {row['provider']}" + (
            f", model {row['model']}" if row["model"] else "")
        print(f"{'ok' if row['ok'] else 'error':<6}{row['name']}  ({what})")
        for message in by_service.get(row["name"], []):
            print(f"        {message}")
    for message in by_service.get(None, []):
        print(f"error {message}")
    if check.problems:
        import sys

        print(f"error: {len(check.problems)} configuration problem(s)", file=sys.stderr)
        return EXIT_CONFIG
    print("ok: no problems found" + ("" if check.probe else " (--probe also connects to base URLs and stores)"))
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
