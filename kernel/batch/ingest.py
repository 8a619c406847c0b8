"""Memory ingestion with its chunking and embedding spread over a Ray cluster.

`SemanticMemory.ingest` keeps its whole behaviour (source roots, content-hash record ids,
skipping chunks already stored, pruning): only two of its steps run on the workers.
`ClusterChunker` splits the documents there: the driver reads the files (the workers may
not see them) and sends their texts, `documents_per_task` a task, to Ray tasks running
`kernel.memory.chunk_documents`, the one implementation in-process ingestion runs too, so
the record ids, texts and metadata are the same; plain tuples come back. `ClusterEmbedding`
embeds: its `embed` sends the texts in pieces to Ray tasks; each worker embeds with its own
kernel's embedding service (built from the same configuration, with its retries and
limits). Each batch of the ingestion fans out over every worker at once; both bound the
tasks in flight. The driver writes the store: writes are upserts keyed by content hashes,
so a retried task or a re-run never stores a chunk twice.

The store must be one every machine of the run reaches: PostgreSQL + pgvector. The SQLite
store is a file on one machine, and is refused with a multi-machine executor.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..memory import ChunkedRecord, ChunkSource, SemanticMemory, Unit

__all__ = ["ClusterChunker", "ClusterEmbedding", "memory_for"]

SINGLE_MACHINE_STORES = frozenset({"sqlite"})
DEFAULT_PIECE = 64
DEFAULT_DOCUMENTS = 16
PIECE_CHARS = 1_000_000


class ClusterChunker:
    """A `kernel.memory.Chunker` whose documents are split by Ray workers: `piece`
    documents a task (fewer when their texts pass `max_chars`; a larger document goes
    alone), at most `max_in_flight` tasks at once, each document's records returned in
    order. `tasks` counts the tasks run, `workers` the tasks each worker process ran."""

    def __init__(self, task: Any, *, piece: int = DEFAULT_DOCUMENTS, max_chars: int = PIECE_CHARS,
                 max_in_flight: int = 4) -> None:
        self._task = task
        self.piece, self.max_chars, self.max_in_flight = max(1, piece), max(1, max_chars), max(1, max_in_flight)
        self.tasks = 0
        self.workers: Counter[int] = Counter()

    def pieces(self, docs: Sequence[ChunkSource]) -> list[list[tuple[Any, ...]]]:
        """The documents, as plain tuples, in consecutive pieces."""
        pieces: list[list[tuple[Any, ...]]] = []
        size = 0
        for doc in docs:
            if not pieces or len(pieces[-1]) >= self.piece or size + len(doc.text) > self.max_chars:
                pieces.append([])
                size = 0
            source, text, metadata, markdown, key = doc
            pieces[-1].append((source, text, dict(metadata or {}), bool(markdown), key))
            size += len(text)
        return pieces

    async def __call__(self, docs: Sequence[ChunkSource], chunk_size: int, overlap: int,
                       unit: Unit) -> list[list[ChunkedRecord]]:
        from ..memory import check_chunking

        check_chunking(chunk_size, overlap, unit)  # here, before any task: the same error as in process
        semaphore = asyncio.Semaphore(self.max_in_flight)

        async def one(piece: list[tuple[Any, ...]]) -> list[list[ChunkedRecord]]:
            async with semaphore:
                self.tasks += 1
                pid, chunked = await self._task.remote(piece, chunk_size, overlap, unit)
                self.workers[pid] += 1
                return list(chunked)

        done = await asyncio.gather(*(one(p) for p in self.pieces(docs)))
        return [records for chunked in done for records in chunked]


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
    documents_per_task: int = DEFAULT_DOCUMENTS,
    ray_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[SemanticMemory]:
    """A `SemanticMemory` over the kernel's services, its chunking and embedding done by
    `executor` (`"asyncio"`: in this process; `"ray"`: on the cluster at `address`, `piece`
    texts an embedding task, `documents_per_task` documents a chunking task)."""
    from ..memory import SemanticMemory
    from .executors import cluster_address, executor_name

    chosen = executor_name(executor, kernel)
    if chosen == "asyncio":
        yield SemanticMemory(kernel.services.embedding(embedding), kernel.services.memory(store))
        return
    check_store(kernel, store)
    from .ray_executor import MAX_RETRIES, RayCluster
    from .worker import chunk_piece, embed_chunk, embedding_info, kernel_spec, secret_environment

    cluster = RayCluster(cluster_address(address, kernel), ray_options)
    ray = await cluster.start(secret_environment(kernel))
    try:
        slots = cluster.cpus()
        spec = ray.put(kernel_spec(kernel, slots=slots, working_dir=cluster.working_dir))
        options = cluster.task_options()
        info_task = ray.remote(max_retries=MAX_RETRIES)(embedding_info)
        embed_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(embed_chunk)
        chunk_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(chunk_piece)
        if options:
            info_task, embed_task = info_task.options(**options), embed_task.options(**options)
            chunk_task = chunk_task.options(**options)
        info = await info_task.remote(spec, embedding)
        model = ClusterEmbedding(embed_task, spec, embedding, info, piece=piece, max_in_flight=2 * slots)
        chunker = ClusterChunker(chunk_task, piece=documents_per_task, max_in_flight=2 * slots)
        yield SemanticMemory(model, kernel.services.memory(store), batch_size=piece * 2 * slots, chunker=chunker)
    finally:
        await cluster.close()
