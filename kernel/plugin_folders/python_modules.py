"""Python modules in a plugin folder: each `*.py` (not starting with `_`) is imported from
its file under a unique module name, and its module-level `@kernel_function`s join the
plugin. Importing runs the module's code: a plugin folder is code, load only folders you
trust.

`scan_module` is the other way, for a folder not trusted yet (`kernel plugins check`):
the source is read and parsed (`ast.parse` executes nothing), syntax errors are reported
at their line, and the module-level functions decorated `@kernel_function` are named,
without importing anything.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..errors import PluginError
from ..functions import NAME_PATTERN, KernelPlugin
from .reader import MAX_FILE_BYTES, FolderReader, Skip, open_regular

DECORATOR = "kernel_function"


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """A `*.py` module of a plugin folder: the plugin it belongs to, the names of its
    kernel functions and whether it was imported. Not imported, the names are those
    found by reading the source (`@kernel_function` on module-level functions); none of
    its code ran."""

    path: str
    plugin: str
    functions: tuple[str, ...]  # sorted
    imported: bool

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "plugin": self.plugin, "imported": self.imported,
                "functions": list(self.functions)}


def _check_regular(reader: FolderReader, path: Path) -> None:
    """A regular file of at most MAX_FILE_BYTES (a FIFO is never opened: import would wait)."""
    try:
        fd, status = open_regular(path)
    except ValueError as exc:
        reader.problem(path, f"not a regular file ({exc}); skipped")
        raise Skip from None
    except OSError as exc:
        reader.problem(path, f"cannot read file: {exc.strerror or exc}")
        raise Skip from None
    os.close(fd)
    if status.st_size > MAX_FILE_BYTES:
        reader.problem(path, f"file is too large ({status.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
        raise Skip


def load_module(reader: FolderReader, plugin: str, path: Path) -> KernelPlugin:
    _check_regular(reader, path)
    digest = hashlib.sha1(str(Path(os.path.realpath(path))).encode(), usedforsecurity=False).hexdigest()[:12]
    module_name = f"_kernel_plugin_{plugin}_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        reader.problem(path, "cannot import this file as a Python module")
        raise Skip
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        reader.problem(path, f"syntax error: {exc.msg}", exc.lineno)
        raise Skip from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        line = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == str(path):
                line = frame.lineno
        reader.problem(path, f"import failed: {type(exc).__name__}: {exc}", line)
        raise Skip from None
    try:
        return KernelPlugin.from_object(module, name=plugin)
    except PluginError as exc:
        reader.problem(path, str(exc))
        raise Skip from None


def scan_module(reader: FolderReader, plugin: str, path: Path) -> tuple[ModuleInfo, str]:
    """(what the module would define, its description), from its source alone: nothing is
    imported or executed. Syntax errors are problems at their line."""
    source = reader.read_bytes(path)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        reader.problem(path, f"syntax error: {exc.msg}", exc.lineno)
        raise Skip from None
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. nested too deeply to parse
        reader.problem(path, f"cannot parse this file as Python: {type(exc).__name__}: {exc}")
        raise Skip from None
    doc = ast.get_docstring(tree, clean=False) or ""
    decorators = _decorator_names(tree)
    found: dict[str, None] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("__"):
            continue
        for decorator in node.decorator_list:
            name = _kernel_function_name(decorator, decorators, node.name)
            if name is None:
                continue
            if not NAME_PATTERN.match(name):
                reader.problem(path, f"invalid function name {name!r}: use letters, digits and underscores, "
                                     "not starting with a digit", decorator.lineno)
                break
            found.pop(name, None)  # a later definition replaces an earlier one
            found[name] = None
            break
    info = ModuleInfo(str(path), plugin, tuple(sorted(found)), imported=False)
    return info, doc.strip().split("\n\n")[0]


def _decorator_names(tree: ast.Module) -> frozenset[str]:
    """The names `kernel_function` is known by in this module (`import ... as` included)."""
    names = {DECORATOR}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname for alias in node.names if alias.name == DECORATOR and alias.asname)
    return frozenset(names)


def _kernel_function_name(decorator: ast.expr, names: frozenset[str], default: str) -> str | None:
    """The function name a `@kernel_function` / `@kernel_function(name=...)` decorator
    gives, or None when the decorator is something else."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Name):
        if target.id not in names:
            return None
    elif not (isinstance(target, ast.Attribute) and target.attr == DECORATOR):
        return None
    if isinstance(decorator, ast.Call):
        for keyword in decorator.keywords:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) \
                    and isinstance(keyword.value.value, str) and keyword.value.value:
                return keyword.value.value
    return default

