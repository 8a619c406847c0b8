"""The `kernel` command: the parser, built from `register_commands` hooks, and `main`.

Every command, built in or from a plugin, is added through the `register_commands` hook
(`kernel.hookspecs.RegisterCommand`): the built-in command groups are the modules in
`BUILTIN_COMMANDS`; third-party packages add theirs through the `orchestration_kernel`
entry points (loaded only when the command line names a command that is not built in, or
asks for the list). Every command takes the common options `--config FILE`, `--service
NAME`, `--plugins DIR` (repeatable), `--json` and `--debug`.

Exit codes: 0 ok; 1 runtime or kernel error; 2 bad usage or bad input (unknown function,
bad --arg); 3 configuration error (missing or invalid config file); 4 plugin folder
problems; 130 interrupted; 141 stdout closed by its reader (`kernel plugins list | head -2`:
the rest of the output is dropped, nothing is printed, as for a tool that SIGPIPE ended).
Errors are one line on stderr, `error: <message>`; the traceback only with --debug. Every
command's help shows its options' defaults and its exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    COMMON_DEFAULTS,
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PLUGINS,
    EXIT_USAGE,
    HelpFormatter,
    UsageError,
    common_parser,
    exit_codes,
)

if TYPE_CHECKING:
    from .._plugin_host import PluginHost
    from ..hookspecs import CommandHandler
    from ..kernel import Kernel
    from ..settings import KernelSettings

BUILTIN_COMMANDS: dict[str, tuple[str, ...]] = {
    "kernel.cli.plugins": ("plugins",),
    "kernel.cli.functions": ("render", "run"),
    "kernel.cli.config": ("config",),
    "kernel.cli.memory": ("memory",),
    "kernel.cli.chat": ("chat",),
    "kernel.cli.plan": ("plan",),
    "kernel.cli.prompt": ("prompt",),
    "kernel.cli.services": ("services",),
    "kernel.cli.mcp": ("mcp",),
    "kernel.cli.logs": ("logs",),
    "kernel.cli.serve": ("serve",),
    "kernel.cli.batch": ("batch",),
}
"""The modules of the built-in commands, and the commands each registers."""

_OPTIONS_WITH_VALUE = frozenset({"--config", "--service", "--plugins"})


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


_COMMON = common_parser()


class CommandParser(argparse.ArgumentParser):
    """The parser of a command and of its sub-commands: every one of them takes the common
    options, and an option a command declares again (say its own `--json`) replaces the
    common one instead of failing the whole CLI. Its help shows every option's default and,
    unless the command gives its own epilog, the exit codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("conflict_handler", "resolve")
        kwargs.setdefault("parents", [_COMMON])
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        kwargs.setdefault("epilog", exit_codes())
        super().__init__(*args, **kwargs)


