"""orchestration-kernel: a small, fast, safe plugin-based LLM orchestration kernel.

Importing this package loads no provider SDK; connectors import theirs when a service of
that provider is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
)
from .errors import (
    ArgumentError,
    ConfigurationError,
    FunctionNotFoundError,
    KernelError,
    PluginError,
    PluginLoadError,
    ProviderError,
    TemplateError,
)
from .functions import (
    FunctionResult,
    KernelArguments,
    KernelFunction,
    KernelPlugin,
    NativeFunction,
    kernel_function,
)
from .hookspecs import hookimpl
from .kernel import Kernel
from .prompt_function import InputVariable, PromptFunction
from .settings import KernelSettings, ServiceSettings

if TYPE_CHECKING:
    from .testing import ScriptedChatModel

__all__ = [
    "ArgumentError",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ConfigurationError",
    "FunctionNotFoundError",
    "FunctionResult",
    "InputVariable",
    "Kernel",
    "KernelArguments",
    "KernelError",
    "KernelFunction",
    "KernelPlugin",
    "KernelSettings",
    "NativeFunction",
    "PluginError",
    "PluginLoadError",
    "PromptFunction",
    "ProviderError",
    "ScriptedChatModel",
    "ServiceSettings",
    "TemplateError",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "hookimpl",
    "kernel_function",
]


def __getattr__(name: str) -> Any:
    if name == "ScriptedChatModel":
        from .testing import ScriptedChatModel

        return ScriptedChatModel
    raise AttributeError(f"module 'kernel' has no attribute {name!r}")
