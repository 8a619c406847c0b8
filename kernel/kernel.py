"""The `Kernel`: the registry of plugins, services and middleware, and the one place
functions run (the invoke pipeline).

A kernel owns its own plugin host (one pluggy `PluginManager`). Built-in connectors and
standard plugins are registered through the same hooks as third-party packages; each
plugin's registrations are all-or-nothing. Hooks run once, here; the registries they
fill are plain dicts read on the invoke path. Prompts, chat, planning and memory are
wings: the convenience methods below import them when first used.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _usage
from . import logging as _logging
from ._bootstrap import BUILTIN_PLUGINS, register_late
from .contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    FinalMessage,
    KernelStreamEvent,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    Usage,
)
from .errors import (
    DuplicateNameError,
    FunctionNotFoundError,
    FunctionTimeoutError,
    InvocationError,
    KernelError,
    PluginError,
    Problem,
    RecursionLimitError,
)
from .functions import (
    FunctionResult,
    KernelArguments,
    KernelFunction,
    KernelPlugin,
    NativeFunction,
    is_kernel_function,
    parse_function_name,
)
from .middleware import STAGES, Filter, FunctionContext, Stage, run_pipeline

if TYPE_CHECKING:
    from typing import Unpack

    import pluggy

    from ._plugin_host import PluginFailure, PluginHost
    from .batch import BatchReport
    from .chat import ChatHistory, ChatResult
    from .chat.tool_loop import ChatOptions
    from .events import Emitter
    from .planning import Plan
    from .planning.generation import PlanOptions
    from .prompts.templates import PluginNamespace
    from .services.registry import ServiceRegistry
    from .settings import KernelSettings

__all__ = ["BUILTIN_PLUGINS", "Kernel"]

log = _logging.LazyLogger("kernel")


class Kernel:
    """Holds plugins, services and middleware; invokes functions.

    >>> kernel = Kernel()
    >>> kernel.add_plugin(MathPlugin(), name="math")
    >>> result = await kernel.invoke("math.add", a=1, b=2)
    """

    def __init__(
        self,
        settings: KernelSettings | None = None,
        *,
        plugins: Iterable[object] = (),
        load_entry_points: bool | None = None,
        builtins: bool = True,
        strict: bool | None = None,
        http_clients: Mapping[str, Any] | None = None,
        journal: bool | None = None,
    ) -> None:
        """`plugins`: pluggy plugins (modules or objects with `@hookimpl`s) to register with
        the built-in ones; `http_clients`: an HTTP client per service name, given to that
        service's connector when it is built (tests inject `MockTransport` clients here); `journal`:
        whether the journal is on when the configuration leaves `journal` unset (the CLI: True)."""
        from ._bootstrap import bootstrap
        from ._plugin_host import PluginHost
        from .services.registry import ServiceRegistry

        if settings is None:
            from .settings import KernelSettings

            settings = KernelSettings.load()
        self.settings = settings
        self.strict = self.settings.strict_plugins if strict is None else strict
        _logging.register_secrets(
            svc.api_key.get_secret_value() for svc in self.settings.services.values() if svc.api_key
        )
        _logging.refresh()
        self.services: ServiceRegistry = ServiceRegistry(self.settings, http_clients=http_clients)
        self.plugins: dict[str, KernelPlugin] = {}
        self.filters: dict[Stage, list[Filter]] = {stage: [] for stage in STAGES}
        self._function_filters = self.filters["function"]  # the same list, read on the hot path
        self._max_depth = self.settings.max_call_depth
        self._max_model_calls = self.settings.max_model_calls
        self._max_function_calls = self.settings.max_function_calls
        self.events: Emitter | None = None  # kernel.events: the event stream, None while no sink is on
        self.approval: Callable[..., Any] | None = None
        """Default approval callback `(function, arguments, call) -> bool` (sync or async)
        of tool loops and plan steps, asked for every function with `needs_approval`."""
        self.plugin_problems: list[Problem] = []
        """What was wrong in the plugin folders added (errors: left out; warnings: loaded)."""
        self._namespaces: dict[str, PluginNamespace] | None = None
        self._functions_by_tool: dict[str, KernelFunction] = {}
        self._functions_by_name: dict[str, KernelFunction] = {}

        self.host: PluginHost = PluginHost(strict=self.strict)
        bootstrap(self, builtins=builtins, load_entry_points=load_entry_points, plugins=plugins)
        if journal or self.settings.journal or self.settings.telemetry.enabled:  # `journal`: its default
            from .events import configure
            configure(self, journal)

    @property
    def pm(self) -> pluggy.PluginManager:
        """This kernel's pluggy `PluginManager` (built when first asked for)."""
        return self.host.pm

    @property
    def plugin_failures(self) -> list[PluginFailure]:
        """Plugins that could not be imported or registered, and why (non-strict mode)."""
        return self.host.failures

    # -- plugin registration --------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a pluggy plugin (a module or object with `@hookimpl`s) after start-up.

        All or nothing: a plugin that fails (an unknown hook, an error while it registers or
        in `kernel_configured`) leaves no trace and raises `PluginError`. Registering the same
        plugin again does nothing."""
        register_late(self, plugin, name)

    # -- plugins and functions ------------------------------------------------------------

    def add_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        description: str | None = None,
    ) -> KernelPlugin:
        """Add functions: a `KernelPlugin`, a module or object with `@kernel_function`
        members, a list of functions, or a plugin folder (`str`/`Path`). Of a folder, each
        valid function loads and every problem goes to `plugin_problems` (logged); under
        `strict`, an error raises `PluginLoadError` and nothing of the folder loads."""
        if isinstance(plugin, str | os.PathLike):  # a folder
            return self._add_folder(os.fspath(plugin), name, description)
        if isinstance(plugin, KernelPlugin):
            if name and name != plugin.name:
                plugin = plugin.renamed(name)
            return self._add(plugin)
        if isinstance(plugin, Sequence) and not isinstance(plugin, str):
            if not name:
                raise PluginError("a list of functions needs a plugin name: add_plugin([...], name='...')")
            group = KernelPlugin(name, description=description or "")
            for item in plugin:
                group.add(item if isinstance(item, KernelFunction) else NativeFunction(item, plugin_name=name))
            return self._add(group)
        if callable(plugin) and is_kernel_function(plugin) and not isinstance(plugin, type):
            plugin_name = str(name or getattr(plugin, "__name__", "functions"))
            group = KernelPlugin(plugin_name)
            group.add(NativeFunction(plugin, plugin_name=plugin_name))
            return self._add(group)
        built = KernelPlugin.from_object(plugin, name=name, description=description)
        if not built.functions:
            raise PluginError(
                f"{built.name}: no @kernel_function members found in {type(plugin).__name__} {plugin!r}"
            )
        return self._add(built)

    def _add_folder(self, folder: str, name: str | None, description: str | None) -> KernelPlugin:
        """Every valid function of the folder; the others are in `plugin_problems` (under
        `strict`, any error raises `PluginLoadError` and nothing is added)."""
        from .plugin_folders import load_folder, record_problems

        items, problems = load_folder(self, folder, name, description)
        clashes = [f"{item.name}.{fn}" for item in items if item.name in self.plugins
                   for fn in sorted(self.plugins[item.name].functions.keys() & item.functions.keys())]
        if clashes:  # checked first, so what loads of a folder is added whole or not at all
            raise DuplicateNameError(f"{folder}: function(s) already registered: {', '.join(clashes)}")
        added = [self._add(item) for item in items][-1]
        record_problems(self, problems)
        return added

    def _add(self, plugin: KernelPlugin) -> KernelPlugin:
        existing = self.plugins.get(plugin.name)
        if existing is not None and existing is not plugin:
            clash = sorted(existing.functions.keys() & plugin.functions.keys())
            if clash:  # checked first, so a failed merge changes nothing
                raise DuplicateNameError(
                    f"plugin {plugin.name!r} already has function(s) {', '.join(clash)}"
                    + (f" (from {plugin.source})" if plugin.source else "")
                )
            for fn in plugin:
                existing.add(fn)
            plugin = existing
        else:
            self.plugins[plugin.name] = plugin
        for fn in plugin:
            self._functions_by_tool[fn.tool_name] = fn
            self._functions_by_name[fn.fully_qualified_name] = fn
        self._namespaces = None
        return plugin

    def _unindex(self, fn: KernelFunction | None) -> None:
        """Forget a removed function's lookups (and the template globals, rebuilt lazily)."""
        if fn is not None:
            self._functions_by_tool.pop(fn.tool_name, None)
            self._functions_by_name.pop(fn.fully_qualified_name, None)
        self._namespaces = None

    def add_function(self, function: KernelFunction | Callable[..., Any], plugin: str | None = None) -> KernelFunction:
        """Add one function (to `plugin`, default: the function's own plugin name)."""
        if not isinstance(function, KernelFunction):
            function = NativeFunction(function, plugin_name=plugin or "functions")
        if plugin and plugin != function.plugin_name:
            raise PluginError(
                f"{function.fully_qualified_name} belongs to plugin {function.plugin_name!r}, not {plugin!r}"
            )
        group = KernelPlugin(plugin or function.plugin_name)
        group.add(function)
        self._add(group)
        return function

    def add_filter(self, stage: Stage, filter: Filter) -> None:
        """Add middleware around `function` invocation, `prompt` rendering or each `tool_call`."""
        if stage not in self.filters:
            raise KernelError(f"unknown filter stage {stage!r}; expected one of {', '.join(STAGES)}")
        self.filters[stage].append(filter)

    def functions(self, plugins: Iterable[str] | None = None) -> list[KernelFunction]:
        selected = set(plugins) if plugins is not None else None
        return [
            fn
            for name, plugin in self.plugins.items()
            if selected is None or name in selected
            for fn in plugin
        ]

    def get_function(self, name: str, function: str | None = None) -> KernelFunction:
        """Look up `plugin.function`, a tool name `plugin-function`, or (plugin, function)."""
        if function is None:
            by_name = self._functions_by_name.get(name)
            if by_name is not None:
                return by_name
            by_tool = self._functions_by_tool.get(name)
            if by_tool is not None:
                return by_tool
            try:
                plugin_name, function = parse_function_name(name)
            except ValueError:
                raise FunctionNotFoundError(
                    f"{name!r} is not a function name; use 'plugin.function'"
                ) from None
        else:
            plugin_name = name
        plugin = self.plugins.get(plugin_name)
        if plugin is None:
            raise FunctionNotFoundError(
                f"no plugin named {plugin_name!r} (plugins: {', '.join(sorted(self.plugins)) or 'none'})"
            )
        fn = plugin.functions.get(function)
        if fn is None:
            raise FunctionNotFoundError(
                f"plugin {plugin_name!r} has no function {function!r} "
                f"(functions: {', '.join(sorted(plugin.functions)) or 'none'})"
            )
        return fn

    def template_functions(self) -> dict[str, PluginNamespace]:
        """Plugins as template globals: `{{ plugin.function(...) }}`."""
        namespaces = self._namespaces
        if namespaces is None:
            from .prompts.templates import PluginNamespace

            namespaces = self._namespaces = {
                name: PluginNamespace(self, name, plugin.functions) for name, plugin in self.plugins.items()
            }
        return namespaces

    # -- invocation -----------------------------------------------------------------------

    async def invoke(
        self,
        function: KernelFunction | str,
        arguments: Mapping[str, Any] | None = None,
        /,
        **kwargs: Any,
    ) -> FunctionResult:
        """Invoke a function with validated arguments; returns its value and the usage of
        every model call made on its behalf (nested calls included).

        A call outside any invocation is top-level: it and everything nested under it share
        one budget of `max_model_calls` and `max_function_calls` (`BudgetExceededError`).
        A function with `needs_approval` reached while serving a model (a tool call, a plan
        step) runs only when the approval callback says yes (`ApprovalDeniedError`)."""
        fn = self.get_function(function) if isinstance(function, str) else function
        if arguments is None:
            args: dict[str, Any] = kwargs
        elif kwargs:
            args = KernelArguments(arguments, settings=getattr(arguments, "settings", None))
            args.update(kwargs)
        else:
            args = arguments if isinstance(arguments, dict) else dict(arguments)
        if self.events is not None and self.events.records():  # a sink is on: the call is recorded
            return await self.events.invoke(self, fn, args)
        parent = _usage.METER.get()
        if parent is None:  # _enter() inlined (the hot path): a top-level call, a fresh budget
            depth, budget = 0, [1, 0, self._max_function_calls, self._max_model_calls]
        else:
            depth, _, budget = parent
            if depth >= self._max_depth:
                raise self._too_deep(fn)
            budget[0] += 1  # function calls made, against max_function_calls: see _usage.Budget
            if budget[0] > budget[2]:
                raise _usage.exceeded(budget, "function", fn.fully_qualified_name)
        if fn.needs_approval:  # asks only inside an approval scope (a call made for a model)
            await _usage.check_approval(fn, args)
        meter = result = FunctionResult(fn.fully_qualified_name, None, Usage(), 0.0)
        token = _usage.METER.set((depth + 1, meter, budget))
        logged = _logging.INFO_ENABLED  # build no log event when info is filtered out
        start = time.perf_counter() if logged else 0.0
        try:
            if self._function_filters:
                result = await self._invoke_filtered(fn, args, meter)
                result.cost = meter.cost
            elif fn.timeout is None and type(args) is dict:
                # The hot path: _call() inlined (one coroutine frame less).
                validated = fn.validate(args)
                try:
                    meter.value = await fn.run(self, validated)
                except KernelError:
                    raise
                except Exception as exc:
                    raise InvocationError(f"{fn.fully_qualified_name} failed: {type(exc).__name__}: {exc}") from exc
            else:
                meter.value = await self._call(fn, args)
        except BaseException as exc:
            if logged:
                log.info("function_invoked", function=fn.fully_qualified_name, outcome="error",
                         error=type(exc).__name__, duration_ms=round((time.perf_counter() - start) * 1000, 3))
            raise
        finally:
            _usage.METER.reset(token)
            _usage.close(meter, parent)
        if logged:
            if self.settings.log.log_values:  # opt-in; secrets are still masked by the processor
                log.info("function_invoked", function=fn.fully_qualified_name, outcome="ok",
                         duration_ms=round((time.perf_counter() - start) * 1000, 3),
                         arguments=dict(args), value=_preview(result.value))
            else:
                log.info("function_invoked", function=fn.fully_qualified_name, outcome="ok",
                         duration_ms=round((time.perf_counter() - start) * 1000, 3))
        return result

    def _enter(self, fn: KernelFunction, parent: _usage.Scope | None) -> tuple[int, _usage.Budget]:
        """The depth and budget of a new invocation of `fn` (what `invoke` does inline)."""
        if parent is None:
            return 0, self._budget(1)
        depth, _, budget = parent
        if depth >= self._max_depth:
            raise self._too_deep(fn)
        budget[_usage.FUNCTIONS] += 1
        if budget[_usage.FUNCTIONS] > budget[_usage.MAX_FUNCTIONS]:
            raise _usage.exceeded(budget, "function", fn.fully_qualified_name)
        return depth, budget

    def _budget(self, functions: int) -> _usage.Budget:
        """A fresh budget of a top-level invocation (`functions`: calls made already)."""
        return [functions, 0, self._max_function_calls, self._max_model_calls]

    def _too_deep(self, fn: KernelFunction) -> RecursionLimitError:
        return RecursionLimitError(
            f"{fn.fully_qualified_name}: functions nested deeper than {self._max_depth} "
            "calls (recursive functions?); raise max_call_depth if this is intended"
        )

    async def _call(self, fn: KernelFunction, args: Mapping[str, Any]) -> Any:
        validated = fn.validate(args)
        settings = args.settings if isinstance(args, KernelArguments) else None
        if settings:
            validated = KernelArguments(validated, settings=settings)
        try:
            if fn.timeout is not None:
                import asyncio

                try:
                    return await asyncio.wait_for(fn.run(self, validated), fn.timeout)
                except TimeoutError:
                    raise FunctionTimeoutError(f"{fn.fully_qualified_name} timed out after {fn.timeout} s") from None
            return await fn.run(self, validated)
        except KernelError:
            raise
        except Exception as exc:
            raise InvocationError(f"{fn.fully_qualified_name} failed: {type(exc).__name__}: {exc}") from exc

    async def _invoke_filtered(
        self, fn: KernelFunction, args: dict[str, Any], meter: FunctionResult
    ) -> FunctionResult:
        context = FunctionContext(self, fn, dict(args))

        async def final(ctx: FunctionContext) -> None:
            value = await self._call(ctx.function, ctx.arguments)
            ctx.result = FunctionResult(ctx.function.fully_qualified_name, value, meter.usage)

        await run_pipeline(self.filters["function"], context, final)
        if context.result is None:
            raise InvocationError(
                f"{fn.fully_qualified_name}: a function filter neither called next() nor set a result"
            )
        return context.result

    def run(
        self, function: KernelFunction | str, arguments: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> FunctionResult:
        """Synchronous `invoke`, for scripts. Refuses to run inside an event loop."""
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.invoke(function, arguments, **kwargs))
        raise KernelError("Kernel.run() called from a running event loop; use 'await kernel.invoke(...)'")

    async def invoke_stream(
        self,
        function: KernelFunction | str,
        arguments: Mapping[str, Any] | None = None,
        /,
        **kwargs: Any,
    ) -> AsyncIterator[KernelStreamEvent]:
        """Stream a function: text deltas (and tool-call events) then a FinalMessage.

        A function that cannot stream (a native function) yields its whole result as one
        delta. So does every function when function filters are registered: filters see a
        whole invocation (its arguments and its result), which a token stream cannot give
        them."""
        fn = function if isinstance(function, KernelFunction) else self.get_function(function)
        args = {**(arguments or {}), **kwargs}
        if not fn.streams or self._function_filters:
            result = await self.invoke(fn, args)
            text = "" if result.value is None else str(result.value)
            yield TextDelta(text)
            yield FinalMessage(ChatMessage("assistant", text), result.usage)
            return
        parent = _usage.METER.get()
        depth, budget = self._enter(fn, parent)
        if fn.needs_approval:
            await _usage.check_approval(fn, args)
        meter = FunctionResult(fn.fully_qualified_name, None, Usage(), 0.0)
        events = fn.stream(self, fn.validate(args), getattr(arguments, "settings", None))
        # The stream runs as one invocation (its nested calls and model calls counted and
        # metered), in a task of its own so the running invocation never leaks to the caller.
        try:
            async for event in (_usage.scoped(events, (depth + 1, meter, budget)) if self.events is None else
                                self.events.stream(fn, args, events, (depth + 1, meter, budget), meter)):
                yield event
        finally:
            _usage.close(meter, parent)

    # -- model calls ---------------------------------------------------------------------

    async def complete(self, request: ChatRequest, service: str | None = None) -> ChatResponse:
        """One chat call through the kernel (retries, fallbacks), usage recorded. Counts
        against the running invocation's model-call budget (`max_model_calls`)."""
        _usage.model_call(f"model call to {service or 'the default chat service'}")
        response = await (self.services.chat(service).complete(request) if self.events is None
                          else self.events.complete(self, request, service))
        _usage.record(response.usage, response.model, self.settings.prices)
        return response

    async def stream(self, request: ChatRequest, service: str | None = None) -> AsyncIterator[StreamEvent]:
        """One streamed chat call through the kernel; usage recorded at the end. Counts
        against the running invocation's model-call budget (`max_model_calls`)."""
        _usage.model_call(f"model call to {service or 'the default chat service'}")
        accumulator = StreamAccumulator()
        async for event in (self.services.chat(service).stream(request) if self.events is None
                            else self.events.stream_model(self, request, service)):
            accumulator.add(event)
            yield event
        _usage.record(accumulator.usage, accumulator.model, self.settings.prices)

    def record_usage(self, usage: Usage, model: str) -> None:
        """Add a model call made outside `complete`/`stream` to the running invocation."""
        _usage.record(usage, model, self.settings.prices)

    # -- convenience: the wings, imported when first used ---------------------------------

    async def render(
        self, function: str | KernelFunction, arguments: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> list[ChatMessage]:
        """The chat messages a prompt function would send, without calling a model."""
        from .prompts import PromptFunction

        found = function if isinstance(function, KernelFunction) else self.get_function(function)
        if not isinstance(found, PromptFunction):
            raise KernelError(f"{found.fully_qualified_name} is a native function; only prompt functions render")
        return await found.render_messages(self, found.validate({**(arguments or {}), **kwargs}))

    async def invoke_prompt(self, template: str, arguments: Mapping[str, Any] | None = None, /,
                            *, service: str | None = None, settings: Mapping[str, Any] | None = None,
                            **kwargs: Any) -> FunctionResult:
        """Render and run an ad-hoc prompt template (compiled once, cached)."""
        from .prompts import PromptFunction

        fn = PromptFunction.from_template(template, name="inline", plugin="prompt", settings=settings, service=service)
        return await self.invoke(fn, {**(arguments or {}), **kwargs})

    async def chat(
        self, messages: Sequence[ChatMessage] | ChatHistory | str, **options: Unpack[ChatOptions]
    ) -> ChatResult:
        """A chat turn with kernel functions offered as tools; see `kernel.chat.tool_loop`.
        Outside an invocation the turn is a top-level invocation: its model calls and the
        tool calls' nested calls share one budget."""
        from .chat import run_chat

        if _usage.METER.get() is not None:
            return await run_chat(self, messages, **options)
        token = _usage.METER.set(self._top_level("chat"))
        try:
            return await run_chat(self, messages, **options)
        finally:
            _usage.METER.reset(token)

    async def chat_stream(
        self, messages: Sequence[ChatMessage] | ChatHistory | str, **options: Unpack[ChatOptions]
    ) -> AsyncIterator[KernelStreamEvent]:
        """`chat` as one event stream: deltas, tool-call events, then a FinalMessage (one
        budget for the turn, as `chat`)."""
        from .chat import stream_chat

        events = stream_chat(self, messages, **options)
        if _usage.METER.get() is None:
            events = _usage.scoped(events, self._top_level("chat"))
        async for event in events:
            yield event

    def _top_level(self, name: str) -> _usage.Scope:
        """The running invocation of a chat turn started by the application: depth 0 (its
        tool calls are at depth 1, as when invoked directly), a fresh budget."""
        meter = FunctionResult(name, None, Usage(), 0.0)
        return 0, meter, self._budget(0)

    async def plan(self, goal: str, **options: Unpack[PlanOptions]) -> Plan:
        """Ask a chat service for a validated plan toward `goal`; see `kernel.planning`."""
        from .planning import create_plan

        return await create_plan(self, goal, **options)

    async def batch(self, function: Any, records: Any, /, **options: Any) -> BatchReport:
        """Run a function (a name, a KernelFunction or a Plan) over records (a .jsonl, .csv
        or .parquet path, or an iterable of mappings), in this process or on Ray
        (`executor="ray"`); with `output=`, resumable. See `kernel.batch.run_batch`."""
        from .batch import run_batch

        return await run_batch(self, function, records, **options)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.services.aclose()
        if self.events is not None:
            await self.events.aclose()
        import sys

        if "kernel.mcp" in sys.modules:  # the MCP servers this kernel started stop with it
            await sys.modules["kernel.mcp"].close_kernel(self)

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _preview(value: Any, limit: int = 500) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + "..."
