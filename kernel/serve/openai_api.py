"""OpenAI-compatible chat: `POST /v1/chat/completions` and `GET /v1/models`.

The `model` of a request is one of:

* a **kernel model**: `kernel` (the default chat service, every served function offered
  as a tool) or an agent of `[serve.agents.NAME]` (its service, system message, functions
  and settings). The kernel runs the tool loop (automatic function calling) and answers
  with the final text. A streamed answer carries the tool calls as they happen in an
  extension member of the chunks, `"kernel": {"event": "tool_call" | "tool_result", ...}`
  (clients that do not know it ignore it; the chunks are otherwise OpenAI's).
* a **configured chat service** by name: the request goes to that model as it is, the
  client's `tools` and `tool_choice` passed through, and the model's tool calls come back
  to the client (`finish_reason: "tool_calls"`), as from OpenAI.

Sampling settings (`temperature`, `top_p`, `max_tokens` / `max_completion_tokens`, `stop`,
`seed`, `presence_penalty`, `frequency_penalty`, `user`) take the kernel's neutral names;
`response_format` with a JSON schema is structured output. Fields OpenAI clients send that
do not change the answer (`parallel_tool_calls`, `logprobs: false`, ...) are ignored; `n`
other than 1 and non-text content parts are refused (400).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..contents import (
    ChatMessage,
    ChatRequest,
    FinalMessage,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)
from ..settings import AgentSettings
from .context import ServeContext, endpoint, get_str, json_response, metered, problem_frame, read_json
from .problems import HttpProblem, problem_for
from .runs import Run
from .sse import EventStream, frame

if TYPE_CHECKING:
    from starlette.requests import Request

    from .auth import Principal

__all__ = ["KERNEL_MODEL", "chat_services", "routes"]

KERNEL_MODEL = "kernel"
_SETTINGS = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user")
_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _stop(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_value(value: Any) -> bool:
    return isinstance(value, str)


_SETTING_TYPES: dict[str, Callable[[Any], bool]] = {
    "temperature": _number, "top_p": _number, "presence_penalty": _number, "frequency_penalty": _number,
    "seed": _integer, "stop": _stop, "user": _text_value}
_SETTING_KINDS = {"temperature": "a number", "top_p": "a number", "presence_penalty": "a number",
                  "frequency_penalty": "a number", "seed": "an integer", "stop": "a string or a list of strings",
                  "user": "a string"}


# --- models -----------------------------------------------------------------------------------


def chat_services(ctx: ServeContext) -> list[str]:
    """The chat services by name: configured ones, those added in code, the default one."""
    from ..errors import KernelError

    registry = ctx.kernel.services
    configured = ctx.kernel.settings.services
    names = [name for name, svc in configured.items() if registry.kind_of(svc) == "chat"]
    for name in registry.names():
        if name not in configured:
            try:
                registry.get(name, "chat")  # a service added in code: found, not built
            except KernelError:
                continue
            names.append(name)
    default = registry.default_name("chat")
    return names if default in names else [default, *names]


def agents(ctx: ServeContext) -> dict[str, AgentSettings]:
    return {KERNEL_MODEL: AgentSettings.model_validate({}), **ctx.settings.agents}


def _model(model_id: str, kind: str, description: str = "") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "orchestration-kernel",
            "kernel": {"kind": kind, "description": description}}


def _models(ctx: ServeContext, principal: Principal) -> list[dict[str, Any]]:
    found = [_model(name, "agent", agent.description or "kernel functions as tools, called by the kernel")
             for name, agent in agents(ctx).items()]
    found += [_model(name, "service", "the chat service as it is: the client's tools passed through")
              for name in chat_services(ctx) if name not in agents(ctx)]
    return [m for m in found if principal.may_use_model(m["id"])]


async def list_models(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """The models: kernel models (agents) and chat services."""
    return json_response({"object": "list", "data": _models(ctx, principal)})


async def get_model(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """One model."""
    model_id = request.path_params["model"]
    for model in _models(ctx, principal):
        if model["id"] == model_id:
            return json_response(model)
    raise HttpProblem(404, "model not found", f"no model {model_id[:80]!r} (GET /v1/models lists them)")


# --- request parsing --------------------------------------------------------------------------


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise HttpProblem(400, "unsupported content", f"{where}: only text content is supported, not {kind!r}")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise HttpProblem(400, "invalid message", f"{where}: 'content' must be a string or a list of text parts")


def parse_messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise HttpProblem(400, "invalid request", "'messages' must be a non-empty list")
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise HttpProblem(400, "invalid message", f"{where} must be an object")
        role = item.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise HttpProblem(400, "invalid message", f"{where}: unknown role {str(role)[:40]!r}")
        content = _text(item.get("content"), where)
        if role == "assistant":
            calls = []
            for call in item.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise HttpProblem(400, "invalid message", f"{where}: a tool call needs function.name")
                arguments = function.get("arguments")
                calls.append(ToolCall(str(call.get("id") or ""), function["name"],
                                      arguments if isinstance(arguments, str) else "{}"))
            messages.append(ChatMessage("assistant", content, calls))
        elif role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str):
                raise HttpProblem(400, "invalid message", f"{where}: a tool message needs 'tool_call_id'")
            messages.append(ChatMessage("tool", content, tool_call_id=call_id, name=item.get("name")))
        else:
            messages.append(ChatMessage(role, content))
    return messages


def parse_settings(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(execution settings, output schema) of an OpenAI request."""
    if body.get("n") not in (None, 1):
        raise HttpProblem(400, "unsupported parameter", "'n' must be 1: one answer per request")
    settings = {key: body[key] for key in _SETTINGS if body.get(key) is not None}
    for key, value in settings.items():
        if not _SETTING_TYPES[key](value):
            raise HttpProblem(400, "invalid request", f"'{key}' must be {_SETTING_KINDS[key]}")
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if tokens is not None:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise HttpProblem(400, "invalid request", "'max_tokens' must be a positive integer")
        settings["max_tokens"] = tokens
    schema = None
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise HttpProblem(400, "invalid request", "'response_format.json_schema.schema' must be an object")
        elif kind == "json_object":
            schema = {"type": "object"}
        elif kind not in (None, "text"):
            raise HttpProblem(400, "unsupported parameter", f"response_format type {str(kind)[:40]!r}")
    return settings, schema


