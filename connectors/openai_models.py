"""OpenAI chat and embedding connectors; also every OpenAI-compatible server via `base_url`.

Configuration (`[services.NAME]`, provider `openai`, kind chat or embedding):

* `model` (required for chat; embeddings default to `text-embedding-3-small`).
* `api_key`, or the variable named by `api_key_env`, or `OPENAI_API_KEY`. When
  `base_url` is set and no key is found, the placeholder `"not-needed"` is sent (local
  servers ignore it); set `options.api_key_required = true` to insist on a real key.
  Without `base_url` a missing key raises `MissingSecretError` naming the variable.
* `timeout`: per-request timeout in seconds (the SDK's default otherwise). The SDK's own
  retries are off: the kernel's resilience layer owns retries.
* `options.json_schema_mode`: how `ChatRequest.output_schema` is sent. `"json_schema"`
  (default) is OpenAI's structured output, `{"type": "json_schema", "json_schema":
  {...}}`; `"json_object"` sends `{"type": "json_object", "schema": ...}`, the form
  llama-cpp-python's server turns into a grammar. `options.strict_schema` (default false)
  sets `strict` in json_schema mode (OpenAI's strict mode restricts the schemas accepted).
* `options.stream_usage` (default true): ask for usage in streams (`stream_options`).
* `options.tool_choices`: the tool-choice modes the server honours (default: all of
  `auto`, `required`, `none`, `function`); a request's choice outside them is sent as its
  nearest equivalent (`connectors._tool_choice`).
* Embeddings: `options.dimension` (known for OpenAI's models: text-embedding-3-small
  1536, text-embedding-3-large 3072, text-embedding-ada-002 1536; required otherwise),
  `options.batch_size` (default 256 texts per request).

Execution settings follow the kernel's one policy (`kernel.services.profiles`):
`max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `presence_penalty`,
`frequency_penalty`, `logit_bias`, `user`, `parallel_tool_calls`, `reasoning_effort`,
`max_completion_tokens` and `service_tier` are passed on; `n` other than 1 is refused (one
request, one answer); `extra_body` (a table) is merged into the request body, for
server-specific parameters (llama.cpp's `top_k`, ...); the neutral `top_k` is dropped with
a warning; any other setting is a ConfigurationError naming it.

The provider and the models are built to be reused: Azure OpenAI (`azure_openai`) and the
named presets for local servers (`ollama`, `vllm`, `lmstudio`, `llamacpp_server`) subclass
`OpenAIProvider` (base URL, key, client, profile) and keep these models' request and
response translation. `probe()` lists the server's models (`GET /models`): no token spent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from kernel.contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageEvent,
)
from kernel.errors import (
    ConfigurationError,
    ExtraNotInstalledError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from kernel.hookspecs import hookimpl
from kernel.services import ModelProfile, Provider, Reachability

from ._http_errors import map_exception
from ._tool_choice import TOOL_CHOICES, fit_tool_choice, parse_tool_choices, warn_once

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

PROVIDER = "openai"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
PASSED_SETTINGS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "parallel_tool_calls",
        "reasoning_effort",
        "max_completion_tokens",
        "service_tier",
        "n",
    }
)
SDK_PARAMETERS = PASSED_SETTINGS
"""Parameters the SDK's `create()` takes by name; a profile's other parameters (a server's
`top_k`, `min_p`, ...) travel in the body through `extra_body`."""
JSON_SCHEMA_MODES = ("json_schema", "json_object")
MAX_PROBED_MODELS = 1000
_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _sdk() -> Any:
    try:
        import openai
    except ImportError as exc:
        if exc.name != "openai":
            raise
        raise ExtraNotInstalledError("OpenAI and OpenAI-compatible services", "openai", "openai") from None
    return openai


class OpenAIProvider(Provider):
    """OpenAI's API or any OpenAI-compatible server (`base_url`). Without `base_url` a key
    is required; with one, a missing key sends the placeholder `"not-needed"` (local servers
    ignore it) unless `options.api_key_required = true`.

    Subclasses (Azure OpenAI, the local-server presets) change the class attributes below
    and `resolve_key` / `create_client`; the models stay the same."""

    name = PROVIDER
    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV
    default_base_url: ClassVar[str | None] = None
    """The base URL when the service sets none (None: the SDK's, OpenAI's API)."""
    parameters: ClassVar[Mapping[str, str]] = {key: key for key in PASSED_SETTINGS}
    """Execution settings the server honours -> their names in the request body."""
    structured_output: ClassVar[str] = "json_schema"
    """The default `options.json_schema_mode`."""
    tool_choices: ClassVar[frozenset[str]] = TOOL_CHOICES
    """The default `options.tool_choices`."""

    def __init__(self, service: str, settings: ServiceSettings, *, http_client: Any = None) -> None:
        super().__init__(service, settings, http_client=http_client)
        self.sdk = _sdk()
        self.key = self.resolve_key()

    @property
    def base_url(self) -> str | None:
        return self.settings.base_url or self.default_base_url

    def resolve_key(self) -> str:
        required = self.settings.options.get("api_key_required", self.base_url is None)
        return self.api_key(required=bool(required)) or "not-needed"

    def client_options(self) -> dict[str, Any]:
        """What every OpenAI SDK client of this service gets: no SDK retries, the timeout,
        the injected HTTP client, default headers."""
        kw: dict[str, Any] = {"max_retries": 0}
        if self.settings.timeout is not None:
            kw["timeout"] = self.settings.timeout
        if self.http_client is not None:
            kw["http_client"] = self.http_client
        if self.settings.options.get("default_headers") is not None:
            kw["default_headers"] = self.settings.options["default_headers"]
        return kw

    def create_client(self) -> Any:
        kw = self.client_options()
        kw["api_key"] = self.key
        if self.base_url:
            kw["base_url"] = self.base_url
        for name in ("organization", "project"):
            if self.settings.options.get(name) is not None:
                kw[name] = self.settings.options[name]
        return self.sdk.AsyncOpenAI(**kw)

    def profile(self, model: str) -> ModelProfile:
        options = self.settings.options
        mode = options.get("json_schema_mode", self.structured_output)
        if mode not in JSON_SCHEMA_MODES:
            raise ConfigurationError(
                f"{self.where}: options.json_schema_mode must be one of {', '.join(JSON_SCHEMA_MODES)}, not {mode!r}"
            )
        choices = self.tool_choices
        if options.get("tool_choices") is not None:
            choices = parse_tool_choices(options["tool_choices"], self.where)
        return ModelProfile(self.name, dict(self.parameters), structured_output=mode, tool_choices=choices)

    def model_listed(self, model: str, listed: Sequence[str]) -> bool | None:
        """Whether `model` is among the server's `listed` model ids (None: cannot tell)."""
        return model in listed if listed else None

    async def probe(self, model: str | None) -> Reachability:
        """`GET /models`: the server answers, accepts the key, and lists the model. No token spent."""
        listed: list[str] = []
        try:
            async for item in self.client.models.list():
                listed.append(str(item.id))
                if len(listed) >= MAX_PROBED_MODELS:
                    break
        except Exception as exc:
            error = map_exception(exc, self.sdk, provider=self.name, model=model or "", secret=self.key)
            if error is None:
                raise
            unreachable = isinstance(error, ProviderConnectionError | ProviderTimeoutError)
            return Reachability(not unreachable, False, f"GET /models: {error}")
        available = self.model_listed(model, listed) if model else None
        detail = f"GET /models: {len(listed)} model(s) listed"
        if available is not None:
            detail += f"; {model!r} {'is' if available else 'is not'} among them"
        return Reachability(True, available is not False, detail, available)


