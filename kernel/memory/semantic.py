"""Semantic memory: ingestion of documents, search, and the `memory.recall` kernel function.

`SemanticMemory(embedding, store)` ties an `EmbeddingModel` to a `VectorStore`:

* `ingest(paths, collection)` loads .md/.txt files, splits them (`kernel.memory.chunking`),
  embeds in batches and upserts. Record ids are sha256(source, chunk text), so
  re-ingesting is idempotent: chunks already stored are not embedded again, and chunks
  that disappeared from a re-ingested file are deleted (`prune=True`).
* `search(query, collection, k, filter, mode)` with mode `hybrid` (default), `vector` or
  `keyword`; `filter` is any form `kernel.memory.filters.parse_filter` accepts.

The `memory.recall` kernel function lives in `kernel.memory.plugin`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import MemoryStoreError
from .chunking import Unit, iter_files, load_text, split_text
from .filters import parse_filter
from .types import Condition, MemoryRecord, SearchHit, check_collection_name, content_id

if TYPE_CHECKING:
    from ..hookspecs import EmbeddingModel, VectorStore

SearchMode = Literal["hybrid", "vector", "keyword"]
DEFAULT_COLLECTION = "docs"


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Reported after each committed batch (and once per file loaded)."""

    source: str
    files_done: int
    files_total: int
    chunks_done: int
    chunks_total: int
    added: int
    skipped: int


@dataclass(frozen=True, slots=True)
class IngestReport:
    files: int
    chunks: int
    added: int  # embedded and stored (new or changed chunks)
    skipped: int  # already stored with the same content
    removed: int  # stale chunks of re-ingested files


ProgressCallback = Callable[[IngestProgress], None]


@dataclass(frozen=True, slots=True)
class Document:
    source: str
    text: str
    metadata: Mapping[str, Any] | None = None


