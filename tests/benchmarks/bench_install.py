"""Install size: the distributions `pip install orchestration-kernel` (no extras) brings, and
their size on disk, measured in the running environment from the installed distributions'
file lists (what pip would install for the same versions; `__pycache__` included as
installed).

    python tests/benchmarks/bench_install.py     # the table, one row per direct dependency

Each direct dependency's row is the size of what it adds that no other core dependency
needs (its exclusive closure): what leaving it out of the core would save.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT = "orchestration-kernel"
MB = 1_000_000


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _is_core(requirement: str) -> bool:
    """A requirement that holds without extras (markers of the running platform aside)."""
    if ";" not in requirement:
        return True
    marker = requirement.split(";", 1)[1]
    if "extra" in marker:
        return False
    from packaging.markers import Marker

    return bool(Marker(marker).evaluate())


def requires(distribution: str) -> list[str]:
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return []
    return sorted({_name(r) for r in dist.requires or [] if _is_core(r)})


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(requires(name))
    return seen


def size_of(distribution: str) -> int:
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return 0
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def _project() -> dict[str, Any]:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project: dict[str, Any] = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def core_requirements() -> list[str]:
    """The core dependencies pyproject.toml declares (the installed metadata of an editable
    install may be older)."""
    return sorted({_name(r) for r in _project()["dependencies"] if _is_core(r)})


def extra_requirements(extra: str) -> list[str]:
    return sorted({_name(r) for r in _project()["optional-dependencies"][extra]})


def run() -> list[tuple[Any, ...]]:
    direct = core_requirements()
    everything = closure(direct)
    sizes = {name: size_of(name) for name in everything}
    rows: list[tuple[Any, ...]] = [
        (f"core install: {len(everything)} distributions (without {PROJECT} itself)",
         sum(sizes.values()) / MB, None, "MB"),
    ]
    for dep in sorted(direct, key=lambda d: -sum(sizes[n] for n in closure([d]) - closure(
            [o for o in direct if o != d]))):
        exclusive = closure([dep]) - closure([o for o in direct if o != dep])
        rows.append((f"  {dep}: {len(exclusive)} distributions only it needs",
                     sum(sizes[n] for n in exclusive) / MB, None, "MB"))
    core = closure(direct)
    for extra in ("openai", "anthropic", "memory"):
        added = closure([*direct, *extra_requirements(extra)]) - core
        rows.append((f"  + [{extra}] extra: {len(added)} more distributions",
                     sum(size_of(n) for n in added) / MB, None, "MB"))
    return rows


if __name__ == "__main__":
    for label, value, _, unit in run():
        print(f"{value:8.1f} {unit}  {label}")
