"""Probing services: is each one reachable, is its model there, and what does its capability
profile say, without spending tokens where the provider allows it.

A connector's service offers the probe as `async def probe() -> Reachability` (the
built-in HTTP connectors do: `GET /models` on OpenAI-compatible servers and Azure OpenAI,
`GET /v1/models/{model}` on Anthropic, a token count on Vertex AI, a request Bedrock
rejects before inference). A vector store is probed by listing its collections. A service
without a probe is reported as built, not contacted (`reachable` None).

`probe_services(kernel.services)` probes every configured service (and every service
added in code) concurrently, each within `timeout` seconds; nothing raises: a service
that cannot be built (a missing key, an extra not installed) is a result with `ok` False
and the reason in `detail`. The probe goes around the resilience layer: no retries, no
fallbacks, and the circuit breakers are left alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import KernelError, ServiceNotFoundError
from ..logging import mask_text

if TYPE_CHECKING:
    from ..hookspecs import ServiceKind
    from .registry import ServiceRegistry

__all__ = ["ProbeResult", "Probeable", "Reachability", "probe_service", "probe_services", "profile_facts"]


@dataclass(frozen=True, slots=True)
class Reachability:
    """What a connector's probe found."""

    reachable: bool | None
    """True: the endpoint answered; False: it could not be reached (refused, timed out);
    None: nothing was contacted."""
    ok: bool
    """The service looks usable: it answered, accepted the credentials, and has the model
    when that could be checked."""
    detail: str
    """What was asked and what came back, in one line (never a secret)."""
    model_available: bool | None = None
    """Whether the provider lists (or accepts) the configured model; None: not checked."""


@runtime_checkable
class Probeable(Protocol):
    """A service that can check its provider without spending tokens."""

    async def probe(self) -> Reachability: ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One service, probed."""

    service: str
    kind: str | None
    provider: str | None
    model: str | None
    reachable: bool | None
    ok: bool
    detail: str
    model_available: bool | None = None
    profile: dict[str, Any] | None = None
    """The capability profile (`profile_facts`) of a chat service; None for others."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_facts(profile: object) -> dict[str, Any] | None:
    """A model profile as plain data: structured-output form, tool-choice modes, settings
    (None for anything that is not a `ModelProfile`)."""
    from .profiles import ModelProfile

    if not isinstance(profile, ModelProfile):
        return None
    return {
        "structured_output": profile.structured_output,
        "tool_choices": sorted(profile.tool_choices),
        "settings": dict(sorted(profile.settings.items())),
        "extra_body": profile.extra_body,
    }


def _kind(registry: ServiceRegistry, name: str) -> ServiceKind | None:
    svc = registry.settings.services.get(name)
    if svc is not None:
        return registry.kind_of(svc)
    from .registry import SERVICE_KINDS

    for kind in SERVICE_KINDS:  # a service added in code
        try:
            registry.get(name, kind)
        except ServiceNotFoundError:
            continue
        return kind
    return None


def _line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, KernelError) else f"{type(exc).__name__}: {exc}"
    return mask_text(" ".join(text.split()))


async def probe_service(
    registry: ServiceRegistry, name: str, kind: ServiceKind | None = None, *, timeout: float = 10.0
) -> ProbeResult:
    """Probe the service `name` (its kind found from the configuration when not given)."""
    start = time.perf_counter()
    svc = registry.settings.services.get(name)
    provider = svc.provider if svc is not None else None
    model = svc.model if svc is not None else None

    def result(reachable: bool | None, ok: bool, detail: str, **kw: Any) -> ProbeResult:
        return ProbeResult(name, kind, kw.pop("provider", provider), kw.pop("model", model), reachable, ok,
                           detail, seconds=round(time.perf_counter() - start, 3), **kw)

    kind = kind or _kind(registry, name)
    if kind is None:
        return result(None, False, f"service {name!r}: no connector serves provider {provider!r}"
                      if svc is not None else f"no service named {name!r}")
    try:
        instance: Any = registry.get(name, kind)  # builds it: keys, options, packages; no call yet
    except Exception as exc:
        return result(None, False, _line(exc))
    provider = str(getattr(instance, "provider", provider) or provider or "") or None
    model = str(getattr(instance, "model", "") or "") or model
    facts = profile_facts(getattr(instance, "profile", None)) if kind == "chat" else None
    try:
        async with asyncio.timeout(timeout):
            if isinstance(instance, Probeable):
                found = await instance.probe()
            elif kind == "memory":
                collections = await instance.list_collections()
                found = Reachability(True, True, f"{len(collections)} collection(s)")
            else:
                found = Reachability(None, True, "built; its connector offers no probe")
    except TimeoutError:
        return result(False, False, f"no answer within {timeout:g} s", profile=facts)
    except Exception as exc:
        return result(None, False, _line(exc), profile=facts)
    return result(found.reachable, found.ok, mask_text(found.detail), model_available=found.model_available,
                  profile=facts)


async def probe_services(
    registry: ServiceRegistry, names: Iterable[str] | None = None, *, timeout: float = 10.0, concurrency: int = 8
) -> list[ProbeResult]:
    """Probe `names` (default: every configured service and every service added in code),
    at most `concurrency` at once; results in the order of the names."""
    chosen: Sequence[str] = list(names) if names is not None else registry.names()
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(name: str) -> ProbeResult:
        async with limit:
            return await probe_service(registry, name, timeout=timeout)

    return list(await asyncio.gather(*(one(name) for name in chosen)))
