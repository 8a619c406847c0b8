"""What every command shares: exit codes, the usage error, `--arg name=value` and
`-o NAME=VALUE` parsing, the common options, the help format, reading stdin so that Ctrl-C
ends the wait at once, and output helpers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..functions import KernelFunction

__all__ = [
    "COMMON_DEFAULTS",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PLUGINS",
    "EXIT_USAGE",
    "HelpFormatter",
    "LineReader",
    "UsageError",
    "add_option_argument",
    "common_parser",
    "describe_function",
    "exit_codes",
    "parse_arg",
    "parse_args_list",
    "parse_option",
    "parse_options",
    "print_function",
    "print_json",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PLUGINS = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""stdout was closed by its reader (`kernel plugins list | head -2`): 128 + SIGPIPE, the
status a shell shows for a tool that SIGPIPE ended; nothing is printed."""

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_ERROR: "runtime or kernel error",
    EXIT_USAGE: "bad usage or bad input",
    EXIT_CONFIG: "configuration error",
    EXIT_PLUGINS: "plugin folder problems",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "stdout closed by its reader (... | head)",
}

COMMON_DEFAULTS: dict[str, Any] = {"config": None, "service": None, "plugins": None, "json": False, "debug": False}
"""The common options' values when not given (the parsers suppress their defaults, so that a
value given before the command is not overwritten by the sub-command's parser)."""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def exit_codes(specific: dict[int, str] | None = None) -> str:
    """The epilog of a command's help: its exit codes, the `specific` meanings (by code)
    replacing the general wording."""
    meanings = {**EXIT_CODES, **(specific or {})}
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in sorted(meanings.items()))


class HelpFormatter(argparse.HelpFormatter):
    """Every option shows its default (unless its help already says it); a description or
    epilog with line breaks is printed as written, one without is wrapped."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS or text is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional has no default
        default = action.default
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            shown = "on" if default else "off"
        elif default is None or default == []:
            shown = "none"
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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


def parse_option(text: str) -> tuple[str, Any]:
    """`-o NAME=VALUE`: an execution setting; the value is JSON when it parses (`200`,
    `0.2`, `true`, `["END"]`), else the string as given."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageError(f"bad -o/--option {text!r}: expected NAME=VALUE, e.g. -o max_tokens=200")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """The execution settings of repeated `-o NAME=VALUE` (the last of a name wins)."""
    return dict(parse_option(item) for item in items or ())


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """`-o/--option NAME=VALUE`, repeatable: execution settings of this call."""
    parser.add_argument(
        "-o", "--option", dest="options", action="append", metavar="NAME=VALUE",
        help="an execution setting for this call, over the service's and the function's: -o max_tokens=200 "
             "-o temperature=0.2 (JSON when it parses, else a string); repeatable (default: none)")


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts (defaults suppressed so that a value given before
    the command is not overwritten by the sub-parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="configuration file (default: $KERNEL_CONFIG or ./kernel.toml)")
    group.add_argument("--service", metavar="NAME", default=argparse.SUPPRESS,
                       help="chat service to use by default (default: default_chat of the configuration)")
    group.add_argument("--plugins", metavar="DIR", action="append", default=argparse.SUPPRESS,
                       help="load a plugin folder; repeatable (default: only plugin_dirs of the configuration)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="machine-readable output (default: text)")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging and tracebacks (default: off)")
    return common


def print_json(value: Any) -> None:
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
    return {
        "name": fn.fully_qualified_name,
        "plugin": fn.plugin_name,
        "function": fn.name,
        "kind": "prompt" if getattr(fn, "streams", False) else "native",
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


def print_function(info: dict[str, Any]) -> None:
    print(f"{info['name']}  ({info['kind']})" + (f"  {info['description']}" if info["description"] else ""))
    for p in info["parameters"]:
        state = "required" if p["required"] else f"default {json.dumps(p.get('default'), default=str)}"
        line = f"    {p['name']}: {p['type']}, {state}"
        if p["description"]:
            line += f"  {p['description']}"
        print(line)


# --- stdin ------------------------------------------------------------------------------


def _read_chunk(fd: int) -> Future[bytes]:
    """One `os.read` of `fd` in a daemon thread. Not the default executor: `asyncio.run`
    waits for that one at exit, so Ctrl-C at a prompt would wait for Enter."""
    import os
    import threading
    from concurrent.futures import Future

    future: Future[bytes] = Future()
    future.set_running_or_notify_cancel()  # cancelling the awaiting task leaves the read pending

    def work() -> None:
        try:
            future.set_result(os.read(fd, 65536))
        except BaseException as exc:  # handed to the awaiting task
            future.set_exception(exc)

    threading.Thread(target=work, name="kernel-stdin", daemon=True).start()
    return future


class LineReader:
    """Lines of stdin (a terminal or a pipe) for an async command: the wait ends at once on
    Ctrl-C, since the event loop, not a blocked read, has the main thread. A stream with no
    file descriptor (a test's StringIO) is read directly."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        import codecs

        encoding = getattr(stream, "encoding", None) or "utf-8"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._buffer = ""
        self._eof = False
        self._pending: Future[bytes] | None = None

    async def readline(self) -> str:
        """The next line with its newline; "" at end of input."""
        if self._fd is None:
            return self.stream.readline()
        while True:
            end = self._buffer.find("\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line
            if self._eof:
                line, self._buffer = self._buffer, ""
                return line
            await self._fill()

    async def read(self) -> str:
        """Everything up to the end of input."""
        if self._fd is None:
            return self.stream.read()
        while not self._eof:
            await self._fill()
        text, self._buffer = self._buffer, ""
        return text

    async def _fill(self) -> None:
        import asyncio

        assert self._fd is not None
        if self._pending is None:
            self._pending = _read_chunk(self._fd)
        chunk = await asyncio.wrap_future(self._pending)
        self._pending = None
        if chunk:
            self._buffer += self._decoder.decode(chunk)
        else:
            self._buffer += self._decoder.decode(b"", final=True)
            self._eof = True
