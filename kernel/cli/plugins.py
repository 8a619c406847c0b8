"""`kernel plugins list [DIR]` and `kernel plugins check DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_OK, EXIT_PLUGINS, describe_function, print_function, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel



@hookimpl
def register_commands(register: RegisterCommand) -> None:
    plugins = register("plugins", None, help="list or check plugins")
    actions = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    p = actions.add_parser("list", help="list functions with their parameters")
    p.add_argument("dir", nargs="?", metavar="DIR", help="only the plugins of this folder")
    p.set_defaults(handler=cmd_plugins_list, needs_kernel=True)
    p = actions.add_parser("check", help="check a plugin folder; exit 4 on problems")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(handler=cmd_plugins_check, needs_kernel=False)


async def cmd_plugins_list(args: argparse.Namespace, kernel: Kernel) -> int:
    if args.dir:
        from ..plugin_folders import load_plugins

        functions = [fn for plugin in load_plugins(Path(args.dir)) for fn in plugin]
    else:
        functions = kernel.functions()
    functions.sort(key=lambda f: f.fully_qualified_name)
    infos = [describe_function(fn) for fn in functions]
    if getattr(args, "json", False):
        print_json(infos)
        return EXIT_OK
    if not infos:
        print("no functions")
    for info in infos:
        print_function(info)
    return EXIT_OK


async def cmd_plugins_check(args: argparse.Namespace, kernel: Kernel | None) -> int:
    from ..errors import PluginLoadError
    from ..plugin_folders import load_plugins

    del kernel
    try:
        plugins = load_plugins(Path(args.dir))
    except PluginLoadError as exc:
        problems = exc.problems
    else:
        problems = []
        if not plugins:
            from ..errors import Problem

            problems = [Problem(str(args.dir), "no plugins found (no function files or plugin folders)")]
    as_json = getattr(args, "json", False)
    if problems:
        if as_json:
            print_json({"ok": False, "problems": [
                {"path": p.path, "line": p.line, "message": p.message} for p in problems
            ]})
        else:
            for problem in problems:
                print(problem)
            print(f"error: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return EXIT_PLUGINS
    count = sum(len(p) for p in plugins)
    if as_json:
        print_json({"ok": True, "plugins": len(plugins), "functions": count,
                     "names": sorted(fn.fully_qualified_name for p in plugins for fn in p)})
    else:
        print(f"ok: {count} functions in {len(plugins)} plugins")
    return EXIT_OK
