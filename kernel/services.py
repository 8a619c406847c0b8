"""Service contracts and the registry that builds and picks services by name.

A *connector* is a factory registered through the `register_connectors` hook under a kind
(`chat`, `embedding`, `memory`) and a provider name. A *service* is a named entry of the
configuration (`[services.NAME]`) that says which provider serves it and how. Services
are built lazily, on first use, so provider SDKs load only when needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .contents import ChatRequest, ChatResponse, StreamEvent
from .errors import ConfigurationError, ServiceNotFoundError

if TYPE_CHECKING:
    from .memory_types import Filter, MemoryRecord, SearchHit
    from .settings import KernelSettings, ServiceSettings

ServiceKind = Literal["chat", "embedding", "memory"]
SERVICE_KINDS: tuple[ServiceKind, ...] = ("chat", "embedding", "memory")


@runtime_checkable
class ChatModel(Protocol):
    """A chat model connector: one provider call per request, no tool loop."""

    provider: str
    model: str

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into vectors. `dimension` is known before the first call."""

    provider: str
    model: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@runtime_checkable
class VectorStore(Protocol):
    """Collections of records (id, vector, text, metadata) with vector, keyword and
    hybrid search. Filters are data (see `kernel.memory_types.Filter`), never code."""

    provider: str

    async def create_collection(self, name: str, dimension: int) -> None: ...

    async def list_collections(self) -> list[str]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def upsert(self, collection: str, records: Sequence[MemoryRecord]) -> int: ...

    async def get(self, collection: str, ids: Sequence[str]) -> list[MemoryRecord]: ...

    async def delete(self, collection: str, ids: Sequence[str]) -> int: ...

    async def count(self, collection: str) -> int: ...

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int = 4,
        filter: Filter | None = None,
    ) -> list[SearchHit]: ...

    async def keyword_search(
        self, collection: str, query: str, k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]: ...

    async def hybrid_search(
        self,
        collection: str,
        query: str,
        vector: Sequence[float],
        k: int = 4,
        filter: Filter | None = None,
    ) -> list[SearchHit]: ...

    async def close(self) -> None: ...


ConnectorFactory = Callable[[str, "ServiceSettings", "KernelSettings"], Any]
"""Builds a service: `factory(service_name, service_settings, kernel_settings)`."""


@dataclass(frozen=True, slots=True)
class Connector:
    kind: ServiceKind
    provider: str
    factory: ConnectorFactory
    source: str  # the plugin that registered it


# What runs when the configuration names no service of a kind: no API key needed.
DEFAULT_SERVICES: dict[ServiceKind, tuple[str, dict[str, Any]]] = {
    "chat": ("local", {"provider": "local"}),
    "embedding": ("local-embedding", {"provider": "sentence-transformers"}),
    "memory": ("sqlite", {"provider": "sqlite"}),
}


class ServiceRegistry:
    """Connectors by (kind, provider), services by name, built on first use and cached."""

    def __init__(self, settings: KernelSettings) -> None:
        self.settings = settings
        self.connectors: dict[tuple[ServiceKind, str], Connector] = {}
        self._instances: dict[tuple[ServiceKind, str], Any] = {}  # by (kind, name)
        self._wrapped: dict[str, Any] = {}

    # -- registration ---------------------------------------------------------------

    def add_connector(self, kind: ServiceKind, provider: str, factory: ConnectorFactory, source: str) -> None:
        if kind not in SERVICE_KINDS:
            raise ConfigurationError(
                f"plugin {source!r} registered provider {provider!r} with unknown kind {kind!r}; "
                f"expected one of {', '.join(SERVICE_KINDS)}"
            )
        key = (kind, provider)
        if key in self.connectors and self.connectors[key].source != source:
            raise ConfigurationError(
                f"{kind} provider {provider!r} registered twice: by {self.connectors[key].source!r} "
                f"and by {source!r}"
            )
        self.connectors[key] = Connector(kind, provider, factory, source)

    def add_service(self, name: str, instance: Any, kind: ServiceKind = "chat") -> None:
        """Register a ready-made service object (a scripted test model, a custom store)."""
        self._instances[(kind, name)] = instance
        if kind == "chat":
            self._wrapped.pop(name, None)

    # -- lookup -----------------------------------------------------------------------

    def default_name(self, kind: ServiceKind) -> str:
        configured = {
            "chat": self.settings.default_chat,
            "embedding": self.settings.default_embedding,
            "memory": self.settings.default_memory,
        }[kind]
        if configured:
            return configured
        for k, name in self._instances:  # a service added in code
            if k == kind:
                return name
        for name, svc in self.settings.services.items():
            if self.kind_of(svc) == kind:
                return name
        return DEFAULT_SERVICES[kind][0]

    def kind_of(self, svc: ServiceSettings) -> ServiceKind | None:
        """A configured service's kind: its `kind` setting, else the first of chat,
        embedding, memory that its provider offers (so an `openai` service is a chat
        service unless it says `kind = "embedding"`)."""
        if svc.kind is not None:
            return svc.kind
        for kind in SERVICE_KINDS:
            if (kind, svc.provider) in self.connectors:
                return kind
        return None

    def service_settings(self, name: str, kind: ServiceKind) -> ServiceSettings:
        from .settings import ServiceSettings

        svc = self.settings.services.get(name)
        if svc is not None:
            return svc
        default_name, default = DEFAULT_SERVICES[kind]
        if name == default_name:
            return ServiceSettings(**default)
        known = self.names()
        raise ServiceNotFoundError(
            f"no service named {name!r}; configured services: {', '.join(known) or 'none'} "
            f"(add [services.{name}] to kernel.toml or set KERNEL_SERVICES__{name.upper()}__PROVIDER)"
        )

    def get(self, name: str | None = None, kind: ServiceKind = "chat") -> Any:
        """The raw service instance (built on first use)."""
        name = name or self.default_name(kind)
        instance = self._instances.get((kind, name))
        if instance is not None:
            return instance
        svc = self.service_settings(name, kind)
        connector = self.connectors.get((kind, svc.provider))
        if connector is None:
            providers = sorted(p for k, p in self.connectors if k == kind)
            raise ServiceNotFoundError(
                f"service {name!r}: no {kind} connector for provider {svc.provider!r}; "
                f"available: {', '.join(providers) or 'none'}"
            )
        instance = connector.factory(name, svc, self.settings)
        self._instances[(kind, name)] = instance
        return instance

    def chat(self, name: str | None = None) -> Any:
        """The chat service `name`, wrapped with the kernel's retries, deadline and fallbacks."""
        name = name or self.default_name("chat")
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            from .resilience import ResilientChatModel

            wrapped = self._wrapped[name] = ResilientChatModel(self, name)
        return wrapped

    def embedding(self, name: str | None = None) -> EmbeddingModel:
        return self.get(name, "embedding")  # type: ignore[no-any-return,unused-ignore]

    def memory(self, name: str | None = None) -> VectorStore:
        return self.get(name, "memory")  # type: ignore[no-any-return,unused-ignore]

    def names(self) -> list[str]:
        return sorted(set(self.settings.services) | {name for _, name in self._instances})

    async def aclose(self) -> None:
        for instance in list(self._instances.values()):
            closer = getattr(instance, "aclose", None) or getattr(instance, "close", None)
            if closer is not None:
                result = closer()
                if hasattr(result, "__await__"):
                    await result
        self._wrapped.clear()
