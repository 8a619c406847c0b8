"""MCP both ways: MCP servers as kernel plugins (the client), and the kernel as an MCP
server. Built on the official `mcp` SDK (the `[mcp]` extra), imported only when a server
starts or is served: `import kernel` never loads it.

    client      McpPlugin (one per server, its functions read lazily), McpClients, attach,
                add_server, start, close_kernel
    connection  McpConnection: start, listing, requests with deadlines, restarts, shutdown
    functions   McpToolFunction, McpPromptFunction, McpResourceFunction
    transport   the bounded stdio transport; streamable HTTP through the SDK
    runtime     the thread the client sessions live on
    server      build_server, select_functions: kernel functions as MCP tools and prompts
    serving     serve(kernel, functions, transport="stdio" | "http"), BearerAuth
    errors      McpError and its kinds
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .client import McpClients, McpPlugin, add_server, attach, clients, close_kernel, start
    from .connection import Listing, McpConnection, McpProgress
    from .errors import McpError, McpProtocolError, McpServerUnavailableError, McpTimeoutError, McpToolError
    from .functions import McpPromptFunction, McpResourceFunction, McpToolFunction
    from .server import build_server, select_functions
    from .serving import BearerAuth, serve

__all__ = [
    "BearerAuth",
    "Listing",
    "McpClients",
    "McpConnection",
    "McpError",
    "McpPlugin",
    "McpProgress",
    "McpPromptFunction",
    "McpProtocolError",
    "McpResourceFunction",
    "McpServerUnavailableError",
    "McpTimeoutError",
    "McpToolError",
    "McpToolFunction",
    "add_server",
    "attach",
    "build_server",
    "clients",
    "close_kernel",
    "select_functions",
    "serve",
    "start",
]

_LOCATIONS = {
    **dict.fromkeys(("McpClients", "McpPlugin", "add_server", "attach", "clients", "close_kernel", "start"), "client"),
    **dict.fromkeys(("Listing", "McpConnection", "McpProgress"), "connection"),
    **dict.fromkeys(("McpError", "McpProtocolError", "McpServerUnavailableError", "McpTimeoutError",
                     "McpToolError"), "errors"),
    **dict.fromkeys(("McpPromptFunction", "McpResourceFunction", "McpToolFunction"), "functions"),
    **dict.fromkeys(("BearerAuth", "serve"), "serving"),
    **dict.fromkeys(("build_server", "select_functions"), "server"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
