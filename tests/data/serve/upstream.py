"""A minimal OpenAI-compatible chat server on uvicorn, the upstream model of the `kernel serve`
tests and of its benchmark (tests/benchmarks/bench_serve.py): a plain ASGI app, no model.

    python tests/data/serve/upstream.py [--port 0] [--log-dir DIR] [--delay S]

It prints its base URL (`http://127.0.0.1:PORT/v1`) on the first line of stdout once it
listens. `POST /v1/chat/completions` answers "You said: <last message>" (plain, or streamed
word by word as `chat.completion.chunk` frames with a usage chunk when asked); a last
message containing "slow" takes a minute: 300 words, one every `--delay` seconds (streamed),
or one answer after a minute (plain). For those slow calls it writes `started` and, when
the client goes away before the end, `disconnected` lines (with the message) to `--log-dir`:
another process sees whether its caller really hung up on it. `GET /v1/models` lists
`stub-1`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MODEL = "stub-1"
LOG_DIR: Path | None = None
DELAY = 0.2


def _log(name: str, text: str) -> None:
    if LOG_DIR is not None:
        with open(LOG_DIR / name, "a", encoding="utf-8") as out:
            out.write(text.replace("\n", " ") + "\n")


async def _json(send: Send, data: Any, status: int = 200) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _chunk(created: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/v1/models":
        await _json(send, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                        "owned_by": "stub"}]})
        return
    if path != "/v1/chat/completions" or scope["method"] != "POST":
        await _json(send, {"error": {"message": f"no route {path}", "type": "not_found"}}, 404)
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(raw)
    last = str(request["messages"][-1].get("content") or "")
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    slow = "slow" in last
    if slow:
        _log("started", last)
    try:
        created = int(time.time())
        if not request.get("stream"):
            if slow:
                try:
                    await asyncio.wait_for(gone.wait(), DELAY * 300)
                    _log("disconnected", last)
                    return
                except TimeoutError:
                    pass
            text = f"You said: {last}"
            await _json(send, {"id": "chatcmpl-stub", "object": "chat.completion", "created": created,
                               "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": text}}],
                               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                         "total_tokens": prompt_tokens + len(text.split())}})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        words = [f"w{i} " for i in range(300)] if slow else [w + " " for w in f"You said: {last}".split()]
        words[-1] = words[-1].rstrip()
        await send({"type": "http.response.body", "body": _chunk(created, {"role": "assistant", "content": ""}),
                    "more_body": True})
        for word in words:
            if gone.is_set():
                _log("disconnected", last)
                return
            await send({"type": "http.response.body", "body": _chunk(created, {"content": word}), "more_body": True})
            if slow:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), DELAY)
        tail = _chunk(created, {}, "stop")
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                     "total_tokens": prompt_tokens + len(words)}
            tail += b"data: " + json.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk",
                                            "created": created, "model": MODEL, "choices": [],
                                            "usage": usage}).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})
    finally:
        watcher.cancel()


async def main(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            access_log=False, ws="none")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("the upstream stub could not start")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{bound}/v1", flush=True)
    await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    LOG_DIR, DELAY = args.log_dir, args.delay
    asyncio.run(main(args.port))
