"""Reading a Python callable's signature for `NativeFunction`: which parameters the
kernel injects, what `Annotated[...]` documents, and the fast validation path for plain
exactly-typed scalar arguments (pydantic does the rest)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo


def is_injected(param: inspect.Parameter, hint: Any) -> str | None:
    """'kernel' or 'arguments' when the parameter asks for injection."""
    from .functions import KernelArguments
    from .kernel import Kernel

    base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    if base is Kernel or (param.name == "kernel" and hint is inspect.Parameter.empty):
        return "kernel"
    if base is KernelArguments:
        return "arguments"
    return None


def describe_hint(hint: Any) -> tuple[Any, str, FieldInfo | None]:
    """Split `Annotated[T, "doc" | Field(...)]` into type, description, field info."""
    from pydantic.fields import FieldInfo

    if get_origin(hint) is not Annotated:
        return hint, "", None
    base, *extras = get_args(hint)
    description, info = "", None
    for extra in extras:
        if isinstance(extra, str):
            description = extra
        elif isinstance(extra, FieldInfo):
            info = extra
            description = extra.description or description
    return base, description, info


EXACT_TYPES = (str, int, float, bool)


class FastPath:
    """Validation without pydantic for the common case: every parameter a plain `str`,
    `int`, `float` or `bool` and every value already of exactly that type. Anything else
    (coercion, constraints, a missing or extra argument) goes to pydantic, which then
    also produces the error message."""

    __slots__ = ("defaults", "required", "types")

    def __init__(self) -> None:
        self.types: dict[str, type] = {}
        self.required: list[str] = []
        self.defaults: dict[str, Any] = {}

    def add(self, name: str, base: Any, info: Any, required: bool, default: Any) -> FastPath | None:
        if info is not None or base not in EXACT_TYPES:
            return None
        self.types[name] = base
        if required:
            self.required.append(name)
        else:
            self.defaults[name] = default
        return self

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
        types = self.types
        for key, value in arguments.items():
            if type(value) is not types.get(key):
                return None
        for key in self.required:
            if key not in arguments:
                return None
        if self.defaults:
            return {**self.defaults, **arguments}
        return dict(arguments)
