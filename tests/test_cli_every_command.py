"""Every `kernel` command and sub-command, through the real console script, in human and
in `--json` output: each exits 0 and prints what its mode promises (JSON that parses, or
text), with no traceback and no internal error. The list of commands is read from the
parser, so a new command without a case here fails the test.

The services are real: chat goes to the llama.cpp OpenAI-compatible server on loopback;
embeddings come from a small third-party plugin installed (as a distribution with an
entry point) for the test, as a user would install one; memory is the SQLite store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.cli import build_parser
from tests.fixtures_llama import LlamaServer

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
DOCS = ROOT / "samples" / "data" / "docs"

pytestmark = pytest.mark.llama_server

EMBEDDER = '''
"""A deterministic hashing embedder, as a third-party connector package."""
import hashlib
import math
from kernel.hookspecs import hookimpl


class Hashing:
    provider = "hashing"
    model = "hashing-64"
    dimension = 64

    async def embed(self, texts):
        out = []
        for text in texts:
            vector = [0.0] * 64
            for word in text.lower().split():
                vector[int(hashlib.sha1(word.encode()).hexdigest(), 16) % 64] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


@hookimpl
def register_connectors(register):
    register("embedding", "hashing", lambda name, service, settings: Hashing())
'''

PLAN = {"goal": "add two numbers", "steps": [{"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}}],
        "output": "s1"}

# command path -> arguments after it (the human run; --json is added for the other run), stdin
CASES: dict[tuple[str, ...], tuple[list[str], str | None]] = {
    ("plugins", "list"): ([], None),
    ("plugins", "check"): (["{plugins}"], None),
    ("render",): (["travel.packing_list", "-a", "destination=Oslo", "-a", "start=2026-01-01",
                   "-a", "end=2026-01-03"], None),
    ("run",): (["math.add", "-a", "a:=2", "-a", "b:=3"], None),
    ("config", "show"): ([], None),
    ("config", "check"): ([], None),
    ("memory", "ingest"): (["{docs}", "-c", "docs", "--chunk-size", "400"], None),
    ("memory", "search"): (["tomato soup", "-c", "docs", "-k", "2"], None),
    ("memory", "ask"): (["How do I make tomato soup?", "-c", "docs", "-k", "2", "-o", "max_tokens=16"], None),
    ("memory", "collections"): ([], None),
    ("chat",): (["--no-tools", "-o", "max_tokens=8"], "Say hi.\n/exit\n"),
    ("plan",): (["--from", "{plan}", "--run", "--yes"], None),
    ("prompt",): (["Say hi.", "-s", "Be brief.", "-o", "max_tokens=8"], ""),
    ("services",): ([], None),
    ("logs",): (["--function", "math.*", "--status", "ok", "--since", "1h"], None),  # `kernel logs` alone lists
    ("logs", "list"): (["-n", "5", "--function", "math.add"], None),
    ("logs", "show"): (["last"], None),
    ("logs", "stats"): ([], None),
    ("batch",): (["math.add", "--input", "{records}", "--output", "{results}", "--map", "b=second"], None),
    ("serve",): (["--port", "0", "--max-requests", "1"], None),  # asked once (run_serving), then it stops
    ("serve", "hash-key"): (["--generate"], None),
    ("mcp", "list"): ([], None),
    ("mcp", "serve"): (["--functions", "math.add"], "\n".join(json.dumps(m) for m in (  # one MCP session on stdin
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "math-add", "arguments": {"a": 2, "b": 3}}},
    )) + "\n"),
}


def leaf_commands() -> set[tuple[str, ...]]:
    """Every runnable command path of the CLI's parser (built-in commands only: entry
    points are off in this process)."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            return {path}
        if parser.get_default("handler") is not None:  # runnable without an action too (`kernel serve`)
            found.add(path)
        for action in subparsers:
            for name, child in action.choices.items():
                found |= walk(child, (*path, name))
        return found

    return walk(build_parser(["plugins"]), ())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, llama_server: LlamaServer) -> dict[str, object]:
    root = tmp_path_factory.mktemp("cli-project")
    site = root / "site-packages"
    site.mkdir()
    (site / "hashing_embedder.py").write_text(EMBEDDER, encoding="utf-8")
    info = site / "hashing_embedder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hashing-embedder\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[orchestration_kernel]\nhashing = hashing_embedder\n", encoding="utf-8")
    (root / "plan.json").write_text(json.dumps(PLAN), encoding="utf-8")
    (root / "records.jsonl").write_text("".join(json.dumps({"a": i, "second": 10 * i}) + "\n" for i in range(5)),
                                        encoding="utf-8")
    (root / "kernel.toml").write_text(f'''
default_chat = "llama"
default_embedding = "hash"
default_memory = "store"
plugin_dirs = ["{ROOT / "samples" / "plugins"}"]
plugin_allowlist = "hashing-embedder"

[services.llama]
provider = "openai"
base_url = "{llama_server.base_url}"
model = "{llama_server.model}"
options = {{ json_schema_mode = "json_object" }}
settings = {{ max_tokens = 16, temperature = 0.0 }}

[services.hash]
provider = "hashing"
kind = "embedding"

[mcp.servers.clock]
command = "{sys.executable}"
args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]

[services.store]
provider = "sqlite"
options = {{ path = "{root / "memory.db"}" }}
''', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return {"root": root, "env": env}


def run(project: dict[str, object], argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    root = project["root"]
    assert isinstance(root, Path)
    filled = [a.format(docs=DOCS, plugins=ROOT / "samples" / "plugins", plan=root / "plan.json",
                       records=root / "records.jsonl", results=root / "results.jsonl") for a in argv]
    return subprocess.run([str(CONSOLE_SCRIPT), *filled], cwd=root, env=project["env"],  # type: ignore[arg-type]
                          input=stdin, capture_output=True, text=True, timeout=300)


def run_serving(project: dict[str, object], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`kernel serve ... --max-requests 1`: started, asked for its models once (which is the
    one request it answers before it stops), then its output."""
    import queue
    import threading
    import urllib.request

    process = subprocess.Popen([str(CONSOLE_SCRIPT), *argv], cwd=project["root"], env=project["env"],  # type: ignore[arg-type]
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        first = lines.get(timeout=120)
    except queue.Empty:
        process.kill()
        first = ""
    if first.strip():
        url = json.loads(first)["url"] if first.startswith("{") else first.split()[-1]
        with urllib.request.urlopen(f"{url}/v1/models", timeout=60) as response:
            assert response.status == 200 and json.loads(response.read())["object"] == "list"
    rest, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, first + rest, stderr)


def test_every_command_has_a_case() -> None:
    assert leaf_commands() == set(CASES), "add the new command to CASES"


@pytest.mark.parametrize("output", ["human", "json"])
@pytest.mark.parametrize("command", sorted(CASES), ids=" ".join)
def test_command_runs_through_the_console_script(project: dict[str, object], command: tuple[str, ...],
                                                  output: str) -> None:
    arguments, stdin = CASES[command]
    if command[0] == "memory" and command[1] != "ingest":
        run(project, ["memory", "ingest", "{docs}", "-c", "docs", "--chunk-size", "400"], None)
    if command[0] == "logs":  # a run in the journal (on by default for the command line)
        run(project, ["run", "math.add", "-a", "a:=2", "-a", "b:=3"], None)
    argv = [*command, *arguments, *(["--json"] if output == "json" else [])]
    done = run_serving(project, argv) if command == ("serve",) else run(project, argv, stdin)
    assert done.returncode == 0, f"kernel {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip(), f"kernel {' '.join(argv)} printed nothing"
    if command[0] == "logs" and command[-1] != "stats":  # the filters select the run made above
        assert "math.add" in done.stdout, done.stdout
    if output == "json":
        if command in (("chat",), ("mcp", "serve")):  # one JSON object per turn, per MCP message
            for line in done.stdout.strip().splitlines():
                json.loads(line)
        else:
            json.loads(done.stdout)
    else:
        with pytest.raises(json.JSONDecodeError):
            value = json.loads(done.stdout)
            if command == ("run",) and isinstance(value, int | float):  # a number prints as one
                raise json.JSONDecodeError("a number", done.stdout, 0)
