"""Services: the registry that builds and picks chat models, embedding models and vector
stores by name; the one resilience layer every call goes through (retries, Retry-After,
fallbacks, deadline, circuit breaker, bounded concurrency); prices and costs.

    registry     ServiceRegistry: connectors by (kind, provider), services by (kind, name)
    resilience   ResilientChatModel / ResilientEmbeddingModel / ResilientVectorStore
    profiles     ModelProfile and the one policy for execution settings
    providers    Provider: key lookup, the SDK client, an injectable http_client
    pricing      cost of a call from its usage and the configured prices
    probing      probe_services: reachable? the model there? the capability profile (no tokens spent)
    replay       record/replay of model calls under the resilience layer (`replay` setting)
    cassettes    the cassette file, and the normalised form requests are matched on
    pytest_plugin  the `kernel_cassette` fixture and `--kernel-record` (entry point `kernel_replay`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from ..hookspecs import ChatModel, ConnectorFactory, EmbeddingModel, ServiceKind, VectorStore
    from .cassettes import Cassette, ReplayMissError
    from .pricing import cost, format_cost
    from .probing import Probeable, ProbeResult, Reachability, probe_service, probe_services, profile_facts
    from .profiles import NEUTRAL_SETTINGS, ModelProfile
    from .providers import Provider
    from .registry import DEFAULT_SERVICES, SERVICE_KINDS, Connector, ServiceRegistry
    from .replay import ReplayChatModel, ReplayEmbeddingModel, close_cassette, open_cassette
    from .resilience import ResilientChatModel, ResilientEmbeddingModel, backoff_delay

__all__ = [
    "DEFAULT_SERVICES",
    "NEUTRAL_SETTINGS",
    "SERVICE_KINDS",
    "Cassette",
    "ChatModel",
    "Connector",
    "ConnectorFactory",
    "EmbeddingModel",
    "ModelProfile",
    "ProbeResult",
    "Probeable",
    "Provider",
    "Reachability",
    "ReplayChatModel",
    "ReplayEmbeddingModel",
    "ReplayMissError",
    "ResilientChatModel",
    "ResilientEmbeddingModel",
    "ServiceKind",
    "ServiceRegistry",
    "VectorStore",
    "backoff_delay",
    "close_cassette",
    "cost",
    "format_cost",
    "open_cassette",
    "probe_service",
    "probe_services",
    "profile_facts",
]

_LOCATIONS = {
    **dict.fromkeys(("ChatModel", "ConnectorFactory", "EmbeddingModel", "ServiceKind", "VectorStore"), "..hookspecs"),
    **dict.fromkeys(("cost", "format_cost"), "pricing"),
    **dict.fromkeys(("NEUTRAL_SETTINGS", "ModelProfile"), "profiles"),
    "Provider": "providers",
    **dict.fromkeys(("Probeable", "ProbeResult", "Reachability", "probe_service", "probe_services", "profile_facts"),
                    "probing"),
    **dict.fromkeys(("ResilientChatModel", "ResilientEmbeddingModel", "backoff_delay"), "resilience"),
    **dict.fromkeys(("DEFAULT_SERVICES", "SERVICE_KINDS", "Connector", "ServiceRegistry"), "registry"),
    **dict.fromkeys(("Cassette", "ReplayMissError"), "cassettes"),
    **dict.fromkeys(("ReplayChatModel", "ReplayEmbeddingModel", "close_cassette", "open_cassette"), "replay"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