class SemanticMemory:
    """Ingestion and search over one embedding model and one vector store."""

    def __init__(self, embedding: EmbeddingModel, store: VectorStore, *, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.embedding, self.store, self.batch_size = embedding, store, batch_size

    async def ensure_collection(self, collection: str) -> None:
        await self.store.create_collection(check_collection_name(collection), self.embedding.dimension)

    async def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        collection: str = DEFAULT_COLLECTION,
        *,
        chunk_size: int = 1000,
        overlap: int = 100,
        unit: Unit = "chars",
        progress: ProgressCallback | None = None,
        prune: bool = True,
    ) -> IngestReport:
        """Ingest files and folders (recursively: .md, .markdown, .txt, .rst).

        A file's `source` is its path relative to the folder given (or its name when the
        file itself is given), with `/` separators. With several folders, each source
        starts with its folder's name (`team_a/notes.md`), so files never collide;
        two files that would still get the same source are an error.
        """
        if isinstance(paths, str | Path):
            paths = [paths]
        roots = [Path(p) for p in paths]
        prefix_folders = sum(1 for r in roots if r.is_dir()) > 1
        docs = []
        origin: dict[str, Path] = {}
        for file, root in iter_files(roots):
            rel = file.relative_to(root.resolve()) if file.is_relative_to(root.resolve()) else file
            source = rel.as_posix()
            if prefix_folders and root.is_dir():
                source = f"{root.resolve().name}/{source}"
            if source in origin and origin[source] != file:
                raise MemoryStoreError(
                    f"{origin[source]} and {file} would both be stored as source {source!r}; "
                    "ingest them separately or from their common parent folder"
                )
            origin[source] = file
            markdown = file.suffix.lower() in (".md", ".markdown")
            docs.append((Document(source, load_text(file)), markdown))
        return await self._ingest(docs, collection, chunk_size, overlap, unit, progress, prune)

    async def ingest_documents(
        self,
        documents: Sequence[Document],
        collection: str = DEFAULT_COLLECTION,
        *,
        chunk_size: int = 1000,
        overlap: int = 100,
        unit: Unit = "chars",
        markdown: bool = True,
        progress: ProgressCallback | None = None,
        prune: bool = True,
    ) -> IngestReport:
        """Ingest in-memory documents (source names must be unique)."""
        docs = [(d, markdown) for d in documents]
        return await self._ingest(docs, collection, chunk_size, overlap, unit, progress, prune)

    async def _ingest(
        self,
        docs: list[tuple[Document, bool]],
        collection: str,
        chunk_size: int,
        overlap: int,
        unit: Unit,
        progress: ProgressCallback | None,
        prune: bool,
    ) -> IngestReport:
        await self.ensure_collection(collection)
        records: list[MemoryRecord] = []
        ids_by_source: dict[str, set[str]] = {}
        for doc, markdown in docs:
            seen = ids_by_source.setdefault(doc.source, set())
            for chunk in split_text(doc.text, chunk_size, overlap, unit, markdown):
                rid = content_id(chunk.text, doc.source)
                if rid in seen:  # the same text twice in one file: store it once
                    continue
                seen.add(rid)
                meta: dict[str, Any] = dict(doc.metadata or {})
                meta.update(
                    source=doc.source,
                    chunk=chunk.index,
                    start=chunk.start,
                    end=chunk.end,
                    heading=chunk.heading,
                    content_hash=content_id(chunk.text),
                )
                records.append(MemoryRecord(rid, chunk.text, None, meta))
        total, added, skipped, done = len(records), 0, 0, 0
        last_index = {str(r.metadata["source"]): i for i, r in enumerate(records)}
        files_total = len(ids_by_source)
        for start in range(0, total, self.batch_size):
            batch = records[start : start + self.batch_size]
            existing = {r.id: r for r in await self.store.get(collection, [r.id for r in batch])}
            to_embed = [r for r in batch if r.id not in existing]
            if to_embed:
                vectors = await self.embedding.embed([r.text for r in to_embed])
                if len(vectors) != len(to_embed):
                    raise MemoryStoreError(
                        f"embedding model {self.embedding.model!r} returned {len(vectors)} vectors "
                        f"for {len(to_embed)} texts"
                    )
                for rec, vec in zip(to_embed, vectors, strict=True):
                    rec.vector = list(vec)
            # unchanged text but moved (other offsets): update metadata, keep the vector
            moved = []
            for rec in batch:
                old = existing.get(rec.id)
                if old is not None and old.metadata != rec.metadata:
                    rec.vector = old.vector
                    moved.append(rec)
            if to_embed or moved:
                await self.store.upsert(collection, [*to_embed, *moved])
            added += len(to_embed)
            skipped += len(batch) - len(to_embed)
            done += len(batch)
            if progress is not None:
                source = str(batch[-1].metadata["source"])
                files_done = sum(1 for last in last_index.values() if last < done)
                progress(IngestProgress(source, files_done, files_total, done, total, added, skipped))
        removed = 0
        list_ids = getattr(self.store, "list_ids", None)
        if prune and list_ids is not None:
            keep = set().union(*ids_by_source.values())
            sources = list(ids_by_source)
            for i in range(0, len(sources), 500):  # ids hash their source: one pass suffices
                stored = await list_ids(collection, Condition("source", "in", tuple(sources[i : i + 500])))
                stale = [r for r in stored if r not in keep]
                if stale:
                    removed += await self.store.delete(collection, stale)
        if progress is not None and total == 0:
            progress(IngestProgress("", files_total, files_total, 0, 0, 0, 0))
        return IngestReport(files_total, total, added, skipped, removed)

    async def search(
        self,
        query: str,
        collection: str = DEFAULT_COLLECTION,
        k: int = 4,
        filter: Any = None,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        """The `k` best chunks for `query`. `filter`: a Filter, dict, JSON or CLI expressions."""
        flt = parse_filter(filter)
        if mode == "keyword":
            return await self.store.keyword_search(collection, query, k, flt)
        if mode not in ("vector", "hybrid"):
            raise MemoryStoreError(f"unknown search mode {mode!r}; expected hybrid, vector or keyword")
        [vector] = await self.embedding.embed([query])
        if mode == "vector":
            return await self.store.search(collection, vector, k, flt)
        return await self.store.hybrid_search(collection, query, vector, k, flt)


def reference(hit: SearchHit) -> str:
    """`guide.md#Install`: the source and the innermost heading of a hit."""
    meta = hit.record.metadata
    source = str(meta.get("source", hit.record.id))
    heading = str(meta.get("heading") or "").split(" > ")[-1].strip()
    return f"{source}#{heading}" if heading else source


def format_hits(hits: Sequence[SearchHit]) -> str:
    """Numbered hits with source references: `[1] (source: guide.md#Install) text`."""
    if not hits:
        return "No relevant memories found."
    return "\n\n".join(
        f"[{i}] (source: {reference(h)}) {h.record.text.strip()}" for i, h in enumerate(hits, 1)
    )
