"""Durable plan runs: a plan run in a real process, killed with SIGKILL in the middle of a
step, is continued from the journal (`execute_plan(..., resume=RUN)`, `kernel plan --resume
RUN`) without running again any step it completed; a step that was running when it was
killed runs again only if its function is idempotent, else the resume is refused with a
message that names it (unless `retry_in_flight`).

The steps are native functions of a plugin folder; each writes its side effect as a line of
`effects.txt`, so the test counts exactly what ran. A gated step writes `start NAME`, then
waits for the file `release-NAME` before it writes `NAME`: the test kills the process while
it waits, after the steps before it have completed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings
from kernel.errors import PlanError
from kernel.events import open_reader
from kernel.events.query import read_plan_state
from kernel.planning import execute_plan
from kernel.planning.model import Plan

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"

STEPS = '''
"""Steps with side effects, counted in effects.txt (in the working directory)."""
import asyncio
from pathlib import Path

from kernel import kernel_function


def _effect(text: str) -> None:
    with open("effects.txt", "a", encoding="utf-8") as out:
        out.write(text + "\\n")


async def _gate(name: str) -> None:
    _effect(f"start {name}")
    while not Path(f"release-{name}").exists():
        await asyncio.sleep(0.02)
    _effect(name)


@kernel_function
def record(name: str, after: str = "") -> str:
    """Write a side effect at once."""
    _effect(name)
    return after + name


@kernel_function
async def gate(name: str, after: str = "") -> str:
    """Write a side effect once released (idempotent: may run again)."""
    await _gate(name)
    return after + name


@kernel_function(idempotent=False)
async def charge(name: str, after: str = "") -> str:
    """Write a side effect once released; not idempotent: never silently run twice."""
    await _gate(name)
    return after + name
'''


def plan(gated: str = "gate") -> dict[str, Any]:
    return {"goal": "four steps in a row", "steps": [
        {"id": "s1", "function": "steps.record", "arguments": {"name": "a"}},
        {"id": "s2", "function": "steps.record", "arguments": {"name": "b", "after": "$s1"}},
        {"id": "s3", "function": f"steps.{gated}", "arguments": {"name": "c", "after": "$s2"}},
        {"id": "s4", "function": "steps.record", "arguments": {"name": "d", "after": "$s3"}},
    ], "output": "s4"}


RUN_SCRIPT = """
import asyncio, json
from pathlib import Path
from kernel import Kernel
from kernel.planning import execute_plan
from kernel.planning.model import Plan

async def main():
    kernel = Kernel(journal=True)  # ./kernel.toml: the steps plugin
    run = await execute_plan(kernel, Plan.from_json(Path("plan.json").read_text()))
    print(json.dumps(run.result))
    await kernel.aclose()

