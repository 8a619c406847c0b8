"""Named presets for OpenAI-compatible servers run locally or hosted: `ollama`, `vllm`,
`lmstudio`, `llamacpp_server` (kinds chat and embedding).

`provider = "ollama"` and a `model` is the whole configuration: each preset knows its
server's default base URL, needs no key, and states in its capability profile which
execution settings, which structured-output form and which tool-choice modes its server
honours. The `openai` connector's models do the rest (requests, answers, streaming).

| preset | default `base_url` | structured output | tool choices |
|---|---|---|---|
| `ollama` | `http://localhost:11434/v1` (or `$OLLAMA_HOST/v1`) | `json_schema` | `auto` (`tool_choice` is ignored) |
| `vllm` | `http://localhost:8000/v1` | `json_schema` | `auto`, `required`, `none`, named |
| `lmstudio` | `http://localhost:1234/v1` | `json_schema` | `auto`, `required`, `none` |
| `llamacpp_server` | `http://localhost:8000/v1` | `json_object` + schema | named, `none` |

Settings beyond the common ones: vLLM `logit_bias`, `user`, `top_k`, `min_p`,
`repetition_penalty`; LM Studio `logit_bias`, `top_k`, `repeat_penalty`; llama.cpp
`logit_bias`, `top_k`, `min_p`, `repeat_penalty`.

The common settings: `max_tokens`, `temperature`, `top_p`, `stop`, `seed`,
`presence_penalty`, `frequency_penalty` (and `n` = 1). A neutral setting a server does not
honour is dropped with a warning, as everywhere (`kernel.services.profiles`); a server's own
parameters (`top_k`, `min_p`, ...) travel in the request body. A tool choice the server
does not honour is sent as its nearest equivalent (`connectors._tool_choice`): a named
tool on LM Studio becomes `required` with only that tool offered, `none` on Ollama offers
no tools, `required` with one tool on llama.cpp becomes that named tool.

`llamacpp_server` is llama-cpp-python's server (`python -m llama_cpp.server`): it forces a
named tool through a grammar, and answers `auto`/`required` only with a function-calling
chat format (`chatml-function-calling`, `functionary`); say so with `options.tool_choices`.
llama.cpp's own `llama-server` listens on port 8080 (`base_url = "http://localhost:8080/v1"`).

Every option of the `openai` connector applies (`base_url`, `api_key` for a server behind
an authenticating proxy, `options.json_schema_mode`, `options.tool_choices`,
`options.dimension` for embeddings, ...). `probe()` lists the server's models
(`GET /models`) and says whether the configured one is there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kernel.errors import ConfigurationError
from kernel.hookspecs import hookimpl

from .openai_models import OpenAIChatModel, OpenAIEmbeddingModel, OpenAIProvider

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

COMMON = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "n")


def _parameters(*extra: str) -> dict[str, str]:
    return {key: key for key in (*COMMON, *extra)}


class PresetProvider(OpenAIProvider):
    """An OpenAI-compatible server with known defaults: no key needed, its own profile."""

    key_env = None

    def resolve_key(self) -> str:
        required = bool(self.settings.options.get("api_key_required", False))
        return self.api_key(required=required) or "not-needed"

    def create_client(self) -> Any:
        kw = self.client_options()
        kw.update(api_key=self.key, base_url=self.base_url)
        return self.sdk.AsyncOpenAI(**kw)


class OllamaProvider(PresetProvider):
    name = "ollama"
    parameters = _parameters()
    tool_choices = frozenset({"auto"})

    @property
    def base_url(self) -> str | None:
        if self.settings.base_url:
            return self.settings.base_url
        host = os.environ.get("OLLAMA_HOST", "").strip().rstrip("/")
        if not host:
            return "http://localhost:11434/v1"
        if "://" not in host:
            host = "http://" + host
        return host + "/v1"

    def model_listed(self, model: str, listed: Sequence[str]) -> bool | None:
        """Ollama lists `name:tag`; a model configured without a tag means `:latest`."""
        if not listed:
            return None
        return model in listed or (":" not in model and f"{model}:latest" in listed)


class VLLMProvider(PresetProvider):
    name = "vllm"
    default_base_url = "http://localhost:8000/v1"
    parameters = _parameters("logit_bias", "user", "top_k", "min_p", "repetition_penalty")


class LMStudioProvider(PresetProvider):
    name = "lmstudio"
    default_base_url = "http://localhost:1234/v1"
    parameters = _parameters("logit_bias", "top_k", "repeat_penalty")
    tool_choices = frozenset({"auto", "required", "none"})


class LlamaCppServerProvider(PresetProvider):
    name = "llamacpp_server"
    default_base_url = "http://localhost:8000/v1"
    parameters = _parameters("logit_bias", "top_k", "min_p", "repeat_penalty")
    structured_output = "json_object"
    tool_choices = frozenset({"function", "none"})


PRESETS: dict[str, type[PresetProvider]] = {
    cls.name: cls for cls in (OllamaProvider, VLLMProvider, LMStudioProvider, LlamaCppServerProvider)
}


def _model(name: str, svc: ServiceSettings) -> str:
    if not svc.model:
        raise ConfigurationError(
            f"service {name!r} (provider {svc.provider}) needs a model: set `model` in [services.{name}] "
            "to a model the server serves"
        )
    return svc.model


def chat_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> OpenAIChatModel:
    provider = PRESETS[svc.provider](name, svc, http_client=http_client)
    return OpenAIChatModel(_model(name, svc), connection=provider)


def embedding_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> OpenAIEmbeddingModel:
    provider = PRESETS[svc.provider](name, svc, http_client=http_client)
    return OpenAIEmbeddingModel(_model(name, svc), connection=provider)


@hookimpl
def register_connectors(register: Any) -> None:
    for preset in PRESETS:
        register("chat", preset, chat_factory)
        register("embedding", preset, embedding_factory)
