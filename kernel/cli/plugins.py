"""`kernel plugins list [DIR]` and `kernel plugins check DIR`.

`plugins check` is safe on a folder you do not trust yet: it imports no `*.py` module of
the folder (importing runs the module's code) unless `--import-modules` is given; it
parses each one and reports it as a module it would import, with the kernel functions
its source declares. `plugins list DIR` loads the folder, importing its modules.

`plugins check` says, per function, `loads`, `loads with warnings` (what Semantic Kernel
loads while ignoring it: unknown config keys, free-form input types; a setting no
configured provider takes; a call to a plugin it does not know) or `fails`, each problem
at file:line; then a summary. Templates are checked against the folder's own functions
and the standard plugins. Warnings alone exit 0; an error exits 4. With nothing to
report, one line: `ok: N functions in M plugins`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_OK, EXIT_PLUGINS, describe_function, print_function, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..plugin_folders import Known, ModuleInfo


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
    check_help = "check a plugin folder without running its code; exit 4 on errors (warnings alone exit 0)"
    p = actions.add_parser("check", help=check_help, description=(
        "Check a plugin folder without running its code: *.py modules are parsed, not imported (each is "
        "reported with the kernel functions its source declares), unless --import-modules is given. "
        "Each function is reported as 'loads', 'loads with warnings' or 'fails', with every problem at "
        "file:line; templates are checked against the folder's functions and the standard plugins, execution "
        "settings against the configured chat services. Exit 4 on errors; warnings alone exit 0."))
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--import-modules", action="store_true", default=False,
                   help="also import the folder's *.py modules (runs their code) and check their functions; "
                        "without it they are only parsed, and listed as modules not imported")
    p.set_defaults(handler=cmd_plugins_check, needs_kernel=False)


async def cmd_plugins_list(args: argparse.Namespace, kernel: Kernel) -> int:
    if args.dir:  # all or nothing, as a listing of what the folder holds (`plugins check` says why)
        from ..plugin_folders import load_plugins, parse_cache_of

        # the kernel's parse cache: files that did not change since they were last listed are not parsed again
        cache = parse_cache_of(kernel.settings)
        functions = [fn for plugin in load_plugins(Path(args.dir), cache=cache) for fn in plugin]
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
    found = check_plugins(Path(args.dir), import_modules=getattr(args, "import_modules", False),
                          known=_known(args))
    problems, other = found.problems, found.other_problems
    if not found.errors and not found.plugins:
        missing = Problem(str(args.dir), "no plugins found (no function files or plugin folders)")
        problems, other = [*problems, missing], [*other, missing]
    errors = [p for p in problems if p.severity == "error"]
    as_json = getattr(args, "json", False)
    names = found.function_names
    if as_json:
        print_json({"ok": not errors, "plugins": len(found.plugins), "functions": len(names), "names": names,
                    "problems": [p.to_dict() for p in problems],
                    "checks": [check.to_dict() for check in found.functions],
                    "modules": [m.to_dict() for m in found.modules]})
        return EXIT_PLUGINS if errors else EXIT_OK
    for module in found.not_imported:
        print(_module_note(module), file=sys.stderr)
    if not problems:
        print(f"ok: {len(names)} functions in {len(found.plugins)} plugins")
        return EXIT_OK
    for problem in other:
        print(problem)
    for check in found.functions:
        print(f"{check.name}: {check.status}")
        for problem in check.problems:
            print(f"  {problem}")
    counts = Counter(check.status for check in found.functions)
    summary = ", ".join(f"{counts[status]} {label}" for status, label in _STATUSES
                        if counts[status] or status == "loads")
    warnings = len(problems) - len(errors)
    if not errors:
        print(f"ok: {len(names)} functions in {len(found.plugins)} plugins ({summary}; {warnings} warning(s))")
        return EXIT_OK
    if found.functions:
        print(f"{len(found.functions)} functions in {len(found.plugins)} plugins: {summary}")
    also = f" and {warnings} warning(s)" if warnings else ""
    print(f"error: {len(errors)} problem(s){also} in {args.dir}", file=sys.stderr)
    return EXIT_PLUGINS


_STATUSES = (("loads", "load"), ("loads with warnings", "load with warnings"), ("fails", "fail"),
             ("not imported", "not imported"))


def _known(args: argparse.Namespace) -> Known | None:
    """What the folder is checked against: the standard plugins, and the setting names the
    configured chat services take, from a kernel built with the configuration but no entry
    points and no plugin folders (nothing of the folder, and no third-party code, runs)."""
    from ..plugin_folders import Known

    settings = getattr(args, "settings", None)
    if settings is None:
        return None
    try:
        from ..kernel import Kernel

        kernel = Kernel(settings=settings.model_copy(update={"plugin_dirs": []}), load_entry_points=False)
    except Exception:  # the configuration is reported by the commands that use it
        return None
    scope = "this folder or the standard plugins" if settings.standard_plugins else "this folder"
    return Known.of(kernel, complete=True, settings=True, scope=scope)
