"""`anthropic_vertex`: the Anthropic SDK's own `AsyncAnthropicVertex` client against a
loopback server speaking Vertex AI's documented wire format:
`POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`
and `:streamRawPredict` (server-sent events), `count-tokens:rawPredict` for the probe.

The credentials are real google-auth credentials, given explicitly: a service-account key
file (an RSA key made for the test) whose token endpoint (`token_uri`) is the same
loopback server, read through Google's usual `GOOGLE_APPLICATION_CREDENTIALS` (application
default credentials) or `options.credentials_file`. So token refresh runs end to end:
google-auth posts a signed JWT assertion to the endpoint (the server checks its signature
with the public key), the SDK sends `Authorization: Bearer` with the token it got, and a
token about to expire is refreshed before the next request. No metadata server and no
Google host is contacted.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kernel import Kernel, kernel_function
from kernel.contents import ChatMessage, ChatRequest, StreamEnd, TextDelta, ToolCallDelta, ToolSpec
from kernel.errors import ConfigurationError, MissingSecretError, ProviderError, ProviderStatusError
from kernel.services import probe_services
from kernel.settings import KernelSettings, RetrySettings, ServiceSettings
from tests.anthropic_fakes import message, sse, stream_events, text, tool_use
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply

MODEL = "claude-3-5-haiku@20241022"
PROJECT = "kernel-test-project"
REGION = "us-east5"
CLIENT_EMAIL = "kernel-tests@kernel-test-project.iam.gserviceaccount.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
WEATHER = ToolSpec("get_weather", "Weather of a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
BASE = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models"


@dataclass
class Vertex:
    """Vertex AI and Google's OAuth token endpoint on one loopback server. Tokens are
    issued with the lifetimes in `lifetimes` (the last one repeats)."""

    replies: list[Reply | StreamReply] = field(default_factory=lambda: [Reply(body=message([text("Hi from Vertex")]))])
    lifetimes: list[int] = field(default_factory=lambda: [3600])
    token_status: int = 200
    seen: list[Request] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, request: Request) -> Reply | StreamReply:
        if request.path == "/token":
            form = dict(urllib.parse.parse_qsl(request.body.decode()))
            self.token_requests.append({"grant_type": form["grant_type"], **verified_claims(form["assertion"])})
            if self.token_status != 200:
                return Reply(self.token_status, {"error": "invalid_grant", "error_description": "Token has been "
                                                                                                "expired or revoked."})
            lifetime = self.lifetimes.pop(0) if len(self.lifetimes) > 1 else self.lifetimes[0]
            return Reply(body={"access_token": f"ya29.token-{len(self.token_requests)}", "expires_in": lifetime,
                               "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/cloud-platform"})
        self.seen.append(request)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(assertion: str) -> dict[str, Any]:
    """The claims of a JWT assertion whose RS256 signature verifies with the test key."""
    header, claims, signature = assertion.split(".")
    assert json.loads(_b64(header))["alg"] == "RS256"
    KEY.public_key().verify(_b64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    decoded: dict[str, Any] = json.loads(_b64(claims))
    return decoded


def key_file(path: Path, token_uri: str, project: str | None = PROJECT) -> Path:
    info = {"type": "service_account", "private_key_id": "test-key-1", "private_key": PRIVATE_PEM,
            "client_email": CLIENT_EMAIL, "client_id": "1234567890", "token_uri": token_uri,
            **({"project_id": project} if project else {})}
    path.write_text(json.dumps(info))
    return path


@pytest.fixture
def vertex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Vertex, FakeHTTPServer, Path]]:
    fake = Vertex()
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUD_ML_REGION",
                 "GOOGLE_CLOUD_LOCATION", "ANTHROPIC_VERTEX_PROJECT_ID", "ANTHROPIC_VERTEX_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud credentials of the machine's
    with FakeHTTPServer(fake) as server:
        yield fake, server, key_file(tmp_path / "service-account.json", f"{server.url}/token")


def make_kernel(server: FakeHTTPServer, **service: Any) -> Kernel:
    options = {"region": REGION, "project_id": PROJECT, **service.pop("options", {})}
    entry = {"provider": "anthropic_vertex", "model": MODEL, "base_url": f"{server.url}/v1", "options": options,
             "retry": RetrySettings(max_attempts=2, initial_backoff=0, jitter=0), **service}
    settings = KernelSettings(services={"claude": ServiceSettings.model_validate(entry)}, default_chat="claude",
                              standard_plugins=False, plugin_autoload=False)
    return Kernel(settings=settings, load_entry_points=False)


def ask(value: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user(value)], **kw)


def bearer(request: Request) -> str:
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


async def test_raw_predict_with_application_default_credentials(
    vertex: tuple[Vertex, FakeHTTPServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server, credentials = vertex
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))  # the project comes from the key file
    monkeypatch.setenv("CLOUD_ML_REGION", REGION)
    entry = {"provider": "anthropic_vertex", "model": MODEL, "base_url": f"{server.url}/v1"}
    settings = KernelSettings(services={"claude": ServiceSettings.model_validate(entry)},
                              standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings=settings, load_entry_points=False)
    response = await kernel.services.chat("claude").complete(ask(tools=[WEATHER], settings={"max_tokens": 20}))
    await kernel.aclose()
    assert response.text == "Hi from Vertex"
    [request] = fake.seen
    assert urllib.parse.unquote(request.path) == f"{BASE}/{MODEL}:rawPredict"
    body = request.json()
    assert "model" not in body and "anthropic_version" in body and body["max_tokens"] == 20
    assert body["tools"][0]["input_schema"] == WEATHER.parameters
    assert bearer(request) == "ya29.token-1"
    [grant] = fake.token_requests
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert (grant["iss"], grant["aud"]) == (CLIENT_EMAIL, "https://oauth2.googleapis.com/token")  # posted here
    assert grant["scope"] == "https://www.googleapis.com/auth/cloud-platform"


async def test_a_token_about_to_expire_is_refreshed(vertex: tuple[Vertex, FakeHTTPServer, Path]) -> None:
    fake, server, credentials = vertex
    fake.lifetimes = [100, 3600]  # google-auth refreshes a token within 225 s of its expiry
    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    chat = kernel.services.chat("claude")
    for _ in range(3):
        await chat.complete(ask())
    await kernel.aclose()
    assert [bearer(r) for r in fake.seen] == ["ya29.token-1", "ya29.token-2", "ya29.token-2"]
    assert len(fake.token_requests) == 2


async def test_streaming_raw_predict(vertex: tuple[Vertex, FakeHTTPServer, Path]) -> None:
    fake, server, credentials = vertex
    events_out = stream_events(["Bon", "jour"], tool=("get_weather", '{"city": "Nice"}'))
    fake.replies = [StreamReply(lambda: sse(events_out))]
    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    events = [e async for e in kernel.services.chat("claude").stream(ask(tools=[WEATHER]))]
    await kernel.aclose()
    assert urllib.parse.unquote(fake.seen[0].path) == f"{BASE}/{MODEL}:streamRawPredict"
    assert fake.seen[0].json()["stream"] is True
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Bonjour"
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Nice"}
    assert events[-1] == StreamEnd("tool_calls", "claude-test-20250101")


async def test_the_tool_loop_runs_on_vertex(vertex: tuple[Vertex, FakeHTTPServer, Path]) -> None:
    fake, server, credentials = vertex
    fake.replies = [Reply(body=message([tool_use("weather-get_weather", {"city": "Lyon"})], stop="tool_use")),
                    Reply(body=message([text("Sunny in Lyon.")]))]
    seen: list[str] = []

    @kernel_function
    def get_weather(city: str) -> str:
        """Weather of a city."""
        seen.append(city)
        return "sunny"

    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    kernel.add_function(get_weather, plugin="weather")
    result = await kernel.chat("Weather in Lyon?", tool_choice="weather.get_weather")
    await kernel.aclose()
    assert seen == ["Lyon"] and result.text == "Sunny in Lyon."
    first = fake.seen[0].json()
    assert first["tool_choice"] == {"type": "tool", "name": "weather-get_weather"}


async def test_quota_errors_and_failed_refresh_map_to_kernel_errors(
    vertex: tuple[Vertex, FakeHTTPServer, Path]
) -> None:
    fake, server, credentials = vertex
    fake.replies = [Reply(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message":
                                          "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests"}},
                          {"retry-after": "0"})]
    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    with pytest.raises(ProviderStatusError) as info:
        await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    assert info.value.status_code == 429 and info.value.retryable and "Quota exceeded" in str(info.value)
    assert len(fake.seen) == 2  # retried once (max_attempts=2)

    fake.token_status = 400
    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    with pytest.raises(ProviderError, match="could not refresh the Google access token") as refused:
        await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    assert not refused.value.retryable and len(fake.seen) == 2  # Vertex was not called
    assert "PRIVATE KEY" not in str(refused.value)


async def test_missing_settings_are_named(vertex: tuple[Vertex, FakeHTTPServer, Path], tmp_path: Path) -> None:
    fake, server, credentials = vertex
    kernel = make_kernel(server, options={"credentials_file": str(tmp_path / "missing.json")})
    with pytest.raises(MissingSecretError, match=r"GOOGLE_APPLICATION_CREDENTIALS|credentials_file"):
        kernel.services.get("claude")
    await kernel.aclose()
    settings = KernelSettings(services={"claude": ServiceSettings(
        provider="anthropic_vertex", model=MODEL, options={"credentials_file": str(credentials)})})
    kernel = Kernel(settings=settings, load_entry_points=False)
    with pytest.raises(ConfigurationError, match=r"options\.region.*CLOUD_ML_REGION"):
        kernel.services.get("claude")
    await kernel.aclose()
    no_project = key_file(tmp_path / "no-project.json", f"{server.url}/token", project=None)
    settings = KernelSettings(services={"claude": ServiceSettings(
        provider="anthropic_vertex", model=MODEL, options={"credentials_file": str(no_project), "region": REGION})})
    kernel = Kernel(settings=settings, load_entry_points=False)
    with pytest.raises(ConfigurationError, match=r"options\.project_id.*GOOGLE_CLOUD_PROJECT"):
        kernel.services.get("claude")
    await kernel.aclose()
    assert not fake.seen and not fake.token_requests


async def test_probe_counts_tokens_and_generates_nothing(vertex: tuple[Vertex, FakeHTTPServer, Path]) -> None:
    fake, server, credentials = vertex
    fake.replies = [Reply(body={"input_tokens": 8})]
    kernel = make_kernel(server, options={"credentials_file": str(credentials)})
    [result] = await probe_services(kernel.services)
    await kernel.aclose()
    assert result.ok and result.reachable and result.model_available and "8 input token(s)" in result.detail
    [request] = fake.seen
    assert urllib.parse.unquote(request.path) == f"{BASE}/count-tokens:rawPredict"
    assert request.json()["model"] == MODEL and bearer(request) == "ya29.token-1"
    assert result.profile is not None and result.profile["structured_output"] == "tool"
