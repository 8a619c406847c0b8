"""orchestration-kernel: a small, fast, safe plugin-based LLM orchestration kernel.

Importing this package loads no provider SDK; connectors import theirs when a service of
that provider is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers; at run time names load on first use
    from .chat_history import ChatHistory
    from .contents import (
        ChatMessage,
        ChatRequest,
        ChatResponse,
        FinalMessage,
        TextDelta,
        ToolCall,
        ToolCallFinished,
        ToolCallStarted,
        ToolChoice,
        ToolResult,
        ToolSpec,
        Usage,
    )
    from .errors import (
        ApprovalDeniedError,
        ArgumentError,
        ConfigurationError,
        DeadlineExceededError,
        FunctionNotFoundError,
        InvocationError,
        KernelError,
        PlanError,
        PlanExecutionError,
        PlanValidationError,
        PluginError,
        PluginLoadError,
        ProviderError,
        RecursionLimitError,
        SandboxViolationError,
        ServiceError,
        TemplateError,
        TemplateRenderError,
        ToolLoopError,
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
    from .plan import Plan
    from .planner import PlanRun
    from .prompt_function import InputVariable, PromptFunction
    from .settings import KernelSettings, ServiceSettings, ToolLoopSettings
    from .testing import ScriptedChatModel
    from .tool_calls import ChatResult

__all__ = [
    "ApprovalDeniedError",
    "ArgumentError",
    "ChatHistory",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ChatResult",
    "ConfigurationError",
    "DeadlineExceededError",
    "FinalMessage",
    "FunctionNotFoundError",
    "FunctionResult",
    "InputVariable",
    "InvocationError",
    "Kernel",
    "KernelArguments",
    "KernelError",
    "KernelFunction",
    "KernelPlugin",
    "KernelSettings",
    "NativeFunction",
    "Plan",
    "PlanError",
    "PlanExecutionError",
    "PlanRun",
    "PlanValidationError",
    "PluginError",
    "PluginLoadError",
    "PromptFunction",
    "ProviderError",
    "RecursionLimitError",
    "SandboxViolationError",
    "ScriptedChatModel",
    "ServiceError",
    "ServiceSettings",
    "TemplateError",
    "TemplateRenderError",
    "TextDelta",
    "ToolCall",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolChoice",
    "ToolLoopError",
    "ToolLoopSettings",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "hookimpl",
    "kernel_function",
]


# Where each public name lives. `import kernel` stays cheap: jinja2 (templates), pluggy
# (hooks), pydantic-settings (configuration) and structlog load when first needed.
_LOCATIONS: dict[str, str] = {
    "ApprovalDeniedError": "errors",
    "ArgumentError": "errors",
    "ChatHistory": "chat_history",
    "ChatMessage": "contents",
    "ChatRequest": "contents",
    "ChatResponse": "contents",
    "ChatResult": "tool_calls",
    "ConfigurationError": "errors",
    "DeadlineExceededError": "errors",
    "FinalMessage": "contents",
    "FunctionNotFoundError": "errors",
    "FunctionResult": "functions",
    "InputVariable": "prompt_function",
    "InvocationError": "errors",
    "Kernel": "kernel",
    "KernelArguments": "functions",
    "KernelError": "errors",
    "KernelFunction": "functions",
    "KernelPlugin": "functions",
    "KernelSettings": "settings",
    "NativeFunction": "functions",
    "Plan": "plan",
    "PlanError": "errors",
    "PlanExecutionError": "errors",
    "PlanRun": "planner",
    "PlanValidationError": "errors",
    "PluginError": "errors",
    "PluginLoadError": "errors",
    "PromptFunction": "prompt_function",
    "ProviderError": "errors",
    "RecursionLimitError": "errors",
    "SandboxViolationError": "errors",
    "ScriptedChatModel": "testing",
    "ServiceError": "errors",
    "ServiceSettings": "settings",
    "TemplateError": "errors",
    "TemplateRenderError": "errors",
    "TextDelta": "contents",
    "ToolCall": "contents",
    "ToolCallFinished": "contents",
    "ToolCallStarted": "contents",
    "ToolChoice": "contents",
    "ToolLoopError": "errors",
    "ToolLoopSettings": "settings",
    "ToolResult": "contents",
    "ToolSpec": "contents",
    "Usage": "contents",
    "hookimpl": "hookspecs",
    "kernel_function": "functions",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'kernel' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
