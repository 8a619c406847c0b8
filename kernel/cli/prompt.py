"""`kernel prompt "TEXT"`: an ad-hoc prompt to the chat model, the answer streamed to stdout
(as simonw/llm's `llm "TEXT"`); and the answering half of `kernel memory ask`.

    kernel prompt "Ten names for a pet pelican"
    cat notes.md | kernel prompt "Summarize these notes" -s "Answer in French" -o max_tokens=200
    kernel prompt - < question.txt

The text is sent as it is, as the user message (it is not a template: `{{ }}` stays text);
`-s/--system` adds a system message. Input piped into stdin comes first and TEXT is
appended to it on a new line; with no TEXT (or `-`) stdin is the whole prompt, read up to
its end (Ctrl-D on a terminal). No tools are offered. `--service NAME` picks the chat
service (default: `default_chat`), `-o NAME=VALUE` sets execution settings of the call.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    LineReader,
    UsageError,
    add_option_argument,
    exit_codes,
    parse_options,
    print_json,
)

if TYPE_CHECKING:
    from ..contents import ChatMessage, Usage
    from ..kernel import Kernel

ASK_INSTRUCTIONS = (
    "Answer the question using only the numbered sources below. Cite every source you use by its number in "
    "brackets, like [1]. If the sources do not answer the question, say so.\n\nSources:\n\n"
)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("prompt", cmd_prompt, arguments=_arguments,
             help="send a prompt to the chat model and stream its answer (stdin as input)",
             description=__doc__.split("\n\n", 1)[1],
             epilog=exit_codes({EXIT_ERROR: "a model error",
                                EXIT_USAGE: "an empty prompt, bad -o",
                                EXIT_CONFIG: "configuration error (unknown service, missing key)"}))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", metavar="TEXT",
                        help="the prompt; '-' or none: read it from stdin; piped stdin comes before TEXT "
                             "(default: stdin)")
    parser.add_argument("--system", "-s", metavar="TEXT", help="a system message (default: none)")
    add_option_argument(parser)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


async def read_prompt(text: str | None) -> str:
    """TEXT, stdin, or piped stdin then TEXT on a new line (as llm joins them)."""
    stdin = sys.stdin
    piped = stdin is not None and not _is_terminal(stdin)
    if text is None or text == "-":
        if stdin is None:
            raise UsageError("no prompt: give TEXT, or pipe the prompt into stdin")
        if not piped:
            print("(reading the prompt from stdin: end it with Ctrl-D)", file=sys.stderr, flush=True)
        return await LineReader(stdin).read()
    if piped:
        head = (await LineReader(stdin).read()).rstrip("\n")
        if head.strip():
            return f"{head}\n{text}"
    return text


async def stream_answer(kernel: Kernel, messages: list[ChatMessage], settings: dict[str, Any],
                        as_json: bool) -> tuple[str, Usage]:
    """One model turn, no tools, streamed to stdout as it comes (unless `as_json`)."""
    from ..contents import FinalMessage, TextDelta, Usage

    text, usage = "", Usage()
    async for event in kernel.chat_stream(messages, tools=[], settings=settings or None):
        if isinstance(event, TextDelta) and not as_json:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, FinalMessage):
            text, usage = event.message.content, event.usage
    if not as_json:
        sys.stdout.write("" if text.endswith("\n") else "\n")
        sys.stdout.flush()
    return text, usage


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "requests": usage.requests}


async def cmd_prompt(args: argparse.Namespace, kernel: Kernel) -> int:
    from ..contents import ChatMessage

    settings = parse_options(args.options)
    text = await read_prompt(args.text)
    if not text.strip():
        raise UsageError("empty prompt: give TEXT, or pipe the prompt into stdin")
    messages = ([ChatMessage.system(args.system)] if args.system else []) + [ChatMessage.user(text)]
    as_json = bool(getattr(args, "json", False))
    answer, usage = await stream_answer(kernel, messages, settings, as_json)
    if as_json:
        print_json({"service": kernel.services.default_name("chat"), "text": answer, "usage": _usage(usage)})
    return EXIT_OK


async def memory_ask(args: argparse.Namespace, kernel: Kernel) -> int:
    """`kernel memory ask`: the best passages of the collection, then the model's answer
    from them with numbered citations, then the numbered sources."""
    from ..contents import ChatMessage
    from ..memory import SemanticMemory, format_hits, parse_expressions, reference
    from .memory import check_collection

    settings = parse_options(args.options)
    flt = parse_expressions(args.filter)
    store = kernel.services.memory(getattr(args, "store", None))
    await check_collection(store, args.collection)
    memory = SemanticMemory(kernel.services.embedding(getattr(args, "embedding", None)), store)
    hits = await memory.search(args.question, args.collection, args.k, flt, args.mode)
    if not hits:
        print(f"error: no passage of {args.collection!r} matches the question: nothing to answer from",
              file=sys.stderr)
        return EXIT_ERROR
    messages = [ChatMessage.system(ASK_INSTRUCTIONS + format_hits(hits)), ChatMessage.user(args.question)]
    as_json = bool(getattr(args, "json", False))
    answer, usage = await stream_answer(kernel, messages, settings, as_json)
    sources = [{"number": i, "reference": reference(hit), "score": hit.score, "id": hit.record.id}
               for i, hit in enumerate(hits, 1)]
    if as_json:
        print_json({"question": args.question, "collection": args.collection, "answer": answer,
                    "sources": sources, "usage": _usage(usage)})
        return EXIT_OK
    print("\nSources:")
    for source in sources:
        print(f"  [{source['number']}] {source['reference']}")
    return EXIT_OK
