"""One behaviour, every store: the same tests run unchanged on SQLite and PostgreSQL.

The PostgreSQL store runs against a real server (pgserver fixture); each test uses its
own collection, so tests share the server without seeing each other's data.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.pgvector_store import PgVectorStore
from connectors.sqlite_store import SQLiteVectorStore
from kernel.errors import FilterError, MemoryStoreError
from kernel.memory import MemoryRecord, matches, parse_filter

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SQLiteVectorStore(tmp_path / "memory.db")
    else:
        s = PgVectorStore(request.getfixturevalue("postgres_dsn"))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def unit(angle_deg: float) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a), 0.0]


# -- collections ------------------------------------------------------------------------


async def test_collections_lifecycle(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    assert name in await store.list_collections()
    await store.create_collection(name, 3)  # same dimension: no-op
    with pytest.raises(MemoryStoreError, match=rf"{name}.*3.*got 4"):
        await store.create_collection(name, 4)
    assert await store.count(name) == 0
    await store.delete_collection(name)
    assert name not in await store.list_collections()
    with pytest.raises(MemoryStoreError, match=name):
        await store.count(name)


async def test_invalid_collection_name(store: Any) -> None:
    with pytest.raises(MemoryStoreError, match="invalid collection name"):
        await store.create_collection("bad name; drop table x", 3)


# -- records ----------------------------------------------------------------------------


async def test_upsert_get_delete_count(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    recs = [
        MemoryRecord("a", "alpha", [1.0, 0.0, 0.5], {"source": "a.md", "n": 1}),
        MemoryRecord("b", "beta", [0.0, 1.0, 0.25], {"source": "b.md", "tags": ["x"]}),
        MemoryRecord("c", "gamma", [0.5, 0.5, 0.0], {}),
    ]
    assert await store.upsert(name, recs) == 3
    assert await store.count(name) == 3
    got = await store.get(name, ["c", "missing", "a"])
    assert [r.id for r in got] == ["c", "a"]
    assert got[1].text == "alpha" and got[1].vector == [1.0, 0.0, 0.5]
    assert got[1].metadata == {"source": "a.md", "n": 1}
    assert await store.delete(name, ["a", "missing"]) == 1
    assert await store.count(name) == 2
    assert await store.get(name, ["a"]) == []


async def test_reupsert_is_idempotent_and_updates(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    recs = [MemoryRecord(f"r{i}", f"text {i}", unit(i * 10), {"i": i}) for i in range(5)]
    await store.upsert(name, recs)
    await store.upsert(name, recs)
    assert await store.count(name) == 5
    await store.upsert(name, [MemoryRecord("r2", "changed", unit(90), {"i": 2, "v": 2})])
    assert await store.count(name) == 5
    [r2] = await store.get(name, ["r2"])
    assert r2.text == "changed" and r2.metadata == {"i": 2, "v": 2}
    hits = await store.keyword_search(name, "changed", k=3)
    assert [h.record.id for h in hits] == ["r2"]


async def test_upsert_without_collection_creates_it(store: Any, name: str) -> None:
    await store.upsert(name, [MemoryRecord("a", "x", [1.0, 0.0])])
    assert name in await store.list_collections()
    with pytest.raises(MemoryStoreError, match=rf"collection '{name}'.*2-dimensional.*got 3"):
        await store.upsert(name, [MemoryRecord("b", "y", [1.0, 0.0, 0.0])])


async def test_dimension_mismatch(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    ok = MemoryRecord("ok", "fine", [1.0, 0.0, 0.0])
    bad = MemoryRecord("bad", "wrong", [1.0, 0.0])
    with pytest.raises(MemoryStoreError, match=rf"'{name}'.*'bad'.*3-dimensional.*got 2"):
        await store.upsert(name, [ok, bad])
    assert await store.count(name) == 0  # the whole batch was refused
    with pytest.raises(MemoryStoreError, match=rf"'{name}'.*3-dimensional.*got 4"):
        await store.search(name, [1.0, 0.0, 0.0, 0.0])


# -- vector search ----------------------------------------------------------------------


async def test_vector_search_order_and_scores(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    angles = {"a0": 0, "a20": 20, "a45": 45, "a90": 90, "a180": 180}
    await store.upsert(name, [MemoryRecord(i, i, unit(a), {}) for i, a in angles.items()])
    query = [3 * x for x in unit(10)]  # scale must not matter: cosine similarity
    hits = await store.search(name, query, k=4)
    assert [h.record.id for h in hits] == ["a0", "a20", "a45", "a90"]
    for h in hits:
        assert h.score == pytest.approx(math.cos(math.radians(angles[h.record.id] - 10)), abs=1e-5)
    assert all(h.record.text == h.record.id for h in hits)
    assert len(await store.search(name, query, k=100)) == 5


# -- filters ----------------------------------------------------------------------------

DATA: list[tuple[str, dict[str, Any]]] = [
    ("d1", {"source": "a.md", "year": 2019, "draft": True, "tags": ["py", "db"], "info": {"lang": "en"}}),
    ("d2", {"source": "b.md", "year": 2020.0, "draft": False, "tags": ["go"], "info": {"lang": "fr"}}),
    ("d3", {"source": "notes/c.md", "year": 2021, "tags": [], "title": "Vector search guide"}),
    ("d4", {"source": "d.txt", "year": "2022", "title": "keyword search", "score": None}),
    ("d5", {"source": "e.md", "year": 1, "flag": 1}),
]

FILTER_CASES: list[tuple[Any, set[str]]] = [
    ({"field": "source", "op": "eq", "value": "a.md"}, {"d1"}),
    ("year=2020", {"d2"}),  # 2020 equals 2020.0
    ("year=2022", set()),  # a number never equals the string "2022"
    ('year="2022"', {"d4"}),
    ("draft=true", {"d1"}),
    ("flag=true", set()),  # true never equals 1
    ("score=null", {"d4"}),
    ("source!=a.md", {"d2", "d3", "d4", "d5"}),
    ("draft!=true", {"d2", "d3", "d4", "d5"}),  # missing fields count as "not equal"
    ("year<2020", {"d1", "d5"}),
    ("year<=2020", {"d1", "d2", "d5"}),
    ("year>2020", {"d3"}),  # the string "2022" is not compared with a number
    ("year>=2020", {"d2", "d3"}),
    ("title>a", {"d4"}),  # strings compare by code point: "V" < "a" < "k"
    ("title<a", {"d3"}),
    ("source in a.md,b.md,zz", {"d1", "d2"}),
    ("year in 2019,2021", {"d1", "d3"}),
    ("source not in a.md,b.md", {"d3", "d4", "d5"}),
    ("tags not in x", {"d1", "d2", "d3", "d4", "d5"}),
    ("tags contains py", {"d1"}),
    ("title contains search", {"d3", "d4"}),
    ("source contains notes/", {"d3"}),
    ("info.lang=fr", {"d2"}),
    ({"and": [{"field": "year", "op": "gte", "value": 2019}, {"field": "draft", "op": "eq", "value": False}]}, {"d2"}),
    (
        {"or": [{"field": "source", "op": "eq", "value": "e.md"}, {"field": "tags", "op": "contains", "value": "go"}]},
        {"d2", "d5"},
    ),
    (
        {"and": [
            {"or": [
                {"field": "year", "op": "lt", "value": 2020},
                {"field": "title", "op": "contains", "value": "guide"},
            ]},
            {"field": "source", "op": "ne", "value": "e.md"},
        ]},
        {"d1", "d3"},
    ),
    ("source=x' OR '1'='1", set()),  # values are bound parameters, never SQL
]


async def _filter_collection(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    await store.upsert(
        name,
        [MemoryRecord(i, f"document {i} search", unit(n * 15), md) for n, (i, md) in enumerate(DATA)],
    )


@pytest.mark.parametrize(("spec", "expected"), FILTER_CASES, ids=[str(c[0])[:40] for c in FILTER_CASES])
async def test_filters(store: Any, name: str, spec: Any, expected: set[str]) -> None:
    # the reference evaluator agrees with the expectation, and so does every store
    flt = parse_filter(spec)
    assert {i for i, md in DATA if matches(flt, md)} == expected
    await _filter_collection(store, name)
    by_vector = await store.search(name, unit(0), k=10, filter=flt)
    assert {h.record.id for h in by_vector} == expected
    by_keyword = await store.keyword_search(name, "document", k=10, filter=flt)
    assert {h.record.id for h in by_keyword} == expected
    by_hybrid = await store.hybrid_search(name, "document", unit(0), k=10, filter=flt)
    assert {h.record.id for h in by_hybrid} == expected
    assert set(await store.list_ids(name, flt)) == expected


async def test_every_operator_is_covered() -> None:
    from kernel.memory import OPERATORS, And, Condition, Or

    used: set[str] = set()

    def walk(f: Any) -> None:
        if isinstance(f, Condition):
            used.add(f.op)
        elif isinstance(f, And | Or):
            for c in f.conditions:
                walk(c)

    for spec, _ in FILTER_CASES:
        walk(parse_filter(spec))
    assert used == set(OPERATORS)


async def test_unknown_operator_and_bad_field(store: Any, name: str) -> None:
    await _filter_collection(store, name)
    with pytest.raises(FilterError, match="'like'"):
        await store.search(name, unit(0), filter={"field": "source", "op": "like", "value": "a%"})
    with pytest.raises(FilterError, match="invalid filter field"):
        await store.search(name, unit(0), filter={"field": "x') OR 1=1 --", "op": "eq", "value": 1})
    with pytest.raises(FilterError, match="unrecognised filter"):
        await store.keyword_search(name, "document", filter={"source": "a.md"})


# -- keyword and hybrid -----------------------------------------------------------------

TEXTS = {
    "pg": "PostgreSQL replication streams the write-ahead log to standby servers.",
    "run": "The service runs background jobs and retries failed jobs.",
    "cook": "Slow cooking brings out the flavour of onions and garlic.",
    "mix": "Replication of jobs across servers: each job runs once.",
}


async def _text_collection(store: Any, name: str) -> None:
    await store.create_collection(name, 3)
    angles = {"pg": 80, "run": 60, "cook": 0, "mix": 40}
    await store.upsert(name, [MemoryRecord(i, t, unit(angles[i]), {"kind": i}) for i, t in TEXTS.items()])


async def test_keyword_search(store: Any, name: str) -> None:
    await _text_collection(store, name)
    hits = await store.keyword_search(name, "replication servers", k=4)
    ids = [h.record.id for h in hits]
    assert set(ids) == {"pg", "mix"}
    assert all(h.score > 0 for h in hits)
    # stemming: "running" finds "runs"; punctuation in the query is harmless
    stemmed = await store.keyword_search(name, 'running?! "jobs', k=4)
    assert {h.record.id for h in stemmed} == {"run", "mix"}
    assert await store.keyword_search(name, "zebra", k=4) == []
    assert await store.keyword_search(name, "  ...  ", k=4) == []


async def test_hybrid_search_fuses_both_rankings(store: Any, name: str) -> None:
    await _text_collection(store, name)
    # the vector ranks "cook" first; the keywords match "pg" and "mix"; "mix" is second by
    # vector (40 degrees from 10) and matches both words, so fusion puts it first
    hits = await store.hybrid_search(name, "replication servers", unit(10), k=4)
    ids = [h.record.id for h in hits]
    assert ids[0] == "mix"
    assert set(ids) == {"mix", "cook", "pg", "run"}
    assert ids.index("pg") < ids.index("run")  # pg matches keywords, run does not
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(await store.hybrid_search(name, "replication", unit(10), k=2)) == 2


# -- PostgreSQL only: the server goes away and comes back -------------------------------


@pytest.mark.postgres
async def test_postgres_reconnects_after_restart_without_duplicates(postgres: Any, name: str) -> None:
    store = PgVectorStore(postgres.dsn, min_size=2, max_size=3)
    try:
        recs = [MemoryRecord(f"r{i}", f"record number {i}", unit(i * 7), {"i": i}) for i in range(20)]
        await store.upsert(name, recs)
        assert await store.count(name) == 20
        postgres.restart()  # every pooled connection is now dead
        assert await store.upsert(name, recs) == 20  # same records again
        assert await store.count(name) == 20  # ON CONFLICT: no duplicates
        hits = await store.search(name, unit(0), k=3)
        assert [h.record.id for h in hits] == ["r0", "r1", "r2"]
        assert len(await store.keyword_search(name, "record", k=50)) == 20
    finally:
        await store.delete_collection(name)
        await store.close()


# -- a row damaged outside the store ----------------------------------------------------

# how each store's row is damaged: (SQL, parameters) per store; `{t}` is the table
DAMAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "metadata-null": {
        "sqlite": ("UPDATE records SET metadata = 'null' WHERE collection = ? AND id = ?",),
        "postgres": ("UPDATE {t} SET metadata = 'null'::jsonb WHERE id = %s",),
    },
    "metadata-array": {
        "sqlite": ("UPDATE records SET metadata = '[1, 2]' WHERE collection = ? AND id = ?",),
        "postgres": ("UPDATE {t} SET metadata = '[1, 2]'::jsonb WHERE id = %s",),
    },
    "vector": {  # SQLite: a BLOB of two floats in a 3-dimensional collection; PostgreSQL: NULL
        "sqlite": ("UPDATE records SET vector = zeroblob(8) WHERE collection = ? AND id = ?",),
        "postgres": (
            "ALTER TABLE {t} ALTER COLUMN embedding DROP NOT NULL",
            "UPDATE {t} SET embedding = NULL WHERE id = %s",
        ),
    },
}


async def damage(store: Any, collection: str, record_id: str, how: str) -> None:
    """Damage one row with the database's own client, as a bad migration or a hand edit would."""
    if isinstance(store, SQLiteVectorStore):
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            for sql in DAMAGES[how]["sqlite"]:
                assert conn.execute(sql, (collection, record_id)).rowcount == 1
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(store._dsn, autocommit=True) as conn:
        for sql in DAMAGES[how]["postgres"]:
            table = f'"kmem_{collection}"'
            await conn.execute(sql.format(t=table), (record_id,) if "%s" in sql else None)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", list(DAMAGES))
