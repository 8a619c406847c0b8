"""Text functions that show which arguments they were called with."""

from kernel import kernel_function


@kernel_function(description="Describe an input in a style.")
def describe(input: str, style: str = "plain") -> str:
    return f"{input} ({style})"


@kernel_function(description="Upper-case an input.")
def shout(input: str) -> str:
    return input.upper()
