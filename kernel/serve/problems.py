"""Errors as JSON problem details (RFC 9457), with the kernel's error type.

Every error response is `application/problem+json`:

    {"type": "urn:orchestration-kernel:error:ArgumentError", "title": "invalid argument",
     "status": 422, "detail": "parameter 'b' of math.add: missing required argument",
     "instance": "/v1/functions/math.add/invoke", "error_type": "ArgumentError",
     "parameter": "b", "function": "math.add"}

`error_type` is the class of the kernel error (`KernelError` subclasses, see
`kernel.errors`), or `HttpError` for a problem of the HTTP request itself. Details are
masked (known secrets), and for server-side failures (5xx) also stripped of URLs, paths
and addresses; an error that is not a kernel error is never described: the response says
"internal error" with an incident id, and the log has the rest. No traceback is ever sent.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from ..errors import (
    ApprovalDeniedError,
    ArgumentError,
    BudgetExceededError,
    CircuitOpenError,
    DeadlineExceededError,
    FilterError,
    FunctionNotFoundError,
    KernelError,
    PlanError,
    PlanExecutionError,
    PlanValidationError,
    ProviderError,
    ProviderTimeoutError,
    ServiceNotFoundError,
)
from ..logging import LazyLogger, mask_text

__all__ = ["PROBLEM_TYPE", "HttpProblem", "problem_body", "problem_for", "safe_detail"]

log = LazyLogger("kernel.serve")

PROBLEM_TYPE = "urn:orchestration-kernel:error:"
MEDIA_TYPE = "application/problem+json"

# (kernel error class, status, title): the first that matches wins.
_STATUS: tuple[tuple[type[KernelError], int, str], ...] = (
    (ArgumentError, 422, "invalid argument"),
    (FilterError, 400, "invalid filter"),
    (FunctionNotFoundError, 404, "no such function"),
    (PlanValidationError, 422, "invalid plan"),
    (PlanExecutionError, 500, "a plan step failed"),
    (PlanError, 422, "cannot plan"),
    (ApprovalDeniedError, 403, "not approved"),
    (BudgetExceededError, 422, "call budget exceeded"),
    (DeadlineExceededError, 504, "deadline exceeded"),
    (ProviderTimeoutError, 504, "the model did not answer in time"),
    (CircuitOpenError, 503, "the model service is unavailable"),
    (ProviderError, 502, "the model service failed"),
    (ServiceNotFoundError, 500, "service not configured"),
)


class HttpProblem(Exception):
    """A problem of the HTTP request itself (auth, limits, a bad body): raised by the
    server's code, answered as problem details."""

    def __init__(self, status: int, title: str, detail: str = "", *, headers: Mapping[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.headers = dict(headers or {})
        self.extensions = extensions


def safe_detail(text: str, status: int) -> str:
    """A detail fit for a client: secrets masked; for 5xx also no URL, path or address."""
    if status >= 500:
        from ..chat import short_error

        return short_error(text).removeprefix("error: ")
    return mask_text(" ".join(text.split()) if "\n" not in text else text.strip())


def problem_for(exc: BaseException, instance: str = "") -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of the problem details answering `exc`."""
    if isinstance(exc, HttpProblem):
        body = problem_body(exc.status, exc.title, safe_detail(exc.detail, exc.status), "HttpError", instance)
        body.update(exc.extensions)
        return exc.status, body, exc.headers
    if isinstance(exc, KernelError):
        status, title = 500, "the kernel failed"
        for kind, code, name in _STATUS:
            if isinstance(exc, kind):
                status, title = code, name
                break
        detail = str(exc)
        if isinstance(exc, PlanValidationError):
            detail = f"invalid plan: {len(exc.problems)} problem(s)"
        body = problem_body(status, title, safe_detail(detail, status), type(exc).__name__, instance)
        if isinstance(exc, ArgumentError):
            body.update(function=exc.function, parameter=exc.parameter)
        elif isinstance(exc, PlanValidationError):
            body["problems"] = [safe_detail(p, 422) for p in exc.problems]
        elif isinstance(exc, PlanExecutionError):
            body["step"] = exc.step_id
        headers = {}
        if isinstance(exc, ProviderError) and exc.retry_after:
            headers["Retry-After"] = str(int(exc.retry_after + 0.999))
        return status, body, headers
    incident = secrets.token_hex(6)
    log.error("serve_internal_error", incident=incident, error=type(exc).__name__, message=mask_text(str(exc))[:500])
    body = problem_body(500, "internal error", f"the server failed (incident {incident}); its log has the details",
                        "InternalError", instance)
    return 500, body, {}


def problem_body(status: int, title: str, detail: str, error_type: str, instance: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"type": PROBLEM_TYPE + error_type, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body["error_type"] = error_type
    return body


def openai_error(body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI SDK reads `error.message`: problem details with that member added."""
    return {**body, "error": {"message": body.get("detail") or body.get("title"), "type": body.get("error_type"),
                              "code": body.get("status")}}


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, default=str).encode()
