"""Anthropic Messages API connector (provider `anthropic`, kind chat).

Configuration (`[services.NAME]`): `model` (required), `api_key` or the variable named by
`api_key_env` or `ANTHROPIC_API_KEY`, `base_url` (any server speaking the Messages wire
format, e.g. a gateway or a test server), `timeout` (per request, seconds),
`settings.max_tokens` (Anthropic requires it; default 1024). The SDK's retries are off: the
kernel's resilience layer owns retries.

Mapping of the provider-neutral request:

* system messages go to the `system` field (several are joined by a blank line);
* assistant tool calls become `tool_use` blocks; tool results become `tool_result` blocks
  with the same `tool_use_id`, and every result of one assistant turn lands in ONE
  following user turn (consecutive messages of the same role are merged, as the API
  requires alternating roles);
* tools are `{"name", "description", "input_schema"}`; tool_choice `auto` -> `auto`,
  `required` -> `any`, a named function -> `{"type": "tool", "name": ...}`, `none` -> `none`;
* JSON output (`ChatRequest.output_schema`) uses a forced tool call whose `input_schema` is
  the schema; its input comes back as the JSON text of the answer (streamed as text
  deltas). A schema that is not an object is wrapped in `{"value": ...}` and unwrapped.
  When the request also offers tools, the model must call one of them or the output tool.

Execution settings follow the kernel's one policy (`kernel.services.profiles`):
`max_tokens`, `temperature`, `top_p`, `top_k`, `stop` (-> `stop_sequences`) and `user`
(-> `metadata.user_id`) are sent; `extra_body` (a table) is merged into the request body;
the neutral `seed`, `presence_penalty` and `frequency_penalty` are dropped with a warning,
once per setting and service, so that a prompt written for another provider still runs
here; any other setting is a ConfigurationError naming it.

The provider and the model are built to be reused: Claude on Amazon Bedrock and Google
Vertex AI (`connectors.anthropic_clouds`) subclass `AnthropicProvider` (credentials,
region, the SDK's platform client, profile) and keep this translation, tool loop and
streaming. `probe()` asks `GET /v1/models/{model}`: no token spent.

Usage: `input_tokens` counts every input token (Anthropic's `input_tokens` plus
`cache_read_input_tokens` plus `cache_creation_input_tokens`); `cached_tokens` are the cache
reads and `cache_write_tokens` the cache writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
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
    KernelError,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
)
from kernel.hookspecs import hookimpl
from kernel.logging import register_secret_env
from kernel.services import ModelProfile, Provider, Reachability

from ._http_errors import map_exception

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

PROVIDER = "anthropic"
DEFAULT_KEY_ENV = "ANTHROPIC_API_KEY"
register_secret_env("ANTHROPIC_AUTH_TOKEN")  # the SDK sends it (as a bearer token) when it is set
DEFAULT_MAX_TOKENS = 1024
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "unknown",
}
# Anthropic error types (in an SSE `error` event the HTTP status is 200) -> status codes.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
    # Bedrock's exceptions inside an event stream (`:exception-type`), lower-cased
    "validationexception": 400,
    "accessdeniedexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "throttlingexception": 429,
    "internalserverexception": 500,
    "modelstreamerrorexception": 500,
    "serviceunavailableexception": 503,
}
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError as exc:
        if exc.name != "anthropic":
            raise
        raise ExtraNotInstalledError("Anthropic services", "anthropic", "anthropic") from None
    return anthropic


def _output_tool_name(name: str) -> str:
    return (_TOOL_NAME.sub("_", name) or "output")[:64]


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def convert_messages(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """The `system` text and the alternating user/assistant turns of the Messages API."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.role
        blocks: list[dict[str, Any]] = []
        if role == "system":
            if message.content:
                system.append(message.content)
            continue
        if role == "tool":
            role = "user"
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id or "",
                    "content": message.content,
                }
            )
        else:
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            if role == "assistant":
                blocks.extend(
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                    for c in message.tool_calls
                )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            # tool_result blocks must open a user turn: keep them ahead of text.
            if blocks[0]["type"] == "tool_result" and previous and previous[-1]["type"] == "text":
                insert_at = next((i for i, b in enumerate(previous) if b["type"] != "tool_result"), len(previous))
                previous[insert_at:insert_at] = blocks
            else:
                previous.extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), turns


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if choice.function:
        return {"type": "tool", "name": choice.function}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice.mode]}


