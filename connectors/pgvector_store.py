"""Vector store on PostgreSQL + pgvector (providers "postgres" and "pgvector").

Needs the `[postgres]` extra: psycopg 3 (async), psycopg_pool, pgvector.

* DSN: `options.dsn`, else the environment variable `KERNEL_POSTGRES_DSN` (never logged).
* `CREATE EXTENSION IF NOT EXISTS vector`; a registry table `kernel_collections` and one
  table per collection (`kmem_<name>`) with a `vector(dim)` column and an HNSW index
  (`vector_cosine_ops`), JSONB metadata (GIN index) and a generated `tsvector` column
  (GIN index) for keyword search (`ts_rank`, english configuration).
* Same behaviour as the SQLite store: cosine similarity scores, filters with the same
  semantics (`kernel.filters.to_postgres`: bound parameters only), reciprocal rank
  fusion for hybrid search, upsert `ON CONFLICT (id)`, one transaction per call.
* A pool that checks connections before handing them out; an operation that fails with
  an `OperationalError` (server restarted) is retried once on a fresh connection.
* A row damaged outside the store (metadata that is not a JSON object, a NULL or
  wrong-sized vector, NULL text) is a `MemoryStoreError` naming the collection and the
  record id, raised by every read that decodes it; the record can still be deleted by id.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from kernel.errors import ConfigurationError, ExtraNotInstalledError, MemoryStoreError
from kernel.hookspecs import hookimpl
from kernel.logging import mask_text, register_secret_env, register_secrets, secrets_in
from kernel.memory import (
    Filter,
    MemoryRecord,
    SearchHit,
    check_collection_name,
    check_dimension,
    content_id,
    fuse_hybrid,
    hybrid_candidates,
    parse_filter,
)

from ._postgres_filters import to_postgres

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

DSN_ENV = "KERNEL_POSTGRES_DSN"
register_secret_env(DSN_ENV)  # its password is masked everywhere, read again at each Kernel()
TABLE_PREFIX = "kmem_"
REGISTRY = "kernel_collections"
T = TypeVar("T")


def _imports() -> tuple[Any, Any, Any, Any]:
    try:
        import psycopg
        from pgvector.psycopg import register_vector_async
        from psycopg import sql
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise ExtraNotInstalledError(
            "the PostgreSQL vector store", "postgres", exc.name or "psycopg"
        ) from None
    return psycopg, sql, AsyncConnectionPool, register_vector_async


def websearch_query(query: str) -> str | None:
    """The words of `query` joined with `or` for `websearch_to_tsquery` (never a syntax error)."""
    words = re.findall(r"\w+", query)
    return " or ".join(words) if words else None


class PgVectorStore:
    """`VectorStore` on PostgreSQL with pgvector (see the module docstring)."""

    provider = "postgres"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 30.0) -> None:
        register_secrets(secrets_in(dsn, "dsn"))  # the password, masked even when quoted alone
        self._psycopg, self._sql, self._pool_cls, self._register = _imports()
        self._dsn = dsn
        self._min_size, self._max_size, self._timeout = min_size, max_size, timeout
        self._pool: Any = None
        self._init_lock = asyncio.Lock()
        self._dims: dict[str, int] = {}

    def __repr__(self) -> str:  # never show the DSN (it may hold a password)
        return f"PgVectorStore(pool={'open' if self._pool else 'closed'})"

    # -- plumbing -------------------------------------------------------------------

    async def _ensure(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._init_lock:
            if self._pool is not None:
                return self._pool
            try:
                conn = await self._psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            except self._psycopg.OperationalError as exc:
                raise MemoryStoreError(f"cannot connect to PostgreSQL: {_safe(exc)}") from None
            async with conn:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {REGISTRY} (name text PRIMARY KEY, "
                    "dimension integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
                )
            register = self._register

            async def configure(c: Any) -> None:
                await register(c)
                await c.set_autocommit(False)

            pool = self._pool_cls(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                open=False,
                configure=configure,
                check=self._pool_cls.check_connection,
            )
            await pool.open(wait=True, timeout=self._timeout)
            self._pool = pool
            return pool

    async def _run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn(conn)` in one transaction; retry once after a lost connection."""
        pool = await self._ensure()
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    return await fn(conn)
            except self._psycopg.OperationalError as exc:
                if attempt == 2:
                    raise MemoryStoreError(f"PostgreSQL operation failed: {_safe(exc)}") from None
                await pool.check()  # drop broken connections, then retry once
        raise AssertionError("unreachable")

    def _table(self, collection: str, suffix: str = "") -> Any:
        return self._sql.Identifier(f"{TABLE_PREFIX}{collection}{suffix}")

    async def _dimension(self, conn: Any, collection: str) -> int | None:
        if collection in self._dims:
            return self._dims[collection]
        cur = await conn.execute(f"SELECT dimension FROM {REGISTRY} WHERE name = %s", (collection,))
        row = await cur.fetchone()
        if row is None:
            return None
        self._dims[collection] = int(row[0])
        return self._dims[collection]

    async def _require(self, conn: Any, collection: str) -> int:
        check_collection_name(collection)
        dim = await self._dimension(conn, collection)
        if dim is None:
            names = await self._names(conn)
            raise MemoryStoreError(
                f"no collection named {collection!r} in PostgreSQL; existing: {', '.join(names) or 'none'}"
            )
        return dim

    async def _names(self, conn: Any) -> list[str]:
        cur = await conn.execute(f"SELECT name FROM {REGISTRY} ORDER BY name")
        return [r[0] for r in await cur.fetchall()]

    async def _create(self, conn: Any, name: str, dimension: int) -> None:
        sql = self._sql
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kmem:{name}",))
        self._dims.pop(name, None)
        existing = await self._dimension(conn, name)
        if existing is not None:
            check_dimension(name, existing, dimension)
            return
        t = self._table(name)
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (rid bigserial, id text PRIMARY KEY, text text NOT NULL, "
                "embedding vector({dim}) NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, "
                "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)"
            ).format(t=t, dim=sql.Literal(int(dimension)))
        )
        await conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)").format(
                i=self._table(name, "_hnsw"), t=t
            )
        )
        await conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (metadata)").format(
                i=self._table(name, "_meta"), t=t
            )
        )
        await conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                i=self._table(name, "_tsv"), t=t
            )
        )
        await conn.execute(
            f"INSERT INTO {REGISTRY} (name, dimension) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (name, int(dimension)),
        )
        self._dims[name] = int(dimension)

    def _where(self, flt: Filter | None) -> tuple[Any, list[Any]]:
        text, params = to_postgres(flt, "metadata")
        return self._sql.SQL(text), params  # generated by us: bound parameters only

    # -- collections ----------------------------------------------------------------

    async def create_collection(self, name: str, dimension: int) -> None:
        check_collection_name(name)
        if not isinstance(dimension, int) or dimension < 1:
            raise MemoryStoreError(f"collection {name!r}: dimension must be a positive integer")
        await self._run(lambda conn: self._create(conn, name, dimension))

    async def list_collections(self) -> list[str]:
        return await self._run(self._names)

    async def delete_collection(self, name: str) -> None:
        check_collection_name(name)

        async def work(conn: Any) -> None:
            await conn.execute(self._sql.SQL("DROP TABLE IF EXISTS {t}").format(t=self._table(name)))
            await conn.execute(f"DELETE FROM {REGISTRY} WHERE name = %s", (name,))

        await self._run(work)
        self._dims.pop(name, None)

    # -- records --------------------------------------------------------------------

    async def upsert(self, collection: str, records: Sequence[MemoryRecord]) -> int:
        check_collection_name(collection)
        records = list(records)
        if not records:
            return 0
        import numpy as np

        vectors = []
        for rec in records:
            if rec.vector is None:
                raise MemoryStoreError(f"record {rec.id!r} in collection {collection!r} has no vector")
            vectors.append(np.asarray(rec.vector, dtype=np.float32).reshape(-1))
        Jsonb = self._psycopg.types.json.Jsonb

        async def work(conn: Any) -> int:
            dim = await self._dimension(conn, collection)
            if dim is None:
                dim = len(vectors[0])
            for rec, vec in zip(records, vectors, strict=True):
                check_dimension(collection, dim, len(vec), rec.id)
            await self._create(conn, collection, dim)
            rows = [
                (rec.id or content_id(rec.text), rec.text, vec, Jsonb(rec.metadata))
                for rec, vec in zip(records, vectors, strict=True)
            ]
            async with conn.cursor() as cur:
                await cur.executemany(
                    self._sql.SQL(
                        "INSERT INTO {t} (id, text, embedding, metadata) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET text = excluded.text, "
                        "embedding = excluded.embedding, metadata = excluded.metadata"
                    ).format(t=self._table(collection)),
                    rows,
                )
            return len(rows)

        try:
            return await self._run(work)
        except self._psycopg.errors.DataError as exc:
            raise MemoryStoreError(f"upsert into collection {collection!r} failed: {_safe(exc)}") from None

    async def get(self, collection: str, ids: Sequence[str]) -> list[MemoryRecord]:
        ids = list(ids)

        async def work(conn: Any) -> list[MemoryRecord]:
            dim = await self._require(conn, collection)
            cur = await conn.execute(
                self._sql.SQL("SELECT id, text, embedding, metadata FROM {t} WHERE id = ANY(%s)").format(
                    t=self._table(collection)
                ),
                (ids,),
            )
            found = {
                r[0]: _record(collection, r[0], r[1], r[3], vector=_vector(collection, r[0], r[2], dim))
                for r in await cur.fetchall()
            }
            return [found[i] for i in dict.fromkeys(ids) if i in found]

        return await self._run(work)

    async def delete(self, collection: str, ids: Sequence[str]) -> int:
        ids = list(ids)

        async def work(conn: Any) -> int:
            await self._require(conn, collection)
            cur = await conn.execute(
                self._sql.SQL("DELETE FROM {t} WHERE id = ANY(%s)").format(t=self._table(collection)),
                (ids,),
            )
            return int(cur.rowcount)

        return await self._run(work)

    async def count(self, collection: str) -> int:
        async def work(conn: Any) -> int:
            await self._require(conn, collection)
            cur = await conn.execute(
                self._sql.SQL("SELECT count(*) FROM {t}").format(t=self._table(collection))
            )
            row = await cur.fetchone()
            return int(row[0])

        return await self._run(work)

    async def list_ids(self, collection: str, filter: Filter | None = None) -> list[str]:
        """Ids of the records matching `filter` (all when None), in insertion order."""
        where, params = self._where(parse_filter(filter))

        async def work(conn: Any) -> list[str]:
            await self._require(conn, collection)
            query = (
                self._sql.SQL("SELECT id FROM {t} WHERE ").format(t=self._table(collection))
                + where
                + self._sql.SQL(" ORDER BY rid")
            )
            cur = await conn.execute(query, params)
            return [r[0] for r in await cur.fetchall()]

        return await self._run(work)

    # -- search ---------------------------------------------------------------------

    async def _vector_hits(
        self, conn: Any, collection: str, vector: Sequence[float], k: int, flt: Filter | None
    ) -> list[SearchHit]:
        import numpy as np

        dim = await self._require(conn, collection)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        check_dimension(collection, dim, len(q))
        if k <= 0:
            return []
        where, params = self._where(flt)
        # exact results under a filter: let the HNSW scan continue past filtered-out rows
        await conn.execute("SET LOCAL hnsw.ef_search = 200")
        with_iterative = await self._iterative(conn)
        if with_iterative:
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        query = (
            self._sql.SQL(
                "SELECT id, text, metadata, 1 - (embedding <=> %s) AS score FROM {t} WHERE "
            ).format(t=self._table(collection))
            + where
            + self._sql.SQL(" ORDER BY embedding <=> %s, rid LIMIT %s")
        )
        cur = await conn.execute(query, [q, *params, q, k])
        hits = []
        for r in await cur.fetchall():
            if r[3] is None:  # NULL <=> q
                raise _corrupted(collection, r[0], "the vector is NULL")
            hits.append(SearchHit(_record(collection, r[0], r[1], r[2]), float(r[3])))
        return hits

    async def _iterative(self, conn: Any) -> bool:
        if not hasattr(self, "_has_iterative"):
            cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = await cur.fetchone()
            parts = tuple(int(p) for p in re.findall(r"\d+", row[0] if row else "0")[:2])
            self._has_iterative = parts >= (0, 8)
        return self._has_iterative

    async def _keyword_hits(
        self, conn: Any, collection: str, query: str, k: int, flt: Filter | None
    ) -> list[SearchHit]:
        await self._require(conn, collection)
        words = websearch_query(query)
        if words is None or k <= 0:
            return []
        where, params = self._where(flt)
        sql_query = (
            self._sql.SQL(
                "SELECT id, text, metadata, ts_rank(tsv, q) AS score "
                "FROM {t}, websearch_to_tsquery('english', %s) AS q WHERE tsv @@ q AND "
            ).format(t=self._table(collection))
            + where
            + self._sql.SQL(" ORDER BY score DESC, rid LIMIT %s")
        )
        cur = await conn.execute(sql_query, [words, *params, k])
        return [SearchHit(_record(collection, r[0], r[1], r[2]), float(r[3])) for r in await cur.fetchall()]

    async def search(
        self, collection: str, vector: Sequence[float], k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]:
        flt = parse_filter(filter)
        return await self._run(lambda conn: self._vector_hits(conn, collection, vector, k, flt))

    async def keyword_search(
        self, collection: str, query: str, k: int = 4, filter: Filter | None = None
    ) -> list[SearchHit]:
        flt = parse_filter(filter)
        return await self._run(lambda conn: self._keyword_hits(conn, collection, query, k, flt))

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

        async def work(conn: Any) -> list[SearchHit]:
            by_vector = await self._vector_hits(conn, collection, vector, n, flt)
            by_keyword = await self._keyword_hits(conn, collection, query, n, flt)
            return fuse_hybrid(query, by_vector, by_keyword, k)

        return await self._run(work)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _floats(value: Any) -> list[float]:
    """A pgvector value (numpy array or `Vector`) as a list of floats."""
    if hasattr(value, "to_list"):
        return [float(x) for x in value.to_list()]
    return [float(x) for x in value.tolist()]


