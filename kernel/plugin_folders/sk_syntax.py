"""Semantic Kernel template syntax, translated to Jinja source for the kernel's one engine.

Supported blocks (whitespace inside `{{ }}` is free):

    {{$var}}                          the variable `var`
    {{'literal'}} / {{"literal"}}     literal text (backslash escapes \\' \\" \\\\ allowed)
    {{plugin.function}}               call with no arguments
    {{function}}                      a function without its plugin: looked up across plugins
                                      at render (in two plugins: an error naming both)
    {{plugin.function $var}}          first parameter (in declaration order) = var
    {{plugin.function 'text'}}        first parameter = a literal
    {{plugin.function $v name='x'}}   plus named arguments: name=$var or name='literal'

A call is `sk_call("plugin.function", ...)` in Jinja (`kernel.prompts.templates.SKFunctionCall`):
as in SK, the callee also gets the caller's variables that it takes as parameters, so
`{{Fun.Joke}}` in a function called with `input` passes `input` on; the call's own
arguments take precedence. Variables and function results are escaped like every other
inserted value (a value can never open a `<message>`); literals and the text between
blocks are template text written by the plugin author and are emitted as is, never
interpreted by Jinja. The Jinja output keeps the line numbers of the source, so render
errors point at the right line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SKTemplateError", "jinja_text", "translate"]

SK_CALL = "sk_call"  # kernel.prompts.templates.SK_CALL: the global calls are translated to

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<named>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<named_value>\$[A-Za-z0-9_]+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<var>\$[A-Za-z0-9_]*)
      | (?P<literal>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<function>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)
      | (?P<bad>\S+)
    )""",
    re.VERBOSE | re.DOTALL,
)
_IDENTIFIER = re.compile(rf"^{_NAME}$")
_JINJA_OPENER = re.compile(r"\{(?=[{%#]|\Z)")  # a trailing '{' could meet the next block
_JINJA_KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "if", "else", "elif", "endif", "for", "endfor", "true", "false", "none",
    "True", "False", "None", "block", "endblock", "macro", "endmacro", "call", "endcall", "set", "endset",
    "with", "endwith", "import", "from", "include", "extends", "raw", "endraw", "filter", "endfilter",
    "recursive", "loop", "self",
})


class SKTemplateError(ValueError):
    """A syntax error in an SK template; `line` is 1-based within the template."""

    def __init__(self, message: str, line: int) -> None:
        self.message, self.line = message, line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # offset of '{{'
    end: int  # offset after '}}'
    content: str
    line: int


def jinja_text(text: str) -> str:
    """Template text as Jinja source that renders to exactly `text`."""
    if "{" not in text:
        return text
    return _JINJA_OPENER.sub("{{ '{' }}", text)


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if "\\" not in body:
        return body
    return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)


def _jinja_string(value: str) -> str:
    """A Jinja string literal for `value` (Jinja decodes Python-style escapes)."""
    return repr(value)


def _blocks(source: str) -> list[_Block]:
    """Find `{{ ... }}` blocks; quotes inside a block may contain `}}`."""
    blocks: list[_Block] = []
    position = 0
    length = len(source)
    while True:
        start = source.find("{{", position)
        if start < 0:
            return blocks
        i = start + 2
        quote: str | None = None
        while i < length:
            ch = source[i]
            if quote is not None:
                if ch == "\\":
                    i += 2
                    continue
                if ch == quote:
                    quote = None
            elif ch in ("'", '"'):
                quote = ch
            elif ch == "}" and source.startswith("}}", i):
                break
            i += 1
        else:
            line = source.count("\n", 0, start) + 1
            what = "unterminated string in a '{{' block" if quote else "'{{' is never closed with '}}'"
            raise SKTemplateError(what, line)
        blocks.append(_Block(start, i + 2, source[start + 2 : i], source.count("\n", 0, start) + 1))
        position = i + 2


