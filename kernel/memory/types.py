"""Plain data types of vector memory: records, search hits, and data-only filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class MemoryRecord:
    """One stored chunk. `id` is stable (a content hash by default) so re-ingesting the
    same document is idempotent."""

    id: str
    text: str
    vector: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SearchHit:
    record: MemoryRecord
    score: float


@dataclass(frozen=True, slots=True)
class Condition:
    """`metadata[field] <op> value`; `op` is one of OPERATORS. Never evaluated as code."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class And:
    conditions: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    conditions: tuple[Filter, ...]


Filter = Condition | And | Or
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "contains")

COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"
"""Collection names: letters, digits, `_` and `-`, at most 48 characters (the PostgreSQL
store derives a table name from it)."""


def check_collection_name(name: str) -> str:
    """Return `name` if it is a valid collection name, else raise `MemoryStoreError` naming it."""
    import re

    from ..errors import MemoryStoreError

    if not isinstance(name, str) or re.fullmatch(COLLECTION_NAME_PATTERN, name) is None:
        raise MemoryStoreError(
            f"invalid collection name {name!r}: use 1-48 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_dimension(collection: str, expected: int, got: int, record_id: str | None = None) -> None:
    """Raise `MemoryStoreError` when a vector's dimension does not match its collection's."""
    from ..errors import MemoryStoreError

    if expected != got:
        where = f" (record {record_id!r})" if record_id is not None else ""
        raise MemoryStoreError(
            f"dimension mismatch in collection {collection!r}{where}: the collection holds "
            f"{expected}-dimensional vectors, got {got}"
        )


def content_id(text: str, source: str | None = None) -> str:
    """The default record id: sha256 of the source and the text, so that re-ingesting the
    same content upserts the same record instead of adding a duplicate."""
    import hashlib

    h = hashlib.sha256()
    if source is not None:
        h.update(source.encode("utf-8"))
        h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.hexdigest()


RRF_K = 60
"""Constant of reciprocal rank fusion (hybrid search): score = sum 1 / (RRF_K + rank)."""


def fuse_rrf(rankings: list[list[SearchHit]], k: int) -> list[SearchHit]:
    """Reciprocal rank fusion of several rankings (best first) into the top `k` hits.

    Ties keep the order of the first ranking, so the result is deterministic.
    """
    scores: dict[str, float] = {}
    records: dict[str, MemoryRecord] = {}
    order: dict[str, int] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            rid = hit.record.id
            scores[rid] = scores.get(rid, 0.0) + 1.0 / (RRF_K + rank)
            records.setdefault(rid, hit.record)
            order.setdefault(rid, len(order))
    best = sorted(scores, key=lambda r: (-scores[r], order[r]))[:k]
    return [SearchHit(records[r], scores[r]) for r in best]
