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


def install(site: Path, name: str, source: str) -> None:
    (site / f"{name}.py").write_text(source, encoding="utf-8")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {name}\n", encoding="utf-8")


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
    assert k.pm.get_plugin("audit_sneaky") is None
    assert (await k.invoke("audit_good.ping")).value == "pong"
    assert k.plugin_failures == []


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
    assert "audit_broken" in failures
    assert "ImportError" in failures["audit_broken"] and "missing dependency" in failures["audit_broken"]
    assert marker.exists()  # no allowlist: every installed plugin is code that runs (documented)
    assert (await k.invoke("audit_good.ping")).value == "pong"


def test_strict_mode_raises_naming_the_plugin(site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_STRICT_PLUGINS", "true")
    with pytest.raises(PluginError, match="audit_broken"):
        Kernel(settings=KernelSettings(), builtins=False)
