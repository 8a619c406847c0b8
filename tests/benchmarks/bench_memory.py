"""Memory benchmarks: SQLite store search latency vs exact numpy brute force, and
ingestion throughput with and without embedding.

    python tests/benchmarks/bench_memory.py        # prints a table

`run()` returns (label, ours_seconds, floor_seconds) rows; the floor is the same work
done directly (a numpy matrix product over vectors already in memory; an executemany
into a bare table), so the ratio is our overhead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connectors.sqlite_store import SQLiteVectorStore  # noqa: E402
from kernel.memory import (  # noqa: E402
    Document,
    MemoryRecord,
    SemanticMemory,
)

DIM = 384


def _best(times: list[float]) -> float:
    return float(np.median(times))


async def _search_latency(n: int, tmp: Path, queries: int = 30) -> tuple[float, float]:
    rng = np.random.default_rng(n)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    store = SQLiteVectorStore(tmp / f"bench{n}.db")
    await store.create_collection("bench", DIM)
    records = [MemoryRecord(f"r{i}", f"record {i}", vectors[i], {"i": i}) for i in range(n)]
    await store.upsert("bench", records)  # one transaction
    qs = rng.standard_normal((queries, DIM)).astype(np.float32)
    await store.search("bench", qs[0], k=10)  # build the cached matrix
    ours = []
    for q in qs:
        t = time.perf_counter()
        await store.search("bench", q, k=10)
        ours.append(time.perf_counter() - t)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    floor = []
    for q in qs:
        t = time.perf_counter()
        scores = normed @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 9)[:10]
        top[np.argsort(-scores[top])]
        floor.append(time.perf_counter() - t)
    await store.close()
    return _best(ours), _best(floor)


async def _ingest_precomputed(n: int, tmp: Path) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    records = [MemoryRecord(f"r{i}", f"chunk {i} text", vectors[i], {"i": i}) for i in range(n)]
    store = SQLiteVectorStore(tmp / "ingest.db")
    t = time.perf_counter()
    for i in range(0, n, 64):
        await store.upsert("ingest", records[i : i + 64])
    ours = time.perf_counter() - t
    await store.close()
    conn = sqlite3.connect(tmp / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, text TEXT, vector BLOB, metadata TEXT)")
    t = time.perf_counter()
    for i in range(0, n, 64):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [(r.id, r.text, vectors[j].tobytes(), "{}") for j, r in enumerate(records[i : i + 64], i)],
        )
        conn.execute("COMMIT")
    floor = time.perf_counter() - t
    conn.close()
    return ours / n, floor / n


async def _ingest_with_model(n: int, tmp: Path) -> tuple[float, float]:
    from connectors.sentence_transformers_embeddings import SentenceTransformerEmbeddings

    emb = SentenceTransformerEmbeddings()
    await emb.embed(["warm up"])
    docs = [Document(f"d{i}.txt", f"Sentence number {i} about vector memory and retrieval.") for i in range(n)]
    store = SQLiteVectorStore(tmp / "model.db")
    mem = SemanticMemory(emb, store)
    t = time.perf_counter()
    await mem.ingest_documents(docs, "model", markdown=False)
    ours = time.perf_counter() - t
    await store.close()
    t = time.perf_counter()
    await emb.embed([d.text for d in docs])  # the model alone
    floor = time.perf_counter() - t
    return ours / n, floor / n


async def _run() -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = []
        for n in (10_000, 100_000):
            ours, floor = await _search_latency(n, tmp)
            rows.append((f"search k=10, {n:,} x {DIM}-d (SQLite vs numpy)", ours, floor))
        ours, floor = await _ingest_precomputed(5_000, tmp)
        rows.append(("ingest per chunk, precomputed vectors", ours, floor))
        try:
            ours, floor = await _ingest_with_model(64, tmp)
            rows.append(("ingest per chunk, MiniLM embedding included", ours, floor))
        except Exception as exc:  # the local extra is optional for this benchmark
            print(f"(skipping the model benchmark: {exc})", file=sys.stderr)
        return rows


def run() -> list[tuple[str, float, float]]:
    return asyncio.run(_run())


def main() -> None:
    rows = run()
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'ours':>11}  {'floor':>11}  {'ratio':>6}  {'ours/s':>10}")
    for label, ours, floor in rows:
        print(
            f"{label:<{width}}  {ours * 1e3:>9.3f}ms  {floor * 1e3:>9.3f}ms  "
            f"{ours / floor if floor else float('nan'):>6.2f}  {1 / ours if ours else 0:>10.0f}"
        )


if __name__ == "__main__":
    main()
