"""The `kernel` command.

    kernel plugins list [DIR]            functions, parameters, types, defaults
    kernel plugins check DIR             validate a plugin folder (exit 4 on problems)
    kernel render PLUGIN.FUNCTION --arg name=value ...   the chat messages, no model call
    kernel run PLUGIN.FUNCTION --arg name=value ...      invoke and print the result
    kernel config show                   the effective configuration, secrets masked
    kernel memory|chat|plan ...          from kernel/cli_memory.py, cli_chat.py, cli_plan.py

Every command takes `--config FILE`, `--service NAME` (the default chat service),
`--plugins DIR` (repeatable), `--json` and `--debug`.

`--arg name=value` passes a string; `--arg name:=JSON` passes a typed value
(`count:=3`, `flag:=true`, `tags:='["a","b"]'`, `text:='"quoted"'`). Strings are still
coerced to a parameter's type where that is lossless (`--arg n=3` for an int parameter).

Exit codes: 0 ok; 1 runtime or kernel error; 2 bad usage or bad input (unknown function,
bad --arg); 3 configuration error (missing or invalid config file); 4 plugin folder
problems; 130 interrupted. Errors are one line on stderr, `error: <message>`; the
traceback only with --debug.

A command module exposes `register(subparsers, parents)`, adds its parsers with
`subparsers.add_parser(NAME, parents=parents, help=...)` and sets
`handler=async def HANDLER(args, kernel) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .functions import KernelFunction
    from .kernel import Kernel
    from .settings import KernelSettings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PLUGINS = 4
EXIT_INTERRUPTED = 130

COMMAND_MODULES: dict[str, dict[str, str]] = {
    "kernel.cli_memory": {"memory": "vector memory: ingest, search, collections"},
    "kernel.cli_chat": {"chat": "chat with a model, the loaded plugins offered as tools"},
    "kernel.cli_plan": {"plan": "turn a goal into a plan of function calls; show, save or run it"},
}
"""Optional command modules, their commands and one-line help. A module is imported only
when its command runs; `kernel --help` lists the commands without importing anything."""

_OPTIONS_WITH_VALUE = frozenset({"--config", "--service", "--plugins"})
_OWN_COMMANDS = frozenset({"plugins", "render", "run", "config"})


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


# --- arguments ------------------------------------------------------------------------


def parse_arg(text: str) -> tuple[str, Any]:
    """`name=value` (a string) or `name:=JSON` (a typed value)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"bad --arg {text!r}: expected name=value or name:=JSON")
    typed = name.endswith(":")
    if typed:
        name = name[:-1]
    if not name.isidentifier():
        raise UsageError(f"bad --arg {text!r}: {name!r} is not a parameter name")
    if not typed:
        return name, value
    try:
        return name, json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"bad --arg {text!r}: the value after ':=' is not JSON ({exc.msg})") from None


