"""Vector memory: records and data-only filters, chunking, `SemanticMemory` (ingest and
search over an embedding model and a vector store) and the `memory` plugin.

    types      MemoryRecord, SearchHit, the filter tree (Condition, And, Or), RRF fusion
    filters    parse_filter / parse_expression(s), matches: filters as data, never code
    chunking   split_text: markdown-aware chunks measured in characters or tokens;
               chunk_documents: documents to records (ids, metadata), as plain data
    semantic   SemanticMemory: ingest, search (vector, keyword, hybrid), references
    plugin     MemoryPlugin: the `memory.recall` kernel function
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .chunking import (
        Chunk,
        ChunkedRecord,
        Chunker,
        ChunkSource,
        Unit,
        check_chunking,
        chunk_document,
        chunk_documents,
        split_text,
    )
    from .filters import lookup, matches, parse_expression, parse_expressions, parse_filter, to_dict
    from .plugin import MemoryPlugin
    from .semantic import (
        Document,
        IngestProgress,
        IngestReport,
        SearchMode,
        SemanticMemory,
        format_hits,
        reference,
    )
    from .types import (
        DEFAULT_COLLECTION,
        OPERATORS,
        RRF_K,
        And,
        Condition,
        Filter,
        MemoryRecord,
        Or,
        SearchHit,
        check_collection_name,
        check_dimension,
        content_id,
        fuse_hybrid,
        fuse_rrf,
        hybrid_candidates,
        looks_like_identifier,
    )

__all__ = [
    "DEFAULT_COLLECTION",
    "OPERATORS",
    "RRF_K",
    "And",
    "Chunk",
    "ChunkSource",
    "ChunkedRecord",
    "Chunker",
    "Condition",
    "Document",
    "Filter",
    "IngestProgress",
    "IngestReport",
    "MemoryPlugin",
    "MemoryRecord",
    "Or",
    "SearchHit",
    "SearchMode",
    "SemanticMemory",
    "Unit",
    "check_chunking",
    "check_collection_name",
    "check_dimension",
    "chunk_document",
    "chunk_documents",
    "content_id",
    "format_hits",
    "fuse_hybrid",
    "fuse_rrf",
    "hybrid_candidates",
    "looks_like_identifier",
    "lookup",
    "matches",
    "parse_expression",
    "parse_expressions",
    "parse_filter",
    "reference",
    "split_text",
    "to_dict",
]

_LOCATIONS = {
    **dict.fromkeys(("Chunk", "ChunkSource", "ChunkedRecord", "Chunker", "check_chunking", "chunk_document",
                     "chunk_documents", "split_text", "Unit"), "chunking"),
    **dict.fromkeys(("lookup", "matches", "parse_expression", "parse_expressions", "parse_filter", "to_dict"),
                    "filters"),
    "MemoryPlugin": "plugin",
    **dict.fromkeys(("Document", "IngestProgress", "IngestReport", "SearchMode",
                     "SemanticMemory", "format_hits", "reference"), "semantic"),
    **dict.fromkeys(("DEFAULT_COLLECTION", "OPERATORS", "RRF_K", "And", "Condition", "Filter", "MemoryRecord", "Or",
                     "SearchHit",
                     "check_collection_name", "check_dimension", "content_id", "fuse_hybrid", "fuse_rrf",
                     "hybrid_candidates", "looks_like_identifier"), "types"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
