"""`anthropic_bedrock`: the Anthropic SDK's own `AsyncAnthropicBedrock` client against a
loopback server speaking Bedrock's documented wire format: `POST /model/{model}/invoke`
(a Messages API body with `anthropic_version` and no `model`) and
`/invoke-with-response-stream`, whose answer is AWS's binary event stream (each Messages
event base64 in a `chunk` frame; errors as `exception` frames), encoded here by hand
(tests/anthropic_fakes.py) and decoded by the SDK.

Credentials come from AWS's usual environment variables; the test recomputes the SigV4
signature of what arrived, with the secret key, so the signature provably covers the body
and uses those credentials and the configured region. No request leaves the machine: the
instance-metadata lookup is disabled and the AWS config files point at empty paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, kernel_function
from kernel.contents import ChatMessage, ChatRequest, StreamEnd, TextDelta, ToolCallDelta, ToolSpec, UsageEvent
from kernel.errors import ConfigurationError, MissingSecretError, ProviderStatusError
from kernel.services import probe_services
from kernel.settings import KernelSettings, RetrySettings, ServiceSettings
from tests.anthropic_fakes import (
    bedrock_chunk,
    bedrock_exception,
    event_stream,
    message,
    stream_events,
    text,
    tool_use,
    verify_sigv4,
)
from tests.http_fakes import FakeHTTPServer, Reply, Request, StreamReply

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
ACCESS_KEY = "AKIDEXAMPLEKERNEL01"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-example-0123456789"
REGION = "us-west-2"
WEATHER = ToolSpec("get_weather", "Weather of a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
EVENT_STREAM = {"content-type": "application/vnd.amazon.eventstream"}


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS credentials from the usual variables, and nothing else AWS could look at."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_DEFAULT_REGION",
                 "ANTHROPIC_BEDROCK_BASE_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)


class Bedrock:
    """The loopback Bedrock runtime: answers from a queue (the last reply repeats)."""

    def __init__(self, *replies: Reply | StreamReply) -> None:
        self.replies = list(replies)
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Reply | StreamReply:
        self.seen.append(request)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def bedrock() -> Iterator[tuple[Bedrock, FakeHTTPServer]]:
    fake = Bedrock(Reply(body=message([text("Hello from Bedrock")])))
    with FakeHTTPServer(fake) as server:
        yield fake, server


def make_kernel(server: FakeHTTPServer, **service: Any) -> Kernel:
    entry = {"provider": "anthropic_bedrock", "model": MODEL, "base_url": server.url,
             "retry": RetrySettings(max_attempts=3, initial_backoff=0, jitter=0), **service}
    settings = KernelSettings(services={"claude": ServiceSettings.model_validate(entry)}, default_chat="claude",
                              standard_plugins=False, plugin_autoload=False)
    return Kernel(settings=settings, load_entry_points=False)


def ask(value: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.system("Be brief."), ChatMessage.user(value)], **kw)


async def test_invoke_path_body_and_sigv4_from_the_environment(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    kernel = make_kernel(server, settings={"max_tokens": 50, "temperature": 0.2})
    response = await kernel.services.chat("claude").complete(ask(tools=[WEATHER], settings={"user": "u-1"}))
    await kernel.aclose()
    assert response.text == "Hello from Bedrock" and response.usage.input_tokens == 10
    [request] = fake.seen
    assert (request.method, request.path) == ("POST", f"/model/{MODEL}/invoke")
    body = request.json()
    assert "model" not in body and "stream" not in body and "anthropic_version" in body
    assert body["system"] == "Be brief." and body["max_tokens"] == 50 and body["temperature"] == 0.2
    assert body["tools"][0]["name"] == "get_weather"
    assert "metadata" not in body  # `user` is dropped on Bedrock (with a warning), not sent
    scope = verify_sigv4(request.method, request.path, request.headers, request.body, SECRET_KEY)
    assert (scope["access_key"], scope["region"], scope["service"]) == (ACCESS_KEY, REGION, "bedrock")
    assert request.headers["x-amz-security-token"] == SESSION_TOKEN
    assert "host" in scope["signed"].split(";")


async def test_region_option_wins_and_signs(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    kernel = make_kernel(server, options={"region": "eu-central-1"})
    await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    scope = verify_sigv4("POST", fake.seen[0].path, fake.seen[0].headers, fake.seen[0].body, SECRET_KEY)
    assert scope["region"] == "eu-central-1"


async def test_streaming_over_the_aws_event_stream(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    frames = [bedrock_chunk(e) for e in stream_events(["Hel", "lo", "!"], tool=("get_weather", '{"city": "Lima"}'))]
    fake.replies = [StreamReply(lambda: event_stream(frames), headers=EVENT_STREAM)]
    kernel = make_kernel(server)
    events = [e async for e in kernel.services.chat("claude").stream(ask(tools=[WEATHER]))]
    await kernel.aclose()
    assert fake.seen[0].path == f"/model/{MODEL}/invoke-with-response-stream"
    assert "stream" not in fake.seen[0].json()  # the path says it
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello!"
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "get_weather" and json.loads("".join(c.arguments for c in calls)) == {"city": "Lima"}
    usage = next(e for e in events if isinstance(e, UsageEvent)).usage
    assert (usage.input_tokens, usage.output_tokens) == (12, 7)
    assert events[-1] == StreamEnd("tool_calls", "claude-test-20250101")


async def test_a_throttling_frame_is_a_retryable_429_and_is_retried(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    throttled = [bedrock_exception("throttlingException", "Too many requests, please wait before trying again.")]
    fine = [bedrock_chunk(e) for e in stream_events(["ok"])]
    fake.replies = [StreamReply(lambda: event_stream(throttled), headers=EVENT_STREAM),
                    StreamReply(lambda: event_stream(fine), headers=EVENT_STREAM)]
    kernel = make_kernel(server, retry={"max_attempts": 1})
    with pytest.raises(ProviderStatusError) as info:
        [e async for e in kernel.services.chat("claude").stream(ask())]
    assert info.value.status_code == 429 and info.value.retryable and "Too many requests" in str(info.value)
    await kernel.aclose()
    kernel = make_kernel(server)  # with retries: the second stream answers
    events = [e async for e in kernel.services.chat("claude").stream(ask())]
    await kernel.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ok" and len(fake.seen) == 2


async def test_http_errors_map_to_kernel_errors(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    fake.replies = [Reply(429, {"message": "Too many tokens, please wait before trying again."},
                          {"x-amzn-errortype": "ThrottlingException", "retry-after": "0"}),
                    Reply(403, {"message": "You don't have access to the model with the specified model ID."},
                          {"x-amzn-errortype": "AccessDeniedException"})]
    kernel = make_kernel(server)
    with pytest.raises(ProviderStatusError) as info:
        await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    assert info.value.status_code == 403 and not info.value.retryable and "access to the model" in str(info.value)
    assert len(fake.seen) == 2  # the 429 was retried, the 403 was not
    assert SECRET_KEY not in str(info.value)


async def test_the_tool_loop_runs_on_bedrock(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    fake.replies = [Reply(body=message([tool_use("weather-get_weather", {"city": "Quito"})], stop="tool_use")),
                    Reply(body=message([text("12 degrees in Quito.")]))]
    seen: list[str] = []

    @kernel_function
    def get_weather(city: str) -> str:
        """Weather of a city."""
        seen.append(city)
        return "12 degrees"

    kernel = make_kernel(server)
    kernel.add_function(get_weather, plugin="weather")
    result = await kernel.chat("Weather in Quito?")
    await kernel.aclose()
    assert seen == ["Quito"] and result.text == "12 degrees in Quito."
    last_turn = fake.seen[1].json()["messages"][-1]
    assert last_turn["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 degrees"}


async def test_a_bedrock_api_key_is_a_bearer_token(bedrock: tuple[Bedrock, FakeHTTPServer],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = bedrock
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-123456")
    kernel = make_kernel(server)
    await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    assert fake.seen[0].headers["authorization"] == "Bearer bedrock-api-key-123456"
    assert "x-amz-date" not in fake.seen[0].headers


async def test_no_credentials_and_no_region_are_named(bedrock: tuple[Bedrock, FakeHTTPServer],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake, server = bedrock
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    kernel = make_kernel(server, options={"region": "ap-southeast-4"})  # a session nothing cached
    with pytest.raises(MissingSecretError, match=r"AWS_ACCESS_KEY_ID.*AWS_PROFILE.*AWS_BEARER_TOKEN_BEDROCK"):
        await kernel.services.chat("claude").complete(ask())
    await kernel.aclose()
    assert not fake.seen
    monkeypatch.delenv("AWS_REGION")
    kernel = make_kernel(server)
    with pytest.raises(ConfigurationError, match=r"options\.region"):
        kernel.services.get("claude")
    await kernel.aclose()


async def test_probe_spends_no_tokens(bedrock: tuple[Bedrock, FakeHTTPServer]) -> None:
    fake, server = bedrock
    fake.replies = [Reply(400, {"message": "Malformed input request: #: required key [messages] not found"},
                          {"x-amzn-errortype": "ValidationException"})]
    kernel = make_kernel(server)
    [result] = await probe_services(kernel.services)
    await kernel.aclose()
    assert result.ok and result.reachable and result.provider == "anthropic_bedrock"
    assert "credentials accepted" in result.detail
    [request] = fake.seen
    assert request.path == f"/model/{MODEL}/invoke" and "messages" not in request.json()
    verify_sigv4("POST", request.path, request.headers, request.body, SECRET_KEY)
    assert result.profile is not None and result.profile["structured_output"] == "tool"
    assert "user" not in result.profile["settings"]
