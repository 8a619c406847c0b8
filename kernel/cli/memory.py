"""`kernel memory ...`: ingest documents, search them, list collections.

Registered through the `register_commands` hook. Each leaf command sets `handler`, an
`async def handler(args, kernel) -> int` (exit code); the embedding model and the store
are the kernel's services (`--embedding`, `--store` pick named ones, default: the
configured defaults).

    kernel memory ingest docs/ --collection docs --chunk-size 800 --overlap 80
    kernel memory ingest ../other/docs --as other-docs
    kernel memory search "how do I install?" --collection docs -k 5 --filter "source=guide.md"
    kernel memory ask "how do I install?" --collection docs -k 4
    kernel memory collections --json

Every folder ingested is a *source root* named by the folder's name (`docs`), or by
`--as NAME`: re-ingesting it updates and prunes only its own chunks, never another
folder's; another folder with the same name is refused (`--as`, or `--replace` to take
the name over). Binary files and links out of the folder (without `--follow-links`) are
skipped, each with a warning on stderr.

Filter expressions (`--filter`, repeatable, ANDed): `source=a.md`, `year>=2020`,
`tag in a,b`, `tag not in a,b`, `tags contains x`, or a JSON filter
(`{"or": [{"field": ..., "op": ..., "value": ...}, ...]}`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_ERROR, EXIT_USAGE, UsageError, add_option_argument, exit_codes

if TYPE_CHECKING:
    from ..hookspecs import VectorStore
    from ..kernel import Kernel
    from ..memory import IngestProgress, SemanticMemory

_EXIT_CODES = {
    EXIT_ERROR: "a store or embedding error",
    EXIT_USAGE: "bad options or filter, a missing path, an unknown collection",
    EXIT_CONFIG: "configuration error (unknown service, bad connector options)",
}


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """Add `memory ingest|search|ask|collections`."""
    memory = register("memory", None, help="vector memory: ingest, search, ask, collections",
                      epilog=exit_codes(_EXIT_CODES))
    sub = memory.add_subparsers(dest="memory_command", metavar="ACTION")

    def services(p: argparse.ArgumentParser) -> None:
        p.add_argument("--embedding", metavar="SERVICE", help="embedding service (default: default_embedding)")
        p.add_argument("--store", metavar="SERVICE", help="memory service (default: default_memory)")

    def searching(p: argparse.ArgumentParser, k: int) -> None:
        p.add_argument("--collection", "-c", default="docs", help="the collection (an unknown one: exit 2)")
        p.add_argument("-k", type=int, default=k, metavar="N", help="number of hits")
        p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                       help="metadata filter, e.g. 'source=a.md', 'year>=2020' (repeatable: AND; default: none)")
        p.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid",
                       help="vector similarity, keyword match, or both fused (hybrid)")

    epilog = exit_codes(_EXIT_CODES)
    ingest = sub.add_parser("ingest", help="chunk, embed and store files or folders", epilog=epilog,
                            description="Chunk, embed and store .md/.txt files or folders.")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help=".md/.txt files or folders")
    ingest.add_argument("--collection", "-c", default="docs", help="the collection to store into")
    ingest.add_argument("--chunk-size", type=int, default=1000, metavar="N", help="chunk size, in --unit")
    ingest.add_argument("--overlap", type=int, default=None, metavar="N",
                        help="chunk overlap (default: a tenth of the chunk size, at most 100)")
    ingest.add_argument("--unit", choices=["chars", "tokens"], default="chars", help="how chunks are measured")
    ingest.add_argument("--no-prune", action="store_true",
                        help="keep chunks that left re-ingested files, and those of files gone from the folder")
    ingest.add_argument("--as", "--source-root", dest="source_root", metavar="NAME",
                        help="name of the source root (default: the folder's name); one PATH only")
    ingest.add_argument("--follow-links", action="store_true",
                        help="follow symbolic links leading out of the folder (default: skipped)")
    ingest.add_argument("--replace", action="store_true",
                        help="take over a source root name that holds another folder's chunks (a moved folder)")
    ingest.add_argument("--executor", choices=["asyncio", "ray"], default=None,
                        help="embed in this process, or on Ray workers (a PostgreSQL store; default: "
                             "[batch] executor, else asyncio)")
    ingest.add_argument("--address", metavar="ADDR", help="Ray cluster address for --executor ray (default: "
                        "[batch] address, $RAY_ADDRESS, else a local cluster)")
    services(ingest)
    ingest.set_defaults(handler=ingest_command)

    search = sub.add_parser("search", help="search a collection", epilog=epilog,
                            description="Search a collection: the best chunks, with their sources and scores.")
    search.add_argument("query", metavar="QUERY", help="what to search for")
    searching(search, 4)
    services(search)
    search.set_defaults(handler=search_command)

    ask = sub.add_parser("ask", help="answer a question from a collection, citing its passages as [1], [2]",
                         epilog=exit_codes({**_EXIT_CODES, EXIT_ERROR: "no passage found, or a model error"}),
                         description="Retrieve the best passages of a collection, then ask the chat model "
                                     "(--service, default_chat) to answer from them with numbered citations; the "
                                     "sources are listed after the answer.")
    ask.add_argument("question", metavar="QUESTION", help="the question")
    searching(ask, 4)
    add_option_argument(ask)
    services(ask)
    ask.set_defaults(handler=ask_command)

    collections = sub.add_parser("collections", help="list collections", epilog=epilog,
                                 description="List the collections of a store, with their chunk counts.")
    collections.add_argument("--store", metavar="SERVICE", help="memory service (default: default_memory)")
    collections.set_defaults(handler=collections_command)


async def check_collection(store: VectorStore, name: str) -> None:
    """An unknown collection is bad usage (exit 2); the message lists the existing ones."""
    names = sorted(await store.list_collections())
    if name not in names:
        existing = ", ".join(repr(n) for n in names) if names else "none yet (kernel memory ingest PATH -c NAME)"
        raise UsageError(f"no collection {name!r} in the store; existing collections: {existing}")


def _memory(args: argparse.Namespace, kernel: Kernel) -> SemanticMemory:
    from ..memory import SemanticMemory

    return SemanticMemory(
        kernel.services.embedding(getattr(args, "embedding", None)),
        kernel.services.memory(getattr(args, "store", None)),
    )


async def ingest_command(args: argparse.Namespace, kernel: Kernel) -> int:
    from pathlib import Path

    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, not {args.chunk_size}")
    overlap = min(100, args.chunk_size // 10) if args.overlap is None else args.overlap
    if not 0 <= overlap < args.chunk_size:
        raise UsageError(f"--overlap must be in [0, --chunk-size), not {overlap} with size {args.chunk_size}")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if args.source_root is not None and len(args.paths) != 1:
        raise UsageError(f"--as names the folder of one PATH; {len(args.paths)} were given")
    from ..batch import memory_for

    async with memory_for(kernel, args.executor, embedding=args.embedding, store=args.store,
                          address=args.address) as memory:
        return await _ingest(args, memory, overlap)


async def _ingest(args: argparse.Namespace, memory: SemanticMemory, overlap: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as bar:
        task = bar.add_task(f"ingesting into {args.collection}", total=None)

        def progress(p: IngestProgress) -> None:
            bar.update(task, total=p.chunks_total, completed=p.chunks_done,
                       description=f"{p.source or args.collection} ({p.files_done}/{p.files_total} files)")

        report = await memory.ingest(
            args.paths,
            args.collection,
            chunk_size=args.chunk_size,
            overlap=overlap,
            unit=args.unit,
            progress=progress,
            prune=not args.no_prune,
            source_root=args.source_root,
            follow_links=args.follow_links,
            replace=args.replace,
        )
    for item in report.skipped_files:
        print(f"warning: skipped {item.path}: {item.reason}", file=sys.stderr)
    data = {
        "collection": args.collection,
        "roots": list(report.roots),
        "files": report.files,
        "chunks": report.chunks,
        "added": report.added,
        "skipped": report.skipped,
        "removed": report.removed,
        "removed_files": report.removed_files,
        "skipped_files": [{"path": f.path, "reason": f.reason} for f in report.skipped_files],
    }
    if args.json:
        print(json.dumps(data))
    else:
        roots = ", ".join(repr(r) for r in report.roots)
        print(
            f"{report.files} file(s) of {roots}, {report.chunks} chunk(s) in {args.collection!r}: "
            f"{report.added} added, {report.skipped} unchanged, {report.removed} removed"
            + (f" ({report.removed_files} file(s) no longer present)" if report.removed_files else "")
            + (f"; {len(report.skipped_files)} file(s) skipped" if report.skipped_files else "")
        )
    return 0


async def search_command(args: argparse.Namespace, kernel: Kernel) -> int:
    from ..memory import parse_expressions, reference

    flt = parse_expressions(args.filter)
    await check_collection(kernel.services.memory(getattr(args, "store", None)), args.collection)
    memory = _memory(args, kernel)
    hits = await memory.search(args.query, args.collection, args.k, flt, args.mode)
    if args.json:
        print(json.dumps([
            {
                "rank": i,
                "score": h.score,
                "id": h.record.id,
                "reference": reference(h),
                "text": h.record.text,
                "metadata": h.record.metadata,
            }
            for i, h in enumerate(hits, 1)
        ], ensure_ascii=False))
        return 0
    if not hits:
        print("no results", file=sys.stderr)
        return 0
    for i, h in enumerate(hits, 1):
        print(f"[{i}] {reference(h)}  (score {h.score:.4f})")
        print("    " + h.record.text.strip().replace("\n", "\n    "))
    return 0


async def ask_command(args: argparse.Namespace, kernel: Kernel) -> int:
    """`memory ask`: see `kernel.cli.prompt.memory_ask`."""
    from .prompt import memory_ask

    return await memory_ask(args, kernel)


async def collections_command(args: argparse.Namespace, kernel: Kernel) -> int:
    store = kernel.services.memory(getattr(args, "store", None))
    names = await store.list_collections()
    rows: list[dict[str, Any]] = [{"name": n, "count": await store.count(n)} for n in names]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no collections", file=sys.stderr)
    else:
        for row in rows:
            print(f"{row['name']}\t{row['count']}")
    return 0
