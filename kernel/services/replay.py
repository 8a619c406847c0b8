"""Record and replay of model calls, for tests and demos, for every provider.

`replay = "record" | "replay" | "auto"` with `replay_cassette = PATH` (or
`KERNEL_REPLAY`, `KERNEL_REPLAY_CASSETTE`) puts this layer between the resilience layer and
each chat and embedding connector (`ServiceRegistry.get`):

* **record**: every call goes to the provider, and the request and its answer (or its
  provider error) are written to the cassette, which starts empty;
* **replay**: every call is answered from the cassette, with no network and no model: the
  connector is not even built (no key needed); a request the cassette does not hold raises
  `ReplayMissError`, showing the closest recorded request and the difference;
* **auto**: replay when the cassette file exists, else record.

The resilience layer stays above: a recorded 429 is replayed as a 429, then retried (the
retry answered by the next recording of the same request), fallbacks and deadlines behave
as they did. Streams replay as streams, event by event; embeddings give back exactly the
recorded vectors. How requests are matched and what a cassette holds: `services.cassettes`.

One cassette object per file and process: every kernel built with the same cassette
shares it (`open_cassette`); `close_cassette` forgets it (the pytest plugin does, after
each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contents import ChatRequest, ChatResponse, StreamEvent
from ..errors import ConfigurationError, KernelError, ProviderError
from .cassettes import (
    Cassette,
    ReplayMissError,
    decode_error,
    decode_event,
    decode_response,
    encode_error,
    encode_event,
    encode_response,
    encode_vectors,
    normal_chat,
    normal_embedding,
)
from .registry import DEFAULT_SERVICES

if TYPE_CHECKING:
    from ..hookspecs import ServiceKind
    from ..settings import ServiceSettings
    from .registry import ServiceRegistry

MODES = ("off", "record", "replay", "auto")

_OPEN: dict[Path, Cassette] = {}


def open_cassette(path: str | Path | None, mode: str) -> Cassette:
    """The cassette at `path` in `mode` (`record`, `replay` or `auto`), shared by every
    kernel of the process; `auto` becomes `replay` when the file exists, else `record`
    (and takes the cassette already open, whatever its mode)."""
    if mode not in MODES[1:]:
        raise ConfigurationError(f"replay: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if path is None or not str(path):
        raise ConfigurationError(
            f"replay = {mode!r} needs a cassette file: set replay_cassette (KERNEL_REPLAY_CASSETTE)"
        )
    resolved = Path(path).expanduser().absolute()
    cassette = _OPEN.get(resolved)
    if cassette is not None and mode in ("auto", cassette.mode):
        return cassette
    if mode == "auto":
        mode = "replay" if resolved.is_file() else "record"
    cassette = _OPEN[resolved] = Cassette.load(resolved) if mode == "replay" else Cassette(resolved, "record")
    return cassette


def close_cassette(cassette: Cassette) -> None:
    """Forget `cassette` (its file is already written): the next `open_cassette` of its path
    reads the file again, or starts a new recording."""
    if _OPEN.get(cassette.path) is cassette:
        del _OPEN[cassette.path]


class ReplayedService:
    """A chat or embedding service seen through a cassette. Attributes other than the
    model calls (`profile`, `probe`, ...) are the connector's own."""

    kind: ServiceKind

    def __init__(self, registry: ServiceRegistry, name: str, cassette: Cassette,
                 build: Callable[[], Any], built: Callable[[], Any]) -> None:
        self._registry, self.name, self.cassette = registry, name, cassette
        self._build, self._built = build, built
        if cassette.recording:
            build()  # a service that cannot be built says so where it always did

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            inner = self._build()
        except KernelError as exc:  # replaying with no key: the connector cannot be built
            raise AttributeError(f"{name} (the connector of service {self.name!r} cannot be built: {exc})") from None
        return getattr(inner, name)

    def _service(self) -> ServiceSettings | None:
        """The service's configuration (a default service's too); None for one added in code."""
        svc = self._registry.settings.services.get(self.name)
        if svc is None and DEFAULT_SERVICES[self.kind][0] == self.name:
            svc = self._registry.service_settings(self.name, self.kind)
        return svc

    def _describe(self, field: str) -> str:
        """`provider` or `model`: the connector's when it exists, else the cassette's."""
        inner = self._built()
        if inner is not None:
            return str(getattr(inner, field, ""))
        served = self.cassette.served(self.kind, self.name)
        if served is not None:
            return str(served.get(field) or "")
        svc = self._service()
        return str(getattr(svc, field, None) or "") if svc is not None else ""

    @property
    def provider(self) -> str:
        return self._describe("provider")

    @property
    def model(self) -> str:
        return self._describe("model")

    def _configured_model(self, svc: ServiceSettings | None) -> str | None:
        """The model the configuration asks for (part of the match; the connector need not
        be built): the service's `model` setting, or the model of a service added in code."""
        if svc is not None:
            return svc.model
        inner = self._built()
        return None if inner is None else str(getattr(inner, "model", "") or "") or None

    def _entry(self, call: str, request: dict[str, Any], inner: Any) -> dict[str, Any]:
        return {"call": call, "service": self.name, "provider": str(getattr(inner, "provider", "")),
                "model": str(getattr(inner, "model", "")), "request": request}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.cassette.mode} {self.cassette.path}>"