def parse_tools(body: dict[str, Any]) -> list[ToolSpec]:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise HttpProblem(400, "invalid request", "'tools' must be a list")
    specs = []
    for index, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise HttpProblem(400, "invalid request", f"tools[{index}] must be {{'type': 'function', 'function': "
                              "{'name': ..., 'parameters': ...}}")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise HttpProblem(400, "invalid request", f"tools[{index}].function.parameters must be a JSON schema")
        specs.append(ToolSpec(function["name"], str(function.get("description") or ""), parameters))
    return specs


def parse_tool_choice(raw: Any) -> str | None:
    """`auto`, `none`, `required`, or the name of the one tool to call."""
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict) and isinstance(raw["function"].get("name"), str):
        return str(raw["function"]["name"])
    raise HttpProblem(400, "invalid request", "'tool_choice' must be auto, none, required or "
                      "{'type': 'function', 'function': {'name': ...}}")


# --- responses --------------------------------------------------------------------------------


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


def wire_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


class _Chunks:
    """OpenAI `chat.completion.chunk` frames of one answer."""

    def __init__(self, run: Run, model: str) -> None:
        self.id, self.model, self.created = f"chatcmpl-{run.id}", model, int(time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return frame({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                      "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra})

    def usage(self, usage: Usage) -> bytes:
        return frame({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                      "choices": [], "usage": openai_usage(usage)})


def _completion(run: Run, model: str, message: dict[str, Any], finish: str, usage: Usage,
                extension: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"chatcmpl-{run.id}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None, **message},
                         "logprobs": None, "finish_reason": finish if finish in _FINISH else "stop"}],
            "usage": openai_usage(usage), "kernel": {"run": run.id, **extension}}


def _call_event(call: ToolCall, result: Any = None) -> dict[str, Any]:
    """A tool call the kernel made (`result`: what it answered), as the API shows it."""
    event: dict[str, Any] = {"id": call.id, "name": call.name, "function": call.name.replace("-", ".", 1)}
    if result is None:
        event["arguments"] = call.arguments
    else:
        event.update(content=result.content, is_error=result.is_error)
    return event


# --- the endpoint -----------------------------------------------------------------------------


async def chat_completions(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """An OpenAI chat completion: a kernel model (tool loop) or a chat service (pass-through)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid request", "the body must be a JSON object")
    model = get_str(body, "model")
    if not model:
        raise HttpProblem(400, "invalid request", "'model' is required (GET /v1/models lists them)")
    if not principal.may_use_model(model):
        raise HttpProblem(403, "model not allowed", f"this key may not use the model {model[:80]!r}")
    messages = parse_messages(body.get("messages"))
    settings, schema = parse_settings(body)
    choice = parse_tool_choice(body.get("tool_choice"))
    stream = body.get("stream")
    stream = False if stream is None else stream  # some clients send null
    if not isinstance(stream, bool):
        raise HttpProblem(400, "invalid request", "'stream' must be true or false")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    agent = agents(ctx).get(model)
    if agent is None and model not in chat_services(ctx):
        raise HttpProblem(404, "model not found", f"no model {model[:80]!r} (GET /v1/models lists them)")
    run = ctx.runs.start("chat", principal.name, model)
    headers = {"X-Kernel-Run": run.id}
    path = request.url.path
    if agent is not None:
        if parse_tools(body):
            raise HttpProblem(400, "tools not accepted", f"the kernel model {model!r} offers the kernel's own "
                              "functions; send your tools to a chat service model (GET /v1/models)")
        chat = _agent_options(ctx, principal, agent, settings, schema, choice)
        conversation = ([ChatMessage.system(agent.system)] if agent.system else []) + messages
        if stream:
            events = _agent_stream(ctx, run, model, conversation, chat, include_usage, path)
            return EventStream(events, timeout=ctx.settings.request_timeout, headers=headers,
                               on_error=lambda exc: problem_frame(exc, path, True),
                               on_close=lambda outcome: _closed(run, outcome))
        completion = await ctx.guarded(request, _agent_complete(ctx, run, model, conversation, chat))
        return json_response(completion, headers=headers)
    service_settings = ctx.kernel.settings.services.get(model)
    merged = {**(service_settings.settings if service_settings else {}), **settings}
    call = ChatRequest(messages, parse_tools(body), ToolChoice.parse(choice) if body.get("tools") else None,
                       merged, schema)
    if stream:
        events = _service_stream(ctx, run, model, call, include_usage, path)
        return EventStream(events, timeout=ctx.settings.request_timeout, headers=headers,
                           on_error=lambda exc: problem_frame(exc, path, True),
                           on_close=lambda outcome: _closed(run, outcome))
    completion = await ctx.guarded(request, _service_complete(ctx, run, model, call))
    return json_response(completion, headers=headers)


def _closed(run: Run, outcome: str) -> None:
    if outcome in ("disconnected", "deadline"):
        run.finish("cancelled", error={"detail": f"the stream ended early: {outcome}"})


def _agent_options(ctx: ServeContext, principal: Principal, agent: AgentSettings, settings: dict[str, Any],
                   schema: dict[str, Any] | None, choice: str | None) -> dict[str, Any]:
    offered = ctx.functions_for(principal, agent.functions)
    if choice not in (None, "auto", "none", "required"):
        forced = ctx.function_for(principal, str(choice))
        if forced not in offered:
            raise HttpProblem(400, "invalid request", f"tool_choice names {forced.fully_qualified_name}, which this "
                              "model does not offer")
        choice = forced.fully_qualified_name
    return {"service": agent.service, "settings": {**agent.settings, **settings} or None, "tools": offered,
            "tool_choice": choice or "auto", "output_schema": schema}


async def _agent_complete(ctx: ServeContext, run: Run, model: str, conversation: list[ChatMessage],
                          chat: dict[str, Any]) -> dict[str, Any]:
    try:
        with metered(ctx.kernel) as meter:
            result = await ctx.kernel.chat(conversation, **chat)
    except Exception as exc:
        run.finish("failed", error=problem_for(exc)[1])
        raise
    calls = [{**_call_event(r.call), **_call_event(r.call, r.result)} for r in result.trace]
    for call in calls:
        run.emit("tool_call", **call)
    run.finish("done", result=result.text[:2000], usage=result.usage, cost=meter.cost)
    return _completion(run, model, {"content": result.text}, result.response.finish_reason, result.usage,
                       {"cost": meter.cost, "rounds": result.rounds, "stop_reason": result.stop_reason,
                        "tool_calls": calls})


async def _agent_stream(ctx: ServeContext, run: Run, model: str, conversation: list[ChatMessage],
                        chat: dict[str, Any], include_usage: bool, path: str) -> AsyncIterator[bytes]:
    chunks = _Chunks(run, model)
    text: list[str] = []
    with metered(ctx.kernel) as meter:
        try:
            yield chunks.chunk({"role": "assistant", "content": ""})
            async for event in ctx.kernel.chat_stream(conversation, **chat):
                if isinstance(event, TextDelta):
                    text.append(event.text)
                    yield chunks.chunk({"content": event.text})
                elif isinstance(event, ToolCallStarted):
                    run.emit("tool_call", **_call_event(event.call))
                    yield chunks.chunk({}, kernel={"event": "tool_call", **_call_event(event.call)})
                elif isinstance(event, ToolCallFinished):
                    run.emit("tool_result", **_call_event(event.call, event.result))
                    yield chunks.chunk({}, kernel={"event": "tool_result", **_call_event(event.call, event.result)})
                elif isinstance(event, FinalMessage):
                    yield chunks.chunk({}, "stop", kernel={"event": "done", "run": run.id, "cost": meter.cost})
                    if include_usage:
                        yield chunks.usage(event.usage)
                    run.finish("done", result="".join(text)[:2000], usage=event.usage, cost=meter.cost)
            yield b"data: [DONE]\n\n"
        except Exception as exc:
            run.finish("failed", error=problem_for(exc)[1])
            yield problem_frame(exc, path, True)


async def _service_complete(ctx: ServeContext, run: Run, model: str, call: ChatRequest) -> dict[str, Any]:
    try:
        with metered(ctx.kernel) as meter:
            response = await ctx.kernel.complete(call, model)
    except Exception as exc:
        run.finish("failed", error=problem_for(exc)[1])
        raise
    message: dict[str, Any] = {"content": response.text or (None if response.tool_calls else "")}
    if response.tool_calls:
        message["tool_calls"] = wire_calls(response.tool_calls)
    run.finish("done", result=response.text[:2000], usage=response.usage, cost=meter.cost)
    return _completion(run, model, message, response.finish_reason, response.usage, {"cost": meter.cost})


async def _service_stream(ctx: ServeContext, run: Run, model: str, call: ChatRequest, include_usage: bool,
                          path: str) -> AsyncIterator[bytes]:
    chunks = _Chunks(run, model)
    usage, finish, started = Usage(), "stop", set()
    text: list[str] = []
    with metered(ctx.kernel) as meter:
        try:
            yield chunks.chunk({"role": "assistant", "content": ""})
            async for event in ctx.kernel.stream(call, model):
                if isinstance(event, TextDelta):
                    text.append(event.text)
                    yield chunks.chunk({"content": event.text})
                elif isinstance(event, ToolCallDelta):
                    piece: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
                    if event.index not in started:
                        started.add(event.index)
                        piece.update(id=event.id or f"call_{event.index}", type="function")
                        piece["function"]["name"] = event.name or ""
                    yield chunks.chunk({"tool_calls": [piece]})
                elif isinstance(event, UsageEvent):
                    usage.add(event.usage)
                elif isinstance(event, StreamEnd):
                    finish = event.finish_reason if event.finish_reason in _FINISH else "stop"
            yield chunks.chunk({}, finish, kernel={"event": "done", "run": run.id, "cost": meter.cost})
            if include_usage:
                yield chunks.usage(usage)
            run.finish("done", result="".join(text)[:2000], usage=usage, cost=meter.cost)
            yield b"data: [DONE]\n\n"
        except Exception as exc:
            run.finish("failed", error=problem_for(exc)[1])
            yield problem_frame(exc, path, True)


def routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/v1/chat/completions", endpoint(chat_completions, openai=True), methods=["POST"]),
        Route("/v1/models", endpoint(list_models, openai=True), methods=["GET"]),
        Route("/v1/models/{model:path}", endpoint(get_model, openai=True), methods=["GET"]),
    ]
