"""The whole plugin contract, on one page.

Plugins (the built-in connectors, standard plugins and CLI commands, and third-party
packages found through the `orchestration_kernel` entry-point group) implement any subset
of the hooks at the bottom of this page with `@hookimpl`. Hooks run once, while a kernel
(or the CLI) is built; they fill plain registries and never sit on the invoke path. A
plugin only calls `register(...)`: the kernel owns de-duplication, naming conflicts and
error reporting. One plugin's registrations are all-or-nothing: a plugin that fails half
way registers nothing and is reported by name (`Kernel.plugin_failures`, or a
`PluginError` under `strict_plugins`). A hook implementation whose name is not one of
these hooks (`register_connector`) is reported the same way.

Hook specs grow by adding arguments; an implementation may accept any subset of them.
Everything here is typed: a third-party plugin type-checks against this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

import pluggy

if TYPE_CHECKING:
    import argparse

    from .contents import ChatRequest, ChatResponse, StreamEvent
    from .kernel import Kernel
    from .memory.types import Filter, MemoryRecord, SearchHit
    from .middleware import FunctionContext, PromptContext, ToolCallContext
    from .settings import KernelSettings, ServiceSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "ChatModel",
    "CommandHandler",
    "ConnectorFactory",
    "EmbeddingModel",
    "FunctionFilter",
    "PromptFilter",
    "RegisterCommand",
    "RegisterConnector",
    "RegisterFilter",
    "RegisterPlugin",
    "ServiceKind",
    "ToolCallFilter",
    "VectorStore",
    "hookimpl",
    "hookspec",
]

PROJECT_NAME = "orchestration_kernel"
ENTRY_POINT_GROUP = "orchestration_kernel"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

ServiceKind = Literal["chat", "embedding", "memory"]


# --- what a connector builds ----------------------------------------------------------------


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: one provider call per request. It never runs the tool loop, never
    retries (the kernel's resilience layer does) and never reaches into the kernel."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """An async generator of TextDelta / ToolCallDelta / UsageEvent, then one StreamEnd."""
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into vectors; `dimension` is known before the first call."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@runtime_checkable
class VectorStore(Protocol):
    """Collections of records (id, vector, text, metadata) with vector, keyword and
    hybrid search. Filters are data (`kernel.memory.Filter`), never code."""

    @property
    def provider(self) -> str: ...

    async def create_collection(self, name: str, dimension: int) -> None: ...

    async def list_collections(self) -> list[str]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def upsert(self, collection: str, records: Sequence[MemoryRecord]) -> int: ...

    async def get(self, collection: str, ids: Sequence[str]) -> list[MemoryRecord]: ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int: ...

    async def count(self, collection: str) -> int: ...

    async def search(
        self, collection: str, vector: Sequence[float], k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]: ...

    async def keyword_search(
        self, collection: str, query: str, k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]: ...

    async def hybrid_search(
        self, collection: str, query: str, vector: Sequence[float], k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]: ...

    async def close(self) -> None: ...


class ConnectorFactory(Protocol):
    """Builds the service named `service_name` from its configuration, on first use.

    Import the provider's SDK here, not at module level, so that loading the plugin stays
    cheap. A factory that also accepts a keyword `http_client` lets applications and tests
    inject an HTTP client (`Kernel(http_clients={...})`) into *configured* services."""

    def __call__(
        self, service_name: str, service: ServiceSettings, settings: KernelSettings, /
    ) -> ChatModel | EmbeddingModel | VectorStore: ...


# --- middleware ---------------------------------------------------------------------------

FunctionFilter = Callable[["FunctionContext", Callable[["FunctionContext"], Awaitable[None]]], Awaitable[None]]
"""`async def f(context, next)` around every invocation; call `await next(context)` to go
on, or set `context.result` to short-circuit."""
PromptFilter = Callable[["PromptContext", Callable[["PromptContext"], Awaitable[None]]], Awaitable[None]]
"""Around prompt rendering: may set `context.rendered` or `context.messages`."""
ToolCallFilter = Callable[["ToolCallContext", Callable[["ToolCallContext"], Awaitable[None]]], Awaitable[None]]
"""Around each automatic tool call: may change `context.arguments`, set `context.result`
or `context.terminate`."""


# --- the register callbacks the hooks receive -----------------------------------------------


class RegisterConnector(Protocol):
    def __call__(self, kind: ServiceKind, provider: str, factory: ConnectorFactory) -> None: ...


class RegisterPlugin(Protocol):
    def __call__(self, obj: object, name: str | None = None, description: str | None = None) -> None:
        """`obj`: a module or object with `@kernel_function` members, a function, a list of
        functions, a `KernelPlugin`, or a path to a plugin folder."""


class RegisterFilter(Protocol):
    @overload
    def __call__(self, stage: Literal["function"], filter: FunctionFilter) -> None: ...

    @overload
    def __call__(self, stage: Literal["prompt"], filter: PromptFilter) -> None: ...

    @overload
    def __call__(self, stage: Literal["tool_call"], filter: ToolCallFilter) -> None: ...


CommandHandler = Callable[["argparse.Namespace", "Kernel"], Awaitable[int]]
"""`async def handler(args, kernel) -> exit code`. A command registered with
`needs_kernel=False` gets None for `kernel` (declare it `Kernel | None`)."""


class RegisterCommand(Protocol):
    def __call__(
        self,
        name: str,
        handler: CommandHandler | None,
        *,
        help: str,
        arguments: Callable[[argparse.ArgumentParser], object] | None = None,
        needs_kernel: bool = True,
        **parser_options: Any,
    ) -> argparse.ArgumentParser:
        """Add `kernel NAME`. `arguments(parser)` adds its options; `parser_options` go to
        argparse (`description`, `formatter_class`...). The returned parser may get
        sub-commands (`parser.add_subparsers()`, each leaf setting `handler` and
        `needs_kernel` with `set_defaults`); every parser takes the common options. A
        `handler` of None prints the command's help."""
        ...


# --- the hooks ------------------------------------------------------------------------------


@hookspec
def register_connectors(register: RegisterConnector) -> None:
    """Offer model providers and stores: ``register(kind, provider, factory)`` with `kind`
    ``"chat"``, ``"embedding"`` or ``"memory"`` and `provider` the name used in
    configuration (``provider = "openai"``)."""


@hookspec
def register_plugins(register: RegisterPlugin) -> None:
    """Offer kernel functions: ``register(obj, name=None, description=None)``."""


@hookspec
def register_filters(register: RegisterFilter) -> None:
    """Offer middleware: ``register(stage, filter)`` with `stage` ``"function"``,
    ``"prompt"`` or ``"tool_call"``."""


@hookspec
def register_commands(register: RegisterCommand) -> None:
    """Add `kernel` CLI commands: ``register(name, handler, help=..., arguments=...)``."""


@hookspec
def kernel_configured(kernel: Kernel) -> None:
    """Called once the kernel is built, for plugins that need to see the whole kernel."""


def hook_names() -> frozenset[str]:
    """The names of the hooks above (a misspelled implementation is reported against them)."""
    return frozenset(
        name for name, value in globals().items() if callable(value) and hasattr(value, f"{PROJECT_NAME}_spec")
    )

