"""`kernel render PLUGIN.FUNCTION` (the chat messages, no model call) and `kernel run
PLUGIN.FUNCTION` (invoke and print the result).

`render` calls no model: a prompt function the template calls (`{{ writer.summarize(text) }}`)
renders as the placeholder `[writer.summarize(text="...")]`, through a function filter that
stands in for every prompt function invoked while rendering (also one that native code
called by the template invokes through the kernel). Native functions the template calls
still run: they are code, not model calls (`memory.recall` embeds its query). `--execute`
runs the nested prompt functions, calling their models.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PLUGINS,
    EXIT_USAGE,
    UsageError,
    add_option_argument,
    exit_codes,
    parse_args_list,
    parse_options,
    print_json,
)

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..middleware import FunctionContext, Next

PLACEHOLDER_VALUE_CHARS = 40
"""How much of each argument a placeholder shows."""

_EXIT_CODES = {
    EXIT_ERROR: "the function failed (a model or tool error)",
    EXIT_USAGE: "unknown function, bad --arg or -o",
    EXIT_CONFIG: "configuration error (unknown service, missing key)",
    EXIT_PLUGINS: "a plugin folder has problems",
}


def _function_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="PLUGIN.FUNCTION", help="the function, e.g. writer.summarize")
    parser.add_argument("--arg", "-a", dest="args", action="append", metavar="NAME=VALUE",
                        help="an argument: name=value (string) or name:=JSON (typed); repeatable "
                             "(default: the function's defaults)")


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    _function_arguments(parser)
    parser.add_argument("--execute", action="store_true",
                        help="run the prompt functions the template calls (calls their models); without it "
                             "they render as placeholders such as [writer.summarize(text=\"...\")] (default: off)")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _function_arguments(parser)
    add_option_argument(parser)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("render", cmd_render, arguments=_render_arguments,
             help="print the chat messages a prompt function would send (no model call)",
             description="Print the chat messages a prompt function would send. No model is called: prompt "
                         "functions the template calls render as placeholders (--execute runs them); native "
                         "functions it calls run.",
             epilog=exit_codes({**_EXIT_CODES, EXIT_USAGE: "unknown function, bad --arg, a native function",
                                EXIT_ERROR: "the template failed to render"}))
    register("run", cmd_run, arguments=_run_arguments, help="invoke a function and print its result",
             epilog=exit_codes(_EXIT_CODES))


def placeholder(name: str, arguments: dict[str, Any]) -> str:
    """`[writer.summarize(text="Once upon a ti...")]`: a prompt function not run."""
    shown = []
    for key, value in arguments.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > PLACEHOLDER_VALUE_CHARS:
            text = text[: PLACEHOLDER_VALUE_CHARS - 3] + "..."
        shown.append(f"{key}={text}")
    return f"[{name}({', '.join(shown)})]"


async def stand_in_for_prompts(context: FunctionContext, next: Next) -> None:
    """A function filter: a prompt function's result is its placeholder, its model is not
    called; other functions run."""
    from ..functions import FunctionResult
    from ..prompts import PromptFunction

    fn = context.function
    if isinstance(fn, PromptFunction):
        context.result = FunctionResult(fn.fully_qualified_name, placeholder(fn.fully_qualified_name,
                                                                             context.arguments))
        return
    await next(context)


async def cmd_render(args: argparse.Namespace, kernel: Kernel) -> int:
    from ..errors import TemplateRenderError
    from ..prompts import PromptFunction

    arguments = parse_args_list(args.args)
    fn = kernel.get_function(args.function)
    if not isinstance(fn, PromptFunction):
        raise UsageError(f"{fn.fully_qualified_name} is a native function; only prompt functions render "
                         f"(use 'kernel run')")
    if not args.execute:
        kernel.add_filter("function", stand_in_for_prompts)
    try:
        messages = await kernel.render(fn, arguments)
    except TemplateRenderError as exc:
        if args.execute or not fn.template.functions_used:
            raise
        raise TemplateRenderError(f"{exc} (the prompt functions it calls rendered as placeholders; "
                                  "--execute runs them)") from None
    if getattr(args, "json", False):
        print_json([{"role": m.role, "content": m.content} for m in messages])
        return EXIT_OK
    for index, message in enumerate(messages):
        if index:
            print()
        print(f"[{message.role}]")
        print(message.content)
    return EXIT_OK


async def cmd_run(args: argparse.Namespace, kernel: Kernel) -> int:
    from dataclasses import asdict

    from ..functions import KernelArguments
    from ..prompts import PromptFunction

    arguments = parse_args_list(args.args)
    settings = parse_options(args.options)
    fn = kernel.get_function(args.function)
    if settings:
        if not isinstance(fn, PromptFunction):
            raise UsageError(f"-o sets execution settings of a prompt function; {fn.fully_qualified_name} is a "
                             "native function")
        arguments = KernelArguments(arguments, settings=settings)
    result = await kernel.invoke(fn, arguments)
    if getattr(args, "json", False):
        usage = asdict(result.usage)
        usage["total_tokens"] = result.usage.total_tokens
        print_json({"function": result.function, "value": result.value, "usage": usage, "cost": result.cost})
        return EXIT_OK
    value = result.value
    if value is None:
        return EXIT_OK
    if isinstance(value, dict | list):
        print_json(value)
    else:
        print(value)
    return EXIT_OK
