"""A third-party plugin whose registration hook raises."""

from __future__ import annotations

from typing import Any

from kernel.hookspecs import hookimpl


@hookimpl
def register_plugins(register: Any) -> None:
    raise ValueError("thirdparty_badhook hook exploded")