def _variable(token: str, line: int) -> str:
    name = token[1:]
    if not name:
        raise SKTemplateError("'$' without a variable name", line)
    if not _IDENTIFIER.match(name) or name in _JINJA_KEYWORDS:
        raise SKTemplateError(f"invalid variable name {name!r}", line)
    if name == SK_CALL:
        raise SKTemplateError(f"the variable name {name!r} is reserved (it calls functions)", line)
    return name


def _block_expression(block: _Block) -> str | None:
    """Jinja for one block; None when the block is a literal (emitted as text)."""
    content = block.content
    tokens: list[tuple[str, str, str | None]] = []  # kind, text, named value
    for match in _TOKEN.finditer(content):
        kind = match.lastgroup
        if kind is None:
            continue
        if kind == "named_value":
            kind = "named"
        if kind == "bad":
            raise SKTemplateError(f"unexpected {match.group('bad')!r} in {{{{{content.strip()}}}}}", block.line)
        if kind == "named":
            tokens.append(("named", match.group("named"), match.group("named_value")))
        else:
            tokens.append((kind, match.group(kind), None))
    if not tokens:
        return None
    kind, text, _ = tokens[0]
    if kind in ("var", "literal"):
        if len(tokens) > 1:
            raise SKTemplateError(
                f"a {'variable' if kind == 'var' else 'literal'} block takes nothing after it: "
                f"{{{{{content.strip()}}}}}", block.line,
            )
        return _variable(text, block.line) if kind == "var" else None
    if kind != "function":
        raise SKTemplateError(f"expected a variable, a literal or a function in {{{{{content.strip()}}}}}", block.line)
    parts = text.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise SKTemplateError(f"function name {text!r} must be 'plugin.function' or 'function'", block.line)
    if any(p.startswith("_") for p in parts):
        raise SKTemplateError(f"function name {text!r}: names starting with '_' are private", block.line)
    arguments: list[str] = [_jinja_string(text)]
    seen: set[str] = set()
    for index, (kind, value, named_value) in enumerate(tokens[1:]):
        if kind == "named":
            assert named_value is not None
            if value in _JINJA_KEYWORDS:
                raise SKTemplateError(f"argument name {value!r} is reserved", block.line)
            if value in seen:
                raise SKTemplateError(f"argument {value!r} given twice", block.line)
            seen.add(value)
            if named_value.startswith("$"):
                rendered = _variable(named_value, block.line)
            else:
                rendered = _jinja_string(_unquote(named_value))
            arguments.append(f"{value}={rendered}")
        elif kind in ("var", "literal") and index == 0:
            arguments.append(_variable(value, block.line) if kind == "var" else _jinja_string(_unquote(value)))
        elif kind in ("var", "literal"):
            raise SKTemplateError(
                f"only the first argument of {text} may be positional; name the others (name=$value)", block.line
            )
        else:
            raise SKTemplateError(f"unexpected {value!r} in a call of {text}", block.line)
    return f"{SK_CALL}({', '.join(arguments)})"


def translate(source: str) -> str:
    """Jinja source equivalent to the SK template `source`. Raises SKTemplateError."""
    if "{{" not in source:
        return jinja_text(source)
    out: list[str] = []
    position = 0
    for block in _blocks(source):
        out.append(jinja_text(source[position : block.start]))
        expression = _block_expression(block)
        newlines = "\n" * block.content.count("\n")
        if expression is None:
            stripped = block.content.strip()
            if stripped:  # a literal: template text
                out.append(jinja_text(_unquote(stripped)))
                extra = "\n" * (block.content.count("\n") - stripped.count("\n"))
                out.append("{#" + extra + "#}" if extra else "")
            else:  # an empty block stays as written, like SK
                out.append(jinja_text("{{" + block.content + "}}"))
        else:
            out.append("{{ " + expression + newlines + " }}")
        position = block.end
    out.append(jinja_text(source[position:]))
    return "".join(out)
