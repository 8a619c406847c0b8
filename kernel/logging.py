"""structlog configuration and secret redaction.

Every log line passes through `redact`, which masks values of secret-looking keys
(`api_key`, `authorization`, `token`, ...), every secret value the kernel knows of (keys
from the configuration and provider environment variables), and common key shapes
(`sk-...`, `Bearer ...`) wherever they appear in a string.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

MASK = "***"
# A key names a secret when its last word is one of these: `api_key`, `OPENAI_API_KEY`,
# `access_token`, `x-api-key`, `db_password`; not `max_tokens` or `input_tokens`.
_SECRET_KEYS = re.compile(
    r"(?:^|[_\-.])(?:api[_-]?key|apikey|authorization|token|secret|password|passwd|dsn|credentials?)$", re.I
)


def is_secret_key(key: str) -> bool:
    """Whether a field named `key` holds a secret (and its value must be masked)."""
    return bool(_SECRET_KEYS.search(key))
_SECRET_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,}"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@))"
)
_PROVIDER_KEY_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")

_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it would be logged."""
    if value and len(value) >= 6:
        _known_secrets.add(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def mask_text(text: str) -> str:
    """`text` with every known secret and secret-shaped token masked."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _SECRET_SHAPES.sub(MASK, text)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}")
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every field of the event."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _format_exc_redacted(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = mask_text(exc)
    return event_dict


# stdlib logging's numeric levels (structlog's filtering loggers take them), without
# importing `logging`: structlog itself is imported on the first configure().
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_configured = False
INFO_ENABLED = False
"""Whether the kernel's info events are emitted: hot paths test it before building an event."""


_explicit = False


_pending: tuple[str, str] | None = None


def configure_default(level: str = "warning", fmt: str = "console") -> None:
    """Called by every `Kernel()`: configure structlog from the kernel's settings unless
    the application configured it (itself, or through `configure`). structlog itself is
    imported and configured on the first log event, not here."""
    global INFO_ENABLED, _pending
    register_secrets(os.environ.get(name) for name in _PROVIDER_KEY_ENV)
    if _explicit:
        return
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured() and not _configured:
        INFO_ENABLED = True  # the application's own configuration decides what is emitted
        return
    if _configured:
        _configure(level, fmt, None)
    else:
        _pending = (level, fmt)
        INFO_ENABLED = _LEVELS.get(level, 30) <= _LEVELS["info"]


def configure(level: str = "warning", fmt: str = "console", stream: Any = None) -> None:
    """Configure structlog for the kernel explicitly; later `Kernel()`s leave it alone.
    An application may configure structlog itself instead, but should keep `redact` in
    its processors."""
    global _explicit
    _explicit = True
    _configure(level, fmt, stream)


def _configure(level: str, fmt: str, stream: Any) -> None:
    global _configured, INFO_ENABLED
    import structlog

    register_secrets(os.environ.get(name) for name in _PROVIDER_KEY_ENV)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"], drop_missing=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            _format_exc_redacted,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 30)),
        # Look sys.stderr up on each use: a stream captured at configure time may be closed later.
        logger_factory=lambda *_: structlog.PrintLogger(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True
    INFO_ENABLED = _LEVELS.get(level, 30) <= _LEVELS["info"]


def get_logger(name: str = "kernel") -> Any:
    global _pending
    import structlog

    if not _configured and not _explicit and not structlog.is_configured():
        level, fmt = _pending or ("warning", "console")
        _pending = None
        _configure(level, fmt, None)

    return structlog.get_logger(name)


class LazyLogger:
    """A logger that configures and imports structlog on its first use, so that a module
    can hold one at import time without paying for structlog."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            self._logger = get_logger(self._name)
        return getattr(self._logger, method)
