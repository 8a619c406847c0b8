"""Which folders are plugins, and which files are functions.

`load_plugins(root)` treats `root` as ONE plugin (named after the folder) when it
directly holds a function file (`*.prompt`, `*.yaml`/`*.yml`, a `*.py` module not
starting with `_`) or an SK function folder (a subfolder with `skprompt.txt` or
`config.json`). Otherwise every subfolder of `root` is a plugin. Names starting with `.`
or `_` (`__pycache__`, `_shared/`) are skipped; other files (README.md, schema files)
are ignored; FIFOs, sockets and devices are reported, never opened.

Each function file is loaded on its own: a broken one is reported (`FunctionCheck`, its
problems) and left out, its neighbours load. Once the root is loaded, what templates call
and which settings they use is checked (`references`). `check_plugins` returns what loaded
and every problem (the lenient way, `Kernel.add_plugin` without `strict_plugins`);
`load_plugins` raises `PluginLoadError` on any error (the strict way).

`*.py` modules are imported (their code runs) unless `import_modules=False`: then each is
only read and parsed (`python_modules.scan_module`), and reported as a `ModuleInfo`.
`check_plugins` is the report `kernel plugins check` prints; it imports nothing by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PluginError, PluginLoadError, Problem
from ..functions import NAME_PATTERN, KernelFunction, KernelPlugin
from ..logging import LazyLogger
from .parse_cache import ParseCache, RootCache, cache_for
from .prompt_format import PROMPT_SUFFIX, load_prompt_file
from .python_modules import ModuleInfo, load_module, scan_module
from .reader import FolderReader, Skip
from .references import Known, check_function
from .sk_format import SK_CONFIG_FILE, SK_PROMPT_FILE, YAML_SUFFIXES, load_sk_folder, load_sk_yaml

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..settings import KernelSettings

__all__ = ["FolderCheck", "FunctionCheck", "check_plugins", "load_folder", "load_plugins", "record_problems"]

log = LazyLogger("kernel.plugins")


@dataclass
class FunctionCheck:
    """One function of a folder and its problems: `name` is `plugin.function` (for a
    Python module that did not load, `plugin/file.py`)."""

    name: str
    path: str
    problems: list[Problem] = field(default_factory=list)
    imported: bool = True
    """False for a function of a module only parsed (`import_modules=False`)."""

    @property
    def status(self) -> str:
        """`fails`, `loads with warnings`, `loads`, or `not imported` (a module's function
        read from its source)."""
        if any(p.severity == "error" for p in self.problems):
            return "fails"
        if self.problems:
            return "loads with warnings"
        return "loads" if self.imported else "not imported"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "path": self.path, "status": self.status,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class FolderCheck:
    """What `check_plugins` found in a plugin root: the plugins (the functions that load;
    without the functions of modules not imported), every problem (errors and warnings,
    in order), each function with its own problems, and each `*.py` module."""

    root: str
    plugins: list[KernelPlugin] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    modules: list[ModuleInfo] = field(default_factory=list)
    functions: list[FunctionCheck] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

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

    @property
    def other_problems(self) -> list[Problem]:
        """The problems that concern no function (the folder, a file in the wrong place)."""
        owned = {id(p) for check in self.functions for p in check.problems}
        return [p for p in self.problems if id(p) not in owned]


@dataclass
class _Unit:
    """What one entry of a plugin folder gave: its check(s) and the functions it added."""

    checks: list[FunctionCheck]
    plugin: str
    functions: list[KernelFunction]


@dataclass
class _Load:
    reader: FolderReader
    import_modules: bool
    cache: RootCache | None = None
    modules: list[ModuleInfo] = field(default_factory=list)
    units: list[_Unit] = field(default_factory=list)
    duplicates: dict[int, str] = field(default_factory=dict)  # id(problem) -> the duplicate's name


Functions = dict[str, tuple[KernelFunction | None, Path]]


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
    functions: Functions = {}
    description = ""
    for entry_name, path, is_dir in entries:
        if entry_name.startswith("_"):
            continue
        if not is_dir and entry_name in (SK_PROMPT_FILE, SK_CONFIG_FILE):
            reader.problem(path, f"{entry_name} belongs in a function folder: {name}/FUNCTION/{entry_name}")
            continue
        if not is_dir and not entry_name.endswith((PROMPT_SUFFIX, ".py", *YAML_SUFFIXES)):
            continue  # README.md, schema files: not functions
        mark = reader.mark()
        added: list[str] = []
        cache = load.cache
        try:
            if is_dir:
                def sk_folder(reader: FolderReader, plugin: str, path: Path,
                              function: str = entry_name) -> KernelFunction:
                    return load_sk_folder(reader, plugin, function, path)

                loaded = cache.load(reader, "sk", name, path, sk_folder) if cache else sk_folder(reader, name, path)
                added = add_name(load, functions, name, loaded, path)
            elif entry_name.endswith(PROMPT_SUFFIX):
                loaded = cache.load(reader, "prompt", name, path, load_prompt_file) if cache else \
                    load_prompt_file(reader, name, path)
                added = add_name(load, functions, name, loaded, path)
            elif entry_name.endswith(YAML_SUFFIXES):
                loaded = cache.load(reader, "yaml", name, path, load_sk_yaml) if cache else \
                    load_sk_yaml(reader, name, path)
                added = add_name(load, functions, name, loaded, path)
            else:
                doc, added = load_python(load, functions, name, path)
                description = description or doc
        except Skip:
            pass
        unit(load, functions, name, entry_name, path, is_dir, added, reader.since(mark))
    plugin = KernelPlugin(name, description=description, source=str(folder))
    for fn, _ in functions.values():
        if fn is not None:
            plugin.add(fn)
    return plugin


def unit(load: _Load, functions: Functions, plugin: str, entry_name: str, path: Path, is_dir: bool,
         added: list[str], problems: list[Problem]) -> None:
    """Record what one folder entry gave; an entry with an error loads nothing."""
    module = not is_dir and entry_name.endswith(".py")
    checks = [FunctionCheck(f"{plugin}.{load.duplicates[id(p)]}", str(path), [p])
              for p in problems if id(p) in load.duplicates]
    shared = [p for p in problems if id(p) not in load.duplicates]
    if module:
        imported = load.import_modules
        checks += [FunctionCheck(f"{plugin}.{n}", str(path), list(shared), imported) for n in added]
        if not added and (shared or not checks):
            checks.append(FunctionCheck(f"{plugin}/{entry_name}", str(path), shared, imported))
    elif added or not checks:
        stem = entry_name if is_dir else entry_name.rsplit(".", 1)[0]
        checks.append(FunctionCheck(f"{plugin}.{added[0] if added else stem}", str(path), shared))
    else:
        checks[0].problems[:0] = shared  # the entry's only function is a duplicate
    loaded: list[KernelFunction] = []
    if any(p.severity == "error" for p in shared):
        for fn_name in added:
            functions.pop(fn_name, None)
    else:
        loaded = [fn for n in added if (fn := functions[n][0]) is not None]
    load.units.append(_Unit(checks, plugin, loaded))


def load_python(load: _Load, functions: Functions, plugin: str, path: Path) -> tuple[str, list[str]]:
    """Import a module (or, without `import_modules`, only read its source); its functions
    join `functions`. Returns the module's description and the names added."""
    added: list[str] = []
    if not load.import_modules:
        info, description = scan_module(load.reader, plugin, path)
        for fn_name in info.functions:
            added += add_entry(load, functions, plugin, fn_name, None, path)
        load.modules.append(info)
        return description, added
    module_plugin = load_module(load.reader, plugin, path)
    for fn in module_plugin:
        added += add_name(load, functions, plugin, fn, path)
    load.modules.append(ModuleInfo(str(path), plugin, tuple(sorted(fn.name for fn in module_plugin)), imported=True))
    return module_plugin.description, added