async def test_a_damaged_row_is_a_memory_store_error_naming_collection_and_record(
    store: Any, name: str, how: str
) -> None:
    await store.create_collection(name, 3)
    await store.upsert(name, [
        MemoryRecord("good", "healthy words", unit(0), {"k": 1}),
        MemoryRecord("bad", "damaged words", unit(5), {"k": 2}),
    ])
    await store.get(name, ["good", "bad"])  # read once: any cache is warm
    await damage(store, name, "bad", how)
    reads: dict[str, Any] = {
        "get": lambda: store.get(name, ["good", "bad"]),
        "search": lambda: store.search(name, unit(0), k=5),
        "hybrid_search": lambda: store.hybrid_search(name, "words", unit(0), k=5),
    }
    if how.startswith("metadata"):  # keyword search reads metadata, not vectors
        reads["keyword_search"] = lambda: store.keyword_search(name, "words", k=5)
    for call, read in reads.items():
        with pytest.raises(MemoryStoreError) as info:
            await read()
        message = str(info.value)
        assert f"'{name}'" in message and "'bad'" in message, (call, message)
        assert not isinstance(info.value, FilterError)
    # the damaged record can be deleted by id; the collection is whole again
    assert await store.delete(name, ["bad"]) == 1
    assert [r.id for r in await store.get(name, ["good", "bad"])] == ["good"]
    assert [h.record.id for h in await store.search(name, unit(0), k=5)] == ["good"]


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE records SET metadata = '{\"k\": ' WHERE collection = ? AND id = ?", "not valid JSON"),
        ("UPDATE records SET metadata = 'null' WHERE collection = ? AND id = ?", "not an object"),
        ("UPDATE records SET metadata = x'00ff' WHERE collection = ? AND id = ?", "not valid JSON"),
        ("UPDATE records SET vector = zeroblob(7) WHERE collection = ? AND id = ?", "7 bytes, expected 12"),
        ("UPDATE records SET vector = zeroblob(16) WHERE collection = ? AND id = ?", "16 bytes, expected 12"),
        ("UPDATE records SET vector = 'text' WHERE collection = ? AND id = ?", "not a BLOB"),
        ("UPDATE records SET vector = ? WHERE collection = ? AND id = ?", "NaN or infinite"),
    ],
    ids=["invalid-json", "json-null", "blob", "7-bytes", "16-bytes", "text-vector", "nan"],
)
async def test_sqlite_file_damaged_with_sqlite3(tmp_path: Any, name: str, sql: str, problem: str) -> None:
    """The SQLite file edited with sqlite3 behind the store's back (while it is open, and
    after reopening): every read names the collection and the record, never a raw
    ValueError or JSONDecodeError; listing with a filter too."""
    import sqlite3
    import struct

    path = tmp_path / "damaged.db"
    store = SQLiteVectorStore(path)
    try:
        await store.upsert(name, [MemoryRecord("good", "healthy words", unit(0), {"k": 1}),
                                  MemoryRecord("bad", "damaged words", unit(5), {"k": 2})])
        await store.search(name, unit(0))  # the matrix is cached
        params: tuple[Any, ...] = (name, "bad")
        if "vector = ?" in sql:
            params = (struct.pack("<3f", 1.0, float("nan"), 0.0), *params)
        with sqlite3.connect(path) as conn:
            assert conn.execute(sql, params).rowcount == 1
        for reopen in (False, True):
            if reopen:
                await store.close()
                store = SQLiteVectorStore(path)
            if "vector" in sql:
                reads = [store.get(name, ["bad"]), store.search(name, unit(0)), store.list_ids(name)]
            else:
                reads = [store.get(name, ["bad"]), store.keyword_search(name, "damaged", k=3),
                         store.list_ids(name, "k=2")]
            expected = rf"corrupted record 'bad' in collection '{name}'.*{problem}"
            for read in reads:
                with pytest.raises(MemoryStoreError, match=expected):
                    await read
        assert await store.delete(name, ["bad"]) == 1
        assert await store.list_ids(name, "k=1") == ["good"]
    finally:
        await store.close()
