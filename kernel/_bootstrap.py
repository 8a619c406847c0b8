"""Building a kernel from its plugins: the built-in ones, entry points and plugins given
in code are registered through the host, each plugin's registration hooks run (all or
nothing per plugin), plugin folders of the configuration load (function by function,
unless `strict_plugins`), then `kernel_configured` runs. Also `Kernel.register()` after start-up.

What a plugin registered is found by comparing snapshots of the kernel's registries taken
before and after its hooks ran; registering only adds, so taking out the difference undoes
it, whatever other plugins registered before or since.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import PluginError

if TYPE_CHECKING:
    from .kernel import Kernel

BUILTIN_PLUGINS: tuple[str, ...] = (
    "connectors.openai_models",
    "connectors.anthropic_models",
    "connectors.azure_openai",
    "connectors.anthropic_clouds",
    "connectors.presets",
    "connectors.llamacpp",
    "connectors.sentence_transformers_embeddings",
    "connectors.sqlite_store",
    "connectors.pgvector_store",
    "plugins.standard",
)
"""Modules registered as default plugins, exactly like third-party ones."""

REGISTRATION_HOOKS = ("register_connectors", "register_plugins", "register_filters")

Snapshot = tuple[Any, ...]


def bootstrap(kernel: Kernel, *, builtins: bool, load_entry_points: bool | None, plugins: Iterable[object]) -> None:
    """Register the kernel's plugins; a failing one is recorded (or raised under strict)."""
    host, settings = kernel.host, kernel.settings
    added: list[object] = []
    if builtins:
        for module_name in BUILTIN_PLUGINS:
            if module_name == "plugins.standard" and not settings.standard_plugins:
                continue
            module = host.add_module(module_name, trusted=True)
            if module is not None:
                added.append(module)
    autoload = settings.plugin_autoload if load_entry_points is None else load_entry_points
    if autoload:
        from .hookspecs import ENTRY_POINT_GROUP

        added += host.add_entry_points(ENTRY_POINT_GROUP, settings.plugin_allowlist)
    for plugin in plugins:
        try:
            host.add(plugin)
        except PluginError as exc:
            host.fail(host.unique_name(plugin), exc)
            continue
        added.append(plugin)
    registered: dict[str, tuple[Snapshot, Snapshot]] = {}  # by plugin: the registries before and after its hooks
    for plugin in added[register_own(kernel, added):]:
        impls = host.known_impls(plugin)
        if impls is not None and not any(hook in impls for hook in REGISTRATION_HOOKS):
            continue
        before = snapshot(kernel)
        try:
            apply_registrations(kernel, plugin, impls)
        except Exception as exc:
            retract(kernel, before)
            host.fail(host.name_of(plugin), exc)
            host.remove(plugin)
        else:
            if impls is None or "kernel_configured" in impls:  # undone if kernel_configured fails
                registered[host.name_of(plugin)] = (before, snapshot(kernel))
    for directory in settings.plugin_dirs:
        add_plugin_dir(kernel, os.fspath(directory))
    for plugin in host.plugins():
        if not host.implements(plugin, ("kernel_configured",)):
            continue
        name, before = host.name_of(plugin), snapshot(kernel)
        if not host.guard(name, partial(host.call, "kernel_configured", plugin, kernel=kernel)):
            retract(kernel, before)  # what kernel_configured added, then what the plugin's hooks did
            retract(kernel, *registered.get(name, (before, before)))
            host.remove(plugin)
    if settings.mcp.servers:  # one plugin per MCP server, last: nothing starts until it is needed
        from .mcp import attach

        attach(kernel)


def register_own(kernel: Kernel, added: list[object]) -> int:
    """Run the registration hooks of the kernel's own modules at the head of `added` under
    one snapshot (the common case, and the cheap one); returns how many were done. When one
    of them fails, all are undone and 0 is returned: the caller then registers them one by
    one, each all or nothing."""
    host = kernel.host
    own: list[tuple[object, dict[str, list[Any]]]] = []
    for plugin in added:
        impls = host.known_impls(plugin)
        if impls is None or "kernel_configured" in impls:
            break
        own.append((plugin, impls))
    if not own:
        return 0
    before = snapshot(kernel)
    try:
        for plugin, impls in own:
            if any(hook in impls for hook in REGISTRATION_HOOKS):
                apply_registrations(kernel, plugin, impls)
    except Exception:
        retract(kernel, before)
        return 0
    return len(own)


