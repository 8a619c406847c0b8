"""Overhead of one MCP tool call through the kernel vs a direct SDK call, over stdio.

The same server program serves both, in the same run: the SDK's `ClientSession.call_tool`
on its own stdio transport (the floor), against `kernel.invoke("srv.tool", ...)`, which
adds the kernel's argument validation (jsonschema), the invoke pipeline, the hop to the
MCP thread and back, our bounded stdio transport and the result conversion. Two servers:
the test suite's `echo` tool (an SDK `MCPServer`) and `mcp-server-time`'s
`get_current_time`. Figures are best-of-ROUNDS per-call means.

Run alone: `python tests/benchmarks/bench_mcp.py`, or with the others through run.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = tuple[str, float, float]

ROUNDS = 5
ITERATIONS = 200
SERVERS: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    "echo (SDK MCPServer)": ([str(ROOT / "tests" / "data" / "mcp" / "faulty_server.py")], "echo", {"text": "hi"}),
    "mcp-server-time get_current_time": (["-m", "mcp_server_time", "--local-timezone", "UTC"], "get_current_time",
                                         {"timezone": "UTC"}),
}


async def _round(call: Any) -> float:
    start = time.perf_counter()
    for _ in range(ITERATIONS):
        await call()
    return (time.perf_counter() - start) / ITERATIONS


async def _compare(args: list[str], tool: str, arguments: dict[str, Any]) -> tuple[float, float]:
    """(kernel, direct): both connected at once, their rounds interleaved, so that a busy
    moment of the machine weighs on both alike."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from kernel import Kernel, KernelSettings, mcp

    kernel = Kernel(KernelSettings(), load_entry_points=False)
    params = StdioServerParameters(command=sys.executable, args=args)
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()
            mcp.add_server(kernel, "srv", command=sys.executable, args=args)
            await mcp.start(kernel)
            function = kernel.get_function(f"srv.{tool}")

            async def direct() -> None:
                result = await session.call_tool(tool, arguments)
                assert not result.is_error

            async def through_kernel() -> None:
                await kernel.invoke(function, dict(arguments))

            for _ in range(20):  # warm up
                await direct()
                await through_kernel()
            ours = floor = float("inf")
            for _ in range(ROUNDS):
                floor = min(floor, await _round(direct))
                ours = min(ours, await _round(through_kernel))
            return ours, floor
    finally:
        await kernel.aclose()


async def _measure() -> list[Row]:
    rows: list[Row] = []
    for label, (args, tool, arguments) in SERVERS.items():
        ours, floor = await _compare(args, tool, arguments)
        rows.append((f"one call, {label}: kernel.invoke vs ClientSession.call_tool", ours, floor))
    return rows


def run() -> list[Row]:
    return asyncio.run(_measure())


if __name__ == "__main__":
    for label, ours, floor in run():
        print(f"{label}\n  kernel {ours * 1e6:,.0f} µs   direct {floor * 1e6:,.0f} µs   "
              f"overhead {(ours - floor) * 1e6:+,.0f} µs ({ours / floor:.2f}x)")
