"""The plugin contract (kernel/hookspecs.py; ARCHITECTURE.md, "The plugin contract") as a
third party meets it:

- a hook implementation whose name is not a hook (`register_connector`) is a failure that
  names the plugin and suggests the hook it meant;
- a plugin's registrations are all or nothing, at start-up and through `Kernel.register()`,
  whether it fails in a registration hook or in `kernel_configured`;
- plugins are registered under readable names;
- a package adds `kernel` commands through its entry point (`register_commands`);
- a plugin type-checks against the typed contract with `mypy --strict`, and a plugin that
  breaks it does not.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import ChatModel, FunctionContext, Kernel, KernelSettings, ServiceSettings, kernel_function
from kernel.cli import build_parser, main
from kernel.errors import FunctionNotFoundError, PluginError
from kernel.hookspecs import (
    ENTRY_POINT_GROUP,
    RegisterConnector,
    RegisterFilter,
    RegisterPlugin,
    hookimpl,
)
from kernel.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
TYPED = ROOT / "tests" / "data" / "typed_plugin"
ECHO_PACKAGE = ROOT / "samples" / "thirdparty_plugin"


# --- plugins used below ----------------------------------------------------------------------


@kernel_function
def ping() -> str:
    """Answer pong."""
    return "pong"


@kernel_function
def extra() -> str:
    """A function a failing plugin tries to add."""
    return "extra"


def make_scripted(service_name: str, service: ServiceSettings, settings: KernelSettings) -> ChatModel:
    return ScriptedChatModel()


async def audit(context: FunctionContext, next: Callable[[FunctionContext], Awaitable[None]]) -> None:
    await next(context)


async def other_audit(context: FunctionContext, next: Callable[[FunctionContext], Awaitable[None]]) -> None:
    await next(context)


class Misspelled:
    """Implements `register_connector` (singular): not a hook."""

    @hookimpl
    def register_connector(self, register: RegisterConnector) -> None:
        register("chat", "misspelled", make_scripted)


class Good:
    @hookimpl
    def register_plugins(self, register: RegisterPlugin) -> None:
        register([ping], name="good")


class Flaky:
    """Registers a connector, functions (under `plugin_name`) and a filter, and raises in
    the hook named `fail_in` right after that hook's registration (None: never)."""

    def __init__(self, fail_in: str | None, plugin_name: str = "flaky") -> None:
        self.fail_in, self.plugin_name = fail_in, plugin_name

    def _maybe_fail(self, hook: str) -> None:
        if self.fail_in == hook:
            raise RuntimeError(f"flaky failed in {hook}")

    @hookimpl
    def register_connectors(self, register: RegisterConnector) -> None:
        register("chat", "flaky", make_scripted)
        self._maybe_fail("register_connectors")

    @hookimpl
    def register_plugins(self, register: RegisterPlugin) -> None:
        register([extra], name=self.plugin_name)
        self._maybe_fail("register_plugins")

    @hookimpl
    def register_filters(self, register: RegisterFilter) -> None:
        register("function", audit)
        self._maybe_fail("register_filters")

    @hookimpl
    def kernel_configured(self, kernel: Kernel) -> None:
        self._maybe_fail("kernel_configured")


class Later:
    """Registered after a Flaky plugin, into the same plugin name; must survive its failure."""

    @hookimpl
    def register_plugins(self, register: RegisterPlugin) -> None:
        register([ping], name="flaky")

    @hookimpl
    def register_filters(self, register: RegisterFilter) -> None:
        register("function", other_audit)


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def bare_kernel(*plugins: object, **options: Any) -> Kernel:
    return Kernel(KernelSettings(), load_entry_points=False, builtins=False, plugins=list(plugins), **options)


def state(k: Kernel) -> dict[str, Any]:
    """Everything a plugin can register, as comparable data (functions by identity)."""
    return {
        "connectors": {key: (c.factory, c.source) for key, c in k.services.connectors.items()},
        "plugins": {name: list(p.functions.items()) for name, p in k.plugins.items()},
        "plugin_objects": {name: id(p) for name, p in k.plugins.items()},
        "filters": {stage: list(filters) for stage, filters in k.filters.items()},
        "by_name": {fn.fully_qualified_name: fn for fn in k.functions()},
        "templates": sorted(k.template_functions()),
    }


