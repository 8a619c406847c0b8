"""The `kernel` command line: one module per command group, each registered through the
`register_commands` hook (third-party packages add commands the same way).

    app        the parser (from the hooks), `main`, exit codes and error reporting
    common     what every command shares: `--arg` parsing, common options, output helpers
    plugins    kernel plugins list | check
    functions  kernel render | run
    prompt     kernel prompt; kernel memory ask
    services   kernel services
    config     kernel config show | check
    mcp        kernel mcp list | serve
    memory     kernel memory ingest | search | collections
    chat       kernel chat
    plan       kernel plan
"""

from __future__ import annotations

from .app import build_parser, exit_code_for, main
from .common import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PLUGINS,
    EXIT_USAGE,
    UsageError,
    parse_arg,
    parse_args_list,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PLUGINS",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "exit_code_for",
    "main",
    "parse_arg",
    "parse_args_list",
]