class _Commands:
    """The `register` callback of `register_commands`: adds sub-parsers, refuses a name
    that is already taken (the first registration wins; built-ins come first)."""

    def __init__(self, subparsers: Any) -> None:
        self.subparsers = subparsers
        self.names: dict[str, str] = {}
        self.source = ""

    def add_from(self, host: PluginHost, plugin: object) -> None:
        """Run `plugin`'s `register_commands`, all or nothing: when it fails (a name that
        is taken, an error), the commands it added before failing are taken out again."""
        self.source = host.name_of(plugin)
        names, parsers = dict(self.names), dict(self.subparsers._name_parser_map)
        listed = len(self.subparsers._choices_actions)
        if not host.guard(self.source, partial(host.call, "register_commands", plugin, register=self)):
            self.names = names
            self.subparsers._name_parser_map.clear()  # in place: it is also the action's `choices`
            self.subparsers._name_parser_map.update(parsers)
            del self.subparsers._choices_actions[listed:]  # the lines of `kernel --help`

    def __call__(
        self,
        name: str,
        handler: CommandHandler | None,
        *,
        help: str,
        arguments: Callable[[argparse.ArgumentParser], object] | None = None,
        needs_kernel: bool = True,
        **parser_options: Any,
    ) -> argparse.ArgumentParser:
        if name in self.names:
            raise ValueError(f"command {name!r} is already registered by {self.names[name]}")
        parser_options.setdefault("description", help[:1].upper() + help[1:] + ("" if help.endswith(".") else "."))
        parser: argparse.ArgumentParser = self.subparsers.add_parser(name, help=help, **parser_options)
        self.names[name] = self.source
        if arguments is not None:
            arguments(parser)
        parser.set_defaults(handler=handler, needs_kernel=needs_kernel)
        if handler is None:
            parser.set_defaults(subparser=parser)
        return parser


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole parser. Third-party commands are collected only when `argv` names a
    command that is not built in (or none, for the help)."""
    parser = argparse.ArgumentParser(
        prog="kernel", parents=[_COMMON], formatter_class=HelpFormatter, epilog=exit_codes(),
        description="Plugin-based LLM orchestration kernel: inspect plugins, render and run functions.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    commands = _Commands(subparsers)
    host = _command_host(_first_command(argv), argv)
    for plugin in host.plugins():
        commands.add_from(host, plugin)
    for failure in host.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return parser


def _command_host(command: str | None, argv: Sequence[str]) -> PluginHost:
    from .._plugin_host import PluginHost

    host = PluginHost(strict=False)
    for module_name in BUILTIN_COMMANDS:
        host.add_module(module_name)
    builtin = {name for names in BUILTIN_COMMANDS.values() for name in names}
    if command in builtin:
        return host  # a built-in command: no entry point is loaded
    autoload, allowlist = _entry_point_settings(argv)
    if autoload:
        from ..hookspecs import ENTRY_POINT_GROUP

        host.add_entry_points(ENTRY_POINT_GROUP, allowlist)
    return host


def _entry_point_settings(argv: Sequence[str]) -> tuple[bool, str | None]:
    """`plugin_autoload` and `plugin_allowlist` with the precedence of `KernelSettings`
    (environment, then the configuration file), read without pydantic: `kernel --help`
    stays fast. A broken file is reported when a command runs, not here."""
    import os
    import tomllib

    values: dict[str, Any] = {}
    config = os.environ.get("KERNEL_CONFIG")
    for index, token in enumerate(argv):
        if token == "--config" and index + 1 < len(argv):
            config = argv[index + 1]
        elif token.startswith("--config="):
            config = token.split("=", 1)[1]
    path = Path(config) if config else Path("kernel.toml")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        values = {}
    autoload: Any = os.environ.get("KERNEL_PLUGIN_AUTOLOAD", values.get("plugin_autoload", True))
    if isinstance(autoload, str):
        autoload = autoload.strip().lower() not in ("0", "false", "no", "off", "")
    allowlist = os.environ.get("KERNEL_PLUGIN_ALLOWLIST", values.get("plugin_allowlist"))
    return bool(autoload), allowlist if isinstance(allowlist, str) else None


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


# --- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, configure: Callable[[Kernel], None] | None = None) -> int:
    """Run the CLI; returns the exit code. `configure` is called with the kernel before
    the command runs (applications and tests add services or plugins there)."""
    try:
        code = _main(list(sys.argv[1:] if argv is None else argv), configure)
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_stdout()
    return code


def _closed_stdout() -> int:
    """The reader of stdout went away (`| head`): stop quietly, as Python's documentation
    recommends, stdout pointed at devnull so that the final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (stdout replaced in a test)
        pass
    return EXIT_BROKEN_PIPE


def _main(argv: list[str], configure: Callable[[Kernel], None] | None) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    for option, default in COMMON_DEFAULTS.items():
        if not hasattr(args, option):
            setattr(args, option, default)
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "subparser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _execute(args, handler, configure)
    except KeyboardInterrupt:
        print(("\n" if _is_terminal(sys.stderr) else "") + "error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _closed_stdout()
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE, args.debug)
    except Exception as exc:
        return _fail_exception(exc, args.debug)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _execute(args: argparse.Namespace, handler: Any, configure: Callable[[Kernel], None] | None) -> int:
    from .. import logging as klog

    settings = load_settings(args)
    args.settings = settings
    klog.configure(settings.log.level, settings.log.format, deferred=True)
    kernel = None
    if getattr(args, "needs_kernel", True):
        from ..kernel import Kernel

        kernel = Kernel(settings=settings, journal=True)  # the journal: on unless `journal = false`
        for folder in args.plugins or ():
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
    from ..settings import KernelSettings

    overrides: dict[str, Any] = {}
    if args.service:
        overrides["default_chat"] = args.service
    settings = KernelSettings.load(args.config, **overrides)
    if args.debug:
        settings.log.level = "debug"
    return settings


def exit_code_for(exc: BaseException) -> int:
    from ..errors import (
        ArgumentError,
        ConfigurationError,
        FilterError,
        FunctionNotFoundError,
        PluginLoadError,
        ServiceNotFoundError,
    )

    if isinstance(exc, ConfigurationError | ServiceNotFoundError):  # both say what to configure
        return EXIT_CONFIG
    if isinstance(exc, FilterError | FunctionNotFoundError | ArgumentError):
        return EXIT_USAGE
    if isinstance(exc, PluginLoadError):
        return EXIT_PLUGINS
    return EXIT_ERROR


def _fail(message: str, code: int, debug: bool) -> int:
    from ..logging import mask_text

    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    print(f"error: {mask_text(message)}", file=sys.stderr)
    return code


def _fail_exception(exc: Exception, debug: bool) -> int:
    from ..errors import KernelError, PluginLoadError

    code = exit_code_for(exc)
    if isinstance(exc, PluginLoadError):
        head = f"{len(exc.problems)} problem(s) loading plugins" + (f" from {exc.root}" if exc.root else "")
        message = head + "".join(f"\n  {p}" for p in exc.problems)
    elif isinstance(exc, KernelError):
        message = " ".join(str(exc).split("\n"))
    else:
        message = f"internal error: {type(exc).__name__}: {exc}" + ("" if debug else " (run with --debug for details)")
    return _fail(message, code, debug)