def assert_unknown(k: Kernel, *names: str) -> None:
    for name in names:
        with pytest.raises(FunctionNotFoundError):
            k.get_function(name)


# --- 1. a misspelled hook ---------------------------------------------------------------------


def test_misspelled_hook_raises_under_strict_naming_plugin_hook_and_suggestion() -> None:
    bad = Misspelled()
    with pytest.raises(PluginError) as raised:
        Kernel(KernelSettings(), strict=True, load_entry_points=False, plugins=[bad])
    message = str(raised.value)
    assert f"plugin {qualified(Misspelled)!r}" in message
    assert "unknown hook(s): 'register_connector' (did you mean 'register_connectors'?)" in message


async def test_misspelled_hook_is_recorded_unregistered_and_the_others_work() -> None:
    bad, good = Misspelled(), Good()
    k = Kernel(KernelSettings(), load_entry_points=False, plugins=[bad, good])
    assert [failure.name for failure in k.plugin_failures] == [qualified(Misspelled)]
    failure = k.plugin_failures[0]
    assert "unknown hook(s): 'register_connector' (did you mean 'register_connectors'?)" in failure.error
    with pytest.raises(PluginError) as raised:  # the same report as under strict
        Kernel(KernelSettings(), strict=True, load_entry_points=False, plugins=[Misspelled()])
    assert str(failure) == str(raised.value)
    assert not k.pm.is_registered(bad)
    assert not k.pm.hook.register_connector.get_hookimpls()
    assert ("chat", "misspelled") not in k.services.connectors
    assert k.pm.is_registered(good)  # given after the bad one in the same list
    assert (await k.invoke("good.ping")).value == "pong"
    assert (await k.invoke("math.add", a=1, b=2)).value == 3  # the built-in plugins too
    with pytest.raises(PluginError, match=re.escape("(did you mean 'register_connectors'?)")) as again:
        k.register(bad)  # after start-up: raised, not recorded
    assert f"plugin {qualified(Misspelled)!r}" in str(again.value)
    assert not k.pm.is_registered(bad) and len(k.plugin_failures) == 1


@pytest.mark.parametrize(("misspelled", "meant"), [
    ("register_connector", "register_connectors"),
    ("register_plugin", "register_plugins"),
    ("register_filter", "register_filters"),
    ("register_command", "register_commands"),
    ("kernel_configure", "kernel_configured"),
])
def test_register_after_start_up_refuses_a_misspelled_hook(misspelled: str, meant: str) -> None:
    called: list[object] = []

    @hookimpl
    def implementation(register: Any = None, kernel: Any = None) -> None:
        called.append(register or kernel)

    module = types.ModuleType("acme_misspelled")
    setattr(module, misspelled, implementation)
    k = bare_kernel(Good())
    before = state(k)
    with pytest.raises(PluginError) as raised:
        k.register(module)
    assert str(raised.value) == (
        f"plugin 'acme_misspelled' implements unknown hook(s): {misspelled!r} (did you mean {meant!r}?)"
    )
    assert not k.pm.is_registered(module) and k.pm.get_plugin("acme_misspelled") is None
    assert called == [] and state(k) == before and k.plugin_failures == []


# --- 2. all or nothing ----------------------------------------------------------------------


@pytest.mark.parametrize("fail_in", ["register_connectors", "register_plugins", "register_filters",
                                     "kernel_configured"])
async def test_a_plugin_failing_at_start_up_leaves_nothing(fail_in: str) -> None:
    flaky = Flaky(fail_in)
    k = bare_kernel(flaky, Good())
    assert k.services.connectors == {}
    assert sorted(k.plugins) == ["good"] and [fn.fully_qualified_name for fn in k.functions()] == ["good.ping"]
    assert k.filters == {"function": [], "prompt": [], "tool_call": []}
    assert sorted(k.template_functions()) == ["good"]
    assert_unknown(k, "flaky.extra", "flaky-extra")
    assert [(f.name, f.error) for f in k.plugin_failures] == [
        (qualified(Flaky), f"RuntimeError: flaky failed in {fail_in}")
    ]
    assert not k.pm.is_registered(flaky)
    assert (await k.invoke("good.ping")).value == "pong"
    with pytest.raises(PluginError, match=re.escape(f"plugin {qualified(Flaky)!r} failed: RuntimeError: flaky")):
        bare_kernel(Flaky(fail_in), Good(), strict=True)


