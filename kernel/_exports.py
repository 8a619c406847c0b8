"""Lazy public names for a package: `kernel` and each wing list where their names live,
and a module is imported only when one of its names is first used. This keeps
`import kernel` (and `import kernel.memory`, ...) cheap: jinja2, pydantic-settings and
the like load when the code that needs them runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, locations: Mapping[str, str], namespace: dict[str, Any],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `locations` maps a public name to the
    module that defines it, relative to `package` (`"errors"`, or `"..hookspecs"`);
    `namespace` is the package's globals, where a name is cached once loaded so later
    lookups skip `__getattr__`."""

    def __getattr__(name: str) -> Any:
        module = locations.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module if module.startswith(".") else f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(locations))

    return __getattr__, __dir__
