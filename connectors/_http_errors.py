"""Shared helpers of the HTTP connectors: map SDK and transport exceptions to the kernel's
error tree, read `Retry-After`, build the missing-key error, keep secrets out of messages.

The OpenAI and Anthropic SDKs share the same exception shapes (`APIStatusError`,
`APITimeoutError`, `APIConnectionError`, all built on `httpx2`), so one mapper serves both;
each connector passes its SDK module in.

Waits asked by the provider: `retry-after-ms` (OpenAI, Azure OpenAI) and Azure's
`x-ms-retry-after-ms`, in milliseconds, win over `retry-after` (seconds, or an HTTP date);
the result is `ProviderError.retry_after`, which the resilience layer honours (capped by
`max_retry_after`). A refusal by Azure's content filter (HTTP 400 with error code
`content_filter`) is a non-retryable `ProviderStatusError` whose message says so and names
the flagged categories and severities (never the content).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from kernel.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
)
from kernel.logging import mask_text

_MAX_DETAIL = 400


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `x-ms-retry-after-ms`, else `retry-after`
    (seconds or an HTTP date)."""
    if not headers:
        return None
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` or any other secret the kernel knows (a header value, a URL
    password echoed by the server), shortened to a readable length."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    text = mask_text(text)
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return text


def _body_message(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str) and message:
                return message
        elif isinstance(error, str):
            return error
        message = body.get("message")
        if isinstance(message, str):
            return message
    return None


def content_filter(body: object) -> str | None:
    """None unless `body` is a content-filter refusal (Azure OpenAI's `content_filter` error
    code, or its `ResponsibleAIPolicyViolation` inner code); then the flagged categories,
    e.g. `"hate: high, violence: medium"` (empty when the body names none)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    inner = error.get("innererror")
    inner = inner if isinstance(inner, dict) else {}
    if error.get("code") != "content_filter" and inner.get("code") != "ResponsibleAIPolicyViolation":
        return None
    results = inner.get("content_filter_result") or error.get("content_filter_result") or {}
    flagged = []
    if isinstance(results, dict):
        for category, verdict in results.items():
            if isinstance(verdict, dict) and verdict.get("filtered"):
                severity = verdict.get("severity")
                flagged.append(f"{category}: {severity}" if isinstance(severity, str) else str(category))
    return ", ".join(flagged)


def map_exception(
    exc: BaseException,
    sdk: ModuleType,
    *,
    provider: str,
    model: str,
    secret: str | None = None,
) -> ProviderError | None:
    """The kernel error for an SDK or transport exception, or None if it is neither."""
    import httpx2

    kw: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, sdk.APITimeoutError | httpx2.TimeoutException):
        return ProviderTimeoutError(f"{provider} request timed out", **kw)
    if isinstance(exc, sdk.APIConnectionError | httpx2.TransportError):
        cause = exc.__cause__ if isinstance(exc, sdk.APIConnectionError) else exc
        reason = f": {type(cause).__name__}: {redact(str(cause), secret)}" if cause else ""
        return ProviderConnectionError(f"could not reach {provider}{reason}", **kw)
    if isinstance(exc, sdk.APIStatusError):
        response = exc.response
        flagged = content_filter(exc.body)
        if flagged is not None:
            return ProviderStatusError(
                f"{provider} refused the request: its content filter flagged it" + (f" ({flagged})" if flagged else ""),
                status_code=response.status_code, retryable=False, **kw)
        message = _body_message(exc.body) or getattr(exc, "message", "") or "error"
        return ProviderStatusError(
            f"{provider} request failed: {redact(str(message), secret)}",
            status_code=response.status_code,
            retry_after=parse_retry_after(response.headers),
            **kw,
        )
    if isinstance(exc, sdk.APIError):
        message = _body_message(getattr(exc, "body", None)) or str(exc)
        return ProviderError(f"{provider} request failed: {redact(message, secret)}", **kw)
    return None
