"""A deterministic chat model for the `kernel serve` tests, installed as a third-party
connector (provider `rules`) the way a user installs one: a distribution with an entry
point in the `orchestration_kernel` group (the tests write its dist-info).

What it answers, from the last message of the request:

* a tool result: "The result is <result>."
* a user message naming an offered tool (`math-add`, or the tool `tool_choice` forces),
  when tools are offered: a call of that tool with the first JSON object of the message
  as arguments ("use math-add with {"a": 2, "b": 3}");
* a message containing "slow": words streamed every `options.delay_slow` seconds (0.2),
  300 of them; it writes `started` and, when the call is cancelled, `cancelled` lines to
  `options.log_dir` (so a test in another process sees the cancellation);
* anything else: "You said: <message>", streamed word by word.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

from kernel.contents import (
    ChatMessage,
    ChatResponse,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from kernel.hookspecs import hookimpl

_calls = 0


def _json_object(text: str) -> dict:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return {}


class RulesModel:
    provider = "rules"

    def __init__(self, options: dict) -> None:
        self.model = "rules-1"
        self.log_dir = Path(options["log_dir"]) if options.get("log_dir") else None
        self.delay_slow = float(options.get("delay_slow", 0.2))
        self.delay = float(options.get("delay", 0.0))

    def _log(self, name: str, text: str) -> None:
        if self.log_dir is not None:
            with open(self.log_dir / name, "a", encoding="utf-8") as out:
                out.write(f"{os.getpid()} {text}\n")

    def _reply(self, request) -> ChatResponse:
        global _calls
        last = request.messages[-1] if request.messages else ChatMessage("user", "")
        usage = Usage(input_tokens=sum(len(m.content.split()) for m in request.messages) + 1,
                      output_tokens=0, requests=1)
        if last.role == "tool":
            text = f"The result is {last.content}."
            return ChatResponse(ChatMessage("assistant", text), "stop",
                                Usage(usage.input_tokens, len(text.split()), requests=1), self.model)
        names = [tool.name for tool in request.tools]
        forced = request.tool_choice.function if request.tool_choice is not None else None
        chosen = forced or next((name for name in names if name in last.content), None)
        if names and chosen and (request.tool_choice is None or request.tool_choice.mode != "none"):
            _calls += 1
            call = ToolCall(f"call_{_calls}", chosen, json.dumps(_json_object(last.content)))
            return ChatResponse(ChatMessage("assistant", "", [call]), "tool_calls",
                                Usage(usage.input_tokens, 5, requests=1), self.model)
        text = f"You said: {last.content}"
        return ChatResponse(ChatMessage("assistant", text), "stop",
                            Usage(usage.input_tokens, len(text.split()), requests=1), self.model)

    async def complete(self, request) -> ChatResponse:
        last = request.messages[-1].content if request.messages else ""
        if "slow" in last:
            self._log("started", last)
            try:
                await asyncio.sleep(self.delay_slow * 300)
            except asyncio.CancelledError:
                self._log("cancelled", last)
                raise
        return self._reply(request)

    async def stream(self, request):
        last = request.messages[-1].content if request.messages else ""
        if "slow" in last and request.messages[-1].role == "user":
            self._log("started", last)
            try:
                for index in range(300):
                    yield TextDelta(f"w{index} ")
                    await asyncio.sleep(self.delay_slow)
            except (asyncio.CancelledError, GeneratorExit):
                self._log("cancelled", last)
                raise
            yield StreamEnd("stop", self.model)
            return
        response = self._reply(request)
        for piece in re.findall(r"\S+\s*", response.message.content):
            yield TextDelta(piece)
            if self.delay:
                await asyncio.sleep(self.delay)
        for index, call in enumerate(response.message.tool_calls):
            yield ToolCallDelta(index, call.id, call.name, call.arguments)
        yield UsageEvent(response.usage)
        yield StreamEnd(response.finish_reason, self.model)


@hookimpl
def register_connectors(register):
    register("chat", "rules", lambda name, service, settings: RulesModel(service.options))
