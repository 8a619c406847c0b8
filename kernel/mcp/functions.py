"""An MCP server's tools, prompts and resources as kernel functions.

* `McpToolFunction`: its parameters schema is the tool's `inputSchema`, its arguments are
  checked against it (jsonschema) before the call; the value is the tool's structured
  content when it has one, else its text. A result with `isError` raises `McpToolError`.
* `McpPromptFunction`: the prompt's arguments are its inputs (strings); the messages the
  server returns are sent to the chat model, as data (never a template), and the answer is
  the value. It streams.
* `list_resources()` / `read_resource(uri)`: the server's resources, as text.

Everything a server says (names, descriptions, schemas, prompt messages, results) is
untrusted data: names are made valid kernel names, descriptions are cut and stripped of
control characters, schemas are checked and bounded; nothing is compiled as a template.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..contents import ChatMessage, ChatRequest, FinalMessage, KernelStreamEvent, StreamAccumulator
from ..errors import ArgumentError
from ..functions import NAME_PATTERN, TOOL_NAME_PATTERN, KernelFunction, ParameterInfo
from .connection import MAX_ITEMS, MAX_PAGES, McpConnection, McpProgress
from .errors import McpToolError
from .transport import TRUNCATED_META

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "MAX_DESCRIPTION",
    "McpPromptFunction",
    "McpResourceFunction",
    "McpToolFunction",
    "content_text",
    "kernel_name",
]

MAX_DESCRIPTION = 4000
MAX_SCHEMA_CHARS = 100_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_REQUIRED = re.compile(r"^'(.+)' is a required property$")
_UNEXPECTED = re.compile(r"\('(.+?)' (?:was|were) unexpected\)")


def clean_text(text: str | None, limit: int = MAX_DESCRIPTION) -> str:
    """Untrusted text shown to a model or a person: no control or bidi characters, cut."""
    text = _CONTROL.sub("", text or "").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kernel_name(remote: str, plugin: str, taken: Iterable[str]) -> str:
    """A valid, unused function name for a server's `remote` name (`get-time` becomes
    `get_time`; a name that clashes gets `_2`; `plugin-name` stays within 64 characters)."""
    name = re.sub(r"\W", "_", remote, flags=re.ASCII).strip("_") or "tool"
    if not NAME_PATTERN.match(name):
        name = "_" + name
    room = 63 - len(plugin)
    if len(name) > room:
        name = name[: max(room - 9, 1)] + "_" + hashlib.sha1(remote.encode()).hexdigest()[:8]
    used = set(taken)
    base, n = name, 2
    while name in used or not TOOL_NAME_PATTERN.match(f"{plugin}-{name}"):
        suffix = f"_{n}"
        name = base[: room - len(suffix)] + suffix
        n += 1
    return name


def content_text(blocks: Iterable[Any]) -> str:
    """Tool or prompt content as text: text as is, other content as a short placeholder."""
    parts: list[str] = []
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource {clean_text(block.name, 200)}: {clean_text(block.uri, 500)}]")
        elif kind == "resource":
            parts.append(_resource_text(block.resource))
    return "\n".join(parts)


def _resource_text(contents: Any) -> str:
    text = getattr(contents, "text", None)
    if text is not None:
        return str(text)
    blob = getattr(contents, "blob", "") or ""
    return f"[binary {contents.mime_type or 'data'} {clean_text(contents.uri, 500)}, {len(blob) * 3 // 4} bytes]"


def _argument_error(function: str, errors: list[Any]) -> ArgumentError:
    """jsonschema's errors as one ArgumentError naming the (first) parameter."""
    problems: list[str] = []
    first: str | None = None
    for error in errors[:5]:
        message = str(error.message)
        param: str | None = str(error.absolute_path[0]) if error.absolute_path else None
        if (match := _REQUIRED.match(message)) is not None:
            param, message = match.group(1), "missing required argument"
        elif (match := _UNEXPECTED.search(message)) is not None:
            param, message = match.group(1), "unexpected argument"
        else:
            inner = ".".join(str(p) for p in list(error.absolute_path)[1:])
            message = (message if len(message) <= 200 else message[:197] + "...") + (f" (at {inner})" if inner else "")
        first = first if first is not None else param
        problems.append(message if param == first and not problems else f"{param}: {message}")
    return ArgumentError(function, first, "; ".join(problems))


