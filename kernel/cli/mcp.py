"""`kernel mcp`: MCP both ways.

`kernel mcp list [NAME...]` starts the configured MCP servers (`[mcp.servers.NAME]`) and
shows each one's state, tools, prompts and resources (`--no-start`: only what is known
without starting them). `kernel mcp serve` exposes kernel functions as an MCP server:
those of the plugin folders given with `--plugins` and those named with `--functions`
(never every standard plugin), over stdio or streamable HTTP (`--transport http`, on
loopback unless `--host` says otherwise, which then needs `--token-env`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, UsageError, exit_codes, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel

EPILOG_LIST = exit_codes({EXIT_USAGE: "an unknown server name", EXIT_CONFIG: "configuration error"})
EPILOG_SERVE = exit_codes({EXIT_USAGE: "nothing to serve, an unknown function, a bad option",
                           EXIT_CONFIG: "configuration error (a non-loopback --host without a token)"})


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    parser = register("mcp", None, help="MCP servers: list the configured ones, or serve kernel functions over MCP")
    actions = parser.add_subparsers(dest="mcp_command", metavar="ACTION")
    p = actions.add_parser("list", help="the configured MCP servers: state, tools, prompts, resources",
                           description="Start the configured MCP servers ([mcp.servers.NAME]) and show each "
                           "one's state, tools, prompts and resources.", epilog=EPILOG_LIST)
    p.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    p.add_argument("--no-start", action="store_true", help="do not start servers; show what is known")
    p.set_defaults(handler=cmd_list, needs_kernel=True)
    p = actions.add_parser("serve", help="serve kernel functions over MCP (stdio or streamable HTTP)",
                           description="Expose kernel functions as MCP tools (prompt functions also as MCP "
                           "prompts): the plugins of the folders given with --plugins and the functions "
                           "named with --functions. Functions that need approval are left out unless "
                           "--allow-needs-approval.", epilog=EPILOG_SERVE)
    p.add_argument("--functions", action="append", default=[], metavar="A.B,C.D",
                   help="functions to expose (plugin.function, or plugin for all of it); repeatable")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="how clients connect")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (0: any free port, printed on stderr)")
    p.add_argument("--path", default="/mcp", help="HTTP path of the MCP endpoint")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the bearer token HTTP "
                   "clients must send (required off loopback)")
    p.add_argument("--allow-needs-approval", action="store_true",
                   help="also expose functions marked needs_approval (the client is trusted to call them)")
    p.add_argument("--no-prompts", action="store_true", help="do not offer prompt functions as MCP prompts")
    p.add_argument("--collections", action="append", default=[], metavar="A,B",
                   help="memory collections to offer as resources (kernel-memory://NAME); repeatable")
    p.add_argument("--max-result-chars", type=int, default=None, help="cut longer results (default: the tool "
                   "loop's max_result_chars)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per call (default: the tool loop's "
                   "tool_timeout)")
    p.set_defaults(handler=cmd_serve, needs_kernel=True)


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


async def cmd_list(args: argparse.Namespace, kernel: Kernel) -> int:
    from .. import mcp

    plugins = dict(mcp.clients(kernel).plugins)
    unknown = [name for name in args.names if name not in plugins]
    if unknown:
        raise UsageError(f"no MCP server named {', '.join(map(repr, unknown))} "
                         f"(configured: {', '.join(sorted(plugins)) or 'none'})")
    chosen = {name: plugins[name] for name in (args.names or plugins)}
    if chosen and not args.no_start:
        await mcp.clients(kernel).start(chosen)
    rows = [_row(plugin) for plugin in chosen.values()]
    if getattr(args, "json", False):
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no MCP servers configured (add [mcp.servers.NAME] to kernel.toml)")
    for row in rows:
        print(f"{row['name']}  {row['state']}  {row['transport']}: {row['target']}"
              + (f"  ({row['server']})" if row.get("server") else ""))
        if row["error"]:
            print(f"  error: {row['error']}")
        for tool in row["tools"]:
            gated = "  [needs approval]" if tool["needs_approval"] else ""
            print(f"  {row['name']}.{tool['function']}{gated}  {_first_line(tool['description'])}")
        for prompt in row["prompts"]:
            print(f"  {row['name']}.{prompt['function']}  (prompt)  {_first_line(prompt['description'])}")
        if row["resources"]:
            print(f"  {row['name']}.list_resources, {row['name']}.read_resource  (resources)")
        for problem in row["problems"]:
            print(f"  note: {problem}")
    return EXIT_OK


def _first_line(text: str, limit: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _row(plugin: Any) -> dict[str, Any]:
    from ..mcp import McpPromptFunction, McpResourceFunction, McpToolFunction

    connection = plugin.connection
    functions = list(plugin.functions.values()) if connection.listing is not None else []
    return {
        "name": plugin.name,
        "transport": connection.transport,
        "target": connection.describe(),
        "state": connection.state,
        "error": connection.error,
        "server": connection.listing.server if connection.listing is not None else None,
        "starts": connection.starts,
        "tools": [{"function": fn.name, "tool": fn.remote_name, "description": fn.description,
                   "needs_approval": fn.needs_approval, "input_schema": fn.input_schema}
                  for fn in functions if isinstance(fn, McpToolFunction)],
        "prompts": [{"function": fn.name, "prompt": fn.remote_name, "description": fn.description,
                     "arguments": [p.name for p in fn.parameters]}
                    for fn in functions if isinstance(fn, McpPromptFunction)],
        "resources": any(isinstance(fn, McpResourceFunction) for fn in functions),
        "problems": list(plugin.problems),
    }


def _folder_plugins(kernel: Kernel, folders: list[str]) -> list[str]:
    """The plugins loaded from the `--plugins` folders."""
    roots = [Path(folder).resolve() for folder in folders]
    found = []
    for name, plugin in kernel.plugins.items():
        if not plugin.source or plugin.source.startswith("mcp:"):
            continue
        path = Path(plugin.source).resolve()
        if any(path == root or root in path.parents for root in roots):
            found.append(name)
    return found


async def cmd_serve(args: argparse.Namespace, kernel: Kernel) -> int:
    from .. import mcp

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise UsageError(f"--token-env {args.token_env}: the variable is not set")
    if args.port < 0 or args.port > 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    functions, held = mcp.select_functions(kernel, _split(args.functions), _folder_plugins(kernel, args.plugins or []),
                                           allow_needs_approval=args.allow_needs_approval)
    if held:
        print(f"note: not exposed, they need approval (--allow-needs-approval exposes them): {', '.join(held)}",
              file=sys.stderr)
    if not functions:
        raise UsageError("nothing to serve: give plugin folders with --plugins DIR or functions with "
                         "--functions plugin.function")

    def ready(where: str) -> None:
        if where != "stdio":
            print(f"serving MCP on {where} ({len(functions)} tools)", file=sys.stderr, flush=True)

    await mcp.serve(kernel, functions, transport=args.transport, host=args.host, port=args.port, path=args.path,
                    token=token, on_ready=ready, prompts=not args.no_prompts, collections=_split(args.collections),
                    allow_needs_approval=args.allow_needs_approval, max_result_chars=args.max_result_chars,
                    timeout=args.timeout)
    return EXIT_OK
