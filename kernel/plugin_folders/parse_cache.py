"""The parse cache of plugin folders: a prompt file that did not change is not parsed again.

Loading a prompt function parses its YAML front matter (or SK's `config.json`) and its
template, so that every problem is reported with file and line at load time. Both parses
are kept, as Python keeps bytecode in `__pycache__`: for each function file (our
`.prompt`, an SK function folder, an SK YAML prompt), the problems it had and how its
function was built (inputs, settings, the template source and what its parse found).
Nothing is kept that is not plain data: the cache never holds code.

An entry is used only while every file it was built from has the same content: each is
read and compared by SHA-256 on every load (as `__pycache__` does in its checked-hash
mode: a change that keeps the size and modification time is still seen; reading a small
file costs microseconds, parsing it hundreds). A missing file that was looked for (an
`output_schema` file) must still be missing, and an SK function folder must hold the same
files (its identity: device, inode, modification time). Anything else is a miss: the
file is parsed and validated again. The problems found against the rest of the kernel
(calls to functions, settings) are checked on every load, never cached.

Two layers: the process keeps every entry it made or read (so a second `Kernel()`
parses nothing), and, when a folder is given, entries are written to one JSON file per
plugin root under it (`cache_dir/parse-cache/`), written whole and atomically (a
temporary file renamed). A file that cannot be read, parsed or trusted (another format,
another version of the loader, not JSON) is ignored and rebuilt. Nothing is written when
the folder cannot be created or written; `parse_cache = false` keeps the entries in the
process only. Never is anything written beside the plugin files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Problem
from .reader import MAX_FILE_BYTES, FolderReader, Skip, read_fd

if TYPE_CHECKING:
    from ..functions import KernelFunction

FORMAT = 1
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

Loader = Callable[[FolderReader, str, Path], "KernelFunction"]


def _identity(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _read(path: str, size: int) -> bytes:
    return read_fd(os.open(path, OPEN_FLAGS), size)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether `value` survives a JSON round trip unchanged (what the cache can keep)."""
    if depth > 64:
        return False
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int | float):
        return type(value) in (int, float) and value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


_FINGERPRINT: str | None = None


def loader_fingerprint() -> str:
    """What the entries depend on besides the files: this format, Python, and the code that
    parses (the kernel's loader and template modules, Jinja and PyYAML), by size and
    modification time of their files. Another fingerprint: every entry is stale."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        import importlib.util

        here = Path(__file__).parent
        files = sorted(str(p) for p in here.glob("*.py"))
        files += [str(here.parent / "prompts" / name) for name in ("templates.py", "function.py", "sandbox.py")]
        for package in ("jinja2", "yaml"):
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin:
                files.append(spec.origin)
        parts = [str(FORMAT), sys.version] + [f"{f}:{_identity(f)}" for f in files]
        _FINGERPRINT = _digest("\n".join(parts).encode())[:32]
    return _FINGERPRINT


class Entry:
    """One function file's load: the files it read, its problems, how it was built."""

    __slots__ = ("built", "files", "function", "problems", "where", "written")

    def __init__(self, files: list[list[Any]], problems: list[list[Any]], built: dict[str, Any] | None,
                 written: int) -> None:
        self.files = files
        """[path, identity or None, sha256 or None (a folder: its identity only)] each."""
        self.problems = problems
        self.built = built
        self.written = written
        self.function: KernelFunction | None = None
        """The function this process built from it, copied for each load."""
        self.where: tuple[Path, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "problems": self.problems, "built": self.built, "written": self.written}

    @classmethod
    def from_json(cls, data: Any) -> Entry:
        if not isinstance(data, dict) or not isinstance(data.get("files"), list) \
                or not isinstance(data.get("problems"), list) or not isinstance(data.get("written"), int):
            raise ValueError("not an entry")
        built = data.get("built")
        if built is not None and not isinstance(built, dict):
            raise ValueError("not an entry")
        for item in data["files"]:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
                raise ValueError("not an entry")
        return cls(data["files"], data["problems"], built, data["written"])

    def fresh(self) -> bool:
        """Whether every file it was built from is as it was: the same content, still
        missing, or (a folder) the same identity."""
        for path, identity, digest in self.files:
            try:
                st = os.lstat(path)
            except OSError:
                if identity is None:
                    continue  # still missing
                return False
            if stat.S_ISLNK(st.st_mode):
                return False  # a link now, or still: checked by the loader again (where it leads)
            if digest is None:  # a folder: its listing changes its identity
                if [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns] != identity:
                    return False
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                return False  # never opened here: the loader reports what it is
            try:
                data = _read(path, st.st_size)
            except OSError:
                return False
            if _digest(data) != digest:
                return False
        return True


