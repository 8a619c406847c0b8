"""How kernel functions meet a model as tools: which functions are offered, the spec each
is offered as, the policy of the loop, and the text a tool call answers with (results as
text, errors short and safe: secrets masked, file paths stripped, no traceback)."""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_json

from ..contents import ToolSpec
from ..errors import ConfigurationError, FunctionNotFoundError
from ..functions import KernelFunction, NativeFunction
from ..logging import mask_text
from ..settings import ToolLoopSettings

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DECLINED", "NO_APPROVER", "resolve_policy", "result_text", "select_functions", "short_error", "tool_spec"]

DECLINED = "error: the user declined this call; it was not run"
NO_APPROVER = "error: this function needs the user's approval and no approval callback is configured; it was not run"
MAX_ERROR_CHARS = 400

_SPECS: weakref.WeakKeyDictionary[KernelFunction, ToolSpec] = weakref.WeakKeyDictionary()

_PATH = re.compile(r"""(?:[A-Za-z]:\\|\\\\|/)(?:[^\s/\\'"<>|:,;()\[\]]+[/\\])+[^\s/\\'"<>|:,;()\[\]]*""")


def tool_spec(function: KernelFunction) -> ToolSpec:
    """The ToolSpec a function is offered as (cached per function object)."""
    spec = _SPECS.get(function)
    if spec is None:
        spec = _SPECS[function] = ToolSpec(function.tool_name, function.description, function.parameters_schema)
    return spec


def short_error(text: str) -> str:
    """A short, safe error text for the model: one line, secrets masked, file paths
    stripped, no traceback, at most MAX_ERROR_CHARS characters."""
    cut = text.find("Traceback (most recent call last)")
    if cut >= 0:
        text = text[:cut]
    line = " ".join(text.split()) or "failed"
    line = _PATH.sub("<path>", mask_text(line))
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return "error: " + line


def result_text(value: Any) -> str:
    """Tool results are strings: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return to_json(value, fallback=str).decode()


def interruptible(fn: KernelFunction) -> bool:
    """False for a plain sync native function: it runs to completion in one step of the
    event loop, so a timeout could not interrupt it; none is armed (one timer less per call)."""
    if isinstance(fn, NativeFunction):
        return fn._is_async or fn._thread
    return True


def resolve_policy(base: ToolLoopSettings, override: Any) -> ToolLoopSettings:
    if override is None:
        return base
    if isinstance(override, ToolLoopSettings):
        return override
    if not isinstance(override, Mapping):
        raise ConfigurationError(
            f"tool loop policy must be a mapping or ToolLoopSettings, not {type(override).__name__}"
        )
    try:
        return ToolLoopSettings.model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid tool loop policy: {problems}") from None


def select_functions(kernel: Kernel, tools: Any, plugins: Any) -> list[KernelFunction]:
    """The functions to offer: all (default), those of `plugins`, and/or those named in
    `tools` (names or KernelFunctions). `tools=[]`, `False` or `"none"` offers none."""
    if isinstance(plugins, str):
        plugins = [plugins]
    if plugins is not None:
        for name in plugins:
            if name not in kernel.plugins:
                raise FunctionNotFoundError(
                    f"no plugin named {name!r} (plugins: {', '.join(sorted(kernel.plugins)) or 'none'})"
                )
    if tools is False or tools == "none":
        return []
    if tools is None or tools is True or tools == "all":
        return kernel.functions(None if tools == "all" else plugins)
    if isinstance(tools, str | KernelFunction):
        tools = [tools]
    selected: list[KernelFunction] = kernel.functions(plugins) if plugins is not None else []
    for item in tools:
        fn = item if isinstance(item, KernelFunction) else kernel.get_function(str(item))
        if fn not in selected:
            selected.append(fn)
    return selected
