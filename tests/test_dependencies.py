"""The installed dependencies meet the floors pyproject.toml declares, and the floors are
the ones the code relies on (jinja2 3.1.6 fixed the `|attr('format')` sandbox escape that
lets a template reach `os.environ` through a template function; the sandbox needs it)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"]] + [
    Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra
]

SECURITY_FLOORS = {"jinja2": "3.1.6"}
"""Floors the kernel's safety depends on: lowering one reopens a known hole."""


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_installed_version_meets_the_declared_floor(requirement: Requirement) -> None:
    try:
        installed = Version(version(requirement.name))
    except PackageNotFoundError:
        pytest.fail(f"{requirement.name} is declared in pyproject.toml but not installed")
    assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


def test_every_dependency_has_a_floor() -> None:
    for requirement in REQUIREMENTS:
        if requirement.name.startswith("gemma3-") or requirement.name.startswith("gt-"):
            continue  # model packages: any version carries the same model
        assert any(spec.operator in (">=", "==", "~=") for spec in requirement.specifier), requirement


@pytest.mark.parametrize(("name", "floor"), SECURITY_FLOORS.items())
def test_security_floors_are_declared_and_installed(name: str, floor: str) -> None:
    declared = [r for r in REQUIREMENTS if r.name.lower() == name]
    assert declared, f"{name} is not declared"
    for requirement in declared:
        assert not requirement.specifier.contains(Version(_below(floor)), prereleases=True), (
            f"pyproject.toml allows {name} below {floor}: {requirement}")
    assert Version(version(name)) >= Version(floor)


def _below(floor: str) -> str:
    major, minor, patch = (int(p) for p in floor.split("."))
    return f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{minor - 1}.99"


async def test_the_jinja2_floor_closes_the_attr_format_escape() -> None:
    """What 3.1.6 fixed: `str.format` reached through `|attr` bypassed the sandbox's format
    checks. With a kernel function in the template's globals, the escape is refused."""
    from kernel import Kernel, KernelSettings
    from kernel.errors import SandboxViolationError
    from kernel.prompts import TEMPLATES

    kernel = Kernel(KernelSettings(), load_entry_points=False)
    for source in ('{{ ("{0.__init__.__globals__}"|attr("format"))(math.add) }}',
                   '{{ ("{0.__class__}"|attr("format"))(1) }}'):
        with pytest.raises(SandboxViolationError, match="unsafe"):
            await TEMPLATES.get(source, "attack").render({}, kernel.template_functions())
