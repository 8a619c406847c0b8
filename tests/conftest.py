"""Shared test configuration: fixture plugins of the suite, and isolation of every test
from the developer's environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures_postgres",
    "tests.fixtures_llama",
]

REPO = Path(__file__).resolve().parent.parent

PROVIDER_VARIABLES = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
    "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN",
    "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT",
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No `KERNEL_*` or provider variable leaks in from the shell, and each test runs in a
    fresh empty working directory (so no `kernel.toml`, `.env` or `.kernel/` of the
    developer's is read or written)."""
    for name in list(os.environ):
        if name.startswith("KERNEL_") or name in PROVIDER_VARIABLES:
            monkeypatch.delenv(name)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield cwd