class McpToolFunction(KernelFunction):
    """One tool of an MCP server."""

    def __init__(self, connection: McpConnection, tool: Any, *, plugin_name: str, name: str,
                 needs_approval: bool = False) -> None:
        from jsonschema.validators import validator_for

        schema = tool.input_schema
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise ValueError("its inputSchema is not an object schema")
        if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"its inputSchema is over {MAX_SCHEMA_CHARS} characters")
        validator_for(schema).check_schema(schema)  # jsonschema's SchemaError: not a valid schema
        self.connection = connection
        self.remote_name: str = tool.name
        self.plugin_name = plugin_name
        self.name = name
        self.description = clean_text(tool.description or tool.title or "")
        self.needs_approval = needs_approval
        self.input_schema: dict[str, Any] = {"type": "object", **schema}
        output = tool.output_schema
        self.output_schema: dict[str, Any] | None = output if isinstance(output, dict) else None
        required = set(schema.get("required") or ())
        properties = schema.get("properties") or {}
        self._parameters = [
            ParameterInfo(str(key), clean_text(value.get("description"), 500) if isinstance(value, dict) else "",
                          value if isinstance(value, dict) else {}, key in required,
                          value.get("default") if isinstance(value, dict) else None)
            for key, value in properties.items()
        ]
        self._arguments_model = None
        self._validator: Any = None

    @property
    def parameters_schema(self) -> dict[str, Any]:
        return self.input_schema

    @property
    def return_schema(self) -> dict[str, Any]:
        return self.output_schema or {}

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        validator = self._validator
        if validator is None:
            from jsonschema.validators import validator_for
            from referencing import Registry

            # An empty registry: a `$ref` resolves inside the schema, never over the network.
            validator = self._validator = validator_for(self.input_schema)(self.input_schema, registry=Registry())
        values = dict(arguments)
        errors = list(validator.iter_errors(values))
        if errors:
            from jsonschema.exceptions import relevance

            raise _argument_error(self.fully_qualified_name, sorted(errors, key=relevance))
        return values

    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        callback = _progress_forwarder(self.connection, self.remote_name)
        remote = self.remote_name
        result = await self.connection.request(
            f"tools/call {remote!r}", lambda session: session.call_tool(remote, arguments, progress_callback=callback))
        return tool_value(result, self.fully_qualified_name, self.output_schema)


def _wraps_result(schema: dict[str, Any] | None) -> bool:
    """An output schema `{"result": T}`: how servers (ours, the SDK's) wrap a value that is
    not an object."""
    properties = (schema or {}).get("properties")
    return isinstance(properties, dict) and set(properties) == {"result"}


def tool_value(result: Any, function: str, output_schema: dict[str, Any] | None = None) -> Any:
    """The value of a tool result: its structured content (unwrapped from `{"result": v}`),
    else its text (a cut answer with a note first); `isError` raises McpToolError with the
    tool's text."""
    text = content_text(result.content)
    if result.is_error:
        raise McpToolError(f"{function}: {text.strip() or 'the tool reported an error'}")
    cut = (result.meta or {}).get(TRUNCATED_META)
    if isinstance(cut, dict):  # the note first: a later cut to max_result_chars keeps it
        return (f"[cut: the server's answer had {cut.get('bytes')} bytes, over the limit of {cut.get('limit')} "
                f"bytes (max_message_bytes); its start follows]\n{text}")
    structured = result.structured_content
    if structured is not None:
        if _wraps_result(output_schema) and isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    return text


