"""Safe access to the files of one plugin root, and the problems found there.

Only regular files inside the root are read: symbolic links that lead outside it, and
file references with `..` or absolute paths, are reported, never followed. FIFOs, sockets
and devices are reported and skipped, never opened (opening a FIFO for reading waits for
a writer). Files over 1 MiB and files that are not UTF-8 are reported. JSON and YAML
nest at most `MAX_DEPTH` levels and YAML has no anchors or aliases (`yaml_data`). Every
problem names the file and, where known, the line; they are collected over the whole
root. A problem is an error (what it concerns does not load) or a warning (`warn`: it
loads as Semantic Kernel loads it, and the problem is reported).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..errors import Problem
from ..functions import NAME_PATTERN
from .yaml_data import DataError, load_json, load_yaml

MAX_FILE_BYTES = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
"""O_NONBLOCK: should a FIFO slip past the checks (replaced after them), opening it does
not wait for a writer."""


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An open file descriptor of `path` and its status, only when it is a regular file:
    checked with `os.stat` before opening (a FIFO or a device is never opened), opened
    non-blocking, and checked again on the descriptor. Raises OSError, or ValueError
    naming what the file is instead."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(file_kind(mode))
    fd = os.open(path, _OPEN_FLAGS)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(file_kind(status.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, status


class Skip(Exception):
    """A problem was recorded; stop processing this file."""


class FolderReader:
    """Problems of one plugin root, and safe access to its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = Path(os.path.realpath(root))
        self.problems: list[Problem] = []
        """The errors: what they concern does not load."""
        self.warnings: list[Problem] = []
        """What loads as Semantic Kernel loads it (a key SK ignores), reported."""
        self.reported: list[Problem] = []
        """Errors and warnings, in the order found."""
        self.templates: dict[int, tuple[Path, int]] = {}
        """By `id()` of each PromptFunction built: its file and the lines before its
        template there (for problems found once the whole root is loaded)."""
        self.tracked: list[tuple[str, bytes | None]] | None = None
        """While the parse cache records a function: each file read (and its bytes) or
        looked for and missing (None), in order."""
        self.built: dict[str, Any] | None = None
        """While the parse cache records a function: how it was built (`build_prompt_function`)."""

    # -- problems and files ----------------------------------------------------------

    def problem(self, path: Path | str, message: str, line: int | None = None, *,
                severity: Literal["error", "warning"] = "error") -> None:
        """Record a problem; a warning (`severity="warning"`, or `warn`) does not stop
        what it concerns from loading."""
        problem = Problem(str(path), message, line, severity)
        (self.warnings if severity == "warning" else self.problems).append(problem)
        self.reported.append(problem)

    def warn(self, path: Path | str, message: str, line: int | None = None) -> None:
        """Something Semantic Kernel ignores (an unknown key, a free-form type): it loads
        as SK loads it, and is reported."""
        self.problem(path, message, line, severity="warning")

    def mark(self) -> int:
        """A point in the problems found so far, for `since`."""
        return len(self.reported)

    def since(self, mark: int) -> list[Problem]:
        """The errors and warnings found after `mark`, in order."""
        return self.reported[mark:]

    def entries(self, folder: Path) -> list[tuple[str, Path, bool]]:
        """(name, path, is_dir) of a folder's visible entries; links out of the root, and
        FIFOs, sockets and devices, are reported and left out (never opened)."""
        out: list[tuple[str, Path, bool]] = []
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.problem(folder, f"cannot list folder: {exc.strerror or exc}")
            return out
        for entry in items:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            if entry.is_symlink():
                target = Path(os.path.realpath(path))
                if not target.is_relative_to(self.root_real):
                    self.problem(path, "symbolic link leads outside the plugin root; not followed")
                    continue
                if not target.exists():
                    self.problem(path, "broken symbolic link")
                    continue
            try:
                is_dir = entry.is_dir()
                mode = entry.stat().st_mode  # follows a link (inside the root, checked above)
            except OSError as exc:
                self.problem(path, f"cannot read: {exc.strerror or exc}")
                continue
            if not is_dir and not stat.S_ISREG(mode):
                self.problem(path, f"not a regular file ({file_kind(mode)}); skipped")
                continue
            out.append((entry.name, path, is_dir))
        return out

    def read_bytes(self, path: Path) -> bytes:
        """The bytes of a regular file of at most `MAX_FILE_BYTES`; anything else is a
        problem (and Skip)."""
        try:
            fd, status = open_regular(path)
        except ValueError as exc:
            self.problem(path, f"not a regular file ({exc}); skipped")
            raise Skip from None
        except OSError as exc:
            self.problem(path, f"cannot read file: {exc.strerror or exc}")
            raise Skip from None
        try:
            data = read_fd(fd, status.st_size)
        except OSError as exc:
            self.problem(path, f"cannot read file: {exc.strerror or exc}")
            raise Skip from None
        if self.tracked is not None:
            self.tracked.append((str(path), data))
        if len(data) > MAX_FILE_BYTES:
            size = max(status.st_size, len(data))
            self.problem(path, f"file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
            raise Skip
        return data

    def read(self, path: Path) -> str:
        data = self.read_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.problem(path, f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x})", line)
            raise Skip from None
        return text[1:] if text.startswith("\ufeff") else text

    def reference(self, base: Path, value: str, what: str, source: Path) -> Path:
        """A file named inside a plugin file: relative, without `..`, inside the root."""
        if "\0" in value:
            self.problem(source, f"{what} {value!r}: a path cannot contain a NUL byte")
            raise Skip
        pure = PurePosixPath(value.replace("\\", "/"))
        if pure.is_absolute() or Path(value).is_absolute() or re.match(r"^[A-Za-z]:", value):
            self.problem(source, f"{what} {value!r}: absolute paths are not allowed (use a path relative to the file)")
            raise Skip
        if ".." in pure.parts:
            self.problem(source, f"{what} {value!r}: '..' is not allowed; the file must be inside the plugin folder")
            raise Skip
        path = base.joinpath(*pure.parts)
        if not Path(os.path.realpath(path)).is_relative_to(self.root_real):
            self.problem(source, f"{what} {value!r} leads outside the plugin root (symbolic link); not followed")
            raise Skip
        try:
            mode = os.stat(path).st_mode
        except OSError:
            if self.tracked is not None:
                self.tracked.append((str(path), None))
            self.problem(source, f"{what} {value!r}: no such file")
            raise Skip from None
        if not stat.S_ISREG(mode):
            self.problem(source, f"{what} {value!r}: not a regular file ({file_kind(mode)})")
            raise Skip
        return path

    # -- folders ---------------------------------------------------------------------

    def function_name(self, name: str, path: Path) -> str:
        if not NAME_PATTERN.match(name):
            self.problem(path, f"invalid function name {name!r}: use letters, digits and underscores, "
                               "not starting with a digit")
            raise Skip
        return name

    # -- our format ------------------------------------------------------------------

    def json_file(self, base: Path, value: str, what: str, source: Path) -> dict[str, Any] | None:
        return self.json_object(self.reference(base, value, what, source), what)

    def json_object(self, path: Path, what: str) -> dict[str, Any]:
        """The JSON object in `path`; invalid JSON, JSON nested too deeply or another value
        is a problem."""
        try:
            data = load_json(self.read(path))
        except json.JSONDecodeError as exc:
            self.problem(path, f"invalid JSON: {exc.msg}", exc.lineno)
            raise Skip from None
        except DataError as exc:
            self.problem(path, exc.message, exc.line)
            raise Skip from None
        if not isinstance(data, dict):
            self.problem(path, f"{what} must be a JSON object")
            raise Skip
        return data

    def load_yaml(self, text: str, path: Path, offset: int) -> Any:
        try:
            return load_yaml(text)
        except DataError as exc:
            self.problem(path, exc.message, None if exc.line is None else exc.line + offset)
            raise Skip from None


