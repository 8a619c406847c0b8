"""Text utilities."""

from __future__ import annotations

from typing import Annotated

from kernel.functions import kernel_function


@kernel_function
def word_count(text: Annotated[str, "the text to count"]) -> int:
    """Count the words in a text."""
    return len(text.split())


@kernel_function
def upper(text: str) -> str:
    """Convert text to upper case."""
    return text.upper()
