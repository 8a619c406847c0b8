"""The kernel over MCP: chosen kernel functions as MCP tools, prompt functions also as MCP
prompts, memory collections (optionally) as resources.

`build_server(kernel, functions)` makes an SDK `Server` (low level: the schemas are the
kernel's own); `serve(kernel, functions, transport="stdio" | "http")` runs it. Only what
is given is exposed, and a function marked `needs_approval` only when
`allow_needs_approval=True` (the operator's opt-in). A call runs through `kernel.invoke`
(validation, function filters, budgets) under the tool loop's policy: `tool_timeout`, the
result masked and cut to `max_result_chars`, errors as short `isError` results. What it
calls runs as if a model asked: a `needs_approval` function reached from it asks
`kernel.approval`, and is refused without one. A streaming prompt function reports its
text as progress notifications when the client asked for progress.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..contents import FinalMessage, TextDelta, ToolCall
from ..errors import FunctionNotFoundError, KernelError
from ..functions import SYNC_RUNNER, KernelFunction
from ..logging import LazyLogger, mask_text

if TYPE_CHECKING:
    from mcp.server import Server

    from ..kernel import Kernel

__all__ = ["MEMORY_SCHEME", "build_server", "select_functions"]

log = LazyLogger("kernel.mcp")

MEMORY_SCHEME = "kernel-memory"


def select_functions(kernel: Kernel, names: Iterable[str] = (), plugins: Iterable[str] = (), *,
                     allow_needs_approval: bool = False) -> tuple[list[KernelFunction], list[str]]:
    """The functions named (`plugin.function`, or `plugin` for all of it) and those of
    `plugins`, in order, without duplicates; and the names left out because they need
    approval (unless `allow_needs_approval`). An unknown name raises FunctionNotFoundError."""
    chosen: list[KernelFunction] = []
    for plugin in plugins:
        if plugin not in kernel.plugins:
            raise FunctionNotFoundError(f"no plugin named {plugin!r}")
        chosen.extend(kernel.plugins[plugin])
    for name in names:
        name = name.strip()
        if not name:
            continue
        if "." not in name and name.removesuffix(".*") in kernel.plugins:
            chosen.extend(kernel.plugins[name.removesuffix(".*")])
        else:
            chosen.append(kernel.get_function(name.removesuffix(".*")))
    unique = list(dict.fromkeys(chosen))
    held = [fn.fully_qualified_name for fn in unique if fn.needs_approval and not allow_needs_approval]
    return [fn for fn in unique if allow_needs_approval or not fn.needs_approval], held


def _output_schema(fn: KernelFunction) -> tuple[dict[str, Any] | None, bool]:
    """The tool's output schema, and whether the value is wrapped as {"result": value}
    (MCP wants an object): None when the return type is unknown."""
    try:
        schema = dict(fn.return_schema)
    except Exception:
        return None, False
    if not schema or schema == {"type": "null"}:
        return None, False
    if schema.get("type") == "object":
        return schema, False
    defs = schema.pop("$defs", None)
    wrapped: dict[str, Any] = {"type": "object", "properties": {"result": schema}, "required": ["result"]}
    if defs:
        wrapped["$defs"] = defs
    return wrapped, True


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n... [cut: the result had {len(text)} characters]"
    return text[: max(limit - len(note), 0)] + note


async def _thread_runner(call: Any) -> Any:
    return await asyncio.to_thread(call)


class _Exposed:
    """What one server exposes, and how a call runs."""

    def __init__(self, kernel: Kernel, functions: Sequence[KernelFunction], *, prompts: bool,
                 collections: Sequence[str], allow_needs_approval: bool, max_result_chars: int | None,
                 timeout: float | None) -> None:
        from ..prompts import PromptFunction

        self.kernel = kernel
        policy = kernel.settings.tool_loop
        self.max_chars = max_result_chars or policy.max_result_chars
        self.timeout = timeout if timeout is not None else policy.tool_timeout
        self.allow_needs_approval = allow_needs_approval
        self.functions = {fn.tool_name: fn for fn in functions if allow_needs_approval or not fn.needs_approval}
        self.prompts = {name: fn for name, fn in self.functions.items()
                        if prompts and isinstance(fn, PromptFunction)}
        self.collections = list(collections)
        self._tools: list[Any] | None = None
        self._outputs: dict[str, tuple[dict[str, Any] | None, bool]] = {}

    def tools(self) -> list[Any]:
        from mcp.types import Tool

        if self._tools is None:
            tools = []
            for name, fn in self.functions.items():
                output, _ = self._outputs[name] = _output_schema(fn)
                tools.append(Tool(name=name, title=fn.fully_qualified_name, description=fn.description or None,
                                  input_schema=fn.parameters_schema, output_schema=output))
            self._tools = tools
        return self._tools

    async def call(self, name: str, arguments: dict[str, Any], ctx: Any) -> Any:
        import mcp.types as types
        from mcp import MCPError

        fn = self.functions.get(name)
        if fn is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {name[:100]!r}")
        if self._tools is None:
            self.tools()
        output, wrapped = self._outputs[name]
        try:
            value = await self._run(fn, arguments, ctx)
        except Exception as exc:
            return types.CallToolResult(content=[types.TextContent(text=self._error(fn, exc))], is_error=True)
        text = _cut(mask_text(_text(value)), self.max_chars)
        structured = None
        if output is not None:
            structured = _jsonable({"result": value} if wrapped else value)
            problem = _schema_problem(output, structured)
            if problem is not None:
                return types.CallToolResult(content=[types.TextContent(text=(
                    f"error: {fn.fully_qualified_name} returned a value that does not match its return type: "
                    f"{problem}"))], is_error=True)
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=structured)

    def _error(self, fn: KernelFunction, exc: Exception) -> str:
        from ..chat import short_error

        name = fn.fully_qualified_name
        if isinstance(exc, TimeoutError) and not isinstance(exc, KernelError):
            return short_error(f"{name} timed out after {self.timeout} s", (name,))
        if isinstance(exc, KernelError):
            return short_error(str(exc), (name,))
        return short_error(f"{name} failed: {type(exc).__name__}", (name,))

    async def _run(self, fn: KernelFunction, arguments: dict[str, Any], ctx: Any) -> Any:
        """`fn` for the client: as a model's call (approval scope), under the timeout, sync
        functions in worker threads; a streaming text function reports progress."""
        from .. import _usage

        call = ToolCall(str(getattr(ctx, "request_id", "") or ""), fn.tool_name, json.dumps(arguments)[:2000])
        scope = _usage.ApprovalScope(self.kernel.approval, call,
                                     fn.fully_qualified_name if fn.needs_approval else None)
        approval, runner = _usage.APPROVAL.set(scope), SYNC_RUNNER.set(_thread_runner)
        try:
            async with asyncio.timeout(self.timeout):
                # A text answer streams as progress; structured output is checked whole first.
                if fn.streams and fn.return_schema == {"type": "string"} and _wants_progress(ctx):
                    return await self._stream(fn, arguments, ctx)
                return (await self.kernel.invoke(fn, arguments)).value
        finally:
            SYNC_RUNNER.reset(runner)
            _usage.APPROVAL.reset(approval)

    async def _stream(self, fn: KernelFunction, arguments: dict[str, Any], ctx: Any) -> Any:
        parts: list[str] = []
        final: str | None = None
        async for event in self.kernel.invoke_stream(fn, arguments):
            if isinstance(event, TextDelta) and event.text:
                parts.append(event.text)
                await ctx.session.report_progress(sum(map(len, parts)), None, mask_text(event.text))
            elif isinstance(event, FinalMessage):
                final = event.message.content
        return final if final is not None else "".join(parts)

    async def prompt(self, name: str, arguments: dict[str, str], ctx: Any) -> Any:
        import mcp.types as types
        from mcp import MCPError

        from .. import _usage

        fn = self.prompts.get(name)
        if fn is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown prompt {name[:100]!r}")
        values: dict[str, Any] = {}
        for param in fn.parameters:
            if param.name in arguments:
                raw = arguments[param.name]
                values[param.name] = raw if param.schema.get("type", "string") == "string" else _loads(raw)
        call = ToolCall(str(getattr(ctx, "request_id", "") or ""), name, json.dumps(arguments)[:2000])
        token = _usage.APPROVAL.set(_usage.ApprovalScope(self.kernel.approval, call))
        try:
            async with asyncio.timeout(self.timeout):
                messages = await self.kernel.render(fn, values)
        except KernelError as exc:
            raise MCPError(types.INVALID_PARAMS, self._error(fn, exc)) from None
        except TimeoutError:
            raise MCPError(types.INTERNAL_ERROR, f"{fn.fully_qualified_name}: rendering timed out") from None
        finally:
            _usage.APPROVAL.reset(token)
        return types.GetPromptResult(description=fn.description or None, messages=[
            types.PromptMessage(role="assistant" if m.role == "assistant" else "user",
                                content=types.TextContent(text=m.content))
            for m in messages if m.role in ("system", "user", "assistant")])

    async def read(self, uri: str) -> str:
        """A memory collection (`kernel-memory://C`: what it is) or a search in it
        (`kernel-memory://C/search?q=...&k=4`: the best passages, with references)."""
        from ..memory import SemanticMemory, format_hits

        parts = urlsplit(uri)
        collection = unquote(parts.netloc)
        if parts.scheme != MEMORY_SCHEME or collection not in self.collections:
            raise KeyError(uri)
        memory = SemanticMemory(self.kernel.services.embedding(), self.kernel.services.memory())
        if parts.path in ("", "/"):
            count = await self.kernel.services.memory().count(collection)
            return (f"memory collection {collection!r}: {count} passages. Search it: "
                    f"{MEMORY_SCHEME}://{quote(collection)}/search?q=QUESTION&k=4")
        if parts.path != "/search":
            raise KeyError(uri)
        query = parse_qs(parts.query)
        question = (query.get("q") or [""])[0]
        k = max(1, min(int((query.get("k") or ["4"])[0] or 4), 50))
        async with asyncio.timeout(self.timeout):
            return format_hits(await memory.search(question, collection, k))


def _wants_progress(ctx: Any) -> bool:
    meta = getattr(ctx, "meta", None) or {}
    return isinstance(meta, dict) and (meta.get("progress_token") is not None or meta.get("progressToken") is not None)


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _text(value: Any) -> str:
    from ..chat import result_text

    return "" if value is None else result_text(value)


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def _schema_problem(schema: dict[str, Any], value: Any) -> str | None:
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from referencing import Registry

    error = best_match(validator_for(schema)(schema, registry=Registry()).iter_errors(value))
    return None if error is None else str(error.message)[:300]


def build_server(kernel: Kernel, functions: Sequence[KernelFunction], *, name: str = "orchestration-kernel",
                 prompts: bool = True, collections: Sequence[str] = (), allow_needs_approval: bool = False,
                 max_result_chars: int | None = None, timeout: float | None = None,
                 instructions: str | None = None) -> Server[Any]:
    """An MCP server (the SDK's low-level `Server`) exposing `functions` as tools, the
    prompt functions among them also as prompts (`prompts=False`: not), and `collections`
    of the default memory as resources. Run it with `serve`, or with the SDK's own
    transports (`server.run(read, write, server.create_initialization_options())`)."""
    import mcp.types as types
    from mcp import MCPError
    from mcp.server import Server

    exposed = _Exposed(kernel, functions, prompts=prompts, collections=collections,
                       allow_needs_approval=allow_needs_approval, max_result_chars=max_result_chars, timeout=timeout)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=exposed.tools())

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result: types.CallToolResult = await exposed.call(params.name, dict(params.arguments or {}), ctx)
        return result

    async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[
            types.Prompt(name=name, title=fn.fully_qualified_name, description=fn.description or None,
                         arguments=[types.PromptArgument(name=p.name, description=p.description or None,
                                                         required=p.required) for p in fn.parameters])
            for name, fn in exposed.prompts.items()])

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        result: types.GetPromptResult = await exposed.prompt(params.name, dict(params.arguments or {}), ctx)
        return result

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[
            types.Resource(uri=f"{MEMORY_SCHEME}://{quote(c)}", name=c, mime_type="text/plain",
                           description=f"memory collection {c!r}; search it at {MEMORY_SCHEME}://{quote(c)}/search?q=...")
            for c in exposed.collections])

    async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(uri_template=f"{MEMORY_SCHEME}://{quote(c)}/search{{?q,k}}", name=f"{c} search",
                                   mime_type="text/plain", description=f"passages of {c!r} that answer q")
            for c in exposed.collections])

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            text = await exposed.read(uri)
        except KeyError:
            raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri[:200]!r}") from None
        except KernelError as exc:
            raise MCPError(types.INTERNAL_ERROR, mask_text(str(exc))[:400]) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type="text/plain",
                                                                             text=mask_text(text))])

    has_prompts, has_resources = bool(exposed.prompts), bool(exposed.collections)
    server: Server[Any] = Server(
        name, version=_version(), instructions=instructions,
        on_list_tools=list_tools, on_call_tool=call_tool,
        on_list_prompts=list_prompts if has_prompts else None, on_get_prompt=get_prompt if has_prompts else None,
        on_list_resources=list_resources if has_resources else None,
        on_list_resource_templates=list_templates if has_resources else None,
        on_read_resource=read_resource if has_resources else None,
    )
    log.info("mcp_server_built", tools=len(exposed.functions), prompts=len(exposed.prompts),
             resources=len(exposed.collections))
    return server


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("orchestration-kernel")
    except Exception:
        return "0"
