"""Safe access to the files of one plugin root, and the problems found there.

Only regular files inside the root are read: symbolic links that lead outside it, and
file references with `..` or absolute paths, are reported, never followed. Files over
1 MiB and files that are not UTF-8 are reported. Every problem names the file and, where
known, the line; they are collected over the whole root and raised together.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import Problem
from ..functions import NAME_PATTERN
from .yaml_data import DataError, load_yaml

MAX_FILE_BYTES = 1 << 20


class Skip(Exception):
    """A problem was recorded; stop processing this file."""


class FolderReader:
    """Problems of one plugin root, and safe access to its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = Path(os.path.realpath(root))
        self.problems: list[Problem] = []

    # -- problems and files ----------------------------------------------------------

    def problem(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(str(path), message, line))

    def entries(self, folder: Path) -> list[tuple[str, Path, bool]]:
        """(name, path, is_dir) of a folder's visible entries; links out of the root are
        reported and left out."""
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
            except OSError:
                is_dir = False
            out.append((entry.name, path, is_dir))
        return out

    def read(self, path: Path) -> str:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
                if len(data) > MAX_FILE_BYTES:
                    size = os.fstat(handle.fileno()).st_size
                    self.problem(path, f"file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
                    raise Skip
        except OSError as exc:
            self.problem(path, f"cannot read file: {exc.strerror or exc}")
            raise Skip from None
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
        if not path.is_file():
            self.problem(source, f"{what} {value!r}: no such file")
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
        """The JSON object in `path`; invalid JSON or another value is a problem."""
        try:
            data = json.loads(self.read(path))
        except json.JSONDecodeError as exc:
            self.problem(path, f"invalid JSON: {exc.msg}", exc.lineno)
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
    match = re.search(rf"^\s*(?:-\s*)?(?:name:\s*)?[\"']?{re.escape(key)}[\"']?\s*:?", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def json_key_line(path: Path, key: str) -> int | None:
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    match = re.search(rf"\"{re.escape(key)}\"", text)
    return text.count("\n", 0, match.start()) + 1 if match else None
