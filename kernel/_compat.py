"""Module paths from before the wings keep working, with a DeprecationWarning.

`import kernel.tool_calls` (now `kernel.chat`) gives a small alias module whose names are
looked up, on first use, in the modules that hold them now. Nothing is imported until a
name is used, and the alias modules are not files: `kernel/` lists only the real layout.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

MOVED: dict[str, tuple[str, ...]] = {
    "kernel.chat_history": ("kernel.chat.history",),
    "kernel.chunking": ("kernel.memory.chunking",),
    "kernel.cli_chat": ("kernel.cli.chat",),
    "kernel.cli_memory": ("kernel.cli.memory",),
    "kernel.cli_plan": ("kernel.cli.plan",),
    "kernel.filters": ("kernel.memory.filters",),
    "kernel.loader": ("kernel.plugin_folders.discovery", "kernel.plugin_folders.prompt_format",
                      "kernel.plugin_folders.sk_format", "kernel.plugin_folders.reader"),
    "kernel.memory_types": ("kernel.memory.types",),
    "kernel.plan": ("kernel.planning.model", "kernel.planning.validation"),
    "kernel.planner": ("kernel.planning.generation", "kernel.planning.execution", "kernel.planning.cache",
                       "kernel.planning.solve"),
    "kernel.pricing": ("kernel.services.pricing",),
    "kernel.prompt_function": ("kernel.prompts.function",),
    "kernel.resilience": ("kernel.services.resilience",),
    "kernel.sk_template": ("kernel.plugin_folders.sk_syntax",),
    "kernel.tool_calls": ("kernel.chat.tool_loop", "kernel.chat.tools"),
}
"""Old module -> the modules its names live in now, searched in order."""


class _AliasModule(ModuleType):
    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: use {' / '.join(targets)}.")
        self.__targets = targets

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                value = getattr(module, attribute)
                setattr(self, attribute, value)
                return value
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__targets)}) "
                             f"has no attribute {attribute!r}")


class _AliasFinder:
    """A meta path finder and loader (the protocol, not `importlib.abc`'s classes: importing
    those loads importlib.resources, tempfile and shutil, 10 ms of `import kernel`)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return ModuleSpec(fullname, self)  # type: ignore[arg-type]

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {targets[0].rsplit('.', 1)[0]}; import from there",
                      DeprecationWarning, stacklevel=3)
        return _AliasModule(spec.name, targets)

    def exec_module(self, module: ModuleType) -> None:
        return None


_FINDER = _AliasFinder()


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
