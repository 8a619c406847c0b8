"""Session fixtures for the real local model: the Gemma 3 270M GGUF and llama-cpp-python's
OpenAI-compatible server on loopback.

Registered in tests/conftest.py (`pytest_plugins`). These fixtures FAIL, not skip, when
llama-cpp-python is missing: CI installs it, and a silently skipped integration test
proves nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.llamacpp import default_model_path
from kernel.settings import KernelSettings

SERVER_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ".../v1", for an OpenAI client
    model: str  # the model name the server answers to
    model_path: Path
    log_path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gemma_model_path() -> Path:
    """The assembled GGUF, in the same cache the local connector uses by default."""
    return default_model_path(Path(KernelSettings().cache_dir))


@pytest.fixture(scope="session")
def llama_server(gemma_model_path: Path) -> Iterator[LlamaServer]:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:  # fail, do not skip
        pytest.fail(f"llama-cpp-python[server] is required for this test: {exc}")
    port = _free_port()
    log = Path(tempfile.mkdtemp(prefix="llama-server-")) / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gemma_model_path),
        "--model_alias",
        "gemma-3-270m",
        "--chat_format",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama.cpp server did not answer within {SERVER_START_TIMEOUT}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.25)
        yield LlamaServer(base_url, "gemma-3-270m", gemma_model_path, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
