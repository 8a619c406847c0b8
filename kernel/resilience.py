"""Retries, a deadline, fallbacks and bounded concurrency around a chat service.

Connectors make exactly one provider call per request (their SDK retries are off); this
module owns every retry. Policy:

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

Services added in code with `add_service` have no settings: no fallbacks, no deadline,
the kernel-wide `KernelSettings.retry`, and the default concurrency bound.
Every `ProviderError` that leaves this module names its service, provider and model.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .contents import ChatRequest, ChatResponse, StreamEvent
from .errors import DeadlineExceededError, ProviderError, ServiceNotFoundError
from .logging import LazyLogger

if TYPE_CHECKING:
    from .services import ServiceRegistry
    from .settings import RetrySettings

log = LazyLogger("kernel.resilience")

_REQUEST_ERRORS = frozenset({400, 422})
_DEFAULT_CONCURRENCY = 16

# (registry) -> service name -> (loop, semaphore); a semaphore is bound to one event loop.
_LIMITS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, asyncio.Semaphore]]] = (
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


class ResilientChatModel:
    """A chat service as the kernel uses it: retried, bounded, with fallbacks."""

    def __init__(self, registry: ServiceRegistry, name: str) -> None:
        self.registry, self.name = registry, name
        self._chain: list[_Target] | None = None
        self._deadline: float | None = None

    # -- the wrapped service ---------------------------------------------------------

    @property
    def inner(self) -> Any:
        """The primary service instance (built on first use)."""
        return self.registry.get(self.name, "chat")

    @property
    def provider(self) -> str:
        return str(getattr(self.inner, "provider", ""))

    @property
    def model(self) -> str:
        return str(getattr(self.inner, "model", ""))

    def _target(self, name: str) -> _Target:
        try:
            svc = self.registry.service_settings(name, "chat")
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
                svc = self.registry.service_settings(self.name, "chat")
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
        entry = limits.get(target.name)
        if entry is None or entry[0] is not loop:
            entry = limits[target.name] = (loop, asyncio.Semaphore(target.max_concurrency))
        return entry[1]

    def _describe(self, name: str) -> tuple[str | None, str | None]:
        instance = self.registry.get(name, "chat")
        return getattr(instance, "provider", None), getattr(instance, "model", None)

    def _fill(self, error: ProviderError, name: str) -> ProviderError:
        provider, model = self._describe(name)
        return error.with_service(name, provider, model)

    def _deadline_error(self, cause: BaseException | None) -> DeadlineExceededError:
        provider, model = self._describe(self.name)
        error = DeadlineExceededError(
            f"chat service {self.name!r} (provider={provider}, model={model}) did not finish "
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
                "retrying chat call",
                service=target.name,
                provider=error.provider,
                model=error.model,
                attempt=attempt,
                delay=round(delay, 3),
                status=error.status_code,
                error=type(error).__name__,
            )
        return delay

    @staticmethod
    def _fall_back(failures: list[str], target: _Target, following: _Target, error: ProviderError) -> None:
        """Record why `target` is given up and announce the next service of the chain."""
        failures.append(f"{target.name}: {error.detail} (status {error.status_code})")
        log.warning(
            "falling back to the next chat service",
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

    # -- calls -----------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        chain = self.chain()
        if self._deadline is None:
            return await self._complete(chain, request, None)
        loop = asyncio.get_running_loop()
        until = loop.time() + self._deadline
        try:
            async with asyncio.timeout_at(until) as scope:
                return await self._complete(chain, request, until)
        except TimeoutError as exc:
            if scope.expired():
                raise self._deadline_error(exc.__cause__ or exc.__context__) from None
            raise

    async def _complete(
        self, chain: list[_Target], request: ChatRequest, until: float | None
    ) -> ChatResponse:
        failures: list[str] = []
        last = len(chain) - 1
        for position, target in enumerate(chain):
            model = self.registry.get(target.name, "chat")
            semaphore = self._semaphore(target)
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with semaphore:
                        return await model.complete(request)
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

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
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
