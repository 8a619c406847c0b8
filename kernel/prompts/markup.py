"""Escaping and `<message role="...">` markup.

Every value inserted into a template is XML-escaped on output, so it can never open or
close a `<message>` block; after the chat structure is parsed, the escapes are undone in
each message's content. A value is inserted raw only when marked trusted (`trusted()`, or
an input declared `trusted`): text the application itself controls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

from ..contents import ChatMessage

__all__ = ["parse_chat", "prepare_variables", "trusted", "unescape"]


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
