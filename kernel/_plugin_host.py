"""The plugin host: one pluggy `PluginManager`, its plugins under readable names, and the
isolation rule every registration follows.

Built-in plugins, third-party packages (entry-point group `orchestration_kernel`) and
plugins given in code all go through `PluginHost.add`. A plugin that cannot be imported,
implements a hook that does not exist (`register_connector`), or raises while it
registers is a *failure*: under `strict` it raises `PluginError`, otherwise it is recorded
in `failures`, logged, and unregistered, and the other plugins go on. The kernel and the
CLI each build a host; the host knows nothing of what the hooks register.

What is immutable is shared between hosts, so that building a kernel is cheap: the hook
implementations of each module (found once per process), and the scan of the entry points
(done again when `sys.path` or one of its folders changes). The pluggy `PluginManager`
itself is built when first needed (`pm`): until then the built-in modules, whose hooks are
known, are called directly. Each host still has its own plugins and its own manager.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import PluginError
from .logging import LazyLogger

if TYPE_CHECKING:
    import pluggy
    from pluggy import HookImpl

log = LazyLogger("kernel.plugins")


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be imported or registered, and why."""

    name: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} failed: {self.error}"


def _describe(exc: BaseException) -> str:
    from .logging import mask_text  # a plugin's error may quote a key it was given

    return mask_text(str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}")


