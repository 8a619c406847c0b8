"""Semantic memory: ingestion of documents, search, and the `memory.recall` kernel function.

`SemanticMemory(embedding, store)` ties an `EmbeddingModel` to a `VectorStore`:

* `ingest(paths, collection)` loads .md/.txt files, splits them (`chunk_documents` of
  `kernel.memory.chunking`, in this process or by the `chunker` given), embeds in batches
  and upserts. Every file belongs to a *source root*: the folder
  given (or the folder of a file given), named by the folder's name (`docs`) or by
  `source_root=`. Its chunks carry `root` (that name), `root_path` (the folder's
  absolute path) and `source` (the file's path under the folder, `guide.md`; prefixed
  with the root's name, `team_a/notes.md`, when one call ingests several roots). Record
  ids are sha256(root/path, chunk text), so re-ingesting is idempotent: chunks already
  stored are not embedded again. With `prune=True` (default), what the root held and no
  longer has is deleted: chunks that left a re-ingested file, and the chunks of files
  gone from an ingested folder; nothing outside the roots being ingested is touched
  (another folder, in-memory documents). A root name already holding another folder's
  chunks is refused (`replace=True` takes it over, e.g. after the folder moved).
  Binary files, and links leading out of a folder (unless `follow_links=True`), are
  skipped and listed in `IngestReport.skipped_files`.
* `ingest_documents(documents, collection)` ingests in-memory documents; pruning there
  touches only the chunks of the same sources that came from documents, not from files.
* `search(query, collection, k, filter, mode)` with mode `hybrid` (default), `vector` or
  `keyword`; `filter` is any form `kernel.memory.filters.parse_filter` accepts.

The `memory.recall` kernel function lives in `kernel.memory.plugin`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import _usage
from ..errors import MemoryStoreError
from ..logging import LazyLogger
from .chunking import Chunker, ChunkSource, SkippedFile, Unit, chunk_here, decode_text, find_files
from .filters import parse_filter
from .types import (
    DEFAULT_COLLECTION,
    And,
    Condition,
    Filter,
    MemoryRecord,
    SearchHit,
    check_collection_name,
)

if TYPE_CHECKING:
    from ..hookspecs import EmbeddingModel, VectorStore

SearchMode = Literal["hybrid", "vector", "keyword"]
log = LazyLogger("kernel.memory")


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
    removed: int  # chunks pruned: stale chunks of re-ingested files, chunks of files gone
    removed_files: int = 0  # sources pruned whole: files gone from an ingested folder
    skipped_files: tuple[SkippedFile, ...] = ()  # not ingested: binary files, links out of a folder
    roots: tuple[str, ...] = ()  # the source roots ingested


@dataclass(slots=True)
class _Root:
    """A source root of one `ingest` call: its name, its folder, what pruning may touch."""

    name: str
    path: Path  # resolved
    given: str  # the folder as the caller named it, for messages
    whole: bool = False  # a folder was given: pruning covers the whole root
    files: list[str] = field(default_factory=list)  # paths under the root given as files


ProgressCallback = Callable[[IngestProgress], None]


@dataclass(frozen=True, slots=True)
class Document:
    source: str
    text: str
    metadata: Mapping[str, Any] | None = None


class SemanticMemory:
    """Ingestion and search over one embedding model and one vector store."""

    def __init__(self, embedding: EmbeddingModel, store: VectorStore, *, batch_size: int = 64,
                 chunker: Chunker | None = None) -> None:
        """`chunker` splits the documents of an ingestion into records (default:
        `chunk_documents` in this process; `kernel.batch` runs it on Ray workers)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.embedding, self.store, self.batch_size = embedding, store, batch_size
        self.chunker: Chunker = chunker or chunk_here

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
        source_root: str | None = None,
        follow_links: bool = False,
        replace: bool = False,
    ) -> IngestReport:
        """Ingest files and folders (recursively: .md, .markdown, .txt, .rst).

        Each folder given (or the folder of each file given) is a source root, named by its
        folder's name or by `source_root` (one path only). A file's `source` is its path
        under its root (`guide.md`), prefixed with the root's name when several roots are
        ingested at once (`team_a/notes.md`). Two different folders with one name are an
        error, in one call and across calls (`replace=True` takes a name over).
        """
        if isinstance(paths, str | Path):
            paths = [paths]
        given = [Path(p) for p in paths]
        if source_root is not None:
            if len(given) != 1:
                raise MemoryStoreError(f"source_root names the folder of one path; {len(given)} paths were given")
            _check_root_name(source_root)
        found, skipped = find_files(given, follow_links=follow_links)
        roots = _roots(given, source_root)
        by_folder = {r.path: r for r in roots.values()}
        several = len(roots) > 1
        docs: list[tuple[Document, bool, str]] = []
        protected: set[str] = set()
        for f in found:
            root = by_folder[f.root.resolve()]
            source = f"{root.name}/{f.rel}" if several else f.rel
            try:
                text = decode_text(f.path.read_bytes())
            except OSError as exc:  # keep what it stored: it may be readable again next time
                skipped.append(SkippedFile(str(f.path), f"unreadable ({exc.strerror or exc})"))
                protected.add(f"{root.name}/{f.rel}")
                continue
            if text is None:
                skipped.append(SkippedFile(str(f.path), "a binary file (or not UTF-8 text)"))
                continue
            meta = {"root": root.name, "root_path": str(root.path)}
            markdown = f.path.suffix.lower() in (".md", ".markdown")
            docs.append((Document(source, text, meta), markdown, f"{root.name}/{f.rel}"))
        for item in skipped:
            log.info("file not ingested", path=item.path, reason=item.reason)
        await self.ensure_collection(collection)
        scopes = [_scope(r) for r in roots.values()]
        if not replace:
            await self._check_roots(collection, list(roots.values()))
        report = await self._ingest(docs, collection, chunk_size, overlap, unit, progress, prune and bool(scopes),
                                    scopes, protected, from_files=True)
        return dataclasses.replace(report, skipped_files=tuple(skipped), roots=tuple(roots))

    async def _check_roots(self, collection: str, roots: list[_Root]) -> None:
        """Refuse to mix another folder's chunks into a root of the same name."""
        list_ids = getattr(self.store, "list_ids", None)
        if list_ids is None:
            return
        for root in roots:
            other = await list_ids(collection, And((_scope(root), Condition("root_path", "ne", str(root.path)))))
            if other:
                [record] = await self.store.get(collection, other[:1])
                where = record.metadata.get("root_path", "another folder")
                raise MemoryStoreError(
                    f"collection {collection!r} already holds source root {root.name!r} ingested from {where} "
                    f"({len(other)} chunks); {root.given} is another folder with that name, and ingesting it "
                    f"would replace them. Give it its own name (kernel memory ingest {root.given} --as NAME; "
                    f"source_root=NAME in Python), or, if it is the same folder moved, take the name over "
                    "(--replace; replace=True)"
                )

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
        """Ingest in-memory documents (source names must be unique). Pruning touches only
        chunks of these sources that were ingested as documents, never files' chunks."""
        docs = [(d, markdown, d.source) for d in documents]
        sources = list(dict.fromkeys(d.source for d in documents))
        scopes: list[Filter] = [
            Condition("source", "in", tuple(sources[i : i + 500])) for i in range(0, len(sources), 500)
        ]
        await self.ensure_collection(collection)
        return await self._ingest(docs, collection, chunk_size, overlap, unit, progress, prune, scopes, set(),
                                  from_files=False)

    async def _ingest(
        self,
        docs: list[tuple[Document, bool, str]],
        collection: str,
        chunk_size: int,
        overlap: int,
        unit: Unit,
        progress: ProgressCallback | None,
        prune: bool,
        scopes: list[Filter],
        protected: set[str],
        *,
        from_files: bool,
    ) -> IngestReport:
        """Chunk, embed what is not stored yet, upsert; then prune within `scopes`. A
        document's third item is the name its record ids hash (`root/path` for files)."""
        work = self._store(docs, collection, chunk_size, overlap, unit, progress, prune, scopes, protected,
                           from_files=from_files)
        events = _usage.recorder(getattr(self.embedding, "registry", None))
        if events is None:
            return await work
        with events.memory_ingest(collection, self.store) as event:  # a sink is on (kernel.events)
            report = await work
            event.counts = {"files": report.files, "chunks": report.chunks, "added": report.added,
                            "skipped": report.skipped, "removed": report.removed}
        return report

    async def _store(
        self,
        docs: list[tuple[Document, bool, str]],
        collection: str,
        chunk_size: int,
        overlap: int,
        unit: Unit,
        progress: ProgressCallback | None,
        prune: bool,
        scopes: list[Filter],
        protected: set[str],
        *,
        from_files: bool,
    ) -> IngestReport:
        sources = [ChunkSource(doc.source, doc.text, doc.metadata, markdown, key) for doc, markdown, key in docs]
        chunked = await self.chunker(sources, chunk_size, overlap, unit)
        if len(chunked) != len(sources):
            raise MemoryStoreError(f"the chunker returned the chunks of {len(chunked)} documents for {len(sources)}")
        records: list[MemoryRecord] = []
        ids_by_source: dict[str, set[str]] = {}
        for doc, chunks in zip(sources, chunked, strict=True):
            seen = ids_by_source.setdefault(doc.source, set())
            for rid, text, meta in chunks:
                if rid in seen:  # the same text twice in one source: store it once
                    continue
                seen.add(rid)
                records.append(MemoryRecord(rid, text, None, meta))
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
        removed = removed_files = 0
        if prune:
            keep = set().union(*ids_by_source.values())
            removed, removed_files = await self._prune(collection, scopes, keep, set(ids_by_source), protected,
                                                       from_files)
        if progress is not None and total == 0:
            progress(IngestProgress("", files_total, files_total, 0, 0, 0, 0))
        return IngestReport(files_total, total, added, skipped, removed, removed_files)

    async def _prune(
        self,
        collection: str,
        scopes: list[Filter],
        keep: set[str],
        sources: set[str],
        protected: set[str],
        from_files: bool,
    ) -> tuple[int, int]:
        """Delete the records of `scopes` not in `keep`: (chunks removed, sources removed whole)."""
        list_ids = getattr(self.store, "list_ids", None)
        if list_ids is None:
            return 0, 0
        removed, gone = 0, set()
        for scope in scopes:
            candidates = [r for r in await list_ids(collection, scope) if r not in keep]
            for i in range(0, len(candidates), 500):
                stale = []
                for rec in await self.store.get(collection, candidates[i : i + 500]):
                    root = rec.metadata.get("root")
                    if from_files != isinstance(root, str):
                        continue  # documents never prune files' chunks, nor files documents'
                    source = str(rec.metadata.get("source", ""))
                    if from_files and f"{root}/{source.removeprefix(f'{root}/')}" in protected:
                        continue
                    stale.append(rec.id)
                    if source not in sources:
                        gone.add((root, source))
                if stale:
                    removed += await self.store.delete(collection, stale)
        return removed, len(gone)

    async def search(
        self,
        query: str,
        collection: str = DEFAULT_COLLECTION,
        k: int = 4,
        filter: Any = None,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        """The `k` best chunks for `query`. `filter`: a Filter, dict, JSON or CLI expressions."""
        events = _usage.recorder(getattr(self.embedding, "registry", None))
        if events is None:
            return await self._search(query, collection, k, filter, mode)
        with events.memory_search(collection, query, k, mode, self.store) as event:  # a sink is on (kernel.events)
            hits = await self._search(query, collection, k, filter, mode)
            event.hits = [{"id": h.record.id, "score": h.score, "source": reference(h)} for h in hits]
        return hits

    async def _search(self, query: str, collection: str, k: int, filter: Any, mode: SearchMode) -> list[SearchHit]:
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


def _check_root_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise MemoryStoreError(f"invalid source root name {name!r}: use a folder-like name without '/'")
    return name


def _roots(given: list[Path], name: str | None) -> dict[str, _Root]:
    """The source roots of one `ingest` call, by name; two folders with one name are an error."""
    roots: dict[str, _Root] = {}
    for p in given:
        folder = p if p.is_dir() else p.parent
        root_name = name or Path(os.path.abspath(folder)).name or "root"
        real = folder.resolve()
        root = roots.setdefault(root_name, _Root(root_name, real, str(folder)))
        if root.path != real:
            raise MemoryStoreError(
                f"{root.given} and {folder} are two folders named {root_name!r}: their files would be stored "
                f"under one source root. Ingest them in separate runs and give one its own name: "
                f"kernel memory ingest {folder} --as NAME (source_root=NAME in Python)"
            )
        if p.is_dir():
            root.whole = True
        else:
            root.files.append(p.name)
    for inner in roots.values():
        for outer in roots.values():
            if outer.whole and inner is not outer and inner.path.is_relative_to(outer.path):
                raise MemoryStoreError(
                    f"{inner.given} lies inside {outer.given}: its files would belong to two source roots "
                    f"({inner.name!r} and {outer.name!r}); ingest {outer.given} alone, or each in its own run"
                )
    return roots


def _scope(root: _Root) -> Filter:
    """The records pruning may touch for `root`: all of its own, or those of its files given."""
    mine = Condition("root", "eq", root.name)
    if root.whole:
        return mine
    names = tuple(n for f in root.files for n in (f, f"{root.name}/{f}"))
    return And((mine, Condition("source", "in", names)))

