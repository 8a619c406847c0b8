"""Text utilities: counts, case, truncation, sentences, find/replace, slugs."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from kernel.errors import ArgumentError
from kernel.functions import kernel_function

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9À-Ý])")


@kernel_function
def word_count(text: Annotated[str, "the text to count"]) -> int:
    """Count the words in a text."""
    return len(text.split())


@kernel_function
def char_count(
    text: Annotated[str, "the text to count"],
    spaces: Annotated[bool, "count whitespace too"] = True,
) -> int:
    """Count the characters in a text."""
    return len(text) if spaces else sum(1 for c in text if not c.isspace())


@kernel_function
def upper(text: str) -> str:
    """Convert text to upper case."""
    return text.upper()


@kernel_function
def lower(text: str) -> str:
    """Convert text to lower case."""
    return text.lower()


@kernel_function
def truncate(
    text: Annotated[str, "the text to shorten"],
    max_chars: Annotated[int, "maximum length of the result, suffix included"] = 100,
    suffix: Annotated[str, "appended when the text was cut"] = "...",
) -> str:
    """Shorten a text to at most max_chars characters, cutting at a word boundary when possible."""
    if max_chars < len(suffix) or max_chars < 1:
        raise ArgumentError("text.truncate", "max_chars", f"must be at least {max(len(suffix), 1)}")
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - len(suffix)]
    space = cut.rfind(" ")
    if space > len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip() + suffix


@kernel_function
def split_sentences(text: Annotated[str, "the text to split"]) -> list[str]:
    """Split a text into sentences."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


@kernel_function
def find(
    text: Annotated[str, "the text to search"],
    pattern: Annotated[str, "the literal text to find"],
    ignore_case: bool = False,
) -> list[int]:
    """Positions (0-based character offsets) of every occurrence of a literal text."""
    if not pattern:
        raise ArgumentError("text.find", "pattern", "must not be empty")
    flags = re.IGNORECASE if ignore_case else 0
    return [m.start() for m in re.finditer(re.escape(pattern), text, flags)]


@kernel_function
def replace(
    text: Annotated[str, "the text to change"],
    old: Annotated[str, "the literal text to replace"],
    new: Annotated[str, "the replacement"],
    count: Annotated[int, "replace at most this many occurrences (-1: all)"] = -1,
    ignore_case: bool = False,
) -> str:
    """Replace a literal text (not a regular expression) with another."""
    if not old:
        raise ArgumentError("text.replace", "old", "must not be empty")
    flags = re.IGNORECASE if ignore_case else 0
    return re.sub(re.escape(old), lambda _m: new, text, count=max(count, 0), flags=flags)


@kernel_function
def slugify(
    text: Annotated[str, "the text to turn into a slug"],
    separator: str = "-",
    max_length: int = 80,
) -> str:
    """A URL-safe slug: ASCII lower case words joined by a separator ('Hello, World!' -> 'hello-world')."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = separator.join(words)
    if len(slug) > max_length:
        slug = slug[:max_length].rstrip(separator)
    return slug
