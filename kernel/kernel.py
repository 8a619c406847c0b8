"""The `Kernel`: plugins, services and middleware, and the one place functions run.

A kernel owns its own pluggy `PluginManager`. Built-in connectors and standard plugins
are registered through the same hooks as third-party packages (entry-point group
`orchestration_kernel`). Hooks run once, here; the registries they fill are plain dicts
read on the invoke path.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from . import logging as _logging
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
from .middleware import STAGES, Filter, FunctionContext, PromptContext, Stage, run_pipeline
from .services import ServiceRegistry

if TYPE_CHECKING:
    # Loaded when first needed, to keep `import kernel` cheap: pluggy and
    # importlib.metadata (hooks), jinja2 (templates), pydantic-settings (configuration).
    import pluggy

    from .prompt_function import PromptFunction
    from .prompts import PluginNamespace
    from .settings import KernelSettings

BUILTIN_PLUGINS: tuple[str, ...] = (
    "connectors.openai_models",
    "connectors.anthropic_models",
    "connectors.llamacpp",
    "connectors.sentence_transformers_embeddings",
    "connectors.sqlite_store",
    "connectors.pgvector_store",
    "plugins.standard",
)
"""Modules registered as default plugins, exactly like third-party ones."""

_METER: ContextVar[tuple[int, FunctionResult] | None] = ContextVar("kernel_usage_meter", default=None)
"""(nesting depth, result) of the innermost running invocation. The result under
construction is the meter: model calls add their usage and cost to it, and a finished
nested invocation adds its own to its parent's. Its `cost` starts at 0.0 and becomes None
(unpriced) for good as soon as one call is unpriced: an unknown cost is never zero."""

log = _logging.LazyLogger("kernel")


def _as_prompt_function(fn: Any) -> PromptFunction | None:
    """`fn` if it is a prompt function. No prompt function exists before its module (and
    jinja2) is imported, so native-only applications never load the template engine."""
    module = sys.modules.get("kernel.prompt_function")
    if module is not None and isinstance(fn, module.PromptFunction):
        return cast("PromptFunction", fn)
    return None


def _add_cost(result: FunctionResult, cost: float | None) -> None:
    if result.cost is not None:
        result.cost = None if cost is None else result.cost + cost


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be imported or registered, and why."""

    name: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} failed: {self.error}"


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
        plugins: Iterable[Any] = (),
        load_entry_points: bool | None = None,
        builtins: bool = True,
        strict: bool | None = None,
    ) -> None:
        import pluggy

        from . import hookspecs

        if settings is None:
            from .settings import KernelSettings

            settings = KernelSettings.load()
        self.settings = settings
        self.strict = self.settings.strict_plugins if strict is None else strict
        _logging.configure_default(self.settings.log.level, self.settings.log.format)
        _logging.register_secrets(
            svc.api_key.get_secret_value() for svc in self.settings.services.values() if svc.api_key
        )
        self.services = ServiceRegistry(self.settings)
        self.plugins: dict[str, KernelPlugin] = {}
        self.filters: dict[Stage, list[Filter]] = {stage: [] for stage in STAGES}
        self._function_filters = self.filters["function"]  # the same list, read on the hot path
        self._max_depth = self.settings.max_call_depth
        self.plugin_failures: list[PluginFailure] = []
        self.approval: Callable[..., Any] | None = None
        self._namespaces: dict[str, PluginNamespace] | None = None
        self._functions_by_tool: dict[str, KernelFunction] = {}
        self._functions_by_name: dict[str, KernelFunction] = {}

        self.pm: pluggy.PluginManager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        if builtins:
            for module_name in BUILTIN_PLUGINS:
                if module_name == "plugins.standard" and not self.settings.standard_plugins:
                    continue
                self._register_module(module_name)
        autoload = self.settings.plugin_autoload if load_entry_points is None else load_entry_points
        if autoload:
            self._load_entry_points()
        for plugin in plugins:
            self._guard(getattr(plugin, "__name__", type(plugin).__name__), partial(self.pm.register, plugin))
        self._collect_registrations()
        for directory in self.settings.plugin_dirs:
            self.add_plugin(os.fspath(directory))
        self._announce(self.pm.hook.kernel_configured.get_hookimpls())

    # -- plugin manager ---------------------------------------------------------------

    def _guard(self, name: str, action: Callable[[], Any]) -> bool:
        """Run `action`; a failure is recorded and logged, or raised in strict mode."""
        try:
            action()
        except Exception as exc:
            if self.strict:
                raise PluginError(f"plugin {name!r} failed: {type(exc).__name__}: {exc}") from exc
            failure = PluginFailure(name, f"{type(exc).__name__}: {exc}")
            self.plugin_failures.append(failure)
            log.warning("plugin_failed", plugin=name, error=failure.error)
            return False
        return True

    def _register_module(self, module_name: str) -> None:
        def action() -> None:
            module = importlib.import_module(module_name)
            self.pm.register(module, name=module_name)

        self._guard(module_name, action)

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        from . import hookspecs

        allow = self.settings.plugin_allowlist
        allowed = {n.strip() for n in allow.split(",") if n.strip()} if allow is not None else None
        for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                log.info("plugin_skipped", plugin=ep.name, reason="not in plugin_allowlist")
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            self._guard(ep.name, partial(self._register_entry_point, ep))

    def _register_entry_point(self, ep: Any) -> None:
        self.pm.register(ep.load(), name=ep.name)

    def _collect_registrations(self) -> None:
        """Call every plugin's registration hooks one by one, so that one broken plugin
        is reported by name and the others still register."""
        for impl in self.pm.hook.register_connectors.get_hookimpls():
            source = impl.plugin_name

            def register_connector(kind: Any, provider: str, factory: Any, _source: str = source) -> None:
                self.services.add_connector(kind, provider, factory, _source)

            self._guard(source, partial(impl.function, register=register_connector))
        for impl in self.pm.hook.register_plugins.get_hookimpls():
            self._guard(impl.plugin_name, partial(impl.function, register=self._register_plugin_from_hook))
        for impl in self.pm.hook.register_filters.get_hookimpls():
            self._guard(impl.plugin_name, partial(impl.function, register=self.add_filter))

    def _register_plugin_from_hook(self, obj: Any, name: str | None = None, description: str | None = None) -> None:
        self.add_plugin(obj, name=name, description=description)

    def _announce(self, impls: Iterable[Any]) -> None:
        """Call `kernel_configured` implementations, each isolated like registration."""
        from functools import partial

        for impl in impls:
            self._guard(impl.plugin_name, partial(impl.function, kernel=self))

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a pluggy plugin (a module or object with `@hookimpl`s) after start-up.
        Registering the same plugin again does nothing."""
        if self.pm.is_registered(plugin):
            return
        self.pm.register(plugin, name=name)
        for hook, register in (
            (self.pm.hook.register_connectors, None),
            (self.pm.hook.register_plugins, self._register_plugin_from_hook),
            (self.pm.hook.register_filters, self.add_filter),
        ):
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if register is None:
                    src = impl.plugin_name

                    def reg(kind: Any, provider: str, factory: Any, _s: str = src) -> None:
                        self.services.add_connector(kind, provider, factory, _s)

                    impl.function(register=reg)
                else:
                    impl.function(register=register)
        self._announce(impl for impl in self.pm.hook.kernel_configured.get_hookimpls() if impl.plugin is plugin)

    # -- plugins and functions ------------------------------------------------------------

    def add_plugin(
        self,
        plugin: Any,
        name: str | None = None,
        *,
        description: str | None = None,
    ) -> KernelPlugin:
        """Add functions: a `KernelPlugin`, a module or object with `@kernel_function`
        members, a list of functions, or a plugin folder (`str`/`Path`)."""
        if isinstance(plugin, str | os.PathLike):  # a folder (pathlib loads with the loader)
            from pathlib import Path

            from .loader import load_plugins

            items = load_plugins(Path(plugin))
            if not items:
                raise PluginError(f"{plugin}: no plugins found in this folder")
            if name and len(items) > 1:
                raise PluginError(
                    f"{plugin}: holds {len(items)} plugins ({', '.join(i.name for i in items)}); "
                    "name= only renames a folder that is one plugin"
                )
            if name and name != items[0].name:
                items = [items[0].renamed(name)]
            if description is not None and len(items) == 1:
                items[0].description = description
            loaded: KernelPlugin | None = None
            for item in items:
                loaded = self._add(item)
            assert loaded is not None
            return loaded
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
        if callable(plugin) and is_kernel_function(plugin) and not inspect.isclass(plugin):
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

    def add_function(self, function: KernelFunction | Callable[..., Any], plugin: str | None = None) -> KernelFunction:
        """Add one function (to `plugin`, default: the function's own plugin name)."""
        if not isinstance(function, KernelFunction):
            function = NativeFunction(function, plugin_name=plugin or "functions")
        group = KernelPlugin(plugin or function.plugin_name)
        if plugin and plugin != function.plugin_name:
            raise PluginError(
                f"{function.fully_qualified_name} belongs to plugin {function.plugin_name!r}, not {plugin!r}"
            )
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
            from .prompts import PluginNamespace

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
        every model call made on its behalf (nested calls included)."""
        fn = self.get_function(function) if isinstance(function, str) else function
        if arguments is None:
            args: dict[str, Any] = kwargs
        elif kwargs:
            args = KernelArguments(arguments, settings=getattr(arguments, "settings", None))
            args.update(kwargs)
        else:
            args = arguments if isinstance(arguments, dict) else dict(arguments)
        parent = _METER.get()
        depth = 0 if parent is None else parent[0]
        if depth >= self._max_depth:
            raise self._too_deep(fn)
        meter = result = FunctionResult(fn.fully_qualified_name, None, Usage(), 0.0)
        token = _METER.set((depth + 1, meter))
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
            _METER.reset(token)
            if parent is not None:
                outer = parent[1]
                if meter.usage.requests:
                    outer.usage.add(meter.usage)
                _add_cost(outer, meter.cost)
        if logged:
            if self.settings.log.log_values:  # opt-in; secrets are still masked by the processor
                log.info("function_invoked", function=fn.fully_qualified_name, outcome="ok",
                         duration_ms=round((time.perf_counter() - start) * 1000, 3),
                         arguments=dict(args), value=_preview(result.value))
            else:
                log.info("function_invoked", function=fn.fully_qualified_name, outcome="ok",
                         duration_ms=round((time.perf_counter() - start) * 1000, 3))
        return result

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

    # -- prompts and models -----------------------------------------------------------------

    async def render_prompt(self, fn: PromptFunction, arguments: Mapping[str, Any]) -> list[ChatMessage]:
        """Render a prompt function to chat messages (through `prompt` filters)."""
        from .prompts import parse_chat

        if not self.filters["prompt"]:
            messages = parse_chat(await fn.render(self, arguments))
            if self.settings.log.log_values:
                log.debug("prompt_rendered", function=fn.fully_qualified_name, messages=[m.to_dict() for m in messages])
            return messages
        context = PromptContext(self, fn, dict(arguments))

        async def final(ctx: PromptContext) -> None:
            if ctx.rendered is None:
                ctx.rendered = await fn.render(self, ctx.arguments)
            ctx.messages = parse_chat(ctx.rendered)

        await run_pipeline(self.filters["prompt"], context, final)
        if context.messages is None:
            context.messages = parse_chat(context.rendered or "")
        return context.messages

    async def render(
        self, function: str | PromptFunction, arguments: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> list[ChatMessage]:
        """The chat messages a prompt function would send, without calling a model."""
        found = function if isinstance(function, KernelFunction) else self.get_function(function)
        fn = _as_prompt_function(found)
        if fn is None:
            raise KernelError(f"{found.fully_qualified_name} is a native function; only prompt functions render")
        args = {**(arguments or {}), **kwargs}
        return await self.render_prompt(fn, fn.validate(args))

    def request_settings(self, fn: PromptFunction, overrides: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """Which chat service serves `fn`, and the merged execution settings."""
        service = fn.service or self.services.default_name("chat")
        configured = self.settings.services.get(service)
        merged = dict(configured.settings) if configured else {}
        merged.update(fn.settings_for(service))
        if overrides:
            merged.update(overrides)
        return service, merged

    async def complete_for_function(
        self, fn: PromptFunction, messages: list[ChatMessage], overrides: Mapping[str, Any] | None = None
    ) -> ChatResponse:
        service, settings = self.request_settings(fn, overrides)
        tool_options = _pop_tool_options(settings)
        if tool_options:
            from .tool_calls import run_chat

            result = await run_chat(self, messages, service=service, settings=settings,
                                    output_schema=fn.output_schema, **tool_options)
            return result.response
        request = ChatRequest(messages, settings=settings, output_schema=fn.output_schema,
                              output_schema_name=fn.name)
        return await self.complete(request, service)

    async def complete(self, request: ChatRequest, service: str | None = None) -> ChatResponse:
        """One chat call through the kernel (retries, fallbacks), usage recorded."""
        response = await self.services.chat(service).complete(request)
        self.record_usage(response.usage, response.model)
        return response

    async def stream(self, request: ChatRequest, service: str | None = None) -> AsyncIterator[StreamEvent]:
        """One streamed chat call through the kernel; usage recorded at the end."""
        accumulator = StreamAccumulator()
        async for event in self.services.chat(service).stream(request):
            accumulator.add(event)
            yield event
        self.record_usage(accumulator.usage, accumulator.model)

    def record_usage(self, usage: Usage, model: str) -> None:
        current = _METER.get()
        if current is None:
            return
        meter = current[1]
        usage = Usage(usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                      usage.cache_write_tokens, max(usage.requests, 1))
        meter.usage.add(usage)
        cost = None
        if self.settings.prices:
            from .pricing import cost as price

            cost = price(usage, model, self.settings.prices)
        _add_cost(meter, cost)

    async def invoke_stream(
        self,
        function: KernelFunction | str,
        arguments: Mapping[str, Any] | None = None,
        /,
        **kwargs: Any,
    ) -> AsyncIterator[KernelStreamEvent]:
        """Stream a function: text deltas (and tool-call events) then a FinalMessage.

        A native function yields its whole result as one delta. So does a prompt function
        when function filters are registered: filters see a whole invocation (its
        arguments and its result), which a token stream cannot give them."""
        found = function if isinstance(function, KernelFunction) else self.get_function(function)
        args = {**(arguments or {}), **kwargs}
        fn = _as_prompt_function(found)
        if fn is None or self._function_filters:
            result = await self.invoke(found, args)
            text = "" if result.value is None else str(result.value)
            yield TextDelta(text)
            yield FinalMessage(ChatMessage("assistant", text), result.usage)
            return
        parent = _METER.get()
        if parent is not None and parent[0] >= self._max_depth:
            raise self._too_deep(fn)
        messages = await self.render_prompt(fn, fn.validate(args))
        service, settings = self.request_settings(fn, getattr(arguments, "settings", None))
        tool_options = _pop_tool_options(settings)
        if tool_options:
            from .tool_calls import stream_chat

            async for event in stream_chat(self, messages, service=service, settings=settings,
                                           output_schema=fn.output_schema, **tool_options):
                yield event
            return
        request = ChatRequest(messages, settings=settings, output_schema=fn.output_schema, output_schema_name=fn.name)
        accumulator = StreamAccumulator()
        async for event in self.stream(request, service):
            accumulator.add(event)
            yield event
        response = accumulator.response()
        yield FinalMessage(response.message, response.usage)

    async def invoke_prompt(self, template: str, arguments: Mapping[str, Any] | None = None, /,
                            *, service: str | None = None, settings: Mapping[str, Any] | None = None,
                            **kwargs: Any) -> FunctionResult:
        """Render and run an ad-hoc prompt template (compiled once, cached)."""
        from .prompt_function import PromptFunction

        fn = PromptFunction.from_template(template, name="inline", plugin="prompt", settings=settings, service=service)
        return await self.invoke(fn, {**(arguments or {}), **kwargs})

    # -- chat with automatic function calling ---------------------------------------------

    async def chat(self, messages: Any, **options: Any) -> Any:
        """A chat turn with kernel functions offered as tools; see `kernel.tool_calls`."""
        from .tool_calls import run_chat

        return await run_chat(self, messages, **options)

    async def chat_stream(self, messages: Any, **options: Any) -> AsyncIterator[KernelStreamEvent]:
        from .tool_calls import stream_chat

        async for event in stream_chat(self, messages, **options):
            yield event

    # -- planner ------------------------------------------------------------------------

    async def plan(self, goal: str, **options: Any) -> Any:
        """Ask a chat service for a validated plan toward `goal`; see `kernel.planner`."""
        from .planner import create_plan

        return await create_plan(self, goal, **options)

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.services.aclose()

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _preview(value: Any, limit: int = 500) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


TOOL_SETTING_KEYS = ("function_choice", "tools", "plugins", "functions", "tool_choice", "loop_policy")


def _pop_tool_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Move tool-calling options out of provider settings (they drive the kernel's loop)."""
    options = {key: settings.pop(key) for key in TOOL_SETTING_KEYS if key in settings}
    if "function_choice" in options:
        options["tool_choice"] = options.pop("function_choice")
    return options
