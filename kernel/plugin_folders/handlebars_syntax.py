"""Handlebars templates parsed as pybars (the engine of Semantic Kernel's Python release)
parses them: text, values, blocks with their `{{else}}`, comments, raw blocks and
whitespace control; then pybars's rule for block tags that stand alone on their line.
`handlebars.py` writes the tree as Jinja."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["START", "Block", "Call", "Comment", "HandlebarsError", "Literal", "Mustache", "Path", "Text", "parse"]

_ID_STOP = frozenset(" \t\r\n!\"#%&'()*+,./;<=>@[\\]^`{|}~")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
_NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")


class HandlebarsError(ValueError):
    """A Handlebars template SK's syntax does not allow, or this kernel does not support;
    `line` is 1-based within the template."""

    def __init__(self, message: str, line: int) -> None:
        self.message, self.line = message, line
        super().__init__(f"line {line}: {message}")


START = object()  # heads every node list (pybars's 'template' marker)


# -- the parsed template ---------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]
    up: int = 0  # how many `../`
    data: bool = False  # `@index`, `@root.x`
    this: bool = False  # `this`, `.`, `./x`

    @property
    def simple(self) -> str | None:
        """The name when the path is one plain name (a helper or function may have it)."""
        return self.parts[0] if len(self.parts) == 1 and not (self.up or self.data or self.this) else None


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: Path
    params: tuple[Any, ...]  # Path | Literal | Call
    hash: tuple[tuple[str, Any], ...]


@dataclass
class Text:
    value: str
    kind: str  # pybars's pieces: "newline", "whitespace" (spaces, tabs) or "literal" (the rest)
    line: int


@dataclass
class Mustache:
    call: Call
    escaped: bool
    line: int
    end: int


@dataclass
class Comment:
    """`{{! ... }}`: renders nothing, but is a node (pybars's standalone rule sees it)."""

    line: int
    end: int


@dataclass
class Block:
    call: Call
    inverted: bool
    line: int
    end: int
    body: list[Any] = field(default_factory=lambda: [START])
    inverse: list[Any] | None = None
    else_line: int = 0
    else_end: int = 0
    close_line: int = 0
    close_end: int = 0
    chained: bool = False  # an `{{else if ...}}`: closed by its parent's close tag



# -- tags -------------------------------------------------------------------------------


def _close(source: str, start: int, closer: str, line: int) -> int:
    """Index of `closer` after `start`, skipping quoted strings."""
    quote: str | None = None
    i = start
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif source.startswith(closer, i):
            return i
        i += 1
    raise HandlebarsError("'{{' is never closed with '" + closer + "'", line)


def _tokens(source: str) -> list[Any]:
    """Text and tags in order; a tag is (kind, content, line, end line, strip left, strip
    right), its end line the line where the text after it starts."""
    out: list[Any] = []
    position = 0

    def line_at(index: int) -> int:
        return source.count("\n", 0, index) + 1

    while True:
        start = source.find("{{", position)
        if start < 0:
            out.append(source[position:])
            return out
        out.append(source[position:start])
        line = line_at(start)
        if source.startswith("{{{{", start):  # a raw block: its content is text
            head_end = _close(source, start + 4, "}}}}", line)
            words = source[start + 4:head_end].split()
            closer = "{{{{/" + (words[0] if words else "") + "}}}}"
            body_end = source.find(closer, head_end + 4)
            if not words or body_end < 0:
                raise HandlebarsError(f"a raw block is never closed with {closer}", line)
            position = body_end + len(closer)
            out.append(("raw", source[head_end + 4:body_end], line_at(head_end + 4), line_at(position), False, False))
            continue
        inner = start + 2
        strip_left = source.startswith("~", inner)
        inner += strip_left
        if source.startswith("!", inner):
            closer = "--}}" if source.startswith("!--", inner) else "}}"
            end = source.find(closer, inner + 1)
            if end < 0:
                raise HandlebarsError("a comment '{{!' is never closed with '" + closer + "'", line)
            position = end + len(closer)
            out.append(("comment", "", line, line_at(position), strip_left, source[end - 1] == "~"))
            continue
        if source.startswith("{", inner):  # {{{x}}} or {{~{x}~}}
            end = _close(source, inner + 1, "}", line)
            strip_right = source.startswith("}~}}", end)
            if not strip_right and not source.startswith("}}}", end):
                raise HandlebarsError("'{{{' is never closed with '}}}'", line)
            position = end + (4 if strip_right else 3)
            out.append(("raw_value", source[inner + 1:end], line, line_at(position), strip_left, strip_right))
            continue
        end = _close(source, inner, "}}", line)
        content = source[inner:end]
        strip_right = content.endswith("~")
        position = end + 2
        out.append(("tag", content[:-1] if strip_right else content, line, line_at(position), strip_left,
                    strip_right))


def _pieces(text: str, line: int) -> list[Text]:
    """Text split as pybars splits it: newlines and runs of spaces/tabs first, then the rest
    up to the next tag in one piece."""
    pieces: list[Text] = []
    i = 0
    while i < len(text):
        if text.startswith("\r\n", i) or text[i] == "\n":
            size = 2 if text[i] == "\r" else 1
            pieces.append(Text(text[i:i + size], "newline", line))
            line += 1
            i += size
        elif text[i] in " \t":
            j = i
            while j < len(text) and text[j] in " \t":
                j += 1
            pieces.append(Text(text[i:j], "whitespace", line))
            i = j
        else:
            pieces.append(Text(text[i:], "literal", line))
            break
    return pieces


# -- expressions --------------------------------------------------------------------------


def _lex(content: str, line: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i, n = 0, len(content)
    while i < n:
        ch = content[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            out.append((ch, None))
            i += 1
        elif ch in "\"'":
            j = i + 1
            while j < n and content[j] != ch:
                j += 2 if content[j] == "\\" else 1
            if j >= n:
                raise HandlebarsError(f"unterminated string in {{{{{content.strip()}}}}}", line)
            out.append(("literal", re.sub(r"\\([\"'])", r"\1", content[i + 1:j])))
            i = j + 1
        elif (key := _KEY.match(content, i)) is not None:
            out.append(("key", key.group(1)))
            i = key.end()
        else:
            j = i
            while j < n and not content[j].isspace() and content[j] not in "()=\"'":
                if content[j] == "[":
                    close = content.find("]", j)
                    j = n if close < 0 else close
                j += 1
            word = content[i:j]
            if not word:
                raise HandlebarsError(f"unexpected {content[i]!r} in {{{{{content.strip()}}}}}", line)
            out.append(_word(word, content, line))
            i = j
    return out


def _word(word: str, content: str, line: int) -> tuple[str, Any]:
    if _NUMBER.match(word):
        return ("literal", float(word) if "." in word else int(word))
    if word in ("true", "false", "null", "undefined"):
        return ("literal", {"true": True, "false": False}.get(word))
    if "|" in word:
        raise HandlebarsError(f"block parameters (as |x|) are not supported: {{{{{content.strip()}}}}}", line)
    data = word.startswith("@")
    text = word[1:] if data else word
    up = 0
    while text.startswith("../") or text == "..":
        up, text = up + 1, text[3:]
    this = False
    if text in ("this", ".") or text.startswith(("this.", "this/", "./")):
        this, text = True, text[5:] if text.startswith("this") else text[2:]
    parts: list[str] = []
    for raw in re.findall(r"\[[^\]]*\]|[^./\[]+|[./]", text):
        if raw in "./":
            continue
        name = raw[1:-1] if raw.startswith("[") else raw
        if not raw.startswith("[") and any(c in _ID_STOP for c in name):
            raise HandlebarsError(f"unexpected {name!r} in {{{{{content.strip()}}}}}", line)
        parts.append(name)
    if data and not parts:
        raise HandlebarsError(f"'@' without a name in {{{{{content.strip()}}}}}", line)
    return ("path", Path(tuple(parts), up, data, this))


def _call(tokens: list[tuple[str, Any]], line: int, content: str) -> Call:
    position = 0

    def value() -> Any:
        nonlocal position
        kind, item = tokens[position]
        position += 1
        if kind == "(":
            inner = _call_at()
            if position >= len(tokens) or tokens[position][0] != ")":
                raise HandlebarsError(f"'(' is never closed in {{{{{content.strip()}}}}}", line)
            position += 1
            return inner
        if kind in ("path", "literal"):
            return Literal(item) if kind == "literal" else item
        raise HandlebarsError(f"unexpected {item if kind == 'key' else kind!r} in {{{{{content.strip()}}}}}", line)

    def _call_at() -> Call:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] != "path":
            raise HandlebarsError(f"expected a name in {{{{{content.strip()}}}}}", line)
        name = tokens[position][1]
        position += 1
        params: list[Any] = []
        named: list[tuple[str, Any]] = []
        while position < len(tokens) and tokens[position][0] != ")":
            if tokens[position][0] == "key":
                key = tokens[position][1]
                position += 1
                if position >= len(tokens) or tokens[position][0] == ")":
                    raise HandlebarsError(f"{key}= without a value in {{{{{content.strip()}}}}}", line)
                named.append((key, value()))
            else:
                params.append(value())
        return Call(name, tuple(params), tuple(named))

    call = _call_at()
    if position != len(tokens):
        raise HandlebarsError(f"unexpected ')' in {{{{{content.strip()}}}}}", line)
    return call


# -- the tree -----------------------------------------------------------------------------


def parse(source: str) -> list[Any]:
    tokens = _tokens(source)
    for index, token in enumerate(tokens):  # {{~x}} and {{x~}}: strip the text next to the tag
        if isinstance(token, tuple):
            if token[4] and index > 0 and isinstance(tokens[index - 1], str):
                tokens[index - 1] = tokens[index - 1].rstrip()
            if token[5] and index + 1 < len(tokens) and isinstance(tokens[index + 1], str):
                tokens[index + 1] = tokens[index + 1].lstrip()
    root: list[Any] = [START]
    stack: list[tuple[list[Any], Block | None]] = [(root, None)]
    line = 1
    for token in tokens:
        target = stack[-1][0]
        if isinstance(token, str):
            target.extend(_pieces(token, line))
            line += token.count("\n")
            continue
        kind, content, start, end, _, _ = token
        line = end
        if kind == "comment":
            target.append(Comment(start, end))
            continue
        if kind == "raw":
            target.append(Text(content, "literal", start))
            continue
        text = content.strip()
        if kind == "raw_value" or text.startswith("&"):
            body = text[1:] if text.startswith("&") else text
            target.append(Mustache(_call(_lex(body, start), start, content), False, start, end))
        elif text.startswith(("#>", "#*", ">")):
            raise HandlebarsError(f"partials and decorators are not supported: {{{{{text}}}}}", start)
        elif text.startswith(("#", "^")) and text != "^":
            call = _call(_lex(text[1:], start), start, content)
            opened = Block(call, text.startswith("^"), start, end)
            if call.name.simple is None:
                raise HandlebarsError(f"a block name is one name: {{{{{text}}}}}", start)
            target.append(opened)
            stack.append((opened.body, opened))
        elif text.startswith("/"):
            name = text[1:].strip()
            while (inner := stack[-1][1]) is not None and inner.chained:
                inner.close_line, inner.close_end = start, end
                stack.pop()
            block = stack[-1][1]
            if block is None:
                raise HandlebarsError(f"{{{{/{name}}}}} closes no block", start)
            if block.call.name.simple != name:
                raise HandlebarsError(f"{{{{/{name}}}}} closes {{{{#{block.call.name.simple}}}}} "
                                      f"(line {block.line})", start)
            block.close_line, block.close_end = start, end
            stack.pop()
        elif text == "^" or text == "else" or text.startswith("else "):
            block = stack[-1][1]
            if block is None:
                raise HandlebarsError("{{else}} outside a block", start)
            if block.inverse is not None:
                raise HandlebarsError(f"a second {{{{else}}}} in {{{{#{block.call.name.simple}}}}}", start)
            block.inverse = [START]
            block.else_line, block.else_end = start, end
            stack[-1] = (block.inverse, block)
            chained_text = text[4:].strip() if text.startswith("else ") else ""
            if chained_text:  # {{else if x}}: a block in the inverse, closed with its parent
                call = _call(_lex(chained_text, start), start, content)
                follower = Block(call, False, start, end, chained=True)
                block.inverse.append(follower)
                stack.append((follower.body, follower))
        else:
            target.append(Mustache(_call(_lex(text, start), start, content), True, start, end))
    unclosed = stack[-1][1]
    if unclosed is not None:
        raise HandlebarsError(f"{{{{#{unclosed.call.name.simple}}}}} is never closed", unclosed.line)
    _clean(root)
    return root


def _is(node: Any, kind: str) -> bool:
    return isinstance(node, Text) and node.kind == kind


def _clean(tree: list[Any]) -> None:
    """pybars's rule for standalone block tags, as pybars applies it."""
    pointer, end = 0, len(tree)
    while pointer < end:
        piece = tree[pointer]
        if isinstance(piece, Block) and not piece.inverted:
            child = piece.body
            pre_space = pointer > 1 and _is(tree[pointer - 1], "whitespace") and (
                _is(tree[pointer - 2], "newline") or tree[pointer - 2] is START)
            pre_content = not pre_space and not (pointer > 0 and (
                _is(tree[pointer - 1], "newline") or tree[pointer - 1] is START))
            post_space = len(child) > 2 and _is(child[1], "whitespace") and _is(child[2], "newline")
            post_content = not post_space and not (len(child) > 1 and _is(child[1], "newline"))
            if not pre_content and not post_content:
                if pre_space:
                    tree.pop(pointer - 1)
                    pointer, end = pointer - 1, end - 1
                if post_space:
                    child.pop(1)
                child.pop(1)
            size = len(child)
            close_pre_space = size > 2 and _is(child[-1], "whitespace") and _is(child[-2], "newline")
            close_pre_content = not close_pre_space and not (size > 1 and _is(child[-1], "newline"))
            total = len(tree)
            close_post_space = (total > pointer + 2 and _is(tree[pointer + 1], "whitespace")
                                and _is(tree[pointer + 2], "newline")) or (
                total == pointer + 2 and _is(tree[pointer + 1], "whitespace"))
            close_post_content = not close_post_space and not (
                (total > pointer + 1 and _is(tree[pointer + 1], "newline")) or total == pointer + 1)
            if not close_pre_content and not close_post_content:
                if close_pre_space:
                    child.pop()
                child.pop()
                if close_post_space:
                    tree.pop(pointer + 1)
                    end -= 1
            _clean(child)
        pointer += 1