class CacheStats:
    """What a cache did since it was made: function files replayed from an entry (`hits`),
    parsed and validated (`parsed`), cache files read (`files_read`) and written
    (`files_written`)."""

    __slots__ = ("files_read", "files_written", "hits", "parsed")

    def __init__(self) -> None:
        self.hits = self.parsed = self.files_read = self.files_written = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"CacheStats({', '.join(f'{k}={v}' for k, v in self.as_dict().items())})"


class ParseCache:
    """Entries by plugin root: this process's, and those of a folder on disk (`directory`,
    None: the process's only). `stats` counts what it did."""

    def __init__(self, directory: Path | None = None, *, write: bool = True) -> None:
        self.directory = directory
        self.write = write and directory is not None
        self.roots: dict[str, RootCache] = {}
        self.stats = CacheStats()

    def root(self, root: Path) -> RootCache:
        key = os.path.realpath(root)
        found = self.roots.get(key)
        if found is None:
            path = None
            if self.directory is not None:
                name = _digest(f"{key}\n{FORMAT}".encode())[:32]
                path = self.directory / f"{name}.json"
            found = self.roots[key] = RootCache(key, path, self.write, self.stats)
        return found

    def save(self) -> None:
        for root in self.roots.values():
            root.save()


class RootCache:
    """The entries of one plugin root, by (kind, plugin, path)."""

    def __init__(self, root: str, path: Path | None, write: bool, stats: CacheStats | None = None) -> None:
        self.root, self.path, self.write = root, path, write
        self.stats = stats if stats is not None else CacheStats()
        self.entries: dict[str, Entry] = {}
        self.loaded = path is None
        self.changed = False

    def _load(self) -> None:
        """Read the file of this root once; anything wrong with it: start empty."""
        self.loaded = True
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("format") != FORMAT \
                    or data.get("loader") != loader_fingerprint() or data.get("root") != self.root:
                return
            raw = data.get("entries")
            if not isinstance(raw, dict):
                return
            entries = {str(key): Entry.from_json(value) for key, value in raw.items()}
            self.stats.files_read += 1
        except (OSError, ValueError, TypeError, AttributeError):  # absent, unreadable or corrupt
            self.changed = True  # rewritten whole at the next save
            return
        for key, entry in entries.items():
            self.entries.setdefault(key, entry)

    def load(self, reader: FolderReader, kind: str, plugin: str, path: Path, loader: Loader) -> KernelFunction:
        """`loader(reader, plugin, path)`, or what it gave the last time the files were the
        same: the same problems (recorded in `reader`) and a copy of the same function."""
        if not self.loaded:
            self._load()
        key = f"{kind}\0{plugin}\0{path}"
        entry = self.entries.get(key)
        if entry is not None:
            mark = reader.mark()
            try:
                if entry.fresh():
                    self.stats.hits += 1
                    return self._replay(reader, entry, path)
            except (KeyError, TypeError, ValueError):  # an entry that does not replay: parse again
                del reader.reported[mark:]
                reader.problems[:] = [p for p in reader.problems if p in reader.reported]
                reader.warnings[:] = [p for p in reader.warnings if p in reader.reported]
            del self.entries[key]
        self.stats.parsed += 1
        return self._record(reader, key, path, loader, plugin)

    def _replay(self, reader: FolderReader, entry: Entry, path: Path) -> KernelFunction:
        problems = [Problem(str(p), str(m), line if isinstance(line, int) else None,
                            "warning" if severity == "warning" else "error")
                    for p, m, line, severity in entry.problems] if entry.problems else []
        if entry.built is None:
            for problem in problems:
                reader.problem(problem.path, problem.message, problem.line, severity=problem.severity)
            raise Skip
        fn = entry.function
        if fn is None:
            fn = entry.function = build(entry.built)
        fn = _copy(fn)
        for problem in problems:
            reader.problem(problem.path, problem.message, problem.line, severity=problem.severity)
        where = entry.where
        if where is None:
            where = entry.where = (Path(entry.built["path"]), int(entry.built["offset"]))
        reader.templates[id(fn)] = where
        return fn

    def _record(self, reader: FolderReader, key: str, path: Path, loader: Loader, plugin: str) -> KernelFunction:
        written = time.time_ns()
        mark = reader.mark()
        reader.tracked, reader.built = [], None
        try:
            fn: KernelFunction | None = loader(reader, plugin, path)
        except Skip:
            fn = None
        finally:
            tracked, built = reader.tracked, reader.built
            reader.tracked, reader.built = None, None
        entry = _entry(path, tracked or [], reader.since(mark), built if fn is not None else None, written)
        if entry is not None and (fn is None or entry.built is not None):
            entry.function = _copy(fn) if fn is not None else None
            self.entries[key] = entry
            self.changed = True
        if fn is None:
            raise Skip
        return fn

    def save(self) -> None:
        if not (self.changed and self.write and self.path is not None):
            return
        self.changed = False
        data = {"format": FORMAT, "loader": loader_fingerprint(), "root": self.root,
                "entries": {key: entry.to_json() for key, entry in self.entries.items()}}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
            os.replace(temporary, self.path)
            self.stats.files_written += 1
        except OSError:  # a cache that cannot be written is no error
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def _entry(path: Path, tracked: list[tuple[str, bytes | None]], problems: list[Problem],
           built: dict[str, Any] | None, written: int) -> Entry | None:
    """An entry for what was read, or None when it cannot be kept (not plain data)."""
    files: list[list[Any]] = []
    if path.is_dir():  # an SK function folder: the files it holds matter
        files.append([str(path), _identity(str(path)), None])
    for name, data in tracked:
        files.append([name, _identity(name) if data is not None else None,
                      _digest(data) if data is not None else None])
    kept = [[p.path, p.message, p.line, p.severity] for p in problems]
    stored = None
    if built is not None:
        stored = _serialise(built)
        if stored is None:
            return None
    return Entry(files, kept, stored, written)


