"""Named presets for OpenAI-compatible servers: `ollama`, `vllm`, `lmstudio`,
`llamacpp_server`.

Part one, on the wire (the real openai SDK, faked at the HTTP boundary with
`httpx2.MockTransport`): `provider = "ollama"` and a model is the whole configuration
(default base URL, no key, no Authorization secret needed); each profile's
structured-output form and tool-choice modes, and a tool choice a server does not honour
sent as its nearest equivalent; a server's own settings (`top_k`, ...) in the body.

Part two, against the real llama.cpp OpenAI-compatible server (llama-cpp-python's, with
Gemma 3 270M, started by the `llama_server` fixture): `provider = "llamacpp_server"` with
its base_url: a tool call forced by a named tool_choice, structured output in its
`json_object` + schema form, streaming, the kernel's tool loop, and the token-free probe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import jsonschema
import pytest
import structlog
from structlog.testing import capture_logs

from kernel import Kernel, kernel_function
from kernel import logging as klog
from kernel.contents import ChatMessage, ChatRequest, StreamEnd, TextDelta, ToolChoice, ToolSpec, UsageEvent
from kernel.errors import ConfigurationError
from kernel.services import probe_services
from kernel.settings import KernelSettings, ServiceSettings
from tests.fixtures_llama import LlamaServer

WEATHER = ToolSpec("get_weather", "Current weather of a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = ToolSpec("get_time", "Current time of a city",
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
ANSWER = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
_count = iter(range(10**6))


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    was_configured = structlog.is_configured()
    klog._generation += 1
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        if not was_configured:
            structlog.reset_defaults()


class Wire:
    """Every request the SDK sends, answered with a plain completion."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if request.url.path.endswith("/models"):
            return httpx2.Response(200, json={"object": "list", "data": [
                {"id": "llama3.2:latest", "object": "model", "created": 1, "owned_by": "library"}]})
        return httpx2.Response(200, json=ANSWER)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


def kernel_for(provider: str, wire: Wire | None = None, **service: Any) -> tuple[Kernel, str]:
    name = f"{provider}-{next(_count)}"  # warnings are once per service: a fresh name per test
    settings = KernelSettings(services={name: ServiceSettings.model_validate(
        {"provider": provider, "model": "llama3.2", **service})}, standard_plugins=False, plugin_autoload=False)
    clients = {name: httpx2.AsyncClient(transport=httpx2.MockTransport(wire))} if wire is not None else None
    return Kernel(settings=settings, load_entry_points=False, http_clients=clients), name


@pytest.mark.parametrize(("provider", "url", "structured", "choices"), [
    ("ollama", "http://localhost:11434/v1", "json_schema", ["auto"]),
    ("vllm", "http://localhost:8000/v1", "json_schema", ["auto", "function", "none", "required"]),
    ("lmstudio", "http://localhost:1234/v1", "json_schema", ["auto", "none", "required"]),
    ("llamacpp_server", "http://localhost:8000/v1", "json_object", ["function", "none"]),
])
async def test_provider_and_model_are_the_whole_configuration(
    provider: str, url: str, structured: str, choices: list[str]
) -> None:
    wire = Wire()
    kernel, name = kernel_for(provider, wire)
    chat = kernel.services.get(name)
    assert chat.provider == provider and getattr(chat, "base_url", None) == url
    await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")], output_schema=PERSON))
    request = wire.requests[-1]
    assert str(request.url) == f"{url}/chat/completions"
    assert request.headers["authorization"] == "Bearer not-needed"  # no key asked for, none leaked
    assert wire.body["response_format"]["type"] == structured
    if structured == "json_object":
        assert wire.body["response_format"]["schema"] == PERSON
    [probed] = await probe_services(kernel.services, [name])
    await kernel.aclose()
    assert probed.profile is not None and probed.profile["structured_output"] == structured
    assert probed.profile["tool_choices"] == choices
    assert probed.reachable and wire.requests[-1].url.path == "/v1/models"
    # The server lists `llama3.2:latest`: Ollama's name for `llama3.2`; for the others, another model.
    assert probed.model_available is (provider == "ollama") and probed.ok is (provider == "ollama")


def test_ollama_host_variable_and_explicit_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9999")
    kernel, name = kernel_for("ollama")
    assert getattr(kernel.services.get(name), "base_url", None) == "http://127.0.0.1:9999/v1"
    kernel, name = kernel_for("ollama", base_url="http://gpu-box:11434/v1")
    assert getattr(kernel.services.get(name), "base_url", None) == "http://gpu-box:11434/v1"


