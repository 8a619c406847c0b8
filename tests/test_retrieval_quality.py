"""Retrieval quality on the evaluation set of `tests/benchmarks/bench_retrieval.py` (questions
paraphrased from the repository's documents, and exact identifiers), with the default local
embedding model (MiniLM in numpy): hybrid search, the default, is never worse than vector
search on paraphrases and better on identifiers, on the SQLite store and on pgvector."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from kernel.memory import MemoryRecord, SearchHit, SemanticMemory, fuse_hybrid, fuse_rrf, looks_like_identifier
from tests.benchmarks.bench_retrieval import Evaluation, build_memory, evaluate, load_items

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def check(result: Evaluation) -> None:
    assert result.judged >= 60 and not result.unjudged, result.unjudged
    vector, hybrid = result.scores["vector"], result.scores["hybrid"]
    assert hybrid.mrr("paraphrase") >= vector.mrr("paraphrase")
    assert hybrid.recall5("paraphrase") >= vector.recall5("paraphrase")
    assert hybrid.mrr("identifier") > vector.mrr("identifier")
    assert hybrid.recall5("identifier") >= vector.recall5("identifier")
    assert hybrid.mrr() > max(vector.mrr(), result.scores["keyword"].mrr())


def test_the_evaluation_set_is_large_enough_and_paraphrased() -> None:
    items = load_items()
    paraphrases = [item for item in items if item["kind"] == "paraphrase"]
    assert len(paraphrases) >= 50 and len(items) - len(paraphrases) >= 10
    assert len({item["q"] for item in items}) == len(items)
    for item in paraphrases:  # a paraphrase never quotes its passage
        assert item["evidence"].lower() not in item["q"].lower()


def test_hybrid_is_the_default_search_mode() -> None:
    assert inspect.signature(SemanticMemory.search).parameters["mode"].default == "hybrid"


async def test_hybrid_beats_vector_on_the_sqlite_store(tmp_path: Path) -> None:
    from connectors.sqlite_store import SQLiteVectorStore

    store = SQLiteVectorStore(tmp_path / "eval.db")
    try:
        check(await evaluate(await build_memory(store), load_items()))
    finally:
        await store.close()


async def test_hybrid_beats_vector_on_pgvector(postgres: Any) -> None:
    from connectors.pgvector_store import PgVectorStore

    store = PgVectorStore(postgres.dsn)
    try:
        memory = await build_memory(store)
        try:
            check(await evaluate(memory, load_items()))
        finally:
            await store.delete_collection("eval")
    finally:
        await store.close()


@pytest.mark.parametrize(("query", "expected"), [
    ("max_result_chars", True), ("KERNEL_CONFIG", True), ("services/resilience.py", True),
    ("ScriptedChatModel", True), ("retry-after-ms", True), ("`plugin_dirs`", True), ("kernel.toml", True),
    ("How do I switch provider?", False), ("retries", False), ("What is the default chat model?", False),
    ("", False), ("API", False),
])
def test_what_looks_like_an_identifier(query: str, expected: bool) -> None:
    assert looks_like_identifier(query) is expected


def _hits(*ids: str, texts: dict[str, str] | None = None) -> list[SearchHit]:
    return [SearchHit(MemoryRecord(i, (texts or {}).get(i, f"passage {i}"), None, {}), 1.0) for i in ids]


def test_the_keyword_ranking_counts_less_for_words_and_the_exact_text_decides_for_identifiers() -> None:
    by_vector, by_keyword = _hits("a", "b", "c"), _hits("c", "b", "a")
    assert [h.record.id for h in fuse_rrf([by_vector, by_keyword], 3)] == ["a", "c", "b"]  # a and c tie
    assert [h.record.id for h in fuse_hybrid("which one is best", by_vector, by_keyword, 3)] == ["a", "b", "c"]
    texts = {"b": "set `Best_One` to 3"}
    by_vector, by_keyword = _hits("a", "c", "b", texts=texts), _hits("c", "a", "b", texts=texts)
    assert next(h.record.id for h in fuse_hybrid("best_one", by_vector, by_keyword, 3)) == "b"
    assert next(h.record.id for h in fuse_hybrid("`best_one`", by_vector, by_keyword, 3)) == "b"
    assert next(h.record.id for h in fuse_hybrid("best one", by_vector, by_keyword, 3)) == "a"  # words: no exact rule
    by_vector, by_keyword = _hits("a", "b", "x", "y"), _hits("b", "a")
    assert [h.record.id for h in fuse_hybrid("a question in words", by_vector, by_keyword, 2)] == ["a", "b"]
    with pytest.raises(ValueError, match="1 weights for 2 rankings"):
        fuse_rrf([by_vector, by_keyword], 2, [1.0])
