"""Text tools for the studio plugin."""

from typing import Annotated

from kernel import kernel_function


@kernel_function(description="Count the words of a text.")
def word_count(text: Annotated[str, "The text."]) -> int:
    return len(text.split())


@kernel_function
def shout(text: str, times: int = 1) -> str:
    """Upper-case a text and add exclamation marks."""
    return text.upper() + "!" * times


def helper() -> None:
    """Not a kernel function: not exposed."""


@kernel_function
def tagline() -> str:
    """A fixed tagline (a function that takes no arguments)."""
    return "<b>Write & shine</b>"
