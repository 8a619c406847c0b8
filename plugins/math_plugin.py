"""Arithmetic that models get wrong: exact sums, products, roots and expressions.

`evaluate` walks the expression's syntax tree and allows numbers, + - * / // % **,
unary signs, parentheses and a few named functions. It never calls `eval`; anything else
(names, attributes, calls to other functions, huge powers) is refused with a message.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from kernel.errors import ArgumentError
from kernel.functions import kernel_function

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300


@kernel_function
def add(a: Annotated[float, "first number"], b: Annotated[float, "second number"]) -> float:
    """Add two numbers."""
    return a + b


@kernel_function
def subtract(a: Annotated[float, "number to subtract from"], b: Annotated[float, "number to subtract"]) -> float:
    """Subtract b from a."""
    return a - b


@kernel_function
def multiply(a: Annotated[float, "first number"], b: Annotated[float, "second number"]) -> float:
    """Multiply two numbers."""
    return a * b


@kernel_function
def divide(a: Annotated[float, "dividend"], b: Annotated[float, "divisor, not zero"]) -> float:
    """Divide a by b."""
    if b == 0:
        raise ArgumentError("math.divide", "b", "division by zero: the divisor must not be 0")
    return a / b


@kernel_function
def sqrt(x: Annotated[float, "a number >= 0"]) -> float:
    """The square root of a number."""
    if x < 0:
        raise ArgumentError("math.sqrt", "x", f"square root of a negative number ({x})")
    return math.sqrt(x)


@kernel_function(name="round")
def round_number(
    x: Annotated[float, "the number to round"],
    digits: Annotated[int, "decimal places"] = 0,
) -> float:
    """Round a number to a number of decimal places (halves to even)."""
    return round(x, digits)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


MAX_ROUND_DIGITS = 400


class _ExpressionError(ValueError):
    pass


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise _ExpressionError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise _ExpressionError("division by zero")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ArithmeticError as exc:  # OverflowError from float arithmetic
            raise _ExpressionError(f"the result is out of range ({exc})") from None
        if isinstance(value, complex):
            raise _ExpressionError("the result is not a real number")
        if abs(value) > MAX_MAGNITUDE:
            raise _ExpressionError("the result is too large")
        return value  # type: ignore[no-any-return]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_walk(arg) for arg in node.args]
        if node.func.id == "round" and len(args) > 1 and abs(args[1]) > MAX_ROUND_DIGITS:
            # round(x, -N) computes 10**N: keep the work bounded (the function is sync)
            raise _ExpressionError(f"round(): at most {MAX_ROUND_DIGITS} digits")
        try:
            return _FUNCTIONS[node.func.id](*args)  # type: ignore[no-any-return]
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise _ExpressionError(f"{node.func.id}(): {exc}") from None
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "this function call"
    elif isinstance(node, ast.Constant):
        what = f"constant {node.value!r}"
    allowed = ", ".join(sorted(_FUNCTIONS))
    raise _ExpressionError(f"{what} is not allowed (numbers, + - * / // % **, parentheses, {allowed}, pi, e)")


def evaluate_expression(expression: str) -> float:
    """Evaluate arithmetic safely; raises ValueError naming the problem."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise _ExpressionError(f"not an arithmetic expression ({exc.msg})") from None
    return _walk(tree)


@kernel_function
def evaluate(expression: Annotated[str, "an arithmetic expression such as '(2 + 3) * 4 / sqrt(16)'"]) -> float:
    """Evaluate an arithmetic expression exactly (numbers, + - * / // % **, sqrt, abs, round, min, max)."""
    try:
        return evaluate_expression(expression)
    except _ExpressionError as exc:
        raise ArgumentError("math.evaluate", "expression", str(exc)) from None