def add_name(load: _Load, functions: Functions, plugin: str, fn: KernelFunction, path: Path) -> list[str]:
    return add_entry(load, functions, plugin, fn.name, fn, path)


def add_entry(load: _Load, functions: Functions, plugin: str, name: str, fn: KernelFunction | None,
              path: Path) -> list[str]:
    """`[name]` when added; a name already taken is a problem (and `[]`)."""
    previous = functions.get(name)
    if previous is not None:
        load.reader.problem(path, f"duplicate function name {f'{plugin}.{name}'!r}: also defined by {previous[1]}")
        load.duplicates[id(load.reader.reported[-1])] = name
        return []
    functions[name] = (fn, path)
    return [name]


def check_references(load: _Load, plugins: list[KernelPlugin], known: Known) -> list[Problem]:
    """Check what each loaded prompt function refers to; one with an error is taken out."""
    from ..prompts import PromptFunction

    names = [check.name for u in load.units for check in u.checks if "/" not in check.name]
    known = known.with_functions(names)
    by_name = {plugin.name: plugin for plugin in plugins}
    found: list[Problem] = []
    for u in load.units:
        for fn in u.functions:
            origin = load.reader.templates.get(id(fn))
            if not isinstance(fn, PromptFunction) or origin is None:
                continue
            problems = check_function(fn, known, *origin)
            if not problems:
                continue
            found += problems
            check = next(c for c in u.checks if c.name == fn.fully_qualified_name)
            check.problems += problems
            if any(p.severity == "error" for p in problems):
                by_name[u.plugin].functions.pop(fn.name, None)
    return found


