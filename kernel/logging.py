"""Logging: secret redaction on every event, and an opt-in structlog configuration.

Every log line passes through `redact`, which masks values of secret-looking keys
(`api_key`, `authorization`, `token`, `cookie`, `x-...-key`, ...), every secret value the
kernel knows of, and common secret shapes (`sk-...`, `Bearer ...`, the password of
`scheme://user:password@host`, `password=...` in key=value DSNs) wherever they appear in a
string.

The kernel knows (registers) a secret when a service is configured: its `api_key`, the
value of the variable its `api_key_env` names (read again each time a `Kernel` is built),
the values of auth-looking headers (`options.default_headers`...), and the passwords of
DSNs and URLs with userinfo. Provider key variables (`OPENAI_API_KEY`, ...) and
`$KERNEL_POSTGRES_DSN` are registered too. `mask_text` is the one function every output
path uses: log lines, `kernel config show`, `KernelSettings.masked()` and `repr()`, errors
and tool results sent to models, and plugin failure records.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
# A key names a secret when its last word is one of these: `api_key`, `OPENAI_API_KEY`,
# `access_token`, `x-api-key`, `db_password`, `Cookie`; or, in a header-style name, `-key`
# and `-auth` (`X-Goog-Key`); not `max_tokens`, `input_tokens`, `primary_key`.
_SECRET_KEYS = re.compile(
    r"(?:^|[_\-.])(?:api[_-]?key|apikey|authorization|token|secret|password|passwd|dsn|credentials?|cookies?)$"
    r"|-(?:key|auth)$",
    re.I,
)


def is_secret_key(key: str) -> bool:
    """Whether a field (or header) named `key` holds a secret (and its value must be masked)."""
    return bool(_SECRET_KEYS.search(key))


# Shapes masked wherever they appear. The user of `scheme://user:password@` and the name of
# `password=` stay readable; only the secret part is replaced.
_SECRET_SHAPES = re.compile(
    r"(?P<whole>sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-+/=~]{8,})"
    r"|://(?P<user>[^/\s:@]*):(?P<url_password>[^/\s@]+)(?=@)"
    r"|(?P<name>(?i:passw(?:or)?d|pwd)\s*=\s*)"
    r"(?P<kv_password>'(?:[^'\\]|\\.)*'|[^\s'\"&;,]+)"
)
_SHAPE_HINTS = ("sk-", "earer", "EARER", "@", "=")  # a text holding none of these has no shape to mask
_PROVIDER_KEY_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")

MIN_SECRET_LENGTH = 6
"""Shorter values are never registered: masking them would mangle ordinary text."""
_COMMON_VALUES = frozenset({
    "password", "passwd", "postgres", "secret", "changeme", "example", "localhost", "default",
    "not-needed", "123456", "12345678", "qwerty", "letmein", "admin123", "none", "null", "true", "false",
})
"""Well-known placeholder values, not registered (they would be masked in every word that
holds them); in a URL or `password=` they are still masked by shape."""

_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "apikey", "key", "bot", "sso-key"})
_MIN_COOKIE_SECRET = 12

_known_secrets: set[str] = set()
_by_length: tuple[str, ...] = ()  # the same, longest first: a secret holding another is masked whole
_secret_envs: set[str] = set(_PROVIDER_KEY_ENV)


def _shape(match: re.Match[str]) -> str:
    if match.group("url_password") is not None:
        return f"://{match.group('user')}:{MASK}"
    if match.group("kv_password") is not None:
        return f"{match.group('name')}{MASK}"
    return MASK


def _forms(value: str) -> Iterator[str]:
    """`value` and the forms it takes in other texts: percent-encoded or decoded (URLs),
    escaped (JSON, which tool results are)."""
    for form in {value, unquote(value)}:
        yield form
        yield quote(form, safe="")
        yield json.dumps(form, ensure_ascii=False)[1:-1]


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it would be logged or shown.

    Values shorter than `MIN_SECRET_LENGTH` and well-known placeholders are ignored."""
    global _by_length
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    added = False
    for form in _forms(value):
        if len(form) >= MIN_SECRET_LENGTH and form.lower() not in _COMMON_VALUES and form not in _known_secrets:
            _known_secrets.add(form)
            added = True
    if added:
        _by_length = tuple(sorted(_known_secrets, key=len, reverse=True))


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def register_secret_env(name: str | None) -> None:
    """Remember that the environment variable `name` holds a secret (a key, a DSN): its
    value is registered now and again each time a `Kernel` is built (`refresh`)."""
    if name:
        _secret_envs.add(name)
        register_secrets(secrets_in(os.environ.get(name), _env_key(name)))


def _env_key(name: str) -> str:
    """How the value of a secret variable is read: a DSN for its password, anything else whole."""
    return name if name.lower().endswith("dsn") else "secret"


