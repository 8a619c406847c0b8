"""Records in: streaming readers of `.jsonl`, `.csv` and `.parquet` files (or any iterable
of mappings), a record's id, its arguments and the key that identifies its work.

Nothing here holds a whole input: a reader yields one record at a time (parquet by row
groups of a thousand rows), so a million-record file costs the memory of a few records.

* **Id**: the record's `id` field (`id_field`), else its line number (data rows counted
  from 1: the line of a JSON Lines file, the row of a CSV file after its header, the row
  of a parquet file).
* **Arguments**: the fields named like the function's parameters (a plan's inputs);
  `mapping` renames (`{"text": "body"}`: the parameter `text` takes the field `body`).
  Other fields are ignored. A CSV cell that is empty is absent (the parameter's default
  applies); CSV values are text, and the function's validation converts them
  (`"3"` -> `3` for an `int` parameter).
* **Key**: sha256 of the function (its name; a plan's whole JSON) and the arguments, so a
  resumed run recognises the work it already did, and a changed argument is new work.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArgumentError, ConfigurationError, KernelError

__all__ = ["FORMATS", "RawRecord", "Record", "count_records", "prepare", "read_records", "record_id", "record_key",
           "work_key"]

FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet")
MAX_RECORD_CHARS = 16 * 1024 * 1024
"""The longest record read (a JSON line, a CSV field): a longer one is a failed record,
skipped without being held in memory."""
_PARQUET_BATCH = 1024


@dataclass(slots=True)
class RawRecord:
    """One record as read: its position (from 1), its fields, or why it could not be read."""

    position: int
    fields: Mapping[str, Any] | None
    error: str | None = None


@dataclass(slots=True)
class Record:
    """One unit of work: where it came from, its id, its arguments and its key."""

    position: int
    id: Any
    arguments: dict[str, Any]
    key: str

    @property
    def state_key(self) -> bytes:
        """What a resumed run matches: the id and the key, digested (16 bytes)."""
        return work_key(self.id, self.key)


def work_key(record_id: Any, key: str) -> bytes:
    return hashlib.blake2b(f"{json.dumps(record_id, default=str)}\0{key}".encode(), digest_size=16).digest()


def record_key(identity: Any, arguments: Mapping[str, Any]) -> str:
    """The hash of the function (or plan) and the arguments of one record."""
    text = json.dumps([identity, arguments], sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def record_id(raw: RawRecord, id_field: str) -> Any:
    """The record's `id_field`, else its position."""
    found = raw.fields.get(id_field) if raw.fields is not None else None
    return raw.position if found is None or found == "" else found


def prepare(raw: RawRecord, parameters: Iterable[str], mapping: Mapping[str, str], id_field: str,
            identity: Any, required: Iterable[str] = (), label: str = "") -> Record:
    """The record's id, arguments and key. Raises KernelError for a record that is not an
    object, ArgumentError (naming the field) for one without a field a required argument takes."""
    fields = raw.fields
    if fields is None:
        raise KernelError(raw.error or "unreadable record")
    arguments: dict[str, Any] = {}
    for name in parameters:
        field = mapping.get(name, name)
        if field in fields:
            arguments[name] = fields[field]
    for name in required:
        if name not in arguments:
            raise ArgumentError(label, name, f"missing required argument: the record has no field "
                                             f"{mapping.get(name, name)!r}")
    return Record(raw.position, record_id(raw, id_field), arguments, record_key(identity, arguments))


# --- readers -----------------------------------------------------------------------------------


def read_records(source: str | Path | Iterable[Mapping[str, Any]]) -> Iterator[RawRecord]:
    """Records one at a time, from a file (by its suffix) or an iterable of mappings."""
    if isinstance(source, str | Path):
        path = Path(source)
        suffix = _suffix(path)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return _read_parquet(path)
        return _read_jsonl(path)
    return _read_iterable(source)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise KernelError(f"{path}: unknown input format {suffix or '(no suffix)'!r}; "
                          f"use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise KernelError(f"no such input file: {path}")
    return suffix


def _read_iterable(items: Iterable[Mapping[str, Any]]) -> Iterator[RawRecord]:
    for position, item in enumerate(items, 1):
        if isinstance(item, Mapping):
            yield RawRecord(position, item)
        else:
            yield RawRecord(position, None, f"record {position} is {type(item).__name__}, not a mapping of fields")


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        line_number = 0
        while line := handle.readline(MAX_RECORD_CHARS + 1):
            line_number += 1
            if len(line) > MAX_RECORD_CHARS and not line.endswith("\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith("\n"):
                    pass  # the rest of the line, a piece at a time
                yield RawRecord(line_number, None, f"{path.name}:{line_number}: a record longer than "
                                                   f"{MAX_RECORD_CHARS:,} characters")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                yield RawRecord(line_number, None, f"{path.name}:{line_number}: not JSON ({reason})")
                continue
            if isinstance(value, dict):
                yield RawRecord(line_number, value)
            else:
                problem = f"a record must be a JSON object, not {type(value).__name__}"
                yield RawRecord(line_number, None, f"{path.name}:{line_number}: {problem}")


def _read_csv(path: Path) -> Iterator[RawRecord]:
    csv.field_size_limit(MAX_RECORD_CHARS)
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        row_number = 0
        while True:
            row_number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over the limit; the reader goes on after it
                yield RawRecord(row_number, None, f"{path.name}: row {row_number} (line {reader.line_num}): {exc}")
                continue
            extra = row.pop(None, None)
            if extra:
                yield RawRecord(row_number, None, f"{path.name}: row {row_number} has {len(extra)} more cell(s) "
                                                  "than the header has columns")
                continue
            yield RawRecord(row_number, {k: v for k, v in row.items() if v not in (None, "")})


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError(
            'reading .parquet needs pyarrow: pip install "orchestration-kernel[ray]" (or pyarrow)'
        ) from None
    return pq


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    parquet = _pyarrow_parquet().ParquetFile(path)
    position = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            position += 1
            yield RawRecord(position, {k: v for k, v in row.items() if v is not None})


def count_records(source: str | Path | Iterable[Any]) -> int | None:
    """How many records a source holds, for the progress bar's ETA (None: unknown). A JSON
    Lines file is counted by its line ends, a block at a time, without parsing (blank lines
    included: an estimate); a CSV file by parsing its rows (a cell may hold a line break); a
    parquet file from its metadata."""
    if not isinstance(source, str | Path):
        return len(source) if isinstance(source, Sized) else None
    path = Path(source)
    suffix = _suffix(path)
    if suffix == ".parquet":
        return int(_pyarrow_parquet().ParquetFile(path).metadata.num_rows)
    if suffix == ".csv":
        csv.field_size_limit(MAX_RECORD_CHARS)
        with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.reader(handle)
            count = 0
            while True:
                try:
                    count += 1 if next(reader) else 0
                except StopIteration:
                    return max(0, count - 1)
                except csv.Error:
                    count += 1
    count, last = 0, b"\n"
    with path.open("rb") as handle:  # line ends, a block at a time (blank lines counted: an estimate)
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
