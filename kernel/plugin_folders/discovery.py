"""Which folders are plugins, and which files are functions.

`load_plugins(root)` treats `root` as ONE plugin (named after the folder) when it
directly holds a function file (`*.prompt`, `*.yaml`/`*.yml`, a `*.py` module not
starting with `_`) or an SK function folder (a subfolder with `skprompt.txt` or
`config.json`). Otherwise every subfolder of `root` is a plugin. Names starting with `.`
or `_` (`__pycache__`, `_shared/`) are skipped; other files (README.md, schema files)
are ignored; FIFOs, sockets and devices are reported, never opened.

`*.py` modules are imported (their code runs) unless `import_modules=False`: then each is
only read and parsed (`python_modules.scan_module`), and reported as a `ModuleInfo`.
`check_plugins` is the report `kernel plugins check` prints; it imports nothing by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PluginLoadError, Problem
from ..functions import NAME_PATTERN, KernelFunction, KernelPlugin
from .prompt_format import PROMPT_SUFFIX, load_prompt_file
from .python_modules import ModuleInfo, load_module, scan_module
from .reader import FolderReader, Skip
from .sk_format import SK_CONFIG_FILE, SK_PROMPT_FILE, YAML_SUFFIXES, load_sk_folder, load_sk_yaml

__all__ = ["FolderCheck", "check_plugins", "load_plugins"]


@dataclass
class FolderCheck:
    """What `check_plugins` found in a plugin root: the plugins (without the functions of
    modules not imported), every problem, and each `*.py` module with its functions."""

    root: str
    plugins: list[KernelPlugin] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    modules: list[ModuleInfo] = field(default_factory=list)

    @property
    def function_names(self) -> list[str]:
        """Every function's `plugin.function` name, those of modules not imported included
        (as their source declares them)."""
        names = [fn.fully_qualified_name for plugin in self.plugins for fn in plugin]
        names += [f"{m.plugin}.{fn}" for m in self.modules if not m.imported for fn in m.functions]
        return sorted(names)

    @property
    def not_imported(self) -> list[ModuleInfo]:
        return [m for m in self.modules if not m.imported]


@dataclass
class _Load:
    reader: FolderReader
    import_modules: bool
    modules: list[ModuleInfo] = field(default_factory=list)


def load_root(load: _Load) -> list[KernelPlugin]:
    reader = load.reader
    root = reader.root
    if not root.is_dir():
        reader.problem(root, "no such plugin folder" if not root.exists() else "not a folder")
        return []
    entries = reader.entries(root)
    if is_plugin_folder(entries):
        name = root.name or reader.root_real.name
        plugin = load_plugin(load, name, root, entries)
        return [plugin] if plugin is not None else []
    plugins: list[KernelPlugin] = []
    for name, path, is_dir in entries:
        if not is_dir or name.startswith("_"):
            continue
        plugin = load_plugin(load, name, path, reader.entries(path))
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


def load_plugin(load: _Load, name: str, folder: Path, entries: list[tuple[str, Path, bool]]) -> KernelPlugin | None:
    reader = load.reader
    if not NAME_PATTERN.match(name):
        reader.problem(folder, f"invalid plugin name {name!r}: use letters, digits and underscores, "
                             "not starting with a digit")
        return None
    functions: dict[str, tuple[KernelFunction | None, Path]] = {}
    description = ""
    for entry_name, path, is_dir in entries:
        if entry_name.startswith("_"):
            continue
        try:
            if is_dir:
                add_function(reader, functions, name, load_sk_folder(reader, name, entry_name, path), path)
            elif entry_name.endswith(PROMPT_SUFFIX):
                add_function(reader, functions, name, load_prompt_file(reader, name, path), path)
            elif entry_name.endswith(YAML_SUFFIXES):
                add_function(reader, functions, name, load_sk_yaml(reader, name, path), path)
            elif entry_name.endswith(".py"):
                doc = load_python(load, functions, name, path)
                description = description or doc
            elif entry_name in (SK_PROMPT_FILE, SK_CONFIG_FILE):
                reader.problem(path, f"{entry_name} belongs in a function folder: "
                                   f"{name}/FUNCTION/{entry_name}")
        except Skip:
            continue
    plugin = KernelPlugin(name, description=description, source=str(folder))
    for fn, _ in functions.values():
        if fn is not None:
            plugin.add(fn)
    return plugin


def load_python(load: _Load, functions: dict[str, tuple[KernelFunction | None, Path]], plugin: str,
                path: Path) -> str:
    """Import a module (or, without `import_modules`, only read its source); its functions
    join `functions`. Returns the module's description."""
    if not load.import_modules:
        info, description = scan_module(load.reader, plugin, path)
        for fn_name in info.functions:
            add_name(load.reader, functions, plugin, fn_name, None, path)
        load.modules.append(info)
        return description
    module_plugin = load_module(load.reader, plugin, path)
    for fn in module_plugin:
        add_function(load.reader, functions, plugin, fn, path)
    load.modules.append(ModuleInfo(str(path), plugin, tuple(sorted(fn.name for fn in module_plugin)), imported=True))
    return module_plugin.description


def add_function(reader: FolderReader, functions: dict[str, tuple[KernelFunction | None, Path]], plugin: str,
                 fn: KernelFunction, path: Path) -> None:
    add_name(reader, functions, plugin, fn.name, fn, path)


def add_name(reader: FolderReader, functions: dict[str, tuple[KernelFunction | None, Path]], plugin: str,
             name: str, fn: KernelFunction | None, path: Path) -> None:
    previous = functions.get(name)
    if previous is not None:
        reader.problem(path, f"duplicate function name {f'{plugin}.{name}'!r}: also defined by {previous[1]}")
        return
    functions[name] = (fn, path)


def check_plugins(root: Path, *, import_modules: bool = False) -> FolderCheck:
    """Every plugin and problem under `root`, without raising. By default no `*.py` module
    is imported (nothing in the folder runs): each is parsed and listed in `modules`, and
    its functions are not in `plugins`. `import_modules=True` checks as `load_plugins` loads."""
    load = _Load(FolderReader(Path(root)), import_modules)
    plugins = load_root(load)
    return FolderCheck(str(root), plugins, list(load.reader.problems), load.modules)


def load_plugins(root: Path, *, import_modules: bool = True) -> list[KernelPlugin]:
    """Load every plugin under `root` (see the module docstring for the layout rule).

    `import_modules=False` imports no `*.py` module (their code does not run): they are
    parsed for syntax errors, and their functions are left out.
    Raises `PluginLoadError` listing every problem found, with file and line.
    """
    found = check_plugins(root, import_modules=import_modules)
    if found.problems:
        raise PluginLoadError(found.problems, root=str(root))
    return found.plugins
