"""Results out, and the state a re-run resumes from.

The output file is the state: one JSON line per record done, `{"id", "key", "result"}`
(with `usage` and `cost` when models were called), appended and flushed as results
arrive, so that a process killed at any moment leaves every completed record on disk (a
half-written last line is cut off when the run resumes). A re-run reads the ids and keys
back and skips those records.

* `OUT.errors.jsonl` (beside `OUT.jsonl`): one line per record that failed in the last run,
  `{"id", "key", "error", "message"}`; started afresh by each run, since a re-run tries
  failed records again.
* In input order (the default), a result that completes before an earlier one waits in
  memory for its turn; so that a kill loses none of them either, it is also journaled at
  once to `OUT.pending.jsonl`, which the next run takes its results from (in their turn,
  without running the records again) and which is removed when a run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import KernelError
from .records import Record, work_key
from .work import Outcome

__all__ = ["BatchResult", "DoneKeys", "Order", "ResultWriter", "ResumeState", "companion_paths"]

Order = Literal["input", "completed"]


def companion_paths(output: Path) -> tuple[Path, Path]:
    """The errors file and the pending journal of an output file."""
    base = output.name[: -len(output.suffix)] if output.suffix else output.name
    return output.with_name(f"{base}.errors.jsonl"), output.with_name(f"{base}.pending.jsonl")


@dataclass(slots=True)
class BatchResult:
    """One record's result, when the run keeps results in memory (no output file)."""

    id: Any
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DoneKeys:
    """The records done, as 8 bytes each of their (id, key) digests in one sorted array:
    about 8 MiB a million records, where a set of digests takes twelve times that."""

    __slots__ = ("_keys", "_sorted")

    def __init__(self) -> None:
        self._keys = array("Q")
        self._sorted = True

    def add(self, digest: bytes) -> None:
        self._keys.append(int.from_bytes(digest[:8], "little"))
        self._sorted = False

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes):
            return False
        if not self._sorted:
            self._keys = array("Q", sorted(self._keys))
            self._sorted = True
        value = int.from_bytes(digest[:8], "little")
        index = bisect_left(self._keys, value)
        return index < len(self._keys) and self._keys[index] == value

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(slots=True)
class ResumeState:
    """What earlier runs did: the records done (id and key, digested) and results journaled
    but not yet written in order (in-order runs)."""

    done: DoneKeys = field(default_factory=DoneKeys)
    recovered: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def load(cls, output: Path) -> ResumeState:
        state = cls()
        if output.exists():
            for line, data in _complete_lines(output, repair=True):
                del line
                state.done.add(work_key(data.get("id"), str(data.get("key"))))
        _, pending = companion_paths(output)
        if pending.exists():
            for line, data in _complete_lines(pending, repair=True):
                key = work_key(data.get("id"), str(data.get("key")))
                if key not in state.done:
                    state.recovered[key] = line
        return state


def _complete_lines(path: Path, *, repair: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """The whole JSON lines of a results file. A last line without its newline (the writer
    was killed during the write) is cut off the file when `repair`."""
    good_end = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            good_end += len(raw)
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                continue
            if isinstance(data, dict) and "key" in data:
                yield raw.decode("utf-8").rstrip("\n"), data
    if repair and path.stat().st_size != good_end:
        with path.open("r+b") as handle:
            handle.truncate(good_end)


class ResultWriter:
    """Writes results (in input order or as they complete), errors and the pending journal;
    without an output file, keeps the results in `results`."""

    def __init__(self, output: Path | None, order: Order) -> None:
        self.order = order
        self.results: list[BatchResult] = []
        self._head = 0  # the next slot to write, in input order
        self._waiting: dict[int, list[tuple[str, BatchResult]]] = {}
        self._out: IO[str] | None = None
        self._errors: IO[str] | None = None
        self._pending: IO[str] | None = None
        self._pending_path: Path | None = None
        if output is not None:
            errors, pending = companion_paths(output)
            output.parent.mkdir(parents=True, exist_ok=True)
            self._out = output.open("a", encoding="utf-8")
            try:
                _lock(self._out, output)
            except BaseException:
                self._out.close()
                raise
            self._errors = errors.open("w", encoding="utf-8")
            self._pending_path = pending
            if order == "input":
                self._pending = pending.open("a", encoding="utf-8")
        self.errors_path = companion_paths(output)[0] if output is not None else None

    @property
    def head(self) -> int:
        """The next slot to be written, in input order."""
        return self._head

    def fail(self, record_id: Any, key: str | None, error_type: str, message: str) -> None:
        """A record that failed (or could not be read): to the errors file at once."""
        if self._errors is not None:
            self._errors.write(json.dumps({"id": record_id, "key": key, "error": error_type, "message": message},
                                          ensure_ascii=False, default=str) + "\n")
            self._errors.flush()
        else:
            self.results.append(BatchResult(record_id, None, message, error_type))

    def complete(self, slot: int, items: list[tuple[Record, Outcome]]) -> None:
        """The outcomes of one slot (a chunk of records submitted together)."""
        done: list[tuple[str, BatchResult]] = []
        for record, outcome in items:
            if outcome.error is not None:
                if self._out is None:  # kept in memory, in their turn with the results
                    done.append(("", BatchResult(record.id, None, outcome.error, outcome.error_type or "Error")))
                else:
                    self.fail(record.id, record.key or None, outcome.error_type or "Error", outcome.error)
                continue
            line = outcome.line if outcome.line is not None else _result_line(record, outcome)
            result = BatchResult(record.id, outcome.value, None, None, outcome.input_tokens, outcome.output_tokens,
                                 outcome.cost) if self._out is None else _NO_RESULT
            done.append((line, result))
        if self.order == "completed":
            self._write(done)
            return
        if slot != self._head:
            self._waiting[slot] = done
            if self._pending is not None and done:  # journaled, so that a kill loses none of them
                journaled = {outcome.line for _, outcome in items if outcome.line is not None}
                self._pending.write("".join(line + "\n" for line, _ in done if line not in journaled))
                self._pending.flush()
            return
        self._write(done)
        self._head += 1
        while self._head in self._waiting:
            self._write(self._waiting.pop(self._head))
            self._head += 1

    def _write(self, done: list[tuple[str, BatchResult]]) -> None:
        if not done:
            return
        if self._out is not None:
            self._out.write("".join(line + "\n" for line, _ in done))
            self._out.flush()
        else:
            self.results.extend(result for _, result in done)

    def close(self, *, finished: bool) -> None:
        """Close the files; a finished run removes the pending journal (all of it written)."""
        for handle in (self._out, self._errors, self._pending):
            if handle is not None:
                handle.close()
        if finished and not self._waiting and self._pending_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._pending_path)


_NO_RESULT = BatchResult(None)


def _lock(handle: IO[str], output: Path) -> None:
    """An exclusive lock on the output file for the run (released when it is closed, or
    when the process dies): a second run on the same output is refused, not interleaved."""
    try:
        import fcntl
    except ImportError:  # not on this platform: unlocked
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise KernelError(f"{output}: another batch run is writing it; wait for it to end, or give another "
                          "output file") from None


def _result_line(record: Record, outcome: Outcome) -> str:
    data: dict[str, Any] = {"id": record.id, "key": record.key, "result": outcome.value}
    if outcome.input_tokens or outcome.output_tokens:
        data["usage"] = {"input_tokens": outcome.input_tokens, "output_tokens": outcome.output_tokens}
    if outcome.cost is not None:
        data["cost"] = outcome.cost
    return json.dumps(data, ensure_ascii=False, default=str)
