"""Escaping and `<message role="...">` markup.

Every value inserted into a template is XML-escaped on output, so it can never open or
close a `<message>` block; after the chat structure is parsed, the escapes are undone in
each message's content. A value is inserted raw only when marked trusted (`trusted()`, or
an input declared `trusted`): text the application itself controls.

A rendered prompt becomes chat messages exactly as Semantic Kernel's
`ChatHistory.from_rendered_prompt` makes them (one rule for every template format):

* the prompt is stripped and read as the content of an XML element; an empty prompt sends
  no message;
* text before the first element becomes a *system* message (stripped); text after a
  `<message>` (or `<chat_history>`) becomes a *user* message (stripped);
* a `<message role="...">` keeps its content as written, whitespace included; a `<text>`
  child is its text; any other element inside it is kept as text (`<b>x</b>`);
* an element that is not a message (`<p>`, `<div>`) outside any message is kept as text,
  appended to the message before it (or a user message when it comes first);
* one single system message is sent as a user message;
* text that is not well-formed XML (a raw `<` or `&` in template text, an HTML entity such
  as `&nbsp;`) is one user message with the whole prompt, markup and all, entities decoded.

Entities are decoded exactly once, so a value's `&lt;` (typed by a user) reaches the model
as `&lt;` (SK's Python release decodes twice and sends `<`). A control character that XML
forbids does not make the prompt unreadable as XML (SK would fall back to one user message):
a value cannot undo the message structure of the template it is inserted into.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any
from xml.parsers import expat

from markupsafe import Markup

from ..contents import ChatMessage
from ..errors import TemplateRenderError

__all__ = ["MESSAGE_ROLES", "parse_chat", "prepare_variables", "trusted", "unescape"]


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


def unescape(text: str) -> str:
    """Decode character references once (HTML's rules, as SK does for text that is not XML)."""
    return html.unescape(text) if "&" in text else text


MESSAGE_ROLES = frozenset({"system", "user", "assistant", "developer"})
"""Roles a template may write. `developer` (OpenAI's name for system instructions) is sent
as `system` until messages carry it; `tool` needs a tool call and cannot be written."""
_CONTENT_TAGS = frozenset({"image", "function_call", "function_result", "annotation", "file_reference",
                           "streaming_annotation", "streaming_file_reference", "binary"})

# Characters XML 1.0 forbids, and the private marker that stands in for them while parsing.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ue000\ud800-\udfff\ufffe\uffff]")
_MARKER = "\ue000"
_MARKED = re.compile(_MARKER + "(.)", re.DOTALL)
_PLANE = 0xF0000  # supplementary private use: valid XML, one code point per forbidden one


class _Element:
    __slots__ = ("attributes", "children", "parts", "tag", "tail")

    def __init__(self, tag: str, attributes: dict[str, str]) -> None:
        self.tag, self.attributes = tag, attributes
        self.parts: list[str] = []  # text before the first child
        self.children: list[_Element] = []
        self.tail: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tail_text(self) -> str:
        return "".join(self.tail)


class _NotXML(Exception):
    pass


def _parse(prompt: str) -> _Element:
    """`<root>prompt</root>` as a tree of elements; comments and processing instructions are
    dropped (as ElementTree drops them). Raises _NotXML."""
    root = _Element("root", {})
    stack = [root]
    sink = root.parts  # where character data goes: an element's text or the last child's tail
    parser = expat.ParserCreate(namespace_separator="}")
    parser.namespace_prefixes = True
    parser.buffer_text = True

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal sink
        element = _Element(_qualified(tag), {_qualified(k): v for k, v in attributes.items()})
        stack[-1].children.append(element)
        stack.append(element)
        sink = element.parts

    def end(_tag: str) -> None:
        nonlocal sink
        sink = stack.pop().tail

    def data(text: str) -> None:
        sink.append(text)

    def refuse(*_args: Any) -> None:
        raise _NotXML("declarations are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(f"<root>{prompt}</root>", True)
    except expat.ExpatError as exc:
        raise _NotXML(str(exc)) from None
    return root.children[0]


def _qualified(name: str) -> str:
    """expat's `uri}local}prefix` back to `prefix:local`."""
    if "}" not in name:
        return name
    parts = name.split("}")
    return f"{parts[2]}:{parts[1]}" if len(parts) == 3 else parts[-1]


def _markup(element: _Element) -> str:
    """An element written back as text (no tail), its content decoded: what SK keeps of an
    element it does not know (`tostring` then `unescape`)."""
    out: list[str] = []
    stack: list[tuple[_Element, bool]] = [(element, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            out.append(f"</{node.tag}>")
            if node is not element:
                out.append(node.tail_text)
            continue
        attributes = "".join(f' {name}="{value}"' for name, value in node.attributes.items())
        out.append(f"<{node.tag}{attributes}>{node.text}")
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children))
    return "".join(out)


def _message(element: _Element) -> ChatMessage:
    role = element.attributes.get("role")
    if role is None:
        raise TemplateRenderError("a <message> without a role (write <message role=\"user\">)")
    if role not in MESSAGE_ROLES:
        raise TemplateRenderError(
            f"<message role={role!r}>: unknown role (expected one of {', '.join(sorted(MESSAGE_ROLES))})"
            if role != "tool" else "<message role='tool'>: a tool message needs a tool call and cannot be written "
            "in a template"
        )
    parts = [element.text]
    for child in element.children:
        if child.tag == "text":
            parts.append(child.text)  # SK keeps the text of <text>, not what follows it
        elif child.tag in _CONTENT_TAGS:
            raise TemplateRenderError(f"<{child.tag}> content in a <message> is not supported")
        else:
            parts.append(_markup(child) + child.tail_text)
    name = element.attributes.get("name")
    return ChatMessage("system" if role == "developer" else role, "".join(parts), name=name)  # type: ignore[arg-type]


def _restore(text: str) -> str:
    return _MARKED.sub(lambda m: chr(ord(m.group(1)) - _PLANE), text) if _MARKER in text else text


_SIMPLE_MESSAGE = re.compile(r'\s*<message role="([a-z]+)">([^<]*)</message>')
_REFERENCE = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _xml_char(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _decode_references(text: str) -> str | None:
    """`text` with XML's character references decoded, as expat decodes character data;
    None when it holds anything else after an `&` (the parser decides then)."""
    out: list[str] = []
    pos = 0
    while (amp := text.find("&", pos)) >= 0:
        match = _REFERENCE.match(text, amp)
        if match is None:
            return None
        named, decimal, hexadecimal = match.groups()
        if named is not None:
            out += [text[pos:amp], _NAMED[named]]
        else:
            code = int(decimal, 10) if decimal is not None else int(hexadecimal, 16)
            if not _xml_char(code):
                return None
            out += [text[pos:amp], chr(code)]
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _simple_messages(prompt: str) -> list[ChatMessage] | None:
    """The messages of a prompt that is only `<message role="...">text</message>` elements
    (the common case), without building a parser; None for anything else: other markup,
    attributes, unknown roles, carriage returns (XML normalises them), `]]>`, or a reference
    the parser may reject. Gives what `parse_chat`'s parser gives for those prompts."""
    if "\r" in prompt or "]]>" in prompt or not prompt.startswith("<message"):
        return None
    messages: list[ChatMessage] = []
    pos, end = 0, len(prompt)
    while pos < end:
        match = _SIMPLE_MESSAGE.match(prompt, pos)
        if match is None:
            return None
        role, content = match.groups()
        if role not in MESSAGE_ROLES:
            return None
        if "&" in content:
            decoded = _decode_references(content)
            if decoded is None:
                return None
            content = decoded
        messages.append(ChatMessage("system" if role == "developer" else role, content))  # type: ignore[arg-type]
        pos = match.end()
    return messages or None


def parse_chat(rendered: str) -> list[ChatMessage]:
    """Split a rendered template into chat messages, as SK does (see the module docstring)."""
    prompt = rendered.strip()
    forbidden = _FORBIDDEN.search(prompt) is not None
    messages = None if forbidden else _simple_messages(prompt)
    if messages is None:
        return parsed_messages(prompt, forbidden)
    if len(messages) == 1 and messages[0].role == "system":
        messages[0].role = "user"
    return messages


def parsed_messages(prompt: str, forbidden: bool) -> list[ChatMessage]:
    """`parse_chat` by the XML parser, for any prompt (`forbidden`: it holds characters
    XML forbids)."""
    protected = _FORBIDDEN.sub(lambda m: _MARKER + chr(_PLANE + ord(m.group())), prompt) if forbidden else prompt
    try:
        root = _parse(protected)
    except _NotXML:
        return [ChatMessage("user", unescape(prompt))]
    messages: list[ChatMessage] = []
    if root.text.strip():
        messages.append(ChatMessage("system", root.text.strip()))
    for item in root.children:
        tail = item.tail_text
        if item.tag == "message":
            messages.append(_message(item))
        elif item.tag == "chat_history":
            for entry in item.children:
                if entry.tag != "message":
                    raise TemplateRenderError(f"<chat_history> holds <message> elements, not <{entry.tag}>")
                messages.append(_message(entry))
        else:  # not SK markup: kept as text, in the message before it
            text = _markup(item)
            if messages:
                messages[-1].content += text + tail
            else:
                messages.append(ChatMessage("user", text + tail))
            continue
        if tail.strip():
            messages.append(ChatMessage("user", tail.strip()))
    if len(messages) == 1 and messages[0].role == "system":
        messages[0].role = "user"
    if forbidden:
        for message in messages:
            message.content = _restore(message.content)
    return messages