def _progress_forwarder(connection: McpConnection, tool: str) -> Any:
    """A progress callback handing each notification to the connection's listeners, on
    the caller's loop (None when nobody listens: no progress is asked for)."""
    if not connection.progress_listeners:
        return None
    loop = asyncio.get_running_loop()

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        text = _CONTROL.sub("", message)[:2000] if message else None  # a streamed delta: spaces kept
        event = McpProgress(connection.name, tool, progress, total, text)
        for listener in list(connection.progress_listeners):
            loop.call_soon_threadsafe(listener, event)

    return forward


class McpPromptFunction(KernelFunction):
    """One prompt of an MCP server: its messages, sent to the chat model."""

    streams = True

    def __init__(self, connection: McpConnection, prompt: Any, *, plugin_name: str, name: str,
                 needs_approval: bool = False, service: str | None = None) -> None:
        self.connection = connection
        self.remote_name: str = prompt.name
        self.plugin_name = plugin_name
        self.name = name
        self.description = clean_text(prompt.description or prompt.title or "")
        self.needs_approval = needs_approval
        self.service = service
        self._parameters = [
            ParameterInfo(str(arg.name), clean_text(arg.description, 500), {"type": "string"}, bool(arg.required))
            for arg in (prompt.arguments or ())
        ]
        self._arguments_model = None

    @property
    def return_schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self._parameters}
        for key in arguments:
            if key not in known:
                raise ArgumentError(self.fully_qualified_name, key, "unexpected argument")
        values: dict[str, Any] = {}
        for param in self._parameters:
            if param.name not in arguments:
                if param.required:
                    raise ArgumentError(self.fully_qualified_name, param.name, "missing required argument")
                continue
            value = arguments[param.name]
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ArgumentError(self.fully_qualified_name, param.name,
                                    f"prompt arguments are text; got {type(value).__name__}")
            values[param.name] = str(value)
        return values

    async def messages(self, arguments: Mapping[str, Any]) -> list[ChatMessage]:
        """The prompt's messages from the server (their text is data: sent as is)."""
        remote, args = self.remote_name, {k: str(v) for k, v in arguments.items()}
        result = await self.connection.request(f"prompts/get {remote!r}",
                                               lambda session: session.get_prompt(remote, args))
        return [ChatMessage("assistant" if m.role == "assistant" else "user", content_text([m.content]))
                for m in result.messages]

    def _request(self, kernel: Kernel, messages: list[ChatMessage],
                 overrides: Mapping[str, Any] | None) -> tuple[str, ChatRequest]:
        service = self.service or kernel.services.default_name("chat")
        configured = kernel.settings.services.get(service)
        settings = dict(configured.settings) if configured is not None else {}
        settings.update(overrides or {})
        return service, ChatRequest(messages, settings=settings)

    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        service, request = self._request(kernel, await self.messages(arguments), getattr(arguments, "settings", None))
        response = await kernel.complete(request, service)
        return response.message.content

    def stream(self, kernel: Kernel, arguments: dict[str, Any],
               overrides: Mapping[str, Any] | None = None) -> AsyncIterator[KernelStreamEvent]:
        return self._stream(kernel, arguments, overrides)

    async def _stream(self, kernel: Kernel, arguments: dict[str, Any],
                      overrides: Mapping[str, Any] | None) -> AsyncIterator[KernelStreamEvent]:
        service, request = self._request(kernel, await self.messages(arguments), overrides)
        accumulator = StreamAccumulator()
        async for event in kernel.stream(request, service):
            accumulator.add(event)
            yield event
        response = accumulator.response()
        yield FinalMessage(response.message, response.usage)


