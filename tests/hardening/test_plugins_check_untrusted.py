"""`kernel plugins check` on a folder not trusted yet: no `*.py` module of the folder is
imported (importing runs its code) unless `--import-modules` is given; each module is
parsed instead and reported with the kernel functions its source declares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.cli import main
from kernel.errors import PluginLoadError
from kernel.plugin_folders import load_plugins

ROOT = Path(__file__).resolve().parents[2]

MODULE = '''"""Tools that leave a mark when imported."""
from pathlib import Path

from kernel import kernel_function
from kernel import kernel_function as kf

Path({marker!r}).write_text("imported")
print("MODULE CODE RAN")


@kernel_function
def shout(text: str) -> str:
    return text.upper()


@kf(name="whisper", description="Lower-case a text.")
async def quiet(text: str) -> str:
    return text.lower()


def helper() -> None:
    """Not a kernel function."""
'''


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KERNEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    monkeypatch.chdir(tmp_path)


def untrusted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(folder, module, marker): a plugin whose module creates `marker` when imported."""
    marker = tmp_path / "imported.marker"
    folder = tmp_path / "untrusted"
    folder.mkdir()
    (folder / "greet.prompt").write_text("---\ndescription: Greet.\n---\nHello {{ name }}\n", encoding="utf-8")
    module = folder / "tools.py"
    module.write_text(MODULE.format(marker=str(marker)), encoding="utf-8")
    return folder, module, marker


def test_check_does_not_import_and_reports_the_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, module, marker = untrusted(tmp_path)
    assert main(["plugins", "check", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert not marker.exists() and "MODULE CODE RAN" not in out + err
    assert out == "ok: 3 functions in 1 plugins\n"  # greet, and shout and whisper read from the source
    assert f"note: {module}: Python module not imported (kernel functions in its source: shout, whisper)" in err
    assert "--import-modules" in err

    assert main(["plugins", "check", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not marker.exists()
    assert report["names"] == ["untrusted.greet", "untrusted.shout", "untrusted.whisper"]
    assert report["modules"] == [{"path": str(module), "plugin": "untrusted", "imported": False,
                                  "functions": ["shout", "whisper"]}]


def test_check_with_import_modules_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, module, marker = untrusted(tmp_path)
    assert main(["plugins", "check", str(folder), "--import-modules", "--json"]) == 0
    out = capsys.readouterr().out
    assert marker.read_text() == "imported" and "MODULE CODE RAN" in out
    report = json.loads(out[out.index("{"):])
    assert report["ok"] is True and report["functions"] == 3
    assert report["modules"] == [{"path": str(module), "plugin": "untrusted", "imported": True,
                                  "functions": ["shout", "whisper"]}]


def test_syntax_errors_are_reported_at_their_line_without_importing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _, marker = untrusted(tmp_path)
    broken = folder / "broken.py"
    broken.write_text(f"open({str(marker)!r}, 'w')\n\ndef oops(:\n    pass\n", encoding="utf-8")
    deep = folder / "deep.py"
    deep.write_text("x = " + "1 + " * 100_000 + "1\n", encoding="utf-8")
    assert main(["plugins", "check", str(folder)]) == 4
    out, err = capsys.readouterr()
    assert not marker.exists()
    assert f"{broken}:3: syntax error: " in out
    assert f"{deep}: cannot parse this file as Python: RecursionError" in out
    assert err.strip().splitlines()[-1] == f"error: 2 problem(s) in {folder}"


def test_duplicate_names_are_found_from_the_source(tmp_path: Path) -> None:
    from kernel.plugin_folders import check_plugins

    folder, module, marker = untrusted(tmp_path)
    (folder / "shout.prompt").write_text("Shout {{ text }}\n", encoding="utf-8")
    found = check_plugins(folder)
    assert not marker.exists()
    assert [(p.path, p.message) for p in found.problems] == [
        (str(module), f"duplicate function name 'untrusted.shout': also defined by {folder / 'shout.prompt'}")]


def test_load_plugins_without_import_modules(tmp_path: Path) -> None:
    folder, _, marker = untrusted(tmp_path)
    plugins = load_plugins(folder, import_modules=False)
    assert not marker.exists()
    assert [fn.name for p in plugins for fn in p] == ["greet"]  # the module's functions are left out
    assert plugins[0].description == "Tools that leave a mark when imported."
    names = sorted(fn.name for p in load_plugins(folder) for fn in p)  # the default imports, as before
    assert names == ["greet", "shout", "whisper"] and marker.exists()
    (folder / "bad.py").write_text("def f(:\n", encoding="utf-8")
    with pytest.raises(PluginLoadError, match="syntax error"):
        load_plugins(folder, import_modules=False)


def test_help_says_which_command_imports(capsys: pytest.CaptureFixture[str]) -> None:
    def help_of(*argv: str) -> str:
        assert main([*argv, "--help"]) == 0
        return " ".join(capsys.readouterr().out.split())

    assert "imports the folder's *.py modules, which runs their code" in help_of("plugins")
    assert "without running its code" in help_of("plugins")
    listing = help_of("plugins", "list")
    assert "imports the folder's *.py modules" in listing and "their code runs" in listing
    check = help_of("plugins", "check")
    assert "--import-modules" in check and "parsed, not imported" in check


def test_the_real_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "kernel"
    if not script.exists():
        pytest.skip("the console script is not installed next to this Python")
    folder, module, marker = untrusted(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["KERNEL_PLUGIN_AUTOLOAD"] = "false"
    env["PYTHONPATH"] = str(ROOT)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)

    proc = run("plugins", "check", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists() and "MODULE CODE RAN" not in proc.stdout
    assert proc.stdout == "ok: 3 functions in 1 plugins\n"
    assert f"{module}: Python module not imported" in proc.stderr
    proc = run("plugins", "check", str(folder), "--import-modules")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists() and "MODULE CODE RAN" in proc.stdout
