"""The tool loop against a real model: llama-cpp-python's OpenAI-compatible server with
Gemma 3 270M on loopback, reached through the OpenAI connector.

The model is tiny: it calls a tool when `tool_choice` names the function (the server
then constrains the arguments to the schema) and does not pick tools by itself under
`auto`. So these tests assert structure (the function ran with a string, the loop paired
the result and ended with an assistant answer), never wording.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, kernel_function
from kernel.chat import run_chat, stream_chat
from kernel.contents import FinalMessage, ToolCallFinished, ToolCallStarted

pytestmark = [pytest.mark.llama_server, pytest.mark.slow]


class Weather:
    def __init__(self) -> None:
        self.cities: list[Any] = []

    @kernel_function
    def get_temperature(self, city: str) -> str:
        """Current temperature of a city, in degrees Celsius."""
        self.cities.append(city)
        return f"It is 21 degrees Celsius in {city}."


def make_kernel(server: Any, weather: Weather) -> Kernel:
    settings = KernelSettings(
        services={
            "gemma": {
                "provider": "openai",
                "model": server.model,
                "base_url": server.base_url,
                "api_key": "not-needed",
                "timeout": 120,
                "settings": {"temperature": 0.0, "max_tokens": 32},
            }
        },
        default_chat="gemma",
        standard_plugins=False,
        plugin_autoload=False,
    )
    kernel = Kernel(settings=settings, load_entry_points=False)
    kernel.add_plugin(weather, name="weather")
    return kernel


async def test_forced_tool_call_runs_the_function_and_completes(llama_server: Any) -> None:
    weather = Weather()
    kernel = make_kernel(llama_server, weather)
    try:
        result = await run_chat(
            kernel,
            "What is the temperature in Paris?",
            tool_choice="weather.get_temperature",
            policy={"max_rounds": 2},
        )
    finally:
        await kernel.aclose()
    assert weather.cities, "the forced call did not run the kernel function"
    assert all(isinstance(city, str) for city in weather.cities)
    first = result.messages[0]
    assert first.role == "assistant" and first.tool_calls
    assert first.tool_calls[0].name == "weather-get_temperature"
    assert isinstance(json.loads(first.tool_calls[0].arguments)["city"], str)
    tool_message = result.messages[1]
    assert tool_message.role == "tool" and tool_message.tool_call_id == first.tool_calls[0].id
    assert tool_message.content.startswith("It is 21 degrees Celsius in ")
    assert result.rounds >= 1 and result.stop_reason in ("answered", "exhausted")
    assert result.response.message.role == "assistant" and not result.response.message.tool_calls
    assert result.messages[-1] is result.response.message
    assert result.usage.requests >= 2 and result.usage.input_tokens > 0


async def test_forced_tool_call_streaming(llama_server: Any) -> None:
    weather = Weather()
    kernel = make_kernel(llama_server, weather)
    try:
        events = [
            e
            async for e in stream_chat(
                kernel, "Temperature in Oslo?", tool_choice="weather.get_temperature", policy={"max_rounds": 2}
            )
        ]
    finally:
        await kernel.aclose()
    assert weather.cities and all(isinstance(city, str) for city in weather.cities)
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert started and len(started) == len(finished)
    assert not finished[0].result.is_error
    assert isinstance(events[-1], FinalMessage)
    assert events[-1].message.role == "assistant" and not events[-1].message.tool_calls
    assert events[-1].usage.requests >= 2
