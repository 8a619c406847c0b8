"""Templates: parsed once (syntax errors and variables known at load time), compiled on
first render and cached; kernel functions as template globals (`{{ plugin.fn(x) }}`), and
`sk_call("name", ...)`, the call Semantic Kernel's template formats are translated to.

Jinja and the sandbox load with the first template parsed, compiled or rendered: a
template restored from the plugin folders' parse cache needs neither, so a `Kernel()`
whose prompt files did not change does not import jinja2."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import FunctionNotFoundError, SandboxViolationError, TemplateRenderError, TemplateSyntaxError

if TYPE_CHECKING:
    import jinja2
    from jinja2 import nodes
    from jinja2.exceptions import UndefinedError

    from ..kernel import Kernel

    _Scan = tuple[list[nodes.Name], set[str], list[tuple[nodes.Name, str]], nodes.Getattr | None,
                  list[tuple[nodes.Name, nodes.Call]]]

TEMPLATE_CACHE_SIZE = 512


class RenderBudget:
    """Per-render budget for `range` items, shared by all loops of one render."""

    __slots__ = ("remaining",)

    def __init__(self, total: int) -> None:
        self.remaining = total


def bounded_range(budget: RenderBudget) -> Callable[..., range]:
    def bounded_range(*args: int) -> range:
        rng = range(*args)
        budget.remaining -= len(rng)
        if budget.remaining < 0:
            from jinja2.exceptions import SecurityError

            from .bounds import MAX_RANGE_TOTAL

            raise SecurityError(f"loops in this template exceed {MAX_RANGE_TOTAL:,} range items")
        return rng

    return bounded_range


class TemplateFunction:
    """A kernel function as seen from a template: `{{ plugin.fn(x, name=...) }}`."""

    __slots__ = ("_function", "_kernel")

    def __init__(self, kernel: Kernel, function: Any) -> None:
        self._kernel = kernel
        self._function = function

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .bounds import check_weight

        check_weight([*args, *kwargs.values()], f"arguments of {self._function.fully_qualified_name}")
        arguments = self._function.bind_positional(args, kwargs)
        result = await self._kernel.invoke(self._function, arguments)
        return result.value


SK_CALL = "sk_call"
"""The template global SK's formats call kernel functions through (see `SKFunctionCall`)."""


def find_function(kernel: Kernel, name: str) -> Any:
    """A kernel function by SK's names: `plugin.function`, `plugin-function`, or a bare
    `function` looked up across plugins (two plugins with that function: an error naming
    both, where SK would take the first it finds)."""
    if "." in name or "-" in name:
        return kernel.get_function(name)
    found = [plugin.functions[name] for plugin in kernel.plugins.values() if name in plugin.functions]
    if len(found) == 1:
        return found[0]
    if found:
        candidates = ", ".join(sorted(fn.fully_qualified_name for fn in found))
        raise FunctionNotFoundError(f"function {name!r} is ambiguous: {candidates} (write plugin.{name})")
    known = sorted({fn for plugin in kernel.plugins.values() for fn in plugin.functions})
    from difflib import get_close_matches  # only for this message

    close = get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FunctionNotFoundError(f"no plugin has a function {name!r}{hint}")