@pytest.mark.parametrize("fail_in", ["register_connectors", "register_plugins", "register_filters",
                                     "kernel_configured"])
async def test_register_after_start_up_is_all_or_nothing(fail_in: str) -> None:
    k = bare_kernel(Good())
    before = state(k)
    flaky = Flaky(fail_in)
    with pytest.raises(PluginError) as raised:
        k.register(flaky)
    assert str(raised.value) == f"plugin {qualified(Flaky)!r} failed: RuntimeError: flaky failed in {fail_in}"
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert state(k) == before
    assert_unknown(k, "flaky.extra", "flaky-extra")
    assert not k.pm.is_registered(flaky) and k.pm.get_plugin(qualified(Flaky)) is None
    assert k.plugin_failures == []  # raised, not recorded
    # Nothing of the failed attempt is left: once fixed, the same object registers under its own name.
    flaky.fail_in = None
    k.register(flaky)
    assert k.pm.get_name(flaky) == qualified(Flaky)
    assert k.services.connectors[("chat", "flaky")].source == qualified(Flaky)
    assert k.filters["function"] == [audit]
    assert (await k.invoke("flaky.extra")).value == "extra"


async def test_a_kernel_configured_failure_at_start_up_keeps_the_other_plugins_registrations() -> None:
    """The failing plugin's registrations are taken out from between the others'."""
    flaky, later = Flaky("kernel_configured"), Later()
    k = bare_kernel(Good(), flaky, later)
    assert [f.name for f in k.plugin_failures] == [qualified(Flaky)]
    assert list(k.plugins["flaky"].functions) == ["ping"]  # Later's function, in the plugin Flaky created
    assert k.get_function("flaky-ping") is k.get_function("flaky.ping")
    assert_unknown(k, "flaky.extra", "flaky-extra")
    assert k.filters["function"] == [other_audit]
    assert ("chat", "flaky") not in k.services.connectors
    assert (await k.invoke("flaky.ping")).value == "pong" and (await k.invoke("good.ping")).value == "pong"
    assert not k.pm.is_registered(flaky) and k.pm.is_registered(later)


@pytest.mark.parametrize("fail_in", ["register_plugins", "register_filters", "kernel_configured"])
@pytest.mark.parametrize("when", ["start-up", "register"])
async def test_a_failing_plugin_leaves_an_existing_plugin_as_it_was(fail_in: str, when: str) -> None:
    """Flaky adds `extra` to the standard `math` plugin, then fails."""
    baseline = Kernel(KernelSettings(), load_entry_points=False)
    math_functions = list(baseline.plugins["math"].functions)
    if when == "start-up":
        k = Kernel(KernelSettings(), load_entry_points=False, plugins=[Flaky(fail_in, plugin_name="math")])
        assert [f.name for f in k.plugin_failures] == [qualified(Flaky)]
        assert {name: list(p.functions) for name, p in k.plugins.items()} == {
            name: list(p.functions) for name, p in baseline.plugins.items()
        }
    else:
        k = Kernel(KernelSettings(), load_entry_points=False)
        math_plugin, before = k.plugins["math"], state(k)
        with pytest.raises(PluginError, match=f"flaky failed in {fail_in}"):
            k.register(Flaky(fail_in, plugin_name="math"))
        assert k.plugins["math"] is math_plugin
        assert state(k) == before  # the very same function objects, in the same order
    assert list(k.plugins["math"].functions) == math_functions
    assert_unknown(k, "math.extra", "math-extra")
    assert "extra" not in {fn.name for fn in k.functions(["math"])}
    assert k.filters["function"] == []
    assert (await k.invoke("math.add", a=2, b=3)).value == 5
    assert (await k.invoke("math-multiply", a=2, b=3)).value == 6


# --- 3. readable names ------------------------------------------------------------------------


class Watcher:
    @hookimpl
    def kernel_configured(self, kernel: Kernel) -> None:
        pass


@hookimpl
def watch_configured(kernel: Kernel) -> None:
    pass


