"""Shared set-up of the MCP tests: the servers they run, kernels configured with them, and
the MCP Inspector (npm), installed once into a cache folder and reused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "mcp"
FAULTY = DATA / "faulty_server.py"
KERNEL_SERVER = DATA / "kernel_server.py"
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"

TIME_SERVER: dict[str, Any] = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
FAULTY_SERVER: dict[str, Any] = {"command": sys.executable, "args": [str(FAULTY)]}

INSPECTOR_VERSION = "2.12.0"
"""Pinned: `npm install @modelcontextprotocol/inspector@2.12.0` (its CLI mode lists and calls tools)."""


def make_kernel(**servers: dict[str, Any]) -> Kernel:
    """A kernel with the standard plugins and these MCP servers (`name=settings`)."""
    settings = KernelSettings(mcp={"servers": servers})
    return Kernel(settings, load_entry_points=False)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def inspector_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "orchestration-kernel"
    return base / f"mcp-inspector-{INSPECTOR_VERSION}"


@pytest.fixture(scope="session")
def inspector() -> list[str]:
    """The Inspector's command line (`mcp-inspector --cli`), installed with npm on first use
    into the cache folder (`$XDG_CACHE_HOME/orchestration-kernel/mcp-inspector-VERSION`)."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.skip("Node.js and npm are needed for the MCP Inspector")
    folder = inspector_dir()
    binary = folder / "node_modules" / ".bin" / "mcp-inspector"
    if not binary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                               f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not binary.exists():
            pytest.fail(f"npm install of the MCP Inspector failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return [str(binary), "--cli"]


def run_inspector(command: list[str], *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> Any:
    """Run the Inspector's CLI; its JSON output."""
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), cwd=ROOT)
    assert done.returncode == 0, f"inspector {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)
