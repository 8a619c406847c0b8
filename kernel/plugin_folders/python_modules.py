"""Python modules in a plugin folder: each `*.py` (not starting with `_`) is imported from
its file under a unique module name, and its module-level `@kernel_function`s join the
plugin. Importing runs the module's code: a plugin folder is code, load only folders you
trust."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path

from ..errors import PluginError
from ..functions import KernelPlugin
from .reader import MAX_FILE_BYTES, FolderReader, Skip


def load_module(reader: FolderReader, plugin: str, path: Path) -> KernelPlugin:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        reader.problem(path, f"file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
        raise Skip
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

# -- YAML ------------------------------------------------------------------------
