"""The kernel as an MCP server (`kernel mcp serve`), against real clients: the `mcp` SDK's
own `ClientSession` over stdio and over streamable HTTP, and the MCP Inspector's CLI (npm,
installed on first use). Only what is selected is exposed; functions that need approval
only on the operator's opt-in; HTTP binds to loopback and takes a bearer token."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mcp_support import CONSOLE_SCRIPT, ROOT, cli_env, inspector, run_inspector  # noqa: F401  (a fixture)

PLUGINS = ROOT / "samples" / "plugins"
GATED = '''
from kernel import kernel_function


@kernel_function(needs_approval=True)
def wipe(target: str) -> str:
    """Delete everything in target."""
    return "wiped " + target


@kernel_function
def peek(target: str) -> str:
    """Look at target."""
    return "saw " + target
'''


@contextlib.asynccontextmanager
async def stdio_session(*argv: str) -> AsyncIterator[Any]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=str(CONSOLE_SCRIPT), args=["mcp", "serve", *argv], env=cli_env(),
                                   cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextlib.contextmanager
def http_server(*argv: str, token: str | None = None) -> Iterator[str]:
    """`kernel mcp serve --transport http --port 0 ...` running; its URL."""
    env = cli_env(**({"MCP_TEST_TOKEN": token} if token else {}))
    args = [str(CONSOLE_SCRIPT), "mcp", "serve", "--transport", "http", "--port", "0", *argv]
    if token:
        args += ["--token-env", "MCP_TEST_TOKEN"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        seen = []
        while True:
            line = lines.get(timeout=60)
            seen.append(line)
            if line.startswith("serving MCP on "):
                yield line.split()[3]
                break
            assert proc.poll() is None, "".join(seen)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_stdio_with_the_sdk_client_session() -> None:
    async with stdio_session("--plugins", str(PLUGINS), "--functions", "math.add,text.upper") as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"math-add", "text-upper", "travel-packing_list", "travel-trip_days"} <= set(tools)
        assert not any(name.startswith(("time-", "writer-", "memory-")) for name in tools), "only what is selected"
        add = tools["math-add"]
        assert add.title == "math.add" and add.input_schema["required"] == ["a", "b"]
        assert add.output_schema == {"type": "object", "properties": {"result": {"type": "number"}},
                                     "required": ["result"]}
        result = await session.call_tool("math-add", {"a": 2, "b": 3})
        assert not result.is_error and result.content[0].text == "5.0" and result.structured_content == {"result": 5.0}
        bad = await session.call_tool("math-add", {"a": 2})
        assert bad.is_error and "parameter 'b' of math.add: missing required argument" in bad.content[0].text
        days = await session.call_tool("travel-trip_days", {"start": "2026-01-01", "end": "2026-01-03"})
        assert days.structured_content == {"result": 3}

        prompts = {prompt.name: prompt for prompt in (await session.list_prompts()).prompts}
        assert set(prompts) == {"travel-packing_list"}  # prompt functions are MCP prompts too
        assert {a.name: a.required for a in prompts["travel-packing_list"].arguments or []} == {
            "destination": True, "start": True, "end": True, "items": False}
        got = await session.get_prompt("travel-packing_list", {"destination": "Oslo", "start": "2026-01-01",
                                                               "end": "2026-01-03", "items": "4"})
        texts = [m.content.text for m in got.messages]
        assert texts[-1] == "List 4 things to pack for a 3-day trip to Oslo, leaving on a Thursday."


async def test_needs_approval_functions_only_on_opt_in(tmp_path: Path) -> None:
    folder = tmp_path / "ops"
    folder.mkdir()
    (folder / "ops.py").write_text(GATED, encoding="utf-8")
    async with stdio_session("--plugins", str(folder)) as session:
        assert [tool.name for tool in (await session.list_tools()).tools] == ["ops-peek"]
        from mcp import MCPError

        with pytest.raises(MCPError, match="unknown tool 'ops-wipe'"):
            await session.call_tool("ops-wipe", {"target": "/"})
    async with stdio_session("--plugins", str(folder), "--allow-needs-approval") as session:
        assert {tool.name for tool in (await session.list_tools()).tools} == {"ops-peek", "ops-wipe"}
        wiped = await session.call_tool("ops-wipe", {"target": "tmp"})
        assert wiped.content[0].text == "wiped tmp"
    nothing = subprocess.run([str(CONSOLE_SCRIPT), "mcp", "serve"], capture_output=True, text=True, env=cli_env(),
                             cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert nothing.returncode == 2 and "nothing to serve" in nothing.stderr
    exposed = subprocess.run([str(CONSOLE_SCRIPT), "mcp", "serve", "--transport", "http", "--host", "0.0.0.0",
                              "--functions", "math.add"], capture_output=True, text=True, env=cli_env(), cwd=ROOT,
                             timeout=60)
    assert exposed.returncode == 3 and "needs a bearer token" in exposed.stderr


async def test_streamable_http_with_the_sdk_client_and_a_bearer_token() -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    token = "test-token-8d7f6e5c4b3a"
    with http_server("--functions", "math.multiply,text.word_count", token=token) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client, \
                streamable_http_client(url, http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == {"math-multiply", "text-word_count"}
            result = await session.call_tool("math-multiply", {"a": 6, "b": 7})
            assert result.structured_content == {"result": 42.0}
            words = await session.call_tool("text-word_count", {"text": "one two three"})
            assert words.content[0].text == "3"
        async with httpx2.AsyncClient() as client:
            refused = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            wrong = await client.post(url, json={}, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and wrong.status_code == 401


def test_the_mcp_inspector_lists_and_calls_our_tools(inspector: list[str]) -> None:  # noqa: F811
    serve = [str(CONSOLE_SCRIPT), "mcp", "serve", "--plugins", str(PLUGINS), "--functions", "math.add"]
    listed = run_inspector(inspector, *serve, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"math-add", "travel-packing_list", "travel-trip_days"} <= names
    called = run_inspector(inspector, *serve, "--method", "tools/call", "--tool-name", "math-add",
                           "--tool-arg", "a=2", "b=40")
    assert called["content"][0]["text"] == "42.0" and not called.get("isError")
    prompt = run_inspector(inspector, *serve, "--method", "prompts/get", "--prompt-name", "travel-packing_list",
                           "--prompt-args", "destination=Oslo", "start=2026-01-01", "end=2026-01-02")
    assert "2-day trip to Oslo" in prompt["messages"][-1]["content"]["text"]


def test_the_mcp_inspector_over_http(inspector: list[str]) -> None:  # noqa: F811
    token = "inspector-token-0f9e8d7c"
    with http_server("--functions", "math.add", token=token) as url:
        auth = ["--transport", "http", "--header", f"Authorization: Bearer {token}"]
        listed = run_inspector(inspector, url, *auth, "--method", "tools/list")
        assert [tool["name"] for tool in listed["tools"]] == ["math-add"]
        called = run_inspector(inspector, url, *auth, "--method", "tools/call", "--tool-name", "math-add",
                               "--tool-arg", "a=1", "b=2")
        assert called["structuredContent"] == {"result": 3}


def test_inspector_is_installed_in_the_cache_folder(inspector: list[str]) -> None:  # noqa: F811
    assert Path(inspector[0]).exists() and os.access(inspector[0], os.X_OK)


async def test_memory_collections_as_resources_in_process(tmp_path: Path) -> None:
    """`build_server` embedded: the SDK's in-process `Client` reads a memory collection
    (what it holds, then a search in it) as resources; only the collections named."""
    from mcp import Client

    from connectors.sqlite_store import SQLiteVectorStore
    from kernel import Kernel, KernelSettings, mcp
    from kernel.memory import Document, SemanticMemory
    from tests.test_memory_ingest import HashingEmbedder

    kernel = Kernel(KernelSettings(), load_entry_points=False)
    kernel.services.add_service("hash", HashingEmbedder(), kind="embedding")
    kernel.services.add_service("mem", SQLiteVectorStore(tmp_path / "mem.db"), kind="memory")
    memory = SemanticMemory(kernel.services.embedding(), kernel.services.memory())
    await memory.ingest_documents([Document("soup.md", "# Soup\n\nTomato soup needs ripe tomatoes and basil."),
                                   Document("bread.md", "# Bread\n\nBread needs flour, water and time.")], "docs")
    functions, _ = mcp.select_functions(kernel, ["math.add"])
    server = mcp.build_server(kernel, functions, collections=["docs"])
    try:
        async with Client(server) as client:
            listed = await client.list_resources()
            assert [str(r.uri) for r in listed.resources] == ["kernel-memory://docs"]
            about = await client.read_resource("kernel-memory://docs")
            assert "memory collection 'docs': 2 passages" in about.contents[0].text
            found = await client.read_resource("kernel-memory://docs/search?q=tomato%20soup&k=1")
            assert "ripe tomatoes" in found.contents[0].text and "soup.md" in found.contents[0].text
            from mcp import MCPError

            with pytest.raises(MCPError, match="unknown resource"):
                await client.read_resource("kernel-memory://secrets")
    finally:
        await kernel.aclose()
