"""The persistent parse cache of plugin folders (`cache_dir/parse-cache`): an unchanged
folder loads without parsing, a changed file is always validated again (its errors with
file and line), a corrupt or foreign cache file is ignored and rebuilt, nothing is written
beside the plugin files, and `parse_cache = false` writes nothing at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel import Kernel, KernelSettings
from kernel.errors import PluginLoadError
from kernel.plugin_folders import ParseCache, check_plugins, load_plugins

REPO = Path(__file__).resolve().parent.parent

SUMMARY = """---
description: Summarize a text.
inputs:
  text:
    description: the text
  words:
    type: integer
    default: 40
settings:
  max_tokens: 64
---
<message role="system">Be brief.</message>
<message role="user">Summarize in {{ words }} words:
{{ text }}</message>
"""

SK_PROMPT = "Translate to {{$language}}: {{$input}}"
SK_CONFIG = {
    "schema": 1, "description": "translate a text",
    "execution_settings": {"default": {"max_tokens": 32}},
    "input_variables": [{"name": "input", "description": "the text", "is_required": True},
                        {"name": "language", "description": "target", "default": "French"}],
}
SK_YAML = """name: greet
description: Greets someone.
template: "Hello {{$name}}!"
input_variables:
  - name: name
    description: who
    is_required: true
