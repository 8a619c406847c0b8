"""Plugins through pluggy hooks: built-ins as default plugins, third-party distributions
found through the `orchestration_kernel` entry-point group, allowlist, autoload switch,
failure isolation and strict mode."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction
from kernel.errors import PluginError
from kernel.hookspecs import ENTRY_POINT_GROUP, hookimpl
from kernel.kernel import BUILTIN_PLUGINS

SOURCES = Path(__file__).parent / "data" / "thirdparty"
DISTRIBUTIONS = ("thirdparty_ok", "thirdparty_badimport", "thirdparty_badhook")


def _install(site: Path, module: str) -> None:
    """Lay out an installed distribution (module + .dist-info) the way pip does."""
    shutil.copy(SOURCES / f"{module}.py", site / f"{module}.py")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{module} = {module}\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")


@pytest.fixture
def thirdparty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site-packages"
    site.mkdir()
    for module in DISTRIBUTIONS:
        _install(site, module)
    for var in ("KERNEL_PLUGIN_ALLOWLIST", "KERNEL_PLUGIN_AUTOLOAD", "KERNEL_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for module in DISTRIBUTIONS:
        sys.modules.pop(module, None)


def entry_point_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def failures(k: Kernel) -> dict[str, str]:
    return {f.name: f.error for f in k.plugin_failures}


class TestThirdParty:
    def test_fixture_is_a_real_installed_distribution(self, thirdparty: Path) -> None:
        from importlib.metadata import version

        assert version("thirdparty-ok") == "1.0"
        assert set(DISTRIBUTIONS) <= entry_point_names()

    async def test_autoload_registers_connector_plugin_and_filter(self, thirdparty: Path) -> None:
        k = Kernel(settings=KernelSettings(), builtins=False)
        assert k.pm.get_plugin("thirdparty-ok:thirdparty_ok") is not None
        connector = k.services.connectors[("chat", "thirdparty-echo")]
        assert connector.source == "thirdparty-ok:thirdparty_ok"
        result = await k.invoke("shout.shout", text="hi")
        assert result.value == "HI!"
        assert "shout.shout" in sys.modules["thirdparty_ok"].seen  # its function filter ran

    async def test_thirdparty_connector_serves_a_configured_service(
        self, thirdparty: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("KERNEL_SERVICES__ECHO__PROVIDER", "thirdparty-echo")
        monkeypatch.setenv("KERNEL_DEFAULT_CHAT", "echo")
        monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "thirdparty_ok")
        k = Kernel(settings=KernelSettings(), builtins=False)
        k.add_function(PromptFunction.from_template("abc {{ x }}", name="t", plugin="p"))
        assert (await k.invoke("p.t", x="d")).value == "d cba"

    def test_broken_plugins_are_reported_by_name_and_kernel_starts(self, thirdparty: Path) -> None:
        k = Kernel(settings=KernelSettings(), builtins=False)
        found = failures(k)
        assert "missing widget" in found["thirdparty-badimport:thirdparty_badimport"]
        assert "RuntimeError" in found["thirdparty-badimport:thirdparty_badimport"]
        assert "hook exploded" in found["thirdparty-badhook:thirdparty_badhook"]
        assert "thirdparty-ok:thirdparty_ok" not in found
        assert ("chat", "thirdparty-echo") in k.services.connectors
        assert any("thirdparty_badimport" in str(f) for f in k.plugin_failures)

    def test_allowlist_from_environment(self, thirdparty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "thirdparty_ok, someone_else")
        k = Kernel(settings=KernelSettings(), builtins=False)
        assert k.pm.get_plugin("thirdparty-ok:thirdparty_ok") is not None
        assert k.pm.get_plugin("thirdparty-badhook:thirdparty_badhook") is None
        assert k.plugin_failures == []
        assert "thirdparty_badimport" not in sys.modules

    def test_autoload_off(self, thirdparty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
        k = Kernel(settings=KernelSettings(), builtins=False)
        assert k.pm.get_plugin("thirdparty-ok:thirdparty_ok") is None
        assert ("chat", "thirdparty-echo") not in k.services.connectors
        assert k.plugin_failures == []
        k2 = Kernel(settings=KernelSettings(plugin_autoload=True), builtins=False, load_entry_points=False)
        assert k2.pm.get_plugin("thirdparty-ok:thirdparty_ok") is None

    @pytest.mark.parametrize("bad", ["thirdparty_badimport", "thirdparty_badhook"])
    def test_strict_mode_raises_naming_the_plugin(self, thirdparty: Path, bad: str) -> None:
        settings = KernelSettings(plugin_allowlist=f"thirdparty_ok,{bad}")
        with pytest.raises(PluginError, match=bad):
            Kernel(settings=settings, builtins=False, strict=True)

    def test_strict_mode_from_environment(self, thirdparty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KERNEL_STRICT_PLUGINS", "true")
        with pytest.raises(PluginError, match="thirdparty_bad"):
            Kernel(settings=KernelSettings(), builtins=False)


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return Kernel(settings=KernelSettings(), load_entry_points=False)


class TestBuiltins:
    def test_each_kernel_has_its_own_plugin_manager(self, kernel: Kernel) -> None:
        other = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
        assert other.pm is not kernel.pm
        assert other.pm.get_plugins() == set()

    def test_builtin_modules_are_pluggy_plugins(self, kernel: Kernel) -> None:
        available = [name for name in BUILTIN_PLUGINS if importlib.util.find_spec(name) is not None]
        assert "connectors.sqlite_store" in available
        registered = {kernel.pm.get_name(p) for p in kernel.pm.get_plugins()}
        for name in available:
            if name not in failures(kernel):
                assert name in registered
                assert isinstance(kernel.pm.get_plugin(name), ModuleType)
        missing = [name for name in BUILTIN_PLUGINS if name not in available]
        for name in missing:  # written by other helpers later: reported, not fatal
            assert name in failures(kernel)

    def test_builtin_connectors_registered_through_hooks(self, kernel: Kernel) -> None:
        connectors = kernel.services.connectors
        assert connectors[("memory", "sqlite")].source == "connectors.sqlite_store"
        if importlib.util.find_spec("connectors.openai_models") is not None:
            assert connectors[("chat", "openai")].source == "connectors.openai_models"
        if importlib.util.find_spec("connectors.anthropic_models") is not None:
            assert connectors[("chat", "anthropic")].source == "connectors.anthropic_models"
        if importlib.util.find_spec("connectors.llamacpp") is not None:
            assert ("chat", "local") in connectors

    def test_standard_plugins_can_be_switched_off(self) -> None:
        on = Kernel(settings=KernelSettings(), load_entry_points=False)
        off = Kernel(settings=KernelSettings(standard_plugins=False), load_entry_points=False)
        assert "plugins.standard" in {on.pm.get_name(p) for p in on.pm.get_plugins()}
        assert "plugins.standard" not in {off.pm.get_name(p) for p in off.pm.get_plugins()}
        assert on.plugins and not off.plugins

    async def test_register_after_start(self) -> None:
        class Late:
            @hookimpl
            def register_connectors(self, register: Any) -> None:
                register("memory", "late-store", lambda *a: object())

            @hookimpl
            def register_plugins(self, register: Any) -> None:
                from kernel import kernel_function

                @kernel_function
                def ping() -> str:
                    return "pong"

                register([ping], name="late")

        k = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
        k.register(Late(), name="late")
        assert k.services.connectors[("memory", "late-store")].source == "late"
        assert (await k.invoke("late.ping")).value == "pong"

    def test_plugins_argument_and_kernel_configured_hook(self) -> None:
        seen: list[Kernel] = []

        class Watcher:
            @hookimpl
            def kernel_configured(self, kernel: Kernel) -> None:
                seen.append(kernel)

        k = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False, plugins=[Watcher()])
        assert seen == [k]
