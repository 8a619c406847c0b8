"""Third-party plugins (entry-point group `orchestration_kernel`) are code: the allowlist
keeps unlisted ones from being imported at all, a broken one is reported by name and
isolated, and strict mode refuses to start."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import Kernel, KernelSettings
from kernel.errors import PluginError
from kernel.hookspecs import ENTRY_POINT_GROUP

GOOD = '''
from kernel import kernel_function
from kernel.hookspecs import hookimpl

@kernel_function
def ping() -> str:
    return "pong"

@hookimpl
def register_plugins(register):
    register([ping], name="audit_good")
'''
SNEAKY = '''
from pathlib import Path
Path({marker!r}).write_text("imported")
'''
BROKEN = '''
raise ImportError("audit_broken needs a missing dependency")
'''


def install(site: Path, name: str, source: str, *, entry_point: str | None = None) -> None:
    """A real (if tiny) installed distribution `name` whose module `name` is registered
    as entry point `entry_point` (default: its own name)."""
    (site / f"{name}.py").write_text(source, encoding="utf-8")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point or name} = {name}\n",
                                          encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    site = tmp_path / "site-packages"
    site.mkdir()
    marker = tmp_path / "sneaky-was-imported"
    install(site, "audit_good", GOOD)
    install(site, "audit_sneaky", SNEAKY.format(marker=str(marker)))
    install(site, "audit_broken", BROKEN)
    for var in ("KERNEL_PLUGIN_ALLOWLIST", "KERNEL_PLUGIN_AUTOLOAD", "KERNEL_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site, marker
    for name in ("audit_good", "audit_sneaky", "audit_broken"):
        sys.modules.pop(name, None)


def test_distributions_are_really_installed(site: tuple[Path, Path]) -> None:
    from importlib.metadata import entry_points, version

    assert version("audit_sneaky") == "1.0"
    assert {"audit_good", "audit_sneaky", "audit_broken"} <= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


async def test_plugin_outside_allowlist_is_never_imported(site: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, marker = site
    monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "audit_good")
    k = Kernel(settings=KernelSettings(), builtins=False)
    assert "audit_sneaky" not in sys.modules and "audit_broken" not in sys.modules
    assert not marker.exists()
    assert k.pm.get_plugin("audit-sneaky:audit_sneaky") is None
    assert (await k.invoke("audit_good.ping")).value == "pong"
    assert k.plugin_failures == []
    assert "audit-good:audit_good" in dict(k.pm.list_name_plugin())  # distribution:entry point


async def test_a_package_squatting_an_allowed_entry_point_name_is_not_loaded(
    site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allowlist names distributions: another package declaring an entry point called
    `audit_good` is not the allowed `audit_good` distribution and is never imported."""
    root, _ = site
    squat_marker = root / "squatter-was-imported"
    install(root, "squatter", SNEAKY.format(marker=str(squat_marker)), entry_point="audit_good")
    importlib.invalidate_caches()
    monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "audit_good")
    try:
        k = Kernel(settings=KernelSettings(), builtins=False)
        assert not squat_marker.exists() and "squatter" not in sys.modules
        assert (await k.invoke("audit_good.ping")).value == "pong"
    finally:
        sys.modules.pop("squatter", None)


def test_an_allowlist_entry_may_name_one_entry_point_of_a_distribution(
    site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, marker = site
    monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "Audit-Good:audit_good, audit_sneaky:other_name")
    k = Kernel(settings=KernelSettings(), builtins=False)
    assert "audit_good" in k.plugins  # distribution names compare normalized (PEP 503)
    assert not marker.exists()  # audit_sneaky is allowed only for an entry point it does not have


def test_autoload_off_imports_nothing(site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, marker = site
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    k = Kernel(settings=KernelSettings(), builtins=False)
    assert not marker.exists() and "audit_good" not in sys.modules
    assert "audit_good" not in k.plugins


async def test_plugin_raising_at_import_is_reported_and_isolated(site: tuple[Path, Path]) -> None:
    _, marker = site
    k = Kernel(settings=KernelSettings(), builtins=False)
    failures = {f.name: f.error for f in k.plugin_failures}
    assert "audit-broken:audit_broken" in failures
    error = failures["audit-broken:audit_broken"]
    assert "ImportError" in error and "missing dependency" in error
    assert marker.exists()  # no allowlist: every installed plugin is code that runs (documented)
    assert (await k.invoke("audit_good.ping")).value == "pong"


def test_strict_mode_raises_naming_the_plugin(site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_STRICT_PLUGINS", "true")
    with pytest.raises(PluginError, match="audit_broken"):
        Kernel(settings=KernelSettings(), builtins=False)
