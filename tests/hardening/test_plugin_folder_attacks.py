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


# --- YAML aliases: a billion laughs in a few hundred bytes -------------------------------------

def laughs_front_matter() -> str:
    """A 'billion laughs' (9**9 strings once expanded) in the schema of an input, where
    the function's description (`plugins list --json`, the planner) would expand it."""
    lines = ["---", "inputs:", "  text:", "    schema:", "      type: string",
             "      l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join([*lines, "---", "{{ text }}", ""])


def test_yaml_alias_bomb_is_refused_with_file_and_line(tmp_path: Path) -> None:
    folder = plugin(tmp_path)
    bomb = folder / "laughs.prompt"
    bomb.write_text(laughs_front_matter(), encoding="utf-8")
    assert bomb.stat().st_size < 1024  # a small file: refusing it costs nothing
    sk = folder / "sk_laughs.yaml"
    sk.write_text("template: hi\nexecution_settings:\n  default: &d {temperature: 0.5}\n  other: *d\n",
                  encoding="utf-8")
    merged = folder / "merged.yaml"
    merged.write_text("template: hi\nexecution_settings:\n  base: {temperature: 0.5}\n"
                      "  other:\n    <<: *base\n", encoding="utf-8")
    with pytest.raises(PluginLoadError) as info:
        load_plugins(folder)
    found = {p.path: p for p in info.value.problems}
    assert set(found) == {str(bomb), str(sk), str(merged)}
    for path in (bomb, sk, merged):
        assert "YAML aliases are not allowed in plugin files" in found[str(path)].message
    assert found[str(bomb)].line == 6  # the first anchor, counted in the file
    assert found[str(sk)].line == 3
    assert found[str(merged)].line == 5


def test_yaml_alias_bomb_fails_plugins_check_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from kernel.cli import main

    for name in list(os.environ):
        if name.startswith("KERNEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    monkeypatch.chdir(tmp_path)
    folder = plugin(tmp_path)
    (folder / "laughs.prompt").write_text(laughs_front_matter(), encoding="utf-8")
    assert main(["plugins", "check", str(folder)]) == 4
    assert "laughs.prompt:6: YAML aliases are not allowed in plugin files" in capsys.readouterr().out
    assert main(["plugins", "list", str(folder), "--json"]) == 4  # refused, never expanded into JSON
    assert "YAML aliases are not allowed" in capsys.readouterr().err


# --- nesting depth ----------------------------------------------------------------------------

DEEP = 100_000


def deep_json(depth: int, leaf: str = "1") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


@pytest.mark.parametrize("depth", [65, 500, DEEP])
def test_deep_json_and_yaml_are_problems_not_recursion_errors(tmp_path: Path, depth: int) -> None:
    folder = plugin(tmp_path)
    fn = folder / "fn"
    fn.mkdir()
    (fn / "skprompt.txt").write_text("hi", encoding="utf-8")
    config = fn / "config.json"
    config.write_text('{"description": "x",\n "execution_settings": ' + deep_json(depth) + "}", encoding="utf-8")
    (folder / "schema.json").write_text(deep_json(depth), encoding="utf-8")
    schema_user = folder / "uses.prompt"
    schema_user.write_text("---\noutput_schema: schema.json\n---\nx\n", encoding="utf-8")
    flow = folder / "flow.prompt"
    flow.write_text("---\ndescription: x\nsettings: " + "[" * depth + "]" * depth + "\n---\nx\n", encoding="utf-8")
    as_json = folder / "as_json.prompt"
    as_json.write_text("---\n" + deep_json(depth) + "\n---\nx\n", encoding="utf-8")
    block = folder / "block.yaml"
    block.write_text("template: hi\nexecution_settings:\n"
                     + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(min(depth, 500))), encoding="utf-8")
    schema_text = folder / "schema_text.yaml"
    schema_text.write_text("template: '{{$x}}'\ninput_variables:\n  - name: x\n    json_schema: '"
                           + deep_json(depth) + "'\n", encoding="utf-8")
    with pytest.raises(PluginLoadError) as info:
        load_plugins(folder)
    found = {p.path: p for p in info.value.problems}
    assert set(found) == {str(config), str(folder / "schema.json"), str(flow), str(as_json), str(block),
                          str(schema_text)}, found
    for problem in found.values():
        assert "nesting is too deep (more than 64 levels" in problem.message
    assert found[str(config)].line == 2
    assert found[str(flow)].line == 3
    assert found[str(block)].line == 2 + 64


def test_nesting_up_to_the_bound_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "schema.json").write_text('{"type": "object", "x": ' + deep_json(62) + "}", encoding="utf-8")
    (folder / "uses.prompt").write_text("---\noutput_schema: schema.json\n---\nx\n", encoding="utf-8")
    assert [fn.name for p in load_plugins(folder) for fn in p] == ["uses"]


# --- FIFOs, sockets and devices -----------------------------------------------------------------

CHECK_IN_SUBPROCESS = """
import json, sys
from kernel.errors import PluginLoadError
from kernel.plugin_folders import load_plugins
try:
    load_plugins(sys.argv[1])
except PluginLoadError as exc:
    print(json.dumps([[p.path, p.message] for p in exc.problems]))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_fifos_and_sockets_are_skipped_never_opened(tmp_path: Path) -> None:
    import json
    import socket
    import subprocess
    import sys

    folder = plugin(tmp_path)
    fifos = [folder / "x.prompt", folder / "y.yaml", folder / "z.py", folder / "schema.json"]
    fn = folder / "fn"
    fn.mkdir()
    fifos += [fn / "skprompt.txt", fn / "config.json"]
    for path in fifos:
        os.mkfifo(path)
    uses = folder / "uses.prompt"
    uses.write_text("---\noutput_schema: schema.json\n---\nx\n", encoding="utf-8")
    sock_path = folder / "s.prompt"
    server = None
    if len(str(sock_path)) < 100:  # the limit of a unix socket's path
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(sock_path))
    try:
        # in a subprocess with a timeout: opening a FIFO would block this test run for good
        proc = subprocess.run([sys.executable, "-c", CHECK_IN_SUBPROCESS, str(folder)],
                              capture_output=True, text=True, timeout=60)
    finally:
        if server is not None:
            server.close()
    assert proc.returncode == 0, proc.stderr
    found = [tuple(p) for p in json.loads(proc.stdout)]
    for path in fifos:
        assert named(found, path, "not a regular file (a FIFO); skipped"), (path, found)
    if server is not None:
        assert named(found, sock_path, "not a regular file (a socket)")
    assert named(found, uses, "output_schema 'schema.json': not a regular file (a FIFO")
    assert named(found, fn, "missing skprompt.txt")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_reader_refuses_a_fifo_given_directly(tmp_path: Path) -> None:
    import threading

    from kernel.plugin_folders.reader import FolderReader, Skip

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    reader = FolderReader(tmp_path)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            outcome.append(reader.read(fifo))
        except BaseException as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # blocked opening the FIFO: a writer that closes at once releases it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=20)
        pytest.fail("reading a FIFO blocked: it was opened instead of refused")
    assert len(outcome) == 1 and isinstance(outcome[0], Skip)
    assert [p.message for p in reader.problems] == ["not a regular file (a FIFO); skipped"]