def _provider(
    service: str | None, model: str, *, api_key: str | None, base_url: str | None, timeout: float | None,
    options: dict[str, Any] | None, http_client: Any, settings: dict[str, Any] | None = None,
) -> OpenAIProvider:
    """A provider from keyword arguments (models built directly in code, as in tests)."""
    from kernel.settings import ServiceSettings

    svc = ServiceSettings.model_validate({
        "provider": PROVIDER, "model": model, "api_key": api_key, "base_url": base_url, "timeout": timeout,
        "options": dict(options or {}), "settings": dict(settings or {})})
    if api_key is None and base_url is not None:
        svc.options.setdefault("api_key_required", False)
    return OpenAIProvider(service or PROVIDER, svc, http_client=http_client)


def _map_message(message: ChatMessage) -> dict[str, Any]:
    role = message.role
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    data: dict[str, Any] = {"role": role, "content": message.content}
    if role == "assistant" and message.tool_calls:
        # content stays a string ("" with tool calls): servers such as llama.cpp's reject null
        data["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    elif message.name and role == "user":
        data["name"] = message.name
    return data


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.function:
        return {"type": "function", "function": {"name": choice.function}}
    return choice.mode


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(requests=1)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=cached,
        requests=1,
    )


class OpenAIChatModel:
    """Chat completions over the official async SDK (one call per request, no retries)."""

    provider: str = PROVIDER

    def __init__(
        self,
        model: str,
        *,
        connection: OpenAIProvider | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        http_client: Any = None,
        service: str | None = None,
    ) -> None:
        """`connection` (an OpenAIProvider) or, to build one, the keyword arguments."""
        self.connection = connection or _provider(
            service, model, api_key=api_key, base_url=base_url, timeout=timeout, options=options,
            http_client=http_client, settings=settings)
        svc = self.connection.settings
        self.provider = self.connection.name
        self.model = model
        self.service = self.connection.service
        self._where = self.connection.where
        self.base_url = self.connection.base_url
        self.default_settings = dict(svc.settings)
        self.options = dict(svc.options)
        self.profile = self.connection.profile(model)
        self._warned: set[str] = set()  # dropped settings already warned about
        self.json_schema_mode: str = self.profile.structured_output
        self.stream_usage = bool(self.options.get("stream_usage", True))
        self._secret = self.connection.key
        self._sdk = self.connection.sdk
        self.client = self.connection.client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- request building ------------------------------------------------------------

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [_map_message(m) for m in request.messages],
        }
        settings = {**self.default_settings, **request.settings} if self.default_settings else request.settings
        passed, extra = self.profile.request_settings(settings, self.service, self._warned)
        n = passed.pop("n", 1)
        if n != 1:
            raise ConfigurationError(
                f"{self._where}: setting n={n!r} is not supported: the kernel asks for one answer per request"
            )
        for key in [key for key in passed if key not in SDK_PARAMETERS]:
            extra.setdefault(key, passed.pop(key))  # a server's own parameter: in the body
        params.update(passed)
        if extra:
            params["extra_body"] = extra
        tools, choice, warning = fit_tool_choice(request.tool_choice, request.tools, self.profile.tool_choices)
        if warning:
            warn_once(self._warned, warning, self.service, self.provider)
        if tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if choice is not None and tools:
            params["tool_choice"] = _tool_choice(choice)
        elif not tools:
            # The API refuses tool options without tools; without tools there is no call anyway.
            params.pop("parallel_tool_calls", None)
        if request.output_schema is not None:
            if self.json_schema_mode == "json_object":
                params["response_format"] = {"type": "json_object", "schema": request.output_schema}
            else:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": request.output_schema_name,
                        "schema": request.output_schema,
                        "strict": bool(self.options.get("strict_schema", False)),
                    },
                }
        return params

    def _error(self, exc: BaseException) -> ProviderError | None:
        return map_exception(exc, self._sdk, provider=self.provider, model=self.model, secret=self._secret)

    # -- calls -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        params = self._params(request)
        try:
            response = await self.client.chat.completions.create(**params)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from None
        if not response.choices:
            raise ProviderError(f"{self.provider} answered with no choices", provider=self.provider, model=self.model)
        choice = response.choices[0]
        message = choice.message
        calls = [
            ToolCall(c.id or f"call_{i}", c.function.name, c.function.arguments or "{}")
            for i, c in enumerate(message.tool_calls or [])
            if getattr(c, "function", None) is not None
        ]
        finish = _FINISH.get(choice.finish_reason or "", "unknown")
        if calls and finish == "stop":
            finish = "tool_calls"
        return ChatResponse(
            ChatMessage("assistant", message.content or "", calls),
            finish,
            _usage(response.usage),
            response.model or self.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params = self._params(request)
        params["stream"] = True
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        finish = "stop"
        model = self.model
        usage: Usage | None = None
        saw_calls = False
        stream: Any = None
        try:
            stream = await self.client.chat.completions.create(**params)
            async for chunk in stream:
                if chunk.model:
                    model = chunk.model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield TextDelta(delta.content)
                        for call in delta.tool_calls or ():
                            saw_calls = True
                            function = call.function
                            yield ToolCallDelta(
                                call.index,
                                call.id,
                                function.name if function else None,
                                (function.arguments or "") if function else "",
                            )
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, "unknown")
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from None
        finally:
            if stream is not None:
                await stream.close()
        if saw_calls and finish == "stop":
            finish = "tool_calls"
        yield UsageEvent(usage or Usage(requests=1))
        yield StreamEnd(finish, model)

    async def probe(self) -> Reachability:
        """Reachable, key accepted, model listed: `GET /models`, no token spent."""
        return await self.connection.probe(self.model)

    async def aclose(self) -> None:
        await self.connection.aclose()


