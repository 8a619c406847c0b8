"""`kernel plan`: ask for a plan, show it, save it, replay it, run it.

    kernel plan "GOAL" [--input NAME=VALUE ...] [--plugin NAME ...] [-o NAME=VALUE ...] [--save FILE] [--json]
    kernel plan --from FILE [--input NAME=VALUE ...] [--run [--yes]]
    kernel plan --resume RUN [--retry-in-flight] [--yes]

`--input name:=JSON` gives a typed value. `-o NAME=VALUE` sets execution settings of the
planning request (`-o max_tokens=800`). `--run` asks `Run this plan? [y/N]` on the
terminal unless `--yes`; without a terminal and without `--yes` it refuses (exit 1).
`--from FILE` replays a saved (or hand-edited) plan without asking a model. `--resume RUN`
continues a journaled plan run that crashed, was killed or failed (`kernel logs` lists
runs): the steps it completed are not run again; a step that was running when it
stopped runs again only if its function is idempotent (else exit 1 naming it, unless
`--retry-in-flight`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PlanExecutionError, PlanValidationError
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
    parse_arg,
    parse_options,
)

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..planning import Plan


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("plan", handle_plan, arguments=_arguments,
             help="turn a goal into a plan of function calls; show, save or run it",
             description=__doc__,
             epilog=exit_codes({EXIT_ERROR: "the plan failed, or was not confirmed",
                                EXIT_USAGE: "bad --input or -o, unreadable or invalid plan file, unknown plugin",
                                EXIT_CONFIG: "configuration error (unknown service, missing key)"}))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("goal", nargs="?", metavar="GOAL", help="what the plan should achieve")
    parser.add_argument("--input", "-i", dest="inputs", action="append", metavar="NAME=VALUE",
                        help="a goal input (NAME:=JSON for a typed value); repeatable (default: none)")
    parser.add_argument("--plugin", dest="plan_plugins", action="append", metavar="NAME",
                        help="only plan with the functions of this plugin; repeatable (default: all plugins)")
    parser.add_argument("--run", action="store_true", help="run the plan after confirmation")
    parser.add_argument("--yes", "-y", action="store_true", help="run without asking for confirmation")
    parser.add_argument("--save", metavar="FILE", help="write the plan as JSON to FILE (default: not saved)")
    parser.add_argument("--from", dest="from_file", metavar="FILE",
                        help="load a plan from FILE instead of asking a model (default: ask the model)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue the journaled plan run RUN (an id, a prefix or 'last'); asks like --run")
    parser.add_argument("--retry-in-flight", action="store_true",
                        help="with --resume: run again a non-idempotent step that was running when RUN stopped")
    parser.add_argument("--max-steps", type=int, default=10, metavar="N", help="at most N steps")
    parser.add_argument("--max-repairs", type=int, default=2, metavar="N",
                        help="repair requests for an invalid plan")
    add_option_argument(parser)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _print_problems(where: str, problems: list[str]) -> None:
    _err(f"error: invalid plan {where}: {len(problems)} problem(s)")
    for problem in problems:
        _err(f"  - {problem}")


def _parse_inputs(items: list[str] | None) -> dict[str, Any]:

    inputs: dict[str, Any] = {}
    for item in items or ():
        try:
            name, value = parse_arg(item)
        except UsageError as exc:
            raise UsageError(str(exc).replace("--arg", "--input")) from None
        if name in inputs:
            raise UsageError(f"--input {name} given twice")
        inputs[name] = value
    return inputs


async def _confirmed() -> bool | None:
    """True/False from the terminal; None when there is no terminal to ask. Ctrl-C at the
    question ends the command at once."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        return None
    print("Run this plan? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = (await LineReader(stdin).readline()).strip().lower()
    return answer in ("y", "yes")


def _show_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def _load(args: argparse.Namespace, kernel: Kernel, inputs: dict[str, Any]) -> Plan | int:
    from ..planning import Plan

    if args.from_file:
        if args.options:
            raise UsageError("-o sets execution settings of the planning request; --from FILE asks no model")
        path = Path(args.from_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read plan file {path}: {exc.strerror or exc}") from None
        try:
            plan = Plan.from_json(text).with_inputs(inputs)
        except PlanValidationError as exc:
            _print_problems(f"in {path}", exc.problems)
            return EXIT_USAGE
        problems = plan.problems(kernel, max_steps=args.max_steps, input_names=plan.inputs.keys())
        if problems:
            _print_problems(f"in {path}", problems)
            return EXIT_USAGE
        if args.goal and args.goal != plan.goal:
            _err(f"note: running the plan saved for {plan.goal!r}, not the GOAL given")
        return plan
    if not args.goal:
        raise UsageError("kernel plan: give a GOAL, or --from FILE to replay a saved plan")
    settings = parse_options(args.options)
    return await kernel.plan(args.goal, inputs=inputs, plugins=args.plan_plugins,
                             max_steps=args.max_steps, max_repairs=args.max_repairs, settings=settings or None)


async def handle_plan(args: argparse.Namespace, kernel: Kernel) -> int:
    as_json = bool(getattr(args, "json", False))
    if args.resume:
        return await _resume(args, kernel, as_json)
    inputs = _parse_inputs(args.inputs)
    loaded = await _load(args, kernel, inputs)
    if isinstance(loaded, int):
        return loaded
    plan = loaded
    if args.save:
        Path(args.save).write_text(plan.to_json() + "\n", encoding="utf-8")
        _err(f"plan saved to {args.save}")
    if not args.run:
        print(plan.to_json() if as_json else str(plan))
        return EXIT_OK
    if not as_json:
        print(str(plan))
    if not args.yes:
        answer = await _confirmed()
        if answer is None:
            _err("error: refusing to run the plan without confirmation: stdin is not a terminal "
                 "(pass --yes to run it)")
            return EXIT_ERROR
        if not answer:
            _err("plan not run")
            return EXIT_ERROR
    return await _execute(kernel, plan, as_json)


async def _resume(args: argparse.Namespace, kernel: Kernel, as_json: bool) -> int:
    """`--resume RUN`: the journaled plan, what it did, confirmation, then the rest of it."""
    from ..events import load_plan_state
    from ..planning import Plan

    if args.goal or args.from_file or args.inputs or args.options:
        raise UsageError("--resume RUN continues a journaled run: no GOAL, --from, --input or -o with it")
    try:
        state = await load_plan_state(kernel, args.resume)
        plan = Plan.from_dict(state.plan)
    except (LookupError, PlanValidationError) as exc:
        _err(f"error: cannot resume {args.resume!r}: {exc}")
        return EXIT_ERROR
    if not as_json:
        print(str(plan))
    done = ", ".join(state.outputs) or "none"
    _err(f"resuming run {state.run_id} ({state.status}): done: {done}"
         + (f"; running when it stopped: {', '.join(state.in_flight)}" if state.in_flight else "")
         + (f"; failed: {', '.join(state.failed)}" if state.failed else ""))
    if not args.yes:
        answer = await _confirmed()
        if answer is None:
            _err("error: refusing to resume the plan without confirmation: stdin is not a terminal "
                 "(pass --yes to resume it)")
            return EXIT_ERROR
        if not answer:
            _err("plan not resumed")
            return EXIT_ERROR
    return await _execute(kernel, plan, as_json, resume=state.run_id, retry_in_flight=args.retry_in_flight)


async def _execute(kernel: Kernel, plan: Plan, as_json: bool, **options: Any) -> int:
    from ..planning import execute_plan

    try:
        run = await execute_plan(kernel, plan, **options)
    except PlanExecutionError as exc:
        previous = getattr(exc, "run", None)
        if as_json and previous is not None:
            print(json.dumps({"plan": plan.to_dict(), "run": previous.to_dict()}, indent=2,
                             ensure_ascii=False, default=str))
        elif previous is not None:
            for step_id, status in previous.status.items():
                detail = previous.errors.get(step_id)
                _err(f"  {step_id}: {status}" + (f" ({detail})" if detail else ""))
        _err(f"error: {' '.join(str(exc).split())}")
        return EXIT_ERROR
    if as_json:
        print(json.dumps({"plan": plan.to_dict(), "run": run.to_dict()}, indent=2, ensure_ascii=False, default=str))
    else:
        print("Result:")
        print(_show_value(run.result))
    return EXIT_OK
