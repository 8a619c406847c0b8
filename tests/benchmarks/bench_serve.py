"""Overhead of `POST /v1/chat/completions` through `kernel serve` over calling the same
upstream model directly, sequential and 50 concurrent, in the same run.

The upstream is the test suite's minimal OpenAI-compatible server
(tests/data/serve/upstream.py: a plain ASGI app on uvicorn, in its own process, answering
at once with no model behind it), so the figures are the cost of the extra hop and of
everything `kernel serve` does per request: Host/Origin/size checks, parsing the OpenAI
request, a run record, the kernel's service call (resilience, usage metering, the journal
that the `kernel` command keeps by default) through the OpenAI connector, and the OpenAI
answer. `kernel serve` runs as users run it (the console script, uvicorn, its own process),
its model the `upstream` chat service (pass-through: the request's model names the
service). The client is one `httpx2.AsyncClient` per target, keep-alive, the same JSON body
to both (model `upstream` through kernel serve, `stub-1` directly).

Rows: per-call mean of ITERATIONS sequential calls, plain and streamed (best of ROUNDS);
wall time of 50 concurrent calls, plain and streamed (best of ROUNDS). Direct and through
rounds are interleaved, so a busy moment of the machine weighs on both alike. Two reference
rows split the overhead: the same upstream called with the official openai SDK (as the
connector inside kernel serve calls it) against the plain HTTP call.

Run alone: `python tests/benchmarks/bench_serve.py`, or `python tests/benchmarks/run.py --only serve`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = tuple[str, float, float]

ROUNDS = 5
ITERATIONS = 100
CONCURRENCY = 50
MESSAGES = [{"role": "user", "content": "Tell me something short about the sea"}]


async def _plain(http: Any, model: str) -> None:
    answer = await http.post("/chat/completions", json={"model": model, "messages": MESSAGES})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].startswith("You said:")


async def _streamed(http: Any, model: str) -> None:
    text = ""
    async with http.stream("POST", "/chat/completions",
                           json={"model": model, "messages": MESSAGES, "stream": True}) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if line == "data: [DONE]":
                break
            if '"content"' in line:
                text += line
    assert "sea" in text


async def _sequential(call: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    for _ in range(ITERATIONS):
        await call()
    return (time.perf_counter() - start) / ITERATIONS


async def _concurrent(call: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start


async def _compare(serve_url: str, upstream_url: str) -> list[Row]:
    import httpx2

    limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx2.AsyncClient(base_url=f"{serve_url}/v1", limits=limits, timeout=60) as through, \
            httpx2.AsyncClient(base_url=upstream_url, limits=limits, timeout=60) as direct:
        cases: list[tuple[str, Callable[..., Awaitable[float]], Callable[[Any, str], Awaitable[None]]]] = [
            ("sequential, plain (per call)", _sequential, _plain),
            ("sequential, streamed (per call)", _sequential, _streamed),
            (f"{CONCURRENCY} concurrent, plain (all of them)", _concurrent, _plain),
            (f"{CONCURRENCY} concurrent, streamed (all of them)", _concurrent, _streamed),
        ]
        rows: list[Row] = []
        for label, measure, call in cases:
            def via_serve(call: Any = call) -> Awaitable[None]:
                return call(through, "upstream")

            def to_upstream(call: Any = call) -> Awaitable[None]:
                return call(direct, "stub-1")

            for _ in range(2):  # warm up (connections, the first request's imports)
                await measure(via_serve)
                await measure(to_upstream)
            ours = floor = float("inf")
            for _ in range(ROUNDS):
                floor = min(floor, await measure(to_upstream))
                ours = min(ours, await measure(via_serve))
            rows.append((f"/v1/chat/completions {label}: through kernel serve vs the upstream directly", ours, floor))
        rows += await _sdk_reference(upstream_url, direct)
        return rows


async def _sdk_reference(upstream_url: str, direct: Any) -> list[Row]:
    """For reference: the upstream called with the official openai SDK (what kernel serve's
    OpenAI connector does for each request) against the plain HTTP call: the part of the
    overhead that is the SDK's request building and response parsing, not the server's."""
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(base_url=upstream_url, api_key="unused", max_retries=0)

    async def plain() -> None:
        answer = await sdk.chat.completions.create(model="stub-1", messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content

    async def streamed() -> None:
        async for _ in await sdk.chat.completions.create(model="stub-1", messages=MESSAGES,  # type: ignore[arg-type]
                                                         stream=True):
            pass

    rows: list[Row] = []
    try:
        for label, call, raw in (("plain", plain, _plain), ("streamed", streamed, _streamed)):
            def floor_call(raw: Any = raw) -> Awaitable[None]:
                return raw(direct, "stub-1")

            await _sequential(call)
            await _sequential(floor_call)
            ours = floor = float("inf")
            for _ in range(ROUNDS):
                floor = min(floor, await _sequential(floor_call))
                ours = min(ours, await _sequential(call))
            rows.append((f"reference, sequential {label}: the openai SDK to the upstream vs plain HTTP", ours, floor))
    finally:
        await sdk.close()
    return rows


def run() -> list[Row]:
    from tests.serve_support import serving, upstream, write_upstream_project

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        root = Path(folder)
        with upstream(root / "upstream-log") as base_url, \
                serving(write_upstream_project(root / "project", base_url)) as served:
            return asyncio.run(_compare(served.url, base_url))


if __name__ == "__main__":
    for label, ours, floor in run():
        print(f"{label}\n  kernel serve {ours * 1e3:,.2f} ms   direct {floor * 1e3:,.2f} ms   "
              f"overhead {(ours - floor) * 1e3:+,.2f} ms ({ours / floor:.2f}x)")