def _usage(usage: Any) -> Usage:
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    write = getattr(usage, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=(getattr(usage, "input_tokens", None) or 0) + read + write,
        output_tokens=getattr(usage, "output_tokens", None) or 0,
        cached_tokens=read,
        cache_write_tokens=write,
        requests=1,
    )


PROFILE = ModelProfile(
    PROVIDER,
    {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
     "stop": "stop_sequences", "user": "metadata"},
    structured_output="tool",
)


class AnthropicProvider(Provider):
    """Anthropic's Messages API, or any server speaking its wire format (`base_url`)."""

    name = PROVIDER
    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV

    def __init__(self, service: str, settings: ServiceSettings, *, http_client: Any = None) -> None:
        super().__init__(service, settings, http_client=http_client)
        self.sdk = _sdk()
        self.key = self.resolve_key()

    def resolve_key(self) -> str | None:
        return self.api_key()

    def client_options(self) -> dict[str, Any]:
        """What every Anthropic SDK client of this service gets: no SDK retries, the base
        URL, the timeout, the injected HTTP client, default headers."""
        kw: dict[str, Any] = {"max_retries": 0}
        if self.settings.base_url:
            kw["base_url"] = self.settings.base_url
        if self.settings.timeout is not None:
            kw["timeout"] = self.settings.timeout
        if self.http_client is not None:
            kw["http_client"] = self.http_client
        if self.settings.options.get("default_headers") is not None:
            kw["default_headers"] = self.settings.options["default_headers"]
        return kw

    def create_client(self) -> Any:
        return self.sdk.AsyncAnthropic(api_key=self.key, **self.client_options())

    def profile(self, model: str) -> ModelProfile:
        return PROFILE

    def credential_error(self, exc: BaseException) -> KernelError | None:
        """The kernel error for a failure to obtain credentials (raised by the SDK's platform
        clients before any request is sent), or None."""
        return None

    def probe_error(self, exc: BaseException, model: str, what: str) -> Reachability:
        """A probe's failure as a finding: the endpoint answered with an error, or could not be reached."""
        credentials = self.credential_error(exc)
        if credentials is not None:  # the service itself was not contacted
            return Reachability(None, False, f"{what}: {credentials}")
        error = map_exception(exc, self.sdk, provider=self.name, model=model, secret=self.key)
        if error is None:
            raise exc
        if isinstance(error, ProviderStatusError) and error.status_code == 404:
            return Reachability(True, False, f"{what}: {error}", False)
        reachable = not isinstance(error, ProviderConnectionError | ProviderTimeoutError)
        return Reachability(reachable, False, f"{what}: {error}")

    async def probe(self, model: str) -> Reachability:
        """`GET /v1/models/{model}`: the server answers, accepts the key and knows the model."""
        what = f"GET /v1/models/{model}"
        try:
            info = await self.client.models.retrieve(model)
        except Exception as exc:
            return self.probe_error(exc, model, what)
        return Reachability(True, True, f"{what}: known as {getattr(info, 'id', model)!r}", True)


