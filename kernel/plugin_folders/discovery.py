"""Which folders are plugins, and which files are functions.

`load_plugins(root)` treats `root` as ONE plugin (named after the folder) when it
directly holds a function file (`*.prompt`, `*.yaml`/`*.yml`, a `*.py` module not
starting with `_`) or an SK function folder (a subfolder with `skprompt.txt` or
`config.json`). Otherwise every subfolder of `root` is a plugin. Names starting with `.`
or `_` (`__pycache__`, `_shared/`) are skipped; other files (README.md, schema files)
are ignored.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PluginLoadError
from ..functions import NAME_PATTERN, KernelFunction, KernelPlugin
from .prompt_format import PROMPT_SUFFIX, load_prompt_file
from .python_modules import load_module
from .reader import FolderReader, Skip
from .sk_format import SK_CONFIG_FILE, SK_PROMPT_FILE, YAML_SUFFIXES, load_sk_folder, load_sk_yaml

__all__ = ["load_plugins"]


def load_root(reader: FolderReader) -> list[KernelPlugin]:
    root = reader.root
    if not root.is_dir():
        reader.problem(root, "no such plugin folder" if not root.exists() else "not a folder")
        return []
    entries = reader.entries(root)
    if is_plugin_folder(entries):
        name = root.name or reader.root_real.name
        plugin = load_plugin(reader, name, root, entries)
        return [plugin] if plugin is not None else []
    plugins: list[KernelPlugin] = []
    for name, path, is_dir in entries:
        if not is_dir or name.startswith("_"):
            continue
        plugin = load_plugin(reader, name, path, reader.entries(path))
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def is_plugin_folder(entries: list[tuple[str, Path, bool]]) -> bool:
    for name, path, is_dir in entries:
        if name.startswith("_"):
            continue
        if is_dir:
            if (path / SK_PROMPT_FILE).exists() or (path / SK_CONFIG_FILE).exists():
                return True
        elif name.endswith((PROMPT_SUFFIX, ".py", *YAML_SUFFIXES)) or name == SK_PROMPT_FILE:
            return True
    return False


def load_plugin(
    reader: FolderReader, name: str, folder: Path, entries: list[tuple[str, Path, bool]]
) -> KernelPlugin | None:
    if not NAME_PATTERN.match(name):
        reader.problem(folder, f"invalid plugin name {name!r}: use letters, digits and underscores, "
                             "not starting with a digit")
        return None
    functions: dict[str, tuple[KernelFunction, Path]] = {}
    description = ""
    for entry_name, path, is_dir in entries:
        if entry_name.startswith("_"):
            continue
        try:
            if is_dir:
                add_function(reader, functions, load_sk_folder(reader, name, entry_name, path), path)
            elif entry_name.endswith(PROMPT_SUFFIX):
                add_function(reader, functions, load_prompt_file(reader, name, path), path)
            elif entry_name.endswith(YAML_SUFFIXES):
                add_function(reader, functions, load_sk_yaml(reader, name, path), path)
            elif entry_name.endswith(".py"):
                module_plugin = load_module(reader, name, path)
                description = description or module_plugin.description
                for fn in module_plugin:
                    add_function(reader, functions, fn, path)
            elif entry_name in (SK_PROMPT_FILE, SK_CONFIG_FILE):
                reader.problem(path, f"{entry_name} belongs in a function folder: "
                                   f"{name}/FUNCTION/{entry_name}")
        except Skip:
            continue
    plugin = KernelPlugin(name, description=description, source=str(folder))
    for fn, _ in functions.values():
        plugin.add(fn)
    return plugin


def add_function(
    reader: FolderReader, functions: dict[str, tuple[KernelFunction, Path]], fn: KernelFunction, path: Path
) -> None:
    previous = functions.get(fn.name)
    if previous is not None:
        reader.problem(path, f"duplicate function name {fn.fully_qualified_name!r}: also defined by {previous[1]}")
        return
    functions[fn.name] = (fn, path)


def load_plugins(root: Path) -> list[KernelPlugin]:
    """Load every plugin under `root` (see the module docstring for the layout rule).

    Raises `PluginLoadError` listing every problem found, with file and line.
    """
    reader = FolderReader(Path(root))
    plugins = load_root(reader)
    if reader.problems:
        raise PluginLoadError(reader.problems, root=str(root))
    return plugins
