"""Events as rows: plain JSON data, secrets masked, content kept or dropped.

Runs in the journal's writer thread, never on the hot path, in one pass per event: every
value becomes JSON data, every string passes `kernel.logging.mask_text` and the value of
a secret-named key (`api_key`, `password`, `authorization`, ...) is replaced whole, as
`mask_data` does: the journal never holds a secret the kernel knows of. The same pass
collects the content's text for the full-text index.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from ..logging import MASK, is_secret_key, mask_text

if TYPE_CHECKING:
    from .events import Event

__all__ = ["MAX_TEXT", "clean", "event_row", "plain", "start_row"]

MAX_TEXT = 100_000
"""A longer text field of a log event is cut (with a note); plan step outputs never are
(a resumed plan needs them whole)."""

_SCALARS = (bool, int, float, type(None))
_LEAVES = frozenset(_SCALARS)  # exact types only (a subclass of int may be an enum: cleaned the long way)
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str, check_circular=False).encode
_SECRET_KEYS: dict[str, bool] = {}


def _secret(key: str) -> bool:
    known = _SECRET_KEYS.get(key)
    if known is None:
        if len(_SECRET_KEYS) > 10_000:
            _SECRET_KEYS.clear()
        known = _SECRET_KEYS[key] = is_secret_key(key)
    return known


def clean(value: Any, key: str = "", texts: list[str] | None = None, cut: bool = True, depth: int = 0) -> Any:
    """`value` as JSON data, masked (see the module); its strings also go to `texts`."""
    if key and value is not None and _secret(key):
        return MASK
    if isinstance(value, str):
        if cut and len(value) > MAX_TEXT:
            value = value[:MAX_TEXT] + f"... [cut: {len(value):,} characters in all]"
        value = mask_text(value)
        if texts is not None and value:
            texts.append(value)
        return value
    if isinstance(value, _SCALARS):
        return value
    if depth > 32:
        return "..."
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():  # scalar leaves inline: most values of an event are
            name = k if type(k) is str else str(k)
            if type(v) in _LEAVES and not (v is not None and _secret(name)):
                out[name] = v
            else:
                out[name] = clean(v, name, texts, cut, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [clean(v, key, texts, cut, depth + 1) for v in value]
    return clean(_as_data(value), key, texts, cut, depth + 1)


def _as_data(value: Any) -> Any:
    """A message, tool call, dataclass or pydantic model as its fields; else its text."""
    if not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            try:
                return to_dict()
            except Exception:
                pass
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                return dump(mode="json")
            except Exception:
                pass
        if dataclasses.is_dataclass(value):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def plain(value: Any) -> Any:
    """`value` as JSON data, masked (OpenTelemetry attributes)."""
    return clean(value)


def _data(event: Event, content: bool, texts: list[str] | None) -> str:
    data = clean(event.data(), cut=False)
    if content and event.content:
        whole = event.kind == "step"  # a resumed plan needs its outputs whole
        for key, value in event.content_data().items():
            data[key] = clean(value, key, texts, not whole)
    elif event.content_data():
        data["content"] = False  # prompts, arguments and answers were not journaled
    return _ENCODE(data) if data else "{}"


def _text(value: str | None) -> str | None:
    return None if value is None else mask_text(value)


def event_row(event: Event, content: bool, texts: list[str] | None = None) -> tuple[Any, ...]:
    """The `events` row of an ended event (its content's text appended to `texts`)."""
    usage = event.usage
    return (event.id, event.run_id, event.parent_id, event.kind, mask_text(event.name), event.function,
            event.started, event.duration, event.status, event.service, event.model,
            usage.input_tokens if usage else 0, usage.output_tokens if usage else 0,
            event.cost if event.priced else None, 1 if event.priced else 0, usage.requests if usage else 0,
            event.error_type, _text(event.error), _data(event, content, texts))


def start_row(event: Event, content: bool) -> tuple[Any, ...]:
    """The `events` row of an event that has started (a run, a plan, a step): `running`."""
    data = _data(event, content, None) if event.kind in ("plan", "step") else "{}"
    return (event.id, event.run_id, event.parent_id, event.kind, mask_text(event.name), event.function,
            event.started, None, "running", event.service, event.model, 0, 0, None, 1, 0, None, None, data)
