"""Registers the standard plugins through the same hook third-party packages use."""

from __future__ import annotations

from typing import Any

from kernel.hookspecs import hookimpl


@hookimpl
def register_plugins(register: Any) -> None:
    from plugins import math_plugin, text_plugin, time_plugin

    register(time_plugin, name="time")
    register(math_plugin, name="math")
    register(text_plugin, name="text")
