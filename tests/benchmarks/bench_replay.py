"""Record/replay: a 1,000-call cassette (`kernel.services.replay`).

A cassette of 1,000 distinct chat calls (a system prompt, a ~200-character question, a
~200-character answer), 1,000 streamed calls (about 30 events each) and 1,000 embedding
calls (4 texts of 384 floats each) is recorded from instant fake models, then replayed
through the kernel's path (`kernel.services.chat(name).complete(...)`: resilience layer,
replay layer, request normalisation and matching, answer decoding).

The floor of a replayed call is the same call through the resilience layer to an instant
in-process model (`ScriptedChatModel`, a fake embedder) with replay off: the overhead is
what replaying adds. Loading: `Cassette.load` (parse, check, index) against `json.loads` of
the same file. Recording writes the file after each call (atomically).

    python tests/benchmarks/bench_replay.py      # prints the table
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kernel import Kernel, KernelSettings  # noqa: E402
from kernel.contents import ChatMessage, ChatRequest, StreamEvent  # noqa: E402
from kernel.services import Cassette, close_cassette  # noqa: E402
from kernel.services import replay as replay_module  # noqa: E402
from kernel.testing import ScriptedChatModel  # noqa: E402

Row = tuple[Any, ...]
CALLS = 1000
ROUNDS = 3
DIMENSION = 384
WORDS = ["orbit", "delta", "kernel", "prompt", "river", "amber", "cobalt", "vector", "signal", "harbor", "lantern",
         "meadow", "quartz", "sparrow", "tundra", "velvet", "willow", "zenith", "anchor", "beacon"]


def _sentence(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def _requests() -> list[ChatRequest]:
    rng = random.Random(7)
    return [ChatRequest([ChatMessage.system("You answer in one short paragraph."),
                         ChatMessage.user(f"#{i}: {_sentence(rng, 200)}?")], settings={"max_tokens": 80})
            for i in range(CALLS)]


def _answers() -> list[str]:
    rng = random.Random(11)
    return [_sentence(rng, 200) for _ in range(CALLS)]


def _texts() -> list[list[str]]:
    rng = random.Random(13)
    return [[f"{i}.{j} {_sentence(rng, 80)}" for j in range(4)] for i in range(CALLS)]


class _Embedder:
    provider, model, dimension = "fake", "fake-384", DIMENSION

    def __init__(self) -> None:
        self._rng = random.Random(17)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[self._rng.uniform(-1, 1) for _ in range(DIMENSION)] for _ in texts]


class _Fixed(_Embedder):
    """The floor: vectors already made, handed out instantly."""

    def __init__(self) -> None:
        super().__init__()
        self._vectors = [[self._rng.uniform(-1, 1) for _ in range(DIMENSION)] for _ in range(4)]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [list(v) for v in self._vectors[: len(texts)]]


def _kernel(path: Path | None, mode: str) -> Kernel:
    settings = KernelSettings(replay=mode, replay_cassette=path) if path else KernelSettings()
    return Kernel(settings, load_entry_points=False, builtins=False)


def _forget() -> None:
    for cassette in list(replay_module._OPEN.values()):
        close_cassette(cassette)


async def _record(path: Path) -> float:
    requests, answers, texts = _requests(), _answers(), _texts()
    kernel = _kernel(path, "record")
    kernel.services.add_service("chat", ScriptedChatModel(answers + answers))
    kernel.services.add_service("vectors", _Embedder(), kind="embedding")
    chat, vectors = kernel.services.chat("chat"), kernel.services.embedding("vectors")
    started = time.perf_counter()
    for request in requests:
        await chat.complete(request)
    seconds = time.perf_counter() - started
    for request in requests:
        async for _ in chat.stream(ChatRequest([*request.messages, ChatMessage.user("stream it")])):
            pass
    for batch in texts:
        await vectors.embed(batch)
    _forget()
    return seconds / CALLS


async def _timed(calls: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await calls
    return (time.perf_counter() - started) / CALLS


async def _drain(stream: AsyncIterator[StreamEvent]) -> None:
    async for _ in stream:
        pass


async def _complete_all(model: Any, requests: list[ChatRequest]) -> None:
    for request in requests:
        await model.complete(request)


async def _stream_all(model: Any, requests: list[ChatRequest]) -> None:
    for request in requests:
        await _drain(model.stream(request))


async def _embed_all(model: Any, batches: list[list[str]]) -> None:
    for batch in batches:
        await model.embed(batch)


async def _measure(path: Path) -> dict[str, float]:
    requests, answers, texts = _requests(), _answers(), _texts()
    streamed = [ChatRequest([*r.messages, ChatMessage.user("stream it")]) for r in requests]
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = min(best.get(name, value), value)

    for _ in range(ROUNDS):
        _forget()
        replaying = _kernel(path, "replay")
        replaying.services.add_service("chat", ScriptedChatModel())  # never called: a call would fail (no reply)
        replaying.services.add_service("vectors", _Embedder(), kind="embedding")
        chat, vectors = replaying.services.chat("chat"), replaying.services.embedding("vectors")
        plain = _kernel(None, "off")
        plain.services.add_service("chat", ScriptedChatModel(default=answers[0]))
        plain.services.add_service("vectors", _Fixed(), kind="embedding")
        floor_chat, floor_vectors = plain.services.chat("chat"), plain.services.embedding("vectors")

        keep("complete", await _timed(_complete_all(chat, requests)))
        keep("complete floor", await _timed(_complete_all(floor_chat, requests)))
        keep("stream", await _timed(_stream_all(chat, streamed)))
        keep("stream floor", await _timed(_stream_all(floor_chat, streamed)))
        keep("embed", await _timed(_embed_all(vectors, texts)))
        keep("embed floor", await _timed(_embed_all(floor_vectors, texts)))
        started = time.perf_counter()
        Cassette.load(path)
        keep("load", time.perf_counter() - started)
        started = time.perf_counter()
        json.loads(path.read_text(encoding="utf-8"))
        keep("load floor", time.perf_counter() - started)
    _forget()
    return best


def run() -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.json"
        record = asyncio.run(_record(path))
        size = path.stat().st_size / 2**20
        best = asyncio.run(_measure(path))
    return [
        (f"replay {CALLS:,} chat calls, per call", best["complete"], best["complete floor"]),
        (f"replay {CALLS:,} streamed calls (~30 events), per call", best["stream"], best["stream floor"]),
        (f"replay {CALLS:,} embedding calls (4 x {DIMENSION} floats), per call", best["embed"], best["embed floor"]),
        (f"load the {3 * CALLS:,}-call cassette ({size:.1f} MiB)", best["load"], best["load floor"]),
        (f"record {CALLS:,} chat calls (file written after each), per call", record, None),
    ]


if __name__ == "__main__":
    from run import format_row  # type: ignore[import-not-found]

    for row in run():
        print(" | ".join(format_row("replay", row)))