def readable_name(plugin: object) -> str:
    """A module's name, an entry point's, or `module.Class` of an object (or of a class)."""
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str) and name and not isinstance(plugin, type):
        return name
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def normalize(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503): `Kernel_Echo` == `kernel-echo`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_allowlist(text: str) -> dict[str, set[str] | None]:
    """`"dist, dist2:ep"` -> {distribution: entry-point names (None: all of them)}."""
    allowed: dict[str, set[str] | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        distribution, _, entry_point = item.partition(":")
        key = normalize(distribution.strip())
        if not entry_point.strip():
            allowed[key] = None
        elif allowed.get(key, set()) is not None:
            allowed.setdefault(key, set()).add(entry_point.strip())  # type: ignore[union-attr]
    return allowed


def _distribution(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else None
    return normalize(name) if name else None


def _allows(allowed: dict[str, set[str] | None], distribution: str | None, entry_point: str) -> bool:
    if distribution is None or distribution not in allowed:
        return False
    names = allowed[distribution]
    return names is None or entry_point in names


class Impl(NamedTuple):
    """A hook implementation as the host calls it (pluggy's `HookImpl` has the same two)."""

    function: Callable[..., Any]
    argnames: tuple[str, ...]


_MODULE_IMPLS: dict[str, tuple[ModuleType, dict[str, list[Impl]]]] = {}
"""By module name: the module and its hook implementations (modules only: immutable)."""


def _argnames(function: Callable[..., Any]) -> tuple[str, ...]:
    """The arguments a hook implementation takes (pluggy passes those without defaults)."""
    import inspect

    return tuple(p.name for p in inspect.signature(function).parameters.values()
                 if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def module_impls(module: ModuleType) -> dict[str, list[Impl]]:
    """The hook implementations of a module, by hook name (found once per module object)."""
    cached = _MODULE_IMPLS.get(module.__name__)
    if cached is not None and cached[0] is module:
        return cached[1]
    from .hookspecs import PROJECT_NAME

    marker = f"{PROJECT_NAME}_impl"
    impls: dict[str, list[Impl]] = {}
    for name, value in list(vars(module).items()):
        options = getattr(value, marker, None) if callable(value) else None
        if isinstance(options, dict):
            hook = options.get("specname") or name
            impls.setdefault(hook, []).append(Impl(value, _argnames(value)))
    _MODULE_IMPLS[module.__name__] = (module, impls)
    return impls


_ENTRY_POINTS: dict[str, tuple[tuple[Any, ...], list[tuple[Any, str | None]]]] = {}
"""By group: what the scan depended on (`sys.path` and its folders' modification times),
and each entry point with its normalised distribution name."""


def _path_key() -> tuple[Any, ...]:
    key: list[Any] = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, None))
    return tuple(key)


def scan_entry_points(group: str) -> list[tuple[Any, str | None]]:
    """The entry points of `group` with their distributions, scanned again only when
    `sys.path` or one of its folders changed (an install or uninstall changes its folder)."""
    key = _path_key()
    cached = _ENTRY_POINTS.get(group)
    if cached is not None and cached[0] == key:
        return cached[1]
    from importlib.metadata import entry_points

    found = [(ep, _distribution(ep)) for ep in entry_points(group=group)]
    _ENTRY_POINTS[group] = (key, found)
    return found


class PluginHost:
    """One `PluginManager` with the kernel's hook specs, and the failures of its plugins."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.failures: list[PluginFailure] = []
        self._pm: pluggy.PluginManager | None = None
        self._known: dict[str, ModuleType] = {}
        """Trusted modules registered without the manager (yet), by name, in order."""
        self._known_ids: dict[int, str] = {}

    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy `PluginManager`, built on first use with the modules added so far."""
        pm = self._pm
        if pm is None:
            import pluggy

            from . import hookspecs

            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            for name, module in self._known.items():
                pm.register(module, name=name)
            self._known.clear()
            self._known_ids.clear()
            self._pm = pm
        return pm

    @property
    def _hooks(self) -> frozenset[str]:
        from .hookspecs import hook_names

        return hook_names()

    def _has(self, name: str) -> bool:
        return name in self._known or (self._pm is not None and self._pm.has_plugin(name))

    # -- failures ------------------------------------------------------------------------

    def fail(self, name: str, exc: BaseException) -> None:
        """Raise under strict; otherwise record and log."""
        if self.strict:
            raise PluginError(f"plugin {name!r} failed: {_describe(exc)}") from exc
        failure = PluginFailure(name, _describe(exc))
        self.failures.append(failure)
        log.warning("plugin_failed", plugin=name, error=failure.error)

    def guard(self, name: str, action: Callable[[], Any]) -> bool:
        """Run `action`; a failure is raised under strict, or recorded. True on success."""
        try:
            action()
        except Exception as exc:
            self.fail(name, exc)
            return False
        return True

    # -- registration ----------------------------------------------------------------------

    def unique_name(self, plugin: object, name: str | None = None) -> str:
        base = name or readable_name(plugin)
        candidate, number = base, 1
        while self._has(candidate):
            number += 1
            candidate = f"{base}#{number}"
        return candidate

    def add(self, plugin: object, name: str | None = None) -> str:
        """Register `plugin`; raise PluginError if pluggy refuses it or it implements a hook
        that does not exist. Returns the name it is registered under."""
        registered = self.unique_name(plugin, name)
        try:
            self.pm.register(plugin, name=registered)
        except Exception as exc:  # pluggy's PluginValidationError: a bad hookimpl signature
            raise PluginError(f"plugin {registered!r}: {exc}") from None
        unknown = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or () if caller.name not in self._hooks
        )
        if unknown:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin {registered!r} implements unknown hook(s): "
                              + "; ".join(self._unknown_hook(name) for name in unknown))
        return registered

    def _unknown_hook(self, name: str) -> str:
        import difflib  # only for this message: not with every kernel

        close = difflib.get_close_matches(name, sorted(self._hooks), n=1)
        return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")

    def add_module(self, module_name: str, *, trusted: bool = False) -> object | None:
        """Import and register a module; a failure is handled like any plugin's.
        `trusted`: one of the kernel's own modules, whose hooks need no checking: it is
        called directly until the manager is needed."""
        try:
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            if trusted and self._pm is None and not self._has(module_name):
                module_impls(module)
                self._known[module_name] = module
                self._known_ids[id(module)] = module_name
            else:
                self.add(module, module_name)
        except Exception as exc:
            self.fail(module_name, exc)
            return None
        return module

    def add_entry_points(self, group: str, allowlist: str | None) -> list[object]:
        """Load and register the plugins of entry-point `group`. `allowlist` (None: all)
        names *distributions*, each optionally narrowed to one entry point:
        `"kernel-echo, acme-tools:shout"`. A package that squats an allowed entry-point name
        is not loaded in its place: its distribution is not on the list."""
        allowed = parse_allowlist(allowlist) if allowlist is not None else None
        added: list[object] = []
        for ep, distribution in scan_entry_points(group):
            name = f"{distribution}:{ep.name}" if distribution else ep.name
            if allowed is not None and not _allows(allowed, distribution, ep.name):
                log.info("plugin_skipped", plugin=name, reason="not in plugin_allowlist")
                continue
            if self._has(name):
                continue
            try:
                plugin = ep.load()
                self.add(plugin, name)
            except Exception as exc:
                self.fail(name, exc)
                continue
            added.append(plugin)
        return added

    def remove(self, plugin: object) -> None:
        name = self._known_name(plugin)
        if name is not None:
            del self._known[name], self._known_ids[id(plugin)]
        elif self._pm is not None and self._pm.is_registered(plugin):
            self._pm.unregister(plugin)

    # -- reading ---------------------------------------------------------------------------

    def _known_name(self, plugin: object) -> str | None:
        name = self._known_ids.get(id(plugin))
        return name if name is not None and self._known[name] is plugin else None

    def name_of(self, plugin: object) -> str:
        name = self._known_name(plugin)
        if name is not None:
            return name
        return (self._pm.get_name(plugin) if self._pm is not None else None) or readable_name(plugin)

    def plugins(self) -> list[object]:
        """Registered plugins, in registration order."""
        if self._pm is None:
            return list(self._known.values())
        return [plugin for _, plugin in self._pm.list_name_plugin()]

    def known_impls(self, plugin: object) -> dict[str, list[Impl]] | None:
        """The hook implementations of a trusted module registered without the manager."""
        return module_impls(plugin) if self._known_name(plugin) is not None else None  # type: ignore[arg-type]

    def implements(self, plugin: object, hooks: tuple[str, ...]) -> bool:
        """Whether `plugin` implements any of `hooks` (True when unknown)."""
        if self._known_name(plugin) is not None:
            impls = module_impls(plugin)  # type: ignore[arg-type]
            return any(hook in impls for hook in hooks)
        return True

    def impls(self, hook: str, plugin: object | None = None) -> Iterator[HookImpl | Impl]:
        """Implementations of `hook` (of one plugin when given), in registration order."""
        if plugin is not None and self._known_name(plugin) is not None:
            yield from module_impls(plugin).get(hook, ())  # type: ignore[arg-type]
            return
        if plugin is None:
            for module in list(self._known.values()):
                yield from module_impls(module).get(hook, ())
        if self._pm is None:
            return
        caller = getattr(self._pm.hook, hook)
        for impl in caller.get_hookimpls():  # registration order (pluggy calls them in reverse)
            if plugin is None or impl.plugin is plugin:
                yield impl

    def call(self, hook: str, plugin: object, **arguments: Any) -> None:
        """Call `plugin`'s implementation of `hook` with the arguments it accepts."""
        for impl in self.impls(hook, plugin):
            impl.function(**{name: arguments[name] for name in impl.argnames if name in arguments})

    def is_registered(self, plugin: object) -> bool:
        if self._known_name(plugin) is not None:
            return True
        return self._pm is not None and self._pm.is_registered(plugin)

