"""Operations for the serve tests: one needs approval."""

from kernel import kernel_function


@kernel_function(needs_approval=True)
def publish(text: str) -> str:
    """Publish a text (needs approval)."""
    return f"published: {text}"


@kernel_function
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper() + "!"
