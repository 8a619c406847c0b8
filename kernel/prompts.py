"""The template engine: sandboxed async Jinja, function calls from templates, escaping,
and `<message role="...">` chat parsing.

Safety model
  * Template *source* is trusted code written by the plugin author; it runs in Jinja's
    `ImmutableSandboxedEnvironment` with strict undefined variables, no `cycler`, `joiner`
    or `lipsum` globals, a bounded `range`, guarded `*`, `**` and `+`, and a cap on the
    rendered size. Violations raise `SandboxViolationError`.
  * Every *value* inserted into a template (variables, function results, recalled memory)
    is XML-escaped on output, so it can never open or close a `<message>` block. After
    parsing the chat structure the escapes are undone in each message's content. An input
    is inserted raw only when it is explicitly marked trusted.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from .contents import ChatMessage
from .errors import SandboxViolationError, TemplateRenderError, TemplateSyntaxError

if TYPE_CHECKING:
    from .kernel import Kernel

MAX_OUTPUT_CHARS = 1_000_000
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_RANGE_TOTAL = 100_000
MAX_POWER_BITS = 4096
TEMPLATE_CACHE_SIZE = 512


class _Budget:
    """Per-render budget for `range` items, shared by all loops of one render."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = MAX_RANGE_TOTAL


class KernelSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus size guards on operators."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if (
                isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS
            ):
                raise SecurityError(f"'{left} ** {right}' is too large for a template")
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE_LENGTH:
                    raise SecurityError(
                        f"repeating a sequence of {len(seq)} items {n} times exceeds the "
                        f"{MAX_SEQUENCE_LENGTH:,} item limit"
                    )
            return left * right
        if (
            isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > MAX_SEQUENCE_LENGTH
        ):
            raise SecurityError(f"concatenation exceeds the {MAX_SEQUENCE_LENGTH:,} item limit")
        return left + right


def _bounded_range(budget: _Budget) -> Callable[..., range]:
    def bounded_range(*args: int) -> range:
        rng = range(*args)
        budget.remaining -= len(rng)
        if budget.remaining < 0:
            raise SecurityError(f"loops in this template exceed {MAX_RANGE_TOTAL:,} range items")
        return rng

    return bounded_range


def _make_environment(enable_async: bool = True) -> KernelSandbox:
    env = KernelSandbox(
        enable_async=enable_async,
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    for unsafe in ("cycler", "joiner", "lipsum", "range", "dict"):
        env.globals.pop(unsafe, None)
    env.globals["dict"] = dict
    return env


REMOVED_GLOBALS = frozenset({"cycler", "joiner", "lipsum"})
ENVIRONMENT = _make_environment()
SYNC_ENVIRONMENT = _make_environment(enable_async=False)
"""Same sandbox, rendering synchronously: for templates that call no kernel function
(Jinja's async rendering costs several times more than its sync rendering)."""


class _TemplateFunction:
    """A kernel function as seen from a template: `{{ plugin.fn(x, name=...) }}`."""

    __slots__ = ("_function", "_kernel")

    def __init__(self, kernel: Kernel, function: Any) -> None:
        self._kernel = kernel
        self._function = function

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arguments = self._function.bind_positional(args, kwargs)
        result = await self._kernel.invoke(self._function, arguments)
        return result.value


class PluginNamespace:
    """`plugin` in a template: attribute access yields its functions."""

    __slots__ = ("_functions", "_kernel", "_name")

    def __init__(self, kernel: Kernel, name: str, functions: Mapping[str, Any]) -> None:
        self._kernel, self._name, self._functions = kernel, name, functions

    def __getattr__(self, item: str) -> _TemplateFunction:
        try:
            function = self._functions[item]
        except KeyError:
            raise AttributeError(f"plugin {self._name!r} has no function {item!r}") from None
        return _TemplateFunction(self._kernel, function)

    def __repr__(self) -> str:
        return f"<plugin {self._name}>"


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
        undeclared = meta.find_undeclared_variables(ast)
        calls = [
            call
            for call in ast.find_all(nodes.Call)
            if isinstance(call.node, nodes.Getattr) and isinstance(call.node.node, nodes.Name)
        ]
        call_bases = {id(call.node.node) for call in calls}
        plain = {n.name for n in ast.find_all(nodes.Name) if id(n) not in call_bases}
        self.functions_used: frozenset[str] = frozenset(
            f"{call.node.node.name}.{call.node.attr}" for call in calls if call.node.node.name in undeclared
        )
        # `x.method()` may be a plugin call or a method of a variable: accepted either way.
        self.call_targets: frozenset[str] = frozenset(
            call.node.node.name for call in calls if call.node.node.name in undeclared
        ) - plain
        self.variables: frozenset[str] = frozenset(v for v in undeclared if v in plain and v != "range")
        self._check_calls(ast)
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

    def _check_calls(self, ast: nodes.Template) -> None:
        """Reject `__dunder__` attribute access at compile time, with a line number."""
        for node in ast.find_all((nodes.Getattr,)):
            if node.attr.startswith("_"):
                raise SandboxViolationError(
                    f"{self.name}:{node.lineno}: access to private attribute {node.attr!r} is not allowed"
                )

    async def render(self, variables: Mapping[str, Any], functions: Mapping[str, Any]) -> str:
        budget = _Budget()
        context = dict(functions)
        context.update(variables)
        context["range"] = _bounded_range(budget)
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
        except TemplateRenderError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"{self.name}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            if hasattr(exc, "function"):  # ArgumentError from a nested call: keep it precise
                raise
            raise TemplateRenderError(f"{self.name}: {type(exc).__name__}: {exc}") from None
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


def trusted(value: Any) -> Markup:
    """Mark a value as trusted template text: inserted without escaping."""
    return Markup(str(value))


def prepare_variables(values: Mapping[str, Any], trusted_names: Iterable[str] = ()) -> dict[str, Any]:
    """Values as the template sees them; only names in `trusted_names` skip escaping."""
    out = dict(values)
    for name in trusted_names:
        if name in out and isinstance(out[name], str):
            out[name] = Markup(out[name])
    return out


# --- chat parsing ----------------------------------------------------------------------------

_MESSAGE_RE = re.compile(
    r"<message\s+role\s*=\s*[\"'](system|user|assistant|developer)[\"']\s*>(.*?)</message>",
    re.DOTALL,
)
_UNESCAPES = (("&lt;", "<"), ("&gt;", ">"), ("&#34;", '"'), ("&#39;", "'"), ("&quot;", '"'), ("&amp;", "&"))


def unescape(text: str) -> str:
    """Undo the escaping applied to inserted values (the exact set markupsafe produces)."""
    if "&" not in text:
        return text
    for escaped, raw in _UNESCAPES:
        text = text.replace(escaped, raw)
    return text


def parse_chat(rendered: str) -> list[ChatMessage]:
    """Split a rendered template into chat messages.

    Without `<message>` blocks the whole text is one user message. Text between blocks
    that is not whitespace becomes a user message in its place, so nothing is lost.
    """
    messages: list[ChatMessage] = []
    position = 0
    for match in _MESSAGE_RE.finditer(rendered):
        between = rendered[position : match.start()].strip()
        if between:
            messages.append(ChatMessage("user", unescape(between)))
        role = "system" if match.group(1) == "developer" else match.group(1)
        messages.append(ChatMessage(role, unescape(match.group(2).strip())))  # type: ignore[arg-type]
        position = match.end()
    tail = rendered[position:].strip()
    if tail or not messages:
        messages.append(ChatMessage("user", unescape(tail)))
    return messages
