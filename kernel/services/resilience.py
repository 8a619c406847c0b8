"""The one resilience layer: retries, a deadline, a stream idle timeout, fallbacks, a circuit
breaker and bounded concurrency around every chat and embedding service.

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
* **Deadline.** `ServiceSettings.deadline` (default 600 s) of the primary service bounds
  the whole call, attempts, backoff and fallbacks included -> `DeadlineExceededError`
  naming the service. A backoff that would end past the deadline fails at once instead of
  sleeping.
* **Stream idle timeout.** `ServiceSettings.stream_idle_timeout` (default 120 s) of the
  service being streamed bounds the wait for each event, the first one included (a server
  that sends its headers and then nothing, or drips a byte now and then, cannot hold a
  stream): `ProviderTimeoutError` naming the service, retried and fallen back from like
  any timeout while no event has reached the caller, raised to the caller after that.
* **Circuit breaker.** After `BreakerSettings.failures` consecutive failed calls on a
  service (a call: every attempt of one request on that service; it fails when the
  service is given up, its deadline passes on it, or a stream breaks) the service is
  skipped for `cooldown` seconds: calls go straight to the next service of the chain,
  or raise `CircuitOpenError` naming the service and when it is tried again
  (`retry_after`, seconds). Then one trial call (half-open) decides: success closes the
  breaker, failure opens it for another cooldown; other calls skip the service while the
  trial runs. HTTP 400/422 reject the request, not the service: they count as answers.
  One breaker per (kind, service name) and registry, on the event loop's clock; a
  service's `breaker` settings, else the kernel's `KernelSettings.breaker`.
* **Concurrency.** At most `max_concurrency` calls run at once per service (one
  semaphore per service and registry, shared by every wrapper that reaches the service).
* **Cancellation** propagates untouched; a stream's inner generator is closed.

Embeddings: a fallback must serve the same model with the same dimension (vectors of
another model are not comparable with the ones already stored); a fallback that does not
is a `ConfigurationError` naming both services. Vector stores are not wrapped: a store's
failure is not one another store could answer for.

Services added in code with `add_service` use the settings of a configured service of the
same name when there is one; otherwise the defaults of `ServiceSettings` (no fallbacks,
the 600 s deadline, the 120 s stream idle timeout, 16 concurrent calls) with the
kernel-wide `KernelSettings.retry` and `KernelSettings.breaker`.
Every `ProviderError` that leaves this module names its service, provider and model.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _usage
from ..contents import ChatRequest, ChatResponse, StreamEvent
from ..errors import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    ProviderError,
    ProviderTimeoutError,
    ServiceNotFoundError,
)
from ..logging import LazyLogger

if TYPE_CHECKING:
    from ..hookspecs import ChatModel, EmbeddingModel, ServiceKind
    from ..settings import BreakerSettings, RetrySettings, ServiceSettings
    from .registry import ServiceRegistry

T = TypeVar("T")

log = LazyLogger("kernel.resilience")

_REQUEST_ERRORS = frozenset({400, 422})

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
    breaker: BreakerSettings
    idle_timeout: float | None


class _Circuit:
    """The breaker of one service (per registry and kind), on its event loop's clock."""

    __slots__ = ("failures", "loop", "open_until", "trial")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.failures = 0  # consecutive failed calls
        self.open_until: float | None = None  # loop time; None: closed
        self.trial = False  # a half-open trial call is running

    def enter(self, now: float) -> bool | None:
        """None: open, skip the service. True: this call is the half-open trial. False: closed."""
        if self.open_until is None:
            return False
        if now < self.open_until or self.trial:
            return None
        self.trial = True
        return True

    def succeeded(self, trial: bool) -> None:
        self.failures, self.open_until = 0, None
        if trial:
            self.trial = False

    def failed(self, now: float, trial: bool, settings: BreakerSettings) -> bool:
        """Count a failed call; True when it opened the breaker."""
        if trial:
            self.trial = False
        self.failures += 1
        if trial or self.failures >= settings.failures:
            opened = trial or self.open_until is None
            self.open_until = now + settings.cooldown
            return opened
        return False

    def released(self, trial: bool) -> None:
        """A call ended without telling anything about the service (cancelled, misconfigured)."""
        if trial:
            self.trial = False


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


