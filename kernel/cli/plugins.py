"""`kernel plugins list [DIR]` and `kernel plugins check DIR`.

`plugins check` is safe on a folder you do not trust yet: it imports no `*.py` module of
the folder (importing runs the module's code) unless `--import-modules` is given; it
parses each one and reports it as a module it would import, with the kernel functions
its source declares. `plugins list DIR` loads the folder, importing its modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_OK, EXIT_PLUGINS, describe_function, print_function, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..plugin_folders import ModuleInfo


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    plugins = register("plugins", None, help="list or check plugins")
    actions = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    list_help = ("list functions with their parameters (with DIR: imports the folder's *.py modules, "
                 "which runs their code; check a folder you do not trust with 'plugins check' first)")
    p = actions.add_parser("list", help=list_help, description=list_help[0].upper() + list_help[1:] + ".")
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help="only the plugins of this folder (its Python modules are imported: their code runs)")
    p.set_defaults(handler=cmd_plugins_list, needs_kernel=True)
    check_help = "check a plugin folder without running its code; exit 4 on problems"
    p = actions.add_parser("check", help=check_help, description=(
        "Check a plugin folder without running its code: *.py modules are parsed, not imported (each is "
        "reported with the kernel functions its source declares), unless --import-modules is given. "
        "Exit 4 on problems."))
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--import-modules", action="store_true", default=False,
                   help="also import the folder's *.py modules (runs their code) and check their functions; "
                        "without it they are only parsed, and listed as modules not imported")
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


def _module_note(module: ModuleInfo) -> str:
    found = (f"kernel functions in its source: {', '.join(module.functions)}" if module.functions
             else "no kernel functions found in its source")
    return (f"note: {module.path}: Python module not imported ({found}); "
            "pass --import-modules to import it (runs its code) and check its functions")


async def cmd_plugins_check(args: argparse.Namespace, kernel: Kernel | None) -> int:
    from ..errors import Problem
    from ..plugin_folders import check_plugins

    del kernel
    found = check_plugins(Path(args.dir), import_modules=getattr(args, "import_modules", False))
    problems = found.problems
    if not problems and not found.plugins:
        problems = [Problem(str(args.dir), "no plugins found (no function files or plugin folders)")]
    as_json = getattr(args, "json", False)
    modules = [m.to_dict() for m in found.modules]
    if not as_json:
        for module in found.not_imported:
            print(_module_note(module), file=sys.stderr)
    if problems:
        if as_json:
            print_json({"ok": False, "problems": [
                {"path": p.path, "line": p.line, "message": p.message} for p in problems
            ], "modules": modules})
        else:
            for problem in problems:
                print(problem)
            print(f"error: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return EXIT_PLUGINS
    names = found.function_names
    if as_json:
        print_json({"ok": True, "plugins": len(found.plugins), "functions": len(names), "names": names,
                    "modules": modules})
    else:
        print(f"ok: {len(names)} functions in {len(found.plugins)} plugins")
    return EXIT_OK
