"""A batch killed with SIGKILL in the middle loses nothing and repeats nothing that
completed: the real `kernel batch` command, killed while records are running out of
order, then run again to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
RECORDS = 400

PLUGIN = '''
import asyncio
import os
import random

from kernel import kernel_function


@kernel_function
async def slow_square(n: int) -> int:
    """n squared, after a random short wait (so that records finish out of order)."""
    with open(os.environ["BATCH_CALLS"], "a", encoding="utf-8") as log:
        log.write(f"{n}\\n")
    await asyncio.sleep(random.uniform(0.005, 0.04))
    return n * n
'''


def complete_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.endswith("\n")]


@pytest.mark.parametrize("order", ["input", "completed"])
def test_sigkill_in_the_middle_then_resume(tmp_path: Path, order: str) -> None:
    plugin = tmp_path / "plugins" / "work"
    plugin.mkdir(parents=True)
    (plugin / "work.py").write_text(PLUGIN, encoding="utf-8")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "n": i}) + "\n" for i in range(RECORDS)),
                                       encoding="utf-8")
    calls, out = tmp_path / "calls.log", tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["BATCH_CALLS"] = str(calls)
    argv = [str(CONSOLE_SCRIPT), "--plugins", str(plugin), "batch", "work.slow_square", "--input", "in.jsonl",
            "--output", str(out), "--concurrency", "8", "--order", order]

    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(complete_lines(out)) < RECORDS // 4:
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL

    journal = tmp_path / "out.pending.jsonl"
    completed = {str(r["id"]) for r in complete_lines(out)} | {str(r["id"]) for r in complete_lines(journal)}
    assert RECORDS // 4 <= len(completed) < RECORDS, "killed in the middle"
    calls_before = len(calls.read_text(encoding="utf-8").splitlines())
    written = len(complete_lines(out))

    resumed = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    repeated = {f"r{n}" for n in calls.read_text(encoding="utf-8").splitlines()[calls_before:]}
    assert not repeated & completed, "a record that completed before the kill ran again"

    final = complete_lines(out)
    ids = [str(r["id"]) for r in final]
    assert len(ids) == len(set(ids)) == RECORDS, "nothing lost, nothing written twice"
    assert all(r["result"] == int(str(r["id"])[1:]) ** 2 for r in final)
    if order == "input":
        assert ids == [f"r{i}" for i in range(RECORDS)], "in input order, as if never killed"
    assert not journal.exists()
    assert (tmp_path / "out.errors.jsonl").read_text(encoding="utf-8") == ""
    assert resumed.stdout.startswith(f"{RECORDS - written} done, 0 failed, {written} skipped"), resumed.stdout
