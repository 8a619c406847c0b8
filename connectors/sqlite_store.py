"""The default vector store: one SQLite file, no server, no extension.

* File: `options.path` (default `./.kernel/memory.db`, relative to the working directory,
  like `.git`: memory belongs to the project you run in). WAL mode.
* Records live in one `records` table with a `collection` column; `collections` holds each
  collection's dimension, checked on every upsert.
* Vectors are float32 BLOBs. Vector search is exact: a numpy matrix per collection (rows
  normalized, cosine similarity), cached in memory and rebuilt after a write (ours, or
  another process's: `PRAGMA data_version`). This Python's sqlite3 cannot load
  extensions, and brute force over 100k x 384 floats takes milliseconds.
* Keyword search is FTS5 (porter stemming, bm25); hybrid is reciprocal rank fusion.
* Every upsert/delete is one transaction: a process killed mid-ingestion leaves every
  committed batch intact and nothing half-written.
* Metadata filters are evaluated in Python by `kernel.filters.matches` (never SQL text).
* A row damaged outside the store (a vector BLOB of the wrong length or not finite,
  metadata that is not a JSON object, text that is not text) is a `MemoryStoreError`
  naming the collection and the record id, raised by every read that decodes it; the
  record can still be deleted by id.
* Blocking work runs in `asyncio.to_thread`; one connection guarded by a lock.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np
else:
    from ._lazy import LazyModule

    # numpy loads on the first search, not when the kernel starts (the `memory` extra installs it)
    np = LazyModule("numpy", extra="memory", feature="the SQLite vector store")

from kernel.errors import ConfigurationError, MemoryStoreError
from kernel.hookspecs import hookimpl
from kernel.memory import (
    Filter,
    MemoryRecord,
    SearchHit,
    check_collection_name,
    check_dimension,
    content_id,
    fuse_hybrid,
    hybrid_candidates,
    matches,
    parse_filter,
)

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

DEFAULT_PATH = Path(".kernel") / "memory.db"
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    dimension INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    rid INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    UNIQUE (collection, id)
);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
    text, content='records', content_rowid='rid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS records_ai AFTER INSERT ON records BEGIN
    INSERT INTO records_fts(rowid, text) VALUES (new.rid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS records_ad AFTER DELETE ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.rid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS records_au AFTER UPDATE OF text ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.rid, old.text);
    INSERT INTO records_fts(rowid, text) VALUES (new.rid, new.text);
END;
"""


def fts_query(query: str) -> str | None:
    """A safe FTS5 query: the words of `query`, each quoted, joined with OR."""
    words = re.findall(r"\w+", query)
    return " OR ".join(f'"{w}"' for w in words) if words else None


def corrupted(collection: str, record_id: object, problem: str) -> MemoryStoreError:
    return MemoryStoreError(
        f"corrupted record {record_id!r} in collection {collection!r}: {problem}; "
        "delete it by id and ingest its document again"
    )


