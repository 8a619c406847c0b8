"""MCP servers that misbehave never hang the kernel and never take it down: a server that
exits mid-call (the call fails with a named error, the server is restarted with backoff),
one that never answers (the request's deadline), one that never finishes its handshake or
cannot be run at all, and one that answers 50 MB (the model gets the head, cut to the
result-size limit, and memory stays bounded)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kernel.testing import ScriptedChatModel, tool_call
from tests.mcp_support import FAULTY_SERVER, ROOT, cli_env, make_kernel

pytestmark = pytest.mark.slow


async def test_a_server_that_exits_mid_call_fails_the_call_and_is_restarted() -> None:
    from kernel import mcp

    kernel = make_kernel(faulty=FAULTY_SERVER)
    model = ScriptedChatModel([tool_call("faulty.crash"), tool_call("faulty.echo", text="back again"), "done"])
    kernel.services.add_service("test", model)
    connection = mcp.clients(kernel).plugins["faulty"].connection
    try:
        answer = await kernel.chat("crash, then echo", plugins=["faulty"])
        crashed, echoed = (record.result for record in answer.trace)
        assert crashed.is_error and "exited during tools/call 'crash' (exit code 3)" in crashed.content
        assert not echoed.is_error and echoed.content == "back again"
        assert connection.starts == 2 and connection.state == "ready"
        with pytest.raises(mcp.McpServerUnavailableError, match="exit code 3"):
            await kernel.invoke("faulty.crash")
        assert (await kernel.invoke("faulty.echo", text="once more")).value == "once more"
    finally:
        await kernel.aclose()
    assert answer.text == "done"


async def test_a_server_that_never_answers_meets_the_deadline() -> None:
    from kernel import mcp

    kernel = make_kernel(faulty=FAULTY_SERVER | {"timeout": 1.5})
    model = ScriptedChatModel([tool_call("faulty.hang"), "gave up", tool_call("faulty.hang"), "ok"])
    kernel.services.add_service("test", model)
    try:
        await mcp.start(kernel)
        started = time.monotonic()
        with pytest.raises(mcp.McpTimeoutError, match=r"no answer within 1\.5 s"):
            await kernel.invoke("faulty.hang")
        assert time.monotonic() - started < 5
        answer = await kernel.chat("hang", plugins=["faulty"])
        assert answer.trace[0].is_error and "no answer within 1.5 s" in answer.trace[0].result.content
        assert (await kernel.invoke("faulty.echo", text="still here")).value == "still here"
        # The tool loop's own timeout cancels the request as well (the server is told).
        short = await kernel.chat("hang", plugins=["faulty"], policy={"tool_timeout": 0.5})
        assert "timed out after 0.5 s" in short.trace[0].result.content
    finally:
        await kernel.aclose()


async def test_a_server_that_cannot_start_is_a_named_error_quickly() -> None:
    from kernel import mcp

    silent = {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"], "startup_timeout": 1.0,
              "max_restarts": 0}
    kernel = make_kernel(silent=silent, missing={"command": "/nonexistent/mcp-server", "max_restarts": 0})
    try:
        started = time.monotonic()
        assert kernel.functions(["silent"]) == []  # the lazy start gave up after startup_timeout
        assert time.monotonic() - started < 10
        report = await mcp.start(kernel)
        assert "within 1.0 s (startup_timeout)" in (report["silent"] or "") or "not tried again" in report["silent"]
        assert "cannot run '/nonexistent/mcp-server'" in (report["missing"] or "")
        with pytest.raises(mcp.McpServerUnavailableError):
            await mcp.clients(kernel).plugins["missing"].connection.start()
    finally:
        await kernel.aclose()


BIG = """
import asyncio, json, resource, sys
from kernel import Kernel, KernelSettings
from kernel.testing import ScriptedChatModel, tool_call

async def main():
    server = {"command": sys.executable, "args": [sys.argv[1]], "max_message_bytes": int(sys.argv[2])}
    kernel = Kernel(KernelSettings(mcp={"servers": {"faulty": server}}), load_entry_points=False)
    kernel.services.add_service("test", ScriptedChatModel([tool_call("faulty.big", megabytes=50), "ok"]))
    from kernel import mcp
    await mcp.start(kernel)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = await kernel.chat("big", plugins=["faulty"], policy={"max_result_chars": 5000})
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await kernel.aclose()
    print(json.dumps({"result": answer.trace[0].result.content, "error": answer.trace[0].is_error,
                      "grew_mib": (after - before) / 1024}))

asyncio.run(main())
"""


@pytest.mark.parametrize("limit_mib", [1, 16])
def test_a_50_mb_answer_is_cut_and_memory_stays_bounded(limit_mib: int) -> None:
    """The answer's line is never held whole: the process grows by about the limit (here
    1 or 16 MiB), not by the 50 MB (or the several copies a whole message would cost)."""
    done = subprocess.run([sys.executable, "-c", BIG, str(FAULTY_SERVER["args"][0]), str(limit_mib * 2**20)],
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["error"]
    result = report["result"]
    assert len(result) <= 5000
    assert result.startswith("[cut: the server's answer had 52428")  # the transport's cut, first
    assert f"over the limit of {limit_mib * 2**20} bytes (max_message_bytes); its start follows]\nxxxx" in result
    assert "cut: the result had" in result  # then the tool loop's, to max_result_chars
    assert report["grew_mib"] < 1.5 * limit_mib + 16, report["grew_mib"]  # a whole message: ~6x its size