asyncio.run(main())
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "plugins" / "steps").mkdir(parents=True)
    (tmp_path / "plugins" / "steps" / "steps.py").write_text(STEPS, encoding="utf-8")
    (tmp_path / "kernel.toml").write_text(f'plugin_dirs = ["{tmp_path / "plugins"}"]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    return tmp_path


def env() -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    found["PYTHONPATH"] = str(ROOT)
    found["KERNEL_PLUGIN_AUTOLOAD"] = "false"
    return found


def effects(project: Path) -> list[str]:
    path = project / "effects.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def start(project: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen[str], project: Path, line: str, timeout: float = 120) -> None:
    """SIGKILL `process` once `line` is among the effects (the step is waiting)."""
    deadline = time.monotonic() + timeout
    while line not in effects(project):
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the plan process ended early ({process.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{line!r} never appeared in effects.txt: {effects(project)}")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL


def killed_run(project: Path, gated: str = "gate", *, cli: bool = True) -> str:
    """Start the plan (with the CLI, or a Python program), kill it while step s3 waits;
    returns the id of the journaled run."""
    (project / "plan.json").write_text(json.dumps(plan(gated)), encoding="utf-8")
    argv = ([str(CONSOLE_SCRIPT), "plan", "--from", "plan.json", "--run", "--yes"] if cli
            else [sys.executable, "-c", RUN_SCRIPT])
    kill_when(start(project, argv), project, "start c")
    assert effects(project) == ["a", "b", "start c"]
    with open_reader(path=project / ".kernel" / "journal.db") as reader:
        [run] = reader.runs()
        state = read_plan_state(reader, run["id"])
    assert run["kind"] == "plan" and run["status"] == "running"  # it never ended: killed
    assert state.outputs == {"s1": "a", "s2": "ab"} and state.in_flight == {"s3": f"steps.{gated}"}
    assert not state.alive
    return str(run["id"])


def kernel_of(project: Path) -> Kernel:
    return Kernel(settings=KernelSettings.load(project / "kernel.toml"), journal=True)


# --- execute_plan(..., resume=RUN) --------------------------------------------------------------


async def test_a_killed_plan_resumes_without_running_its_completed_steps_again(project: Path) -> None:
    run_id = killed_run(project)
    (project / "release-c").touch()
    kernel = kernel_of(project)
    try:
        run = await execute_plan(kernel, Plan.from_dict(plan()), resume=run_id)
    finally:
        await kernel.aclose()
    assert run.result == "abcd" and run.ok
    assert run.invoked == ["s3", "s4"]
    # s1 and s2 ran once, in the killed process; s3 (idempotent, in flight) started again
    assert effects(project) == ["a", "b", "start c", "start c", "c", "d"]
    with open_reader(path=project / ".kernel" / "journal.db") as reader:
        resumed, killed = reader.runs()
        tree = reader.tree(resumed["id"])
    assert killed["id"] == run_id and killed["status"] == "running"
    assert resumed["status"] == "ok"
    [plan_event] = tree["events"]
    assert plan_event["data"]["resumes"] == run_id
    steps = {c["data"]["step"]: c for c in plan_event["children"] if c["kind"] == "step"}
    assert steps["s1"]["data"]["carried"] and steps["s2"]["data"]["carried"]  # recorded, not run
    assert not steps["s3"]["data"]["carried"] and steps["s4"]["data"]["output"] == "abcd"


async def test_a_non_idempotent_step_in_flight_is_not_run_again_silently(project: Path) -> None:
    run_id = killed_run(project, "charge", cli=False)
    (project / "release-c").touch()
    kernel = kernel_of(project)
    try:
        with pytest.raises(PlanError) as refused:
            await execute_plan(kernel, Plan.from_dict(plan("charge")), resume=run_id)
        message = str(refused.value)
        assert "step 's3' (steps.charge) was running when run" in message and run_id in message
        assert "not idempotent" in message and "retry_in_flight=True" in message
        assert f"kernel plan --resume {run_id} --retry-in-flight" in message
        assert effects(project) == ["a", "b", "start c"]  # nothing ran
        run = await execute_plan(kernel, Plan.from_dict(plan("charge")), resume=run_id, retry_in_flight=True)
    finally:
        await kernel.aclose()
    assert run.result == "abcd"
    assert effects(project) == ["a", "b", "start c", "start c", "c", "d"]


async def test_a_run_still_running_is_not_resumed_and_a_finished_one_runs_nothing(project: Path) -> None:
    (project / "plan.json").write_text(json.dumps(plan()), encoding="utf-8")
    process = start(project, [sys.executable, "-c", RUN_SCRIPT])
    try:
        deadline = time.monotonic() + 120
        while "start c" not in effects(project):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.02)
        kernel = kernel_of(project)
        with pytest.raises(PlanError, match=rf"is still running \(process {process.pid} on this machine\)"):
            await execute_plan(kernel, Plan.from_dict(plan()), resume="last")
        await kernel.aclose()
        (project / "release-c").touch()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and json.loads(out) == "abcd", err
    before = effects(project)
    kernel = kernel_of(project)
    try:
        run = await execute_plan(kernel, Plan.from_dict(plan()), resume="last")
        assert run.result == "abcd" and run.invoked == []
        with pytest.raises(PlanError, match="ran another plan"):
            other = plan()
            other["steps"][3]["arguments"]["name"] = "e"
            await execute_plan(kernel, Plan.from_dict(other), resume="last")
    finally:
        await kernel.aclose()
    assert effects(project) == before


# --- kernel plan --resume RUN --------------------------------------------------------------------


def test_kernel_plan_resume_continues_a_killed_run(project: Path) -> None:
    run_id = killed_run(project, cli=False)
    (project / "release-c").touch()
    done = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", run_id, "--yes"],
                          cwd=project, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming run {run_id} (running): done: s1, s2; running when it stopped: s3" in done.stderr
    assert done.stdout.splitlines()[-2:] == ["Result:", "abcd"]
    assert effects(project) == ["a", "b", "start c", "start c", "c", "d"]


def test_kernel_plan_resume_refuses_a_non_idempotent_step_in_flight_unless_told(project: Path) -> None:
    run_id = killed_run(project, "charge")
    (project / "release-c").touch()
    refused = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", "last", "--yes"],
                             cwd=project, env=env(), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "step 's3' (steps.charge) was running" in last
    assert f"kernel plan --resume {run_id} --retry-in-flight" in last and "Traceback" not in refused.stderr
    assert effects(project) == ["a", "b", "start c"]
    done = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", run_id, "--retry-in-flight", "--yes", "--json"],
                          cwd=project, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run"]["result"] == "abcd"
    assert effects(project) == ["a", "b", "start c", "start c", "c", "d"]


def test_kernel_plan_resume_without_confirmation_or_with_a_bad_run(project: Path) -> None:
    killed_run(project, cli=False)
    no_terminal = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", "last"], cwd=project, env=env(),
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert no_terminal.returncode == 1 and "refusing to resume the plan without confirmation" in no_terminal.stderr
    unknown = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", "ffffffffffff", "--yes"], cwd=project,
                             env=env(), capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 1 and "cannot resume 'ffffffffffff'" in unknown.stderr
    mixed = subprocess.run([str(CONSOLE_SCRIPT), "plan", "--resume", "last", "--from", "plan.json"], cwd=project,
                           env=env(), capture_output=True, text=True, timeout=120)
    assert mixed.returncode == 2 and "no GOAL, --from, --input or -o with it" in mixed.stderr
    assert effects(project) == ["a", "b", "start c"]


# --- in one process: a failed run, a run journaled without content ---------------------------------


class Flaky:
    """`flaky.once` fails the first time it is called; `flaky.count` counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def functions(self) -> list[Any]:
        from kernel import kernel_function

        @kernel_function
        def count(name: str) -> str:
            """Count a call."""
            self.calls.append(name)
            return name

        @kernel_function
        def once(text: str) -> str:
            """Fail the first time."""
            self.calls.append("once")
            if self.calls.count("once") == 1:
                raise RuntimeError("not yet")
            return text.upper()

        return [count, once]


FLAKY_PLAN = {"goal": "count then once", "steps": [
    {"id": "s1", "function": "flaky.count", "arguments": {"name": "x"}},
    {"id": "s2", "function": "flaky.once", "arguments": {"text": "$s1"}},
], "output": "s2"}


async def test_a_failed_run_resumes_from_the_journal_in_the_same_process(tmp_path: Path) -> None:
    from kernel.errors import PlanExecutionError

    flaky = Flaky()
    kernel = Kernel(settings=KernelSettings(journal=True, journal_path=tmp_path / "j.db"), load_entry_points=False)
    kernel.add_plugin(flaky.functions(), name="flaky")
    try:
        with pytest.raises(PlanExecutionError, match="not yet"):
            await execute_plan(kernel, Plan.from_dict(FLAKY_PLAN))
        run = await execute_plan(kernel, Plan.from_dict(FLAKY_PLAN), resume="last")
    finally:
        await kernel.aclose()
    assert run.result == "X" and flaky.calls == ["x", "once", "once"]  # s1 ran once


async def test_a_run_journaled_without_content_cannot_resume_and_says_why(tmp_path: Path) -> None:
    from kernel.errors import PlanExecutionError

    flaky = Flaky()
    settings = KernelSettings(journal=True, journal_path=tmp_path / "j.db", journal_content=False)
    kernel = Kernel(settings=settings, load_entry_points=False)
    kernel.add_plugin(flaky.functions(), name="flaky")
    try:
        with pytest.raises(PlanExecutionError):
            await execute_plan(kernel, Plan.from_dict(FLAKY_PLAN))
        with pytest.raises(PlanError, match=r"journaled without content .* its step outputs were not kept"):
            await execute_plan(kernel, Plan.from_dict(FLAKY_PLAN), resume="last")
    finally:
        await kernel.aclose()
    assert flaky.calls == ["x", "once"]
