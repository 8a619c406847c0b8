"""Arithmetic that models get wrong: exact sums, products and comparisons."""

from __future__ import annotations

from typing import Annotated

from kernel.functions import kernel_function


@kernel_function
def add(a: Annotated[float, "first number"], b: Annotated[float, "second number"]) -> float:
    """Add two numbers."""
    return a + b


@kernel_function
def multiply(a: Annotated[float, "first number"], b: Annotated[float, "second number"]) -> float:
    """Multiply two numbers."""
    return a * b
