"""Telemetry: a chat turn's OpenTelemetry spans, printed to the console.

Needs the `otel` extra (`pip install "orchestration-kernel[otel]"`). The application owns
the OpenTelemetry SDK: here a tracer provider that prints each finished span as JSON. With
`telemetry.enabled` (`KERNEL_TELEMETRY__ENABLED=true`, or `[telemetry]` in kernel.toml) the
kernel sends it one span per invocation, model call and tool call, named after the GenAI
semantic conventions (`invoke_agent chat`, `chat MODEL`, `execute_tool math.multiply`) with
their attributes (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.tool.call.id`,
...); `capture_content` adds the messages (masked). The whole turn sits under the
application's own span. Runs offline: the model is the scripted one of `kernel.testing`.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from kernel import Kernel, KernelSettings
from kernel.testing import ScriptedChatModel, tool_call


async def main(kernel: Kernel | None = None) -> str:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)  # the kernel's spans go to the application's provider
    if kernel is None:
        settings = KernelSettings(telemetry={"enabled": True, "capture_content": True})
        kernel = Kernel(settings, load_entry_points=False)
        kernel.services.add_service("scripted", ScriptedChatModel(
            [tool_call("math.multiply", a=6, b=7), "6 times 7 is 42."], model="scripted-model"))
    with trace.get_tracer("telemetry-sample").start_as_current_span("answer a question"):
        answer = await kernel.chat("What is 6 times 7?", tools=["math.multiply"])
    await kernel.aclose()
    provider.shutdown()
    print(answer.text)
    return answer.text


if __name__ == "__main__":
    asyncio.run(main())
