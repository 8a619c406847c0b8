"""Claude on Amazon Bedrock and on Google Vertex AI, through the Anthropic SDK's own clients
(`AsyncAnthropicBedrock`, `AsyncAnthropicVertex`): providers `anthropic_bedrock` and
`anthropic_vertex`, kind chat. Messages, tools, structured output, streaming and usage are
the `anthropic` connector's translation; the tool loop is the kernel's, as for every provider.

**`anthropic_bedrock`** (`pip install "orchestration-kernel[bedrock]"`: boto3 signs the
requests and decodes Bedrock's event streams). `model` is a Bedrock model id or inference
profile (`anthropic.claude-3-5-haiku-20241022-v1:0`, `us.anthropic.claude-...`);
requests go to `POST /model/{model}/invoke` and `/invoke-with-response-stream`.

* Region: `options.region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else the region of
  the AWS profile.
* Credentials: AWS's usual chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
  `AWS_SESSION_TOKEN`, `AWS_PROFILE` or `options.aws_profile`, SSO, web identity, container
  and instance roles), signed with SigV4; or a Bedrock API key (`api_key`, `api_key_env`,
  or `AWS_BEARER_TOKEN_BEDROCK`), sent as a bearer token. No credentials at all is a
  `MissingSecretError` naming them.
* `base_url`: another endpoint (a VPC endpoint, a test server); default
  `https://bedrock-runtime.{region}.amazonaws.com`.

**`anthropic_vertex`** (`pip install "orchestration-kernel[vertex]"`: google-auth).
`model` is a Vertex model id (`claude-3-5-haiku@20241022`); requests go to
`POST /projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`
and `:streamRawPredict`.

* Region: `options.region`, else `CLOUD_ML_REGION`, else `GOOGLE_CLOUD_LOCATION`
  (`us-east5`, `europe-west1`, `global`, ...).
* Project: `options.project_id`, else `ANTHROPIC_VERTEX_PROJECT_ID`, else
  `GOOGLE_CLOUD_PROJECT`, else the project of the credentials.
* Credentials: Google's application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
  `gcloud auth application-default login`, the metadata server of Google's runtimes), or
  `options.credentials_file` (a service-account or authorized-user JSON file); the access
  token is refreshed when it expires. In code, any google-auth credentials can be given:
  `AnthropicVertexProvider(..., credentials=...)`. A static access token (`api_key` /
  `api_key_env`) is accepted for quick trials (it expires within the hour).

Both: `timeout`, `settings` (`max_tokens`, `temperature`, `top_p`, `top_k`, `stop`; the
neutral `user`, `seed`, `presence_penalty`, `frequency_penalty` are dropped with a warning),
`options.default_headers`. `probe()` spends no token: Vertex counts the tokens of a
one-word message (`count-tokens:rawPredict`); Bedrock is sent an empty request, which it
rejects before any inference once the credentials are accepted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.errors import (
    ConfigurationError,
    ExtraNotInstalledError,
    KernelError,
    MissingSecretError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
)
from kernel.hookspecs import hookimpl
from kernel.logging import mask_text, register_secret_env
from kernel.services import ModelProfile, Reachability

from ._http_errors import map_exception
from .anthropic_models import PROFILE, AnthropicChatModel, AnthropicProvider

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

BEDROCK = "anthropic_bedrock"
VERTEX = "anthropic_vertex"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
for _variable in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
    register_secret_env(_variable)

_AWS_MISSING = frozenset({"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound",
                          "CredentialRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError",
                          "TokenRetrievalError", "InvalidConfigError"})
_AWS_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"})


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _reason(exc: BaseException) -> str:
    return mask_text(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]


def _cloud_profile(provider: str) -> ModelProfile:
    """The Messages API profile without `metadata` (not part of the platforms' documented bodies)."""
    settings = {key: value for key, value in PROFILE.settings.items() if key != "user"}
    return dataclasses.replace(PROFILE, provider=provider, settings=settings)


def _env(*names: str) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


class AnthropicBedrockProvider(AnthropicProvider):
    """Claude on Amazon Bedrock: region, AWS credentials or a Bedrock API key."""

    name = BEDROCK
    key_env = None

    def __init__(self, service: str, settings: ServiceSettings, *, http_client: Any = None) -> None:
        super().__init__(service, settings, http_client=http_client)
        for module in ("boto3", "botocore"):
            if importlib.util.find_spec(module) is None:
                raise ExtraNotInstalledError(self.where, "bedrock", module)
        options = settings.options
        self.region: str | None = options.get("region") or _env("AWS_REGION", "AWS_DEFAULT_REGION")
        self.aws_profile: str | None = options.get("aws_profile")

    def resolve_key(self) -> str | None:
        return self.api_key(required=False)  # a Bedrock API key; else AWS credentials (SigV4)

    def create_client(self) -> Any:
        kw = self.client_options()
        if self.region:
            kw["aws_region"] = self.region
        if self.aws_profile:
            kw["aws_profile"] = self.aws_profile
        if self.key:
            kw["api_key"] = self.key
        try:
            return self.sdk.AsyncAnthropicBedrock(**kw)
        except ValueError as exc:  # no region; a key and a profile both given
            raise ConfigurationError(
                f"{self.where}: {exc} (set options.region in [services.{self.service}], or AWS_REGION)"
            ) from None

    def profile(self, model: str) -> ModelProfile:
        return _cloud_profile(self.name)

    def credential_error(self, exc: BaseException) -> KernelError | None:
        names = _names(exc)
        if names & _AWS_MISSING or (isinstance(exc, RuntimeError) and "AWS credentials" in str(exc)):
            return MissingSecretError(
                f"{self.where} found no AWS credentials ({_reason(exc)}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE (or options.aws_profile), or a "
                "Bedrock API key in AWS_BEARER_TOKEN_BEDROCK"
            )
        if names & _AWS_UNREACHABLE:
            return ProviderConnectionError(f"could not get AWS credentials: {_reason(exc)}", provider=self.name)
        return None

    async def probe(self, model: str) -> Reachability:
        """An empty `POST /model/{model}/invoke`: Bedrock checks the signature (or key), then
        rejects the body (HTTP 400) before any inference. No token is spent."""
        import httpx2

        path = f"/model/{urllib.parse.quote(model, safe=':')}/invoke"
        what = f"POST {path} with an empty body"
        try:
            await self.client.post(path, body={}, cast_to=httpx2.Response)
        except Exception as exc:
            if self.credential_error(exc) is None:
                error = map_exception(exc, self.sdk, provider=self.name, model=model, secret=self.key)
                if isinstance(error, ProviderStatusError) and error.status_code == 400:
                    return Reachability(True, True, f"{what}: rejected before inference (HTTP 400), credentials "
                                                    "accepted; the model's availability is not checked")
            return self.probe_error(exc, model, what)
        return Reachability(True, True, f"{what}: answered")


class AnthropicVertexProvider(AnthropicProvider):
    """Claude on Google Vertex AI: region, project, Google credentials."""

    name = VERTEX
    key_env = None

    def __init__(
        self, service: str, settings: ServiceSettings, *, http_client: Any = None, credentials: Any = None
    ) -> None:
        super().__init__(service, settings, http_client=http_client)
        options = settings.options
        self.region: str | None = options.get("region") or _env("CLOUD_ML_REGION", "GOOGLE_CLOUD_LOCATION")
        if not self.region:
            raise ConfigurationError(
                f"{self.where} needs a region: set options.region in [services.{service}] (us-east5, "
                "europe-west1, global, ...) or the environment variable CLOUD_ML_REGION"
            )
        self.project_id: str | None = options.get("project_id") or _env(
            "ANTHROPIC_VERTEX_PROJECT_ID", "GOOGLE_CLOUD_PROJECT")
        self.credentials = credentials
        if self.credentials is None and not self.key:
            self.credentials, project = self._load_credentials()
            self.project_id = self.project_id or project
        if not self.project_id:
            raise ConfigurationError(
                f"{self.where} needs a Google Cloud project: set options.project_id in [services.{service}] "
                "or the environment variable GOOGLE_CLOUD_PROJECT"
            )

    def resolve_key(self) -> str | None:
        return self.api_key(required=False)  # a static access token; else Google credentials

    def _load_credentials(self) -> tuple[Any, str | None]:
        """Google credentials and their project: `options.credentials_file`, else the
        application default credentials."""
        if importlib.util.find_spec("google.auth") is None:
            raise ExtraNotInstalledError(self.where, "vertex", "google-auth")
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        auth: Any = google.auth
        path = self.settings.options.get("credentials_file")
        try:
            if path:
                return self._from_file(str(path))
            found = auth.default(scopes=[GOOGLE_SCOPE])
        except DefaultCredentialsError as exc:
            raise MissingSecretError(
                f"{self.where} found no Google credentials ({_reason(exc)}): set GOOGLE_APPLICATION_CREDENTIALS "
                f"or options.credentials_file in [services.{self.service}], or run "
                "`gcloud auth application-default login`"
            ) from None
        return found[0], found[1]

    def _from_file(self, path: str) -> tuple[Any, str | None]:
        """A service-account key or authorized-user file, loaded by its own type's loader."""
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MissingSecretError(
                f"{self.where}: options.credentials_file {path!r} cannot be read ({type(exc).__name__}); set it to a "
                "service-account key or authorized-user file, or use GOOGLE_APPLICATION_CREDENTIALS"
            ) from None
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            from google.oauth2 import service_account

            loader: Any = service_account.Credentials
            return loader.from_service_account_info(info, scopes=[GOOGLE_SCOPE]), info.get("project_id")
        if kind == "authorized_user":
            from google.oauth2 import credentials

            loader = credentials.Credentials
            return loader.from_authorized_user_info(info, scopes=[GOOGLE_SCOPE]), info.get("quota_project_id")
        raise ConfigurationError(
            f"{self.where}: options.credentials_file {path!r} holds credentials of type {kind!r}; it takes "
            "'service_account' or 'authorized_user' (other types through GOOGLE_APPLICATION_CREDENTIALS)"
        )

    def create_client(self) -> Any:
        kw = self.client_options()
        kw.update(region=self.region, project_id=self.project_id)
        if self.key:
            kw["access_token"] = self.key
        else:
            kw["credentials"] = self.credentials
        return self.sdk.AsyncAnthropicVertex(**kw)

    def profile(self, model: str) -> ModelProfile:
        return _cloud_profile(self.name)

    def credential_error(self, exc: BaseException) -> KernelError | None:
        names = _names(exc)
        if "DefaultCredentialsError" in names or "MissingDependencyError" in names:
            return MissingSecretError(f"{self.where} has no usable Google credentials ({_reason(exc)})")
        if "TransportError" in names or (exc.__cause__ is not None and "TransportError" in _names(exc.__cause__)):
            return ProviderConnectionError(f"could not refresh the Google access token: {_reason(exc)}",
                                           provider=self.name)
        if "RefreshError" in names:
            return ProviderError(f"could not refresh the Google access token: {_reason(exc)}", provider=self.name,
                                 retryable=bool(getattr(exc, "retryable", False)))
        return None

    async def probe(self, model: str) -> Reachability:
        """Count the tokens of a one-word message (`count-tokens:rawPredict`): nothing is generated."""
        what = "POST count-tokens:rawPredict"
        try:
            counted = await self.client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
        except Exception as exc:
            return self.probe_error(exc, model, what)
        return Reachability(True, True, f"{what}: {getattr(counted, 'input_tokens', '?')} input token(s) counted, "
                                        "nothing generated", True)


def _model(name: str, svc: ServiceSettings) -> str:
    if not svc.model:
        raise ConfigurationError(
            f"service {name!r} (provider {svc.provider}) needs a model: set `model` in [services.{name}]"
        )
    return svc.model


def bedrock_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> AnthropicChatModel:
    model = _model(name, svc)
    return AnthropicChatModel(model, connection=AnthropicBedrockProvider(name, svc, http_client=http_client))


def vertex_factory(
    name: str, svc: ServiceSettings, settings: KernelSettings, *, http_client: Any = None
) -> AnthropicChatModel:
    model = _model(name, svc)
    return AnthropicChatModel(model, connection=AnthropicVertexProvider(name, svc, http_client=http_client))


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", BEDROCK, bedrock_factory)
    register("chat", VERTEX, vertex_factory)