class ReplayChatModel(ReplayedService):
    """A chat service recorded to, or replayed from, a cassette."""

    kind: ServiceKind = "chat"

    def _normal(self, request: ChatRequest) -> dict[str, Any]:
        svc = self._service()
        return normal_chat(request, self.name, self._configured_model(svc), svc.settings if svc is not None else None)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        normal = self._normal(request)
        if not self.cassette.recording:
            entry = self.cassette.take("chat.complete", self.name, normal)
            if "error" in entry:
                raise decode_error(entry["error"])
            return decode_response(entry["response"])
        inner = self._build()
        entry = self._entry("chat.complete", normal, inner)
        try:
            response: ChatResponse = await inner.complete(request)
        except ProviderError as exc:
            entry["error"] = encode_error(exc)
            self.cassette.add(entry)
            raise
        entry["response"] = encode_response(response)
        self.cassette.add(entry)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        normal = self._normal(request)
        if not self.cassette.recording:
            entry = self.cassette.take("chat.stream", self.name, normal)
            for event in entry["events"]:
                yield decode_event(event)
            if "error" in entry:
                raise decode_error(entry["error"])
            if entry.get("complete") is False:
                raise ReplayMissError(
                    f"cassette {self.cassette.path}: the recorded chat.stream of service {self.name!r} was closed "
                    f"by its consumer after {len(entry['events'])} event(s); this replay asks for more",
                    cassette=self.cassette.path, request=normal)
            return
        inner = self._build()
        entry = self._entry("chat.stream", normal, inner)
        events: list[dict[str, Any]] = []
        entry["events"] = events
        ended = False
        try:
            async with aclosing(inner.stream(request)) as stream:
                async for event in stream:
                    events.append(encode_event(event))
                    yield event
            ended = True
        except ProviderError as exc:
            entry["error"] = encode_error(exc)
            ended = True
            raise
        except GeneratorExit:  # the consumer closed the stream early: replay it as far as it went
            entry["complete"] = False
            ended = True
            raise
        finally:
            if ended:
                self.cassette.add(entry)


class ReplayEmbeddingModel(ReplayedService):
    """An embedding service recorded to, or replayed from, a cassette; replay returns the
    recorded vectors exactly."""

    kind: ServiceKind = "embedding"

    @property
    def dimension(self) -> int:
        inner = self._built()
        if inner is None:
            served = self.cassette.served("embedding", self.name)
            vectors = served.get("vectors") if served is not None else None
            if vectors:
                return len(vectors[0])
            svc = self._service()
            if svc is not None and isinstance(svc.options.get("dimension"), int):
                return int(svc.options["dimension"])
            inner = self._build()
        return int(inner.dimension)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        normal = normal_embedding(texts, self._configured_model(self._service()))
        if not self.cassette.recording:
            entry = self.cassette.take("embedding.embed", self.name, normal)
            if "error" in entry:
                raise decode_error(entry["error"])
            return [list(vector) for vector in entry["vectors"]]
        inner = self._build()
        entry = self._entry("embedding.embed", normal, inner)
        try:
            vectors: list[list[float]] = await inner.embed(texts)
        except ProviderError as exc:
            entry["error"] = encode_error(exc)
            self.cassette.add(entry)
            raise
        entry["vectors"] = encode_vectors(vectors)
        self.cassette.add(entry)
        return vectors


def replayed(registry: ServiceRegistry, name: str, kind: ServiceKind, cassette: Cassette,
             build: Callable[[], Any], built: Callable[[], Any]) -> ReplayedService:
    """The service `name` of `kind` (chat or embedding) seen through `cassette`."""
    cls = ReplayChatModel if kind == "chat" else ReplayEmbeddingModel
    return cls(registry, name, cassette, build, built)
