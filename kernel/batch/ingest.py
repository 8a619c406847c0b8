"""Memory ingestion with its embedding spread over a Ray cluster.

`SemanticMemory.ingest` keeps its whole behaviour (source roots, content-hash record ids,
skipping chunks already stored, pruning): only its embedding model is replaced by
`ClusterEmbedding`, whose `embed` sends the texts in pieces to Ray tasks; each worker
embeds with its own kernel's embedding service (built from the same configuration, with
its retries and limits). Each batch of the ingestion fans out over every worker at once.
The driver reads the files, splits them and writes the store: writes are upserts keyed by
content hashes, so a retried task or a re-run never stores a chunk twice.

The store must be one every machine of the run reaches: PostgreSQL + pgvector. The SQLite
store is a file on one machine, and is refused with a multi-machine executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..memory import SemanticMemory

__all__ = ["ClusterEmbedding", "memory_for"]

SINGLE_MACHINE_STORES = frozenset({"sqlite"})
DEFAULT_PIECE = 64


class ClusterEmbedding:
    """An `EmbeddingModel` whose texts are embedded by Ray workers, `piece` texts a task, at
    most `max_in_flight` tasks at once, the vectors returned in order."""

    def __init__(self, task: Any, spec: Any, service: str | None, info: tuple[str, str, int], *,
                 piece: int = DEFAULT_PIECE, max_in_flight: int = 4) -> None:
        self._task, self._spec, self._service = task, spec, service
        self.provider, self.model, self.dimension = info
        self.piece, self.max_in_flight = max(1, piece), max(1, max_in_flight)
        self.tasks = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        pieces = [list(texts[i : i + self.piece]) for i in range(0, len(texts), self.piece)]
        semaphore = asyncio.Semaphore(self.max_in_flight)

        async def one(piece: list[str]) -> list[list[float]]:
            async with semaphore:
                self.tasks += 1
                vectors: list[list[float]] = await self._task.remote(self._spec, self._service, piece)
                return vectors

        done = await asyncio.gather(*(one(p) for p in pieces))
        return [vector for vectors in done for vector in vectors]


def check_store(kernel: Kernel, store: str | None) -> None:
    """Refuse a store on one machine's disk for a multi-machine executor."""
    name = store or kernel.services.default_name("memory")
    provider = kernel.services.service_settings(name, "memory").provider
    if provider in SINGLE_MACHINE_STORES:
        raise ConfigurationError(
            f"the {provider} store (service {name!r}) is a file on one machine; a multi-machine executor "
            "(--executor ray) needs a store every node and the driver reach: PostgreSQL + pgvector "
            "(provider = \"pgvector\", options.dsn). Ingest into it, or run with --executor asyncio"
        )


@asynccontextmanager
async def memory_for(
    kernel: Kernel,
    executor: str | None = None,
    *,
    embedding: str | None = None,
    store: str | None = None,
    address: str | None = None,
    piece: int = DEFAULT_PIECE,
    ray_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[SemanticMemory]:
    """A `SemanticMemory` over the kernel's services, its embedding done by `executor`
    (`"asyncio"`: in this process; `"ray"`: on the cluster at `address`)."""
    from ..memory import SemanticMemory
    from .executors import cluster_address, executor_name

    chosen = executor_name(executor, kernel)
    if chosen == "asyncio":
        yield SemanticMemory(kernel.services.embedding(embedding), kernel.services.memory(store))
        return
    check_store(kernel, store)
    from .ray_executor import MAX_RETRIES, RayCluster
    from .worker import embed_chunk, embedding_info, kernel_spec, secret_environment

    cluster = RayCluster(cluster_address(address, kernel), ray_options)
    ray = await cluster.start(secret_environment(kernel))
    try:
        slots = cluster.cpus()
        spec = ray.put(kernel_spec(kernel, slots=slots, working_dir=cluster.working_dir))
        options = cluster.task_options()
        info_task = ray.remote(max_retries=MAX_RETRIES)(embedding_info)
        embed_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(embed_chunk)
        if options:
            info_task, embed_task = info_task.options(**options), embed_task.options(**options)
        info = await info_task.remote(spec, embedding)
        model = ClusterEmbedding(embed_task, spec, embedding, info, piece=piece, max_in_flight=2 * slots)
        yield SemanticMemory(model, kernel.services.memory(store), batch_size=piece * 2 * slots)
    finally:
        await cluster.close()
