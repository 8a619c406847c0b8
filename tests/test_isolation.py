"""The suite is isolated from the developer's environment (tests/conftest.py,
`isolated_environment`): no `KERNEL_*` or provider variable from the shell is visible in a
test, and every test runs in its own empty working directory, so a `kernel.toml`, `.env`
or `.kernel/` where pytest was started is never read or written.

Before that isolation, `KERNEL_DEFAULT_CHAT=openai` in the shell broke 61 tests. The
subprocess test below runs part of the suite with such a poisoned shell and working
directory, and a control run without tests/conftest.py shows that the poison does bite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.settings import KernelSettings
from tests.conftest import PROVIDER_VARIABLES

REPO = Path(__file__).resolve().parent.parent

# Small, fast modules that build kernels from default settings and pick default services:
# the ones a leaking KERNEL_DEFAULT_CHAT or kernel.toml breaks.
SUBSET = ("tests/test_kernel.py", "tests/test_settings.py", "tests/test_prompt_functions.py", "tests/test_services.py")
# The in-test checks of this module, which need a poisoned shell to prove anything.
IN_TEST_CHECKS = (
    "tests/test_isolation.py::test_no_kernel_or_provider_variable_is_visible",
    "tests/test_isolation.py::test_each_test_starts_in_its_own_empty_directory",
)
LEAKED_KEY = "sk-leak-test-123456"
POISONED_ENV = {
    "KERNEL_DEFAULT_CHAT": "openai",
    "KERNEL_LOG__LEVEL": "debug",
    "OPENAI_API_KEY": LEAKED_KEY,
    "ANTHROPIC_API_KEY": "sk-ant-leak-test-123456",
}


# --- inside a test --------------------------------------------------------------------------


def test_no_kernel_or_provider_variable_is_visible() -> None:
    """Also run by the subprocess test below, from a shell that sets such variables."""
    leaked = sorted(n for n in os.environ if n.startswith("KERNEL_") or n in PROVIDER_VARIABLES)
    assert leaked == []
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= set(PROVIDER_VARIABLES)


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_starts_in_its_own_empty_directory(turn: str, isolated_environment: Path) -> None:
    """Run twice: each run leaves a kernel.toml behind, which the other must not see."""
    cwd = Path.cwd()
    assert cwd == isolated_environment.resolve()
    assert cwd != REPO and REPO not in cwd.parents
    assert list(cwd.iterdir()) == []
    (cwd / "kernel.toml").write_text(f'default_chat = "{turn}"\n', encoding="utf-8")
    (cwd / ".env").write_text(f"KERNEL_DEFAULT_CHAT={turn}\n", encoding="utf-8")


def test_the_poison_reaches_the_kernel_when_not_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the settings the subprocess test plants are ones the kernel does read, so
    its passing run shows isolation, not a poison that misses."""
    poisoned = _poisoned_directory(tmp_path)
    monkeypatch.chdir(poisoned)
    assert KernelSettings.load().default_chat == "from-dotenv"  # .env beats kernel.toml
    for name, value in POISONED_ENV.items():
        monkeypatch.setenv(name, value)
    assert KernelSettings.load().default_chat == "openai"  # the environment beats both


# --- a run of the suite from a poisoned shell and directory --------------------------------


def _poisoned_directory(tmp_path: Path) -> Path:
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    (poisoned / "kernel.toml").write_text('default_chat = "nowhere"\n', encoding="utf-8")
    (poisoned / ".env").write_text("KERNEL_DEFAULT_CHAT=from-dotenv\n", encoding="utf-8")
    return poisoned


def _run_poisoned(tmp_path: Path, targets: tuple[str, ...], *options: str) -> subprocess.CompletedProcess[str]:
    poisoned = _poisoned_directory(tmp_path)
    env = {**os.environ, **POISONED_ENV}  # keeps PATH, HOME, ...
    env.pop("PYTEST_ADDOPTS", None)  # the run's own options only
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--rootdir={REPO}",
        "-c",
        str(REPO / "pyproject.toml"),
        f"--basetemp={tmp_path / 'basetemp'}",  # not the shared numbered temp dirs
        *options,
        *(str(REPO / t) for t in targets),
    ]
    return subprocess.run(command, cwd=poisoned, env=env, capture_output=True, text=True, timeout=120)


def _summary(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_suite_passes_from_a_poisoned_shell_and_directory(tmp_path: Path) -> None:
    result = _run_poisoned(tmp_path, SUBSET + IN_TEST_CHECKS)
    output = result.stdout + result.stderr
    summary = _summary(result)
    assert result.returncode == 0, output[-4000:]
    passed = re.match(r"(\d+) passed", summary)
    assert passed and "failed" not in summary and "error" not in summary, summary
    assert int(passed.group(1)) >= 30  # the subset really ran (41 tests when this was written)
    assert LEAKED_KEY not in output


def test_control_without_the_isolation_the_same_run_fails(tmp_path: Path) -> None:
    """`--noconftest` drops tests/conftest.py, and with it the isolation: the poisoned run
    must then fail. If it passes, the poison no longer reaches these tests and the run
    above proves nothing: pick a poison (or a subset) that does."""
    result = _run_poisoned(tmp_path, SUBSET, "--noconftest")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]  # 1: tests ran and some failed
    assert re.match(r"\d+ failed", _summary(result)), _summary(result)
