"""The code a worker process of a cluster runs: it builds its own `Kernel` from a
`KernelSpec` (the driver's effective configuration, as data, and its plugin folders),
once per process, and runs chunks of records, or embeds chunks of texts, on it; or splits
documents into memory records (`chunk_piece`, which needs no kernel).

Nothing but data reaches a worker: the spec, the target (a function's name or a plan's
JSON), the records' arguments, the documents' texts and metadata. No kernel, SDK client or connection is pickled; each
worker opens its own, through the same configuration and the same connectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .work import Outcome, Target, resolve_target, run_many

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..memory import ChunkedRecord, Unit

__all__ = ["KernelSpec", "chunk_piece", "embed_chunk", "embedding_info", "kernel_spec", "run_chunk"]

KEY_VARIABLES_SUFFIX = "_API_KEY"


@dataclass(frozen=True, slots=True)
class KernelSpec:
    """How a worker builds its kernel: the effective settings as plain data (secrets
    included: they travel as the configuration does), the plugin folders given beside the
    configuration (`--plugins`), a cap on each configured service's concurrent calls (the
    cluster as a whole stays within each service's `max_concurrency`), and how many
    records of a chunk run at once."""

    settings: dict[str, Any]
    plugin_dirs: tuple[str, ...] = ()
    service_limits: dict[str, int] = field(default_factory=dict)
    concurrency: int = 1

    @property
    def digest(self) -> str:
        text = json.dumps([self.settings, self.plugin_dirs, self.service_limits, self.concurrency],
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def kernel_spec(kernel: Kernel, *, plugin_dirs: Iterable[str | Path] = (), slots: int = 1, concurrency: int = 1,
                working_dir: str | Path | None = None) -> KernelSpec:
    """The spec of `kernel`'s configuration. Paths are made absolute (a shared path), or
    relative to `working_dir` when they lie inside it (Ray ships that folder to every node
    and runs the workers in it). Each configured service's `max_concurrency` is divided
    among `slots` (the cluster's task slots)."""
    settings = kernel.settings
    data = settings.model_dump(mode="json")
    for name, svc in settings.services.items():
        if svc.api_key is not None:  # model_dump masks it
            data["services"][name]["api_key"] = svc.api_key.get_secret_value()
    base = Path(working_dir).resolve() if working_dir else None
    data["plugin_dirs"] = [_portable(p, base) for p in settings.plugin_dirs]
    data["cache_dir"] = str(Path(settings.cache_dir).expanduser().absolute())
    limits = {name: max(1, svc.max_concurrency // max(1, slots)) for name, svc in settings.services.items()}
    return KernelSpec(data, tuple(_portable(p, base) for p in plugin_dirs), limits, max(1, concurrency))


def _portable(path: str | Path, base: Path | None) -> str:
    absolute = Path(path).expanduser().resolve()
    if base is not None and absolute.is_relative_to(base):
        return str(absolute.relative_to(base)) or "."
    return str(absolute)


def secret_environment(kernel: Kernel) -> dict[str, str]:
    """The variables a worker needs to find the keys the driver has: each configured
    service's `api_key_env`, and every `*_API_KEY` variable set on the driver."""
    names = {svc.api_key_env for svc in kernel.settings.services.values() if svc.api_key_env}
    names |= {name for name in os.environ if name.endswith(KEY_VARIABLES_SUFFIX)}
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


# --- in the worker process -----------------------------------------------------------------

_KERNELS: dict[str, tuple[Kernel, asyncio.AbstractEventLoop]] = {}
_TARGETS: dict[tuple[str, str], Any] = {}


def _kernel(spec: KernelSpec) -> tuple[Kernel, asyncio.AbstractEventLoop]:
    """This process's kernel for `spec`, built on first use (and its event loop, kept: the
    services' clients and limits belong to it)."""
    digest = spec.digest
    found = _KERNELS.get(digest)
    if found is not None:
        return found
    from ..kernel import Kernel
    from ..settings import KernelSettings

    data = dict(spec.settings)
    services = {name: {**svc, "max_concurrency": spec.service_limits.get(name, svc.get("max_concurrency", 16))}
                for name, svc in dict(data.get("services") or {}).items()}
    data["services"] = services
    settings = KernelSettings.model_validate(data)
    loop = asyncio.new_event_loop()
    kernel = Kernel(settings)
    for folder in spec.plugin_dirs:
        kernel.add_plugin(Path(folder))
    _KERNELS[digest] = (kernel, loop)
    return kernel, loop


def _runnable(spec: KernelSpec, kernel: Kernel, target: Target) -> Any:
    key = (spec.digest, json.dumps(target.identity, sort_keys=True, default=str))
    found = _TARGETS.get(key)
    if found is None:
        found = _TARGETS[key] = resolve_target(kernel, target)
    return found


def run_chunk(spec: KernelSpec, target: Target, arguments: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Run one chunk of records: their outcomes, in order (a failed record is an outcome)."""
    kernel, loop = _kernel(spec)
    try:
        runnable = _runnable(spec, kernel, target)
    except Exception as exc:  # the function is missing here: every record says why
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())} (on a worker: is the plugin folder there?)"
        return [Outcome(error=message, error_type=type(exc).__name__) for _ in arguments]
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(run_many(kernel, runnable, [dict(a) for a in arguments], spec.concurrency))


def embedding_info(spec: KernelSpec, service: str | None) -> tuple[str, str, int]:
    """(provider, model, dimension) of an embedding service, as a worker builds it."""
    kernel, _ = _kernel(spec)
    model = kernel.services.embedding(service)
    return str(model.provider), str(model.model), int(model.dimension)


def embed_chunk(spec: KernelSpec, service: str | None, texts: Sequence[str]) -> list[list[float]]:
    """Embed texts with the worker's embedding service (through its resilience layer)."""
    kernel, loop = _kernel(spec)
    asyncio.set_event_loop(loop)
    vectors = loop.run_until_complete(kernel.services.embedding(service).embed(list(texts)))
    return [[float(x) for x in vector] for vector in vectors]


def chunk_piece(documents: Sequence[Sequence[Any]], chunk_size: int, overlap: int,
                unit: Unit) -> tuple[int, list[list[ChunkedRecord]]]:
    """Split a piece of documents, each a plain tuple (source, text, metadata, markdown,
    key), with `kernel.memory.chunk_documents`, as in-process ingestion does: this
    process's id, and each document's records as (id, text, metadata) tuples, in order."""
    from ..memory import ChunkSource, check_chunking, chunk_documents

    check_chunking(chunk_size, overlap, unit)
    return os.getpid(), chunk_documents([ChunkSource(*doc) for doc in documents], chunk_size, overlap, unit)
