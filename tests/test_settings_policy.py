"""The ONE execution-settings policy (`kernel.services.profiles`) across providers, checked
on what each connector really sends:

* a setting the provider honours is sent under the provider's own name;
* a neutral setting it cannot honour is dropped with a warning, once per service and
  setting, and the call still succeeds;
* an unknown setting (a typo) is a ConfigurationError naming the setting, the service and
  the provider, for every provider alike, and nothing is sent;
* `extra_body` is merged into the request body where there is one (openai, anthropic) and
  refused where there is none (the in-process llama.cpp model);
* openai's `n` other than 1 is refused (one request, one answer).

openai and anthropic are configured services whose HTTP client is injected
(`httpx2.MockTransport`, the SDKs are built on httpx2); the local llama.cpp connector is
checked on the parameters it would give llama.cpp (`_params`), without loading a model.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from structlog.testing import capture_logs

from connectors.llamacpp import LlamaCppChatModel
from kernel import Kernel
from kernel import logging as klog
from kernel.contents import ChatMessage, ChatRequest, ChatResponse
from kernel.errors import ConfigurationError
from kernel.settings import KernelSettings, ServiceSettings

DROPPED = "execution setting not supported by the provider; dropped"
_names = itertools.count()


def unique(prefix: str) -> str:
    """A service name no other test used: the policy warns once per service and setting
    for the whole process."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """The kernel's log events of the test, whatever logging configuration earlier tests
    left behind (structlog configured by `kernel.logging.configure()`, or not at all)."""
    was_configured = structlog.is_configured()
    klog._generation += 1  # the kernel's lazy loggers pick up the capturing configuration
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        if not was_configured:
            structlog.reset_defaults()
        klog._generation += 1  # ... and let go of it afterwards
        klog.refresh()


def drops(entries: list[dict[str, Any]], service: str) -> list[tuple[str, str, str]]:
    return [
        (e["log_level"], e["setting"], e["provider"])
        for e in entries
        if e.get("event") == DROPPED and e.get("service") == service
    ]


def ask(**settings: Any) -> ChatRequest:
    return ChatRequest([ChatMessage.user("hi")], settings=settings)


class Recorder:
    """A MockTransport handler that keeps every request body and answers `reply`."""

    def __init__(self, reply: Callable[[], httpx2.Response]) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        return self.reply()

    @property
    def body(self) -> dict[str, Any]:
        [body] = self.bodies
        return body


def openai_reply() -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
    )


def anthropic_reply() -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    )


SERVICES: dict[str, tuple[dict[str, Any], Callable[[], httpx2.Response]]] = {
    "openai": ({"provider": "openai", "model": "gpt-test", "base_url": "http://fake/v1"}, openai_reply),
    "anthropic": (
        {"provider": "anthropic", "model": "claude-test", "api_key": "sk-ant-test-key-0123"},
        anthropic_reply,
    ),
}


class Remote:
    """A kernel with one configured service of `provider` whose HTTP client records."""

    def __init__(self, provider: str, **settings: Any) -> None:
        config, reply = SERVICES[provider]
        self.name = unique(provider)
        self.recorder = Recorder(reply)
        svc = ServiceSettings.model_validate({**config, "settings": settings, "retry": {"max_attempts": 1}})
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(self.recorder))
        self.kernel = Kernel(
            KernelSettings(services={self.name: svc}), load_entry_points=False, http_clients={self.name: client}
        )

    async def complete(self, **settings: Any) -> ChatResponse:
        return await self.kernel.complete(ask(**settings), service=self.name)

    async def send(self, **settings: Any) -> dict[str, Any]:
        """The body sent for a request with `settings` (the call must succeed)."""
        response = await self.complete(**settings)
        assert response.text == "ok"
        return self.recorder.bodies[-1]


@pytest.fixture
async def remote() -> AsyncIterator[Callable[..., Remote]]:
    """Builds `Remote`s; closes their kernels (and injected clients) after the test."""
    made: list[Remote] = []

    def make(provider: str, **settings: Any) -> Remote:
        made.append(Remote(provider, **settings))
        return made[-1]

    yield make
    for built in made:
        await built.kernel.aclose()


def local(tmp_path: Path, **settings: Any) -> LlamaCppChatModel:
    """The local connector, built without loading a model (it loads on the first generation)."""
    dummy = tmp_path / "not-a-model.gguf"
    dummy.write_bytes(b"")
    return LlamaCppChatModel(dummy, settings=settings, service=unique("local"))


def local_params(model: LlamaCppChatModel, **settings: Any) -> dict[str, Any]:
    return model._params(ask(**settings), threading.Event())


# -- honoured settings go out under the provider's name ------------------------------


async def test_openai_sends_honoured_settings_under_its_names(
    remote: Callable[..., Remote], logged: list[dict[str, Any]]
) -> None:
    service = remote("openai", temperature=0.2)
    body = await service.send(max_tokens=7, seed=42, stop=["\n"], top_p=0.9, user="u-1")
    assert (body["max_tokens"], body["seed"], body["stop"], body["top_p"], body["user"]) == (7, 42, ["\n"], 0.9, "u-1")
    assert body["temperature"] == 0.2  # a default setting of the service
    assert drops(logged, service.name) == []


async def test_anthropic_sends_honoured_settings_under_its_names(
    remote: Callable[..., Remote], logged: list[dict[str, Any]]
) -> None:
    service = remote("anthropic")
    body = await service.send(stop="END", user="user-42", temperature=0.3, max_tokens=9, top_k=5)
    assert body["stop_sequences"] == ["END"] and "stop" not in body
    assert body["metadata"] == {"user_id": "user-42"} and "user" not in body
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0.3, 9, 5)
    body = await service.send(stop=["a", "b"])
    assert body["stop_sequences"] == ["a", "b"]
    assert body["max_tokens"] == 1024  # Anthropic requires it: the connector's default
    assert drops(logged, service.name) == []


def test_local_passes_honoured_settings_under_llama_cpp_names(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    model = local(tmp_path, temperature=0.1)
    params = local_params(model, repeat_penalty=1.3, max_tokens=5, top_k=40, seed=3, stop=["x"])
    assert (params["repeat_penalty"], params["max_tokens"], params["top_k"], params["seed"]) == (1.3, 5, 40, 3)
    assert params["stop"][0] == "x" and params["temperature"] == 0.1  # (then the chat format's own stops)
    assert drops(logged, model.service) == []
    assert model._llama is None  # building the parameters loaded nothing


# -- neutral settings the provider cannot honour: dropped, warned once ---------------


@pytest.mark.parametrize(("provider", "setting", "value"), [("openai", "top_k", 5), ("anthropic", "seed", 7)])
async def test_a_neutral_setting_a_remote_provider_cannot_honour_is_dropped_with_one_warning(
    provider: str, setting: str, value: Any, remote: Callable[..., Remote], logged: list[dict[str, Any]]
) -> None:
    service = remote(provider)
    first = await service.send(**{setting: value, "max_tokens": 4})
    second = await service.send(**{setting: value, "max_tokens": 4})
    for body in (first, second):
        assert setting not in body
        assert body["max_tokens"] == 4  # the rest of the request is intact
    assert drops(logged, service.name) == [("warning", setting, provider)]  # once per service and setting
    other = remote(provider)
    await other.send(**{setting: value})
    assert drops(logged, other.name) == [("warning", setting, provider)]  # and once for another service


def test_a_neutral_setting_local_cannot_honour_is_dropped_with_one_warning(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    model = local(tmp_path)
    for _ in range(2):
        params = local_params(model, user="u-1", max_tokens=4)
        assert "user" not in params and params["max_tokens"] == 4
    assert drops(logged, model.service) == [("warning", "user", "local")]


# -- unknown settings: an error naming setting, service and provider, nothing sent ----


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_unknown_setting_is_refused_by_remote_providers_before_sending(
    provider: str, remote: Callable[..., Remote]
) -> None:
    service = remote(provider)
    with pytest.raises(ConfigurationError) as info:
        await service.complete(temprature=0.5)
    message = str(info.value)
    assert "'temprature'" in message and f"service {service.name!r}" in message and f"provider {provider}" in message
    assert service.recorder.bodies == []


async def test_an_unknown_setting_is_refused_by_the_local_provider_before_generating(tmp_path: Path) -> None:
    model = local(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        local_params(model, temprature=0.5)
    message = str(info.value)
    assert "'temprature'" in message and f"service {model.service!r}" in message and "provider local" in message
    # Through a real call: refused before the (dummy) model would be loaded.
    with pytest.raises(ConfigurationError, match="'temprature'"):
        await model.complete(ask(temprature=0.5))
    assert model._llama is None


async def test_an_unknown_default_setting_of_the_service_is_refused_too(remote: Callable[..., Remote]) -> None:
    service = remote("openai", max_token=5)
    with pytest.raises(ConfigurationError, match=r"'max_token'"):
        await service.complete()
    assert service.recorder.bodies == []


# -- extra_body ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_extra_body_is_merged_into_the_request_body(provider: str, remote: Callable[..., Remote]) -> None:
    service = remote(provider, extra_body={"server_flag": True})
    body = await service.send()
    assert body["server_flag"] is True and "extra_body" not in body  # merged, not nested
    body = await service.send(extra_body={"min_p": 0.05, "top_k": 40}, max_tokens=3)
    assert (body["min_p"], body["top_k"], body["max_tokens"]) == (0.05, 40, 3)
    assert "extra_body" not in body


async def test_extra_body_is_refused_by_the_local_provider(tmp_path: Path) -> None:
    model = local(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        local_params(model, extra_body={"min_p": 0.05})
    assert "'extra_body'" in str(info.value) and f"service {model.service!r}" in str(info.value)
    with pytest.raises(ConfigurationError, match="'extra_body'"):
        await model.complete(ask(extra_body={"min_p": 0.05}))
    assert model._llama is None


# -- n -------------------------------------------------------------------------------


async def test_openai_refuses_n_other_than_one(remote: Callable[..., Remote]) -> None:
    service = remote("openai")
    with pytest.raises(ConfigurationError, match="n=2") as info:
        await service.complete(n=2)
    assert f"service {service.name!r}" in str(info.value)
    assert service.recorder.bodies == []
    body = await service.send(n=1)
    assert "n" not in body  # one answer is what is asked anyway