def _corrupted(collection: str, record_id: object, problem: str) -> MemoryStoreError:
    return MemoryStoreError(
        f"corrupted record {record_id!r} in collection {collection!r}: {problem}; "
        "delete it by id and ingest its document again"
    )


def _vector(collection: str, record_id: object, value: Any, dim: int | None) -> list[float]:
    """A stored embedding as floats, or `MemoryStoreError` naming the record."""
    if value is None:
        raise _corrupted(collection, record_id, "the vector is NULL")
    floats = _floats(value)
    if dim is not None and len(floats) != dim:
        raise _corrupted(collection, record_id, f"the vector has {len(floats)} dimensions, expected {dim}")
    if not all(math.isfinite(x) for x in floats):
        raise _corrupted(collection, record_id, "the vector holds NaN or infinite values")
    return floats


def _record(
    collection: str, record_id: object, text: object, metadata: object, vector: list[float] | None = None
) -> MemoryRecord:
    """A row as a `MemoryRecord`, or `MemoryStoreError` naming the damaged record."""
    if not isinstance(metadata, dict):
        what = "NULL" if metadata is None else f"a JSON {type(metadata).__name__}"
        raise _corrupted(collection, record_id, f"metadata is {what}, not a JSON object")
    if not isinstance(text, str):
        raise _corrupted(collection, record_id, "the text is NULL")
    return MemoryRecord(str(record_id), text, vector, metadata)


def _safe(exc: BaseException) -> str:
    """An error message without connection secrets (psycopg may echo the DSN)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(re.sub(r"password=\S+|://[^@/\s]*@", "<redacted>", text))


def _factory(name: str, service: ServiceSettings, settings: KernelSettings) -> PgVectorStore:
    options = dict(service.options)
    dsn = options.pop("dsn", None) or os.environ.get(DSN_ENV)
    register_secrets(secrets_in(dsn, "dsn"))
    if not dsn:
        raise ConfigurationError(
            f"service {name!r} ({service.provider}): no PostgreSQL DSN; set options.dsn in "
            f"[services.{name}.options] or the environment variable {DSN_ENV}"
        )
    kwargs = {k: options.pop(k) for k in ("min_size", "max_size", "timeout") if k in options}
    if options:
        raise ConfigurationError(
            f"service {name!r} ({service.provider}): unknown options {', '.join(sorted(options))}; "
            "expected dsn, min_size, max_size, timeout"
        )
    return PgVectorStore(str(dsn), **kwargs)


@hookimpl
def register_connectors(register: Any) -> None:
    register("memory", "postgres", _factory)
    register("memory", "pgvector", _factory)
