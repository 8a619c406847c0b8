"""Vector memory over HTTP, through the kernel's default embedding and memory services.

    GET  /v1/memory/collections                   the collections this key may use
    POST /v1/memory/{collection}/search           {"query": "...", "k": 4, "filter": ..., "mode": "hybrid"}
    POST /v1/memory/{collection}/documents        ingest: multipart files (.md, .txt), or
                                                  {"documents": [{"source": "a.md", "text": "...", "metadata": {}}]}

A key limited to some collections (`[serve.keys.NAME] collections`) reaches only those
(403 otherwise). Uploads are at most `serve.max_upload_bytes` in all; each must be UTF-8
text; a file's source is its base name. Ingesting the same source again replaces its
chunks (unchanged ones are not embedded again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import ServeContext, endpoint, get_int, get_object, get_str, json_response, metered, read_json
from .problems import HttpProblem

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..memory import SemanticMemory
    from .auth import Principal

__all__ = ["UPLOAD_SUFFIXES", "routes"]

UPLOAD_SUFFIXES = (".md", ".markdown", ".txt")
MAX_FILES = 100


def _memory(ctx: ServeContext) -> SemanticMemory:
    from ..memory import SemanticMemory

    return SemanticMemory(ctx.kernel.services.embedding(), ctx.kernel.services.memory())


def _collection(request: Request, principal: Principal) -> str:
    from ..errors import MemoryStoreError
    from ..memory import check_collection_name

    name = str(request.path_params["collection"])
    try:
        check_collection_name(name)
    except MemoryStoreError as exc:
        raise HttpProblem(400, "invalid collection name", str(exc)) from None
    if not principal.may_use_collection(name):
        raise HttpProblem(403, "collection not allowed", f"this key may not use the collection {name!r}")
    return name


async def collections(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """The collections of the default store that this key may use."""
    names = await ctx.guarded(request, ctx.kernel.services.memory().list_collections())
    return json_response({"collections": [n for n in names if principal.may_use_collection(n)]})


async def search(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Search a collection."""
    from ..memory import reference

    collection = _collection(request, principal)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HttpProblem(400, "invalid request", 'the body must be {"query": "..."}')
    query = get_str(body, "query")
    if not query or not query.strip():
        raise HttpProblem(400, "invalid request", "'query' is required")
    mode = body.get("mode", "hybrid")
    if mode not in ("hybrid", "vector", "keyword"):
        raise HttpProblem(400, "invalid request", "'mode' must be hybrid, vector or keyword")
    k = get_int(body, "k", 4, 1, 100)
    store = ctx.kernel.services.memory()

    async def work() -> list[Any]:
        if collection not in await store.list_collections():
            raise HttpProblem(404, "no such collection", f"the store has no collection {collection!r}")
        with metered(ctx.kernel):
            return await _memory(ctx).search(query, collection, k, body.get("filter"), mode)

    hits = await ctx.guarded(request, work())
    return json_response({"collection": collection, "hits": [
        {"id": hit.record.id, "score": hit.score, "text": hit.record.text, "reference": reference(hit),
         "source": hit.record.metadata.get("source"), "metadata": hit.record.metadata} for hit in hits]})


async def ingest(request: Request, ctx: ServeContext, principal: Principal) -> Any:
    """Ingest uploaded documents (multipart files, or JSON documents)."""
    from ..memory import Document

    collection = _collection(request, principal)
    content_type = request.headers.get("content-type", "")
    options: dict[str, Any] = {}
    if content_type.startswith("multipart/form-data"):
        documents, options = await _uploads(request)
    else:
        body = await read_json(request)
        raw = body.get("documents") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            raise HttpProblem(400, "invalid request", 'the body must be {"documents": [{"source": ..., "text": ...}]} '
                              "or multipart files")
        documents = []
        for index, item in enumerate(raw[:MAX_FILES + 1]):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise HttpProblem(400, "invalid request", f"documents[{index}] needs 'text'")
            source = get_str(item, "source") or f"document-{index + 1}"
            documents.append(Document(source, item["text"], get_object(item, "metadata") or None))
        options = body
    if len(documents) > MAX_FILES:
        raise HttpProblem(413, "too many documents", f"at most {MAX_FILES} documents per request")
    if len({d.source for d in documents}) != len(documents):
        raise HttpProblem(400, "invalid request", "two documents have the same source name")
    chunk_size = get_int(options, "chunk_size", 1000, 50, 100_000)
    overlap = get_int(options, "overlap", min(100, chunk_size // 10), 0, chunk_size - 1)

    async def work() -> Any:
        with metered(ctx.kernel):
            return await _memory(ctx).ingest_documents(documents, collection, chunk_size=chunk_size, overlap=overlap)

    report = await ctx.guarded(request, work())
    return json_response({"collection": collection, "documents": [d.source for d in documents],
                          "files": report.files, "chunks": report.chunks, "added": report.added,
                          "skipped": report.skipped, "removed": report.removed})


async def _uploads(request: Request) -> tuple[list[Any], dict[str, Any]]:
    from starlette.datastructures import UploadFile

    from ..memory import Document

    form = await request.form(max_files=MAX_FILES, max_fields=20)
    documents, options = [], {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                name = (value.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
                if not name.lower().endswith(UPLOAD_SUFFIXES):
                    raise HttpProblem(415, "unsupported file", f"{name[:80]!r}: only {', '.join(UPLOAD_SUFFIXES)} "
                                      "files are ingested")
                data = await value.read()
                if b"\x00" in data:
                    raise HttpProblem(415, "unsupported file", f"{name!r} is binary, not text")
                try:
                    text = data.decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise HttpProblem(415, "unsupported file", f"{name!r} is not UTF-8 text") from None
                documents.append(Document(name, text))
            elif key in ("chunk_size", "overlap"):
                if not str(value).isdigit():
                    raise HttpProblem(400, "invalid request", f"'{key}' must be an integer")
                options[key] = int(str(value))
    finally:
        await form.close()
    if not documents:
        raise HttpProblem(400, "invalid request", "no file in the upload (send them as multipart 'files')")
    return documents, options


def is_upload(path: str) -> bool:
    return path.startswith("/v1/memory/") and path.endswith("/documents")


def routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/v1/memory/collections", endpoint(collections), methods=["GET"]),
        Route("/v1/memory/{collection}/search", endpoint(search), methods=["POST"]),
        Route("/v1/memory/{collection}/documents", endpoint(ingest), methods=["POST"]),
    ]
