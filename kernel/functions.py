"""Kernel functions: the unit the kernel invokes, offers as tools and plans with.

A `KernelFunction` has a fully qualified name `plugin.function`, a reversible tool name
`plugin-function` that every provider accepts, a JSON schema for its parameters, and
validates its arguments before it runs. `NativeFunction` wraps a Python callable marked
with `@kernel_function`; prompt functions live in `prompt_function.py`.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    TypeVar,
    overload,
)

from ._signatures import FastPath, describe_hint, marked_members, signature_of
from .contents import Usage
from .errors import ArgumentError, DuplicateNameError, PluginError

if TYPE_CHECKING:
    # pydantic is imported when the first function is built, not with `import kernel`.
    from pydantic import BaseModel, ValidationError

    from .contents import KernelStreamEvent
    from .kernel import Kernel

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_NAME_SEPARATOR = "-"

SYNC_RUNNER: ContextVar[Callable[[Callable[[], Any]], Awaitable[Any]] | None] = ContextVar(
    "kernel_sync_runner", default=None)
"""Where plain sync native functions run: inline (None), or through this runner (the tool
loop sets a worker-thread runner around a model's call, so `tool_timeout` holds)."""

Concurrency = Literal["parallel", "sequential", "exclusive"]
"""How the tool loop may run a function: with others (`parallel`), one call at a time in
request order (`sequential`), or alone, with nothing else running (`exclusive`)."""


class KernelArguments(dict[str, Any]):
    """The arguments of one invocation. A plain dict; `settings` optionally overrides
    execution settings of prompt functions for this call."""

    __slots__ = ("settings",)

    def __init__(self, *args: Any, settings: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: dict[str, Any] = dict(settings or {})


@dataclass(slots=True)
class FunctionResult:
    """What a function returned, with the usage of every model call made on its behalf
    (nested calls included) and the cost when the model is priced (None: unpriced)."""

    function: str
    value: Any
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return "" if self.value is None else str(self.value)


@dataclass(frozen=True, slots=True)
class ParameterInfo:
    name: str
    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    required: bool = True
    default: Any = None


def check_name(kind: str, name: str, where: str = "") -> str:
    if not NAME_PATTERN.match(name):
        raise PluginError(
            f"invalid {kind} name {name!r}{where}: use letters, digits and underscores, "
            "not starting with a digit"
        )
    return name


def tool_name_for(plugin: str, function: str) -> str:
    """The provider-safe, reversible tool name of `plugin.function`."""
    name = f"{plugin}{TOOL_NAME_SEPARATOR}{function}"
    if not TOOL_NAME_PATTERN.match(name):
        raise PluginError(f"{plugin}.{function}: tool name {name!r} is longer than 64 characters")
    return name


def parse_function_name(name: str) -> tuple[str, str]:
    """Split `plugin.function` or a tool name `plugin-function` into its two parts."""
    for sep in (".", TOOL_NAME_SEPARATOR):
        plugin, found, function = name.partition(sep)
        if found and plugin and function and sep not in function:
            return plugin, function
    raise ValueError(f"not a function name: {name!r} (expected 'plugin.function')")


class KernelFunction(ABC):
    """Common interface of native and prompt functions."""

    name: str
    plugin_name: str
    description: str
    needs_approval: bool = False
    concurrency: Concurrency = "parallel"
    timeout: float | None = None
    idempotent: bool = True
    """False: running it twice may do twice what it does (a resumed plan will not repeat it)."""
    streams: bool = False
    """True when `stream()` yields the answer as it is produced (prompt functions)."""

    _arguments_model: type[BaseModel] | None
    _parameters: list[ParameterInfo]

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.plugin_name}.{self.name}"

    @property
    def tool_name(self) -> str:
        return tool_name_for(self.plugin_name, self.name)

    @property
    def parameters(self) -> list[ParameterInfo]:
        return self._parameters

    @property
    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema (type object) of the arguments, as offered to models."""
        properties: dict[str, Any] = {}
        defs: dict[str, Any] = {}
        for p in self._parameters:
            prop = dict(p.schema)
            # `$ref: "#/$defs/X"` resolves against the root: hoist each property's $defs there.
            defs.update(prop.pop("$defs", None) or {})
            if p.description:
                prop["description"] = p.description
            if not p.required and p.default is not None:
                prop.setdefault("default", p.default)
            properties[p.name] = prop
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": [p.name for p in self._parameters if p.required],
            "additionalProperties": False,
        }
        if defs:
            schema["$defs"] = defs
        return schema

    @property
    def return_schema(self) -> dict[str, Any]:
        return {}

    def bind_positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional values (template calls, SK syntax) to parameters in order."""
        if not args:
            return kwargs
        names = [p.name for p in self._parameters]
        if len(args) > len(names):
            raise ArgumentError(
                self.fully_qualified_name, None,
                f"takes {len(names)} argument(s) but {len(args)} were given positionally",
            )
        bound = dict(zip(names, args, strict=False))
        for key in kwargs:
            if key in bound:
                raise ArgumentError(self.fully_qualified_name, key, "given both by position and by name")
        bound.update(kwargs)
        return bound

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce arguments against the parameter schema.

        Raises ArgumentError naming the function, the parameter and the problem.
        """
        model = self._arguments_model
        if model is None:
            if arguments:
                extra = next(iter(arguments))
                raise ArgumentError(self.fully_qualified_name, extra, "unexpected argument (the function takes none)")
            return {}
        try:
            validated = model.__pydantic_validator__.validate_python(arguments)
        except ValueError as exc:  # pydantic's ValidationError (a ValueError subclass)
            raise argument_error_from(self.fully_qualified_name, exc) from None
        fields: dict[str, Any] = validated.__dict__
        return fields

    @abstractmethod
    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        """Run with validated arguments; return the value (prompt functions return a
        FunctionResult-ready value and report usage through the kernel)."""

    def stream(
        self, kernel: Kernel, arguments: dict[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> AsyncIterator[KernelStreamEvent]:
        """Stream with validated arguments (only when `streams` is true; the kernel turns
        other functions' results into one delta)."""
        raise NotImplementedError(f"{self.fully_qualified_name} does not stream")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fully_qualified_name}>"


def argument_error_from(function: str, exc: ValidationError | ValueError) -> ArgumentError:
    """Turn pydantic's error into one naming the (first) bad parameter and the problem;
    further problems are appended."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return ArgumentError(function, None, str(exc))
    problems: list[str] = []
    first_param: str | None = None
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        param = str(loc[0]) if loc else None
        if first_param is None:
            first_param = param
        kind = err.get("type")
        if kind == "missing":
            msg = "missing required argument"
        elif kind == "extra_forbidden":
            msg = "unexpected argument"
        else:
            inner = ".".join(str(p) for p in loc[1:])
            msg = err.get("msg", "invalid value") + (f" (at {inner})" if inner else "")
            given = err.get("input")
            if not isinstance(given, dict | list) and given is not None:
                text = repr(given)
                msg += f"; got {text[:60] + '...' if len(text) > 60 else text}"
        problems.append(msg if param == first_param and not problems else f"{param}: {msg}")
    return ArgumentError(function, first_param, "; ".join(problems))


# --- native functions ---------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class FunctionMarker:
    """Metadata that `@kernel_function` attaches to a callable."""

    name: str | None = None
    description: str | None = None
    needs_approval: bool = False
    concurrency: Concurrency = "parallel"
    timeout: float | None = None
    thread: bool = False
    idempotent: bool = True


MARKER_ATTRIBUTE = "__kernel_function__"


@overload
def kernel_function(func: F, /) -> F: ...


@overload
def kernel_function(
    func: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    concurrency: Concurrency = "parallel",
    timeout: float | None = None,
    thread: bool = False,
    idempotent: bool = True,
) -> Callable[[F], F]: ...


def kernel_function(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    concurrency: Concurrency = "parallel",
    timeout: float | None = None,
    thread: bool = False,
    idempotent: bool = True,
) -> F | Callable[[F], F]:
    """Mark a function or method as a kernel function.

    Parameters and the return type come from type hints; `Annotated[T, "description"]`
    or `Annotated[T, Field(description=...)]` documents a parameter. A parameter annotated
    `Kernel` or `KernelArguments` is injected, not offered to models. `needs_approval`
    asks the approval callback before automatic calls; `concurrency` tells the tool loop
    whether the function may run beside others; `thread=True` runs a blocking sync
    function in a worker thread; `idempotent=False` keeps a resumed plan from running it
    again when it was running at the crash.
    """
    marker = FunctionMarker(name, description, needs_approval, concurrency, timeout, thread, idempotent)

    def mark(f: F) -> F:
        target = f.__func__ if isinstance(f, staticmethod | classmethod) else f
        setattr(target, MARKER_ATTRIBUTE, marker)
        return f

    return mark(func) if func is not None else mark


_PLAIN_RESULTS = frozenset({str, int, float, bool, type(None), dict, list, tuple})


class NativeFunction(KernelFunction):
    """A Python callable (sync or async) exposed as a kernel function."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        plugin_name: str,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool | None = None,
        concurrency: Concurrency | None = None,
        timeout: float | None = None,
        thread: bool | None = None,
    ) -> None:
        marker: FunctionMarker = getattr(func, MARKER_ATTRIBUTE, None) or FunctionMarker()
        self.func = func
        self.plugin_name = check_name("plugin", plugin_name)
        raw_name = str(name or marker.name or getattr(func, "__name__", ""))
        self.name = check_name("function", raw_name, f" ({plugin_name})")
        # The cheap checks, at registration (read once per function, shared): type hints
        # resolve, no *args/**kwargs; which parameters the kernel injects.
        signature = self._signature = signature_of(func, f"{self.plugin_name}.{self.name}")
        self.description = description or marker.description or signature.description
        self.needs_approval = marker.needs_approval if needs_approval is None else needs_approval
        self.concurrency = concurrency or marker.concurrency
        self.timeout = timeout if timeout is not None else marker.timeout
        self._thread = marker.thread if thread is None else thread
        self.idempotent = marker.idempotent
        self._is_async = signature.is_async
        self._inject_kernel = signature.inject_kernel
        self._inject_arguments = signature.inject_arguments
        self._hints = signature.hints

    _return_hint: Any
    _fast: FastPath | None
    _LAZY = frozenset({"_parameters", "_arguments_model", "_return_hint", "_fast"})

    def __getattr__(self, attribute: str) -> Any:
        """Schemas and the argument model are built on first use: pydantic's work costs
        far more than registering a function, and many functions are never called."""
        if attribute not in NativeFunction._LAZY:
            raise AttributeError(attribute)
        self._build_schema()
        return self.__dict__[attribute]

    def _build_schema(self) -> None:
        """The parameters' schemas, the argument model and the fast path: built once per
        function and name, shared by the kernels that register it."""
        built = self._signature.schemas.get((self.plugin_name, self.name))
        if built is None:
            built = self._signature.schemas[(self.plugin_name, self.name)] = self._schema()
        self._parameters, self._return_hint, self._fast, self._arguments_model = built

    def _schema(self) -> tuple[list[ParameterInfo], Any, FastPath | None, type[BaseModel] | None]:
        from pydantic import ConfigDict, TypeAdapter, create_model

        where = f"{self.plugin_name}.{self.name}"
        hints = self._hints
        fields: dict[str, Any] = {}
        params: list[ParameterInfo] = []
        fast: FastPath | None = FastPath()
        for param in self._signature.parameters:
            if param.name in (self._inject_kernel, self._inject_arguments):
                continue
            hint = hints.get(param.name, inspect.Parameter.empty)
            base, description, info = describe_hint(hint)
            if base is inspect.Parameter.empty:
                base = Any
            required = param.default is inspect.Parameter.empty
            default = ... if required else param.default
            if fast is not None:
                fast = fast.add(param.name, base, info, required, param.default)
            # Keep the Field (constraints such as max_length live in its metadata) on the
            # type, so validation and the schema both see them.
            annotated: Any = Annotated[base, info] if info is not None else base
            fields[param.name] = (annotated, default)
            try:
                schema = TypeAdapter(annotated).json_schema()
            except Exception as exc:
                raise PluginError(f"{where}: parameter {param.name!r} has no JSON schema: {exc}") from None
            schema.pop("title", None)
            params.append(ParameterInfo(param.name, description, schema, required, None if required else param.default))
        model = (
            create_model(
                f"{self.plugin_name}_{self.name}_arguments",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
            if fields
            else None
        )
        return params, hints.get("return", Any), fast if fields else None, model

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        fast = self._fast
        if fast is not None:
            validated = fast.check(arguments)
            if validated is not None:
                return validated
        return super().validate(arguments)

    @property
    def return_schema(self) -> dict[str, Any]:
        from pydantic import TypeAdapter

        hint = self._return_hint
        if hint in (None, type(None)):
            return {"type": "null"}
        try:
            schema = TypeAdapter(hint).json_schema()
        except Exception:
            return {}
        schema.pop("title", None)
        return schema

    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        if self._inject_kernel is not None:
            arguments[self._inject_kernel] = kernel
        if self._inject_arguments is not None:
            arguments[self._inject_arguments] = KernelArguments(arguments)
        if self._is_async:
            return await self.func(**arguments)
        if self._thread:
            import asyncio

            return await asyncio.to_thread(self.func, **arguments)
        runner = SYNC_RUNNER.get()
        if runner is not None:  # a model's tool call: run where its timeout can stop waiting
            result = await runner(partial(self.func, **arguments))
        else:
            result = self.func(**arguments)
        if type(result) in _PLAIN_RESULTS:  # the common case: no awaitable check (an ABC lookup)
            return result
        if inspect.isawaitable(result):
            return await result
        return result


# --- plugins ------------------------------------------------------------------------------


class KernelPlugin:
    """A named group of functions."""

    __slots__ = ("description", "functions", "name", "source")

    def __init__(self, name: str, functions: Mapping[str, KernelFunction] | None = None, *,
                 description: str = "", source: str = "") -> None:
        self.name = check_name("plugin", name)
        self.description = description
        self.source = source
        self.functions: dict[str, KernelFunction] = {}
        for fn in (functions or {}).values():
            self.add(fn)

    def add(self, function: KernelFunction) -> None:
        if function.name in self.functions:
            raise DuplicateNameError(f"plugin {self.name!r} already has a function {function.name!r}")
        self.functions[function.name] = function

    def renamed(self, name: str) -> KernelPlugin:
        """A copy under another plugin name; its functions' full names follow."""
        import copy

        plugin = KernelPlugin(name, description=self.description, source=self.source)
        for function in self.functions.values():
            clone = copy.copy(function)
            clone.plugin_name = plugin.name
            plugin.add(clone)
        return plugin

    def __iter__(self) -> Any:
        return iter(self.functions.values())

    def __len__(self) -> int:
        return len(self.functions)

    def __getitem__(self, name: str) -> KernelFunction:
        return self.functions[name]

    @classmethod
    def from_object(cls, obj: Any, name: str | None = None, description: str | None = None) -> KernelPlugin:
        """Collect `@kernel_function` members of a module, class instance or class."""
        plugin_name = name or _default_plugin_name(obj)
        doc = (inspect.getdoc(obj) or "").split("\n\n")[0] if not inspect.ismodule(obj) else \
            (obj.__doc__ or "").strip().split("\n\n")[0]
        plugin = cls(plugin_name, description=description if description is not None else doc,
                     source=getattr(obj, "__file__", None) or type(obj).__qualname__)
        for attr in marked_members(obj, MARKER_ATTRIBUTE):  # the scan is done once per module or class
            plugin.add(NativeFunction(getattr(obj, attr), plugin_name=plugin_name))
        return plugin


def _default_plugin_name(obj: Any) -> str:
    if inspect.ismodule(obj):
        return obj.__name__.rsplit(".", 1)[-1]
    if inspect.isclass(obj):
        return obj.__name__
    return type(obj).__name__


def is_kernel_function(obj: Any) -> bool:
    return getattr(obj, MARKER_ATTRIBUTE, None) is not None

