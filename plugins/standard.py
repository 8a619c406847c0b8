"""Registers the standard plugins through the same hook third-party packages use.

time, math, text (native), writer (prompt functions: summarize, translate, extract_json,
classify) and memory (`memory.recall` over the kernel's embedding and memory services).
Turn them off with `standard_plugins = false` (`KERNEL_STANDARD_PLUGINS=false`).
"""

from __future__ import annotations

from typing import Any

from kernel.hookspecs import hookimpl


@hookimpl
def register_plugins(register: Any) -> None:
    from kernel.memory import MemoryPlugin
    from plugins import math_plugin, text_plugin, time_plugin, writer

    register(time_plugin, name="time")
    register(math_plugin, name="math")
    register(text_plugin, name="text")
    register(writer.prompt_folder(), name="writer")
    register(writer, name="writer")
    register(MemoryPlugin(), name="memory")