class McpResourceFunction(KernelFunction):
    """`list_resources()` (what the server offers) or `read_resource(uri)` (one, as text)."""

    def __init__(self, connection: McpConnection, kind: str, *, plugin_name: str, name: str,
                 needs_approval: bool = False) -> None:
        self.connection = connection
        self.kind = kind
        self.plugin_name = plugin_name
        self.name = name
        self.needs_approval = needs_approval
        if kind == "read":
            self.description = f"Read a resource of the MCP server {connection.name!r} by its URI, as text."
            self._parameters = [ParameterInfo("uri", "the resource's URI (see list_resources)", {"type": "string"})]
        else:
            self.description = f"List the resources of the MCP server {connection.name!r}: uri, name, description."
            self._parameters = []
        self._arguments_model = None

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        names = {p.name for p in self._parameters}
        for key in arguments:
            if key not in names:
                raise ArgumentError(self.fully_qualified_name, key, "unexpected argument")
        if self.kind == "read":
            uri = arguments.get("uri")
            if not isinstance(uri, str) or not uri:
                raise ArgumentError(self.fully_qualified_name, "uri",
                                    "missing required argument" if uri is None else "must be a non-empty string")
        return dict(arguments)

    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        if self.kind == "read":
            uri = str(arguments["uri"])
            result = await self.connection.request(f"resources/read {uri[:100]!r}",
                                                   lambda session: session.read_resource(uri))
            return "\n".join(_resource_text(contents) for contents in result.contents)
        return await self.connection.request("resources/list", _list_resources)


async def _list_resources(session: Any) -> list[dict[str, Any]]:
    from mcp.types import PaginatedRequestParams

    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await session.list_resources(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        for item in page.resources:
            entry = {"uri": clean_text(item.uri, 1000), "name": clean_text(item.name, 200)}
            if item.description:
                entry["description"] = clean_text(item.description, 500)
            if item.mime_type:
                entry["mimeType"] = clean_text(item.mime_type, 100)
            found.append(entry)
        cursor = page.next_cursor
        if not cursor or len(found) >= MAX_ITEMS:
            break
    return found[:MAX_ITEMS]


def build_functions(connection: McpConnection, plugin: str, problems: list[str],
                    approval: Callable[[str], bool]) -> dict[str, KernelFunction]:
    """The kernel functions of a connection's current listing (tools, then prompts, then
    the resource functions), after the allowlist and denylist; what is skipped goes to
    `problems`. `approval(remote_name)` says which need approval."""
    settings, listing = connection.settings, connection.listing
    functions: dict[str, KernelFunction] = {}
    if listing is None:
        return functions
    allowed = set(settings.tools) if settings.tools is not None else None
    denied = set(settings.exclude_tools)
    for tool in listing.tools:
        remote = tool.name
        if (allowed is not None and remote not in allowed) or remote in denied:
            continue
        name = kernel_name(remote, plugin, functions)
        try:
            functions[name] = McpToolFunction(connection, tool, plugin_name=plugin, name=name,
                                              needs_approval=approval(remote))
        except Exception as exc:  # a bad schema: that tool is left out, the others load
            problems.append(f"tool {clean_text(remote, 100)!r} left out: {clean_text(str(exc), 300)}")
    if allowed is not None:
        for missing in sorted(allowed - {t.name for t in listing.tools}):
            problems.append(f"tool {clean_text(missing, 100)!r} (in `tools`) is not offered by the server")
    for prompt in listing.prompts:
        clash = kernel_name(prompt.name, plugin, ()) in functions  # a tool of that name: `NAME_prompt`
        name = kernel_name(prompt.name + "_prompt" if clash else prompt.name, plugin, functions)
        functions[name] = McpPromptFunction(connection, prompt, plugin_name=plugin, name=name,
                                            needs_approval=approval(prompt.name), service=settings.service)
    if listing.resources:
        for kind, base in (("list", "list_resources"), ("read", "read_resource")):
            name = kernel_name(base, plugin, functions)
            functions[name] = McpResourceFunction(connection, kind, plugin_name=plugin, name=name,
                                                  needs_approval=approval(base))
    return functions
