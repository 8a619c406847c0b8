"""Batch runs and memory ingestion on a real local Ray cluster (2 CPUs, loopback, started
here): workers build their own kernel from the driver's configuration and plugin folders,
for a native function, a prompt function on a scripted model installed as a third-party
connector (an entry point, as a user installs one), and a prompt function on the real
llama.cpp server; a worker killed mid-run has its chunk retried elsewhere without a
duplicate; a run resumes; `kernel batch --executor ray --address` and `kernel memory
ingest --executor ray` into the real PostgreSQL + pgvector, its chunking on the workers
giving the records in-process ingestion gives; the SQLite store refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings
from tests.fixtures_llama import LlamaServer

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
DOCS = ROOT / "samples" / "data" / "docs"
# Ray on loopback only (Ray's switch that makes a node use the loopback address), and no
# usage report: nothing leaves the machine.
RAY_VARIABLES = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

WORK = '''
import os
import time
from pathlib import Path

from kernel import kernel_function

HERE = Path(__file__).resolve().parent


@kernel_function
def crunch(n: int, rounds: int = 2000) -> dict:
    """CPU work; says which process did it."""
    with open(HERE / "calls.log", "a", encoding="utf-8") as log:
        log.write(f"{n}\\n")
    x = 0
    for i in range(rounds):
        x = (x * 31 + i + n) % 1000003
    return {"n": n, "x": x, "pid": os.getpid()}


@kernel_function
def picky(n: int) -> int:
    """Refuses 5."""
    if n == 5:
        raise ValueError(f"{n} is not welcome")
    return n


@kernel_function
def where(n: int = 0) -> str:
    """The folder this plugin was loaded from, in the worker."""
    return str(HERE)


@kernel_function
def linger(n: int) -> dict:
    """Waits (to be killed by the test) the first time it sees n == 137, saying in which process."""
    marker = HERE / "linger.pid"
    if n == 137 and not marker.exists():
        (HERE / "linger.tmp").write_text(str(os.getpid()))
        (HERE / "linger.tmp").rename(marker)
        time.sleep(120)
    return {"n": n, "pid": os.getpid()}
'''

PROMPT = '''---
description: Shout a word back.
inputs:
  word: {description: the word}
service: echo
---
shout {{ word }}
'''

TESTKIT = '''
"""A third-party package: a scripted chat model and a hashing embedder, as connectors."""
import hashlib
import math

from kernel.hookspecs import hookimpl
from kernel.testing import ScriptedChatModel


class Hashing:
    provider = "batch-hashing"
    model = "hashing-32"
    dimension = 32

    async def embed(self, texts):
        out = []
        for text in texts:
            vector = [0.0] * 32
            for word in text.lower().split():
                vector[int(hashlib.sha1(word.encode()).hexdigest(), 16) % 32] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


@hookimpl
def register_connectors(register):
    register("chat", "echo-model",
             lambda name, service, settings: ScriptedChatModel(default=lambda r: r.messages[-1].content.upper()))
    register("embedding", "batch-hashing", lambda name, service, settings: Hashing())
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("ray-site")
    (site / "batch_testkit.py").write_text(TESTKIT, encoding="utf-8")
    info = site / "batch_testkit-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: batch-testkit\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[orchestration_kernel]\ntestkit = batch_testkit\n", encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def cluster(site: Path) -> Iterator[str]:
    """A local Ray cluster on loopback for this module; its GCS address. Workers inherit
    PYTHONPATH (the test kit's site folder) from this process."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", *RAY_VARIABLES)}
    os.environ.update(RAY_VARIABLES)  # before ray is imported: it reads the loopback switch then
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    try:
        import ray
    except ImportError as exc:  # fail, do not skip: CI installs the [ray] extra
        pytest.fail(f'these tests need Ray: pip install "orchestration-kernel[ray]" ({exc})')
    sys.path.insert(0, str(site))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        address = str(ray.get_runtime_context().gcs_address)
        assert address.startswith("127.0.0.1:"), f"the test cluster must listen on loopback, not {address}"
        yield address
    finally:
        ray.shutdown()
        sys.path.remove(str(site))
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins" / "work"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text(WORK, encoding="utf-8")
    (folder / "shout.prompt").write_text(PROMPT, encoding="utf-8")
    return folder


def make_kernel(plugins: Path, **settings: Any) -> Kernel:
    services = {"echo": {"provider": "echo-model", "max_concurrency": 4}, **settings.pop("services", {})}
    return Kernel(KernelSettings(plugin_dirs=[plugins], services=services, **settings))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_native_function_runs_on_both_workers_in_input_order(cluster: str, plugins: Path,
                                                                   tmp_path: Path) -> None:
    kernel = make_kernel(plugins)
    records = [{"id": f"r{i}", "n": i} for i in range(300)]
    report = await kernel.batch("work.crunch", records, output=tmp_path / "out.jsonl", executor="ray",
                                chunk_size=20)
    assert (report.done, report.failed, report.executor) == (300, 0, "ray")
    out = lines(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [f"r{i}" for i in range(300)]
    pids = Counter(r["result"]["pid"] for r in out)
    assert len(pids) >= 2 and os.getpid() not in pids, "the records ran in the cluster's worker processes"


async def test_scripted_model_prompt_function_on_workers(cluster: str, plugins: Path) -> None:
    """The model is a connector of an installed package: each worker builds it from the
    configuration (`provider = "echo-model"`); nothing of the driver's is pickled."""
    kernel = make_kernel(plugins, prices={"scripted-model": {"input": 1.0, "output": 1.0}})
    report = await kernel.batch("work.shout", [{"word": f"w{i}"} for i in range(300)], executor="ray",
                                chunk_size=25, concurrency=4)
    assert report.done == 300 and [r.value for r in report.results[:2]] == ["SHOUT W0", "SHOUT W1"]
    assert (report.input_tokens, report.output_tokens) == (3000, 1500)
    assert report.cost == pytest.approx(4500 / 1e6)


def test_each_worker_gets_a_share_of_a_service_concurrency(plugins: Path) -> None:
    from kernel.batch import kernel_spec

    kernel = make_kernel(plugins, services={"big": {"provider": "echo-model", "max_concurrency": 16}})
    spec = kernel_spec(kernel, slots=2, concurrency=4)
    assert spec.service_limits == {"echo": 2, "big": 8}, "two task slots: half each, the cluster within the limit"
    assert spec.settings["plugin_dirs"] == [str(plugins.resolve())]
    assert kernel_spec(kernel, working_dir=plugins.parent).settings["plugin_dirs"] == ["work"]


async def test_a_worker_killed_mid_run_has_its_chunk_retried_elsewhere(cluster: str, plugins: Path,
                                                                       tmp_path: Path) -> None:
    """The test kills (SIGKILL) the worker process running record 137; Ray runs its chunk
    again in another worker, and the output holds each record once, in order."""
    kernel = make_kernel(plugins)
    run = asyncio.ensure_future(kernel.batch("work.linger", [{"n": i} for i in range(300)],
                                             output=tmp_path / "out.jsonl", executor="ray", chunk_size=20))
    marker = plugins / "linger.pid"
    for _ in range(1200):
        if marker.exists() or run.done():
            break
        await asyncio.sleep(0.05)
    assert marker.exists(), f"record 137 never started: {run.done() and run.result()}"
    killed = int(marker.read_text())
    os.kill(killed, signal.SIGKILL)
    report = await asyncio.wait_for(run, 120)
    assert (report.done, report.failed) == (300, 0)
    out = lines(tmp_path / "out.jsonl")
    assert [r["result"]["n"] for r in out] == list(range(300)), "each record once, in order"
    assert out[137]["result"]["pid"] != killed, "the chunk was retried in another worker"
    assert not alive(killed), "the killed worker is gone (or a zombie waiting to be reaped)"


async def test_a_run_on_ray_resumes(cluster: str, plugins: Path, tmp_path: Path) -> None:
    kernel = make_kernel(plugins)
    records = [{"n": i} for i in range(200)]
    out = tmp_path / "out.jsonl"
    await kernel.batch("work.crunch", records, output=out, executor="ray", chunk_size=25)
    kept = out.read_text(encoding="utf-8").splitlines(keepends=True)[:120]
    out.write_text("".join(kept), encoding="utf-8")  # as if killed after 120 results
    log = plugins / "calls.log"
    log.unlink()
    report = await kernel.batch("work.crunch", records, output=out, executor="ray", chunk_size=25)
    assert (report.done, report.skipped) == (80, 120)
    assert sorted(int(n) for n in log.read_text().split()) == list(range(120, 200)), "only what was not done"
    assert [r["result"]["n"] for r in lines(out)] == list(range(200))


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def cli_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env.update(RAY_VARIABLES)
    return env


def test_the_command_line_on_the_cluster_with_a_plan(cluster: str, site: Path, plugins: Path,
                                                     tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,number\n" + "".join(f"c{i},{i}\n" for i in range(100)), encoding="utf-8")
    (tmp_path / "plan.json").write_text(json.dumps({"goal": "crunch then add", "steps": [
        {"id": "s1", "function": "work.crunch", "arguments": {"n": "$input.n"}},
        {"id": "s2", "function": "math.add", "arguments": {"a": "$s1.n", "b": 1000}},
    ]}), encoding="utf-8")
    argv = [str(CONSOLE_SCRIPT), "--plugins", str(plugins), "batch", "--plan", "plan.json", "--input", "in.csv",
            "--output", "out.jsonl", "--map", "n=number", "--executor", "ray", "--address", cluster,
            "--chunk-size", "10", "--json"]
    done = subprocess.run(argv, cwd=tmp_path, env=cli_env(site), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["done"], summary["failed"], summary["executor"]) == (100, 0, "ray")
    out = lines(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [f"c{i}" for i in range(100)]
    assert [r["result"] for r in out] == [1000.0 + i for i in range(100)]


@pytest.mark.postgres
def test_memory_ingest_on_ray_into_pgvector(cluster: str, site: Path, tmp_path: Path, postgres_dsn: str) -> None:
    (tmp_path / "kernel.toml").write_text(f'''
default_embedding = "hash"
default_memory = "pg"

[services.hash]
provider = "batch-hashing"
kind = "embedding"

[services.pg]
provider = "pgvector"
options = {{ dsn = "{postgres_dsn}" }}

[services.lite]
provider = "sqlite"
options = {{ path = "{tmp_path / "memory.db"}" }}
''', encoding="utf-8")
    env = cli_env(site)

    def kernel_cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONSOLE_SCRIPT), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=240)

    ray_run = kernel_cli("memory", "ingest", str(DOCS), "-c", "onray", "--chunk-size", "100", "--executor", "ray",
                         "--address", cluster, "--json")
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    local_run = kernel_cli("memory", "ingest", str(DOCS), "-c", "local", "--chunk-size", "100", "--json")
    first, local = json.loads(ray_run.stdout), json.loads(local_run.stdout)
    assert first["chunks"] == local["chunks"] == first["added"] > 10
    again = json.loads(kernel_cli("memory", "ingest", str(DOCS), "-c", "onray", "--chunk-size", "100",
                                  "--executor", "ray", "--address", cluster, "--json").stdout)
    assert (again["added"], again["skipped"]) == (0, first["chunks"]), "idempotent: nothing embedded or stored twice"
    hits = [json.loads(kernel_cli("memory", "search", "tomato soup", "-c", name, "-k", "3", "--json").stdout)
            for name in ("onray", "local")]
    assert [h["id"] for h in hits[0]] == [h["id"] for h in hits[1]], "the same vectors as in-process"

    refused = kernel_cli("memory", "ingest", str(DOCS), "--store", "lite", "--executor", "ray")
    assert refused.returncode == 3
    assert "the sqlite store (service 'lite') is a file on one machine" in refused.stderr
    assert "pgvector" in refused.stderr


def memory_kernel(postgres_dsn: str) -> Kernel:
    return Kernel(KernelSettings(default_embedding="hash", default_memory="pg", services={
        "hash": {"provider": "batch-hashing", "kind": "embedding"},
        "pg": {"provider": "pgvector", "options": {"dsn": postgres_dsn}},
    }))


async def store_contents(kernel: Kernel, collection: str) -> dict[str, tuple[str, dict[str, Any], list[float]]]:
    store = kernel.services.memory("pg")
    records = await store.get(collection, await store.list_ids(collection))
    return {r.id: (r.text, r.metadata, list(r.vector or [])) for r in records}


@pytest.mark.postgres
async def test_memory_ingest_chunks_on_the_workers(cluster: str, tmp_path: Path, postgres_dsn: str) -> None:
    """`memory_for(kernel, "ray")` splits the documents in Ray tasks (the worker processes
    say so) and the store then holds exactly what in-process ingestion stores: the same
    record ids, texts, metadata and vectors; a re-run chunks again and stores nothing twice."""
    import shutil

    from kernel.batch import ClusterChunker, memory_for

    corpus = tmp_path / "corpus"
    shutil.copytree(DOCS, corpus)
    again = "A paragraph found several times in this file, long enough for a chunk.\n\n"
    (corpus / "again.md").write_text("# Notes\n\n" + again * 5, encoding="utf-8")
    (corpus / "more").mkdir()
    for i in range(5):
        (corpus / "more" / f"n{i}.txt").write_text(f"Note {i}. " + "Soup needs salt and time. " * (10 + i),
                                                    encoding="utf-8")
    files = 9
    kernel = memory_kernel(postgres_dsn)
    async with memory_for(kernel, "ray", documents_per_task=2) as memory:
        chunker = memory.chunker
        assert isinstance(chunker, ClusterChunker)
        first = await memory.ingest(corpus, "chunked_on_ray", chunk_size=120, overlap=20)
        assert chunker.tasks == (files + 1) // 2, "two documents a task"
        assert sum(chunker.workers.values()) == chunker.tasks
        assert os.getpid() not in chunker.workers and all(alive(pid) for pid in chunker.workers), \
            "the chunking ran in the cluster's worker processes"
        rerun = await memory.ingest(corpus, "chunked_on_ray", chunk_size=120, overlap=20)
        assert chunker.tasks == 2 * ((files + 1) // 2)
    async with memory_for(kernel, "asyncio") as local:
        assert not isinstance(local.chunker, ClusterChunker)
        here = await local.ingest(corpus, "chunked_here", chunk_size=120, overlap=20)

    on_ray, in_process = [await store_contents(kernel, c) for c in ("chunked_on_ray", "chunked_here")]
    assert (first.files, first.chunks, first.added) == (here.files, here.chunks, here.added) == (files, len(on_ray),
                                                                                                 len(on_ray))
    assert on_ray.keys() == in_process.keys() and len(on_ray) > 20
    for rid, (text, meta, vector) in on_ray.items():
        assert (text, meta) == in_process[rid][:2]
        assert vector == pytest.approx(in_process[rid][2])
    assert sum(meta["source"] == "again.md" for _, meta, _ in on_ray.values()) == 2, "a repeated text stored once"
    assert (rerun.added, rerun.skipped, rerun.removed) == (0, first.chunks, 0)
    assert await store_contents(kernel, "chunked_on_ray") == on_ray, "the re-run stored nothing twice"
    await kernel.aclose()


def test_documents_go_to_the_chunking_tasks_in_bounded_pieces_of_plain_data(cluster: str) -> None:
    """Pieces of at most 3 documents and 100 characters (a larger document alone); what a
    chunking task receives and returns pickles to builtins only; its function by reference."""
    import pickle
    import pickletools

    from ray import cloudpickle

    from kernel.batch import ClusterChunker
    from kernel.batch.worker import chunk_piece
    from kernel.memory import ChunkSource, chunk_documents

    docs = [ChunkSource(f"d{i}", "".join(f"Word {n}. " for n in range(size)), {"root": "r"}, i % 2 == 0, f"r/d{i}")
            for i, size in enumerate([1, 1, 1, 60, 1, 1, 1])]
    pieces = ClusterChunker(None, piece=3, max_chars=100).pieces(docs)
    assert [[doc[0] for doc in piece] for piece in pieces] == [["d0", "d1", "d2"], ["d3"], ["d4", "d5", "d6"]]
    assert pieces[0][0] == ("d0", "Word 0. ", {"root": "r"}, True, "r/d0")
    pid, chunked = chunk_piece(pieces[1], 100, 10, "chars")
    assert pid == os.getpid() and chunked == chunk_documents(docs[3:4], 100, 10, "chars") and len(chunked[0]) > 3
    sent = (pieces, chunked)
    assert [op for op, _, _ in pickletools.genops(pickle.dumps(sent, protocol=2)) if op.name == "GLOBAL"] == []
    assert b"kernel.batch.worker" in cloudpickle.dumps(chunk_piece) and len(cloudpickle.dumps(chunk_piece)) < 200


@pytest.mark.llama_server
async def test_prompt_function_on_the_llama_server_from_workers(cluster: str, plugins: Path,
                                                                llama_server: LlamaServer) -> None:
    kernel = make_kernel(plugins, services={"echo": {
        "provider": "openai", "base_url": llama_server.base_url, "model": llama_server.model,
        "settings": {"max_tokens": 2, "temperature": 0.0}}})
    report = await kernel.batch("work.shout", [{"word": f"w{i}"} for i in range(16)], executor="ray", chunk_size=4)
    assert (report.done, report.failed) == (16, 0), [r.error for r in report.results if not r.ok]
    assert report.output_tokens > 0 and all(isinstance(r.value, str) for r in report.results)


@pytest.mark.parametrize("limit", [1, 4])
async def test_the_cluster_stays_within_a_service_max_concurrency(cluster: str, plugins: Path, limit: int) -> None:
    """A real HTTP service (loopback) with `max_concurrency` 4 on a 2-CPU cluster: each
    worker gets 2, the cluster reaches it; with 1 (fewer than the CPUs), one chunk at a time."""
    from tests.http_fakes import FakeHTTPServer, Reply, Request, openai_completion

    state = {"now": 0, "peak": 0}

    async def handler(req: Request) -> Reply:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            await asyncio.sleep(0.05)
            word = req.json()["messages"][-1]["content"].split()[-1]
            return Reply(200, openai_completion(word.upper()))
        finally:
            state["now"] -= 1

    with FakeHTTPServer(handler) as server:
        kernel = make_kernel(plugins, services={"echo": {
            "provider": "openai", "model": "fake-model", "api_key": "sk-test", "base_url": server.url + "/v1",
            "max_concurrency": limit}})
        report = await kernel.batch("work.shout", [{"word": f"w{i}"} for i in range(40)], executor="ray",
                                    chunk_size=10, concurrency=8)
    assert (report.done, report.failed) == (40, 0), [r.error for r in report.results if not r.ok][:2]
    assert [r.value for r in report.results[:2]] == ["W0", "W1"]
    assert state["peak"] <= limit, f"{state['peak']} requests at once, max_concurrency {limit}"
    if limit == 4:
        assert state["peak"] >= 3, "both workers sent requests at once, each within its share"


async def test_the_input_is_streamed_to_the_cluster(cluster: str, plugins: Path, tmp_path: Path) -> None:
    """Backpressure: the driver takes a record from the input only when there is room,
    never more than `max_in_flight` chunks (and the one being filled) ahead of the results."""
    out = tmp_path / "out.jsonl"
    state = {"taken": 0, "ahead": 0}

    def records() -> Iterator[dict[str, int]]:
        for i in range(1000):
            state["taken"] += 1
            written = len(out.read_bytes().splitlines()) if out.exists() else 0
            state["ahead"] = max(state["ahead"], state["taken"] - written)
            yield {"n": i, "rounds": 100}

    kernel = make_kernel(plugins)
    report = await kernel.batch("work.crunch", records(), output=out, executor="ray", chunk_size=10,
                                max_in_flight=2, order="completed")
    assert report.done == 1000 and state["taken"] == 1000
    assert state["ahead"] <= 3 * 10, f"the driver read {state['ahead']} records ahead of the results"
    assert sorted(r["result"]["n"] for r in lines(out)) == list(range(1000))


def test_only_data_is_sent_to_the_workers(cluster: str, plugins: Path) -> None:
    """What a task receives (the spec, the target, the chunk's arguments) and returns (the
    outcomes) pickles to plain data and two small classes of `kernel.batch`; the task's
    function goes by reference. No kernel, registry, service or SDK client, although the
    driver's kernel has built an openai client."""
    import pickle
    import pickletools

    from ray import cloudpickle  # what Ray pickles a task's function and arguments with

    from kernel.batch import kernel_spec
    from kernel.batch.work import Outcome, target_for
    from kernel.batch.worker import run_chunk

    kernel = make_kernel(plugins, services={"api": {"provider": "openai", "model": "m", "api_key": "sk-test"}})
    kernel.services.chat("api")
    target, _ = target_for(kernel, "work.shout")
    sent = (kernel_spec(kernel, slots=2), target, [{"word": "w1"}], [Outcome("W1", None, None, 3, 1, 0.5)])
    classes = set()
    assert pickle.loads(cloudpickle.dumps(sent)) == sent
    for op, arg, _ in pickletools.genops(pickle.dumps(sent, protocol=2)):
        if op.name == "GLOBAL":
            classes.add(str(arg))
    assert classes <= {"kernel.batch.worker KernelSpec", "kernel.batch.work Target", "kernel.batch.work Outcome",
                       "copy_reg _reconstructor", "copyreg _reconstructor", "__builtin__ object",
                       "builtins object"}, classes
    assert b"kernel.batch.worker" in cloudpickle.dumps(run_chunk) and len(cloudpickle.dumps(run_chunk)) < 200


def test_the_driver_killed_on_the_cluster_then_resumed(cluster: str, site: Path, plugins: Path,
                                                       tmp_path: Path) -> None:
    """`kernel batch --executor ray --address ...` killed with SIGKILL in the middle, then
    run again: nothing completed runs again, nothing is lost or written twice."""
    import time

    records = 300
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "n": i, "rounds": 60000}) + "\n"
                                               for i in range(records)), encoding="utf-8")
    out, log = tmp_path / "out.jsonl", plugins / "calls.log"
    argv = [str(CONSOLE_SCRIPT), "--plugins", str(plugins), "batch", "work.crunch", "--input", "in.jsonl",
            "--output", str(out), "--executor", "ray", "--address", cluster, "--chunk-size", "10"]
    process = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(site), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    def written() -> list[dict[str, Any]]:
        if not out.exists():
            return []
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines(keepends=True)
                if line.endswith("\n")]

    while len(written()) < records // 4:
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    pending = tmp_path / "out.pending.jsonl"
    completed = {str(r["id"]) for r in written()}
    if pending.exists():
        completed |= {str(json.loads(line)["id"]) for line in pending.read_text().splitlines(keepends=True)
                      if line.endswith("\n")}
    assert records // 4 <= len(completed) < records, "killed in the middle"
    time.sleep(1)  # the killed driver's tasks are cancelled by Ray; let any last one finish its log line
    calls_before = len(log.read_text().split())

    resumed = subprocess.run(argv, cwd=tmp_path, env=cli_env(site), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    repeated = {f"r{n}" for n in log.read_text().split()[calls_before:]}
    assert repeated and not repeated & completed, "a record that completed before the kill ran again"
    ids = [str(r["id"]) for r in written()]
    assert ids == [f"r{i}" for i in range(records)], "nothing lost, nothing written twice, in input order"
    assert not pending.exists()


async def test_the_executor_and_address_from_the_configuration(cluster: str, plugins: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`[batch] executor` and `address` in kernel.toml (or `KERNEL_BATCH__EXECUTOR` in the
    environment or .env) choose Ray without an argument; an argument overrides them."""
    from kernel.errors import ConfigurationError

    config = tmp_path / "kernel.toml"
    config.write_text(f'plugin_dirs = ["{plugins}"]\n\n[batch]\nexecutor = "ray"\naddress = "{cluster}"\n',
                      encoding="utf-8")
    kernel = Kernel(KernelSettings.load(config))
    report = await kernel.batch("work.crunch", [{"n": 1, "rounds": 10}])
    assert report.executor == "ray" and report.results[0].value["pid"] != os.getpid()
    assert (await kernel.batch("work.crunch", [{"n": 1}], executor="asyncio")).executor == "asyncio"

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("KERNEL_BATCH__EXECUTOR=ray\n", encoding="utf-8")
    assert KernelSettings.load().batch.executor == "ray"
    (tmp_path / ".env").write_text("KERNEL_BATCH__EXECUTOR=spark\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"batch\.executor"):
        KernelSettings.load()


def test_plugin_folders_shipped_to_the_workers_in_the_working_dir(cluster: str, site: Path, tmp_path: Path) -> None:
    """`--working-dir DIR`: Ray ships the folder to the workers, and each worker loads the
    plugin folder (given relative to it) from its own copy, not from the driver's path."""
    app = tmp_path / "app"
    folder = app / "plugins" / "work"
    folder.mkdir(parents=True)
    (folder / "work.py").write_text(WORK, encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": 2}\n', encoding="utf-8")
    argv = [str(CONSOLE_SCRIPT), "--plugins", "app/plugins/work", "batch", "work.where", "--input", "in.jsonl",
            "--output", "out.jsonl", "--executor", "ray", "--address", cluster, "--working-dir", "app", "--json"]
    done = subprocess.run(argv, cwd=tmp_path, env=cli_env(site), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    places = {Path(r["result"]) for r in lines(tmp_path / "out.jsonl")}
    assert len(places) == 1
    [place] = places
    assert place.parts[-2:] == ("plugins", "work") and not place.is_relative_to(tmp_path), place


async def test_a_key_from_the_environment_reaches_the_workers(cluster: str, plugins: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose key is in a variable (`api_key_env`) of the driver: the variable
    travels in the tasks' runtime environment, and each worker's client sends the key."""
    from tests.http_fakes import FakeHTTPServer, Reply, Request, openai_completion

    seen: list[str] = []

    async def handler(req: Request) -> Reply:
        seen.append(req.headers.get("authorization", ""))
        return Reply(200, openai_completion("ok"))

    monkeypatch.setenv("BATCH_TEST_SECRET", "sk-batch-0123456789")
    with FakeHTTPServer(handler) as server:
        kernel = make_kernel(plugins, services={"echo": {
            "provider": "openai", "model": "fake-model", "api_key_env": "BATCH_TEST_SECRET",
            "base_url": server.url + "/v1"}})
        report = await kernel.batch("work.shout", [{"word": f"w{i}"} for i in range(4)], executor="ray",
                                    chunk_size=2)
    assert (report.done, report.failed) == (4, 0), [r.error for r in report.results if not r.ok]
    assert seen == ["Bearer sk-batch-0123456789"] * 4


async def test_fail_fast_on_the_cluster(cluster: str, plugins: Path, tmp_path: Path) -> None:
    """Without --fail-fast a failed record is recorded and the run goes on; with it, the run
    stops at the first failure and the chunks still running on the cluster are cancelled."""
    kernel = make_kernel(plugins)
    records = [{"id": f"r{i}", "n": i} for i in range(400)]
    report = await kernel.batch("work.picky", records, output=tmp_path / "all.jsonl", executor="ray", chunk_size=10)
    assert (report.done, report.failed, report.stopped) == (399, 1, None)
    [error] = lines(tmp_path / "all.errors.jsonl")
    assert error["id"] == "r5" and "5 is not welcome" in error["message"]

    report = await kernel.batch("work.picky", records, output=tmp_path / "ff.jsonl", executor="ray", chunk_size=10,
                                max_in_flight=2, fail_fast=True)
    assert report.stopped == "--fail-fast: record r5 failed" and report.failed == 1
    assert report.done < 40, "no chunk submitted after the failure"


def test_an_unreachable_cluster_is_named_at_once(tmp_path: Path) -> None:
    """An address where nothing listens: exit 3 within seconds, naming it (Ray alone keeps
    retrying for minutes)."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "in.jsonl").write_text('{"a": 1, "b": 2}\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_", "RAY_"))}
    started = time.monotonic()
    done = subprocess.run([str(CONSOLE_SCRIPT), "batch", "math.add", "--input", "in.jsonl", "--output", "out.jsonl",
                           "--executor", "ray", "--address", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 30
