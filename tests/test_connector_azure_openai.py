"""The `azure_openai` provider: the OpenAI SDK's own `AsyncAzureOpenAI` client against a
loopback HTTP server speaking Azure OpenAI's documented wire format and URL shape
(`/openai/deployments/{deployment}/chat/completions?api-version=...`, the `api-key` header,
or `Authorization: Bearer` with Microsoft Entra ID tokens). Nothing reaches a cloud.

What is proven, on the wire: the deployment routing and api-version; the key from
AZURE_OPENAI_API_KEY and the endpoint from AZURE_OPENAI_ENDPOINT; chat, tools through the
kernel's tool loop, structured output (json_schema), streaming (with Azure's filter-result
chunks), embeddings; Entra ID tokens reused until shortly before they expire, refreshed
then, fetched once for concurrent requests, dropped after a 401; the configured
`options.auth = "entra_id"` path through azure-identity's DefaultAzureCredential (a fake
module issuing expiring tokens) and the error naming the extra without it; the content
filter (finish_reason and the HTTP 400 refusal: not retried, not fallen back from);
429 `retry-after-ms` honoured by the resilience layer; the token-free probe.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors._http_errors import parse_retry_after
from connectors.azure_openai import AzureOpenAIChatModel, AzureOpenAIProvider
from kernel import Kernel, kernel_function
from kernel.contents import ChatMessage, ChatRequest, StreamEnd, TextDelta, ToolCallDelta, ToolChoice, ToolSpec
from kernel.errors import ConfigurationError, ExtraNotInstalledError, MissingSecretError, ProviderStatusError
from kernel.services import probe_services
from kernel.settings import KernelSettings, RetrySettings, ServiceSettings
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply

KEY = "azure-key-0123456789abcdef"
DEPLOYMENT = "gpt4o-prod"
UNDERLYING = "gpt-4o-2024-08-06"
API_VERSION = "2024-10-21"
NO_BACKOFF = RetrySettings(max_attempts=3, initial_backoff=0, jitter=0)
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
WEATHER = ToolSpec("get_weather", "Weather of a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
FILTERS = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}


def completion(content: str | None = "hello", *, tool_calls: list[dict[str, Any]] | None = None,
               finish: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-azure", "object": "chat.completion", "created": 1700000000, "model": UNDERLYING,
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        "choices": [{"index": 0, "message": message, "content_filter_results": FILTERS,
                     "finish_reason": finish or ("tool_calls" if tool_calls else "stop")}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def chunk(choices: list[dict[str, Any]], *, model: str = UNDERLYING, **extra: Any) -> bytes:
    data = {"id": "chatcmpl-azure", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": choices, **extra}
    return f"data: {json.dumps(data)}\n\n".encode()


@dataclass
class Azure:
    """The loopback Azure OpenAI resource: routes by path, answers from `replies` (a list
    of Reply/StreamReply, last one repeated) per operation."""

    replies: dict[str, list[Reply | StreamReply]] = field(default_factory=dict)
    seen: list[Request] = field(default_factory=list)

    async def __call__(self, request: Request) -> Reply | StreamReply:
        self.seen.append(request)
        path = request.path.partition("?")[0]
        operation = path.rsplit("/", 1)[-1] if "/deployments/" in path else path
        queue = self.replies.get(operation) or [Reply(404, {"error": {"code": "DeploymentNotFound",
                                                                      "message": "no such route"}})]
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def azure() -> Iterator[tuple[Azure, FakeHTTPServer]]:
    fake = Azure()
    with FakeHTTPServer(fake) as server:
        yield fake, server


@pytest.fixture(autouse=True)
def no_version_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def make_kernel(server: FakeHTTPServer, monkeypatch: pytest.MonkeyPatch, **service: Any) -> Kernel:
    """A configured `azure_openai` service: endpoint and key from Azure's usual variables."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    entry: dict[str, Any] = {"provider": "azure_openai", "model": DEPLOYMENT, "retry": NO_BACKOFF,
                             "options": {"api_version": API_VERSION}, **service}
    settings = KernelSettings(services={"azure": ServiceSettings.model_validate(entry)}, default_chat="azure",
                              standard_plugins=False, plugin_autoload=False)
    return Kernel(settings=settings, load_entry_points=False)


def ask(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user(text)], **kw)


