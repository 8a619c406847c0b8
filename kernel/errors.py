"""The kernel's exception tree.

Every error the kernel raises derives from :class:`KernelError`. Messages name what was
wrong and where (function and parameter, file and line, service and provider) and never
contain secrets.

    KernelError
    ├── ConfigurationError
    │   ├── MissingSecretError
    │   └── ExtraNotInstalledError
    ├── PluginError
    │   ├── PluginLoadError          (a folder or module with one or more problems)
    │   └── DuplicateNameError
    ├── FunctionNotFoundError
    ├── ArgumentError                (bad argument: function, parameter, problem)
    ├── TemplateError
    │   ├── TemplateSyntaxError
    │   ├── TemplateRenderError
    │   └── SandboxViolationError
    ├── InvocationError
    │   ├── RecursionLimitError
    │   ├── BudgetExceededError      (too many model or function calls for one invocation)
    │   └── FunctionTimeoutError
    ├── ServiceError
    │   ├── ServiceNotFoundError
    │   └── ProviderError            (a provider call failed: service, provider, model)
    │       ├── ProviderStatusError  (HTTP status, retryable or not)
    │       ├── ProviderTimeoutError
    │       ├── ProviderConnectionError
    │       └── CircuitOpenError     (the service failed repeatedly and is skipped for a while)
    ├── DeadlineExceededError
    ├── ToolLoopError
    ├── ApprovalDeniedError
    ├── PlanError
    │   ├── PlanValidationError
    │   └── PlanExecutionError
    └── MemoryStoreError             (a vector store or memory operation failed)
        └── FilterError
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class KernelError(Exception):
    """Base class of every error raised by the kernel."""


class ConfigurationError(KernelError):
    """The configuration is invalid or incomplete."""


class MissingSecretError(ConfigurationError):
    """A service needs a secret (an API key) that is not set. The message names where to set it."""


class ExtraNotInstalledError(ConfigurationError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature, self.extra, self.module = feature, extra, module
        super().__init__(
            f"{feature} needs the optional module {module!r}: "
            f'install it with `pip install "orchestration-kernel[{extra}]"`'
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found while loading plugins: where it is and what is wrong.

    `severity` is `"error"` (what it concerns does not load; under `strict_plugins` the
    whole folder fails) or `"warning"` (it loads as Semantic Kernel would load it, and the
    problem is reported)."""

    path: str
    message: str
    line: int | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {'warning: ' if self.severity == 'warning' else ''}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "message": self.message, "severity": self.severity}


class PluginError(KernelError):
    """A plugin could not be loaded or registered."""


class PluginLoadError(PluginError):
    """One or more problems in a plugin folder, module or object; lists every one."""

    def __init__(self, problems: Sequence[Problem], *, root: str | None = None) -> None:
        self.problems = list(problems)
        self.root = root
        head = f"{len(self.problems)} problem(s) loading plugins"
        if root:
            head += f" from {root}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class DuplicateNameError(PluginError):
    """Two functions or plugins claim the same name."""


class FunctionNotFoundError(KernelError):
    """No function with that name is registered."""


class ArgumentError(KernelError, ValueError):
    """An argument given to a function is missing, unexpected, or of the wrong type."""

    def __init__(self, function: str, parameter: str | None, problem: str) -> None:
        self.function, self.parameter, self.problem = function, parameter, problem
        where = f"parameter {parameter!r} of {function}" if parameter else f"arguments of {function}"
        super().__init__(f"{where}: {problem}")


class TemplateError(KernelError):
    """A prompt template failed to compile or render."""


class TemplateSyntaxError(TemplateError):
    """The template source is not valid; names the template and line."""


class TemplateRenderError(TemplateError):
    """Rendering failed (an undefined variable, a failing call, a limit reached)."""


class SandboxViolationError(TemplateRenderError):
    """The template tried something the sandbox forbids (unsafe attribute, size bomb)."""


class InvocationError(KernelError):
    """A function failed while running."""


class RecursionLimitError(InvocationError):
    """Functions called each other deeper than the configured limit."""


class BudgetExceededError(InvocationError):
    """One top-level invocation made more model calls or function calls than its budget
    (`max_model_calls`, `max_function_calls`) allows."""


class FunctionTimeoutError(InvocationError, TimeoutError):
    """A function ran longer than its timeout."""


class ServiceError(KernelError):
    """A model or store service is unknown or failed."""


class ServiceNotFoundError(ServiceError):
    """No service with that name is configured, or no connector serves its provider."""


class ProviderError(ServiceError):
    """A provider call failed. Carries the service, provider and model, never a secret."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.detail = message
        self.service, self.provider, self.model = service, provider, model
        self.status_code, self.retry_after = status_code, retry_after
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self._format())

    def _format(self) -> str:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("service", self.service), ("provider", self.provider), ("model", self.model))
            if v
        )
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.detail}{status}" + (f" [{where}]" if where else "")

    def with_service(self, service: str, provider: str | None = None, model: str | None = None) -> ProviderError:
        """Fill in which service failed (connectors do not know their service name)."""
        self.service = self.service or service
        self.provider = self.provider or provider
        self.model = self.model or model
        self.args = (self._format(),)
        return self


NON_RETRYABLE_STATUS = frozenset({400, 401, 403, 404, 422})


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, **kw: object) -> None:
        retryable = status_code not in NON_RETRYABLE_STATUS and (status_code in (408, 409, 429) or status_code >= 500)
        kw.setdefault("retryable", retryable)
        super().__init__(message, status_code=status_code, **kw)  # type: ignore[arg-type]


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time."""

    retryable = True


class ProviderConnectionError(ProviderError):
    """The provider could not be reached, or the connection dropped."""

    retryable = True


class CircuitOpenError(ProviderError):
    """The service's circuit breaker is open: it failed too often and is skipped for a while."""


class DeadlineExceededError(KernelError, TimeoutError):
    """A call's overall deadline passed (retries and fallbacks included)."""


class ToolLoopError(KernelError):
    """The automatic function-calling loop hit a limit configured to raise."""


class ApprovalDeniedError(KernelError):
    """An approval callback refused a function call or a plan."""


class PlanError(KernelError):
    """A plan could not be produced or run."""


class PlanValidationError(PlanError):
    """A plan failed validation; lists every problem."""

    def __init__(self, problems: Sequence[str], plan: object | None = None) -> None:
        self.problems = list(problems)
        self.plan = plan  # the rejected plan, when one was parsed
        super().__init__("invalid plan:\n" + "\n".join(f"  - {p}" for p in self.problems))


class PlanExecutionError(PlanError):
    """A plan step failed; carries the failed step and the outputs that were computed."""

    def __init__(self, step_id: str, reason: str, outputs: dict[str, object], run: object | None = None) -> None:
        self.step_id, self.reason, self.outputs = step_id, reason, outputs
        self.run = run  # the PlanRun to pass back as `resume=`
        super().__init__(f"plan step {step_id!r} failed: {reason}")


class MemoryStoreError(KernelError):
    """A vector store or memory operation failed."""


class FilterError(MemoryStoreError, ValueError):
    """A metadata filter is malformed: unknown field, operator, or value type."""
