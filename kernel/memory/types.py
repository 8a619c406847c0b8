"""Plain data types of vector memory: records, search hits, and data-only filters."""

from __future__ import annotations

import re
from collections.abc import Sequence
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


DEFAULT_COLLECTION = "docs"
"""The collection memory reads and fills when none is named."""

RRF_K = 60
"""Constant of reciprocal rank fusion (hybrid search): score = sum weight / (RRF_K + rank)."""

KEYWORD_WEIGHT = 0.5
"""Weight of the keyword ranking in hybrid search for a query in words: half the vector
ranking's, so that words a question shares with many passages do not outvote meaning
(`tests/benchmarks/bench_retrieval.py`: on paraphrased questions, MRR 0.625 against 0.607
with equal weights and 0.509 for vector search alone)."""
EXACT_WEIGHT = 2.0
"""Weight, for a query that is an identifier (`max_result_chars`, `KERNEL_CONFIG`,
`services/resilience.py`, `ScriptedChatModel`), of a third ranking: the candidates of either
ranking whose text holds the identifier verbatim (case aside). A store's text search may
split or stem an identifier (PostgreSQL's parser does); the exact text decides."""
HYBRID_CANDIDATES = 40
"""Each ranking of hybrid search brings at least this many candidates (4 k when more)."""

_IDENTIFIER = re.compile(r"[_./:-]|[a-z][A-Z]|^[A-Z0-9_]{4,}$")


def looks_like_identifier(query: str) -> bool:
    """Whether `query` names something exactly (one or two words holding `_`, `.`, `/`,
    `:`, `-`, camelCase or CONSTANT_CASE) rather than asking in words."""
    words = query.split()
    return 0 < len(words) <= 2 and any(_IDENTIFIER.search(word.strip("`'\"")) for word in words)


def hybrid_candidates(k: int) -> int:
    """How many hits each ranking of a hybrid search fetches for the top `k`."""
    return max(4 * k, HYBRID_CANDIDATES)


def fuse_rrf(rankings: list[list[SearchHit]], k: int, weights: Sequence[float] | None = None) -> list[SearchHit]:
    """Reciprocal rank fusion of several rankings (best first) into the top `k` hits,
    each ranking counted with its weight (default: all 1).

    Ties keep the order of the first ranking, so the result is deterministic.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    records: dict[str, MemoryRecord] = {}
    order: dict[str, int] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[index])
        for rank, hit in enumerate(ranking, start=1):
            rid = hit.record.id
            scores[rid] = scores.get(rid, 0.0) + weight / (RRF_K + rank)
            records.setdefault(rid, hit.record)
            order.setdefault(rid, len(order))
    best = sorted(scores, key=lambda r: (-scores[r], order[r]))[:k]
    return [SearchHit(records[r], scores[r]) for r in best]


def fuse_hybrid(query: str, by_vector: list[SearchHit], by_keyword: list[SearchHit], k: int) -> list[SearchHit]:
    """The hybrid ranking every store returns: the vector and keyword rankings fused by
    weighted RRF. For a query in words the keyword ranking counts `KEYWORD_WEIGHT`; for an
    identifier it counts fully, and the candidates holding the identifier verbatim form a
    third ranking of weight `EXACT_WEIGHT`."""
    if not looks_like_identifier(query):
        return fuse_rrf([by_vector, by_keyword], k, (1.0, KEYWORD_WEIGHT))
    needles = [word.strip("`'\"").lower() for word in query.split()]
    seen: set[str] = set()
    exact: list[SearchHit] = []
    for hit in [*by_keyword, *by_vector]:
        if hit.record.id not in seen:
            seen.add(hit.record.id)
            text = hit.record.text.lower()
            if all(needle in text for needle in needles):
                exact.append(hit)
    return fuse_rrf([by_vector, by_keyword, exact], k, (1.0, 1.0, EXACT_WEIGHT))
