"""orchestration-kernel: a small, fast, safe plugin-based LLM orchestration kernel.

Importing this package loads no provider SDK, and no template engine, configuration or
logging library either: every public name below is imported from its module when first
used. The layout (centre and wings, and what may import what) is in ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _compat
from ._exports import lazy_exports as _lazy_exports

if TYPE_CHECKING:  # the real imports, for type checkers; at run time names load on first use
    from ._plugin_host import PluginFailure
    from .chat import ChatHistory, ChatResult
    from .contents import (
        ChatMessage,
        ChatRequest,
        ChatResponse,
        FinalMessage,
        KernelStreamEvent,
        StreamEnd,
        StreamEvent,
        TextDelta,
        ToolCall,
        ToolCallDelta,
        ToolCallFinished,
        ToolCallStarted,
        ToolChoice,
        ToolResult,
        ToolSpec,
        Usage,
        UsageEvent,
    )
    from .errors import (
        ApprovalDeniedError,
        ArgumentError,
        BudgetExceededError,
        CircuitOpenError,
        ConfigurationError,
        DeadlineExceededError,
        DuplicateNameError,
        ExtraNotInstalledError,
        FilterError,
        FunctionNotFoundError,
        FunctionTimeoutError,
        InvocationError,
        KernelError,
        MemoryStoreError,
        MissingSecretError,
        PlanError,
        PlanExecutionError,
        PlanValidationError,
        PluginError,
        PluginLoadError,
        Problem,
        ProviderConnectionError,
        ProviderError,
        ProviderStatusError,
        ProviderTimeoutError,
        RecursionLimitError,
        SandboxViolationError,
        ServiceError,
        ServiceNotFoundError,
        TemplateError,
        TemplateRenderError,
        TemplateSyntaxError,
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
    from .hookspecs import ChatModel, ConnectorFactory, EmbeddingModel, VectorStore, hookimpl
    from .kernel import Kernel
    from .memory import MemoryRecord, SearchHit, SemanticMemory
    from .middleware import FunctionContext, PromptContext, ToolCallContext
    from .planning import Plan, PlanRun
    from .prompts import InputVariable, PromptFunction, trusted
    from .settings import KernelSettings, RetrySettings, ServiceSettings, ToolLoopSettings
    from .testing import ScriptedChatModel, error_reply, json_reply, tool_call, tool_calls

__all__ = [
    "ApprovalDeniedError",
    "ArgumentError",
    "BudgetExceededError",
    "ChatHistory",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "ChatResult",
    "CircuitOpenError",
    "ConfigurationError",
    "ConnectorFactory",
    "DeadlineExceededError",
    "DuplicateNameError",
    "EmbeddingModel",
    "ExtraNotInstalledError",
    "FilterError",
    "FinalMessage",
    "FunctionContext",
    "FunctionNotFoundError",
    "FunctionResult",
    "FunctionTimeoutError",
    "InputVariable",
    "InvocationError",
    "Kernel",
    "KernelArguments",
    "KernelError",
    "KernelFunction",
    "KernelPlugin",
    "KernelSettings",
    "KernelStreamEvent",
    "MemoryRecord",
    "MemoryStoreError",
    "MissingSecretError",
    "NativeFunction",
    "Plan",
    "PlanError",
    "PlanExecutionError",
    "PlanRun",
    "PlanValidationError",
    "PluginError",
    "PluginFailure",
    "PluginLoadError",
    "Problem",
    "PromptContext",
    "PromptFunction",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "RecursionLimitError",
    "RetrySettings",
    "SandboxViolationError",
    "ScriptedChatModel",
    "SearchHit",
    "SemanticMemory",
    "ServiceError",
    "ServiceNotFoundError",
    "ServiceSettings",
    "StreamEnd",
    "StreamEvent",
    "TemplateError",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "TextDelta",
    "ToolCall",
    "ToolCallContext",
    "ToolCallDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolChoice",
    "ToolLoopError",
    "ToolLoopSettings",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "UsageEvent",
    "VectorStore",
    "error_reply",
    "hookimpl",
    "json_reply",
    "kernel_function",
    "tool_call",
    "tool_calls",
    "trusted",
]

_LOCATIONS: dict[str, str] = {  # where each public name lives
    "PluginFailure": "_plugin_host",
    **dict.fromkeys(("ChatHistory", "ChatResult"), "chat"),
    **dict.fromkeys((
        "ChatMessage", "ChatRequest", "ChatResponse", "FinalMessage", "KernelStreamEvent", "StreamEnd", "StreamEvent",
        "TextDelta", "ToolCall", "ToolCallDelta", "ToolCallFinished", "ToolCallStarted", "ToolChoice", "ToolResult",
        "ToolSpec", "Usage", "UsageEvent",
    ), "contents"),
    **dict.fromkeys((
        "ApprovalDeniedError", "ArgumentError", "BudgetExceededError", "CircuitOpenError", "ConfigurationError",
        "DeadlineExceededError", "DuplicateNameError", "ExtraNotInstalledError", "FilterError",
        "FunctionNotFoundError", "FunctionTimeoutError", "InvocationError",
        "KernelError", "MemoryStoreError", "MissingSecretError", "PlanError", "PlanExecutionError",
        "PlanValidationError", "PluginError", "PluginLoadError", "Problem", "ProviderConnectionError",
        "ProviderError", "ProviderStatusError", "ProviderTimeoutError", "RecursionLimitError",
        "SandboxViolationError", "ServiceError", "ServiceNotFoundError", "TemplateError", "TemplateRenderError",
        "TemplateSyntaxError", "ToolLoopError",
    ), "errors"),
    **dict.fromkeys((
        "FunctionResult", "KernelArguments", "KernelFunction", "KernelPlugin", "NativeFunction", "kernel_function",
    ), "functions"),
    **dict.fromkeys(("ChatModel", "ConnectorFactory", "EmbeddingModel", "VectorStore", "hookimpl"), "hookspecs"),
    "Kernel": "kernel",
    **dict.fromkeys(("MemoryRecord", "SearchHit", "SemanticMemory"), "memory"),
    **dict.fromkeys(("FunctionContext", "PromptContext", "ToolCallContext"), "middleware"),
    **dict.fromkeys(("Plan", "PlanRun"), "planning"),
    **dict.fromkeys(("InputVariable", "PromptFunction", "trusted"), "prompts"),
    **dict.fromkeys(("KernelSettings", "RetrySettings", "ServiceSettings", "ToolLoopSettings"), "settings"),
    **dict.fromkeys(("ScriptedChatModel", "error_reply", "json_reply", "tool_call", "tool_calls"), "testing"),
}
__getattr__, __dir__ = _lazy_exports(__name__, _LOCATIONS, globals())
_compat.install()
