"""Start-up cost of `kernel memory ...`: a command loads the embedding model only when it
embeds, and the default model then loads without torch.

Each command runs `kernel.cli.main` in a fresh interpreter, in a temporary project with
the default services (the bundled MiniLM, the SQLite store); a wrapper reports at exit
which heavy modules the process imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sentence_transformers", "tokenizers")
WRAPPER = f"""
import atexit, json, sys
atexit.register(lambda: print("IMPORTED " + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)),
                              file=sys.stderr))
from kernel.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kernel(project: Path, *argv: str) -> tuple[int, str, list[str]]:
    """Run `kernel ARGV` in `project`: (exit code, stdout, heavy modules imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    marker = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert marker, done.stderr
    return done.returncode, done.stdout, json.loads(marker[-1].removeprefix("IMPORTED "))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose `docs` collection holds a few chunks, ingested by the CLI."""
    root = tmp_path_factory.mktemp("project")
    docs = root / "docs"
    docs.mkdir()
    (docs / "install.md").write_text("# Install\n\nRun pip install orchestration-kernel, then kernel --help.\n")
    (docs / "memory.md").write_text("# Memory\n\nThe SQLite store keeps chunks and their vectors.\n")
    code, out, imported = kernel(root, "memory", "ingest", "docs", "--json")
    assert code == 0, out
    assert json.loads(out)["added"] == 2
    assert imported == ["tokenizers"]  # the model loaded (it embedded), without torch
    return root


def test_collections_loads_no_embedding_model(project: Path) -> None:
    code, out, imported = kernel(project, "memory", "collections", "--json")
    assert code == 0
    assert json.loads(out) == [{"name": "docs", "count": 2}]
    assert imported == []


def test_search_embeds_the_query_without_torch(project: Path) -> None:
    code, out, imported = kernel(project, "memory", "search", "how do I install it?", "-k", "1", "--json")
    assert code == 0
    assert json.loads(out)[0]["reference"] == "install.md#Install"
    assert imported == ["tokenizers"]


@pytest.mark.parametrize(("argv", "exit_code"), [
    (("memory", "search", "sqlite", "--mode", "keyword", "--json"), 0),  # no query vector
    (("memory", "ingest", "docs", "--json"), 0),  # nothing changed: nothing to embed
    (("memory", "search", "anything", "-c", "no-such-collection"), 2),  # refused before embedding
])
def test_commands_that_do_not_embed_load_no_model(project: Path, argv: tuple[str, ...], exit_code: int) -> None:
    code, _, imported = kernel(project, *argv)
    assert code == exit_code
    assert imported == []
