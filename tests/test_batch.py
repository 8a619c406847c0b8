"""Batch runs in this process (the asyncio executor): records from JSON Lines, CSV and
parquet files or from Python, fields mapped to arguments and validated per record,
results in input order or as completed, per-record failures in the errors file, fail-fast,
resume (skipping what is done, re-running what changed, taking journaled results), plans
and prompt functions as the work, tokens and cost in the report, the progress bar."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.batch import ResumeState, companion_paths, count_records, read_records
from kernel.errors import ArgumentError, FunctionNotFoundError, KernelError, PlanValidationError
from kernel.planning import Plan
from kernel.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"


class Calls:
    def __init__(self) -> None:
        self.seen: list[int] = []

    @kernel_function
    async def square(self, n: int, delay: float = 0.0) -> int:
        """n squared, after `delay` seconds."""
        self.seen.append(n)
        if delay:
            await asyncio.sleep(delay)
        if n < 0:
            raise ValueError("negative")
        return n * n

    @kernel_function
    def greet(self, name: str, punctuation: str = "!") -> str:
        """A greeting."""
        return f"hello {name}{punctuation}"


@pytest.fixture
def setup() -> tuple[Kernel, Calls]:
    kernel = Kernel(KernelSettings(), load_entry_points=False)
    calls = Calls()
    kernel.add_plugin(calls, name="t")
    return kernel, calls


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


async def test_jsonl_records_run_in_input_order_with_ids(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, calls = setup
    rows = [{"n": i, "delay": 0.02 if i % 3 == 0 else 0.0} for i in range(30)]
    rows[5]["id"] = "five"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = await kernel.batch("t.square", source, output=tmp_path / "out.jsonl", concurrency=8)
    assert (report.done, report.failed, report.skipped) == (30, 0, 0)
    out = lines(tmp_path / "out.jsonl")
    assert [r["result"] for r in out] == [i * i for i in range(30)]  # in input order although delays differ
    assert [r["id"] for r in out][:7] == [1, 2, 3, 4, 5, "five", 7]  # the `id` field, else the line number
    assert all(len(r["key"]) == 32 for r in out)
    assert not companion_paths(tmp_path / "out.jsonl")[1].exists(), "the pending journal is removed at the end"
    assert sorted(calls.seen) == list(range(30))


async def test_as_completed_order(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, _ = setup
    source = write_jsonl(tmp_path / "in.jsonl", [{"n": 0, "delay": 0.2}] + [{"n": i} for i in range(1, 6)])
    await kernel.batch("t.square", source, output=tmp_path / "out.jsonl", order="completed", concurrency=8)
    out = lines(tmp_path / "out.jsonl")
    assert out[-1]["id"] == 1, "the slow first record is written last"
    assert sorted(r["result"] for r in out) == [0, 1, 4, 9, 16, 25]


async def test_failures_go_to_the_errors_file_and_the_run_goes_on(setup: tuple[Kernel, Calls],
                                                                    tmp_path: Path) -> None:
    kernel, _ = setup
    source = tmp_path / "in.jsonl"
    source.write_text('{"n": 1}\n{"n": "two"}\nnot json\n[1, 2]\n{"n": -1}\n{"m": 3}\n\n{"n": 4}\n', encoding="utf-8")
    report = await kernel.batch("t.square", source, output=tmp_path / "out.jsonl")
    assert (report.done, report.failed) == (2, 5)
    assert [r["result"] for r in lines(tmp_path / "out.jsonl")] == [1, 16]
    errors = {e["id"]: e for e in lines(tmp_path / "out.errors.jsonl")}
    assert errors[2]["error"] == "ArgumentError" and "'n'" in errors[2]["message"]
    assert errors[3]["error"] == "RecordError" and "in.jsonl:3: not JSON" in errors[3]["message"]
    assert "must be a JSON object" in errors[4]["message"]
    assert errors[5]["error"] == "InvocationError" and "negative" in errors[5]["message"]
    assert "missing required argument" in errors[6]["message"]
    assert report.errors_file == str(tmp_path / "out.errors.jsonl")


async def test_fail_fast_stops_at_the_first_failure(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, calls = setup
    source = write_jsonl(tmp_path / "in.jsonl", [{"n": 1}, {"n": -1}] + [{"n": i} for i in range(2, 200)])
    report = await kernel.batch("t.square", source, output=tmp_path / "out.jsonl", fail_fast=True, concurrency=2)
    assert report.stopped == "--fail-fast: record 2 failed" and not report.ok
    assert len(calls.seen) < 10, "no record is started after the failure"


async def test_resume_skips_done_records_and_reruns_changed_ones(setup: tuple[Kernel, Calls],
                                                                  tmp_path: Path) -> None:
    kernel, calls = setup
    rows = [{"id": f"r{i}", "n": i} for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    await kernel.batch("t.square", source, output=out)
    calls.seen.clear()
    again = await kernel.batch("t.square", source, output=out)
    assert (again.done, again.skipped) == (0, 10) and calls.seen == []
    rows[3]["n"] = 33  # a changed argument is new work; an added record too
    write_jsonl(source, [*rows, {"id": "r10", "n": 10}])
    third = await kernel.batch("t.square", source, output=out)
    assert (third.done, third.skipped) == (2, 9) and sorted(calls.seen) == [10, 33]
    # another function over the same records is other work
    other = await kernel.batch("t.greet", [{"id": "r0", "name": "x"}], output=out)
    assert other.done == 1


async def test_a_half_written_last_line_is_cut_and_its_record_run_again(setup: tuple[Kernel, Calls],
                                                                          tmp_path: Path) -> None:
    kernel, calls = setup
    source = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(5)])
    out = tmp_path / "out.jsonl"
    await kernel.batch("t.square", source, output=out)
    text = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(text[:3]) + text[3][:20], encoding="utf-8")  # killed in the middle of a write
    calls.seen.clear()
    report = await kernel.batch("t.square", source, output=out)
    assert (report.done, report.skipped) == (2, 3) and sorted(calls.seen) == [3, 4]
    assert [r["result"] for r in lines(out)] == [0, 1, 4, 9, 16]


async def test_journaled_results_are_taken_in_their_turn_not_run_again(setup: tuple[Kernel, Calls],
                                                                        tmp_path: Path) -> None:
    """In input order, results completed ahead of their turn are journaled; a run killed
    before writing them leaves them in OUT.pending.jsonl, and the next run takes them."""
    kernel, calls = setup
    source = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(6)])
    reference = tmp_path / "reference.jsonl"
    await kernel.batch("t.square", source, output=reference)
    done = reference.read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_text(done[0], encoding="utf-8")  # record 1 written; records 4 and 5 finished ahead of 2 and 3
    companion_paths(out)[1].write_text(done[3] + done[4], encoding="utf-8")
    assert len(ResumeState.load(out).recovered) == 2
    calls.seen.clear()
    report = await kernel.batch("t.square", source, output=out)
    assert sorted(calls.seen) == [1, 2, 5], "journaled records are not run again"
    assert out.read_text(encoding="utf-8") == "".join(done), "in input order, as if never interrupted"
    assert report.done == 5 and report.skipped == 1
    assert not companion_paths(out)[1].exists()


async def test_csv_and_parquet_inputs_with_a_field_map(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, _ = setup
    csv_file = tmp_path / "people.csv"
    csv_file.write_text('key,who,mark\nk1,Ada,?\nk2,"Grace, H.",\n', encoding="utf-8")
    assert count_records(csv_file) == 2
    report = await kernel.batch("t.greet", csv_file, mapping={"name": "who", "punctuation": "mark"},
                                id_field="key")
    assert [(r.id, r.value) for r in report.results] == [("k1", "hello Ada?"), ("k2", "hello Grace, H.!")]

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet_file = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"n": list(range(2500)), "id": [f"p{i}" for i in range(2500)]}), parquet_file,
                   row_group_size=700)
    assert count_records(parquet_file) == 2500
    assert sum(1 for _ in read_records(parquet_file)) == 2500
    report = await kernel.batch("t.square", parquet_file, output=tmp_path / "p.jsonl")
    out = lines(tmp_path / "p.jsonl")
    assert report.done == 2500 and out[2499] == {"id": "p2499", "key": out[2499]["key"], "result": 2499**2}


async def test_bad_arguments_of_the_run_itself(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, _ = setup
    with pytest.raises(FunctionNotFoundError):
        await kernel.batch("t.nope", [])
    with pytest.raises(ArgumentError, match="no such parameter"):
        await kernel.batch("t.square", [], mapping={"m": "n"})
    with pytest.raises(Exception, match="unknown input format"):
        await kernel.batch("t.square", tmp_path / "in.txt")


async def test_a_plan_runs_for_each_record(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    kernel, _ = setup
    plan = Plan.from_dict({"goal": "square then greet", "steps": [
        {"id": "s1", "function": "t.square", "arguments": {"n": "$input.n"}},
        {"id": "s2", "function": "t.greet", "arguments": {"name": "$s1", "punctuation": "$input.mark"}},
    ], "inputs": {"mark": "."}})
    report = await kernel.batch(plan, [{"n": 2}, {"n": 3, "mark": "?"}, {"n": -1}])
    assert [r.value for r in report.results if r.ok] == ["hello 4.", "hello 9?"]
    assert report.failed == 1 and "negative" in str(report.results[-1].error)
    with pytest.raises(PlanValidationError):
        await kernel.batch({"goal": "x", "steps": [{"id": "s1", "function": "t.nope", "arguments": {}}]}, [])


async def test_prompt_function_records_count_tokens_and_cost(tmp_path: Path) -> None:
    settings = KernelSettings(prices={"scripted-model": {"input": 1.0, "output": 2.0}})
    kernel = Kernel(settings, load_entry_points=False)
    kernel.services.add_service("test", ScriptedChatModel(default=lambda r: r.messages[-1].content.upper()))
    kernel.add_function(PromptFunction.from_template("shout {{ word }}", name="shout", plugin="p"))
    report = await kernel.batch("p.shout", [{"word": f"w{i}"} for i in range(50)], output=tmp_path / "o.jsonl")
    out = lines(tmp_path / "o.jsonl")
    assert out[7]["result"] == "SHOUT W7" and out[7]["usage"] == {"input_tokens": 10, "output_tokens": 5}
    assert (report.input_tokens, report.output_tokens) == (500, 250)
    assert report.cost == pytest.approx(50 * (10 * 1.0 + 5 * 2.0) / 1e6)


def test_the_command_line_with_a_progress_bar_and_resume(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "calc"
    plugin.mkdir(parents=True)
    (plugin / "calc.py").write_text(
        "from kernel import kernel_function\n\n@kernel_function\ndef double(x: int) -> int:\n"
        "    '''Twice x.'''\n    return 2 * x\n", encoding="utf-8")
    write_jsonl(tmp_path / "in.jsonl", [{"value": i} for i in range(40)] + [{"value": "bad"}])
    argv = [str(CONSOLE_SCRIPT), "--plugins", str(plugin), "batch", "calc.double", "--input", "in.jsonl",
            "--output", "out.jsonl", "--map", "x=value"]
    first = subprocess.run([*argv, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stderr  # one record failed
    summary = json.loads(first.stdout)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (40, 1, 0)
    assert "1 record(s) failed: see out.errors.jsonl" in first.stderr
    second = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.stdout.startswith("0 done, 1 failed, 40 skipped"), second.stdout
    bad = subprocess.run([*argv[:-2], "--map", "y"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--map takes ARG=FIELD" in bad.stderr


async def test_the_progress_bar_shows_rate_tokens_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kernel.batch.progress import BatchProgress

    bar = BatchProgress("p.shout [asyncio]", 100, force=True)
    bar.update(40, rate=12.5, failed=2, tokens=1234, cost=0.5)
    bar.close()
    shown = capsys.readouterr().err
    assert "40/100" in shown and "12.5/s" in shown and "1,234 tok" in shown and "$0.5000" in shown
    assert "2 failed" in shown and "ETA" in shown


def echo_server_handler(state: dict[str, Any]) -> Any:
    """An OpenAI-compatible endpoint that answers the last user message upper-cased after a
    short wait, counts the requests it is working on at once, and answers the first request
    of every word in `state["limited"]` with 429 Too Many Requests (Retry-After), and the
    words of `state["always_429"]` always."""
    from tests.http_fakes import Reply, Request, openai_completion

    async def handler(req: Request) -> Reply:
        word = req.json()["messages"][-1]["content"].split()[-1]
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            if word in state["always_429"] or (word in state["limited"] and word not in state["seen"]):
                state["seen"].add(word)
                state["429"] += 1
                return Reply(429, {"error": {"message": "rate limited"}}, {"retry-after": "0.05"})
            await asyncio.sleep(0.01)
            return Reply(200, openai_completion(word.upper(), prompt_tokens=7, completion_tokens=1))
        finally:
            state["now"] -= 1

    return handler


async def test_each_service_max_concurrency_bounds_the_batch_and_rate_limits_are_retried(tmp_path: Path) -> None:
    """A real HTTP server behind the openai connector: 40 records at `concurrency=16`
    reach the service at most `max_concurrency` (3) at a time; a 429 (with Retry-After)
    is retried by the resilience layer and the record succeeds; a record whose every
    attempt is refused goes to the errors file, naming the service, and the run goes on."""
    from tests.http_fakes import FakeHTTPServer

    state: dict[str, Any] = {"now": 0, "peak": 0, "429": 0, "seen": set(),
                             "limited": {f"w{i}" for i in range(0, 40, 4)}, "always_429": {"w39"}}
    with FakeHTTPServer(echo_server_handler(state)) as server:
        settings = KernelSettings(services={"api": {
            "provider": "openai", "model": "fake-model", "api_key": "sk-test", "base_url": server.url + "/v1",
            "max_concurrency": 3, "retry": {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.05}}})
        kernel = Kernel(settings)
        kernel.add_function(PromptFunction.from_template("say {{ word }}", name="say", plugin="p"))
        report = await kernel.batch("p.say", [{"id": f"r{i}", "word": f"w{i}"} for i in range(40)],
                                    output=tmp_path / "out.jsonl", concurrency=16)
    assert state["peak"] == 3, f"the service's max_concurrency bounds the batch (peak {state['peak']})"
    assert (report.done, report.failed) == (39, 1)
    out = lines(tmp_path / "out.jsonl")
    assert [r["result"] for r in out] == [f"W{i}" for i in range(39)], "rate-limited records retried, in order"
    assert state["429"] == 10 + 3, "one 429 for each limited word, three attempts for the refused one"
    [error] = lines(tmp_path / "out.errors.jsonl")
    assert error["id"] == "r39" and "api" in error["message"] and "429" in error["message"], error
    assert (report.input_tokens, report.output_tokens) == (39 * 7, 39)


class Counted:
    """An input that counts the records taken from it, and records how far ahead of the
    finished records the reader ever got."""

    def __init__(self, count: int, finished: list[int]) -> None:
        self.count, self.finished = count, finished
        self.taken = 0
        self.ahead = 0

    def __iter__(self) -> Any:
        for i in range(self.count):
            self.taken += 1
            self.ahead = max(self.ahead, self.taken - len(self.finished))
            yield {"n": i}


@pytest.mark.parametrize("order", ["input", "completed"])
async def test_the_input_is_streamed_with_backpressure(order: str, tmp_path: Path) -> None:
    """The reader takes a record only when there is room: never more than the records
    running ahead of those finished; and in input order, while the first record is slow,
    later results wait for it in memory only within a bounded window."""
    from kernel.batch.runner import REORDER_WINDOW

    finished: list[int] = []
    taken_when_first_finished: list[int] = []

    class Work:
        @kernel_function
        async def step(self, n: int) -> int:
            """Records its finishing; the first record is slow."""
            if n == 0:
                await asyncio.sleep(0.3)
                taken_when_first_finished.append(source.taken)
            finished.append(n)
            return n

    kernel = Kernel(KernelSettings(), load_entry_points=False)
    kernel.add_plugin(Work(), name="w")
    source = Counted(3000, finished)
    report = await kernel.batch("w.step", source, output=tmp_path / "out.jsonl", concurrency=4, order=order)
    assert report.done == 3000 and source.taken == 3000
    results = [r["result"] for r in lines(tmp_path / "out.jsonl")]
    if order == "completed":
        assert source.ahead <= 4 + 1, f"the reader ran {source.ahead} records ahead of those finished"
        assert results[:3] == [1, 2, 3] and taken_when_first_finished[0] > 1000
    else:
        window = 4 * REORDER_WINDOW
        assert taken_when_first_finished[0] <= window + 1, (
            f"{taken_when_first_finished[0]} records read while the first one ran (window {window})")
        assert results == list(range(3000))


def test_ray_and_pyarrow_are_imported_only_when_used(tmp_path: Path) -> None:
    """`import kernel`, the batch wing, its command and an asyncio batch over a .jsonl file
    import neither Ray nor pyarrow (the `[ray]` extra): only a Ray run, or a .parquet input."""
    code = (
        "import asyncio, sys\n"
        "import kernel, kernel.batch, kernel.cli.batch, kernel.batch.ray_executor, kernel.batch.ingest\n"
        "from kernel import Kernel, KernelSettings\n"
        "k = Kernel(KernelSettings(), load_entry_points=False)\n"
        "open('in.jsonl', 'w').write('{\"a\": 1, \"b\": 2}\\n')\n"
        "report = asyncio.run(k.batch('math.add', 'in.jsonl', output='out.jsonl'))\n"
        "assert report.done == 1, report\n"
        "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


async def test_a_record_without_a_required_field_names_the_field_and_the_record(setup: tuple[Kernel, Calls],
                                                                              tmp_path: Path) -> None:
    """Checked before the record is sent anywhere: the error says which field is missing
    (through `--map`), for which argument of which function, under the record's own id."""
    kernel, calls = setup
    source = tmp_path / "in.csv"
    source.write_text("key,who,mark\nk1,Ada,?\nk2,,!\n", encoding="utf-8")
    report = await kernel.batch("t.greet", source, output=tmp_path / "out.jsonl",
                                mapping={"name": "who", "punctuation": "mark"}, id_field="key")
    assert (report.done, report.failed) == (1, 1)
    [error] = lines(tmp_path / "out.errors.jsonl")
    assert error["id"] == "k2" and error["error"] == "ArgumentError"
    assert error["message"] == ("parameter 'name' of t.greet: missing required argument: the record has no field "
                                "'who'")
    plan = {"goal": "g", "steps": [{"id": "s1", "function": "t.square", "arguments": {"n": "$input.n"}}]}
    report = await kernel.batch(plan, [{"n": 3}, {"m": 3}])
    assert report.results[1].error_type == "ArgumentError" and "no field 'n'" in str(report.results[1].error)
    assert calls.seen == [3]