class SKFunctionCall:
    """`sk_call(name, *args, **kwargs)` in a template: Semantic Kernel's function call.

    The function is found by SK's names (`find_function`); the caller's variables that the
    callee takes as parameters are passed along (SK passes the caller's arguments to every
    call), then the call's own arguments: positional ones bind to parameters in order,
    named ones by name."""

    __slots__ = ("_arguments", "_kernel", "_source")

    def __init__(self, kernel: Kernel, arguments: Mapping[str, Any], source: str) -> None:
        self._kernel, self._arguments, self._source = kernel, arguments, source

    @property
    def variables(self) -> Mapping[str, Any]:
        """The caller's variables a call passes along."""
        return self._arguments

    def with_variables(self, arguments: Mapping[str, Any]) -> SKFunctionCall:
        """The same call, passing along `arguments` as the caller's variables."""
        return SKFunctionCall(self._kernel, arguments, self._source)

    def function_names(self) -> list[str]:
        """Every `plugin.function` of the kernel."""
        return [f"{name}.{fn}" for name, plugin in self._kernel.plugins.items() for fn in plugin.functions]

    async def __call__(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        try:
            function = find_function(self._kernel, name)
        except FunctionNotFoundError as exc:
            raise TemplateRenderError(f"{self._source}: {exc}") from None
        from .bounds import check_weight

        check_weight([*args, *kwargs.values()], f"arguments of {function.fully_qualified_name}")
        given = function.bind_positional(args, kwargs)
        arguments = {p.name: self._arguments[p.name] for p in function.parameters
                     if p.name in self._arguments and p.name not in given}
        arguments.update(given)
        result = await self._kernel.invoke(function, arguments)
        return result.value


class TemplateHelpers(Protocol):
    """Globals a template format adds to its templates (SK's helpers): which free names of
    a template it provides (they are not inputs), and their values for one render, given
    the render's `sk_call` (helpers that call kernel functions go through it).
    `passes_variables`: as in SK, a function whose template calls functions also takes the
    variables it does not declare, for those functions (`SKFunctionCall`)."""

    passes_variables: bool

    def names(self, template: CompiledTemplate) -> frozenset[str]: ...

    def bind(self, arguments: Mapping[str, Any], names: frozenset[str], call: SKFunctionCall) -> dict[str, Any]: ...


class PluginNamespace:
    """`plugin` in a template: attribute access yields its functions."""

    __slots__ = ("_functions", "_kernel", "_name")

    def __init__(self, kernel: Kernel, name: str, functions: Mapping[str, Any]) -> None:
        self._kernel, self._name, self._functions = kernel, name, functions

    def __getattr__(self, item: str) -> TemplateFunction:
        try:
            function = self._functions[item]
        except KeyError:
            raise AttributeError(f"plugin {self._name!r} has no function {item!r}") from None
        return TemplateFunction(self._kernel, function)

    def __repr__(self) -> str:
        return f"<plugin {self._name}>"


_IMPLICIT_NAMES = frozenset({"varargs", "kwargs", "self", "super", "range", SK_CALL})


def _scan(ast: nodes.Template) -> _Scan:
    """One walk over a parsed template: names read, names bound (set, for targets, macro
    names and parameters), `name.attr(...)` calls, the first private attribute access, and
    `name(...)` calls.

    Cheaper than `jinja2.meta.find_undeclared_variables`, which runs the code generator;
    it ignores Jinja's finer scoping (a name read before a later `set` counts as bound)."""
    from jinja2 import nodes

    loaded: list[nodes.Name] = []
    bound: set[str] = set()
    calls: list[tuple[nodes.Name, str]] = []
    direct: list[tuple[nodes.Name, nodes.Call]] = []
    private: nodes.Getattr | None = None
    stack: list[nodes.Node] = [ast]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                loaded.append(node)
            else:
                bound.add(node.name)
        elif isinstance(node, nodes.Getattr):
            if private is None and node.attr.startswith("_"):
                private = node
        elif isinstance(node, nodes.Call):
            target = node.node
            if isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name):
                calls.append((target.node, target.attr))
            elif isinstance(target, nodes.Name):
                direct.append((target, node))
        elif isinstance(node, nodes.Macro):
            bound.add(node.name)
        elif isinstance(node, nodes.For):
            bound.add("loop")  # Jinja's loop variable (a plugin named `loop` clashes with it)
        elif isinstance(node, nodes.CallBlock):
            bound.add("caller")
        stack.extend(node.iter_child_nodes())
    return loaded, bound, calls, private, direct


