"""The whole plugin contract, on one page.

Plugins (the built-in connectors and standard plugins, and third-party packages found
through the `orchestration_kernel` entry-point group) implement any subset of these hooks
with `@hookimpl`. Hooks run once, while a kernel is built; they fill plain registries and
never sit on the invoke path. A plugin only calls `register(...)`: the kernel owns
de-duplication, naming conflicts and error reporting.

Hook specs grow by adding arguments; an implementation may accept any subset of them.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "orchestration_kernel"
ENTRY_POINT_GROUP = "orchestration_kernel"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_connectors(register: Any) -> None:
    """Offer model providers and stores.

    Call ``register(kind, provider, factory)`` for each: `kind` is ``"chat"``,
    ``"embedding"`` or ``"memory"``; `provider` is the name used in configuration
    (``provider = "openai"``); ``factory(service_name, service_settings, kernel_settings)``
    builds the service. Import the provider's SDK inside the factory, not at module level,
    so that loading the plugin stays cheap.
    """


@hookspec
def register_plugins(register: Any) -> None:
    """Offer kernel functions.

    Call ``register(obj, name=None)`` where `obj` is a module or an object with
    ``@kernel_function`` methods, a single function, a `KernelPlugin`, or a path to a plugin
    folder. `name` is the plugin name (default: the object's or folder's name).
    """


@hookspec
def register_filters(register: Any) -> None:
    """Offer middleware.

    Call ``register(stage, filter)`` with `stage` one of ``"function"``, ``"prompt"``,
    ``"tool_call"``; a filter is ``async def filter(context, next)`` and must call
    ``await next(context)`` to continue, or set ``context.result`` to short-circuit.
    """


@hookspec
def kernel_configured(kernel: Any) -> None:
    """Called once the kernel is built; for plugins that need to see the whole kernel."""