def add_plugin_dir(kernel: Kernel, directory: str) -> None:
    """A folder of `plugin_dirs`: what is valid loads; a folder where nothing loads (or
    that clashes) is recorded in `plugin_problems`, or raised under strict."""
    try:
        kernel.add_plugin(directory)
    except PluginError as exc:
        if kernel.strict:
            raise
        from .errors import PluginLoadError, Problem
        from .plugin_folders import record_problems

        problems = exc.problems if isinstance(exc, PluginLoadError) else [Problem(directory, str(exc))]
        record_problems(kernel, problems)


def register_late(kernel: Kernel, plugin: object, name: str | None = None) -> None:
    """`Kernel.register()`: all or nothing, a failure raised as `PluginError`."""
    host = kernel.host
    if host.is_registered(plugin):
        return
    registered = host.add(plugin, name)
    before = snapshot(kernel)
    try:
        apply_registrations(kernel, plugin)
        host.call("kernel_configured", plugin, kernel=kernel)
    except Exception as exc:
        retract(kernel, before)
        host.remove(plugin)
        if isinstance(exc, PluginError):
            raise
        raise PluginError(f"plugin {registered!r} failed: {type(exc).__name__}: {exc}") from exc


_CONNECTORS: dict[tuple[Any, ...], Any] = {}
"""The connector entries of the kernel's own modules, by (kind, provider, factory, source):
frozen values, shared by every kernel's registry (each registry is the kernel's own)."""


def apply_registrations(kernel: Kernel, plugin: object, impls: dict[str, list[Any]] | None = None) -> None:
    """Run `plugin`'s registration hooks (on an error, the caller undoes what they did);
    `impls`: its hook implementations when it is one of the kernel's own modules."""
    host = kernel.host
    source = host.name_of(plugin)
    trusted = impls is not None
    services = kernel.services
    connectors = services.connectors

    def register_connector(kind: Any, provider: str, factory: Any) -> None:
        key = (kind, provider)
        entry = _CONNECTORS.get((kind, provider, factory, source)) if trusted else None
        if entry is None or (key in connectors and connectors[key].source != source):
            services.add_connector(kind, provider, factory, source)  # checks, and says what is wrong
            if trusted:
                _CONNECTORS[(kind, provider, factory, source)] = connectors[key]
        else:
            connectors[key] = entry

    def register_plugin(obj: object, name: str | None = None, description: str | None = None) -> None:
        kernel.add_plugin(obj, name=name, description=description)

    callbacks = {"register_connectors": register_connector, "register_plugins": register_plugin,
                 "register_filters": kernel.add_filter}
    for hook in REGISTRATION_HOOKS:
        if impls is None:
            host.call(hook, plugin, register=callbacks[hook])
            continue
        for impl in impls.get(hook, ()):
            impl.function(**({"register": callbacks[hook]} if "register" in impl.argnames else {}))


def snapshot(kernel: Kernel) -> Snapshot:
    plugins = {name: (plugin, dict(plugin.functions)) for name, plugin in kernel.plugins.items()}
    return dict(kernel.services.connectors), plugins, {stage: list(f) for stage, f in kernel.filters.items()}


def retract(kernel: Kernel, before: Snapshot, after: Snapshot | None = None) -> None:
    """Take out what was registered between two snapshots (`after`: now), keeping what
    was registered before and since."""
    (connectors, plugins, filters), (new_connectors, new_plugins, new_filters) = before, after or snapshot(kernel)
    for key in new_connectors.keys() - connectors.keys():
        kernel.services.connectors.pop(key, None)
    for name, (plugin, functions) in new_plugins.items():
        for key in functions.keys() - (plugins[name][1].keys() if name in plugins else set()):
            if (fn := plugin.functions.pop(key, None)) is not None:
                kernel._unindex(fn)
        if name not in plugins and not plugin.functions:
            kernel.plugins.pop(name, None)
    for stage, added in new_filters.items():
        for filter in added[len(filters[stage]):]:
            if filter in kernel.filters[stage]:
                kernel.filters[stage].remove(filter)  # in place: the hot path holds the function list
    kernel._unindex(None)