class AnthropicChatModel:
    """Messages API over the official async SDK (one call per request, no retries)."""

    provider: str = PROVIDER

    def __init__(
        self,
        model: str,
        *,
        connection: AnthropicProvider | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        http_client: Any = None,
        service: str | None = None,
    ) -> None:
        """`connection` (an AnthropicProvider) or, to build one, the keyword arguments."""
        if connection is None:
            from kernel.settings import ServiceSettings

            svc = ServiceSettings.model_validate({
                "provider": PROVIDER, "model": model, "api_key": api_key, "base_url": base_url,
                "timeout": timeout, "settings": dict(settings or {}), "options": dict(options or {})})
            connection = AnthropicProvider(service or PROVIDER, svc, http_client=http_client)
        self.connection = connection
        self.provider = connection.name
        self.model = model
        self.service = connection.service
        self.base_url = connection.settings.base_url
        self.default_settings = dict(connection.settings.settings)
        self.options = dict(connection.settings.options)
        self.profile = connection.profile(model)
        self._warned: set[str] = set()  # dropped settings already warned about
        self._secret = connection.key
        self._sdk = connection.sdk
        self.client = connection.client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- request building ------------------------------------------------------------

    def _params(self, request: ChatRequest) -> tuple[dict[str, Any], str | None, bool]:
        """Request parameters, the name of the JSON-output tool (if any), and whether the
        output schema was wrapped in `{"value": ...}`."""
        system, turns = convert_messages(request.messages)
        params: dict[str, Any] = {"model": self.model, "messages": turns}
        if system:
            params["system"] = system
        passed, extra = self.profile.request_settings({**self.default_settings, **request.settings}, self.service,
                                                     self._warned)
        for key in ("temperature", "top_p", "top_k"):  # documented Messages API fields the SDK no longer types
            if key in passed:
                extra[key] = passed.pop(key)
        if "stop_sequences" in passed:
            stop = passed["stop_sequences"]
            passed["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if "metadata" in passed:
            passed["metadata"] = {"user_id": str(passed["metadata"])}
        params.update(passed)
        params.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if extra:
            params["extra_body"] = extra
        tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools]
        choice = request.tool_choice
        output_tool: str | None = None
        wrapped = False
        if request.output_schema is not None:
            schema = request.output_schema
            if schema.get("type") != "object":
                # `$ref`s point at the document root: the definitions stay at the root.
                inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
                defs: dict[str, Any] = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
                schema = {"type": "object", "properties": {"value": inner}, "required": ["value"], **defs}
                wrapped = True
            output_tool = _output_tool_name(request.output_schema_name)
            offer_tools = bool(tools) and (choice is None or choice.mode != "none")
            tools = [
                *(tools if offer_tools else []),
                {
                    "name": output_tool,
                    "description": "Give the final answer as the input of this tool.",
                    "input_schema": schema,
                },
            ]
            params["tool_choice"] = {"type": "any"} if offer_tools else {"type": "tool", "name": output_tool}
        elif choice is not None and (tools or choice.mode == "none"):
            params["tool_choice"] = _tool_choice(choice)
        if tools:
            params["tools"] = tools
        return params, output_tool, wrapped

    def _error(self, exc: BaseException) -> KernelError | None:
        credentials = self.connection.credential_error(exc)
        if credentials is not None:
            return credentials
        error = map_exception(exc, self._sdk, provider=self.provider, model=self.model, secret=self._secret)
        if isinstance(error, ProviderStatusError) and error.status_code is not None and error.status_code < 400:
            # An `error` event inside a 200 stream: the status comes from the error type.
            body = getattr(exc, "body", None)
            kind = body.get("error", {}).get("type") if isinstance(body, dict) else None
            status = _ERROR_STATUS.get(str(kind).lower(), 500)
            error = ProviderStatusError(error.detail, status_code=status, provider=self.provider, model=self.model)
        return error

    # -- calls -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        params, output_tool, wrapped = self._params(request)
        try:
            message = await self.client.messages.create(**params)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from None
        text: list[str] = []
        calls: list[ToolCall] = []
        answer: str | None = None
        for block in message.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                text.append(block.text)
            elif kind == "tool_use":
                if block.name == output_tool:
                    value = block.input.get("value") if wrapped and isinstance(block.input, dict) else block.input
                    answer = json.dumps(value, ensure_ascii=False)
                else:
                    calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
        finish = _FINISH.get(message.stop_reason or "", "unknown")
        if answer is not None:
            content = answer
            if not calls:
                finish = "stop"
        else:
            content = "".join(text)
        return ChatResponse(
            ChatMessage("assistant", content, calls),
            finish,
            _usage(message.usage),
            message.model or self.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params, output_tool, wrapped = self._params(request)
        params["stream"] = True
        model = self.model
        usage = Usage(requests=1)
        finish = "stop"
        blocks: dict[int, tuple[str, int]] = {}  # content block index -> (kind, call index)
        calls = 0
        unwrap: _Unwrapper | None = None
        stream: Any = None
        try:
            stream = await self.client.messages.create(**params)
            async for event in stream:
                kind = event.type
                if kind == "content_block_delta":
                    delta = event.delta
                    block_kind, call_index = blocks.get(event.index, ("text", -1))
                    if delta.type == "text_delta":
                        if delta.text:
                            yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta":
                        if block_kind == "output":
                            piece = unwrap.feed(delta.partial_json) if unwrap else delta.partial_json
                            if piece:
                                yield TextDelta(piece)
                        elif block_kind == "tool" and delta.partial_json:
                            yield ToolCallDelta(call_index, arguments=delta.partial_json)
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        if block.name == output_tool:
                            blocks[event.index] = ("output", -1)
                            unwrap = _Unwrapper() if wrapped else None
                        else:
                            blocks[event.index] = ("tool", calls)
                            yield ToolCallDelta(calls, block.id, block.name, "")
                            calls += 1
                    else:
                        blocks[event.index] = (block.type, -1)
                        if block.type == "text" and getattr(block, "text", ""):
                            yield TextDelta(block.text)
                elif kind == "message_start":
                    message = event.message
                    model = message.model or model
                    usage = _usage(message.usage)
                elif kind == "message_delta":
                    if event.delta.stop_reason:
                        finish = _FINISH.get(event.delta.stop_reason, "unknown")
                    delta_usage = event.usage
                    if delta_usage is not None:
                        usage.output_tokens = delta_usage.output_tokens or usage.output_tokens
                        if getattr(delta_usage, "input_tokens", None):
                            update = _usage(delta_usage)
                            usage.input_tokens = update.input_tokens
                            usage.cached_tokens = update.cached_tokens
                            usage.cache_write_tokens = update.cache_write_tokens
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from None
        finally:
            if stream is not None:
                await stream.close()
        if output_tool is not None and calls == 0 and finish == "tool_calls":
            finish = "stop"
        yield UsageEvent(usage)
        yield StreamEnd(finish, model)

    async def probe(self) -> Reachability:
        """Reachable, credentials accepted, model known; no token spent."""
        return await self.connection.probe(self.model)

    async def aclose(self) -> None:
        await self.connection.aclose()


class _Unwrapper:
    """Streams the JSON of `value` out of the JSON text `{"value": ...}` as it arrives."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._sent = 0

    def feed(self, piece: str) -> str:
        self._buffer += piece
        if not self._started:
            match = re.match(r'\s*\{\s*"value"\s*:\s*', self._buffer)
            if match is None:
                return ""
            self._buffer = self._buffer[match.end() :]
            self._started = True
        # Hold back the closing brace of the wrapper (and whitespace) until the end.
        body = self._buffer.rstrip()
        if body.endswith("}"):
            body = body[:-1]
        out = body[self._sent :]
        self._sent = len(body)
        return out


def chat_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> AnthropicChatModel:
    if not svc.model:
        raise ConfigurationError(
            f"service {name!r} (provider {PROVIDER}) needs a model: set `model` in [services.{name}]"
        )
    return AnthropicChatModel(svc.model, connection=AnthropicProvider(name, svc, http_client=http_client))


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", PROVIDER, chat_factory)