def _register_envs() -> None:
    for name in tuple(_secret_envs):
        register_secrets(secrets_in(os.environ.get(name), _env_key(name)))


def passwords_in(text: str) -> list[str]:
    """The passwords `text` holds: of URLs with userinfo (`postgresql://u:PASS@h/db`) and of
    key=value DSNs (`host=h password=PASS`)."""
    if "@" not in text and "=" not in text:
        return []
    found: list[str] = []
    for match in _SECRET_SHAPES.finditer(text):
        if match.group("url_password") is not None:
            found.append(match.group("url_password"))
        elif match.group("kv_password") is not None:
            value = match.group("kv_password")
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.append(value)
    return found


def secrets_in(value: Any, key: str = "") -> Iterator[str]:
    """The secrets in plain configuration data: values of secret-named keys and headers
    (and the credentials of `Bearer xyz`, the values of a `Cookie`), passwords of URLs and
    DSNs anywhere, `SecretStr` values."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from secrets_in(v, str(k))
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from secrets_in(v, key)
    elif hasattr(value, "get_secret_value"):
        yield from secrets_in(value.get_secret_value(), "secret")
    elif isinstance(value, str):
        passwords = passwords_in(value)
        yield from passwords
        # A DSN is secret for its password only: without one, nothing of it is registered.
        if passwords or not key or not is_secret_key(key) or key.lower().endswith("dsn"):
            return
        yield value
        scheme, _, credentials = value.strip().partition(" ")
        if credentials and scheme.lower() in _AUTH_SCHEMES:  # `Bearer xyz`, `Basic dXNlcjpwYXNz`
            yield credentials.strip()
        if key.lower().endswith(("cookie", "cookies")):  # session ids, not `theme=dark`
            yield from (v for v in (pair.partition("=")[2].strip() for pair in value.split(";"))
                        if len(v) >= _MIN_COOKIE_SECRET)


def mask_text(text: str) -> str:
    """`text` with every known secret and secret-shaped token masked."""
    for secret in _by_length:
        if secret in text:
            text = text.replace(secret, MASK)
    for hint in _SHAPE_HINTS:
        if hint in text:
            return _SECRET_SHAPES.sub(_shape, text)
    return text


def mask_data(value: Any, key: str = "", mask: str = MASK) -> Any:
    """Plain data (dicts, lists, strings) with the values of secret-named keys replaced by
    `mask` and every string passed through `mask_text`."""
    if value is not None and key and is_secret_key(key):
        return mask
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_data(v, str(k), mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v, key, mask) for v in value]
    return value


_PLAIN = (int, float, bool, type(None))


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth <= 4:
        if isinstance(value, dict):
            return {k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v, depth + 1))
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(_scrub(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}")
    try:  # any other object is rendered as text: mask it when that text holds a secret
        text = str(value)
    except Exception:
        return value
    masked = mask_text(text)
    return value if masked == text else masked


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
    _register_envs()
    if _explicit:
        return
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        INFO_ENABLED = True  # the application's own configuration decides what is emitted
        return
    import logging

    INFO_ENABLED = logging.getLogger("kernel").isEnabledFor(logging.INFO)


def configure(level: str = "warning", fmt: str = "console", stream: Any = None, *, deferred: bool = False) -> None:
    """Configure structlog globally for the kernel's output (the CLI and the samples call
    this; a library embedding the kernel need not). An application may configure
    structlog itself instead: the kernel's events then pass `redact` before its processors.

    `deferred=True` (the CLI): structlog is imported and configured when the first logger
    is made, so a command that logs nothing does not pay for importing it (~45 ms)."""
    global _explicit, INFO_ENABLED, _generation, _pending
    _explicit = True
    _generation += 1
    _register_envs()
    INFO_ENABLED = _LEVELS.get(level, 30) <= _LEVELS["info"]
    _pending = (level, fmt, stream)
    if not deferred:
        _apply_pending()


_pending: tuple[str, str, Any] | None = None
"""The configuration `configure(deferred=True)` asked for and no logger has needed yet."""


def _apply_pending() -> None:
    global _pending
    if _pending is None:
        return
    level, fmt, stream = _pending
    _pending = None
    import structlog

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


def get_logger(name: str = "kernel") -> Any:
    """A structlog logger for `name` whose events are always redacted first.

    With structlog configured (by `configure()` or by the application) the events go
    through that configuration; otherwise to the standard library logger `name`."""
    _apply_pending()
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
        _apply_pending()  # a deferred configure() (the CLI's) takes effect with the first logger
        structlog = sys.modules.get("structlog")
        configured = structlog is not None and structlog.is_configured()
        # Made again after configure(), or when the application configures structlog later.
        if self._logger is None or self._generation != _generation or configured != self._structlog_configured:
            self._logger = get_logger(self._name)
            self._generation = _generation
            self._structlog_configured = configured
        return getattr(self._logger, method)
