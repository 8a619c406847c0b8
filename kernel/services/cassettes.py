"""Cassettes: model calls recorded as readable JSON, and the normalised form requests are
matched on.

A cassette is one JSON file: ``{"kernel_cassette": 1, "interactions": [...]}``, one
interaction per entry, keys in a fixed order, short values on one line and each embedding
vector on one line, so that a re-recording diffs well in review. An interaction holds what
was asked (`call`: ``chat.complete``, ``chat.stream`` or ``embedding.embed``; the `service`
name; the normalised `request`), what served it (`provider`, `model`) and what came back:
a chat `response`, the stream `events` in order, or the embedding `vectors`, exactly as
returned (floats are written in their shortest exact form: replay gives back the very same
numbers); and an `error` when the provider failed (a `ProviderError`: type, message, status,
Retry-After), so that retries and fallbacks replay as they happened.

**Matching.** A request is matched on its normalised form: the messages (role, text, tool
calls, tool results), the tools offered, the tool choice, the execution settings (the
service's configured defaults under the request's own; `user` is left out: it does not
change the answer), the output schema, the service name and its configured model. Ignored:
the ids of tool calls in the history (renumbered ``call_1``, ``call_2``, ... in order of
appearance), ISO-8601 date-times and UUIDs inside texts (``<timestamp>``, ``<uuid>``),
key order, and the JSON formatting of tool-call arguments. The same request recorded
several times (a retry after a 429, a repeated question) is answered by its recordings in
order; once all were replayed, the last one answers again.

**No secrets.** Every text is passed through `kernel.logging.mask_text` before it is
written (the request and the answer alike), the values of secret-named settings are masked,
and no header, key, URL or other connection detail is ever stored. A live request is
masked the same way before matching, so a prompt holding a key still finds its recording.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from ..errors import ConfigurationError, KernelError, ProviderError
from ..logging import mask_data, mask_text

FORMAT_VERSION = 1
WIDTH = 120
"""A container whose one-line JSON fits in this many columns is written on one line."""

CALLS = ("chat.complete", "chat.stream", "embedding.embed")
IGNORED_SETTINGS = frozenset({"user"})
"""Execution settings that never change the answer, left out of the match."""

_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?(?![\d:])"
)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "requests")


_TRAILER = "\n  ]\n}\n"
_TRAILER_BYTES = _TRAILER.encode()


class ReplayMissError(KernelError):
    """In replay mode, a model call that the cassette does not hold. The message names the
    cassette, the call and the service, and shows the closest recorded request with the
    difference (a unified diff of the normalised requests)."""

    def __init__(self, message: str, *, cassette: Path, request: dict[str, Any],
                 closest: dict[str, Any] | None = None, diff: str = "") -> None:
        self.cassette, self.request, self.closest, self.diff = cassette, request, closest, diff
        super().__init__(message)


# --- normalised requests ------------------------------------------------------------------


def normal_text(text: str) -> str:
    """A text as it is matched and stored: secrets masked, date-times and UUIDs replaced."""
    text = mask_text(text)
    if "-" in text:
        text = _UUID.sub("<uuid>", _TIMESTAMP.sub("<timestamp>", text))
    return text


def _strings(value: Any) -> Any:
    """Plain data with every string masked (schemas: a property named `token` stays)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): _strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strings(v) for v in value]
    return value


def _arguments(text: str) -> str:
    """Tool-call arguments in one canonical JSON form (the model's spacing and key order
    do not matter); text that is not JSON is kept as it is."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return normal_text(text)
    return normal_text(json.dumps(parsed, ensure_ascii=False, sort_keys=True))


def normal_chat(request: ChatRequest, service: str, model: str | None,
                defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The normalised form of a chat request (see the module's documentation)."""
    ids: dict[str, str] = {}

    def call_id(value: str) -> str:
        found = ids.get(value)
        if found is None:
            found = ids[value] = f"call_{len(ids) + 1}"
        return found

    messages: list[dict[str, Any]] = []
    for message in request.messages:
        item: dict[str, Any] = {"role": message.role, "content": normal_text(message.content)}
        if message.tool_calls:
            item["tool_calls"] = [{"id": call_id(c.id), "name": c.name, "arguments": _arguments(c.arguments)}
                                  for c in message.tool_calls]
        if message.tool_call_id is not None:
            item["tool_call_id"] = call_id(message.tool_call_id)
        if message.name is not None:
            item["name"] = message.name
        messages.append(item)
    normal: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        normal["tools"] = [{"name": t.name, "description": normal_text(t.description),
                            "parameters": _strings(t.parameters)} for t in request.tools]
    if request.tool_choice is not None:
        normal["tool_choice"] = {"mode": request.tool_choice.mode, "function": request.tool_choice.function}
    merged = {**(defaults or {}), **request.settings}
    settings = {k: v for k, v in sorted(merged.items()) if k not in IGNORED_SETTINGS}
    if settings:
        normal["settings"] = mask_data(settings)
    if request.output_schema is not None:
        normal["output_schema"] = _strings(request.output_schema)
        normal["output_schema_name"] = request.output_schema_name
    return normal


