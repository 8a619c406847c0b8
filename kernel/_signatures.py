"""Reading a Python callable's signature for `NativeFunction`: which parameters the
kernel injects, what `Annotated[...]` documents, and the fast validation path for plain
exactly-typed scalar arguments (pydantic does the rest).

What a signature says is read once per function and shared (`signature_of`): every kernel
that registers the same function (a standard plugin, a module registered per test or per
request) reuses its resolved type hints, and the schemas and argument model built on its
first use. It holds nothing a kernel changes.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin, get_type_hints

from .errors import PluginError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo


class Signature:
    """A callable's parameters, resolved type hints and injected parameters; `schemas`
    holds, by (plugin, function name), what `NativeFunction` builds on first use."""

    __slots__ = ("__weakref__", "description", "hints", "inject_arguments", "inject_kernel", "is_async",
                 "parameters", "schemas")

    def __init__(self, func: Callable[..., Any], where: str) -> None:
        try:
            self.hints: dict[str, Any] = get_type_hints(func, include_extras=True)
        except Exception as exc:  # unresolved forward references
            raise PluginError(f"{where}: cannot resolve type hints: {exc}") from None
        self.parameters = tuple(inspect.signature(func).parameters.values())
        self.inject_kernel: str | None = None
        self.inject_arguments: str | None = None
        for param in self.parameters:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise PluginError(f"{where}: *args/**kwargs parameters cannot be offered to models")
            injected = is_injected(param, self.hints.get(param.name, inspect.Parameter.empty))
            if injected == "kernel":
                self.inject_kernel = param.name
            elif injected == "arguments":
                self.inject_arguments = param.name
        self.is_async = inspect.iscoroutinefunction(func)
        self.description = (inspect.getdoc(func) or "").split("\n\n")[0].strip()
        self.schemas: dict[tuple[str, str], tuple[Any, ...]] = {}


_FUNCTIONS: weakref.WeakKeyDictionary[Any, Signature] = weakref.WeakKeyDictionary()
_METHODS: weakref.WeakKeyDictionary[Any, Signature] = weakref.WeakKeyDictionary()


def signature_of(func: Callable[..., Any], where: str) -> Signature:
    """The signature of `func`, read once per plain function (and once for the bound
    methods of one function); other callables are read each time."""
    if isinstance(func, types.FunctionType):
        cache, key = _FUNCTIONS, func
    elif isinstance(func, types.MethodType) and isinstance(func.__func__, types.FunctionType):
        cache, key = _METHODS, func.__func__  # the bound `self` is not a parameter
    else:
        return Signature(func, where)
    found = cache.get(key)
    if found is None:
        found = cache[key] = Signature(func, where)
    return found


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


# --- which members of a module, class or object are kernel functions ----------------------

_MODULE_MEMBERS: dict[str, tuple[types.ModuleType, int, list[str]]] = {}
_CLASS_MEMBERS: weakref.WeakKeyDictionary[type, list[str]] = weakref.WeakKeyDictionary()


def _scan(obj: Any, marker: str) -> list[str]:
    names = []
    module = obj.__name__ if isinstance(obj, types.ModuleType) else None
    for attr in dir(obj):
        if attr.startswith("__"):
            continue
        try:
            member = inspect.getattr_static(obj, attr)
        except AttributeError:
            continue
        raw = member.__func__ if isinstance(member, staticmethod | classmethod) else member
        if getattr(raw, marker, None) is None:
            continue
        if module is not None and getattr(raw, "__module__", module) != module:
            continue  # imported from elsewhere
        names.append(attr)
    return names


def marked_members(obj: Any, marker: str) -> list[str]:
    """The names of `obj`'s members marked with `marker` (`@kernel_function`), in `dir()`
    order; of a module, only those defined there. The scan of a module or class is done
    once (again when a module gains or loses names); an object's own attributes are read
    each time."""
    if isinstance(obj, types.ModuleType):
        size = len(vars(obj))
        cached = _MODULE_MEMBERS.get(obj.__name__)
        if cached is not None and cached[0] is obj and cached[1] == size:
            return cached[2]
        names = _scan(obj, marker)
        _MODULE_MEMBERS[obj.__name__] = (obj, size, names)
        return names
    cls: type = obj if isinstance(obj, type) else type(obj)
    custom_dir = getattr(type(cls), "__dir__", None) is not type.__dir__ or (
        cls is not obj and getattr(cls, "__dir__", None) is not object.__dir__)
    if custom_dir:
        return _scan(obj, marker)  # a custom __dir__: nothing to cache
    class_names = _CLASS_MEMBERS.get(cls)
    if class_names is None:
        class_names = _CLASS_MEMBERS[cls] = _scan(cls, marker)
    own = getattr(obj, "__dict__", None) if cls is not obj else None
    if not own:
        return class_names
    found = set(class_names)
    for attr, value in own.items():
        if attr.startswith("__"):
            continue
        raw = value.__func__ if isinstance(value, staticmethod | classmethod) else value
        if getattr(raw, marker, None) is None:
            found.discard(attr)
        else:
            found.add(attr)
    return sorted(found)