def test_plugins_have_readable_names() -> None:
    module = types.ModuleType("acme.plugins.watch")
    module.kernel_configured = watch_configured  # type: ignore[attr-defined]
    first, second, third = Watcher(), Watcher(), Watcher()
    k = Kernel(KernelSettings(), load_entry_points=False, plugins=[module, first, second])
    k.register(third)
    assert k.pm.get_name(module) == "acme.plugins.watch"
    assert k.pm.get_name(first) == qualified(Watcher)
    assert k.pm.get_name(second) == f"{qualified(Watcher)}#2"
    assert k.pm.get_name(third) == f"{qualified(Watcher)}#3"
    assert k.pm.get_name(k.pm.get_plugin("plugins.standard")) == "plugins.standard"
    names = [name for name, _ in k.pm.list_name_plugin()]
    assert len(names) == len(set(names))
    for name, plugin in k.pm.list_name_plugin():
        assert not name.isdigit() and name != str(id(plugin)), name
        assert re.fullmatch(r"[A-Za-z_][\w.]*(#\d+)?", name), name
    assert k.plugin_failures == []


def test_a_class_plugin_is_named_module_and_class() -> None:
    seen: list[Kernel] = []

    def kernel_configured(kernel: Kernel) -> None:
        seen.append(kernel)

    class_plugin = type("StaticWatcher", (), {"__module__": "acme.hooks",
                                              "kernel_configured": staticmethod(hookimpl(kernel_configured))})
    k = bare_kernel(class_plugin, Watcher())
    assert k.pm.get_name(class_plugin) == "acme.hooks.StaticWatcher"  # not the bare "StaticWatcher"
    assert seen == [k] and k.plugin_failures == []


def test_a_failed_plugin_is_reported_under_its_readable_name() -> None:
    k = bare_kernel(Flaky("register_plugins"), Flaky("register_plugins"), Good())
    assert [f.name for f in k.plugin_failures] == [qualified(Flaky), f"{qualified(Flaky)}#2"]
    assert [name for name, _ in k.pm.list_name_plugin()] == [qualified(Good)]


# --- 4. commands from a third-party package ----------------------------------------------------

CLASH = '''
"""An object plugin adding `kernel clash-extra`, then `kernel run` (a built-in's name)."""
from kernel.hookspecs import hookimpl


async def extra(args, kernel):
    print("clash-extra ran")
    return 0


async def fake_run(args, kernel):
    print("the plugin's run")
    return 0


class Commands:
    @hookimpl
    def register_commands(self, register):
        register("clash-extra", extra, help="added before the clash", needs_kernel=False)
        register("run", fake_run, help="takes a built-in name")


PLUGIN = Commands()
'''
INSTALLED_MODULES = ("kernel_echo", "contract_clash", "typed_plugin")