class OpenAIEmbeddingModel:
    """Embeddings in batches; `dimension` is known before the first call."""

    provider: str = PROVIDER

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        *,
        connection: OpenAIProvider | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        options: dict[str, Any] | None = None,
        http_client: Any = None,
        service: str | None = None,
    ) -> None:
        """`connection` (an OpenAIProvider) or, to build one, the keyword arguments."""
        self.connection = connection or _provider(
            service, model, api_key=api_key, base_url=base_url, timeout=timeout, options=options,
            http_client=http_client)
        self.provider = self.connection.name
        self.model = model
        self.service = self.connection.service
        self._where = self.connection.where
        self.options = dict(self.connection.settings.options)
        native = EMBEDDING_DIMENSIONS.get(model)
        dimension = self.options.get("dimension", native)
        if not isinstance(dimension, int) or dimension < 1:
            raise ConfigurationError(
                f"{self._where}: the dimension of embedding model "
                f"{model!r} is not known; set options.dimension in [services.{self.service}]"
            )
        self.dimension: int = dimension
        # Only OpenAI's v3 models can shorten vectors; other servers may reject the field.
        self._send_dimensions = native is not None and dimension != native
        batch = self.options.get("batch_size", 256)
        if not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"{self._where}: options.batch_size must be a positive integer, not {batch!r}")
        self.batch_size = batch
        self._secret = self.connection.key
        self._sdk = self.connection.sdk
        self.client = self.connection.client

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        kw: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._send_dimensions:
            kw["dimensions"] = self.dimension
        try:
            response = await self.client.embeddings.create(**kw)
        except Exception as exc:  # one call: the kernel's resilience layer owns retries
            error = self._error(exc)
            if error is None:
                raise
            raise error.with_service(self.service) from None
        vectors = [list(item.embedding) for item in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise ProviderError(
                f"{self.provider} returned {len(vectors)} embeddings for {len(texts)} texts",
                service=self.service,
                provider=self.provider,
                model=self.model,
            )
        for vector in vectors:
            if len(vector) != self.dimension:
                raise ConfigurationError(
                    f"{self._where}: model {self.model!r} returned "
                    f"vectors of dimension {len(vector)}, but {self.dimension} is configured "
                    f"(options.dimension)"
                )
        return vectors

    def _error(self, exc: BaseException) -> ProviderError | None:
        return map_exception(exc, self._sdk, provider=self.provider, model=self.model, secret=self._secret)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        items = list(texts)
        out: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            out.extend(await self._batch(items[start : start + self.batch_size]))
        return out

    async def probe(self) -> Reachability:
        """Reachable, key accepted, model listed: `GET /models`, no token spent."""
        return await self.connection.probe(self.model)

    async def aclose(self) -> None:
        await self.connection.aclose()


def chat_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> OpenAIChatModel:
    if not svc.model:
        raise ConfigurationError(
            f"service {name!r} (provider {PROVIDER}) needs a model: set `model` in [services.{name}]"
        )
    return OpenAIChatModel(svc.model, connection=OpenAIProvider(name, svc, http_client=http_client))


def embedding_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> OpenAIEmbeddingModel:
    return OpenAIEmbeddingModel(svc.model or DEFAULT_EMBEDDING_MODEL,
                                connection=OpenAIProvider(name, svc, http_client=http_client))


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", PROVIDER, chat_factory)
    register("embedding", PROVIDER, embedding_factory)
