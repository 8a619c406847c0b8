"""The OpenAPI 3.1 document of the server (`GET /openapi.json`).

Written out rather than generated: the routes are few, and each schema here is the one
the route checks. Every error answer is the `Problem` schema (RFC 9457).
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


_PROBLEMS = {str(code): {"$ref": "#/components/responses/Problem"} for code in (400, 401, 403, 404, 413, 422, 429)}
_ERRORS = {**_PROBLEMS, "500": {"$ref": "#/components/responses/Problem"},
           "504": {"$ref": "#/components/responses/Problem"}}
_SSE = {"description": "server-sent events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}

OBJECT: dict[str, Any] = {"type": "object"}
USAGE = {"type": "object", "properties": {k: {"type": "integer"} for k in
                                          ("input_tokens", "output_tokens", "total_tokens", "cached_tokens",
                                           "requests")}}
SCHEMAS: dict[str, Any] = {
    "Problem": {"type": "object", "description": "RFC 9457 problem details", "required": ["type", "title", "status"],
                "properties": {"type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
                               "status": {"type": "integer"}, "detail": {"type": "string"},
                               "instance": {"type": "string"},
                               "error_type": {"type": "string", "description": "the kernel's error class"}}},
    "ChatCompletionRequest": {"type": "object", "required": ["model", "messages"], "properties": {
        "model": {"type": "string", "description": "`kernel`, an agent, or a chat service (GET /v1/models)"},
        "messages": {"type": "array", "items": OBJECT}, "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "tools": {"type": "array", "items": OBJECT, "description": "chat service models only"},
        "tool_choice": {}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
        "max_tokens": {"type": "integer"}, "max_completion_tokens": {"type": "integer"}, "stop": {},
        "seed": {"type": "integer"}, "presence_penalty": {"type": "number"},
        "frequency_penalty": {"type": "number"}, "response_format": OBJECT, "user": {"type": "string"}}},
    "ChatCompletion": {"type": "object", "description": "OpenAI's chat.completion, with a `kernel` member (run, "
                       "cost, tool calls made by the kernel)"},
    "Model": {"type": "object", "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                                               "owned_by": {"type": "string"}, "kernel": OBJECT}},
    "Function": {"type": "object", "properties": {
        "name": {"type": "string"}, "plugin": {"type": "string"}, "function": {"type": "string"},
        "tool_name": {"type": "string"}, "kind": {"enum": ["native", "prompt"]}, "description": {"type": "string"},
        "needs_approval": {"type": "boolean"}, "streams": {"type": "boolean"},
        "parameters": {"type": "object", "description": "JSON schema of the arguments"},
        "returns": {"type": "object", "description": "JSON schema of the value"}}},
    "InvokeRequest": {"type": "object", "properties": {
        "arguments": {"type": "object"}, "settings": {"type": "object", "description": "prompt functions only"}}},
    "InvokeResult": {"type": "object", "properties": {
        "function": {"type": "string"}, "value": {}, "usage": USAGE, "cost": {"type": ["number", "null"]},
        "run": {"type": "string"}}},
    "PlanRequest": {"type": "object", "properties": {
        "goal": {"type": "string"}, "plan": {"type": "object", "description": "a plan to validate (or run)"},
        "inputs": {"type": "object"}, "max_steps": {"type": "integer"}, "service": {"type": "string"},
        "settings": {"type": "object"}, "stream": {"type": "boolean", "description": "run: false for 202"}}},
    "PlanAnswer": {"type": "object", "properties": {
        "valid": {"type": "boolean"}, "problems": {"type": "array", "items": {"type": "string"}},
        "plan": OBJECT, "text": {"type": "string"},
        "graph": {"type": "object", "properties": {"nodes": {"type": "array", "items": OBJECT},
                                                   "edges": {"type": "array", "items": {"type": "array"}},
                                                   "output": {"type": ["string", "null"]}}}}},
    "Run": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["invoke", "chat", "plan"]}, "title": {"type": "string"},
        "status": {"enum": ["running", "waiting", "done", "failed", "cancelled"]}, "created": {"type": "number"},
        "finished": {"type": ["number", "null"]}, "usage": {}, "cost": {}, "error": {}, "plan": {}, "steps": OBJECT,
        "result": {}, "pending_approvals": {"type": "array", "items": OBJECT},
        "events": {"type": "array", "items": OBJECT}}},
    "ApproveRequest": {"type": "object", "properties": {
        "approval": {"type": "string", "description": "the approval's id (default: the only pending one)"},
        "approved": {"type": "boolean", "default": True}}},
    "SearchRequest": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 100},
        "filter": {}, "mode": {"enum": ["hybrid", "vector", "keyword"]}}},
    "SearchResult": {"type": "object", "properties": {"collection": {"type": "string"},
                                                      "hits": {"type": "array", "items": OBJECT}}},
    "IngestRequest": {"type": "object", "properties": {
        "documents": {"type": "array", "items": {"type": "object", "required": ["text"], "properties": {
            "source": {"type": "string"}, "text": {"type": "string"}, "metadata": OBJECT}}},
        "chunk_size": {"type": "integer"}, "overlap": {"type": "integer"}}},
    "IngestReport": {"type": "object", "properties": {k: {"type": "integer"} for k in
                                                      ("files", "chunks", "added", "skipped", "removed")}},
}


def _op(summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None, tag: str = "kernel") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {**responses, **_ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if parameters:
        op["parameters"] = parameters
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def openapi_document(version: str, keys: bool) -> dict[str, Any]:
    """The document; `keys`: whether the server requires API keys."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "orchestration-kernel", "version": version,
                 "description": "The kernel over HTTP: OpenAI-compatible chat, functions, plans, runs, memory."},
        "paths": {
            "/v1/chat/completions": {"post": _op(
                "OpenAI-compatible chat completion (stream: server-sent chunks)",
                {"200": {"description": "a chat.completion, or chat.completion.chunk events",
                         "content": {"application/json": {"schema": _ref("ChatCompletion")},
                                     "text/event-stream": {"schema": {"type": "string"}}}}},
                {"application/json": {"schema": _ref("ChatCompletionRequest")}}, tag="openai")},
            "/v1/models": {"get": _op("The models: kernel agents and chat services", {"200": _json(
                {"type": "object", "properties": {"data": {"type": "array", "items": _ref("Model")}}})}, tag="openai")},
            "/v1/models/{model}": {"get": _op("One model", {"200": _json(_ref("Model"))},
                                              parameters=[_path("model", "model id")], tag="openai")},
            "/v1/functions": {"get": _op("The functions this key may call", {"200": _json(
                {"type": "object", "properties": {"functions": {"type": "array", "items": _ref("Function")},
                                                  "plugins": OBJECT}})})},
            "/v1/functions/{name}/invoke": {"post": _op(
                "Invoke a function (?stream=true: `delta` events then `result`)",
                {"200": {"description": "the result, or events", "content": {
                    "application/json": {"schema": _ref("InvokeResult")},
                    "text/event-stream": {"schema": {"type": "string"}}}}},
                {"application/json": {"schema": _ref("InvokeRequest")}},
                [_path("name", "plugin.function"), {"name": "stream", "in": "query", "schema": {"type": "boolean"}}])},
            "/v1/plans": {"post": _op("Make a plan from a goal, or validate a plan", {"200": _json(_ref("PlanAnswer"))},
                                      {"application/json": {"schema": _ref("PlanRequest")}})},
            "/v1/plans/run": {"post": _op(
                "Run a plan: events `run`, `step`, `approval`, `approval_decided`, `run_finished`",
                {"200": _SSE, "202": _json(OBJECT, "started in the background")},
                {"application/json": {"schema": _ref("PlanRequest")}})},
            "/v1/runs": {"get": _op("Recent runs", {"200": _json(
                {"type": "object", "properties": {"runs": {"type": "array", "items": _ref("Run")},
                                                  "journal": {"type": ["array", "null"]}}})})},
            "/v1/runs/{run}": {"get": _op("One run", {"200": _json(_ref("Run"))}, parameters=[_path("run", "run id")])},
            "/v1/runs/{run}/approve": {"post": _op("Answer an approval request", {"200": _json(OBJECT)},
                                                   {"application/json": {"schema": _ref("ApproveRequest")}},
                                                   [_path("run", "run id")])},
            "/v1/memory/collections": {"get": _op("Collections this key may use", {"200": _json(OBJECT)},
                                                  tag="memory")},
            "/v1/memory/{collection}/search": {"post": _op(
                "Search a collection", {"200": _json(_ref("SearchResult"))},
                {"application/json": {"schema": _ref("SearchRequest")}}, [_path("collection", "collection")],
                tag="memory")},
            "/v1/memory/{collection}/documents": {"post": _op(
                "Ingest documents (multipart files .md/.txt, or JSON)", {"200": _json(_ref("IngestReport"))},
                {"application/json": {"schema": _ref("IngestRequest")},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                     "chunk_size": {"type": "integer"}, "overlap": {"type": "integer"}}}}},
                [_path("collection", "collection")], tag="memory")},
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": {"Problem": {"description": "problem details (RFC 9457)",
                                      "content": {"application/problem+json": {"schema": _ref("Problem")}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
        },
    }
    if keys:
        document["security"] = [{"bearer": []}, {"apiKey": []}]
    return document
