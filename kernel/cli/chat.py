"""`kernel chat`: an interactive chat with the loaded plugins as tools.

Reads one turn per line from stdin (interactive or piped), streams the answer to stdout
and reports each tool call on stderr as `[tool] plugin.function(args) -> result`. Ends on
EOF or `/exit`. A failed turn prints `error: ...` on stderr, is dropped from the history,
and the session goes on; the exit code is then 1.

Functions that need approval are asked about on the terminal when stdin is one;
with piped input they are refused (the safe default).

`--continue [RUN]` (`-c`) goes on with a conversation from the journal (`kernel logs`): the
latest chat turn, or the chat run RUN, as its last model call saw it plus the answer (secrets
in it are masked, as everything journaled).

Stdin is read by a `LineReader`, so Ctrl-C at the prompt ends the session at once (exit
130), as it does while the model answers. `-o NAME=VALUE` sets execution settings of every
turn (`-o max_tokens=200 -o temperature=0.2`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..chat import ChatHistory
from ..contents import FinalMessage, TextDelta, ToolCall, ToolCallFinished
from ..errors import KernelError
from ..functions import KernelFunction
from ..hookspecs import RegisterCommand, hookimpl
from ..logging import mask_text
from .common import EXIT_CONFIG, EXIT_ERROR, EXIT_USAGE, LineReader, add_option_argument, exit_codes, parse_options

if TYPE_CHECKING:
    from ..kernel import Kernel

PREVIEW_CHARS = 200
EXIT_COMMANDS = frozenset({"/exit", "/quit"})


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("chat", cmd_chat, arguments=_arguments, help="chat with a model, the loaded plugins offered as tools",
             description="Interactive chat: one turn per stdin line; /exit, EOF (Ctrl-D) or Ctrl-C ends it.",
             epilog=exit_codes({EXIT_ERROR: "a turn failed (the session went on), or no chat to --continue",
                                EXIT_USAGE: "unknown --plugin, bad -o",
                                EXIT_CONFIG: "configuration error (unknown service, missing key)"}))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", "-s", metavar="TEXT", help="system message of the conversation (default: none)")
    parser.add_argument("--plugin", metavar="NAME", action="append", dest="tool_plugins",
                        help="offer only this plugin's functions as tools (repeatable; default: all)")
    parser.add_argument("--no-tools", action="store_true", help="offer no tools")
    parser.add_argument("--max-history-tokens", type=int, metavar="N", default=None,
                        help="trim the oldest turns to keep the history under about N tokens (default: no trim)")
    parser.add_argument("--continue", "-c", dest="continue_run", nargs="?", const="last", metavar="RUN",
                        help="continue a chat from the journal: the latest one, or the chat run RUN "
                             "(default: a new conversation)")
    add_option_argument(parser)


def _continued(args: argparse.Namespace) -> ChatHistory:
    """`--continue [RUN]`: the journaled conversation (with --system, its system message
    replaced)."""
    from ..contents import ChatMessage
    from ..events import JournalStoreError, open_reader

    try:
        with open_reader(args.settings) as reader:
            run_id, messages = reader.conversation(args.continue_run)
    except JournalStoreError as exc:
        raise LookupError(str(exc)) from None
    history = ChatHistory(ChatMessage.from_dict(m) for m in messages)
    if args.system is not None:
        history.messages = [m for m in history.messages if m.role != "system"]
        history.messages.insert(0, ChatMessage.system(args.system))
    print(f"continuing chat run {run_id} ({len(history.messages)} messages)", file=sys.stderr, flush=True)
    return history


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _qualified(kernel: Kernel, name: str) -> str:
    try:
        return kernel.get_function(name).fully_qualified_name
    except KernelError:
        return name


def _terminal_approval(stdin: LineReader, stderr: TextIO) -> Any:
    async def approve(function: KernelFunction, arguments: dict[str, Any], call: ToolCall) -> bool:
        shown = _preview(json.dumps(arguments, default=str, ensure_ascii=False))
        print(f"[approve] run {function.fully_qualified_name}({shown})? [y/N] ", end="", file=stderr, flush=True)
        answer = await stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    return approve


async def cmd_chat(args: argparse.Namespace, kernel: Kernel) -> int:
    stdin, stdout, stderr = sys.stdin, sys.stdout, sys.stderr
    options: dict[str, Any] = {"tools": []} if args.no_tools else {"plugins": args.tool_plugins}
    settings = parse_options(args.options)
    if settings:
        options["settings"] = settings
    from ..chat import select_functions

    select_functions(kernel, options.get("tools"), options.get("plugins"))  # unknown plugin: exit 2 now
    interactive = stdin.isatty()
    lines = LineReader(stdin)
    if interactive and kernel.approval is None:
        options["approval"] = _terminal_approval(lines, stderr)
    as_json = bool(getattr(args, "json", False))
    if args.continue_run:
        try:
            history = _continued(args)
        except LookupError as exc:
            print(f"error: cannot continue: {exc}", file=stderr, flush=True)
            return EXIT_ERROR
    else:
        history = ChatHistory(system=args.system)
    failed = False
    while True:
        if interactive:
            print("> ", end="", file=stderr, flush=True)
        line = await lines.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            break
        if args.max_history_tokens:
            history.trim(args.max_history_tokens)
        user = history.add_user(text)
        try:
            await _turn(kernel, history, options, as_json, stdout, stderr)
        except KernelError as exc:
            print(f"error: {mask_text(str(exc))}", file=stderr, flush=True)
            if history.messages and history.messages[-1] is user:
                history.messages.pop()
            failed = True
    return 1 if failed else 0


async def _turn(kernel: Kernel, history: ChatHistory, options: dict[str, Any], as_json: bool,
                stdout: TextIO, stderr: TextIO) -> None:
    calls: list[dict[str, Any]] = []
    async for event in kernel.chat_stream(history, **options):
        if isinstance(event, TextDelta):
            if not as_json:
                stdout.write(event.text)
                stdout.flush()
        elif isinstance(event, ToolCallFinished):
            name = _qualified(kernel, event.call.name)
            print(f"[tool] {name}({_preview(event.call.arguments)}) -> {_preview(event.result.content)}",
                  file=stderr, flush=True)
            calls.append({"function": name, "arguments": event.call.arguments,
                          "result": event.result.content, "is_error": event.result.is_error})
        elif isinstance(event, FinalMessage):
            if as_json:
                usage = event.usage
                record = {
                    "text": event.message.content,
                    "tool_calls": calls,
                    "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                              "requests": usage.requests},
                }
                stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                stdout.write("\n")
            stdout.flush()