def check_plugins(root: Path, *, import_modules: bool = False, known: Known | None = None,
                  cache: ParseCache | None = None) -> FolderCheck:
    """Every plugin and problem under `root`, without raising: the functions that load
    (the others are left out), every problem, and each function's own. By default no
    `*.py` module is imported (nothing in the folder runs): each is parsed and listed in
    `modules`, and its functions are not in `plugins`. `import_modules=True` checks as
    `load_plugins` loads. `known`: the plugins and settings to check templates against
    (default: the folder's own functions). Prompt files that did not change since they
    were last parsed are not parsed again (`parse_cache`: `cache`, default this process's
    entries only)."""
    cache = cache if cache is not None else cache_for(None)
    root_cache = cache.root(Path(root))
    load = _Load(FolderReader(Path(root)), import_modules, root_cache)
    plugins = load_root(load)
    root_cache.save()
    problems = list(load.reader.reported)
    problems += check_references(load, plugins, known or Known())
    checks = [check for u in load.units for check in u.checks]
    return FolderCheck(str(root), plugins, problems, load.modules, checks)


def load_plugins(root: Path, *, import_modules: bool = True, cache: ParseCache | None = None) -> list[KernelPlugin]:
    """Load every plugin under `root` (see the module docstring for the layout rule).

    `import_modules=False` imports no `*.py` module (their code does not run): they are
    parsed for syntax errors, and their functions are left out.
    Raises `PluginLoadError` listing every error found, with file and line; warnings
    (what loads as Semantic Kernel loads it) are logged.
    """
    found = check_plugins(root, import_modules=import_modules, cache=cache)
    if found.errors:
        raise PluginLoadError(found.errors, root=str(root))
    for problem in found.warnings:
        log.warning("plugin_problem", problem=str(problem))
    return found.plugins


# -- a folder added to a kernel -------------------------------------------------------


def parse_cache_of(settings: KernelSettings) -> ParseCache:
    """The parse cache a kernel's settings ask for: `cache_dir/parse-cache` when
    `parse_cache` is on (the default), else this process's entries only."""
    if not getattr(settings, "parse_cache", True):
        return cache_for(None)
    return cache_for(Path(settings.cache_dir) / "parse-cache")


def record_problems(kernel: Kernel, problems: list[Problem]) -> None:
    """Keep `problems` in `kernel.plugin_problems`, each logged as a warning."""
    for problem in problems:
        kernel.plugin_problems.append(problem)
        log.warning("plugin_problem", problem=str(problem))


def load_folder(kernel: Kernel, folder: str, name: str | None,
                description: str | None) -> tuple[list[KernelPlugin], list[Problem]]:
    """The plugins of `folder` to add to `kernel` (checked against its plugins), and the
    problems to record once they are added (`record_problems`). Under `kernel.strict` any
    error raises `PluginLoadError`; otherwise what is valid loads, and the problems say
    what did not. A folder where nothing loads raises."""
    found = check_plugins(Path(folder), import_modules=True, known=Known.of(kernel),
                          cache=parse_cache_of(kernel.settings))
    errors = found.errors
    if errors and kernel.strict:
        raise PluginLoadError(errors, root=folder)
    items = [plugin for plugin in found.plugins if plugin.functions] if errors else found.plugins
    if not items:
        if errors:
            raise PluginLoadError(errors, root=folder)
        raise PluginError(f"{folder}: no plugins found in this folder")
    if name and len(items) > 1:
        raise PluginError(
            f"{folder}: holds {len(items)} plugins ({', '.join(i.name for i in items)}); "
            "name= only renames a folder that is one plugin"
        )
    if name and name != items[0].name:
        items = [items[0].renamed(name)]
    if description is not None and len(items) == 1:
        items[0].description = description
    return items, found.problems
