"""`kernel render PLUGIN.FUNCTION` (the chat messages, no model call) and `kernel run
PLUGIN.FUNCTION` (invoke and print the result)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_OK, UsageError, parse_args_list, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel



def _function_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="PLUGIN.FUNCTION")
    parser.add_argument("--arg", "-a", dest="args", action="append", metavar="NAME=VALUE",
                        help="an argument: name=value (string) or name:=JSON (typed); repeatable")


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("render", cmd_render, arguments=_function_arguments,
             help="print the chat messages a prompt function would send (no model call)")
    register("run", cmd_run, arguments=_function_arguments, help="invoke a function and print its result")


async def cmd_render(args: argparse.Namespace, kernel: Kernel) -> int:
    from ..prompts import PromptFunction

    arguments = parse_args_list(args.args)
    fn = kernel.get_function(args.function)
    if not isinstance(fn, PromptFunction):
        raise UsageError(f"{fn.fully_qualified_name} is a native function; only prompt functions render "
                         f"(use 'kernel run')")
    messages = await kernel.render(fn, arguments)
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

    arguments = parse_args_list(args.args)
    fn = kernel.get_function(args.function)
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
