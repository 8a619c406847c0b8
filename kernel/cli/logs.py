"""`kernel logs`: the journal of runs (`kernel.events`): list, show one, stats.

    kernel logs [list] [-n N] [--function NAME] [--service NAME] [--since 2h] [--status error] [-q TEXT]

(`--service NAME`, the common option, selects the runs that called the chat service NAME.)
    kernel logs show [RUN]          the whole tree of a run (default: the latest); RUN: an id or a prefix
    kernel logs stats [--by service|function|day] [--since 7d]

The journal is on by default for the `kernel` command (`journal = false` turns it off),
in `journal_path` (default `.kernel/journal.db`) or the PostgreSQL of `journal_dsn`.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError, exit_codes, print_json

if TYPE_CHECKING:
    from ..events import JournalReader
    from ..kernel import Kernel

_EXIT_CODES = {EXIT_ERROR: "no such run, no journal yet (show), or a journal that cannot be read",
               EXIT_USAGE: "bad --since or --by", EXIT_CONFIG: "configuration error"}
_SHOWN = 400  # characters of one content line in the tree (everything with --json)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    logs = register("logs", cmd_list, help="the journal of runs: list them, show one as a tree, usage stats",
                    needs_kernel=False, description=__doc__, epilog=exit_codes(_EXIT_CODES),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    _list_options(logs)
    sub = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    listing = sub.add_parser("list", help="recent runs: function, service, model, tokens, cost, duration, status",
                             description="Recent runs, the latest first.", epilog=exit_codes(_EXIT_CODES))
    _list_options(listing)
    listing.set_defaults(handler=cmd_list, needs_kernel=False)
    show = sub.add_parser("show", help="one run as a tree: messages, tool calls, plan steps",
                          description="One run as a tree of its events (messages, tool calls, plan steps, "
                                      "errors); --json gives every field.", epilog=exit_codes(_EXIT_CODES))
    show.add_argument("run", nargs="?", metavar="RUN",
                      help="a run id, a unique prefix of one, or 'last' (default: last)")
    show.set_defaults(handler=cmd_show, needs_kernel=False)
    stats = sub.add_parser("stats", help="model calls, tokens and cost per service, function and day",
                           description="Model calls, tokens and cost, grouped.", epilog=exit_codes(_EXIT_CODES))
    stats.add_argument("--by", choices=["service", "function", "day"], action="append",
                       help="group by this; repeatable (default: all three)")
    stats.add_argument("--since", metavar="WHEN", help="only calls since: 30m, 2h, 7d, 1w or a date (default: all)")
    stats.set_defaults(handler=cmd_stats, needs_kernel=False)


def _list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="at most N runs")
    parser.add_argument("--function", metavar="NAME", help="runs that invoked NAME (plugin.function, plugin.*)")
    parser.add_argument("--since", metavar="WHEN", help="runs since: 30m, 2h, 7d, 1w or a date (default: all)")
    parser.add_argument("--status", choices=["ok", "error", "cancelled", "running"], help="runs that ended so")
    parser.add_argument("-q", "--query", metavar="TEXT",
                        help="full-text search in prompts, answers, arguments and errors (every word must appear)")


def _reader(args: argparse.Namespace) -> JournalReader:
    """The journal's reader: NoJournalError when there is none yet (nothing to list), a
    JournalStoreError (exit 1) when there is one that cannot be read."""
    from ..events import open_reader

    return open_reader(args.settings)


def _since(text: str | None) -> float | None:
    from ..events import parse_since

    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _fail(message: str) -> int:
    import sys

    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


# --- list -----------------------------------------------------------------------------------


async def cmd_list(args: argparse.Namespace, kernel: Kernel | None) -> int:
    since = _since(args.since)
    from ..events import NoJournalError

    try:
        reader = _reader(args)
    except NoJournalError as exc:
        if args.json:
            print_json([])
        else:
            print(f"no runs journaled yet (no journal at {exc.where})")
        return EXIT_OK
    with reader:
        runs = reader.runs(limit=args.limit, function=args.function, service=args.service, since=since,
                           status=args.status, text=args.query)
    if args.json:
        print_json(runs)
        return EXIT_OK
    if not runs:
        print("no run matches" if any((args.function, args.service, since, args.status, args.query))
              else "no runs journaled yet")
        return EXIT_OK
    from ..events import local_time

    rows = [["RUN", "STARTED", "KIND", "NAME", "SERVICE", "MODEL", "TOKENS", "COST", "TIME", "STATUS"]]
    for run in runs:
        rows.append([run["id"], local_time(run["started"]), run["kind"], _cut(run["name"], 40), run["service"] or "-",
                     _cut(run["model"] or "-", 28), _tokens(run), _cost(run), _duration(run["duration"]),
                     run["status"]])
    _table(rows)
    return EXIT_OK


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _safe(text: str) -> str:
    """A line for the terminal: control characters (an escape sequence in a model's answer
    or a provider's error) shown as U+FFFD, never interpreted."""
    return _CONTROL.sub("\ufffd", text)


def _tokens(row: dict[str, Any]) -> str:
    used = (row.get("input_tokens") or 0, row.get("output_tokens") or 0)
    return f"{used[0]}+{used[1]}" if any(used) else "-"


def _cost(row: dict[str, Any]) -> str:
    if row.get("kind") not in (None, "model") and not row.get("requests") and not row.get("calls"):
        return "-"
    if not row.get("priced") or row.get("cost") is None:
        return "unpriced"
    cost = float(row["cost"])
    if cost >= 0.01 or cost == 0:
        return f"${cost:.4f}"
    text = f"{cost:.8f}".rstrip("0")  # a cheap call is not shown as free: $0.00004
    return "$" + (f"{cost:.1e}" if text.endswith(".") else text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(_safe("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()))


# --- show -----------------------------------------------------------------------------------


async def cmd_show(args: argparse.Namespace, kernel: Kernel | None) -> int:
    from ..events import NoJournalError

    try:
        with _reader(args) as reader:
            tree = reader.tree(reader.resolve(args.run))
    except (LookupError, NoJournalError) as exc:
        return _fail(str(exc).strip("'\""))
    if args.json:
        print_json(tree)
        return EXIT_OK
    from ..events import local_time

    print(_safe(f"run {tree['id']}  {tree['kind']} {tree['name']}  {tree['status']}  {local_time(tree['started'])}  "
          f"{_duration(tree['duration'])}  tokens {_tokens(tree)}  cost {_cost(tree)}"
          + (f"  [{tree['service']}" + (f"/{tree['model']}]" if tree["model"] else "]") if tree["service"] else "")))
    if tree.get("error"):
        print(_safe(f"  error: {_cut(tree['error'], _SHOWN)}"))
    for index, event in enumerate(tree["events"]):
        _show(event, "", index == len(tree["events"]) - 1)
    return EXIT_OK


def _show(event: dict[str, Any], indent: str, last: bool) -> None:
    branch, below = ("└─ ", "   ") if last else ("├─ ", "│  ")
    print(_safe(indent + branch + _headline(event)))
    inner = indent + below
    children = event["children"]
    pad = inner + ("│    " if children else "     ")
    for line in _details(event):
        print(_safe((pad + line).rstrip()))
    for index, child in enumerate(children):
        _show(child, inner, index == len(children) - 1)


def _headline(event: dict[str, Any]) -> str:
    data = event["data"]
    kind, name = event["kind"], event["name"]
    parts = [kind, name]
    if kind == "model":
        parts.append(f"({event['service']})" if event["service"] else "")
    elif kind == "tool":
        parts.append(data.get("call_id", ""))
    elif kind == "step":
        parts.insert(1, str(data.get("step", "")))
        if data.get("carried"):
            parts.append("(done before: resumed)")
    elif kind == "memory_search":
        parts.append(f"k={data.get('k')} {data.get('mode', '')} hits={data.get('hit_count')}")
    parts += [event["status"], _duration(event["duration"])]
    if event["input_tokens"] or event["output_tokens"]:
        parts.append(f"{event['input_tokens']}+{event['output_tokens']} tokens")
    if kind == "model":
        parts.append(f"cost {_cost({'kind': 'model', 'priced': event['priced'], 'cost': event['cost']})}")
        if data.get("retries"):
            parts.append(f"retries {data['retries']}")
        if data.get("fallback"):
            parts.append(f"fell back to {data['fallback']}")
    return " ".join(str(p) for p in parts if p != "")


def _details(event: dict[str, Any]) -> list[str]:
    data = event["data"]
    lines: list[str] = []
    if event.get("error"):
        lines.append(f"error: {_cut(event['error'], _SHOWN)}")
    if data.get("content") is False:
        return [*lines, "(content not journaled)"]
    kind = event["kind"]
    if kind in ("model", "prompt", "chat"):
        for message in data.get("messages", []) if kind != "chat" else data.get("messages", [])[-1:]:
            lines.append(f"{message.get('role')}: {_cut(message.get('content', ''), _SHOWN)}")
            for call in message.get("tool_calls", []):
                lines.append(f"  → {call.get('name')} {_cut(call.get('arguments', ''), _SHOWN)}")
        if kind in ("model", "chat") and (data.get("text") or data.get("tool_calls")):
            lines.append(f"→ answer: {_cut(data.get('text', ''), _SHOWN)}" if data.get("text") else "→ tool calls:")
            for call in data.get("tool_calls", []) or []:
                if isinstance(call, dict):
                    lines.append(f"  → {call.get('name')} {_cut(call.get('arguments', ''), _SHOWN)}")
    elif kind in ("function", "tool", "step"):
        if data.get("arguments") not in (None, {}, ""):
            lines.append(f"arguments: {_cut(_text(data['arguments']), _SHOWN)}")
        result = data.get("result", data.get("output"))
        if result is not None:
            lines.append(f"→ {_cut(_text(result), _SHOWN)}")
    elif kind == "plan":
        steps = data.get("plan", {}).get("steps", [])
        lines.append(f"{len(steps)} steps" + (f", resuming run {data['resumes']}" if data.get("resumes") else ""))
    elif kind == "memory_search":
        lines.append(f"query: {_cut(data.get('query', ''), _SHOWN)}")
        for hit in data.get("hits", [])[:10]:
            lines.append(f"  {hit.get('score', 0):.3f} {hit.get('source')}")
    elif kind == "memory_ingest":
        lines.append(", ".join(f"{key} {data[key]}" for key in ("files", "chunks", "added", "skipped", "removed")
                               if key in data))
    return lines


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


# --- stats ----------------------------------------------------------------------------------


async def cmd_stats(args: argparse.Namespace, kernel: Kernel | None) -> int:
    since = _since(args.since)
    groups = args.by or ["service", "function", "day"]
    from ..events import NoJournalError

    try:
        reader = _reader(args)
    except NoJournalError:
        result: dict[str, list[dict[str, Any]]] = {f"by_{by}": [] for by in groups}
    else:
        with reader:
            result = {f"by_{by}": reader.stats(by, since=since) for by in groups}
    if args.json:
        print_json(result)
        return EXIT_OK
    for index, by in enumerate(groups):
        if index:
            print()
        rows = [[by.upper(), "CALLS", "INPUT", "OUTPUT", "COST", "TIME"]]
        for row in result[f"by_{by}"]:
            rows.append([str(row["key"]), str(row["calls"]), str(row["input_tokens"]), str(row["output_tokens"]),
                         _cost({**row, "kind": "model"}), _duration(row["duration"])])
        print(f"model calls by {by}" + ("" if len(rows) > 1 else ": none"))
        if len(rows) > 1:
            _table(rows)
    return EXIT_OK
