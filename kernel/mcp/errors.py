"""The errors of MCP servers and calls: each a kernel error (the tool loop turns it into an
`error: ...` result for the model; an application catches it by name)."""

from __future__ import annotations

from ..errors import FunctionTimeoutError, InvocationError

__all__ = ["McpError", "McpProtocolError", "McpServerUnavailableError", "McpTimeoutError", "McpToolError"]


class McpError(InvocationError):
    """An MCP server or a call to one failed; the message names the server."""


class McpServerUnavailableError(McpError):
    """The server could not be started, or exited (crashed) before answering."""


class McpTimeoutError(McpError, FunctionTimeoutError):
    """The server did not answer within the request's deadline (`timeout`, `startup_timeout`)."""


class McpProtocolError(McpError):
    """The server answered with a JSON-RPC error, or with something that is not valid MCP."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class McpToolError(McpError):
    """The tool ran and reported a failure (`isError: true`); the message is the tool's text."""