def parse_args_list(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, value = parse_arg(item)
        if name in out:
            raise UsageError(f"--arg {name} given twice")
        out[name] = value
    return out


# --- the parser -----------------------------------------------------------------------


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts (defaults suppressed so that a value given before
    the command is not overwritten by the sub-parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="configuration file (default: $KERNEL_CONFIG or ./kernel.toml)")
    group.add_argument("--service", metavar="NAME", default=argparse.SUPPRESS,
                       help="chat service to use by default (overrides default_chat)")
    group.add_argument("--plugins", metavar="DIR", action="append", default=argparse.SUPPRESS,
                       help="load a plugin folder (repeatable)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging and tracebacks")
    return common


class _VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        try:
            from importlib.metadata import version

            text = version("orchestration-kernel")
        except Exception:
            text = "unknown"
        print(f"kernel {text}")
        parser.exit()


class _CommandParser(argparse.ArgumentParser):
    """Sub-command parser: an option a command module declares again (say its own
    `--json`) replaces the common one instead of failing the whole CLI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    common = common_parser()
    parents = [common]
    parser = argparse.ArgumentParser(
        prog="kernel", parents=parents,
        description="Plugin-based LLM orchestration kernel: inspect plugins, render and run functions.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    plugins = subparsers.add_parser("plugins", parents=parents, help="list or check plugins")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    plugins.set_defaults(handler=None, subparser=plugins)
    p = plugins_sub.add_parser("list", parents=parents, help="list functions with their parameters")
    p.add_argument("dir", nargs="?", metavar="DIR", help="only the plugins of this folder")
    p.set_defaults(handler=cmd_plugins_list)
    p = plugins_sub.add_parser("check", parents=parents, help="check a plugin folder; exit 4 on problems")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(handler=cmd_plugins_check, needs_kernel=False)

    for name, handler, help_text in (
        ("render", cmd_render, "print the chat messages a prompt function would send (no model call)"),
        ("run", cmd_run, "invoke a function and print its result"),
    ):
        p = subparsers.add_parser(name, parents=parents, help=help_text)
        p.add_argument("function", metavar="PLUGIN.FUNCTION")
        p.add_argument("--arg", "-a", dest="args", action="append", metavar="NAME=VALUE",
                       help="an argument: name=value (string) or name:=JSON (typed); repeatable")
        p.set_defaults(handler=handler)

    config = subparsers.add_parser("config", parents=parents, help="configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config.set_defaults(handler=None, subparser=config)
    p = config_sub.add_parser("show", parents=parents, help="the effective configuration, secrets masked")
    p.set_defaults(handler=cmd_config_show, needs_kernel=False)

    command = _first_command(argv)
    for module_name, commands in COMMAND_MODULES.items():
        if command in commands:
            _register_module(module_name, subparsers, parents)
        elif command not in _OWN_COMMANDS and importlib.util.find_spec(module_name) is not None:
            for name, help_text in commands.items():  # listed in the help, imported when used
                subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _first_command(argv: Sequence[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--":
            return None
        if token.startswith("-"):
            skip = token in _OPTIONS_WITH_VALUE
            continue
        return token
    return None


def _register_module(module_name: str, subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            return  # not installed / not written yet: the command is simply absent
        raise
    try:
        module.register(subparsers, parents)
    except Exception as exc:  # one broken command module must not take the whole CLI down
        print(f"warning: {module_name} could not register its commands: {type(exc).__name__}: {exc}",
              file=sys.stderr)


# --- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, configure: Callable[[Kernel], None] | None = None) -> int:
    """Run the CLI; returns the exit code. `configure` is called with the kernel before
    the command runs (applications and tests add services or plugins there)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "subparser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _execute(args, handler, configure)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE, debug)
    except Exception as exc:
        return _fail_exception(exc, debug)


def _execute(args: argparse.Namespace, handler: Any, configure: Callable[[Kernel], None] | None) -> int:
    settings = load_settings(args)
    args.settings = settings
    kernel = None
    if getattr(args, "needs_kernel", True):
        from .kernel import Kernel

        kernel = Kernel(settings=settings)
        for folder in getattr(args, "plugins", None) or ():
            kernel.add_plugin(Path(folder))
        if configure is not None:
            configure(kernel)
    import asyncio

    return asyncio.run(_run_handler(handler, args, kernel))


async def _run_handler(handler: Any, args: argparse.Namespace, kernel: Kernel | None) -> int:
    try:
        code = await handler(args, kernel)
    finally:
        if kernel is not None:
            await kernel.aclose()
    return int(code or 0)


def load_settings(args: argparse.Namespace) -> KernelSettings:
    from .settings import KernelSettings

    overrides: dict[str, Any] = {}
    service = getattr(args, "service", None)
    if service:
        overrides["default_chat"] = service
    settings = KernelSettings.load(getattr(args, "config", None), **overrides)
    if getattr(args, "debug", False):
        settings.log.level = "debug"
    return settings


def exit_code_for(exc: BaseException) -> int:
    from .errors import (
        ArgumentError,
        ConfigurationError,
        FilterError,
        FunctionNotFoundError,
        KernelError,
        PluginLoadError,
        ServiceNotFoundError,
    )

    if isinstance(exc, ConfigurationError | ServiceNotFoundError):  # both say what to configure
        return EXIT_CONFIG
    if isinstance(exc, FilterError):
        return EXIT_USAGE
    if isinstance(exc, PluginLoadError):
        return EXIT_PLUGINS
    if isinstance(exc, FunctionNotFoundError | ArgumentError):
        return EXIT_USAGE
    if isinstance(exc, KernelError):
        return EXIT_ERROR
    return EXIT_ERROR


def _fail(message: str, code: int, debug: bool) -> int:
    from .logging import mask_text

    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    print(f"error: {mask_text(message)}", file=sys.stderr)
    return code


def _fail_exception(exc: Exception, debug: bool) -> int:
    from .errors import KernelError, PluginLoadError

    code = exit_code_for(exc)
    if isinstance(exc, PluginLoadError):
        head = f"{len(exc.problems)} problem(s) loading plugins" + (f" from {exc.root}" if exc.root else "")
        message = head + "".join(f"\n  {p}" for p in exc.problems)
    elif isinstance(exc, KernelError):
        message = " ".join(str(exc).split("\n"))
    else:
        message = f"internal error: {type(exc).__name__}: {exc}" + ("" if debug else " (run with --debug for details)")
    return _fail(message, code, debug)


# --- output helpers --------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _json_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        if kind == "array" and isinstance(schema.get("items"), dict):
            return f"array[{_json_type(schema['items'])}]"
        return kind
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        return " | ".join(_json_type(o) for o in options if isinstance(o, dict))
    if "enum" in schema:
        return "enum"
    return "any"


def describe_function(fn: KernelFunction) -> dict[str, Any]:
    from .prompt_function import PromptFunction

    return {
        "name": fn.fully_qualified_name,
        "plugin": fn.plugin_name,
        "function": fn.name,
        "kind": "prompt" if isinstance(fn, PromptFunction) else "native",
        "description": fn.description,
        "parameters": [
            {
                "name": p.name,
                "type": _json_type(p.schema),
                "required": p.required,
                **({} if p.required else {"default": p.default}),
                "description": p.description,
                "schema": p.schema,
            }
            for p in fn.parameters
        ],
    }


def _print_function(info: dict[str, Any]) -> None:
    print(f"{info['name']}  ({info['kind']})" + (f"  {info['description']}" if info["description"] else ""))
    for p in info["parameters"]:
        state = "required" if p["required"] else f"default {json.dumps(p.get('default'), default=str)}"
        line = f"    {p['name']}: {p['type']}, {state}"
        if p["description"]:
            line += f"  {p['description']}"
        print(line)


# --- commands ---------------------------------------------------------------------------


async def cmd_plugins_list(args: argparse.Namespace, kernel: Kernel) -> int:
    if args.dir:
        from .loader import load_plugins

        functions = [fn for plugin in load_plugins(Path(args.dir)) for fn in plugin]
    else:
        functions = kernel.functions()
    functions.sort(key=lambda f: f.fully_qualified_name)
    infos = [describe_function(fn) for fn in functions]
    if getattr(args, "json", False):
        _print_json(infos)
        return EXIT_OK
    if not infos:
        print("no functions")
    for info in infos:
        _print_function(info)
    return EXIT_OK


async def cmd_plugins_check(args: argparse.Namespace, kernel: Kernel | None) -> int:
    from .errors import PluginLoadError
    from .loader import load_plugins

    del kernel
    try:
        plugins = load_plugins(Path(args.dir))
    except PluginLoadError as exc:
        problems = exc.problems
    else:
        problems = []
        if not plugins:
            from .errors import Problem

            problems = [Problem(str(args.dir), "no plugins found (no function files or plugin folders)")]
    as_json = getattr(args, "json", False)
    if problems:
        if as_json:
            _print_json({"ok": False, "problems": [
                {"path": p.path, "line": p.line, "message": p.message} for p in problems
            ]})
        else:
            for problem in problems:
                print(problem)
            print(f"error: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return EXIT_PLUGINS
    count = sum(len(p) for p in plugins)
    if as_json:
        _print_json({"ok": True, "plugins": len(plugins), "functions": count,
                     "names": sorted(fn.fully_qualified_name for p in plugins for fn in p)})
    else:
        print(f"ok: {count} functions in {len(plugins)} plugins")
    return EXIT_OK


async def cmd_render(args: argparse.Namespace, kernel: Kernel) -> int:
    from .prompt_function import PromptFunction

    arguments = parse_args_list(args.args)
    fn = kernel.get_function(args.function)
    if not isinstance(fn, PromptFunction):
        raise UsageError(f"{fn.fully_qualified_name} is a native function; only prompt functions render "
                         f"(use 'kernel run')")
    messages = await kernel.render(fn, arguments)
    if getattr(args, "json", False):
        _print_json([{"role": m.role, "content": m.content} for m in messages])
        return EXIT_OK
    for index, message in enumerate(messages):
        if index:
            print()
        print(f"[{message.role}]")
        print(message.content)
    return EXIT_OK


async def cmd_run(args: argparse.Namespace, kernel: Kernel) -> int:
    from dataclasses import asdict

    arguments = parse_args_list(args.args)
    fn = kernel.get_function(args.function)
    result = await kernel.invoke(fn, arguments)
    if getattr(args, "json", False):
        usage = asdict(result.usage)
        usage["total_tokens"] = result.usage.total_tokens
        _print_json({"function": result.function, "value": result.value, "usage": usage, "cost": result.cost})
        return EXIT_OK
    value = result.value
    if value is None:
        return EXIT_OK
    if isinstance(value, dict | list):
        _print_json(value)
    else:
        print(value)
    return EXIT_OK


async def cmd_config_show(args: argparse.Namespace, kernel: Kernel | None) -> int:
    del kernel
    data = mask_config(args.settings.masked())
    if getattr(args, "json", False):
        _print_json(data)
    else:
        print(to_toml(data), end="")
    return EXIT_OK


# --- configuration display ----------------------------------------------------------------

MASK = "**********"


def mask_config(value: Any, key: str = "") -> Any:
    """Mask secret-looking keys and secret-shaped values (belt and braces over SecretStr)."""
    from .logging import is_secret_key, mask_text

    if isinstance(value, dict):
        return {k: mask_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_config(v, key) for v in value]
    if value is not None and is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text of plain data (None values are left out: TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict) and value:
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        scalars = {k: v for k, v in value.items() if not (isinstance(v, dict) and v)}
        nested = {k: v for k, v in value.items() if isinstance(v, dict) and v}
        if scalars or not nested:
            out += f"\n[{name}]\n" + to_toml(scalars, name)
        if nested:
            out += to_toml(nested, name)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