def _install(site: Path, distribution: str, entry_points: dict[str, str]) -> None:
    """A .dist-info folder, as pip lays it out, declaring `entry_points` in our group."""
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n", encoding="utf-8")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """samples/thirdparty_plugin (kernel-echo, with the entry point its pyproject.toml
    declares), a plugin whose command clashes with `run`, and tests/data/typed_plugin."""
    site = tmp_path / "site-packages"
    site.mkdir()
    project = tomllib.loads((ECHO_PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    _install(site, project["name"], project["entry-points"][ENTRY_POINT_GROUP])
    (site / "contract_clash.py").write_text(CLASH, encoding="utf-8")
    _install(site, "contract-clash", {"contract_clash": "contract_clash:PLUGIN"})
    _install(site, "typed-plugin", {"typed_plugin": "typed_plugin"})
    for folder in (site, ECHO_PACKAGE, TYPED):
        monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield site
    for module in INSTALLED_MODULES:
        sys.modules.pop(module, None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


CLASH_WARNING = ("warning: plugin 'contract-clash:contract_clash' failed: ValueError: command 'run' is already "
                 "registered by kernel.cli.functions")


def test_the_entry_points_are_installed(installed: Path) -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found["echo"] == "kernel_echo"
    assert found["contract_clash"] == "contract_clash:PLUGIN"


def test_a_package_command_runs_with_the_kernel(installed: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "kernel-echo")
    code, out, err = run_cli(capsys, "echo-hello", "World", "--times", "3")
    assert (code, out) == (0, "Hello, World!!!\n"), err  # through the kernel's `shout.exclaim`, from the package
    assert "warning" not in err and "contract_clash" not in sys.modules  # not allowed: never imported


def test_a_typed_plugin_command_runs(installed: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PLUGIN_ALLOWLIST", "typed-plugin")
    code, out, err = run_cli(capsys, "typed-hello", "Ada")
    assert code == 0, err
    assert re.fullmatch(r"hello Ada from \d+ plugins\n", out)


def test_help_lists_package_commands_and_refuses_a_clash(installed: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--help")
    assert code == 0
    assert re.search(r"^\s+echo-hello\s+greet someone, loudly \(from the kernel-echo plugin\)$", out, re.MULTILINE)
    assert re.search(r"^\s+typed-hello\s+say hello$", out, re.MULTILINE)
    assert re.search(r"^\s+run\s+invoke a function and print its result$", out, re.MULTILINE)
    assert "takes a built-in name" not in out
    assert "clash-extra" not in out  # all or nothing: the command added before the clash is taken out
    assert CLASH_WARNING in err.splitlines()


def test_a_clashing_plugin_leaves_the_built_in_working(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kernel.cli.functions import cmd_run

    parser = build_parser([])  # every entry point loaded, as for `kernel --help`
    assert CLASH_WARNING in capsys.readouterr().err.splitlines()
    args = parser.parse_args(["run", "math.add", "-a", "a=2", "-a", "b=3"])
    assert args.handler is cmd_run
    with pytest.raises(SystemExit):
        parser.parse_args(["clash-extra"])
    assert "invalid choice: 'clash-extra'" in capsys.readouterr().err

    code, out, err = run_cli(capsys, "run", "math.add", "-a", "a=2", "-a", "b=3")
    assert (code, out) == (0, "5.0\n"), err
    code, out, err = run_cli(capsys, "clash-extra")  # not a built-in: the plugins are loaded
    assert code == 2 and out == ""
    assert CLASH_WARNING in err.splitlines() and "invalid choice: 'clash-extra'" in err


def test_without_autoload_the_package_command_does_not_exist(installed: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    code, out, err = run_cli(capsys, "echo-hello", "World")
    assert code == 2 and out == "" and "invalid choice: 'echo-hello'" in err
    assert "kernel_echo" not in sys.modules


# --- 5. the typed contract --------------------------------------------------------------------


async def test_the_typed_plugin_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TYPED))
    try:
        typed_plugin = importlib.import_module("typed_plugin")
        k = bare_kernel(typed_plugin, strict=True)
        assert k.pm.get_name(typed_plugin) == "typed_plugin"
        connector = k.services.connectors[("chat", "typed")]
        model = connector.factory("t", ServiceSettings(provider="typed", model="m"), k.settings)
        assert isinstance(model, ChatModel) and model.model == "m"
        assert (await k.invoke("typed.double", text="ab")).value == "abab"
        assert typed_plugin.calls == ["typed.double"]  # its function filter ran
        assert typed_plugin.configured == [k]
    finally:
        sys.modules.pop("typed_plugin", None)


def test_plugins_type_check_against_the_contract(tmp_path: Path) -> None:
    """One mypy --strict run: the typed plugin and the sample package pass, and each line of
    contract_violations.py marked `# violation[code]` (and only those) is an error."""
    good = [TYPED / "typed_plugin.py", ECHO_PACKAGE / "kernel_echo" / "__init__.py"]
    bad = TYPED / "contract_violations.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_", "MYPY"))}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--show-error-codes", "--no-error-summary",
         "--cache-dir", str(tmp_path / "mypy-cache"), "--config-file", str(ROOT / "pyproject.toml"),
         *map(str, [*good, bad])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors: dict[tuple[str, int], set[str]] = {}
    for line in done.stdout.splitlines():
        found = re.match(r"(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$", line)
        if found:
            key = (Path(found["path"]).name, int(found["line"]))
            errors.setdefault(key, set()).add(found["code"])
    marked = {
        ("contract_violations.py", number): found[1]
        for number, text in enumerate(bad.read_text(encoding="utf-8").splitlines(), start=1)
        if (found := re.search(r"# violation\[([a-z-]+)\]", text))
    }
    assert len(marked) >= 6
    assert set(errors) == set(marked), done.stdout  # no error in the good files, none unmarked
    for key, code in marked.items():
        assert code in errors[key], (key, errors[key], done.stdout)
