"""The layout of ARCHITECTURE.md, held against the code: no runtime import cycles, the
centre imports its wings only lazily, a wing imports another wing only through that
wing's package (never its internals), connectors import only the public contract, and
no module grows past the size a reader can hold."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "kernel"
WINGS = ("batch", "chat", "cli", "events", "mcp", "memory", "planning", "plugin_folders", "prompts", "serve",
         "services")
CONNECTOR_CONTRACT = {"kernel", "kernel.hookspecs", "kernel.contents", "kernel.errors", "kernel.settings",
                      "kernel.logging", "kernel.memory", "kernel.services"}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """Absolute names an import statement reaches (the module, and `from x import y`
    submodules as candidates)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def imports(path: Path, *, runtime_top_level: bool) -> Iterator[tuple[str, int]]:
    """(imported module, line) of a file: with `runtime_top_level`, only the imports that
    run when the module is imported (not under TYPE_CHECKING, not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module_name(path)
    is_package = path.name == "__init__.py"

    def visit(nodes: list[ast.stmt]) -> Iterator[tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                for name in resolve(module, node, is_package):
                    yield name, node.lineno
            elif isinstance(node, ast.If):
                test = node.test
                type_only = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
                if not (runtime_top_level and type_only):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try):
                yield from visit(node.body)
                for handler in node.handlers:
                    yield from visit(handler.body)
            elif not runtime_top_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from visit(node.body)

    if runtime_top_level:
        yield from visit(tree.body)
    else:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                for name in resolve(module, node, is_package):
                    yield name, node.lineno


def kernel_files() -> list[Path]:
    return sorted(KERNEL.rglob("*.py"))


def known_modules() -> set[str]:
    return {module_name(p) for p in kernel_files()} | {module_name(p) for p in (ROOT / "connectors").glob("*.py")}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "kernel" and parts[1] in WINGS else None


def test_no_runtime_import_cycles() -> None:
    known = known_modules()
    graph: dict[str, set[str]] = {}
    for path in kernel_files():
        source = module_name(path)
        graph[source] = {name for name, _ in imports(path, runtime_top_level=True) if name in known} - {source}
    # importing `kernel.x.y` runs the package `kernel.x` first
    for targets in graph.values():
        for target in list(targets):
            parts = target.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in known)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph or target == node or node.startswith(target + "."):
                continue  # a package's own submodules importing it: not a cycle at run time
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target):], target]
                raise AssertionError("runtime import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_centre_imports_wings_only_lazily() -> None:
    problems = []
    for path in sorted(KERNEL.glob("*.py")):
        for name, line in imports(path, runtime_top_level=True):
            if wing_of(name):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name} at import time")
    assert not problems, "\n".join(problems)


def test_wings_reach_other_wings_only_through_their_package() -> None:
    known = known_modules()
    problems = []
    for path in kernel_files():
        own = wing_of(module_name(path))
        if own is None:
            continue
        for name, line in imports(path, runtime_top_level=False):
            other = wing_of(name)
            if other and other != own and name != f"kernel.{other}" and name in known:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}, an internal of kernel.{other}")
    assert not problems, "\n".join(problems)


def test_connectors_import_only_the_public_contract() -> None:
    problems = []
    for path in sorted((ROOT / "connectors").glob("*.py")):
        for name, line in imports(path, runtime_top_level=False):
            if name.split(".")[0] != "kernel":
                continue
            module = name if name in known_modules() else name.rsplit(".", 1)[0]
            if module not in CONNECTOR_CONTRACT:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not problems, "\n".join(problems)


def test_private_modules_stay_private() -> None:
    """A module whose name starts with `_` is used only inside its own package."""
    problems = []
    for path in [*kernel_files(), *(ROOT / "connectors").glob("*.py"), *(ROOT / "plugins").glob("*.py")]:
        source = module_name(path)
        for name, line in imports(path, runtime_top_level=False):
            parts = name.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])
            if source != owner and not source.startswith(owner + "."):
                problems.append(f"{path.relative_to(ROOT)}:{line} imports private {name}")
    assert not problems, "\n".join(problems)


def test_modules_stay_readable() -> None:
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in [*kernel_files(), *(ROOT / "connectors").glob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "split these modules:\n" + "\n".join(long)


def test_the_kernel_folder_holds_the_centre_and_its_wings() -> None:
    centre = {p.stem for p in KERNEL.glob("*.py") if not p.stem.startswith("_")}
    assert centre == {"kernel", "functions", "middleware", "contents", "errors", "settings", "logging",
                      "hookspecs", "testing"}
    folders = {p.name for p in KERNEL.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders == set(WINGS)
