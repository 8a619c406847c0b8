"""Hostile plugin folders (kernel/loader.py): every problem is rejected with the file
named in the PluginLoadError, and nothing from YAML is ever executed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernel.errors import PluginLoadError
from kernel.plugin_folders import MAX_FILE_BYTES, load_plugins

GOOD = "---\ndescription: fine\n---\nHello {{ name }}\n"


def problems(root: Path) -> list[tuple[str, str]]:
    with pytest.raises(PluginLoadError) as info:
        load_plugins(root)
    return [(p.path, p.message) for p in info.value.problems]


def plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "ok.prompt").write_text(GOOD, encoding="utf-8")
    return folder


def named(found: list[tuple[str, str]], path: Path, words: str) -> bool:
    return any(p == str(path) and words in m for p, m in found)


def test_output_schema_path_traversal(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text('{"type": "object"}', encoding="utf-8")
    folder = plugin(tmp_path)
    bad = folder / "leak.prompt"
    bad.write_text("---\noutput_schema: ../secret.json\n---\nx\n", encoding="utf-8")
    absolute = folder / "abs.prompt"
    absolute.write_text(f"---\noutput_schema: {tmp_path / 'secret.json'}\n---\nx\n", encoding="utf-8")
    found = problems(folder)
    assert named(found, bad, "'..' is not allowed")
    assert named(found, absolute, "absolute paths are not allowed")


def test_sk_config_and_schema_symlinks_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"description": "stolen"}', encoding="utf-8")
    (outside / "schema.json").write_text('{"type": "object"}', encoding="utf-8")
    folder = plugin(tmp_path)
    fn = folder / "fn"
    fn.mkdir()
    (fn / "skprompt.txt").write_text("hi", encoding="utf-8")
    os.symlink(outside / "config.json", fn / "config.json")
    os.symlink(outside / "schema.json", folder / "schema.json")
    uses = folder / "uses.prompt"
    uses.write_text("---\noutput_schema: schema.json\n---\nx\n", encoding="utf-8")
    found = problems(folder)
    assert named(found, fn / "config.json", "outside the plugin root")
    assert named(found, folder / "schema.json", "outside the plugin root")


def test_file_and_directory_symlinks_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stolen.prompt").write_text(GOOD, encoding="utf-8")
    folder = plugin(tmp_path)
    os.symlink(outside / "stolen.prompt", folder / "stolen.prompt")
    os.symlink(outside, folder / "dir")
    found = problems(folder)
    assert named(found, folder / "stolen.prompt", "outside the plugin root")
    assert named(found, folder / "dir", "outside the plugin root")


def test_oversize_and_invalid_utf8(tmp_path: Path) -> None:
    folder = plugin(tmp_path)
    big = folder / "big.prompt"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    binary = folder / "binary.prompt"
    binary.write_bytes(b"hello \xff\xfe world")
    bigpy = folder / "bigmod.py"
    bigpy.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    found = problems(folder)
    assert named(found, big, "too large")
    assert named(found, bigpy, "too large")
    assert named(found, binary, "not UTF-8")


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/module:os",
])
def test_yaml_python_tags_are_rejected_and_not_run(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    folder = plugin(tmp_path)
    front = folder / "front.prompt"
    front.write_text(f"---\ndescription: {tag.format(marker=marker)}\n---\nx\n", encoding="utf-8")
    sk = folder / "sk.yaml"
    sk.write_text(f"template: hi\ndescription: {tag.format(marker=marker)}\n", encoding="utf-8")
    found = problems(folder)
    assert named(found, front, "is not allowed")
    assert named(found, sk, "is not allowed")
    assert not marker.exists()


def test_duplicate_function_names_across_formats(tmp_path: Path) -> None:
    folder = plugin(tmp_path)
    (folder / "greet.prompt").write_text(GOOD, encoding="utf-8")
    (folder / "greet.yaml").write_text("name: greet\ntemplate: hi\n", encoding="utf-8")
    sk = folder / "greet_sk"
    sk.mkdir()
    (sk / "skprompt.txt").write_text("hi", encoding="utf-8")
    (folder / "greet_sk.prompt").write_text(GOOD, encoding="utf-8")
    (folder / "mod.py").write_text("from kernel import kernel_function\n\n@kernel_function\ndef ok() -> str:\n"
                                   "    return 'x'\n", encoding="utf-8")
    found = problems(folder)
    assert sum("duplicate function name" in m for _, m in found) >= 3
    assert any("'evil.greet'" in m for _, m in found)
    assert any("'evil.greet_sk'" in m for _, m in found)
    assert any("'evil.ok'" in m for _, m in found)


def test_module_raising_at_import(tmp_path: Path) -> None:
    folder = plugin(tmp_path)
    bad = folder / "boom.py"
    bad.write_text("x = 1\nraise RuntimeError('boom at import')\n", encoding="utf-8")
    exits = folder / "quits.py"
    exits.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    found = problems(folder)
    assert named(found, bad, "import failed: RuntimeError: boom at import")
    assert named(found, exits, "import failed: SystemExit")
    with pytest.raises(PluginLoadError) as info:
        load_plugins(folder)
    assert f"{bad}:2" in str(info.value)  # file and line in the message


def test_traversal_in_plugin_name_and_function_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "bad-name").mkdir()
    (root / "bad-name" / "x.prompt").write_text(GOOD, encoding="utf-8")
    found = problems(root)
    assert named(found, root / "bad-name", "invalid plugin name")


def test_nul_byte_in_a_referenced_path_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    folder = plugin(tmp_path)
    nul = folder / "nul.prompt"
    nul.write_text('---\noutput_schema: "a\\0b.json"\n---\nx\n', encoding="utf-8")
    broken = folder / "broken.prompt"
    broken.write_text("---\ndescription: [unclosed\n---\nx\n", encoding="utf-8")
    found = problems(folder)
    assert named(found, nul, "NUL byte")
    assert any(p == str(broken) for p, _ in found)  # the other problems are still reported
