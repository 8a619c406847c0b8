"""Chat-call overhead of the kernel over the raw SDK client (budget: under +50 µs).

A fake OpenAI server in a child process answers every chat completion instantly with a
canned response on loopback. Both sides use the same SDK against it: the floor is
`AsyncOpenAI().chat.completions.create(...)`; ours is the same call through the kernel's
path (`ResilientChatModel` + OpenAI connector: request mapping, concurrency bound, retry
wrapper, response mapping), and a prompt function through `Kernel.invoke`. Rounds are
interleaved and the best round counts, so machine load hits both sides alike.

    python tests/benchmarks/bench_chat.py      # prints the table
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = tuple[Any, ...]
SEQUENTIAL_CALLS = 150
CONCURRENT = 30
CONCURRENT_BATCHES = 6
ROUNDS = 5
MODEL = "bench-model"

_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the fake OpenAI server did not start")


async def _per_call_sequential(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for _ in range(SEQUENTIAL_CALLS):
        await call()
    return (time.perf_counter() - start) / SEQUENTIAL_CALLS


async def _per_call_concurrent(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for _ in range(CONCURRENT_BATCHES):
        await asyncio.gather(*(call() for _ in range(CONCURRENT)))
    return (time.perf_counter() - start) / (CONCURRENT * CONCURRENT_BATCHES)


async def _measure(base_url: str) -> list[Row]:
    import openai

    from connectors.openai_models import chat_factory
    from kernel import Kernel, KernelSettings, PromptFunction
    from kernel.contents import ChatMessage, ChatRequest
    from kernel.services import ServiceRegistry

    raw = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)

    async def floor() -> Any:
        return await raw.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "ping"}], max_tokens=8
        )

    service = {
        "provider": "openai",
        "model": MODEL,
        "api_key": "sk-bench",
        "base_url": base_url,
        "max_concurrency": 64,
    }
    settings = KernelSettings(services={"bench": service}, default_chat="bench")
    registry = ServiceRegistry(settings)
    registry.add_connector("chat", "openai", chat_factory, "connectors.openai_models")
    chat = registry.chat("bench")
    request = ChatRequest([ChatMessage.user("ping")], settings={"max_tokens": 8})

    async def ours() -> Any:
        return await chat.complete(request)

    kernel = Kernel(settings, load_entry_points=False)
    kernel.add_function(PromptFunction.from_template("ping", name="ping", plugin="bench", settings={"max_tokens": 8}))

    async def invoke() -> Any:
        return await kernel.invoke("bench.ping")

    for fn in (floor, ours, invoke):  # warm up: connections, lazy imports, caches
        for _ in range(20):
            await fn()
    assert (await ours()).text == "pong" and str((await invoke()).value) == "pong"

    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for label, fn, mode in (
            ("ours-seq", ours, _per_call_sequential),
            ("floor-seq", floor, _per_call_sequential),
            ("invoke-seq", invoke, _per_call_sequential),
            ("ours-conc", ours, _per_call_concurrent),
            ("floor-conc", floor, _per_call_concurrent),
        ):
            value = await mode(fn)
            best[label] = min(best.get(label, float("inf")), value)
    await raw.close()
    await kernel.aclose()
    return [
        ("chat call via ResilientChatModel + connector, sequential (per call)", best["ours-seq"], best["floor-seq"]),
        (
            f"chat call via ResilientChatModel + connector, {CONCURRENT} concurrent (per call)",
            best["ours-conc"],
            best["floor-conc"],
        ),
        ("prompt function via Kernel.invoke, sequential (per call)", best["invoke-seq"], best["floor-seq"]),
    ]


def run() -> list[Row]:
    process, base_url = _start_server()
    try:
        return asyncio.run(_measure(base_url))
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(_serve(int(sys.argv[2])))
        return
    rows = run()
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'ours µs':>9}  {'floor µs':>9}  {'overhead µs':>11}")
    for label, ours, floor in rows:
        print(f"{label:<{width}}  {ours * 1e6:9.1f}  {floor * 1e6:9.1f}  {(ours - floor) * 1e6:+11.1f}")


if __name__ == "__main__":
    main()
