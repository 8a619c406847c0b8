"""Retrieval quality: MRR and recall@5 of `vector`, `keyword` and `hybrid` search over the
evaluation set `tests/data/retrieval/eval.json` (questions paraphrased from passages of the
repository's documents, and exact-identifier queries), on the SQLite store, and on
PostgreSQL + pgvector when `pgserver` and the `postgres` extra are installed.

    python tests/benchmarks/bench_retrieval.py      # prints the table
    python tests/benchmarks/run.py --only retrieval

The corpus is a frozen copy of the documents (`tests/data/retrieval/corpus/`), ingested as
`kernel memory ingest` does (1,000-character chunks, 100 overlap, Markdown headings) with the
default local embedding model (MiniLM run in numpy). A hit is relevant when its text holds
the item's `evidence`; a question whose evidence no chunk holds whole is reported and left
out. Rows are (label, value, None, unit): quality figures, not times.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "retrieval"
MODES = ("vector", "keyword", "hybrid")
K = 10
COLLECTION = "eval"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def load_items() -> list[dict[str, str]]:
    items: list[dict[str, str]] = json.loads((DATA / "eval.json").read_text(encoding="utf-8"))["items"]
    return items


def corpus_documents() -> list[Any]:
    from kernel.memory import Document

    return [Document(path.name, path.read_text(encoding="utf-8"), {})
            for path in sorted((DATA / "corpus").glob("*.md"))]


@dataclass
class Scores:
    """Reciprocal ranks and hits at 5 of one mode, per item kind."""

    rr: dict[str, list[float]] = field(default_factory=dict)
    at5: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, rank: int | None) -> None:
        self.rr.setdefault(kind, []).append(0.0 if rank is None else 1.0 / rank)
        self.at5.setdefault(kind, []).append(1.0 if rank is not None and rank <= 5 else 0.0)

    def mrr(self, kind: str | None = None) -> float:
        values = [v for k, vs in self.rr.items() if kind in (None, k) for v in vs]
        return sum(values) / len(values) if values else 0.0

    def recall5(self, kind: str | None = None) -> float:
        values = [v for k, vs in self.at5.items() if kind in (None, k) for v in vs]
        return sum(values) / len(values) if values else 0.0


@dataclass
class Evaluation:
    scores: dict[str, Scores]
    ranks: dict[str, list[int | None]]
    """Per mode, the rank of the first relevant hit of each judged item (None: not in the top K)."""
    judged: int
    unjudged: list[str]


async def evaluate(memory: Any, items: Sequence[dict[str, str]], modes: Sequence[str] = MODES) -> Evaluation:
    """Search every item in every mode; `memory` holds the corpus in COLLECTION."""
    ids = await memory.store.list_ids(COLLECTION) if hasattr(memory.store, "list_ids") else None
    texts: dict[str, str] = {}
    if ids is not None:
        for record in await memory.store.get(COLLECTION, ids):
            texts[record.id] = _norm(record.text)
    scores = {mode: Scores() for mode in modes}
    ranks: dict[str, list[int | None]] = {mode: [] for mode in modes}
    unjudged: list[str] = []
    judged = 0
    for item in items:
        evidence = _norm(item["evidence"])
        if texts and not any(evidence in text for text in texts.values()):
            unjudged.append(item["q"])
            continue
        judged += 1
        for mode in modes:
            hits = await memory.search(item["q"], COLLECTION, k=K, mode=mode)
            rank = next((i for i, hit in enumerate(hits, start=1) if evidence in _norm(hit.record.text)), None)
            scores[mode].add(item["kind"], rank)
            ranks[mode].append(rank)
    return Evaluation(scores, ranks, judged, unjudged)


async def build_memory(store: Any) -> Any:
    from connectors.sentence_transformers_embeddings import SentenceTransformerEmbeddings
    from kernel.memory import SemanticMemory

    memory = SemanticMemory(SentenceTransformerEmbeddings(), store)
    await memory.ingest_documents(corpus_documents(), COLLECTION)
    return memory


def _rows(store_name: str, result: Evaluation) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for mode in MODES:
        s = result.scores[mode]
        rows.append((f"{store_name} {mode:7s} MRR all / paraphrases / identifiers ({result.judged} items)",
                     s.mrr(), None, f"/ {s.mrr('paraphrase'):.3f} / {s.mrr('identifier'):.3f}"))
        rows.append((f"{store_name} {mode:7s} recall@5 all / paraphrases / identifiers",
                     s.recall5(), None, f"/ {s.recall5('paraphrase'):.3f} / {s.recall5('identifier'):.3f}"))
    return rows


async def _sqlite() -> Evaluation:
    from connectors.sqlite_store import SQLiteVectorStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteVectorStore(Path(tmp) / "eval.db")
        try:
            return await evaluate(await build_memory(store), load_items())
        finally:
            await store.close()


async def _pgvector() -> Evaluation | None:
    try:
        import pgserver
        import pgvector.psycopg  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError:
        return None
    import shutil

    from connectors.pgvector_store import PgVectorStore

    pgdata = Path(tempfile.mkdtemp(prefix="kernel-pg-bench-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        store = PgVectorStore(server.get_uri())
        try:
            return await evaluate(await build_memory(store), load_items())
        finally:
            await store.close()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def run() -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    result = asyncio.run(_sqlite())
    rows += _rows("sqlite", result)
    if result.unjudged:
        rows.append((f"sqlite: {len(result.unjudged)} items with evidence split between chunks (left out)",
                     float(len(result.unjudged)), None, "items"))
    pg = asyncio.run(_pgvector())
    if pg is not None:
        rows += _rows("pgvector", pg)
    else:
        rows.append(("pgvector: not measured (pgserver or the postgres extra missing)", 0.0, None, "-"))
    return rows


if __name__ == "__main__":
    for row in run():
        label, value, _, unit = row
        print(f"{label}: {value:.3f} {unit}")
