"""The plugin host: one pluggy `PluginManager`, its plugins under readable names, and the
isolation rule every registration follows.

Built-in plugins, third-party packages (entry-point group `orchestration_kernel`) and
plugins given in code all go through `PluginHost.add`. A plugin that cannot be imported,
implements a hook that does not exist (`register_connector`), or raises while it
registers is a *failure*: under `strict` it raises `PluginError`, otherwise it is recorded
in `failures`, logged, and unregistered, and the other plugins go on. The kernel and the
CLI each build a host; the host knows nothing of what the hooks register.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


class PluginHost:
    """One `PluginManager` with the kernel's hook specs, and the failures of its plugins."""

    def __init__(self, *, strict: bool) -> None:
        import pluggy

        from . import hookspecs

        self.strict = strict
        self.failures: list[PluginFailure] = []
        self.pm: pluggy.PluginManager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._hooks = hookspecs.hook_names()

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
        while self.pm.has_plugin(candidate):
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
        close = difflib.get_close_matches(name, sorted(self._hooks), n=1)
        return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")

    def add_module(self, module_name: str) -> object | None:
        """Import and register a module; a failure is handled like any plugin's."""
        try:
            module = importlib.import_module(module_name)
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
        from importlib.metadata import entry_points

        allowed = parse_allowlist(allowlist) if allowlist is not None else None
        added: list[object] = []
        for ep in entry_points(group=group):
            distribution = _distribution(ep)
            name = f"{distribution}:{ep.name}" if distribution else ep.name
            if allowed is not None and not _allows(allowed, distribution, ep.name):
                log.info("plugin_skipped", plugin=name, reason="not in plugin_allowlist")
                continue
            if self.pm.has_plugin(name):
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
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)

    # -- reading ---------------------------------------------------------------------------

    def name_of(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or readable_name(plugin)

    def plugins(self) -> list[object]:
        """Registered plugins, in registration order."""
        return [plugin for _, plugin in self.pm.list_name_plugin()]

    def impls(self, hook: str, plugin: object | None = None) -> Iterator[HookImpl]:
        """Implementations of `hook` (of one plugin when given), in registration order."""
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():  # registration order (pluggy calls them in reverse)
            if plugin is None or impl.plugin is plugin:
                yield impl

    def call(self, hook: str, plugin: object, **arguments: Any) -> None:
        """Call `plugin`'s implementation of `hook` with the arguments it accepts."""
        for impl in self.impls(hook, plugin):
            impl.function(**{name: arguments[name] for name in impl.argnames if name in arguments})

    def is_registered(self, plugin: object) -> bool:
        return self.pm.is_registered(plugin)

