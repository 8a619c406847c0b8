"""`run_batch`: a function (or a plan) over records, through an executor.

The runner streams: it reads one record at a time, skips those an earlier run finished,
groups the others into chunks, keeps at most the executor's `max_in_flight` chunks
running (waiting for one to finish before it reads on; in input order also at most
`REORDER_WINDOW` times that many chunks ahead of the oldest unwritten one, so results
waiting for their turn stay bounded), and writes each result as it arrives (see
`kernel.batch.output` for the files and how a re-run resumes). A record that fails (a
missing field, bad arguments, an error of the function, a line that is not JSON) is
written to the errors file in its turn and the run goes on, unless `fail_fast`. The output
file is locked for the run: a second run on it is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, KernelError
from .executors import make_executor
from .output import BatchResult, Order, ResultWriter, ResumeState, companion_paths
from .progress import BatchProgress
from .records import RawRecord, Record, count_records, prepare, read_records, record_id
from .work import Outcome, Target, target_for

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .executors import Executor

__all__ = ["REORDER_WINDOW", "BatchReport", "run_batch"]

REORDER_WINDOW = 4
"""In input order, chunks submitted ahead of the oldest unfinished one: at most this many
times `max_in_flight`, so results waiting for their turn stay bounded in memory."""


@dataclass(slots=True)
class BatchReport:
    """What a batch did: records done, failed (see `errors_file`) and skipped (done by an
    earlier run), the tokens and cost of its model calls, its wall time and the executor's
    start-up time (a Ray cluster's, say), and the results themselves when no output file
    was given."""

    function: str
    executor: str
    output: str | None = None
    errors_file: str | None = None
    total: int | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    seconds: float = 0.0
    startup_seconds: float = 0.0
    stopped: str | None = None
    results: list[BatchResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function, "executor": self.executor, "output": self.output,
            "errors_file": self.errors_file, "total": self.total, "done": self.done, "failed": self.failed,
            "skipped": self.skipped, "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "cost": self.cost, "seconds": round(self.seconds, 3), "startup_seconds": round(self.startup_seconds, 3),
            "stopped": self.stopped,
        }


async def run_batch(
    kernel: Kernel,
    function: Any,
    records: str | Path | Iterable[Mapping[str, Any]],
    /,
    *,
    output: str | Path | None = None,
    executor: str | None = None,
    address: str | None = None,
    mapping: Mapping[str, str] | None = None,
    id_field: str = "id",
    order: Order = "input",
    fail_fast: bool = False,
    concurrency: int | None = None,
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    progress: bool = False,
    plugin_dirs: Iterable[str | Path] = (),
    ray_options: Mapping[str, Any] | None = None,
) -> BatchReport:
    """Run `function` (a name, a KernelFunction, a Plan or a plan's JSON data) over
    `records` (a .jsonl/.csv/.parquet path, or an iterable of mappings).

    `output`: the JSON Lines file of results, also the state a re-run resumes from (records
    done are skipped); without it the results are kept in `BatchReport.results`.
    `mapping`: parameter -> field renames. `order`: `"input"` or `"completed"`.
    `executor`: `"asyncio"` (default) or `"ray"` (`address`, `ray_options` such as
    `runtime_env`, `plugin_dirs` the workers load besides the configured ones)."""
    if order not in ("input", "completed"):
        raise KernelError(f"order must be 'input' or 'completed', not {order!r}")
    target, runnable = target_for(kernel, function)
    mapping = dict(mapping or {})
    for name in mapping:
        if name not in target.parameters:
            raise ArgumentError(target.label, name, "no such parameter to map a field to "
                                f"(parameters: {', '.join(target.parameters) or 'none'})")
    out = Path(output) if output is not None else None
    if out is not None and isinstance(records, str | Path):
        _check_files(Path(records), out)
    chosen = make_executor(executor, kernel, target, runnable, address=address, concurrency=concurrency,
                           chunk_size=chunk_size, max_in_flight=max_in_flight, plugin_dirs=plugin_dirs,
                           ray_options=ray_options)
    writer = ResultWriter(out, order)  # locks the output first: one run writes it at a time
    report = BatchReport(target.label, chosen.name, str(out) if out else None,
                         str(writer.errors_path) if writer.errors_path else None)
    bar = BatchProgress(f"{target.label} [{chosen.name}]", None, enabled=progress)
    started = time.perf_counter()
    finished = False
    try:
        state = ResumeState.load(out) if out is not None else ResumeState()
        if bar.shown:  # a pass over the input, for the ETA
            report.total = count_records(records)
            bar.set_total(report.total)
        starting = time.perf_counter()
        await chosen.start()
        report.startup_seconds = time.perf_counter() - starting
        run = _Run(chosen, writer, report, bar, started, fail_fast)
        await run.feed(read_records(records), target, mapping, id_field, state)
        finished = report.stopped is None
    finally:
        report.seconds = time.perf_counter() - started
        bar.close()
        writer.close(finished=finished)
        await chosen.close()
    report.results = writer.results
    return report


def _check_files(source: Path, output: Path) -> None:
    """Refuse an output (or its errors file or journal) that is the input: the run would
    read its own results."""
    for written in (output, *companion_paths(output)):
        same = source.resolve() == written.resolve()
        if not same and source.exists() and written.exists():
            same = source.samefile(written)
        if same:
            raise KernelError(f"the output file {written} is the input file {source}: give another --output")


class _Run:
    """The loop of one batch: chunks submitted, at most `max_in_flight` running."""

    def __init__(self, executor: Executor, writer: ResultWriter, report: BatchReport, bar: BatchProgress,
                 started: float, fail_fast: bool) -> None:
        self.executor, self.writer, self.report, self.bar = executor, writer, report, bar
        self.started, self.fail_fast = started, fail_fast
        self.running: dict[asyncio.Task[list[Outcome]], tuple[int, list[Record]]] = {}
        self.slot = 0

    async def feed(self, raws: Iterable[RawRecord], target: Target, mapping: Mapping[str, str], id_field: str,
                   state: ResumeState) -> None:
        chunk: list[tuple[Record, Outcome | None]] = []
        size = max(1, self.executor.chunk_size)
        try:
            for raw in raws:
                try:
                    record = prepare(raw, target.parameters, mapping, id_field, target.identity, target.required,
                                     target.label)
                except KernelError as exc:  # a failed outcome, written in its turn
                    kind = "RecordError" if type(exc) is KernelError else type(exc).__name__
                    failed = Record(raw.position, record_id(raw, id_field), {}, "")
                    chunk.append((failed, Outcome(error=str(exc), error_type=kind)))
                else:
                    key = record.state_key
                    if key in state.done:
                        self.report.skipped += 1
                        continue
                    line = state.recovered.pop(key, None)
                    chunk.append((record, None if line is None else Outcome(line=line)))
                if len(chunk) >= size:
                    self._submit(chunk)
                    chunk = []
                    while self._full() and not self.report.stopped:
                        await self._collect()
                    if self.report.stopped:
                        break
            if chunk and not self.report.stopped:
                self._submit(chunk)
            while self.running and not self.report.stopped:
                await self._collect()
        finally:
            for task in self.running:
                task.cancel()
            if self.running:
                await asyncio.gather(*self.running, return_exceptions=True)
            self.running.clear()
            self._show()

    def _full(self) -> bool:
        """No room for another chunk: `max_in_flight` running, or (in input order) the
        window of results waiting behind a slow chunk is full."""
        limit = self.executor.max_in_flight
        if len(self.running) >= limit:
            return True
        return self.writer.order == "input" and self.slot - self.writer.head >= REORDER_WINDOW * limit

    def _submit(self, items: list[tuple[Record, Outcome | None]]) -> None:
        records = [record for record, _ in items]
        task = asyncio.ensure_future(self._run_chunk(items))
        self.running[task] = (self.slot, records)
        self.slot += 1

    async def _run_chunk(self, items: list[tuple[Record, Outcome | None]]) -> list[Outcome]:
        to_run = [record for record, known in items if known is None]
        outcomes = iter(await self.executor.run(to_run) if to_run else [])
        return [known if known is not None else next(outcomes) for _, known in items]

    async def _collect(self) -> None:
        finished, _ = await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
        for task in sorted(finished, key=lambda t: self.running[t][0]):
            slot, records = self.running.pop(task)
            outcomes = task.result()
            self.writer.complete(slot, list(zip(records, outcomes, strict=True)))
            report = self.report
            for record, outcome in zip(records, outcomes, strict=True):
                if outcome.error is not None:
                    self._failed(record.id)
                    continue
                report.done += 1
                report.input_tokens += outcome.input_tokens
                report.output_tokens += outcome.output_tokens
                if outcome.cost is not None:
                    report.cost = (report.cost or 0.0) + outcome.cost
        self._show()

    def _failed(self, record_id: Any) -> None:
        self.report.failed += 1
        if self.fail_fast and self.report.stopped is None:
            self.report.stopped = f"--fail-fast: record {record_id} failed"

    def _show(self) -> None:
        report = self.report
        elapsed = max(1e-9, time.perf_counter() - self.started)
        self.bar.update(report.done + report.failed + report.skipped, rate=(report.done + report.failed) / elapsed,
                        failed=report.failed, tokens=report.input_tokens + report.output_tokens, cost=report.cost)