async def test_tool_choice_within_what_each_server_honours(logged: list[dict[str, Any]]) -> None:
    named = ToolChoice.parse("get_weather")
    cases: list[tuple[str, ToolChoice, list[ToolSpec], list[str], Any]] = [
        # provider, choice, offered tools -> tools sent, tool_choice sent (None: field absent)
        ("vllm", named, [WEATHER, TIME], ["get_weather", "get_time"],
         {"type": "function", "function": {"name": "get_weather"}}),
        ("lmstudio", named, [WEATHER, TIME], ["get_weather"], "required"),  # the same thing, said otherwise
        ("llamacpp_server", ToolChoice("required"), [WEATHER], ["get_weather"],
         {"type": "function", "function": {"name": "get_weather"}}),
        ("llamacpp_server", ToolChoice("none"), [WEATHER, TIME], ["get_weather", "get_time"], "none"),
        ("ollama", ToolChoice("none"), [WEATHER, TIME], [], None),  # no tools: no call possible
        ("ollama", named, [WEATHER, TIME], ["get_weather"], "auto"),  # not forced: warned
        ("llamacpp_server", ToolChoice("auto"), [WEATHER], ["get_weather"], None),  # warned
        ("llamacpp_server", ToolChoice("required"), [WEATHER, TIME], ["get_weather", "get_time"], None),  # warned
    ]
    for provider, choice, tools, expected_tools, expected_choice in cases:
        wire = Wire()
        kernel, name = kernel_for(provider, wire)
        await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")], tools, choice))
        await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")], tools, choice))
        await kernel.aclose()
        body = wire.body
        assert [t["function"]["name"] for t in body.get("tools", [])] == expected_tools, (provider, choice)
        assert body.get("tool_choice") == expected_choice, (provider, choice)
    warnings = [e for e in logged if "tool_choice" in str(e.get("event"))]
    assert len(warnings) == 3  # once per service, not per request
    assert {w["provider"] for w in warnings} == {"ollama", "llamacpp_server"}


async def test_server_settings_travel_in_the_body(logged: list[dict[str, Any]]) -> None:
    wire = Wire()
    kernel, name = kernel_for("vllm", wire, settings={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")], settings={"max_tokens": 5}))
    assert (wire.body["top_k"], wire.body["min_p"], wire.body["repetition_penalty"], wire.body["max_tokens"]) == (
        20, 0.05, 1.1, 5)
    wire = Wire()
    kernel, name = kernel_for("ollama", wire, settings={"top_k": 20, "user": "u1"})
    await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")]))
    assert "top_k" not in wire.body and "user" not in wire.body  # neutral settings Ollama ignores: dropped
    assert {e["setting"] for e in logged if e.get("event", "").startswith("execution setting")} >= {"top_k", "user"}
    with pytest.raises(ConfigurationError, match="repetition_penalty"):
        await kernel.services.chat(name).complete(ChatRequest([ChatMessage.user("hi")],
                                                              settings={"repetition_penalty": 1.2}))
    await kernel.aclose()


def test_tool_choices_option_overrides_the_profile() -> None:
    kernel, name = kernel_for("llamacpp_server", options={"tool_choices": ["auto", "required", "none", "function"]})
    assert kernel.services.get(name).profile.tool_choices == frozenset(  # type: ignore[attr-defined]
        {"auto", "required", "none", "function"})
    kernel, name = kernel_for("llamacpp_server", options={"tool_choices": ["always"]})
    with pytest.raises(ConfigurationError, match="always"):
        kernel.services.get(name)


# -- the real llama.cpp server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_kernel(llama_server: LlamaServer) -> Iterator[Kernel]:
    settings = KernelSettings(services={"gemma": ServiceSettings(
        provider="llamacpp_server", model=llama_server.model, base_url=llama_server.base_url, timeout=120,
        settings={"temperature": 0.0, "seed": 1, "max_tokens": 48})},
        default_chat="gemma", standard_plugins=False, plugin_autoload=False)
    yield Kernel(settings=settings, load_entry_points=False)


@pytest.mark.llama_server
async def test_llamacpp_named_tool_choice_calls_the_tool(llama_kernel: Kernel) -> None:
    response = await llama_kernel.services.chat("gemma").complete(ChatRequest(
        [ChatMessage.user("What is the weather in Paris?")], [WEATHER, TIME], ToolChoice.parse("get_weather")))
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)


@pytest.mark.llama_server
async def test_llamacpp_structured_output_matches_the_schema(llama_kernel: Kernel) -> None:
    response = await llama_kernel.services.chat("gemma").complete(ChatRequest(
        [ChatMessage.user("Invent a person, as JSON.")], output_schema=PERSON))
    jsonschema.validate(json.loads(response.text), PERSON)


@pytest.mark.llama_server
async def test_llamacpp_streaming(llama_kernel: Kernel) -> None:
    events = [e async for e in llama_kernel.services.chat("gemma").stream(ChatRequest(
        [ChatMessage.user("Count from one to five.")], settings={"max_tokens": 16}))]
    assert len([e for e in events if isinstance(e, TextDelta)]) >= 2
    assert isinstance(events[-2], UsageEvent) and events[-2].usage.requests == 1  # (this server sends no usage)
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason in ("stop", "length")


@pytest.mark.llama_server
async def test_llamacpp_tool_loop_and_probe(llama_kernel: Kernel) -> None:
    cities: list[str] = []

    @kernel_function
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        cities.append(city)
        return f"18 degrees and sunny in {city}."

    llama_kernel.add_function(get_weather, plugin="weather")
    result = await llama_kernel.chat("Weather in Rome?", tool_choice="weather.get_weather", policy={"max_rounds": 1})
    assert cities and all(isinstance(c, str) for c in cities)
    assert result.messages[1].role == "tool" and result.messages[1].content.startswith("18 degrees")
    assert result.response.message.role == "assistant" and not result.response.message.tool_calls
    [probed] = await probe_services(llama_kernel.services, ["gemma"])
    assert probed.ok and probed.reachable and probed.model_available
    assert "GET /models" in probed.detail and probed.provider == "llamacpp_server"
