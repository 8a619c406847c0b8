"""An ingestion killed with SIGKILL midway loses nothing committed and leaves nothing
half-written; running it again completes it without duplicates."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.sqlite_store import SQLiteVectorStore

ROOT = Path(__file__).resolve().parents[1]
TOTAL, BATCH, DIM = 3000, 50, 32

CHILD = r"""
import asyncio, hashlib, json, math, os, sys, time
from connectors.sqlite_store import SQLiteVectorStore
from kernel.memory import Document, SemanticMemory

db, progress_file, total, batch, dim, delay = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])

class SlowHashingEmbedder:
    provider, model, dimension = "test", "hashing", int(dim)
    async def embed(self, texts):
        await asyncio.sleep(delay)  # room for the parent to kill us mid-run
        out = []
        for t in texts:
            d = hashlib.sha256(t.encode()).digest()
            v = [(d[i % 32] - 127.5) for i in range(self.dimension)]
            n = math.sqrt(sum(x * x for x in v))
            out.append([x / n for x in v])
        return out

def report(p):
    tmp = progress_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(p.chunks_done))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, progress_file)

async def main():
    store = SQLiteVectorStore(db)
    mem = SemanticMemory(SlowHashingEmbedder(), store, batch_size=int(batch))
    docs = [Document(f"doc{i:05d}.txt", f"record {i} of the killed ingestion test, unique text {i * 7919}")
            for i in range(int(total))]
    r = await mem.ingest_documents(docs, "kill", chunk_size=500, overlap=0, markdown=False, progress=report)
    print(json.dumps({"added": r.added, "skipped": r.skipped, "chunks": r.chunks}))
    await store.close()

asyncio.run(main())
"""


def _child(db: Path, progress: Path, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(db), str(progress), str(TOTAL), str(BATCH), str(DIM), str(delay)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.slow
async def test_sigkill_midway_keeps_committed_batches(tmp_path: Path) -> None:
    db, progress = tmp_path / "kill.db", tmp_path / "progress"
    proc = _child(db, progress, delay=0.02)
    deadline = time.monotonic() + 60
    reported = 0
    while time.monotonic() < deadline:
        if progress.exists():
            reported = int(progress.read_text() or 0)
            if reported >= TOTAL // 3:
                break
        assert proc.poll() is None, "the child finished or died before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    reported = int(progress.read_text())
    assert 0 < reported < TOTAL

    # the file is consistent, and every committed batch is whole
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteVectorStore(db)
    try:
        count = await store.count("kill")
        assert reported <= count <= reported + BATCH  # at most one batch committed after the last report
        assert count % BATCH == 0  # never a partial batch
        records = await store.get("kill", await store.list_ids("kill"))
        assert len(records) == count
        for rec in records:
            assert rec.text.startswith("record ")
            assert rec.vector is not None and len(rec.vector) == DIM
            assert rec.metadata["source"].startswith("doc") and rec.metadata["content_hash"]
        assert len(await store.keyword_search("kill", "killed", k=TOTAL)) == count  # FTS in sync
    finally:
        await store.close()

    # run it again: it completes, embeds only what was missing, and adds no duplicate
    rerun = _child(db, progress, delay=0.0)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"added": TOTAL - count, "skipped": count, "chunks": TOTAL}
    store = SQLiteVectorStore(db)
    try:
        assert await store.count("kill") == TOTAL
        assert len(set(await store.list_ids("kill"))) == TOTAL
    finally:
        await store.close()
