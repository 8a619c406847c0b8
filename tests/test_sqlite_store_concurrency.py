"""The SQLite store shared by two processes (two connections to one file): a write from
one side is never hidden from the other, and a collection can never hold two dimensions.
A record subclass runs the other side's write at the moment this side validates its batch,
which is exactly the window between the checks and the write transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite_store import SQLiteVectorStore
from kernel.errors import MemoryStoreError
from kernel.memory import MemoryRecord


def interleaved(action: Any, vector: list[float]) -> MemoryRecord:
    class DuringValidation(MemoryRecord):
        __slots__ = ()

        @property  # type: ignore[override]
        def vector(self) -> list[float]:
            action()
            return vector

        @vector.setter
        def vector(self, value: Any) -> None:
            pass

    return DuringValidation("late", "late record", None, {})


async def test_another_process_creating_the_collection_with_another_dimension(tmp_path: Path) -> None:
    a, b = SQLiteVectorStore(tmp_path / "m.db"), SQLiteVectorStore(tmp_path / "m.db")
    other = MemoryRecord("b1", "from b", [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(MemoryStoreError, match="holds 4-dimensional vectors, got 3"):
        await a.upsert("c", [interleaved(lambda: b._locked(b._upsert, "c", [other]), [1.0, 0.0, 0.0])])
    reader = SQLiteVectorStore(tmp_path / "m.db")
    assert await reader.count("c") == 1
    assert [h.record.id for h in await reader.search("c", [1.0, 0.0, 0.0, 0.0], k=2)] == ["b1"]
    for store in (a, b, reader):
        await store.close()


async def test_a_delete_by_another_process_during_our_write_reaches_our_search(tmp_path: Path) -> None:
    a, b = SQLiteVectorStore(tmp_path / "m.db"), SQLiteVectorStore(tmp_path / "m.db")
    await a.upsert("c1", [MemoryRecord("x1", "one", [1.0, 0.0, 0.0]), MemoryRecord("x2", "two", [0.0, 1.0, 0.0])])
    assert [h.record.id for h in await a.search("c1", [1.0, 0.0, 0.0], k=2)] == ["x1", "x2"]
    await a.upsert("c2", [interleaved(lambda: b._locked(b._delete, "c1", ["x1"]), [1.0, 0.0, 0.0])])
    assert await a.count("c1") == 1
    assert [h.record.id for h in await a.search("c1", [1.0, 0.0, 0.0], k=2)] == ["x2"]
    for store in (a, b):
        await store.close()
