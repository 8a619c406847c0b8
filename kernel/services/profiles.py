"""Model profiles: the capability facts of a provider, and the one policy for execution
settings that every chat connector applies.

The policy, the same for every provider:

* a setting the profile honours is passed on, under the provider's own parameter name;
* a *neutral* setting (`NEUTRAL_SETTINGS`: written once, meant for any provider) that the
  provider cannot honour is dropped with a logged warning, once per service and setting,
  so that a prompt written for one provider still runs on another;
* `extra_body` (a table) is merged into the request body where the provider takes one,
  for server-specific parameters;
* anything else is a `ConfigurationError` naming the setting, the service, the provider
  and what it supports: a typo is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from ..logging import LazyLogger

__all__ = ["NEUTRAL_SETTINGS", "ModelProfile", "StructuredOutput"]

log = LazyLogger("kernel.services")

NEUTRAL_SETTINGS = frozenset(
    {"max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty", "frequency_penalty", "user"}
)
"""Execution settings with one meaning across providers."""

StructuredOutput = Literal["json_schema", "json_object", "tool", "grammar"]
"""How `ChatRequest.output_schema` reaches the model: OpenAI's `json_schema` response
format, llama.cpp server's `json_object` + schema, a forced tool call, or a grammar."""

@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a provider (or a model of it) can do."""

    provider: str
    settings: Mapping[str, str]
    """Setting name -> the provider's parameter name, for every setting it honours."""
    structured_output: StructuredOutput = "json_schema"
    extra_body: bool = True
    """Whether an `extra_body` table is merged into the request."""
    tool_choices: frozenset[str] = field(default_factory=lambda: frozenset({"auto", "required", "none", "function"}))

    def supported(self) -> list[str]:
        return sorted({*self.settings, *(("extra_body",) if self.extra_body else ())})

    def request_settings(
        self, settings: Mapping[str, Any], service: str, warned: set[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(parameters by the provider's names, extra_body) for `settings`, by the policy
        of this module. None values are left out. `warned` (kept by the connector
        instance) holds the dropped settings already warned about: one warning each."""
        parameters: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        where = f"service {service!r} (provider {self.provider})"
        for key, value in settings.items():
            if value is None:
                continue
            target = self.settings.get(key)
            if target is not None:
                parameters[target] = value
            elif key == "extra_body" and self.extra_body:
                if not isinstance(value, Mapping):
                    raise ConfigurationError(f"{where}: setting extra_body must be a table, not {type(value).__name__}")
                extra.update(value)
            elif key in NEUTRAL_SETTINGS:
                if warned is None or key not in warned:
                    if warned is not None:
                        warned.add(key)
                    log.warning("execution setting not supported by the provider; dropped",
                                setting=key, service=service, provider=self.provider)
            else:
                hint = ", or extra_body for server-specific parameters" if self.extra_body else ""
                raise ConfigurationError(
                    f"{where}: unknown execution setting {key!r}; supported: {', '.join(self.supported())}{hint}"
                )
        return parameters, extra