def normal_embedding(texts: Sequence[str], model: str | None) -> dict[str, Any]:
    return {"model": model, "texts": [normal_text(t) for t in texts]}


def match_key(call: str, service: str, request: dict[str, Any]) -> str:
    """The canonical text two matching requests share."""
    return json.dumps([call, service, request], ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# --- answers to and from plain data ---------------------------------------------------------


def _usage(usage: Usage) -> dict[str, int]:
    return {name: getattr(usage, name) for name in _USAGE_FIELDS}


def _calls(calls: Iterable[ToolCall]) -> list[dict[str, str]]:
    return [{"id": c.id, "name": c.name, "arguments": mask_text(c.arguments)} for c in calls]


def encode_response(response: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": response.message.role, "content": mask_text(response.message.content)}
    if response.message.tool_calls:
        message["tool_calls"] = _calls(response.message.tool_calls)
    return {"message": message, "finish_reason": response.finish_reason, "usage": _usage(response.usage),
            "model": response.model}


def decode_response(data: dict[str, Any]) -> ChatResponse:
    message = data["message"]
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in message.get("tool_calls", ())]
    return ChatResponse(ChatMessage(message["role"], message["content"], calls), data["finish_reason"],
                        Usage(**data["usage"]), data["model"])


def encode_event(event: StreamEvent) -> dict[str, Any]:
    if isinstance(event, TextDelta):
        return {"type": "text", "text": mask_text(event.text)}
    if isinstance(event, ToolCallDelta):
        return {"type": "tool_call", "index": event.index, "id": event.id, "name": event.name,
                "arguments": mask_text(event.arguments)}
    if isinstance(event, UsageEvent):
        return {"type": "usage", "usage": _usage(event.usage)}
    if isinstance(event, StreamEnd):
        return {"type": "end", "finish_reason": event.finish_reason, "model": event.model}
    raise ConfigurationError(f"cannot record the stream event {event!r}")  # pragma: no cover


def decode_event(data: dict[str, Any]) -> StreamEvent:
    kind = data["type"]
    if kind == "text":
        return TextDelta(data["text"])
    if kind == "tool_call":
        return ToolCallDelta(data["index"], data["id"], data["name"], data["arguments"])
    if kind == "usage":
        return UsageEvent(Usage(**data["usage"]))
    return StreamEnd(data["finish_reason"], data["model"])


def encode_vectors(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[float(x) for x in vector] for vector in vectors]


def encode_error(error: ProviderError) -> dict[str, Any]:
    return {"type": type(error).__name__, "message": mask_text(error.detail), "status_code": error.status_code,
            "retry_after": error.retry_after, "retryable": error.retryable}


def decode_error(data: dict[str, Any]) -> ProviderError:
    """The recorded provider error, as the same class of `kernel.errors`."""
    from .. import errors

    cls = getattr(errors, str(data.get("type")), ProviderError)
    if not (isinstance(cls, type) and issubclass(cls, ProviderError)):
        cls = ProviderError
    options = {"retry_after": data.get("retry_after"), "retryable": data.get("retryable")}
    if data.get("status_code") is not None:
        options["status_code"] = data["status_code"]
    try:
        return cls(data.get("message", ""), **options)
    except TypeError:  # a class with another signature (needs a status code it lacks)
        return ProviderError(data.get("message", ""), **options)


# --- the file ------------------------------------------------------------------------------


def dumps(value: Any, level: int = 0) -> str:
    """Readable, stable JSON: keys in the order given, a container that fits on one line
    written on one line, a list of numbers (a vector) always on one line."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, dict | list) or not value or len(flat) + 2 * level <= WIDTH or (
        isinstance(value, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    ):
        return flat
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    return "[\n" + ",\n".join(f"{inner}{dumps(v, level + 1)}" for v in value) + f"\n{pad}]"


def _pretty(call: str, service: str, request: dict[str, Any]) -> list[str]:
    """A request as the lines a diff compares."""
    text = json.dumps({"call": call, "service": service, "request": request}, ensure_ascii=False, indent=2,
                      sort_keys=True)
    return text.splitlines()


class Cassette:
    """The interactions of one cassette file, indexed by match key.

    `mode` is ``"record"`` (calls go to the provider and are written here; the file starts
    empty) or ``"replay"`` (calls are answered from here; a miss raises `ReplayMissError`)."""

    def __init__(self, path: Path, mode: str, interactions: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.mode = mode
        self.interactions: list[dict[str, Any]] = []
        self._index: dict[str, list[dict[str, Any]]] = {}
        self._played: dict[str, int] = {}
        self._served: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, service) -> its last interaction
        self._size: int | None = None  # bytes of the file this cassette last wrote
        for entry in interactions or ():
            self._remember(entry)

    @property
    def recording(self) -> bool:
        return self.mode == "record"

    @classmethod
    def load(cls, path: Path) -> Cassette:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                f"cassette {path} does not exist: record it first (pytest --kernel-record, or KERNEL_REPLAY=record)"
            ) from None
        except (ValueError, OSError) as exc:
            raise ConfigurationError(f"cassette {path} cannot be read: {exc}") from None
        interactions = data.get("interactions") if isinstance(data, dict) else None
        if data.get("kernel_cassette") != FORMAT_VERSION or not isinstance(interactions, list) or not all(
            isinstance(e, dict) and e.get("call") in CALLS and isinstance(e.get("request"), dict)
            and isinstance(e.get("service"), str) for e in interactions
        ):
            raise ConfigurationError(
                f"cassette {path} is not a kernel cassette (version {FORMAT_VERSION}): expected "
                '{"kernel_cassette": 1, "interactions": [{"call", "service", "request", ...}, ...]}'
            )
        return cls(path, "replay", interactions)

    def _remember(self, entry: dict[str, Any]) -> None:
        self.interactions.append(entry)
        self._index.setdefault(match_key(entry["call"], entry["service"], entry["request"]), []).append(entry)
        self._served[(entry["call"].split(".", 1)[0], entry["service"])] = entry

    def served(self, kind: str, service: str) -> dict[str, Any] | None:
        """The last interaction of `service` (what provider and model served it)."""
        return self._served.get((kind, service))

    def take(self, call: str, service: str, request: dict[str, Any]) -> dict[str, Any]:
        """The next recording of this request (the last one again once all were played)."""
        key = match_key(call, service, request)
        found = self._index.get(key)
        if not found:
            raise self.miss(call, service, request)
        played = self._played.get(key, 0)
        self._played[key] = played + 1
        return found[min(played, len(found) - 1)]

    def add(self, entry: dict[str, Any]) -> None:
        """Record one interaction and write it to the file at once: appended in place to
        the file this cassette wrote (one interaction costs the same however long the
        cassette), else the whole file written anew."""
        self._remember(entry)
        if not self._append(entry):
            self.save()

    def _append(self, entry: dict[str, Any]) -> bool:
        if self._size is None or len(self.interactions) < 2:
            return False
        data = f",\n    {dumps(entry, 2)}{_TRAILER}".encode()
        try:
            with self.path.open("r+b") as out:
                end = out.seek(0, os.SEEK_END)
                if end != self._size or end < len(_TRAILER_BYTES):
                    return False  # changed under us
                out.seek(end - len(_TRAILER_BYTES))
                if out.read() != _TRAILER_BYTES:
                    return False
                out.seek(end - len(_TRAILER_BYTES))
                out.write(data)
                self._size = out.tell()
        except OSError:
            return False
        return True

    def save(self) -> None:
        """Write the whole cassette (atomically: a crash leaves the previous file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = ",\n".join("    " + dumps(entry, 2) for entry in self.interactions)
        text = (f'{{\n  "kernel_cassette": {FORMAT_VERSION},\n  "interactions": '
                + (f"[\n{entries}{_TRAILER}" if entries else "[]\n}\n"))
        data = text.encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._size = len(data)

    def miss(self, call: str, service: str, request: dict[str, Any]) -> ReplayMissError:
        """The error of a request the cassette does not hold, with the closest recording."""
        head = (f"cassette {self.path} holds no recording of this {call} request to service {service!r} "
                "(replay mode; record it again with `pytest --kernel-record` or KERNEL_REPLAY=record)")
        if not self.interactions:
            return ReplayMissError(f"{head}; the cassette is empty", cassette=self.path, request=request)
        wanted = _pretty(call, service, request)
        # the most lines in common; among equals, the most characters in common
        ranked: list[tuple[float, int, list[str]]] = []
        best_ratio = -1.0
        for position, entry in enumerate(self.interactions):
            lines = _pretty(entry["call"], entry["service"], entry["request"])
            matcher = difflib.SequenceMatcher(None, lines, wanted, autojunk=False)
            if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
                continue
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best_ratio, ranked = ratio, []
            if ratio == best_ratio:
                ranked.append((ratio, position, lines))
        text = "\n".join(wanted)
        _, best, best_lines = max(ranked, key=lambda item: (
            difflib.SequenceMatcher(None, "\n".join(item[2]), text, autojunk=False).ratio(), -item[1]))
        diff = "\n".join(difflib.unified_diff(best_lines, wanted, f"recorded (interaction {best + 1})",
                                              "this request", lineterm=""))
        message = (f"{head}.\nThe closest recorded request is interaction {best + 1} of "
                   f"{len(self.interactions)}; the difference:\n{diff}")
        return ReplayMissError(message, cassette=self.path, request=request,
                               closest=self.interactions[best]["request"], diff=diff)
