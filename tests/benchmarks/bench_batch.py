"""Batch runs: the asyncio executor against Ray, on 2 cores, in the same run.

    python tests/benchmarks/bench_batch.py            # prints the table
    python tests/benchmarks/run.py --only batch

Each case runs in a fresh child process (a Ray cluster per case, started and stopped by
the run itself, so its start-up is in the figure and reported apart):

* CPU-bound: 10,000 records through a native function doing about 1 ms of pure Python
  work each. Floor: the same calls in a plain loop, no kernel.
* I/O-bound: 10,000 records through a prompt function against a loopback
  OpenAI-compatible server that answers after 20 ms (a model's latency, no compute);
  and 300 records against the real llama.cpp server (Gemma 3 270M, `max_tokens=1`), too
  slow on this machine for 10,000.
* Memory: peak RSS of the driver over 10,000, 100,000 and 1,000,000 records (a trivial
  native function, output to a file): flat when the input is streamed.
* Ingestion: 5,000 chunks embedded with local MiniLM (numpy backend) into PostgreSQL +
  pgvector, in-process against the embedding spread over Ray workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = tuple[Any, ...]
CPU_RECORDS = 10_000
IO_RECORDS = 10_000
LLAMA_RECORDS = 300
SERVER_DELAY = 0.02
INGEST_CHUNKS = 5_000
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

WORK = '''
from kernel import kernel_function


@kernel_function
def crunch(n: int) -> int:
    """About 1 ms of pure Python work."""
    x = 0
    for i in range(20_000):
        x = (x * 31 + i + n) % 1000003
    return x


@kernel_function
def echo(n: int) -> int:
    """Nothing at all."""
    return n
'''

PROMPT = '''---
inputs:
  word: {description: a word}
service: model
---
Say {{ word }}.
'''

_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
}).encode()
_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(_BODY)).encode() \
    + b"\r\n\r\n" + _BODY


# --- child processes -----------------------------------------------------------------------------


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line[15:]) for line in head.split(b"\r\n")
                               if line[:15].lower() == b"content-length:"), 0)
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(SERVER_DELAY)
                writer.write(_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def _case(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured run, in this (child) process."""
    os.environ.update(RAY_ENV)
    from kernel import Kernel, KernelSettings

    settings = KernelSettings(plugin_dirs=[spec["plugins"]], services=spec.get("services", {}),
                              standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings)
    if spec["kind"] == "floor":
        fn = kernel.get_function("work.crunch")
        func = fn.func  # type: ignore[attr-defined]
        start = time.perf_counter()
        for n in range(spec["records"]):
            func(n)
        return {"seconds": time.perf_counter() - start}
    if spec["kind"] == "ingest":
        return asyncio.run(_ingest(kernel, spec))
    start = time.perf_counter()
    report = asyncio.run(kernel.batch(spec["function"], spec["input"], output=spec["output"],
                                      executor=spec["executor"], chunk_size=spec.get("chunk_size"),
                                      concurrency=spec.get("concurrency")))
    seconds = time.perf_counter() - start
    assert report.done == spec["records"] and report.failed == 0, report
    return {"seconds": seconds, "startup": report.startup_seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


async def _ingest(kernel: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from kernel.batch import memory_for

    start = time.perf_counter()
    async with memory_for(kernel, spec["executor"]) as memory:
        ready = time.perf_counter()
        report = await memory.ingest(spec["docs"], spec["collection"], chunk_size=400, overlap=0)
    seconds = time.perf_counter() - start
    await kernel.aclose()
    return {"seconds": seconds, "startup": ready - start, "chunks": report.chunks, "added": report.added}


# --- the parent ----------------------------------------------------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(RAY_ENV)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=1800, cwd=spec.get("cwd"))
    if done.returncode != 0:
        raise RuntimeError(f"case {spec.get('label')} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("a server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("a server did not start")


def _records(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            out.write(f'{{"n": {n}, "word": "w{n}"}}\n')
    return path


def _compare(tmp: Path, plugins: Path, label: str, function: str, records: int, rows: list[Row],
             services: dict[str, Any] | None = None, floor: float | None = None, **options: Any) -> None:
    source = _records(tmp / f"{function}-{records}.jsonl", records)
    results = {}
    for executor in ("asyncio", "ray"):
        results[executor] = _child({"label": f"{label} {executor}", "kind": "batch", "plugins": str(plugins),
                                    "function": function, "input": str(source), "records": records,
                                    "output": str(tmp / f"{function}-{executor}-{records}.jsonl"),
                                    "executor": executor, "services": services or {}, **options})
    asyncio_s, ray = results["asyncio"]["seconds"], results["ray"]
    rows.append((f"{label}: asyncio", asyncio_s, floor))
    rows.append((f"{label}: ray, start-up included", ray["seconds"], asyncio_s))
    rows.append((f"{label}: ray, net of cluster start-up", ray["seconds"] - ray["startup"], asyncio_s))
    rows.append((f"{label}: ray cluster start-up (fixed)", ray["startup"], None))


def _llama_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    from connectors.llamacpp import default_model_path
    from kernel.settings import KernelSettings

    port = _free_port()
    model = default_model_path(Path(KernelSettings().cache_dir))
    log = (tmp / "llama.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias",
                                "gemma-3-270m", "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port),
                                "--n_ctx", "2048"], stdout=log, stderr=subprocess.STDOUT)
    _wait_for(port, process)
    return process, f"http://127.0.0.1:{port}/v1"


def _corpus(folder: Path, chunks: int) -> Path:
    """Files whose paragraphs each make one 400-character chunk."""
    import random

    rng = random.Random(7)
    words = ["kernel", "plugin", "memory", "vector", "batch", "ray", "worker", "record", "chunk", "embed", "store",
             "search", "plan", "model", "service", "retry", "budget", "prompt", "template", "function", "native",
             "cluster", "driver", "stream", "resume"]
    folder.mkdir(parents=True)
    per_file = 100
    for f in range(chunks // per_file):
        paragraphs = []
        for _ in range(per_file):
            text = " ".join(rng.choice(words) for _ in range(80))
            paragraphs.append(text[:395])
        (folder / f"doc{f:03d}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return folder


def _ingest_rows(tmp: Path, plugins: Path, rows: list[Row]) -> None:
    import pgserver

    docs = _corpus(tmp / "corpus", INGEST_CHUNKS)
    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        services = {"pg": {"provider": "pgvector", "options": {"dsn": server.get_uri()}}}
        results = {}
        for executor in ("asyncio", "ray"):
            spec = {"label": f"ingest {executor}", "kind": "ingest", "plugins": str(plugins), "executor": executor,
                    "docs": str(docs), "collection": f"bench_{executor}",
                    "services": {**services, "embed": {"provider": "sentence-transformers", "kind": "embedding"}}}
            spec["services"]["pg"]["kind"] = "memory"
            results[executor] = _child(spec)
            assert results[executor]["added"] >= INGEST_CHUNKS * 0.95, results[executor]
        local, ray = results["asyncio"], results["ray"]
        label = f"ingest {local['chunks']:,} chunks (MiniLM, pgvector)"
        rows.append((f"{label}: in-process", local["seconds"], None))
        rows.append((f"{label}: ray, start-up included", ray["seconds"], local["seconds"]))
        rows.append((f"{label}: ray, net of cluster start-up", ray["seconds"] - ray["startup"], local["seconds"]))
    finally:
        server.cleanup()


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as name:
        tmp = Path(name)
        plugins = tmp / "plugins" / "work"
        plugins.mkdir(parents=True)
        (plugins / "work.py").write_text(WORK, encoding="utf-8")
        (plugins / "say.prompt").write_text(PROMPT, encoding="utf-8")

        floor = _child({"label": "floor", "kind": "floor", "plugins": str(plugins), "records": CPU_RECORDS})
        _compare(tmp, plugins, f"{CPU_RECORDS:,} CPU-bound records (~1 ms)", "work.crunch", CPU_RECORDS, rows,
                 floor=floor["seconds"], chunk_size=250)

        port = _free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
        try:
            _wait_for(port, server)
            model = {"model": {"provider": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "bench-model",
                               "api_key": "none", "max_concurrency": 32}}
            _compare(tmp, plugins, f"{IO_RECORDS:,} prompt records, server answering in 20 ms", "work.say",
                     IO_RECORDS, rows, services=model, concurrency=32, chunk_size=250)
        finally:
            server.kill()

        llama, base_url = _llama_server(tmp)
        try:
            model = {"model": {"provider": "openai", "base_url": base_url, "model": "gemma-3-270m",
                               "settings": {"max_tokens": 1, "temperature": 0.0}, "max_concurrency": 4}}
            _compare(tmp, plugins, f"{LLAMA_RECORDS} prompt records, llama.cpp server", "work.say", LLAMA_RECORDS,
                     rows, services=model, concurrency=4, chunk_size=25)
        finally:
            llama.kill()

        for records in (10_000, 100_000, 1_000_000):
            source = _records(tmp / f"mem-{records}.jsonl", records)
            for executor in ("asyncio", "ray"):
                result = _child({"label": f"memory {records}", "kind": "batch", "plugins": str(plugins),
                                 "function": "work.echo", "input": str(source), "records": records,
                                 "output": str(tmp / f"mem-{executor}-{records}.out.jsonl"), "executor": executor,
                                 "chunk_size": 1000 if executor == "ray" else None})
                rows.append((f"driver peak RSS, {records:,} records, {executor} ({result['seconds']:.1f} s)",
                             result["peak_mib"], None, "MiB"))
            source.unlink()

        _ingest_rows(tmp, plugins, rows)
    return rows


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        asyncio.run(_serve(int(sys.argv[2])))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print(json.dumps(_case(json.loads(sys.argv[2]))))
        return
    for row in run():
        label, ours, floor = row[0], row[1], row[2]
        unit = row[3] if len(row) > 3 else "s"
        ratio = f"{ours / floor:.2f}x" if floor else "-"
        print(f"{label:<75} {ours:>10.2f} {unit:<3} {'' if floor is None else f'{floor:.2f}':>8}  {ratio}")


if __name__ == "__main__":
    main()
