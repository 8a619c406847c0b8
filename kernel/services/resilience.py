"""The one resilience layer: retries, a deadline, fallbacks and bounded concurrency around
every chat and embedding service.

Connectors make exactly one provider call per request (their SDK retries are off); this
module owns every retry. The policy is the same for chat and embeddings:

* **Retries.** An error is retried on the same service when `ProviderError.retryable` is
  true (timeouts, dropped connections, HTTP 408/409/429/5xx), up to
  `RetrySettings.max_attempts` attempts. The delay grows exponentially
  (`initial_backoff * multiplier**n`, capped at `max_backoff`) and is spread by
  `jitter`: a delay is drawn uniformly from `[base * (1 - jitter), base]`, so `jitter=1`
  is "full jitter". A provider's `Retry-After` replaces the computed delay; when it asks
  for more than `max_retry_after` seconds the service counts as exhausted at once
  (waiting less would only earn another 429).
* **Fallbacks.** `ServiceSettings.fallbacks` are tried in order when a service is
  exhausted or fails for a reason another service may not share (any `ProviderError`
  except HTTP 400 and 422: those reject the request itself and would fail everywhere).
  A fallback uses its own retry and concurrency settings; its own fallbacks are not
  followed. Configuration errors (a missing key, an extra not installed) are raised, not
  fallen back from.
* **Streaming** retries and falls back only before the first event reached the caller;
  after that an error propagates (the caller already saw part of an answer).
* **Deadline.** `ServiceSettings.deadline` of the primary service bounds the whole call,
  attempts, backoff and fallbacks included -> `DeadlineExceededError` naming the service.
  A backoff that would end past the deadline fails at once instead of sleeping.
* **Concurrency.** At most `max_concurrency` calls run at once per service (one
  semaphore per service and registry, shared by every wrapper that reaches the service).
* **Cancellation** propagates untouched; a stream's inner generator is closed.

Embeddings: a fallback must serve the same model with the same dimension (vectors of
another model are not comparable with the ones already stored); a fallback that does not
is a `ConfigurationError` naming both services. Vector stores are not wrapped: a store's
failure is not one another store could answer for.

Services added in code with `add_service` use the settings of a configured service of the
same name when there is one; otherwise no fallbacks, no deadline, the kernel-wide
`KernelSettings.retry`, and the default concurrency bound.
Every `ProviderError` that leaves this module names its service, provider and model.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..contents import ChatRequest, ChatResponse, StreamEvent
from ..errors import ConfigurationError, DeadlineExceededError, ProviderError, ServiceNotFoundError
from ..logging import LazyLogger

if TYPE_CHECKING:
    from ..hookspecs import ChatModel, EmbeddingModel, ServiceKind
    from ..settings import RetrySettings
    from .registry import ServiceRegistry

T = TypeVar("T")

log = LazyLogger("kernel.resilience")

_REQUEST_ERRORS = frozenset({400, 422})
_DEFAULT_CONCURRENCY = 16

# (registry) -> (kind, service name) -> (loop, semaphore); a semaphore is bound to one event loop.
_LIMITS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], tuple[Any, asyncio.Semaphore]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(slots=True)
class _Target:
    """One service of the chain with the policy that applies to it."""

    name: str
    retry: RetrySettings
    max_concurrency: int


def backoff_delay(
    retry: RetrySettings, attempt: int, retry_after: float | None = None
) -> float | None:
    """Seconds to wait before attempt `attempt + 1` (`attempt` counts from 1), or None when
    the provider's Retry-After exceeds the configured cap."""
    if retry_after is not None:
        if retry_after > retry.max_retry_after:
            return None
        return max(0.0, retry_after)
    base = min(retry.max_backoff, retry.initial_backoff * retry.multiplier ** (attempt - 1))
    return base * (1.0 - retry.jitter * random.random())


def _falls_back(error: ProviderError) -> bool:
    return error.status_code not in _REQUEST_ERRORS


