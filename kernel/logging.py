"""Logging: secret redaction on every event, and an opt-in structlog configuration.

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


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_explicit = False
_generation = 0  # bumped by configure(): loggers made before it are made again
INFO_ENABLED = False
"""Whether the kernel's info events are emitted: hot paths test it before building an event."""


def refresh() -> None:
    """Re-read whether info events would be emitted (called when a kernel is built).

    The kernel never configures logging by itself: after `configure()` (the CLI does it) its
    level decides; when the application configured structlog, events go through its
    pipeline; otherwise they go to the standard library logger `kernel...`, where the
    application's `logging` configuration (or Python's default: warnings to stderr) decides.
    """
    global INFO_ENABLED
    register_secrets(os.environ.get(name) for name in _PROVIDER_KEY_ENV)
    if _explicit:
        return
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        INFO_ENABLED = True  # the application's own configuration decides what is emitted
        return
    import logging

    INFO_ENABLED = logging.getLogger("kernel").isEnabledFor(logging.INFO)


def configure(level: str = "warning", fmt: str = "console", stream: Any = None) -> None:
    """Configure structlog globally for the kernel's output (the CLI and the samples call
    this; a library embedding the kernel need not). An application may configure
    structlog itself instead: the kernel's events then pass `redact` before its processors."""
    global _explicit, INFO_ENABLED, _generation
    import structlog

    _explicit = True
    _generation += 1
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
    INFO_ENABLED = _LEVELS.get(level, 30) <= _LEVELS["info"]


def get_logger(name: str = "kernel") -> Any:
    """A structlog logger for `name` whose events are always redacted first.

    With structlog configured (by `configure()` or by the application) the events go
    through that configuration; otherwise to the standard library logger `name`."""
    import structlog

    if structlog.is_configured():
        processors = structlog.get_config()["processors"]
        if redact not in processors:
            return structlog.wrap_logger(None, processors=[redact, *processors], logger_factory_args=(name,))
        return structlog.get_logger(name)
    import logging

    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.processors.add_log_level,
            redact,
            structlog.processors.format_exc_info,
            _format_exc_redacted,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


class LazyLogger:
    """A logger that imports structlog on its first use, so that a module can hold one at
    import time without paying for structlog."""

    __slots__ = ("_generation", "_logger", "_name", "_structlog_configured")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None
        self._generation = -1
        self._structlog_configured = False

    def __getattr__(self, method: str) -> Any:
        structlog = sys.modules.get("structlog")
        configured = structlog is not None and structlog.is_configured()
        # Made again after configure(), or when the application configures structlog later.
        if self._logger is None or self._generation != _generation or configured != self._structlog_configured:
            self._logger = get_logger(self._name)
            self._generation = _generation
            self._structlog_configured = configured
        return getattr(self._logger, method)