class _Outcome:
    """What one call on one service told its breaker; reported exactly once."""

    __slots__ = ("circuit", "service", "settled", "target", "trial")

    def __init__(self, service: ResilientService, target: _Target, circuit: _Circuit, trial: bool) -> None:
        self.service, self.target, self.circuit, self.trial = service, target, circuit, trial
        self.settled = False

    def success(self) -> None:
        if not self.settled:
            self.settled = True
            self.circuit.succeeded(self.trial)
            self.trial = False  # the trial is over; a later failure of this call counts as any

    def failure(self) -> None:
        self.settled = True
        now = self.circuit.loop.time()
        if self.circuit.failed(now, self.trial, self.target.breaker):
            log.warning(f"circuit breaker of {self.service.kind} service opened", service=self.target.name,
                        failures=self.circuit.failures, cooldown=self.target.breaker.cooldown)
        self.trial = False

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            self.circuit.released(self.trial)


class ResilientService:
    """A service as the kernel uses it: retried, bounded, with fallbacks, a deadline and a
    circuit breaker."""

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

    def _settings(self, name: str) -> ServiceSettings:
        """A service's settings; the defaults of `ServiceSettings` for one added in code."""
        try:
            return self.registry.service_settings(name, self.kind)
        except ServiceNotFoundError:
            if name not in self.registry.names():
                raise
        from ..settings import ServiceSettings

        return ServiceSettings.model_validate({"provider": "code"})

    def _target(self, name: str) -> _Target:
        svc = self._settings(name)
        kernel = self.registry.settings
        return _Target(
            name, svc.retry or kernel.retry, svc.max_concurrency, svc.breaker or kernel.breaker, svc.stream_idle_timeout
        )

    def chain(self) -> list[_Target]:
        """The primary followed by its fallbacks, in order (resolved once)."""
        if self._chain is None:
            svc = self._settings(self.name)
            names = [self.name, *(n for n in svc.fallbacks if n != self.name)]
            self._deadline = svc.deadline
            self._chain = [self._target(n) for n in dict.fromkeys(names)]
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

    def _enter(self, target: _Target) -> _Outcome | None:
        """The breaker's leave to call `target` (None: it is open, skip the service)."""
        loop = asyncio.get_running_loop()
        key = (self.kind, target.name)
        circuit = self.registry.breakers.get(key)
        if not isinstance(circuit, _Circuit) or circuit.loop is not loop:
            circuit = self.registry.breakers[key] = _Circuit(loop)
        trial = circuit.enter(loop.time())
        return None if trial is None else _Outcome(self, target, circuit, trial)

    def _open_error(self, target: _Target) -> ProviderError:
        circuit = self.registry.breakers[(self.kind, target.name)]
        wait = max(0.0, circuit.open_until - circuit.loop.time()) if circuit.open_until is not None else 0.0
        when = "after the trial call in progress" if wait == 0.0 else f"in {wait:.1f}s"
        error = CircuitOpenError(
            f"{self.kind} service {target.name!r} is skipped: its circuit breaker opened after "
            f"{circuit.failures} consecutive failed calls; it is tried again {when}",
            retry_after=wait,
            retryable=False,
        )
        return self._fill(error, target.name)

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
            if (event := _usage.EVENT.get()) is not None:  # the call's event (kernel.events) counts it
                event.retried(target.name, attempt, delay, type(error).__name__)
        return delay

    def _fall_back(self, failures: list[str], target: _Target, following: _Target, error: ProviderError) -> None:
        """Record why `target` is given up and announce the next service of the chain."""
        status = f" (status {error.status_code})" if error.status_code else ""
        failures.append(f"{target.name}: {error.detail}{status}")
        if (event := _usage.EVENT.get()) is not None:
            event.fell_back(target.name, following.name, f"{type(error).__name__}{status}")
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
        """Run `operation(service)` under the policy: retries, fallbacks, deadline, breaker."""
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
            outcome = self._enter(target)
            if outcome is None:
                error = self._open_error(target)
                if position == last:
                    raise self._note_failures(error, failures) from None
                self._fall_back(failures, target, chain[position + 1], error)
                continue
            try:
                return await self._on(target, position, outcome, operation, until)
            except _GivenUp as given_up:
                if position == last:
                    raise self._note_failures(given_up.error, failures) from None
                self._fall_back(failures, target, chain[position + 1], given_up.error)
            except ProviderError as exc:  # not for another service: the request itself
                raise self._note_failures(exc, failures) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _on(
        self,
        target: _Target,
        position: int,
        outcome: _Outcome,
        operation: Callable[[Any], Awaitable[T]],
        until: float | None,
    ) -> T:
        """Every attempt of one call on one service; `_GivenUp` to move on to the next."""
        chain = self.chain()
        service = self.registry.get(target.name, self.kind)
        try:
            if position:
                self._check_fallback(self.registry.get(chain[0].name, self.kind), service, target.name)
            semaphore = self._semaphore(target)
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with semaphore:
                        result = await operation(service)
                except ProviderError as exc:
                    error = self._fill(exc, target.name)
                    delay = self._next_delay(target, attempt, error)
                    if delay is not None:
                        await self._sleep(delay, until, error)
                        continue
                    if not _falls_back(error):
                        outcome.success()  # the service answered; the request was refused
                        raise error from None
                    outcome.failure()
                    raise _GivenUp(error) from None
                outcome.success()
                return result
        except DeadlineExceededError:
            outcome.failure()
            raise
        except asyncio.CancelledError:
            if until is not None and asyncio.get_running_loop().time() >= until:
                outcome.failure()  # the deadline passed on this service
            raise
        finally:
            outcome.release()