def test_the_progress_bar_on_a_terminal_and_the_summary(tmp_path: Path) -> None:
    """`kernel batch` with stderr on a terminal (a pseudo-terminal here) draws the bar: the
    records done of the total counted beforehand (for the ETA), the rate; the summary goes
    to stdout."""
    import os
    import pty

    plugin = tmp_path / "plugins" / "calc"
    plugin.mkdir(parents=True)
    (plugin / "calc.py").write_text(
        "from kernel import kernel_function\n\n@kernel_function\ndef double(x: int) -> int:\n"
        "    '''Twice x.'''\n    return 2 * x\n", encoding="utf-8")
    write_jsonl(tmp_path / "in.jsonl", [{"x": i} for i in range(57)])
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(COLUMNS="160", TERM="xterm")
    try:
        done = subprocess.run([str(CONSOLE_SCRIPT), "--plugins", str(plugin), "batch", "calc.double", "--input",
                               "in.jsonl", "--output", "out.jsonl"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=secondary, text=True, timeout=120)
        os.close(secondary)
        shown = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            shown += data
    finally:
        os.close(primary)
    assert done.returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "calc.double [asyncio]" in text and "57/57" in text and "/s" in text and "ETA" in text, text[-800:]
    assert done.stdout.startswith("57 done, 0 failed, 0 skipped, ") and "records/s [asyncio]" in done.stdout


def test_the_summary_line_names_tokens_cost_and_why_it_stopped() -> None:
    from kernel.batch import BatchReport, summary_line

    report = BatchReport("p.say", "ray", done=98, failed=2, skipped=5, input_tokens=1200, output_tokens=300,
                         cost=0.0123, seconds=4.0, stopped="--fail-fast: record 7 failed")
    assert summary_line(report) == ("98 done, 2 failed, 5 skipped, 1,500 tokens (1,200 in, 300 out), cost $0.0123, "
                                    "4.0 s, 25.0 records/s [ray] (stopped: --fail-fast: record 7 failed)")


async def test_one_run_at_a_time_writes_an_output_and_never_into_its_input(setup: tuple[Kernel, Calls],
                                                                           tmp_path: Path) -> None:
    """A second run on an output that a run is writing is refused (an exclusive lock on the
    file, released when the first ends or dies), not interleaved with it; an output that is
    the input (or its errors file) is refused before anything is written."""
    kernel, calls = setup
    source = write_jsonl(tmp_path / "in.jsonl", [{"n": i, "delay": 0.05} for i in range(20)])
    out = tmp_path / "out.jsonl"
    first = asyncio.ensure_future(kernel.batch("t.square", source, output=out, concurrency=2))
    while not calls.seen:
        await asyncio.sleep(0.005)
    with pytest.raises(KernelError, match="another batch run is writing it"):
        await kernel.batch("t.square", source, output=out)
    assert (await first).done == 20
    assert [r["result"] for r in lines(out)] == [i * i for i in range(20)], "nothing written by the refused run"
    assert (await kernel.batch("t.square", source, output=out)).skipped == 20, "the lock went with the first run"

    before = source.read_bytes()
    with pytest.raises(KernelError, match="is the input file"):
        await kernel.batch("t.square", source, output=tmp_path / "." / "in.jsonl")
    errors_as_input = write_jsonl(tmp_path / "x.errors.jsonl", [{"n": 1}])
    with pytest.raises(KernelError, match="is the input file"):
        await kernel.batch("t.square", errors_as_input, output=tmp_path / "x.jsonl")
    assert source.read_bytes() == before


async def test_a_record_over_the_size_limit_fails_alone(setup: tuple[Kernel, Calls], tmp_path: Path) -> None:
    """A JSON line or a CSV field longer than MAX_RECORD_CHARS is a failed record, read past
    a piece at a time (never held whole); the records around it run."""
    from kernel.batch.records import MAX_RECORD_CHARS

    kernel, _ = setup
    huge = "x" * (MAX_RECORD_CHARS + 10)
    source = tmp_path / "in.jsonl"
    source.write_text(f'{{"name": "a"}}\n{{"name": "{huge}"}}\n{{"name": "c"}}', encoding="utf-8")
    assert count_records(source) == 3
    report = await kernel.batch("t.greet", source, output=tmp_path / "out.jsonl")
    assert (report.done, report.failed) == (2, 1)
    assert [r["result"] for r in lines(tmp_path / "out.jsonl")] == ["hello a!", "hello c!"]
    [error] = lines(tmp_path / "out.errors.jsonl")
    assert error["id"] == 2 and f"in.jsonl:2: a record longer than {MAX_RECORD_CHARS:,} characters" in error["message"]

    table = tmp_path / "in.csv"
    table.write_text(f"name\na\n{huge}\nc\n", encoding="utf-8")
    report = await kernel.batch("t.greet", table, output=tmp_path / "out2.jsonl")
    assert (report.done, report.failed) == (2, 1)
    assert [r["result"] for r in lines(tmp_path / "out2.jsonl")] == ["hello a!", "hello c!"]
    [error] = lines(tmp_path / "out2.errors.jsonl")
    assert error["id"] == 2 and "field larger than field limit" in error["message"]


def test_the_resume_state_of_many_records_is_small(tmp_path: Path) -> None:
    """Resuming a run of 200,000 done records holds 8 bytes a record (a sorted array of
    digests), not a set of objects; a record is recognised exactly by its id and key."""
    import tracemalloc

    from kernel.batch.records import work_key

    out = tmp_path / "out.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        for i in range(200_000):
            handle.write(json.dumps({"id": i, "key": f"k{i}", "result": i}) + "\n")
    tracemalloc.start()
    try:
        state = ResumeState.load(out)
        assert work_key(7, "k7") in state.done  # sorted on first use
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(state.done) == 200_000
    assert held < 3 * 2**20, f"{held / 2**20:.1f} MiB held for 200,000 records"
    assert work_key(199_999, "k199999") in state.done and work_key(7, "k8") not in state.done
    assert work_key("7", "k7") not in state.done, "the id's type is part of it"
