"""Azure OpenAI (provider `azure_openai`, kinds chat and embedding), through the OpenAI SDK's
own `AsyncAzureOpenAI` client; requests and answers are translated by the `openai`
connector's models (chat, streaming, tools, structured output, embeddings).

Configuration (`[services.NAME]`):

* `model`: the **deployment** name (Azure routes by deployment:
  `{endpoint}/openai/deployments/{model}/chat/completions?api-version=...`). The answers
  name the model behind it, which is what prices are looked up by.
* `base_url`: the resource endpoint, `https://NAME.openai.azure.com`; else the variable
  `AZURE_OPENAI_ENDPOINT`.
* `options.api_version`: else `AZURE_OPENAI_API_VERSION`, else `OPENAI_API_VERSION`, else
  `2024-10-21` (the GA version with structured output and `stream_options`).
* Authentication, one of:
  - a key (`options.auth = "api_key"`, the default): `api_key`, or the variable named by
    `api_key_env`, or `AZURE_OPENAI_API_KEY`; sent in the `api-key` header;
  - Microsoft Entra ID (`options.auth = "entra_id"`): tokens from azure-identity's
    `DefaultAzureCredential` (environment, workload identity, managed identity, Azure CLI...;
    `pip install "orchestration-kernel[azure]"`; its synchronous credential, run in a worker
    thread, so no async HTTP stack is needed) for `options.token_scope` (default
    `https://cognitiveservices.azure.com/.default`), sent as `Authorization: Bearer`. A token
    is reused until `options.token_refresh_margin` seconds (default 300) before it expires,
    then a new one is fetched; a 401 drops the cached token. In code, any credential with
    `get_token(scope)` (sync or async; azure-identity's credentials have it) or a callable
    returning a token can be given: `AzureOpenAIProvider(..., credential=...)`.
* `options.json_schema_mode`, `options.strict_schema`, `options.stream_usage`,
  `options.tool_choices`, `options.default_headers`, embeddings' `options.dimension` and
  `options.batch_size`, `timeout`, `settings`: as for the `openai` connector.

Azure specifics mapped into the kernel: an answer stopped by the content filter has
`finish_reason = "content_filter"`; a request the content filter refuses (HTTP 400,
code `content_filter`) is a non-retryable `ProviderStatusError` naming the flagged
categories; a 429's `retry-after-ms` / `retry-after` headers become `retry_after`, which
the resilience layer waits (up to `max_retry_after`) before its next attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel.errors import (
    ConfigurationError,
    ExtraNotInstalledError,
    MissingSecretError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
)
from kernel.hookspecs import hookimpl
from kernel.logging import mask_text, register_secret, register_secret_env
from kernel.services import Reachability

from .openai_models import OpenAIChatModel, OpenAIEmbeddingModel, OpenAIProvider

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

PROVIDER = "azure_openai"
DEFAULT_KEY_ENV = "AZURE_OPENAI_API_KEY"
DEFAULT_API_VERSION = "2024-10-21"
API_VERSION_ENVS = ("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION")
ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
AUTH_MODES = ("api_key", "entra_id")
register_secret_env("AZURE_OPENAI_AD_TOKEN")
register_secret_env("AZURE_CLIENT_SECRET")


class EntraTokens:
    """Bearer tokens for Azure OpenAI, refreshed before they expire.

    `credential` is an object with `get_token(*scopes)` (sync or async) returning a token
    with `.token` and `.expires_on` (seconds since the epoch), the protocol of
    azure-identity's credentials; or a plain callable returning the token string, called
    for every request (it manages its own cache). Concurrent requests share one fetch; a
    synchronous credential or callable runs in a worker thread (fetching a token is network
    I/O), an async one on the event loop."""

    def __init__(
        self, credential: Any, scope: str = ENTRA_SCOPE, *, refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time, service: str = PROVIDER,
    ) -> None:
        self.credential, self.scope, self.refresh_margin, self.clock = credential, scope, refresh_margin, clock
        self.where = f"service {service!r} (provider {PROVIDER})"
        self.fetches = 0  # tokens fetched so far
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock: asyncio.Lock | None = None

    def invalidate(self) -> None:
        """Forget the cached token (the service refused it): the next request fetches one."""
        self._token = None

    async def __call__(self) -> str:
        if not hasattr(self.credential, "get_token"):
            return await self._fetch_plain()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is None or self.clock() >= self._expires_on - self.refresh_margin:
                token = await self._fetch(self.credential.get_token, self.scope)
                value = getattr(token, "token", None)
                if not isinstance(value, str) or not value:
                    raise ProviderError(f"{self.where}: the credential returned no token", provider=PROVIDER)
                register_secret(value)
                self._token, self._expires_on = value, float(getattr(token, "expires_on", 0) or 0)
            return self._token

    async def _fetch_plain(self) -> str:
        value = await self._fetch(self.credential)
        if not isinstance(value, str) or not value:
            raise ProviderError(f"{self.where}: the token provider returned no token", provider=PROVIDER)
        register_secret(value)
        return value

    async def _fetch(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            call = type(function).__call__ if not inspect.isroutine(function) else function
            if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call):
                result = await function(*args)
            else:
                result = await asyncio.to_thread(function, *args)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            raise self._error(exc) from None
        self.fetches += 1
        return result

    def _error(self, exc: Exception) -> Exception:
        names = {cls.__name__ for cls in type(exc).__mro__}
        reason = mask_text(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
        if "CredentialUnavailableError" in names:
            return MissingSecretError(
                f"{self.where} found no Microsoft Entra ID credential ({reason}): sign in with `az login`, or set "
                "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, or use a managed identity"
            )
        if names & {"ServiceRequestError", "ConnectionError", "TimeoutError", "OSError"}:
            return ProviderConnectionError(f"could not get a Microsoft Entra ID token: {reason}", provider=PROVIDER)
        return ProviderError(f"could not get a Microsoft Entra ID token: {reason}", provider=PROVIDER)

    async def aclose(self) -> None:
        closer = getattr(self.credential, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result


def _default_credential(where: str) -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ExtraNotInstalledError(f"{where} with options.auth = 'entra_id'", "azure", "azure-identity") from None
    return DefaultAzureCredential()


class AzureOpenAIProvider(OpenAIProvider):
    """An Azure OpenAI resource: endpoint, API version, key or Entra ID tokens."""

    name = PROVIDER
    key_env = DEFAULT_KEY_ENV

    def __init__(
        self, service: str, settings: ServiceSettings, *, http_client: Any = None, credential: Any = None
    ) -> None:
        self._credential = credential
        self.tokens: EntraTokens | None = None
        self.endpoint = (settings.base_url or os.environ.get(ENDPOINT_ENV) or "").rstrip("/")
        if not self.endpoint:
            raise ConfigurationError(
                f"service {service!r} (provider {PROVIDER}) needs the endpoint of the Azure OpenAI resource "
                f"(https://NAME.openai.azure.com): set `base_url` in [services.{service}] or the environment "
                f"variable {ENDPOINT_ENV}"
            )
        env_version = next((os.environ[e] for e in API_VERSION_ENVS if os.environ.get(e)), None)
        self.api_version = str(settings.options.get("api_version") or env_version or DEFAULT_API_VERSION)
        super().__init__(service, settings, http_client=http_client)

    @property
    def base_url(self) -> str | None:
        return self.endpoint

    def resolve_key(self) -> str:
        options = self.settings.options
        auth = options.get("auth", "entra_id" if self._credential is not None else "api_key")
        if auth not in AUTH_MODES:
            raise ConfigurationError(f"{self.where}: options.auth must be one of {', '.join(AUTH_MODES)}, not {auth!r}")
        if auth == "api_key":
            key = self.api_key(required=False)
            if not key:
                env = self.settings.api_key_env or DEFAULT_KEY_ENV
                raise MissingSecretError(
                    f"{self.where} needs an API key: set the environment variable {env}, or `api_key` (or "
                    f"`api_key_env`) in [services.{self.service}] of kernel.toml; or set options.auth = "
                    "'entra_id' to sign in with Microsoft Entra ID"
                )
            return key
        margin = options.get("token_refresh_margin", 300.0)
        if not isinstance(margin, int | float) or margin < 0:
            raise ConfigurationError(f"{self.where}: options.token_refresh_margin must be seconds >= 0, not {margin!r}")
        credential = self._credential if self._credential is not None else _default_credential(self.where)
        self.tokens = EntraTokens(credential, str(options.get("token_scope", ENTRA_SCOPE)),
                                  refresh_margin=float(margin), service=self.service)
        return ""

    def create_client(self) -> Any:
        kw = self.client_options()
        kw.update(azure_endpoint=self.endpoint, api_version=self.api_version)
        if self.tokens is not None:
            kw["azure_ad_token_provider"] = self.tokens
        else:
            kw["api_key"] = self.key
        return self.sdk.AsyncAzureOpenAI(**kw)

    def refused(self, error: BaseException | None) -> None:
        """A 401 with Entra ID: the cached token is dropped, the next request fetches a new one."""
        if self.tokens is not None and isinstance(error, ProviderStatusError) and error.status_code == 401:
            self.tokens.invalidate()

    async def probe(self, model: str | None) -> Reachability:
        """`GET /openai/models`: the endpoint answers and accepts the key or token (Azure lists
        its base models there, not deployments: the deployment itself is not checked)."""
        found = await super().probe(None)
        detail = found.detail.replace("GET /models", "GET /openai/models", 1)
        if found.ok and model:
            detail += f"; deployment {model!r} not checked"
        return Reachability(found.reachable, found.ok, detail, None)

    async def aclose(self) -> None:
        await super().aclose()
        if self.tokens is not None:
            await self.tokens.aclose()


class AzureOpenAIChatModel(OpenAIChatModel):
    """Chat completions on an Azure OpenAI deployment (the `openai` model's translation)."""

    provider = PROVIDER
    connection: AzureOpenAIProvider

    def _error(self, exc: BaseException) -> ProviderError | None:
        error = super()._error(exc)
        self.connection.refused(error)
        return error


class AzureOpenAIEmbeddingModel(OpenAIEmbeddingModel):
    """Embeddings from an Azure OpenAI deployment."""

    provider = PROVIDER
    connection: AzureOpenAIProvider

    def _error(self, exc: BaseException) -> ProviderError | None:
        error = super()._error(exc)
        self.connection.refused(error)
        return error


def _deployment(name: str, svc: ServiceSettings) -> str:
    if not svc.model:
        raise ConfigurationError(
            f"service {name!r} (provider {PROVIDER}) needs a deployment: set `model` in [services.{name}] "
            "to the deployment name"
        )
    return svc.model


def chat_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> AzureOpenAIChatModel:
    deployment = _deployment(name, svc)
    return AzureOpenAIChatModel(deployment, connection=AzureOpenAIProvider(name, svc, http_client=http_client))


def embedding_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> AzureOpenAIEmbeddingModel:
    deployment = _deployment(name, svc)
    return AzureOpenAIEmbeddingModel(deployment, connection=AzureOpenAIProvider(name, svc, http_client=http_client))


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", PROVIDER, chat_factory)
    register("embedding", PROVIDER, embedding_factory)