def is_mapping_of_mappings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def key_line(text: str | None, key: str) -> int | None:
    """Line of the first `key:` (YAML) or `"key":` (JSON) in `text`; for messages only."""
    if not text:
        return None
    # the key as a whole word: `template` must not match `template_format:`
    match = re.search(rf"^\s*(?:-\s*)?(?:name:\s*)?[\"']?{re.escape(key)}(?![\w-])[\"']?\s*:?", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def read_fd(fd: int, size: int) -> bytes:
    """The bytes of the open file `fd` (at most MAX_FILE_BYTES + 1, so that a larger file is
    seen to be too large), then closed. `size`: its size when it was opened, to size the reads
    (a buffered `read(MAX_FILE_BYTES + 1)` allocates 1 MiB for every file, a third of the cost of
    loading a small prompt file)."""
    try:
        chunks: list[bytes] = []
        left = MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, size + 1 if not chunks else 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def quiet_text(path: Path) -> str | None:
    """The text of a plugin file read again, for a message's line number only: None when
    it cannot be read (the problem was reported when it was loaded)."""
    try:
        fd, status = open_regular(path)
        return read_fd(fd, status.st_size).decode("utf-8")
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def json_key_line(source: Path | str, key: str) -> int | None:
    """Line of the first `"key"` in a JSON file (a Path) or text; for messages only."""
    text = quiet_text(source) if isinstance(source, Path) else source
    if not text:
        return None
    match = re.search(rf"\"{re.escape(key)}\"", text)
    return text.count("\n", 0, match.start()) + 1 if match else None
