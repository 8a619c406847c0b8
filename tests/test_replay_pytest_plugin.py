"""The pytest plugin shipped with the package (`kernel.services.pytest_plugin`): a user's
own test suite, run by pytest in a child process, records its model calls on the first run,
replays them offline afterwards, fails loudly on a changed request, records again with
`--kernel-record`, and never records with `--kernel-replay=replay`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import asyncio
import os

import pytest

from kernel import Kernel
from kernel.contents import ChatMessage, ChatRequest
from kernel.testing import ScriptedChatModel

ANSWER = os.environ.get("FAKE_ANSWER")  # the "provider": unset, it answers nothing
PROMPT = os.environ.get("PROMPT", "hello")
EXPECTED = os.environ.get("EXPECTED", "recorded answer")


def ask(kernel, prompt=PROMPT):
    kernel.services.add_service("t", ScriptedChatModel([ANSWER] if ANSWER else []))
    return asyncio.run(kernel.services.chat("t").complete(ChatRequest([ChatMessage.user(prompt)]))).text


def test_greets(kernel_cassette):
    assert ask(kernel_cassette.kernel(load_entry_points=False)) == EXPECTED


def test_a_kernel_built_by_the_application_goes_through_the_cassette_too(kernel_cassette):
    kernel = Kernel(load_entry_points=False)  # KernelSettings.load(): KERNEL_REPLAY, KERNEL_REPLAY_CASSETTE
    assert kernel.settings.replay == kernel_cassette.mode
    assert ask(kernel) == EXPECTED


@pytest.mark.parametrize("n", [1, 2])
def test_each_parameter_has_its_cassette(kernel_cassette, n):
    assert kernel_cassette.path.name == f"test_each_parameter_has_its_cassette_{n}.json"
    assert ask(kernel_cassette.kernel(load_entry_points=False), f"{PROMPT} {n}") == EXPECTED


@pytest.mark.kernel_cassette("shared")
def test_shares_one(kernel_cassette):
    assert ask(kernel_cassette.kernel(load_entry_points=False), "one") == EXPECTED


@pytest.mark.kernel_cassette("shared")
def test_shares_two(kernel_cassette):
    assert ask(kernel_cassette.kernel(load_entry_points=False), "two") == EXPECTED
'''


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("KERNEL_", "PYTEST_")) and k not in ("FAKE_ANSWER", "PROMPT", "EXPECTED")}
    # the plugin named explicitly: the test does not depend on how the package is installed
    environment.update(PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "kernel.services.pytest_plugin",
         "tests/test_app.py", *args],
        cwd=project, env=environment, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_app.py").write_text(SUITE, encoding="utf-8")
    return tmp_path


def answers(path: Path) -> list[str]:
    return [e["response"]["message"]["content"] for e in json.loads(path.read_text())["interactions"]]


def test_record_on_the_first_run_then_replay_offline(project: Path) -> None:
    first = run(project, FAKE_ANSWER="recorded answer")
    assert first.returncode == 0, first.stdout + first.stderr
    cassettes = project / "tests" / "cassettes"
    assert sorted(str(p.relative_to(cassettes)) for p in cassettes.rglob("*.json")) == [
        "shared.json",
        "test_app/test_a_kernel_built_by_the_application_goes_through_the_cassette_too.json",
        "test_app/test_each_parameter_has_its_cassette_1.json",
        "test_app/test_each_parameter_has_its_cassette_2.json",
        "test_app/test_greets.json",
    ]
    assert answers(cassettes / "shared.json") == ["recorded answer", "recorded answer"]  # both tests, one file
    second = run(project)  # the provider answers nothing now: every answer comes from the cassettes
    assert second.returncode == 0, second.stdout + second.stderr
    assert "6 passed" in second.stdout


def test_a_changed_request_fails_with_the_closest_recording_and_the_difference(project: Path) -> None:
    assert run(project, FAKE_ANSWER="recorded answer").returncode == 0
    changed = run(project, "-k", "test_greets", PROMPT="goodbye")
    assert changed.returncode == 1
    out = changed.stdout
    assert "ReplayMissError" in out and "test_greets.json holds no recording" in out
    assert '-        "content": "hello",' in out and '+        "content": "goodbye",' in out


def test_kernel_record_records_again_and_kernel_replay_never_records(project: Path) -> None:
    assert run(project, FAKE_ANSWER="recorded answer").returncode == 0
    again = run(project, "--kernel-record", FAKE_ANSWER="second take", EXPECTED="second take")
    assert again.returncode == 0, again.stdout + again.stderr
    cassettes = project / "tests" / "cassettes"
    assert answers(cassettes / "test_app" / "test_greets.json") == ["second take"]
    assert answers(cassettes / "shared.json") == ["second take", "second take"]  # not appended to the old take
    for path in cassettes.rglob("*.json"):
        path.unlink()
    strict = run(project, "--kernel-replay=replay", "-k", "test_greets", FAKE_ANSWER="x", EXPECTED="x")
    assert strict.returncode == 1 and "test_greets.json does not exist" in strict.stdout
    assert not list(cassettes.rglob("*.json"))


def test_the_plugin_is_registered_with_pytest_by_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"kernel_replay": "kernel.services.pytest_plugin"}
    from kernel.services import pytest_plugin

    assert callable(pytest_plugin.pytest_addoption) and callable(pytest_plugin.kernel_cassette)
