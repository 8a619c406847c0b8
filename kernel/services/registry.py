"""Service contracts and the registry that builds and picks services by name.

A *connector* is a factory registered through the `register_connectors` hook under a kind
(`chat`, `embedding`, `memory`) and a provider name. A *service* is a named entry of the
configuration (`[services.NAME]`) that says which provider serves it and how. Services
are built lazily, on first use, so provider SDKs load only when needed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from ..errors import ConfigurationError, ServiceNotFoundError

if TYPE_CHECKING:
    from ..hookspecs import ChatModel, ConnectorFactory, EmbeddingModel, ServiceKind, VectorStore
    from ..settings import KernelSettings, ServiceSettings
    from .resilience import ResilientChatModel, ResilientEmbeddingModel

SERVICE_KINDS: tuple[ServiceKind, ...] = ("chat", "embedding", "memory")


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

    def __init__(self, settings: KernelSettings, *, http_clients: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.connectors: dict[tuple[ServiceKind, str], Connector] = {}
        self._instances: dict[tuple[ServiceKind, str], Any] = {}  # by (kind, name)
        self._wrapped: dict[tuple[ServiceKind, str], Any] = {}
        # the circuit breaker of each service, by (kind, name); kept by `services.resilience`
        self.breakers: dict[tuple[ServiceKind, str], Any] = {}
        self._http_clients: dict[str, Any] = dict(http_clients or {})
        # record/replay (`services.replay`): the cassette every chat and embedding call goes
        # through, under the resilience layer; None when `replay` is off
        self._cassette: Any = None
        self._replayed: dict[tuple[ServiceKind, str], Any] = {}
        replay = getattr(settings, "replay", "off")
        if replay != "off":
            from .replay import open_cassette

            self._cassette = open_cassette(getattr(settings, "replay_cassette", None), replay)

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
        self._wrapped.pop((kind, name), None)
        self.breakers.pop((kind, name), None)  # a new service starts with a closed breaker

    def set_http_client(self, name: str, client: Any) -> None:
        """Give the connector of the configured service `name` this HTTP client (an
        `httpx2.AsyncClient` for the openai and anthropic connectors) when it is built.
        The service keeps its configuration: retries, fallbacks, deadline."""
        self._http_clients[name] = client
        for key in [key for key in self._instances if key[1] == name]:
            del self._instances[key]
        for key in [key for key in self.breakers if key[1] == name]:
            del self.breakers[key]

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
        from ..settings import ServiceSettings

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

    @overload
    def get(self, name: str | None = None, kind: Literal["chat"] = "chat") -> ChatModel: ...

    @overload
    def get(self, name: str | None, kind: Literal["embedding"]) -> EmbeddingModel: ...

    @overload
    def get(self, name: str | None, kind: Literal["memory"]) -> VectorStore: ...

    @overload
    def get(self, name: str | None, kind: ServiceKind) -> ChatModel | EmbeddingModel | VectorStore: ...

    def get(self, name: str | None = None, kind: ServiceKind = "chat") -> Any:
        """The service instance (built on first use), typed by `kind`. Under record/replay
        (the `replay` setting) a chat or embedding service comes seen through the cassette
        (`services.replay`): the layer the resilience layer calls, above the connector."""
        name = name or self.default_name(kind)
        if self._cassette is not None and kind != "memory":
            return self._replaying(name, kind)
        return self._instance(name, kind)

    def _replaying(self, name: str, kind: ServiceKind) -> Any:
        replayed = self._replayed.get((kind, name))
        if replayed is None:
            from .replay import replayed as replay_layer

            if (kind, name) not in self._instances:
                self._connector(name, kind, self.service_settings(name, kind))  # an unknown service fails here
            replayed = self._replayed[(kind, name)] = replay_layer(
                self, name, kind, self._cassette, lambda: self._instance(name, kind),
                lambda: self._instances.get((kind, name)))
        return replayed

    def _connector(self, name: str, kind: ServiceKind, svc: ServiceSettings) -> Connector:
        connector = self.connectors.get((kind, svc.provider))
        if connector is None:
            providers = sorted(p for k, p in self.connectors if k == kind)
            raise ServiceNotFoundError(
                f"service {name!r}: no {kind} connector for provider {svc.provider!r}; "
                f"available: {', '.join(providers) or 'none'}"
            )
        return connector

    def _instance(self, name: str, kind: ServiceKind) -> Any:
        """The connector's own service instance, built on first use."""
        instance = self._instances.get((kind, name))
        if instance is not None:
            return instance
        svc = self.service_settings(name, kind)
        connector = self._connector(name, kind, svc)
        client = self._http_clients.get(name)
        if client is None:
            instance = connector.factory(name, svc, self.settings)
        elif "http_client" in inspect.signature(connector.factory).parameters:
            instance = connector.factory(name, svc, self.settings, http_client=client)  # type: ignore[call-arg]
        else:
            raise ConfigurationError(
                f"service {name!r}: the {svc.provider!r} connector (from {connector.source}) does not accept "
                "an injected http_client"
            )
        self._instances[(kind, name)] = instance
        return instance

    def chat(self, name: str | None = None) -> ResilientChatModel:
        """The chat service `name`, wrapped with the kernel's retries, deadline and fallbacks."""
        from .resilience import ResilientChatModel

        name = name or self.default_name("chat")
        wrapped = self._wrapped.get(("chat", name))
        if wrapped is None:
            wrapped = self._wrapped[("chat", name)] = ResilientChatModel(self, name)
        return wrapped

    def embedding(self, name: str | None = None) -> ResilientEmbeddingModel:
        """The embedding service `name`, wrapped like chat services (retries, fallbacks...)."""
        from .resilience import ResilientEmbeddingModel

        name = name or self.default_name("embedding")
        wrapped = self._wrapped.get(("embedding", name))
        if wrapped is None:
            wrapped = self._wrapped[("embedding", name)] = ResilientEmbeddingModel(self, name)
        return wrapped

    def memory(self, name: str | None = None) -> VectorStore:
        """The vector store `name` (stores are not wrapped: see `resilience`)."""
        return self.get(name, "memory")

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
