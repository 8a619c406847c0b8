"""The README tells the truth: its commands exist, its marked Python blocks run, every
setting and every CLI option is documented."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from kernel.settings import (
    AgentSettings,
    BatchSettings,
    KernelSettings,
    LogSettings,
    Price,
    RetrySettings,
    ServeKeySettings,
    ServeSettings,
    ServiceSettings,
    ToolLoopSettings,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_MARK = "<!-- readme-test: run -->"


def runnable_blocks() -> list[str]:
    return re.findall(re.escape(RUN_MARK) + r"\s*```python\n(.*?)```", README, re.DOTALL)


def test_quick_start_is_exactly_two_commands_that_exist() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    commands = block.strip().splitlines()
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no target {target!r}"
    assert "samples/demo.py" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    setup = ("#", "set ", "cd ", "export ", "tests_status=", "lint_status=", "exit ")
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith(setup)]
    assert ci_commands == ["make test", "make lint"], (
        "CI runs exactly the README's test command, then lint")
    assert "make test" in commands  # the README's line, verbatim
    assert "set -e" not in ci and ci.rstrip().endswith("exit $(( tests_status != 0 || lint_status != 0 ))"), (
        "lint runs even when the tests fail, and CI fails when either fails")
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in lint and "mypy" in lint


def test_linked_files_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+?)\)", README):
        if target.startswith("http"):
            continue
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_readme_has_runnable_examples() -> None:
    blocks = runnable_blocks()
    assert len(blocks) >= 2
    assert "ScriptedChatModel" in blocks[0] and "kernel.invoke" in blocks[0]
    assert len([line for line in blocks[0].splitlines() if line.strip()]) <= 16  # a short example


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    code = runnable_blocks()[index]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"README block {index} failed:\n{code}\n{done.stderr[-2000:]}"
    if index == 0:
        assert "BONJOUR !" in done.stdout


def _fields(model: type[BaseModel], prefix: str) -> list[tuple[str, str]]:
    return [(name, f"{prefix}{name.upper()}") for name in model.model_fields]


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        (KernelSettings, "KERNEL_"),
        (ServiceSettings, "KERNEL_SERVICES__NAME__"),
        (RetrySettings, "KERNEL_RETRY__"),
        (ToolLoopSettings, "KERNEL_TOOL_LOOP__"),
        (LogSettings, "KERNEL_LOG__"),
        (Price, "KERNEL_PRICES__MODEL__"),
        (ServeSettings, "KERNEL_SERVE__"),
        (BatchSettings, "KERNEL_BATCH__"),
        (ServeKeySettings, "KERNEL_SERVE__KEYS__NAME__"),
        (AgentSettings, "KERNEL_SERVE__AGENTS__NAME__"),
    ],
)
def test_every_setting_is_documented_with_its_variable(model: type[BaseModel], prefix: str) -> None:
    reference = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    for name, env in _fields(model, prefix):
        row = re.search(rf"^\| `{name}` \| `{re.escape(env)}(__MODEL)?(__\*)?` \|", reference, re.MULTILINE)
        assert row, f"{model.__name__}.{name} ({env}) is missing from the configuration reference"
    for extra in ("KERNEL_CONFIG", "KERNEL_PLUGIN_AUTOLOAD", "KERNEL_PLUGIN_ALLOWLIST", "KERNEL_DEFAULT_CHAT"):
        assert f"`{extra}`" in reference


def _walk(parser: argparse.ArgumentParser, path: list[str]) -> list[tuple[list[str], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_walk(sub, [*path, name]))
    return found


def test_every_cli_command_and_option_is_documented() -> None:
    from kernel.cli import build_parser

    cli = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    seen = set()
    for command in ("plugins", "render", "run", "config", "memory", "chat", "plan"):
        for path, parser in _walk(build_parser([command]), []):
            if not path or path[0] != command:
                continue
            seen.add(" ".join(path))
            if len(path) == 1 and any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
                continue  # a group (`plugins`, `config`, `memory`): its actions are checked
            assert f"`kernel {' '.join(path)}" in cli, f"`kernel {' '.join(path)}` is not documented"
            for action in parser._actions:
                for option in action.option_strings:
                    if option in ("-h", "--help"):
                        continue
                    assert option in cli, f"option {option} of `kernel {' '.join(path)}` is not documented"
    assert {"plugins list", "plugins check", "render", "run", "config show", "memory ingest", "memory search",
            "memory collections", "chat", "plan"} <= seen
    for code in ("`0`", "`1`", "`2`", "`3`", "`4`"):
        assert code in cli
