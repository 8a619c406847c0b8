"""`kernel batch`: a function, or a plan, over every record of a file.

    kernel batch writer.summarize --input articles.jsonl --output summaries.jsonl --map text=body
    kernel batch --plan plan.json --input inputs.csv --output runs.jsonl --executor ray --address auto

Each record's fields are the function's arguments (a plan's inputs), `--map ARG=FIELD`
renaming; each record is validated and run on its own, and its result written to OUTPUT
as one JSON line `{"id", "key", "result"}` (the id: the record's `id` field, else its
line number), in input order or, with `--order completed`, as they finish. A record that
fails goes to `OUTPUT.errors.jsonl` (`OUT.errors.jsonl` beside `OUT.jsonl`) and the run
goes on, unless `--fail-fast`. Running the same command again resumes: records already in
OUTPUT (same id, same function and arguments) are skipped, so a killed run loses nothing
and repeats nothing that completed. A progress bar (rate, ETA, tokens, cost) goes to
stderr when it is a terminal; the summary (done, failed, skipped, tokens, cost, time) to
stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError, exit_codes

if TYPE_CHECKING:
    from ..kernel import Kernel


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("batch", handle_batch, arguments=_arguments,
             help="run a function or a plan over every record of a .jsonl, .csv or .parquet file (resumable)",
             description=__doc__,
             epilog=exit_codes({EXIT_ERROR: "some records failed (see OUTPUT.errors.jsonl), or --fail-fast stopped",
                                EXIT_USAGE: "unknown function, bad --map, unreadable input or plan file",
                                EXIT_CONFIG: "configuration error (unknown executor, ray not installed, "
                                             "unreachable cluster)"}))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", nargs="?", metavar="FUNCTION", help="plugin.function to run (or --plan)")
    parser.add_argument("--input", "-i", dest="input", required=True, metavar="FILE",
                        help="the records: .jsonl (one JSON object a line), .csv (with a header) or .parquet")
    parser.add_argument("--output", dest="output", required=True, metavar="FILE",
                        help="results, one JSON line per record; also what a re-run resumes from")
    parser.add_argument("--plan", metavar="FILE", help="run this plan (JSON) for each record, its inputs from the "
                        "record (default: FUNCTION)")
    parser.add_argument("--map", dest="mapping", action="append", default=[], metavar="ARG=FIELD",
                        help="the argument ARG takes the record's FIELD; repeatable (default: same names)")
    parser.add_argument("--id-field", default="id", metavar="NAME",
                        help="the field holding a record's id (absent: the record's line number)")
    parser.add_argument("--order", choices=["input", "completed"], default="input",
                        help="write results in input order, or as they complete")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed record")
    parser.add_argument("--executor", choices=["asyncio", "ray"], default=None,
                        help="where records run: in this process, or on Ray (default: [batch] executor, "
                             "else asyncio)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster: auto, ray://HOST:10001, HOST:6379 (default: [batch] address, "
                             "$RAY_ADDRESS, else a local cluster for the run)")
    parser.add_argument("--working-dir", metavar="DIR",
                        help="a folder Ray ships to every worker (runtime_env working_dir); plugin folders inside "
                             "it are found there (default: none, paths are shared)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="records at once: in this process (default 16), or in each Ray task (default 8); "
                             "each service's calls stay within its max_concurrency")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="N",
                        help="records per Ray task (default 64)")
    parser.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                        help="Ray tasks submitted at once: the backpressure (default: twice the cluster's CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _mapping(items: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items:
        name, sep, field = item.partition("=")
        if not sep or not name.strip() or not field.strip():
            raise UsageError(f"--map takes ARG=FIELD, not {item!r}")
        if name.strip() in mapping:
            raise UsageError(f"--map {name.strip()} given twice")
        mapping[name.strip()] = field.strip()
    return mapping


def _target(args: argparse.Namespace, kernel: Kernel) -> Any:
    from ..errors import PlanValidationError
    from ..planning import Plan

    if args.plan is None:
        if not args.function:
            raise UsageError("kernel batch: give a FUNCTION (plugin.function), or --plan FILE")
        return kernel.get_function(args.function)
    if args.function:
        raise UsageError("kernel batch: give a FUNCTION or --plan FILE, not both")
    path = Path(args.plan)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read plan file {path}: {exc.strerror or exc}") from None
    try:
        return Plan.from_json(text)
    except PlanValidationError as exc:
        raise UsageError(f"invalid plan in {path}: " + "; ".join(exc.problems)) from None


async def handle_batch(args: argparse.Namespace, kernel: Kernel) -> int:
    from ..batch import FORMATS, run_batch, summary_line
    from ..errors import PlanValidationError

    source = Path(args.input)
    if source.suffix.lower() not in FORMATS:
        raise UsageError(f"--input {source}: use a {', '.join(FORMATS)} file")
    if not source.is_file():
        raise UsageError(f"no such input file: {source}")
    for option in ("concurrency", "chunk_size", "max_in_flight"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be at least 1, not {value}")
    target = _target(args, kernel)
    ray_options: dict[str, Any] = {}
    if args.working_dir:
        ray_options["runtime_env"] = {"working_dir": str(Path(args.working_dir).resolve())}
    try:
        report = await run_batch(
            kernel, target, source, output=args.output, executor=args.executor, address=args.address,
            mapping=_mapping(args.mapping), id_field=args.id_field, order=args.order, fail_fast=args.fail_fast,
            concurrency=args.concurrency, chunk_size=args.chunk_size, max_in_flight=args.max_in_flight,
            progress=not args.no_progress, plugin_dirs=args.plugins or (), ray_options=ray_options,
        )
    except PlanValidationError as exc:
        raise UsageError(f"invalid plan: {'; '.join(exc.problems)}") from None
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(summary_line(report))
    if report.failed:
        print(f"{report.failed} record(s) failed: see {report.errors_file}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_ERROR