"""


def write_folder(root: Path) -> Path:
    """One plugin `tools` with each cached kind of function file: our `.prompt`, an SK
    function folder and an SK YAML prompt (and a README, not a function)."""
    plugin = root / "tools"
    (plugin / "translate").mkdir(parents=True)
    (plugin / "summary.prompt").write_text(SUMMARY, encoding="utf-8")
    (plugin / "translate" / "skprompt.txt").write_text(SK_PROMPT, encoding="utf-8")
    (plugin / "translate" / "config.json").write_text(json.dumps(SK_CONFIG), encoding="utf-8")
    (plugin / "greet.yaml").write_text(SK_YAML, encoding="utf-8")
    (plugin / "README.md").write_text("notes", encoding="utf-8")
    return root


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its content and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def describe(plugins: list) -> dict[str, tuple[str, list[str], dict]]:
    return {fn.fully_qualified_name: (fn.description, sorted(p.name for p in fn.parameters),
                                      getattr(fn, "execution_settings", {}))
            for plugin in plugins for fn in plugin}


def test_a_warm_load_of_an_unchanged_folder_parses_nothing(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    cold = ParseCache(cache_dir)
    first = load_plugins(root, cache=cold)
    assert (cold.stats.parsed, cold.stats.hits, cold.stats.files_written) == (3, 0, 1)

    warm = ParseCache(cache_dir)  # as a new process: only the cache file on disk is shared
    second = load_plugins(root, cache=warm)
    assert (warm.stats.parsed, warm.stats.hits, warm.stats.files_read) == (3 - 3, 3, 1)
    assert describe(second) == describe(first)
    assert sorted(describe(second)) == ["tools.greet", "tools.summary", "tools.translate"]
    assert warm.stats.files_written == 0  # nothing changed: nothing rewritten

    again = load_plugins(root, cache=warm)  # the same process again: from memory
    assert (warm.stats.parsed, warm.stats.hits, warm.stats.files_read) == (0, 6, 1)
    assert describe(again) == describe(first)


async def test_a_function_from_the_cache_renders_as_a_parsed_one(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    load_plugins(root, cache=ParseCache(cache_dir))
    warm = ParseCache(cache_dir)
    (plugin,) = load_plugins(root, cache=warm)
    assert warm.stats.hits == 3
    kernel = Kernel(KernelSettings(standard_plugins=False), load_entry_points=False, builtins=False)
    kernel.add_plugin(plugin)
    messages = await kernel.render("tools.summary", {"text": "a <b> text"})
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == "Summarize in 40 words:\na <b> text"
    translated = await kernel.render("tools.translate", {"input": "hi"})
    assert translated[-1].content == "Translate to French: hi"


def test_a_changed_file_with_the_same_size_and_mtime_is_validated_again(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    path = root / "tools" / "summary.prompt"
    load_plugins(root, cache=ParseCache(cache_dir))
    before = path.stat()
    broken = SUMMARY.replace("{{ text }}</message>", "{{ text }</message>!")  # same size, a syntax error
    assert len(broken) == len(SUMMARY)
    path.write_text(broken, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    warm = ParseCache(cache_dir)
    found = check_plugins(root, cache=warm)
    assert (warm.stats.parsed, warm.stats.hits) == (1, 2)
    (error,) = found.errors
    assert error.path == str(path)
    assert error.line == SUMMARY.splitlines().index("{{ text }}</message>") + 1
    assert str(error).startswith(f"{path}:{error.line}: ")
    assert "tools.summary" not in found.function_names
    with pytest.raises(PluginLoadError, match=rf"summary\.prompt:{error.line}"):
        load_plugins(root, cache=warm)  # the same process: the error again, never a stale function

    path.write_text(SUMMARY, encoding="utf-8")  # fixed: loads again
    assert "tools.summary" in check_plugins(root, cache=warm).function_names


def test_a_changed_file_in_an_sk_function_folder_is_validated_again(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    config = root / "tools" / "translate" / "config.json"
    load_plugins(root, cache=ParseCache(cache_dir))
    before = config.stat()
    text = config.read_text(encoding="utf-8").replace('"schema": 1', '"schema": 1,')  # not JSON now
    config.write_text(text[:-1], encoding="utf-8")  # one character dropped for the one added
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    warm = ParseCache(cache_dir)
    found = check_plugins(root, cache=warm)
    assert warm.stats.parsed == 1
    assert [e.path for e in found.errors] == [str(config)]
    assert found.errors[0].line == 1


@pytest.mark.parametrize("content", [b"\x00\xff not json", b'{"format": 1, "entries": [1, 2]}', b"[]", b""])
def test_a_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, content: bytes) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    first = load_plugins(root, cache=ParseCache(cache_dir))
    (cache_file,) = (cache_dir).glob("*.json")
    cache_file.write_bytes(content)

    rebuilt = ParseCache(cache_dir)
    assert describe(load_plugins(root, cache=rebuilt)) == describe(first)
    assert (rebuilt.stats.parsed, rebuilt.stats.hits, rebuilt.stats.files_written) == (3, 0, 1)
    assert json.loads(cache_file.read_bytes())["format"] == 1  # written whole again

    warm = ParseCache(cache_dir)
    load_plugins(root, cache=warm)
    assert (warm.stats.parsed, warm.stats.hits) == (0, 3)


def test_a_cache_file_of_another_folder_is_not_trusted(tmp_path: Path) -> None:
    one, other = write_folder(tmp_path / "one"), write_folder(tmp_path / "other")
    (other / "tools" / "summary.prompt").write_text(SUMMARY.replace("Be brief.", "Be long."), encoding="utf-8")
    cache_dir = tmp_path / "cache"
    load_plugins(one, cache=ParseCache(cache_dir))
    (one_file,) = cache_dir.glob("*.json")
    load_plugins(other, cache=ParseCache(cache_dir))
    (other_file,) = set(cache_dir.glob("*.json")) - {one_file}
    other_file.write_bytes(one_file.read_bytes())  # the other folder's cache file now holds one's entries

    foreign = ParseCache(cache_dir)
    (plugin,) = load_plugins(other, cache=foreign)
    assert (foreign.stats.parsed, foreign.stats.hits) == (3, 0)
    assert "Be long." in plugin.functions["summary"].template_source


def test_nothing_is_written_beside_the_plugin_files(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    before = tree(tmp_path)
    for _ in range(2):
        load_plugins(root, cache=ParseCache(cache_dir))
        check_plugins(root, cache=ParseCache(cache_dir))
    Kernel(KernelSettings(plugin_dirs=[root], cache_dir=tmp_path / "kernel-cache", standard_plugins=False),
           load_entry_points=False)
    after = tree(tmp_path)
    written = sorted(set(after) - set(before))
    assert {name: after[name] for name in before} == before  # not one plugin file touched
    assert [Path(name).parent for name in written] == [Path("cache"), Path("kernel-cache/parse-cache")]
    assert all(name.endswith(".json") and not Path(name).name.startswith(".") for name in written)


def test_parse_cache_false_writes_nothing(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "plugins")
    off, on = tmp_path / "off", tmp_path / "on"
    kernel = Kernel(KernelSettings(plugin_dirs=[root], cache_dir=off, parse_cache=False), load_entry_points=False)
    assert kernel.get_function("tools.summary").description == "Summarize a text."
    assert not off.exists()
    Kernel(KernelSettings(plugin_dirs=[root], cache_dir=on), load_entry_points=False)
    assert len(list((on / "parse-cache").glob("*.json"))) >= 1  # the same kernel with the cache on writes


def _run(code: str, cache_dir: Path, root: Path) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(PYTHONPATH=str(REPO), KERNEL_CACHE_DIR=str(cache_dir), KERNEL_PLUGIN_AUTOLOAD="false",
               KERNEL_PLUGIN_DIRS=json.dumps([str(root)]))
    cwd = cache_dir.parent
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    stats: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return stats


def test_a_second_process_loads_the_folder_without_parsing(tmp_path: Path) -> None:
    root, cache_dir = write_folder(tmp_path / "plugins"), tmp_path / "cache"
    code = (
        "import json\n"
        "from kernel import Kernel\n"
        "from kernel.plugin_folders import parse_cache_of\n"
        "kernel = Kernel()\n"
        "assert kernel.get_function('tools.greet') is not None\n"
        "print(json.dumps(parse_cache_of(kernel.settings).stats.as_dict()))\n"
    )
    first = _run(code, cache_dir, root)
    second = _run(code, cache_dir, root)
    # the folder's 3 functions and the standard writer's 2 prompt files
    assert (first["parsed"], first["hits"]) == (5, 0)
    assert (second["parsed"], second["hits"]) == (0, 5)
    assert second["files_written"] == 0


def test_a_warm_kernel_loads_neither_the_template_engine_nor_the_yaml_parser(tmp_path: Path) -> None:
    """The standard prompt files restored from the cache: jinja2 and PyYAML load with the
    first render or the first changed file, not with `Kernel()` (a cold start cost)."""
    cache_dir = tmp_path / "cache"
    code = (
        "import json, sys\n"
        "from kernel import Kernel\n"
        "from kernel.plugin_folders import parse_cache_of\n"
        "kernel = Kernel()\n"
        "assert kernel.get_function('writer.summarize') is not None\n"
        "stats = parse_cache_of(kernel.settings).stats.as_dict()\n"
        "stats.update(jinja2='jinja2' in sys.modules, yaml='yaml' in sys.modules)\n"
        "print(json.dumps(stats))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(PYTHONPATH=str(REPO), KERNEL_CACHE_DIR=str(cache_dir), KERNEL_PLUGIN_AUTOLOAD="false")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True,
                                      capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1])
            for _ in range(2)]
    assert (runs[0]["parsed"], runs[0]["jinja2"], runs[0]["yaml"]) == (2, True, True)
    assert (runs[1]["parsed"], runs[1]["hits"], runs[1]["jinja2"], runs[1]["yaml"]) == (0, 2, False, False)


def test_kernels_built_from_the_same_cache_share_nothing_mutable(tmp_path: Path) -> None:
    from kernel import kernel_function

    root = write_folder(tmp_path / "plugins")
    settings = KernelSettings(plugin_dirs=[root], cache_dir=tmp_path / "cache")
    first, second = (Kernel(settings, load_entry_points=False) for _ in range(2))
    one, two = first.get_function("tools.summary"), second.get_function("tools.summary")
    assert one is not two
    one.description = "changed"
    one.execution_settings["default"]["max_tokens"] = 1  # type: ignore[attr-defined]
    first.add_function(kernel_function(lambda: 1, name="extra"), plugin="tools")
    third = Kernel(settings, load_entry_points=False)
    for kernel in (second, third):
        fn = kernel.get_function("tools.summary")
        assert fn.description == "Summarize a text."
        assert fn.execution_settings["default"]["max_tokens"] == 64  # type: ignore[attr-defined]
        assert "extra" not in kernel.plugins["tools"].functions
    assert first.plugins is not second.plugins and first.services.connectors is not second.services.connectors