async def test_chat_routes_to_the_deployment_with_the_api_key_header(
    azure: tuple[Azure, FakeHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = azure
    fake.replies["completions"] = [Reply(body=completion('{"name": "Ada"}'))]
    kernel = make_kernel(server, monkeypatch, settings={"temperature": 0.1})
    response = await kernel.services.chat("azure").complete(
        ask("who?", output_schema=PERSON, output_schema_name="person", tools=[WEATHER],
            tool_choice=ToolChoice("required", "get_weather"), settings={"max_tokens": 9}))
    await kernel.aclose()
    [request] = fake.seen
    assert request.method == "POST"
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={API_VERSION}"
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    body = request.json()
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "person", "schema": PERSON, "strict": False}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (body["max_tokens"], body["temperature"]) == (9, 0.1)
    assert response.text == '{"name": "Ada"}' and response.model == UNDERLYING  # the model behind the deployment
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 3)
    assert kernel.services.get("azure").provider == "azure_openai"


async def test_the_tool_loop_runs_on_azure(azure: tuple[Azure, FakeHTTPServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure
    call = {"id": "call_1", "type": "function", "function": {"name": "weather-get_weather",
                                                             "arguments": '{"city": "Oslo"}'}}
    fake.replies["completions"] = [Reply(body=completion(None, tool_calls=[call])),
                                   Reply(body=completion("It is 9 degrees in Oslo."))]
    cities: list[str] = []

    @kernel_function
    def get_weather(city: str) -> str:
        """Weather of a city."""
        cities.append(city)
        return "9 degrees"

    kernel = make_kernel(server, monkeypatch)
    kernel.add_function(get_weather, plugin="weather")
    result = await kernel.chat("Weather in Oslo?")
    await kernel.aclose()
    assert cities == ["Oslo"] and result.text == "It is 9 degrees in Oslo."
    second = fake.seen[1].json()
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "9 degrees"}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "weather-get_weather"


async def test_streaming_with_azure_filter_chunks(azure: tuple[Azure, FakeHTTPServer],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure

    async def chunks() -> AsyncIterator[bytes]:
        # Azure opens with the prompt's filter results: no choices, no model.
        yield chunk([], model="", prompt_filter_results=[{"prompt_index": 0, "content_filter_results": FILTERS}])
        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for word in ("Hello", " from", " Azure"):
            yield chunk([{"index": 0, "delta": {"content": word}, "finish_reason": None,
                          "content_filter_results": FILTERS}])
        yield chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city":'}}]}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]},
                      "finish_reason": "tool_calls"}])
        yield chunk([], usage={"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
        yield b"data: [DONE]\n\n"

    fake.replies["completions"] = [StreamReply(chunks)]
    kernel = make_kernel(server, monkeypatch)
    events = [e async for e in kernel.services.chat("azure").stream(ask(tools=[WEATHER]))]
    await kernel.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello from Azure"
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].id == "call_9" and "".join(c.arguments for c in calls) == '{"city":"Rome"}'
    assert events[-1] == StreamEnd("tool_calls", UNDERLYING)
    body = fake.seen[0].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_embeddings_from_a_deployment(azure: tuple[Azure, FakeHTTPServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure
    fake.replies["embeddings"] = [Reply(body={"object": "list", "model": "text-embedding-3-small", "data": [
        {"object": "embedding", "index": i, "embedding": [float(i), 0.5, 1.0]} for i in range(2)],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}})]
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    settings = KernelSettings(services={"vectors": ServiceSettings(
        provider="azure_openai", kind="embedding", model="emb-prod", options={"dimension": 3})},
        standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings=settings, load_entry_points=False)
    vectors = await kernel.services.embedding("vectors").embed(["a", "b"])
    await kernel.aclose()
    assert vectors == [[0.0, 0.5, 1.0], [1.0, 0.5, 1.0]]
    assert fake.seen[0].path == f"/openai/deployments/emb-prod/embeddings?api-version={API_VERSION}"
    assert fake.seen[0].headers["api-key"] == KEY


# -- content filter, 429 ----------------------------------------------------------------------


async def test_content_filter_finish_reason(azure: tuple[Azure, FakeHTTPServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure
    fake.replies["completions"] = [Reply(body=completion(None, finish="content_filter"))]
    kernel = make_kernel(server, monkeypatch)
    response = await kernel.services.chat("azure").complete(ask())
    await kernel.aclose()
    assert response.finish_reason == "content_filter" and response.text == ""


async def test_content_filter_refusal_is_not_retried_nor_fallen_back_from(
    azure: tuple[Azure, FakeHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = azure
    refusal = {"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            "hate": {"filtered": True, "severity": "high"}, "jailbreak": {"filtered": False, "detected": False},
            "violence": {"filtered": True, "severity": "medium"}, "sexual": {"filtered": False, "severity": "safe"}}}}}
    fake.replies["completions"] = [Reply(400, refusal)]
    fallback_calls: list[ChatRequest] = []

    class Fallback:
        provider, model = "code", "fallback"

        async def complete(self, request: ChatRequest) -> Any:
            fallback_calls.append(request)
            raise AssertionError("a content-filter refusal must not fall back")

    kernel = make_kernel(server, monkeypatch, fallbacks=["spare"])
    kernel.services.add_service("spare", Fallback())
    with pytest.raises(ProviderStatusError) as info:
        await kernel.services.chat("azure").complete(ask())
    await kernel.aclose()
    error = info.value
    assert error.status_code == 400 and not error.retryable
    assert "content filter" in str(error) and "hate: high" in str(error) and "violence: medium" in str(error)
    assert "jailbreak" not in str(error) and error.service == "azure"
    assert len(fake.seen) == 1 and not fallback_calls


async def test_429_retry_after_ms_is_waited_then_retried(azure: tuple[Azure, FakeHTTPServer],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure
    limited = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded "
                                                   "token rate limit. Please retry after 1 second."}}
    fake.replies["completions"] = [Reply(429, limited, {"retry-after-ms": "400", "retry-after": "3"}),
                                   Reply(body=completion("after the wait"))]
    kernel = make_kernel(server, monkeypatch)
    response = await kernel.services.chat("azure").complete(ask())
    await kernel.aclose()
    assert response.text == "after the wait" and len(fake.seen) == 2
    waited = fake.seen[1].at - fake.seen[0].at
    assert 0.4 <= waited < 2.5, waited  # the milliseconds header wins over the seconds one


def test_retry_after_headers_parsed() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert parse_retry_after({"x-ms-retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0


# -- Microsoft Entra ID -----------------------------------------------------------------------


@dataclass
class AccessToken:
    token: str
    expires_on: int


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class ExpiringCredential:
    """azure-identity's async credential protocol: each `get_token` issues a new token that
    expires an hour after the (fake) clock's now."""

    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        await asyncio.sleep(0.01)  # concurrent requests wait for this one fetch
        return AccessToken(f"entra-token-{len(self.scopes)}", int(self.clock.now + self.lifetime))

    async def close(self) -> None:
        self.closed = True


class SyncCredential:
    """azure-identity's synchronous credential protocol (what DefaultAzureCredential is)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.threads: list[threading.Thread] = []
        self.closed = False

    def get_token(self, *scopes: str) -> AccessToken:
        self.scopes.append(scopes)
        self.threads.append(threading.current_thread())
        return AccessToken(f"sync-token-{len(self.scopes)}", int(time.time() + 3600))

    def close(self) -> None:
        self.closed = True


def entra_model(server: FakeHTTPServer, credential: Any, clock: Clock) -> AzureOpenAIChatModel:
    svc = ServiceSettings(provider="azure_openai", model=DEPLOYMENT, base_url=server.url)
    provider = AzureOpenAIProvider("azure", svc, credential=credential)
    assert provider.tokens is not None
    provider.tokens.clock = clock
    return AzureOpenAIChatModel(DEPLOYMENT, connection=provider)


def bearer(request: Request) -> str:
    assert "api-key" not in request.headers
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


async def test_entra_tokens_are_reused_then_refreshed_before_expiry(azure: tuple[Azure, FakeHTTPServer]) -> None:
    fake, server = azure
    fake.replies["completions"] = [Reply(body=completion())]
    clock = Clock()
    credential = ExpiringCredential(clock)
    chat = entra_model(server, credential, clock)
    await asyncio.gather(*(chat.complete(ask()) for _ in range(4)))  # one fetch for all four
    clock.now += 3000  # 10 minutes before expiry: still good
    await chat.complete(ask())
    clock.now += 301  # within the 300 s refresh margin: a new token
    await chat.complete(ask())
    await chat.complete(ask())
    await chat.aclose()
    assert [bearer(r) for r in fake.seen] == ["entra-token-1"] * 5 + ["entra-token-2"] * 2
    assert credential.scopes == [("https://cognitiveservices.azure.com/.default",)] * 2
    assert fake.seen[0].path.endswith(f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={API_VERSION}")
    assert credential.closed


async def test_a_401_drops_the_cached_token(azure: tuple[Azure, FakeHTTPServer]) -> None:
    fake, server = azure
    fake.replies["completions"] = [Reply(401, {"error": {"code": "401", "message": "Token revoked"}}),
                                   Reply(body=completion())]
    clock = Clock()
    chat = entra_model(server, ExpiringCredential(clock), clock)
    with pytest.raises(ProviderStatusError) as info:
        await chat.complete(ask())
    assert info.value.status_code == 401 and not info.value.retryable
    await chat.complete(ask())
    await chat.aclose()
    assert [bearer(r) for r in fake.seen] == ["entra-token-1", "entra-token-2"]


async def test_configured_entra_id_uses_default_azure_credential(
    azure: tuple[Azure, FakeHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`options.auth = "entra_id"`: azure-identity's (synchronous) DefaultAzureCredential,
    here a fake module with the same name and protocol, its tokens sent as bearer tokens."""
    fake, server = azure
    fake.replies["completions"] = [Reply(body=completion())]
    made: list[SyncCredential] = []

    def default_credential() -> SyncCredential:
        made.append(SyncCredential())
        return made[-1]

    identity = types.ModuleType("azure.identity")
    identity.DefaultAzureCredential = default_credential  # type: ignore[attr-defined]
    for name, module in (("azure", types.ModuleType("azure")), ("azure.identity", identity)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    settings = KernelSettings(services={"azure": ServiceSettings(
        provider="azure_openai", model=DEPLOYMENT, options={"auth": "entra_id", "token_scope": "api://custom/.default"})},
        standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings=settings, load_entry_points=False)
    await kernel.services.chat("azure").complete(ask())
    await kernel.aclose()
    assert bearer(fake.seen[0]) == "sync-token-1"
    assert made[0].scopes == [("api://custom/.default",)] and made[0].closed
    assert made[0].threads and threading.main_thread() not in made[0].threads  # fetched off the event loop
    assert fake.seen[0].path.endswith(f"api-version={API_VERSION}")  # the default version


def test_entra_id_without_azure_identity_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # not installed
    svc = ServiceSettings(provider="azure_openai", model=DEPLOYMENT, base_url="http://127.0.0.1:9",
                          options={"auth": "entra_id"})
    with pytest.raises(ExtraNotInstalledError, match=r"orchestration-kernel\[azure\]"):
        AzureOpenAIProvider("azure", svc)


def test_missing_key_and_endpoint_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIProvider("azure", ServiceSettings(provider="azure_openai", model=DEPLOYMENT))
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example-resource.openai.azure.com")
    with pytest.raises(MissingSecretError, match=r"AZURE_OPENAI_API_KEY.*entra_id"):
        AzureOpenAIProvider("azure", ServiceSettings(provider="azure_openai", model=DEPLOYMENT))
    with pytest.raises(ConfigurationError, match=r"options\.auth"):
        AzureOpenAIProvider("azure", ServiceSettings(provider="azure_openai", model=DEPLOYMENT, api_key="k",
                                                     options={"auth": "password"}))
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2025-01-01-preview")  # SK's variable
    provider = AzureOpenAIProvider("azure", ServiceSettings(provider="azure_openai", model=DEPLOYMENT, api_key="k"))
    assert provider.api_version == "2025-01-01-preview"
    assert provider.endpoint == "https://example-resource.openai.azure.com"


async def test_probe_lists_models_without_spending_tokens(azure: tuple[Azure, FakeHTTPServer],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = azure
    fake.replies["/openai/models"] = [Reply(body={"object": "list", "data": [
        {"id": UNDERLYING, "object": "model", "created": 1, "owned_by": "system"}]})]
    kernel = make_kernel(server, monkeypatch)
    started = time.monotonic()
    [result] = await probe_services(kernel.services)
    await kernel.aclose()
    assert time.monotonic() - started < 5
    assert result.ok and result.reachable and result.provider == "azure_openai" and result.model == DEPLOYMENT
    assert [r.path for r in fake.seen] == [f"/openai/models?api-version={API_VERSION}"]
    assert fake.seen[0].method == "GET" and fake.seen[0].headers["api-key"] == KEY
    assert result.profile is not None and result.profile["structured_output"] == "json_schema"
    assert "not checked" in result.detail and KEY not in result.detail


async def test_azure_identity_bearer_token_provider_is_accepted(azure: tuple[Azure, FakeHTTPServer]) -> None:
    """A plain token callable, here azure-identity's own `get_bearer_token_provider` (real
    package, offline: it wraps a credential and caches its token), is called per request."""
    from azure.identity import get_bearer_token_provider

    fake, server = azure
    fake.replies["completions"] = [Reply(body=completion())]
    credential = SyncCredential()
    svc = ServiceSettings(provider="azure_openai", model=DEPLOYMENT, base_url=server.url)
    provider = AzureOpenAIProvider("azure", svc, credential=get_bearer_token_provider(
        credential, "https://cognitiveservices.azure.com/.default"))
    chat = AzureOpenAIChatModel(DEPLOYMENT, connection=provider)
    for _ in range(3):
        await chat.complete(ask())
    await chat.aclose()
    assert [bearer(r) for r in fake.seen] == ["sync-token-1"] * 3
    assert credential.scopes == [("https://cognitiveservices.azure.com/.default",)]  # cached by azure-core
