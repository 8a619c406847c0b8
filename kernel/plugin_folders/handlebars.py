"""Handlebars, Semantic Kernel's third template format (`template_format: handlebars`),
translated to Jinja source for the kernel's one sandboxed engine (as `sk_syntax` translates
SK's own syntax): nothing compiles to Python but Jinja, in the same `KernelSandbox`, with
the same bounds. The translation renders what SK's Python release renders (pybars):

    {{name}} {{obj.prop}} {{list.[0]}}   a value (escaped: it can never open a `<message>`)
    {{{name}}} {{&name}}                 the same, unescaped only when the value is trusted
    {{#each list}}{{this}} {{@index}} {{@key}} {{@first}} {{@last}} {{../outer}}{{else}}{{/each}}
    {{#if x}}{{else if y}}{{else}}{{/if}}   {{#unless x}}   {{#with obj}}   {{^x}}...{{/x}}
    {{#message role="user"}}...{{/message}}  a chat message (any hash becomes an attribute)
    {{json x}} {{concat a b}} {{equals a b}} {{set "n" v}} {{get "n"}} {{array a b}} ...
                                         SK's helpers (`HELPERS`), also as `(subexpressions)`
    {{Plugin-Function arg=$v}}           a kernel function: hash arguments by name and, beyond
    {{Plugin.Function x}}                SK's Python release (which drops them), positional ones
                                         in parameter order; the caller's variables the callee
                                         takes are passed too, as SK passes them
    {{! comment }} {{!-- comment --}}    nothing
    {{~x~}}                              strip the whitespace next to the tag
    {{{{raw}}}}...{{{{/raw}}}}           the text inside as it is

Whitespace follows pybars: the line of a block's open or close tag is removed when nothing
else is on it (pybars's rules, which look only at whitespace that comes right after a tag).
A name is a helper first, then a value looked up in the current context only (inside
`#each`, the item: `{{../name}}` or `{{@root.name}}` reach outside). Partials, decorators and
block parameters are not supported (SK registers no partials). Line numbers are kept, so
errors point at the template's lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .handlebars_syntax import START, Block, Call, Comment, HandlebarsError, Literal, Mustache, Path, Text, parse
from .sk_syntax import SK_CALL, jinja_text

__all__ = ["BLOCK_HELPERS", "HELPERS", "HandlebarsError", "Translation", "translate"]

HELPERS = frozenset({
    "set", "get", "array", "range", "concat", "or", "add", "subtract", "equals", "less_than", "lessThan",
    "greater_than", "greaterThan", "less_than_or_equal", "lessThanOrEqual", "greater_than_or_equal",
    "greaterThanOrEqual", "json", "double_open", "doubleOpen", "double_close", "doubleClose", "camel_case",
    "camelCase", "snake_case", "snakeCase", "message_to_prompt", "messageToPrompt", "messages", "lookup", "log",
})
"""SK's Handlebars helpers (and pybars's `lookup`, `log`), called as `{{name args}}`."""
BLOCK_HELPERS = frozenset({"each", "if", "unless", "with", "message"})
_JINJA_RESERVED = frozenset({
    "and", "or", "not", "in", "is", "if", "else", "elif", "endif", "for", "endfor", "true", "false", "none",
    "True", "False", "None", "block", "endblock", "macro", "endmacro", "call", "endcall", "set", "endset", "with",
    "endwith", "import", "from", "include", "extends", "raw", "endraw", "filter", "endfilter", "recursive",
    "loop", "self", "caller", "varargs", "kwargs", "super", "range", "dict", "namespace", SK_CALL,
})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# -- Jinja --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    this: str | None  # the context's Jinja expression; None: the root (the function's variables)
    loop: str | None = None
    key: str | None = None
    parent: _Scope | None = None


@dataclass(frozen=True)
class Translation:
    """Jinja source and the name of the runtime global it calls (`sk_helpers.HandlebarsHelpers`)."""

    jinja: str
    runtime: str


class _Writer:
    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.out: list[str] = []
        self.line = 1
        self.count = 0
        self.roots: set[str] = set()

    def pad(self, line: int) -> None:
        if line > self.line:
            self.out.append("{#" + "\n" * (line - self.line) + "#}")
            self.line = line

    def nodes(self, nodes: list[Any], scope: _Scope) -> None:
        for node in nodes:
            if node is START:
                continue
            self.pad(node.line)
            if isinstance(node, Text):
                self.out.append(jinja_text(node.value))
                self.line += node.value.count("\n")
            elif isinstance(node, Mustache):
                self.out.append("{{ " + self.mustache(node, scope) + " }}")
                self.pad(node.end)
            elif isinstance(node, Comment):
                self.pad(node.end)
            else:
                self.block(node, scope)

    # values

    def root_name(self, name: str) -> str:
        if _IDENTIFIER.match(name) and name not in _JINJA_RESERVED:
            self.roots.add(name)
            return f"{self.runtime}('var', {name!r}, {name})"
        return f"{self.runtime}('var', {name!r})"

    def path(self, path: Path, scope: _Scope, line: int) -> str:
        target = scope
        for _ in range(path.up):
            target = target.parent or target
        parts = list(path.parts)
        if path.data:
            head = parts.pop(0)
            if head == "root":
                target = _Scope(None)
            elif head in ("index", "first", "last", "key") and not parts:
                if head == "key":
                    return target.key or "none"
                return f"{target.loop}.{'index0' if head == 'index' else head}" if target.loop else "none"
            else:
                return "none"
        if target.this is None:
            if not parts:
                return f"{self.runtime}('root')"
            expression = self.root_name(parts.pop(0))
        else:
            expression = target.this
        if parts:
            expression = f"{self.runtime}('path', {expression}, {', '.join(repr(p) for p in parts)})"
        return expression

    def value(self, item: Any, scope: _Scope, line: int) -> str:
        if isinstance(item, Literal):
            literal = item.value
            if literal is None or isinstance(literal, bool):
                return {None: "none", True: "true", False: "false"}[literal]
            return repr(literal)
        if isinstance(item, Call):
            return self.call(item, scope, line)
        return self.path(item, scope, line)

    def arguments(self, call: Call, scope: _Scope, line: int) -> str:
        items = [self.value(p, scope, line) for p in call.params]
        if call.hash:
            items.append("**{" + ", ".join(f"{k!r}: {self.value(v, scope, line)}" for k, v in call.hash) + "}")
        return "".join(", " + item for item in items)

    def call(self, call: Call, scope: _Scope, line: int) -> str:
        name = call.name.simple
        if name in HELPERS:
            head = repr(name)
            if name in ("message_to_prompt", "messageToPrompt"):  # pybars gives helpers the context
                head += ", " + self.path(Path((), this=True), scope, line)
            elif name == "range":  # the render's bounded range
                head += ", range"
            return f"{self.runtime}('helper', {head}{self.arguments(call, scope, line)})"
        if name in BLOCK_HELPERS:
            raise HandlebarsError(f"'{name}' is a block helper: write {{{{#{name} ...}}}}...{{{{/{name}}}}}", line)
        function = name if name is not None and "-" in name else None
        if function is None and not (call.name.up or call.name.data or call.name.this) and len(call.name.parts) == 2:
            function = ".".join(call.name.parts)  # {{Plugin.Function x}}: a call (a path takes no arguments)
        if function is None:
            shown = name or ".".join(call.name.parts)
            raise HandlebarsError(f"{shown!r} is not a helper or a plugin-function name, so it takes no arguments "
                                  f"(SK's helpers: {', '.join(sorted(HELPERS))})", line)
        return f"{SK_CALL}({function!r}{self.arguments(call, scope, line)})"

    def mustache(self, node: Mustache, scope: _Scope) -> str:
        call, name = node.call, node.call.name.simple
        if call.params or call.hash or name in HELPERS or name in BLOCK_HELPERS or (name and "-" in name):
            expression = self.call(call, scope, node.line)
        else:
            expression = self.path(call.name, scope, node.line)
        return f"{self.runtime}({'esc' if node.escaped else 'raw'!r}, {expression})"

    # blocks

    def block(self, node: Block, scope: _Scope) -> None:
        call, name = node.call, node.call.name.simple
        rt = self.runtime
        first = self.value(call.params[0], scope, node.line) if call.params else None
        inner = other = scope  # the scopes of the block and of its {{else}}
        otherwise = "{% else %}"
        if node.inverted:  # {{^name}}: the block when `name` is empty, the {{else}} as a section
            self.count += 1
            var = f"{rt}{self.count}"
            this = self.path(Path((), this=True), scope, node.line)
            opening = f"{{% set {var}_items = {rt}('section', {self.path(call.name, scope, node.line)}, {this}) %}}" \
                      f"{{% if not {var}_items %}}"
            otherwise += f"{{% for {var}_key, {var} in {var}_items %}}{{% set {var}_loop = loop %}}"
            other = _Scope(var, f"{var}_loop", f"{var}_key", scope)
            closing = "{% endfor %}{% endif %}" if node.inverse is not None else "{% endif %}"
        elif name in ("if", "unless"):
            if first is None:
                raise HandlebarsError(f"{{{{#{name}}}}} needs a value to test", node.line)
            test = f"{rt}('truthy', {first})"
            opening, closing = f"{{% if {test if name == 'if' else 'not ' + test} %}}", "{% endif %}"
        elif name == "message":
            attributes = ", ".join(f"{k!r}: {self.value(v, scope, node.line)}" for k, v in call.hash)
            opening, closing = f"{{{{ {rt}('message', **{{{attributes}}}) }}}}", "</message>"
        elif name in BLOCK_HELPERS or (name not in HELPERS and "-" not in (name or "")):
            self.count += 1
            var = f"{rt}{self.count}"
            if name == "with":
                if first is None:
                    raise HandlebarsError("{{#with}} needs a value", node.line)
                opening = f"{{% set {var} = {first} %}}{{% if {rt}('truthy', {var}) %}}"
                inner, closing = _Scope(var, parent=scope), "{% endif %}"
            else:
                if name == "each":
                    if first is None:
                        raise HandlebarsError("{{#each}} needs a list or a mapping", node.line)
                    items = f"{rt}('each', {first})"
                else:  # {{#name}}: a section, as pybars's blockHelperMissing renders it
                    items = f"{rt}('section', {self.path(call.name, scope, node.line)}, " \
                            f"{self.path(Path((), this=True), scope, node.line)})"
                opening = f"{{% for {var}_key, {var} in {items} %}}{{% set {var}_loop = loop %}}"
                inner, closing = _Scope(var, f"{var}_loop", f"{var}_key", scope), "{% endfor %}"
        else:
            raise HandlebarsError(f"'{name}' is not a block helper (SK's are #each, #if, #unless, #with and "
                                  "#message)", node.line)
        self.out.append(opening)
        self.pad(node.end)
        self.nodes(node.body, inner)
        if node.inverse is not None and name != "message":
            self.pad(node.else_line)
            self.out.append(otherwise)
            if not node.inverse[1:] or not (isinstance(node.inverse[1], Block) and node.inverse[1].chained):
                self.pad(node.else_end)
            self.nodes(node.inverse, other)
        self.pad(node.close_line)
        self.out.append(closing)
        if not node.chained:
            self.pad(node.close_end)


def translate(source: str, reserved: frozenset[str] = frozenset()) -> Translation:
    """Jinja source equivalent to the Handlebars template `source`; `reserved`: names the
    generated code must not take (the function's inputs). Raises HandlebarsError."""
    tree = parse(source)
    runtime = "hb"
    while True:
        writer = _Writer(runtime)
        writer.nodes(tree, _Scope(None))
        taken = writer.roots | reserved
        if not any(name.startswith(runtime) for name in taken):
            return Translation("".join(writer.out), runtime)
        runtime += "x"
