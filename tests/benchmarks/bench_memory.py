"""Memory benchmarks: SQLite store search latency vs exact numpy brute force, ingestion
throughput with and without embedding, and the start-up of the memory commands.

    python tests/benchmarks/bench_memory.py        # prints a table

`run()` returns (label, ours_seconds, floor_seconds) rows; the floor is the same work
done directly (a numpy matrix product over vectors already in memory; an executemany
into a bare table), so the ratio is our overhead. The start-up rows run the real console
script in a temporary project of 60 chunks (wall time, best of 3, the two embedding
backends interleaved): `kernel memory search` with the default numpy backend and with
the sentence-transformers backend (the implementation before), against `kernel memory
collections`, which embeds nothing; time to first embedding and per-chunk embedding
time are measured in fresh processes, one per backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
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
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
QUERY = "how do I configure the sqlite store?"


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


WORDS = ["vector", "memory", "retrieval", "kernel", "plugin", "embedding", "chunk", "search", "store", "sqlite",
         "model", "install", "configure", "python", "async", "function", "prompt", "template", "planner", "service",
         "provider"]


def _write_docs(folder: Path) -> list[str]:
    """Three Markdown files of 10 sections of 140 words: 60 chunks once ingested. Returns 60
    texts of 1,000 characters cut from them."""
    rng = random.Random(1)
    folder.mkdir(parents=True)
    texts = []
    for f in range(3):
        text = "".join(f"## Section {s}\n\n" + " ".join(rng.choice(WORDS) for _ in range(140)) + ".\n\n"
                       for s in range(10))
        (folder / f"doc{f}.md").write_text(text, encoding="utf-8")
        texts.extend(text[i : i + 1000] for i in range(0, 10_000, 500))
    return texts[:60]


def _wall(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


_EMBED = """
import asyncio, json, sys, time
started = time.perf_counter()
from connectors.sentence_transformers_embeddings import SentenceTransformerEmbeddings
emb = SentenceTransformerEmbeddings(backend=sys.argv[1])
chunks = json.loads(open(sys.argv[2]).read())
async def main():
    await emb.embed([sys.argv[3]])
    first = time.perf_counter() - started
    per_chunk = []
    for _ in range(2):
        t = time.perf_counter()
        await emb.embed(chunks)
        per_chunk.append((time.perf_counter() - t) / len(chunks))
    print(json.dumps({"first": first, "per_chunk": min(per_chunk)}))
asyncio.run(main())
"""


def _startup(tmp: Path, runs: int = 3) -> list[tuple[str, float, float | None]]:
    project = tmp / "cli"
    chunks = _write_docs(project / "docs")
    (project / "chunks.json").write_text(json.dumps(chunks), encoding="utf-8")
    (project / "st.toml").write_text('[services.st]\nprovider = "sentence-transformers"\nkind = "embedding"\n'
                                     'options = { backend = "sentence-transformers" }\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    st_env = {**env, "KERNEL_CONFIG": str(project / "st.toml")}
    kernel = [str(CONSOLE_SCRIPT), "memory"]
    ingested = subprocess.run([*kernel, "ingest", "docs", "--json"], cwd=project, env=env, check=True,
                              capture_output=True, text=True).stdout
    assert json.loads(ingested)["chunks"] == 60, ingested
    walls: dict[str, list[float]] = {k: [] for k in ("pass", "collections", "numpy", "st")}
    embeds: dict[str, list[dict[str, float]]] = {"numpy": [], "sentence-transformers": []}
    for _ in range(runs):
        walls["pass"].append(_wall([sys.executable, "-c", "pass"], project, env))
        walls["collections"].append(_wall([*kernel, "collections", "--json"], project, env))
        walls["numpy"].append(_wall([*kernel, "search", QUERY, "--json"], project, env))
        walls["st"].append(_wall([*kernel, "search", QUERY, "--embedding", "st", "--json"], project, st_env))
        for backend, results in embeds.items():
            out = subprocess.run([sys.executable, "-c", _EMBED, backend, str(project / "chunks.json"), QUERY],
                                 cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    best = {k: min(v) for k, v in walls.items()}
    first = {k: min(r["first"] for r in v) for k, v in embeds.items()}
    chunk = {k: min(r["per_chunk"] for r in v) for k, v in embeds.items()}
    return [
        ("`kernel memory collections` (wall) vs `python -c pass`", best["collections"], best["pass"]),
        ("cold `kernel memory search`, numpy backend (wall) vs `collections`", best["numpy"], best["collections"]),
        ("cold `kernel memory search`, sentence-transformers backend (before)", best["st"], best["collections"]),
        ("time to first embedding, fresh process: numpy", first["numpy"], None),
        ("time to first embedding, fresh process: sentence-transformers", first["sentence-transformers"], None),
        ("embedding per 1,000-char chunk: numpy vs sentence-transformers", chunk["numpy"],
         chunk["sentence-transformers"]),
    ]


async def _run() -> list[tuple[str, float, float | None]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows: list[tuple[str, float, float | None]] = []
        for n in (10_000, 100_000):
            ours, floor = await _search_latency(n, tmp)
            rows.append((f"search k=10, {n:,} x {DIM}-d (SQLite vs numpy)", ours, floor))
        ours, floor = await _ingest_precomputed(5_000, tmp)
        rows.append(("ingest per chunk, precomputed vectors", ours, floor))
        try:
            ours, floor = await _ingest_with_model(64, tmp)
            rows.append(("ingest per chunk, MiniLM embedding included (numpy backend)", ours, floor))
            rows.extend(_startup(tmp))
        except Exception as exc:  # the local extra is optional for this benchmark
            print(f"(skipping the model benchmarks: {exc})", file=sys.stderr)
        return rows


def run() -> list[tuple[str, float, float | None]]:
    return asyncio.run(_run())


def main() -> None:
    rows = run()
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'ours':>11}  {'floor':>11}  {'ratio':>6}  {'ours/s':>10}")
    for label, ours, floor in rows:
        print(
            f"{label:<{width}}  {ours * 1e3:>9.3f}ms  {(floor or 0) * 1e3:>9.3f}ms  "
            f"{ours / floor if floor else float('nan'):>6.2f}  {1 / ours if ours else 0:>10.0f}"
        )


if __name__ == "__main__":
    main()