def _serialise(built: dict[str, Any]) -> dict[str, Any] | None:
    kwargs = dict(built["kwargs"])
    helpers = kwargs.pop("helpers", None)
    inputs = kwargs.pop("input_variables", None) or []
    from ..prompts import InputVariable

    variables = []
    for var in inputs:
        if not isinstance(var, InputVariable):
            return None
        item = {"name": var.name, "description": var.description, "required": var.required, "type": var.type,
                "trusted": var.trusted, "schema": var.schema}
        if var.default is not InputVariable.__dataclass_fields__["default"].default:
            item["default"] = var.default
        variables.append(item)
    data = {**built, "kwargs": kwargs, "inputs": variables, "helpers": _helpers_tag(helpers)}
    if helpers is not None and data["helpers"] is None:
        return None
    return data if _plain(data) else None


def _helpers_tag(helpers: Any) -> list[Any] | None:
    from .sk_helpers import HandlebarsHelpers, Jinja2Helpers, SKSyntaxHelpers

    if isinstance(helpers, HandlebarsHelpers):
        return ["handlebars", helpers.runtime]
    if isinstance(helpers, Jinja2Helpers):
        return ["jinja2"]
    if isinstance(helpers, SKSyntaxHelpers):
        return ["semantic-kernel"]
    return None


def _helpers_from(tag: Any) -> Any:
    if tag is None:
        return None
    from .sk_helpers import HandlebarsHelpers, Jinja2Helpers, SKSyntaxHelpers

    kind = tag[0]
    if kind == "handlebars":
        return HandlebarsHelpers(str(tag[1]))
    if kind == "jinja2":
        return Jinja2Helpers()
    if kind == "semantic-kernel":
        return SKSyntaxHelpers()
    raise ValueError(f"unknown helpers {kind!r}")


def build(built: dict[str, Any]) -> KernelFunction:
    """The prompt function an entry describes, its template restored without parsing."""
    from ..prompts import TEMPLATES, InputVariable, PromptFunction

    inputs = []
    for item in built["inputs"]:
        var = InputVariable(item["name"], description=item["description"], required=item["required"],
                            type=item["type"], trusted=item["trusted"], schema=item["schema"])
        if "default" in item:
            var.default = item["default"]
        inputs.append(var)
    compiled = TEMPLATES.restore(built["body"], built["path"], built["template"])
    return PromptFunction(built["body"], source=built["path"], input_variables=inputs,
                          helpers=_helpers_from(built["helpers"]), compiled=compiled, **built["kwargs"])


def _copy(fn: KernelFunction) -> KernelFunction:
    """A function of its own for each load: what a kernel changes (its plugin name when
    renamed, its description) never reaches another kernel."""
    clone = object.__new__(type(fn))
    clone.__dict__.update(fn.__dict__)
    settings = clone.__dict__.get("execution_settings")
    if settings:
        clone.__dict__["execution_settings"] = {key: dict(value) for key, value in settings.items()}
    return clone


_PROCESS = ParseCache()
"""This process's entries of folders loaded without a cache folder."""
_BY_DIRECTORY: dict[tuple[str, bool], ParseCache] = {}


def cache_for(directory: Path | None, *, write: bool = True) -> ParseCache:
    """The process's cache of a cache folder (None: entries kept in this process only)."""
    if directory is None:
        return _PROCESS
    key = (str(directory), write)
    found = _BY_DIRECTORY.get(key)
    if found is None:
        found = _BY_DIRECTORY[key] = ParseCache(directory, write=write)
    return found
