"""Chat: the one automatic function-calling loop (the same for every provider, streaming
or not) and chat history.

    tool_loop   run_chat / stream_chat, ChatResult: the loop and its rules
    tools       which functions are offered, their specs, safe result and error texts
    history     ChatHistory: a conversation with token-budget trimming
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .history import ChatHistory
    from .tool_loop import ChatResult, ToolCallRecord, run_chat, stream_chat
    from .tools import result_text, select_functions, short_error, tool_spec

__all__ = [
    "ChatHistory",
    "ChatResult",
    "ToolCallRecord",
    "result_text",
    "run_chat",
    "select_functions",
    "short_error",
    "stream_chat",
    "tool_spec",
]

_LOCATIONS = {
    "ChatHistory": "history",
    **dict.fromkeys(("ChatResult", "ToolCallRecord", "run_chat", "stream_chat"), "tool_loop"),
    **dict.fromkeys(("result_text", "select_functions", "short_error", "tool_spec"), "tools"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
