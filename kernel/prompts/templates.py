"""Templates: parsed once (syntax errors and variables known at load time), compiled on
first render and cached; kernel functions as template globals (`{{ plugin.fn(x) }}`)."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, UndefinedError

from ..errors import SandboxViolationError, TemplateRenderError, TemplateSyntaxError
from .bounds import CAPTURED, MAX_CAPTURED_CHARS, MAX_OUTPUT_CHARS, MAX_RANGE_TOTAL, check_weight
from .sandbox import ENVIRONMENT, REMOVED_GLOBALS, SYNC_ENVIRONMENT

if TYPE_CHECKING:
    from ..kernel import Kernel

TEMPLATE_CACHE_SIZE = 512


class RenderBudget:
    """Per-render budget for `range` items, shared by all loops of one render."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = MAX_RANGE_TOTAL


def bounded_range(budget: RenderBudget) -> Callable[..., range]:
    def bounded_range(*args: int) -> range:
        rng = range(*args)
        budget.remaining -= len(rng)
        if budget.remaining < 0:
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
        check_weight([*args, *kwargs.values()], f"arguments of {self._function.fully_qualified_name}")
        arguments = self._function.bind_positional(args, kwargs)
        result = await self._kernel.invoke(self._function, arguments)
        return result.value


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


_IMPLICIT_NAMES = frozenset({"varargs", "kwargs", "self", "super", "range"})


def _scan(
    ast: nodes.Template,
) -> tuple[list[nodes.Name], set[str], list[tuple[nodes.Name, str]], nodes.Getattr | None]:
    """One walk over a parsed template: names read, names bound (set, for targets, macro
    names and parameters), `name.attr(...)` calls, and the first private attribute access.

    Cheaper than `jinja2.meta.find_undeclared_variables`, which runs the code generator;
    it ignores Jinja's finer scoping (a name read before a later `set` counts as bound)."""
    loaded: list[nodes.Name] = []
    bound: set[str] = set()
    calls: list[tuple[nodes.Name, str]] = []
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
        elif isinstance(node, nodes.Macro):
            bound.add(node.name)
        elif isinstance(node, nodes.For):
            bound.add("loop")  # Jinja's loop variable (a plugin named `loop` clashes with it)
        elif isinstance(node, nodes.CallBlock):
            bound.add("caller")
        stack.extend(node.iter_child_nodes())
    return loaded, bound, calls, private


class CompiledTemplate:
    """A template parsed once (syntax errors and variables are known at load time) and
    compiled to Python on first render, then reused."""

    __slots__ = ("_ast", "_template", "call_targets", "functions_used", "is_async", "name", "source", "variables")

    def __init__(self, source: str, name: str) -> None:
        self.source, self.name = source, name
        try:
            ast = ENVIRONMENT.parse(source, name=name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateSyntaxError(f"{name}:{exc.lineno}: {exc.message}") from None
        loaded, bound, calls, private = _scan(ast)
        undeclared = {n.name for n in loaded} - bound - _IMPLICIT_NAMES - set(ENVIRONMENT.globals)
        call_bases = {id(base) for base, _ in calls}
        plain = {n.name for n in loaded if id(n) not in call_bases}
        self.functions_used: frozenset[str] = frozenset(
            f"{base.name}.{attr}" for base, attr in calls if base.name in undeclared
        )
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
        # Kernel functions are async: only templates that call one need async rendering.
        self.is_async = bool(self.functions_used)
        self._ast: nodes.Template | None = ast
        self._template: jinja2.Template | None = None

    @property
    def template(self) -> jinja2.Template:
        """The compiled Jinja template (code generation happens here, once)."""
        template = self._template
        if template is None:
            env = ENVIRONMENT if self.is_async else SYNC_ENVIRONMENT
            try:
                template = env.from_string(self._ast)  # type: ignore[arg-type]
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateSyntaxError(f"{self.name}:{exc.lineno}: {exc.message}") from None
            template.name = self.name
            self._template, self._ast = template, None
        return template

    async def render(self, variables: Mapping[str, Any], functions: Mapping[str, Any]) -> str:
        budget = RenderBudget()
        captured = CAPTURED.set([MAX_CAPTURED_CHARS])
        context = dict(functions)
        context.update(variables)
        context["range"] = bounded_range(budget)
        size = 0
        parts: list[str] = []
        try:
            if self.is_async:
                async for chunk in self.template.generate_async(context):
                    size += len(chunk)
                    if size > MAX_OUTPUT_CHARS:
                        raise SecurityError(f"rendered output exceeds {MAX_OUTPUT_CHARS:,} characters")
                    parts.append(chunk)
            else:
                for chunk in self.template.generate(context):
                    size += len(chunk)
                    if size > MAX_OUTPUT_CHARS:
                        raise SecurityError(f"rendered output exceeds {MAX_OUTPUT_CHARS:,} characters")
                    parts.append(chunk)
        except SecurityError as exc:
            raise SandboxViolationError(f"{self.name}: {exc}") from None
        except UndefinedError as exc:
            if exc.__class__ is not UndefinedError and isinstance(exc, SecurityError):
                raise SandboxViolationError(f"{self.name}: {exc}") from None
            raise TemplateRenderError(f"{self.name}: {_undefined_message(exc)}") from None
        except RecursionError:
            raise TemplateRenderError(f"{self.name}: recursion too deep (recursive macro or call)") from None
        except MemoryError:
            raise SandboxViolationError(f"{self.name}: out of memory while rendering (a value grew too big)") from None
        except TemplateRenderError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"{self.name}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            if hasattr(exc, "function"):  # ArgumentError from a nested call: keep it precise
                raise
            raise TemplateRenderError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        finally:
            CAPTURED.reset(captured)
        return "".join(parts)


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


TEMPLATES = TemplateCache()