def load_metadata(collection: str, record_id: object, raw: object) -> dict[str, Any]:
    """A stored metadata column as a dict, or `MemoryStoreError` naming the record."""
    if not isinstance(raw, str | bytes):
        raise corrupted(collection, record_id, f"metadata is {type(raw).__name__}, not JSON text")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise corrupted(collection, record_id, f"metadata is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise corrupted(collection, record_id, f"metadata is a JSON {type(value).__name__}, not an object")
    return value


def check_vector(collection: str, record_id: object, blob: object, dim: int) -> bytes:
    """A stored vector BLOB of `dim` float32 values, or `MemoryStoreError` naming the record."""
    if not isinstance(blob, bytes):
        raise corrupted(collection, record_id, f"the vector is {type(blob).__name__}, not a BLOB")
    if len(blob) != 4 * dim:
        raise corrupted(
            collection, record_id, f"the vector has {len(blob)} bytes, expected {4 * dim} ({dim} float32 values)"
        )
    return blob


def check_text(collection: str, record_id: object, text: object) -> str:
    if not isinstance(text, str):
        raise corrupted(collection, record_id, f"the text is {type(text).__name__}, not text")
    return text


@dataclass(slots=True)
class _Matrix:
    """A collection's vectors, ready for brute-force search."""

    collection: str
    rids: np.ndarray
    ids: list[str]
    matrix: np.ndarray  # (n, d) float32, rows normalized
    raw_metadata: list[str]
    _metadata: list[dict[str, Any]] | None = field(default=None)

    def metadata(self) -> list[dict[str, Any]]:
        if self._metadata is None:
            self._metadata = [
                load_metadata(self.collection, i, m) for i, m in zip(self.ids, self.raw_metadata, strict=True)
            ]
        return self._metadata


class SQLiteVectorStore:
    """`VectorStore` on one SQLite file (see the module docstring)."""

    provider = "sqlite"

    def __init__(self, path: str | Path = DEFAULT_PATH, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._conn.executescript(_SCHEMA)
        self._cache: dict[str, _Matrix] = {}
        self._dims: dict[str, int] = {}
        self._data_version = self._read_data_version()

    # -- plumbing -------------------------------------------------------------------

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._conn is None:
                raise MemoryStoreError(f"SQLite store {self.path} is closed")
            version = self._read_data_version()
            if version != self._data_version:  # another process committed
                self._cache.clear()
                self._dims.clear()
                self._data_version = version
            return fn(*args)

    def _write(self, fn: Callable[[], T]) -> T:
        """Run `fn` in one IMMEDIATE transaction; all or nothing."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return result

    def _dimension(self, collection: str) -> int | None:
        if collection not in self._dims:
            row = self._conn.execute(
                "SELECT dimension FROM collections WHERE name = ?", (collection,)
            ).fetchone()
            if row is None:
                return None
            self._dims[collection] = int(row[0])
        return self._dims[collection]

    def _require(self, collection: str) -> int:
        check_collection_name(collection)
        dim = self._dimension(collection)
        if dim is None:
            raise MemoryStoreError(
                f"no collection named {collection!r} in {self.path}; "
                f"existing: {', '.join(self._list()) or 'none'}"
            )
        return dim

    def _list(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM collections ORDER BY name")]

    def _matrix(self, collection: str, dim: int) -> _Matrix:
        cached = self._cache.get(collection)
        if cached is not None:
            return cached
        rows = self._conn.execute(
            "SELECT rid, id, vector, metadata FROM records WHERE collection = ? ORDER BY rid",
            (collection,),
        ).fetchall()
        if rows:
            blobs = b"".join(check_vector(collection, r[1], r[2], dim) for r in rows)
            raw = np.frombuffer(blobs, dtype=np.float32).reshape(-1, dim)
            finite = np.isfinite(raw).all(axis=1)
            if not finite.all():
                bad = rows[int(np.flatnonzero(~finite)[0])][1]
                raise corrupted(collection, bad, "the vector holds NaN or infinite values")
            norms = np.linalg.norm(raw, axis=1, keepdims=True)
            matrix: np.ndarray = raw / np.where(norms == 0, 1.0, norms).astype(np.float32)
        else:
            matrix = np.zeros((0, dim), dtype=np.float32)
        built = _Matrix(
            collection=collection,
            rids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            ids=[r[1] for r in rows],
            matrix=np.ascontiguousarray(matrix, dtype=np.float32),
            raw_metadata=[r[3] for r in rows],
        )
        self._cache[collection] = built
        return built

    def _fetch(self, collection: str, rids: Sequence[int]) -> dict[int, MemoryRecord]:
        out: dict[int, MemoryRecord] = {}
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            marks = ",".join("?" * len(part))
            sql = f"SELECT rid, id, text, metadata FROM records WHERE rid IN ({marks})"
            for rid, rec_id, text, meta in self._conn.execute(sql, part):
                out[rid] = MemoryRecord(
                    rec_id, check_text(collection, rec_id, text), None, load_metadata(collection, rec_id, meta)
                )
        return out

    # -- collections ----------------------------------------------------------------

    async def create_collection(self, name: str, dimension: int) -> None:
        await self._run(self._create_collection, name, dimension)

    def _create_collection(self, name: str, dimension: int) -> None:
        check_collection_name(name)
        if not isinstance(dimension, int) or dimension < 1:
            raise MemoryStoreError(f"collection {name!r}: dimension must be a positive integer")
        existing = self._dimension(name)
        if existing is not None:
            check_dimension(name, existing, dimension)
            return
        self._write(
            lambda: self._conn.execute(
                "INSERT OR IGNORE INTO collections(name, dimension, created_at) VALUES (?, ?, ?)",
                (name, dimension, time.time()),
            )
        )
        self._dims.pop(name, None)

    async def list_collections(self) -> list[str]:
        return await self._run(self._list)

    async def delete_collection(self, name: str) -> None:
        await self._run(self._delete_collection, name)

    def _delete_collection(self, name: str) -> None:
        check_collection_name(name)

        def work() -> None:
            self._conn.execute("DELETE FROM records WHERE collection = ?", (name,))
            self._conn.execute("DELETE FROM collections WHERE name = ?", (name,))

        self._write(work)
        self._cache.pop(name, None)
        self._dims.pop(name, None)

    # -- records --------------------------------------------------------------------

    async def upsert(self, collection: str, records: Sequence[MemoryRecord]) -> int:
        return await self._run(self._upsert, collection, list(records))

    def _upsert(self, collection: str, records: list[MemoryRecord]) -> int:
        check_collection_name(collection)
        if not records:
            return 0
        dim = self._dimension(collection)
        rows = []
        for rec in records:  # validate everything before writing anything
            if rec.vector is None:
                raise MemoryStoreError(f"record {rec.id!r} in collection {collection!r} has no vector")
            vec = np.asarray(rec.vector, dtype=np.float32).reshape(-1)
            if dim is None:
                dim = len(vec)
            check_dimension(collection, dim, len(vec), rec.id)
            if not np.all(np.isfinite(vec)):
                raise MemoryStoreError(
                    f"record {rec.id!r} in collection {collection!r}: non-finite vector"
                )
            try:
                meta = json.dumps(rec.metadata, ensure_ascii=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise MemoryStoreError(
                    f"record {rec.id!r} in collection {collection!r}: metadata is not JSON: {exc}"
                ) from None
            rows.append((collection, rec.id or content_id(rec.text), rec.text, vec.tobytes(), meta))

        def work() -> None:
            # Check again under the write lock: another process may have created the
            # collection, with another dimension, since the check above.
            self._dims.pop(collection, None)
            stored = self._dimension(collection)
            if stored is not None and dim is not None and stored != dim:
                check_dimension(collection, stored, dim)
            self._conn.execute(
                "INSERT OR IGNORE INTO collections(name, dimension, created_at) VALUES (?, ?, ?)",
                (collection, dim, time.time()),
            )
            self._conn.executemany(
                "INSERT INTO records(collection, id, text, vector, metadata) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(collection, id) DO UPDATE SET text = excluded.text, "
                "vector = excluded.vector, metadata = excluded.metadata",
                rows,
            )

        self._write(work)
        self._cache.pop(collection, None)
        return len(rows)

    async def get(self, collection: str, ids: Sequence[str]) -> list[MemoryRecord]:
        return await self._run(self._get, collection, list(ids))

    def _get(self, collection: str, ids: list[str]) -> list[MemoryRecord]:
        dim = self._require(collection)
        found: dict[str, MemoryRecord] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self._conn.execute(
                f"SELECT id, text, vector, metadata FROM records "
                f"WHERE collection = ? AND id IN ({marks})",
                [collection, *part],
            ):
                rec_id, text, blob, meta = row
                vector = np.frombuffer(check_vector(collection, rec_id, blob, dim), dtype=np.float32)
                if not np.isfinite(vector).all():
                    raise corrupted(collection, rec_id, "the vector holds NaN or infinite values")
                text = check_text(collection, rec_id, text)
                found[rec_id] = MemoryRecord(rec_id, text, vector.tolist(), load_metadata(collection, rec_id, meta))
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        return await self._run(self._delete, collection, list(ids))

    def _delete(self, collection: str, ids: list[str]) -> int:
        self._require(collection)

        def work() -> int:
            n = 0
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                cur = self._conn.execute(
                    f"DELETE FROM records WHERE collection = ? AND id IN ({marks})",
                    [collection, *part],
                )
                n += cur.rowcount
            return n

        n = self._write(work)
        self._cache.pop(collection, None)
        return n

    async def count(self, collection: str) -> int:
        return await self._run(self._count, collection)

    def _count(self, collection: str) -> int:
        self._require(collection)
        row = self._conn.execute(
            "SELECT count(*) FROM records WHERE collection = ?", (collection,)
        ).fetchone()
        return int(row[0])

    async def list_ids(self, collection: str, filter: Filter | None = None) -> list[str]:
        """Ids of the records matching `filter` (all when None), in insertion order."""
        return await self._run(self._list_ids, collection, parse_filter(filter))

    def _list_ids(self, collection: str, flt: Filter | None) -> list[str]:
        m = self._matrix(collection, self._require(collection))
        if flt is None:
            return list(m.ids)
        return [i for i, md in zip(m.ids, m.metadata(), strict=True) if matches(flt, md)]

    # -- search ---------------------------------------------------------------------

    async def search(
        self, collection: str, vector: Sequence[float], k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]:
        return await self._run(self._search, collection, vector, k, parse_filter(filter))

    def _search(
        self, collection: str, vector: Sequence[float], k: int, flt: Filter | None
    ) -> list[SearchHit]:
        dim = self._require(collection)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        check_dimension(collection, dim, len(q))
        m = self._matrix(collection, dim)
        if k <= 0 or not m.ids:
            return []
        norm = float(np.linalg.norm(q))
        scores = m.matrix @ (q / norm if norm else q)
        if flt is not None:
            mask = np.fromiter(
                (matches(flt, md) for md in m.metadata()), dtype=bool, count=len(m.ids)
            )
            candidates = np.flatnonzero(mask)
            if candidates.size == 0:
                return []
            scores = scores[candidates]
        else:
            candidates = None
        k = min(k, scores.shape[0])
        n = scores.shape[0]
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by insertion order
        rows = top if candidates is None else candidates[top]
        rids = [int(m.rids[i]) for i in rows]
        records = self._fetch(collection, rids)
        # A record deleted by another process since the matrix was cached is skipped.
        return [SearchHit(records[r], float(scores[t])) for r, t in zip(rids, top, strict=True) if r in records]

    async def keyword_search(
        self, collection: str, query: str, k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]:
        return await self._run(self._keyword_search, collection, query, k, parse_filter(filter))

    def _keyword_search(
        self, collection: str, query: str, k: int, flt: Filter | None
    ) -> list[SearchHit]:
        self._require(collection)
        match = fts_query(query)
        if match is None or k <= 0:
            return []
        sql = (
            "SELECT r.id, r.text, r.metadata, bm25(records_fts) AS rank FROM records_fts "
            "JOIN records AS r ON r.rid = records_fts.rowid "
            "WHERE records_fts MATCH ? AND r.collection = ? ORDER BY rank, r.rid"
        )
        params: list[Any] = [match, collection]
        if flt is None:
            sql += " LIMIT ?"
            params.append(k)
        hits: list[SearchHit] = []
        for rec_id, text, meta, rank in self._conn.execute(sql, params):
            metadata = load_metadata(collection, rec_id, meta)
            if flt is not None and not matches(flt, metadata):
                continue
            hits.append(SearchHit(MemoryRecord(rec_id, check_text(collection, rec_id, text), None, metadata),
                                  -float(rank)))
            if len(hits) >= k:
                break
        return hits

    async def hybrid_search(
        self,
        collection: str,
        query: str,
        vector: Sequence[float],
        k: int = 4,
        filter: Filter | None = None,
    ) -> list[SearchHit]:
        flt = parse_filter(filter)
        n = hybrid_candidates(k)

        def both() -> list[SearchHit]:
            by_vector = self._search(collection, vector, n, flt)
            by_keyword = self._keyword_search(collection, query, n, flt)
            return fuse_hybrid(query, by_vector, by_keyword, k)

        return await self._run(both)

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]
                self._cache.clear()


def _factory(name: str, service: ServiceSettings, settings: KernelSettings) -> SQLiteVectorStore:
    options = dict(service.options)
    path = options.pop("path", None) or DEFAULT_PATH
    timeout = float(options.pop("timeout", 30.0))
    if options:
        raise ConfigurationError(
            f"service {name!r} (sqlite): unknown options {', '.join(sorted(options))}; "
            "expected path, timeout"
        )
    return SQLiteVectorStore(path, timeout=timeout)


@hookimpl
def register_connectors(register: Any) -> None:
    register("memory", "sqlite", _factory)