class ResilientService:
    """A service as the kernel uses it: retried, bounded, with fallbacks and a deadline."""

    kind: ServiceKind

    def __init__(self, registry: ServiceRegistry, name: str) -> None:
        self.registry, self.name = registry, name
        self._chain: list[_Target] | None = None
        self._deadline: float | None = None

    # -- the wrapped service ---------------------------------------------------------

    @property
    def inner(self) -> Any:
        """The primary service instance (built on first use)."""
        return self.registry.get(self.name, self.kind)

    @property
    def provider(self) -> str:
        return str(getattr(self.inner, "provider", ""))

    @property
    def model(self) -> str:
        return str(getattr(self.inner, "model", ""))

    def _target(self, name: str) -> _Target:
        try:
            svc = self.registry.service_settings(name, self.kind)
        except ServiceNotFoundError:
            if name not in self.registry.names():
                raise
            return _Target(name, self.registry.settings.retry, _DEFAULT_CONCURRENCY)
        return _Target(name, svc.retry or self.registry.settings.retry, svc.max_concurrency)

    def chain(self) -> list[_Target]:
        """The primary followed by its fallbacks, in order (resolved once)."""
        if self._chain is None:
            names = [self.name]
            try:
                svc = self.registry.service_settings(self.name, self.kind)
            except ServiceNotFoundError:
                svc = None
            if svc is not None:
                names += [n for n in svc.fallbacks if n not in names]
                self._deadline = svc.deadline
            self._chain = [self._target(n) for n in names]
        return self._chain

    def _semaphore(self, target: _Target) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        limits = _LIMITS.get(self.registry)
        if limits is None:
            limits = _LIMITS[self.registry] = {}
        key = (self.kind, target.name)
        entry = limits.get(key)
        if entry is None or entry[0] is not loop:
            entry = limits[key] = (loop, asyncio.Semaphore(target.max_concurrency))
        return entry[1]

    def _describe(self, name: str) -> tuple[str | None, str | None]:
        instance = self.registry.get(name, self.kind)
        return getattr(instance, "provider", None), getattr(instance, "model", None)

    def _fill(self, error: ProviderError, name: str) -> ProviderError:
        provider, model = self._describe(name)
        return error.with_service(name, provider, model)

    def _deadline_error(self, cause: BaseException | None) -> DeadlineExceededError:
        provider, model = self._describe(self.name)
        error = DeadlineExceededError(
            f"{self.kind} service {self.name!r} (provider={provider}, model={model}) did not finish "
            f"within its deadline of {self._deadline}s (retries and fallbacks included)"
        )
        error.__cause__ = cause
        return error

    async def _sleep(self, delay: float, until: float | None, cause: ProviderError) -> None:
        if until is not None and asyncio.get_running_loop().time() + delay >= until:
            raise self._deadline_error(cause)
        await asyncio.sleep(delay)

    def _next_delay(self, target: _Target, attempt: int, error: ProviderError) -> float | None:
        """The backoff before the next attempt on `target`, or None to move on."""
        if not error.retryable or attempt >= target.retry.max_attempts:
            return None
        delay = backoff_delay(target.retry, attempt, error.retry_after)
        if delay is not None:
            log.warning(
                f"retrying {self.kind} call",
                service=target.name,
                provider=error.provider,
                model=error.model,
                attempt=attempt,
                delay=round(delay, 3),
                status=error.status_code,
                error=type(error).__name__,
            )
        return delay

    def _fall_back(self, failures: list[str], target: _Target, following: _Target, error: ProviderError) -> None:
        """Record why `target` is given up and announce the next service of the chain."""
        failures.append(f"{target.name}: {error.detail} (status {error.status_code})")
        log.warning(
            f"falling back to the next {self.kind} service",
            service=target.name,
            next=following.name,
            status=error.status_code,
            error=type(error).__name__,
        )

    @staticmethod
    def _note_failures(error: ProviderError, failures: list[str]) -> ProviderError:
        if failures:
            error.add_note("fallback chain tried: " + "; ".join(failures))
        return error

    def _check_fallback(self, primary: Any, fallback: Any, name: str) -> None:
        """A hook for kinds whose fallbacks must match the primary (embeddings)."""

    # -- calls -----------------------------------------------------------------------

    async def _call(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """Run `operation(service)` under the policy: retries, fallbacks, deadline."""
        chain = self.chain()
        if self._deadline is None:
            return await self._attempts(chain, operation, None)
        loop = asyncio.get_running_loop()
        until = loop.time() + self._deadline
        try:
            async with asyncio.timeout_at(until) as scope:
                return await self._attempts(chain, operation, until)
        except TimeoutError as exc:
            if scope.expired():
                raise self._deadline_error(exc.__cause__ or exc.__context__) from None
            raise

    async def _attempts(
        self, chain: list[_Target], operation: Callable[[Any], Awaitable[T]], until: float | None
    ) -> T:
        failures: list[str] = []
        last = len(chain) - 1
        for position, target in enumerate(chain):
            service = self.registry.get(target.name, self.kind)
            if position:
                self._check_fallback(self.registry.get(chain[0].name, self.kind), service, target.name)
            semaphore = self._semaphore(target)
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with semaphore:
                        return await operation(service)
                except ProviderError as exc:
                    error = self._fill(exc, target.name)
                    delay = self._next_delay(target, attempt, error)
                    if delay is not None:
                        await self._sleep(delay, until, error)
                        continue
                    if position == last or not _falls_back(error):
                        raise self._note_failures(error, failures) from None
                    self._fall_back(failures, target, chain[position + 1], error)
                    break
        raise AssertionError("unreachable")  # pragma: no cover


class ResilientChatModel(ResilientService):
    """A chat service as the kernel uses it."""

    kind: ServiceKind = "chat"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        async def operation(model: ChatModel) -> ChatResponse:
            return await model.complete(request)

        return await self._call(operation)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Retries and falls back only before the first event reached the caller."""
        chain = self.chain()
        until = None
        if self._deadline is not None:
            until = asyncio.get_running_loop().time() + self._deadline
        failures: list[str] = []
        last = len(chain) - 1
        for position, target in enumerate(chain):
            model = self.registry.get(target.name, "chat")
            semaphore = self._semaphore(target)
            attempt = 0
            while True:
                attempt += 1
                started = False
                error: ProviderError | None = None
                delay: float | None = None
                await self._step(semaphore.acquire(), until)
                events: AsyncIterator[StreamEvent] = model.stream(request)
                try:
                    while True:
                        try:
                            event = await self._step(anext(events), until)
                        except StopAsyncIteration:
                            return
                        started = True
                        yield event
                except ProviderError as exc:
                    error = self._fill(exc, target.name)
                    if started:
                        raise error from None
                    delay = self._next_delay(target, attempt, error)
                    if delay is None and (position == last or not _falls_back(error)):
                        raise self._note_failures(error, failures) from None
                finally:
                    semaphore.release()
                    closer = getattr(events, "aclose", None)
                    if closer is not None:
                        await closer()
                assert error is not None  # the try block either returned or raised
                if delay is not None:
                    await self._sleep(delay, until, error)
                    continue
                self._fall_back(failures, target, chain[position + 1], error)
                break

    async def _step(self, awaitable: Any, until: float | None) -> Any:
        """Await one step of a call, bounded by the deadline when there is one."""
        if until is None:
            return await awaitable
        try:
            async with asyncio.timeout_at(until) as scope:
                return await awaitable
        except TimeoutError as exc:
            if scope.expired():
                raise self._deadline_error(exc.__context__) from None
            raise


class ResilientEmbeddingModel(ResilientService):
    """An embedding service as the kernel uses it; `dimension` is the primary's."""

    kind: ServiceKind = "embedding"

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    def chain(self) -> list[_Target]:
        """The chain, its fallbacks checked against the primary when first resolved: a
        misconfigured fallback is an error on the first call, not during an outage."""
        known = self._chain is not None
        chain = super().chain()
        if not known:
            primary = self.registry.get(chain[0].name, self.kind)
            for target in chain[1:]:
                self._check_fallback(primary, self.registry.get(target.name, self.kind), target.name)
        return chain

    def _check_fallback(self, primary: Any, fallback: Any, name: str) -> None:
        same = (getattr(primary, "model", None), primary.dimension) == (getattr(fallback, "model", None),
                                                                          fallback.dimension)
        if not same:
            raise ConfigurationError(
                f"embedding service {self.name!r} falls back to {name!r}, which serves model "
                f"{getattr(fallback, 'model', None)!r} (dimension {fallback.dimension}) instead of "
                f"{getattr(primary, 'model', None)!r} (dimension {primary.dimension}): vectors of another "
                "model cannot be compared with the stored ones; a fallback must serve the same model"
            )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        async def operation(model: EmbeddingModel) -> list[list[float]]:
            return await model.embed(texts)

        return await self._call(operation)