class _GivenUp(Exception):
    """Internal: a service of the chain failed for good; try the next one."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


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
            outcome = self._enter(target)
            if outcome is None:
                error = self._open_error(target)
                if position == last:
                    raise self._note_failures(error, failures)
                self._fall_back(failures, target, chain[position + 1], error)
                continue
            try:
                async with aclosing(self._stream_on(target, outcome, request, until)) as events:
                    async for event in events:
                        yield event
                return
            except _GivenUp as given_up:
                if position == last:
                    raise self._note_failures(given_up.error, failures) from None
                self._fall_back(failures, target, chain[position + 1], given_up.error)
            except ProviderError as exc:
                raise self._note_failures(exc, failures) from None

    async def _stream_on(
        self, target: _Target, outcome: _Outcome, request: ChatRequest, until: float | None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Every attempt of one streamed call on one service; `_GivenUp` to move on."""
        model = self.registry.get(target.name, "chat")
        semaphore = self._semaphore(target)
        attempt = 0
        try:
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
                            event = await self._step(anext(events), until, target.idle_timeout)
                        except StopAsyncIteration:
                            outcome.success()
                            return
                        if not started:
                            started = True
                            outcome.success()  # the service answers
                        yield event
                except ProviderError as exc:
                    error = self._fill(exc, target.name)
                    if started:
                        outcome.failure()  # the stream broke: the service failed this call
                        raise error from None
                    delay = self._next_delay(target, attempt, error)
                    if delay is None:
                        if not _falls_back(error):
                            outcome.success()
                            raise error from None
                        outcome.failure()
                        raise _GivenUp(error) from None
                finally:
                    semaphore.release()
                    closer = getattr(events, "aclose", None)
                    if closer is not None:
                        await closer()
                assert error is not None and delay is not None  # the try block returned or raised otherwise
                await self._sleep(delay, until, error)
        except DeadlineExceededError:
            if not outcome.settled:
                outcome.failure()
            raise
        finally:
            outcome.release()

    async def _step(self, awaitable: Any, until: float | None, idle: float | None = None) -> Any:
        """Await one step of a call, bounded by the deadline and the idle timeout, if any."""
        loop = asyncio.get_running_loop()
        limit = until
        idle_first = False
        if idle is not None and (until is None or loop.time() + idle < until):
            limit, idle_first = loop.time() + idle, True
        if limit is None:
            return await awaitable
        try:
            async with asyncio.timeout_at(limit) as scope:
                return await awaitable
        except TimeoutError as exc:
            if not scope.expired():
                raise
            if idle_first:
                raise ProviderTimeoutError(
                    f"no stream event within {idle}s (stream_idle_timeout of the service)"
                ) from None
            raise self._deadline_error(exc.__context__) from None


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

        events = _usage.recorder(self.registry)  # a sink is on: the call is an embedding event
        if events is None:
            return await self._call(operation)
        return await events.embed(self, len(texts), self._call(operation))  # type: ignore[no-any-return]