class CompiledTemplate:
    """A template parsed once (syntax errors and variables are known at load time) and
    compiled to Python on first render, then reused.

    `functions_used` holds the `plugin.function` names it calls (`plugin.function(...)`, and
    `sk_call("plugin.function")` or `sk_call("plugin-function")`); `sk_names` the bare function
    names of `sk_call("name")`, looked up across plugins at render; `called_names` the free
    names it calls directly (`name(...)`), which a format's helpers may provide."""

    __slots__ = ("_ast", "_template", "call_targets", "called_names", "functions_used", "is_async", "name",
                 "sk_names", "source", "uses_sk_call", "variables")

    def __init__(self, source: str, name: str) -> None:
        import jinja2
        from jinja2 import nodes

        from .sandbox import ENVIRONMENT, REMOVED_GLOBALS

        self.source, self.name = source, name
        try:
            ast = ENVIRONMENT.parse(source, name=name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateSyntaxError(f"{name}:{exc.lineno}: {exc.message}") from None
        loaded, bound, calls, private, direct = _scan(ast)
        undeclared = {n.name for n in loaded} - bound - _IMPLICIT_NAMES - set(ENVIRONMENT.globals)
        call_bases = {id(base) for base, _ in calls}
        plain = {n.name for n in loaded if id(n) not in call_bases}
        sk_calls = [call for target, call in direct if target.name == SK_CALL and SK_CALL not in bound]
        sk_targets = {call.args[0].value for call in sk_calls
                      if call.args and isinstance(call.args[0], nodes.Const) and isinstance(call.args[0].value, str)}
        self.uses_sk_call = bool(sk_calls)
        self.sk_names: frozenset[str] = frozenset(t for t in sk_targets if "." not in t and "-" not in t)
        self.called_names: frozenset[str] = frozenset(
            target.name for target, _ in direct if target.name in undeclared
        )
        self.functions_used: frozenset[str] = frozenset(
            f"{base.name}.{attr}" for base, attr in calls if base.name in undeclared
        ) | {t.replace("-", ".", 1) for t in sk_targets if t not in self.sk_names}
        # `x.method()` may be a plugin call or a method of a variable: accepted either way.
        self.call_targets: frozenset[str] = frozenset(base.name for base, _ in calls if base.name in undeclared) - plain
        self.variables: frozenset[str] = frozenset(v for v in undeclared if v in plain)
        if private is not None:
            raise SandboxViolationError(
                f"{self.name}:{private.lineno}: access to private attribute {private.attr!r} is not allowed"
            )
        unavailable = self.variables & REMOVED_GLOBALS
        if unavailable:
            raise SandboxViolationError(
                f"{name}: {', '.join(sorted(unavailable))} is not available in templates (removed from the sandbox)"
            )
        # Kernel functions are async: only templates that call one (or may) need async rendering.
        self.is_async = bool(self.functions_used or self.uses_sk_call or self.called_names)
        self._ast: nodes.Template | None = ast
        self._template: jinja2.Template | None = None

    METADATA = ("call_targets", "called_names", "functions_used", "is_async", "sk_names", "uses_sk_call",
                "variables")
    """What the parse found, all a loaded prompt function needs before its first render."""

    def metadata(self) -> dict[str, Any]:
        """What parsing found, as plain data (kept by the plugin folders' parse cache)."""
        return {key: sorted(value) if isinstance(value, frozenset) else value
                for key in self.METADATA for value in [getattr(self, key)]}

    @classmethod
    def restored(cls, source: str, name: str, metadata: Mapping[str, Any]) -> CompiledTemplate:
        """A template known to parse, with what its parse found (`metadata`): it is parsed
        again only when first rendered."""
        self = cls.__new__(cls)
        self.source, self.name = source, name
        for key in cls.METADATA:
            value = metadata[key]
            setattr(self, key, frozenset(value) if isinstance(value, list) else bool(value))
        self._ast, self._template = None, None
        return self

    @property
    def template(self) -> jinja2.Template:
        """The compiled Jinja template (code generation happens here, once)."""
        template = self._template
        if template is None:
            import jinja2

            from .sandbox import ENVIRONMENT, SYNC_ENVIRONMENT

            env = ENVIRONMENT if self.is_async else SYNC_ENVIRONMENT
            try:
                ast = self._ast if self._ast is not None else env.parse(self.source, name=self.name)
                template = env.from_string(ast)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateSyntaxError(f"{self.name}:{exc.lineno}: {exc.message}") from None
            template.name = self.name
            self._template, self._ast = template, None
        return template

    async def render(self, variables: Mapping[str, Any], functions: Mapping[str, Any]) -> str:
        template = self.template  # compiled on first render: jinja2 and the bounds are loaded from here on
        CAPTURED, MAX_CAPTURED_CHARS, MAX_OUTPUT_CHARS, MAX_RANGE_TOTAL = _BOUNDS or _bounds()

        budget = RenderBudget(MAX_RANGE_TOTAL)
        captured = CAPTURED.set([MAX_CAPTURED_CHARS])
        context = dict(functions)
        context.update(variables)
        context["range"] = bounded_range(budget)
        size = 0
        parts: list[str] = []
        try:
            if self.is_async:
                async for chunk in template.generate_async(context):
                    size += len(chunk)
                    if size > MAX_OUTPUT_CHARS:
                        raise SandboxViolationError(f"{self.name}: rendered output exceeds "
                                                    f"{MAX_OUTPUT_CHARS:,} characters")
                    parts.append(chunk)
            else:  # the compiled root function itself: `Template.generate` adds a generator per chunk
                for chunk in template.root_render_func(template.new_context(context)):
                    size += len(chunk)
                    if size > MAX_OUTPUT_CHARS:
                        raise SandboxViolationError(f"{self.name}: rendered output exceeds "
                                                    f"{MAX_OUTPUT_CHARS:,} characters")
                    parts.append(chunk)
        except Exception as exc:
            error = _render_error(self.name, exc)
            if error is None:
                raise
            raise error from None
        finally:
            CAPTURED.reset(captured)
        return "".join(parts)


_BOUNDS: tuple[Any, int, int, int] | None = None
"""The render bounds (`bounds.py`), loaded with the first render."""


def _bounds() -> tuple[Any, int, int, int]:
    global _BOUNDS
    from .bounds import CAPTURED, MAX_CAPTURED_CHARS, MAX_OUTPUT_CHARS, MAX_RANGE_TOTAL

    _BOUNDS = (CAPTURED, MAX_CAPTURED_CHARS, MAX_OUTPUT_CHARS, MAX_RANGE_TOTAL)
    return _BOUNDS


def _render_error(name: str, exc: Exception) -> Exception | None:
    """The kernel error a failed render raises (None: `exc` itself, as it is)."""
    import jinja2
    from jinja2.exceptions import SecurityError, UndefinedError

    if isinstance(exc, SecurityError):
        return SandboxViolationError(f"{name}: {exc}")
    if isinstance(exc, UndefinedError):
        if exc.__class__ is not UndefinedError and isinstance(exc, SecurityError):
            return SandboxViolationError(f"{name}: {exc}")
        return TemplateRenderError(f"{name}: {_undefined_message(exc)}")
    if isinstance(exc, RecursionError):
        return TemplateRenderError(f"{name}: recursion too deep (recursive macro or call)")
    if isinstance(exc, MemoryError):
        return SandboxViolationError(f"{name}: out of memory while rendering (a value grew too big)")
    if isinstance(exc, TemplateRenderError):
        return None
    if isinstance(exc, jinja2.TemplateError):
        return TemplateRenderError(f"{name}: {exc}")
    if isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError | AttributeError):
        if hasattr(exc, "function"):  # ArgumentError from a nested call: keep it precise
            return None
        return TemplateRenderError(f"{name}: {type(exc).__name__}: {exc}")
    return None


def _undefined_message(exc: UndefinedError) -> str:
    message = str(exc.message or exc)
    match = re.match(r"'(\w+)' is undefined", message)
    if match:
        return f"variable {match.group(1)!r} is not defined (pass it as an argument)"
    return message


class TemplateCache:
    """Compiled templates by source, least recently used evicted first."""

    def __init__(self, size: int = TEMPLATE_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], CompiledTemplate] = OrderedDict()

    def get(self, source: str, name: str = "<template>") -> CompiledTemplate:
        key = (source, name)
        compiled = self._items.get(key)
        if compiled is None:
            compiled = self._items[key] = CompiledTemplate(source, name)
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return compiled

    def restore(self, source: str, name: str, metadata: Mapping[str, Any]) -> CompiledTemplate:
        """The template of `source`, from the cache, else restored from what an earlier
        parse found (`CompiledTemplate.metadata`) without parsing it now."""
        key = (source, name)
        compiled = self._items.get(key)
        if compiled is None:
            compiled = self._items[key] = CompiledTemplate.restored(source, name, metadata)
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return compiled


TEMPLATES = TemplateCache()
