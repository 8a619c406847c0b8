"""A module proxy that imports the real module on first attribute access."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """`extra`: the extra that installs the module, named (with `feature`) by the
    `ExtraNotInstalledError` raised when it is missing."""

    __slots__ = ("_extra", "_feature", "_module", "_name")

    def __init__(self, name: str, *, extra: str | None = None, feature: str | None = None) -> None:
        self._name, self._extra, self._feature = name, extra, feature
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            try:
                module = self._module = importlib.import_module(self._name)
            except ImportError as exc:
                if self._extra is None or exc.name != self._name:
                    raise
                from kernel.errors import ExtraNotInstalledError

                raise ExtraNotInstalledError(self._feature or self._name, self._extra, self._name) from None
        return getattr(module, attribute)
