"""Loading the configuration again: what pydantic-settings computes once per process
(the settings class bound to a file, the values of unchanged sources, a parsed file) never
hides a change of the environment, `.env` or the file, and never shares mutable values
between two loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernel import Kernel, KernelSettings
from kernel.errors import ConfigurationError


def test_a_changed_environment_variable_is_seen_by_the_next_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_DEFAULT_CHAT", "first")
    monkeypatch.setenv("KERNEL_RETRY__MAX_ATTEMPTS", "4")
    first = KernelSettings.load()
    assert (first.default_chat, first.retry.max_attempts) == ("first", 4)

    monkeypatch.setenv("KERNEL_DEFAULT_CHAT", "second")
    monkeypatch.setenv("KERNEL_RETRY__MAX_ATTEMPTS", "7")
    second = KernelSettings.load()
    assert (second.default_chat, second.retry.max_attempts) == ("second", 7)

    monkeypatch.delenv("KERNEL_DEFAULT_CHAT")
    monkeypatch.delenv("KERNEL_RETRY__MAX_ATTEMPTS")
    third = KernelSettings.load()
    assert (third.default_chat, third.retry.max_attempts) == (None, 3)
    assert Kernel(load_entry_points=False).settings.default_chat is None


def test_a_changed_config_file_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    config = tmp_path / "kernel.toml"
    config.write_text('default_chat = "aaaa"\nmax_call_depth = 5\n', encoding="utf-8")
    stat = config.stat()
    assert KernelSettings.load(config).default_chat == "aaaa"

    config.write_text('default_chat = "bbbb"\nmax_call_depth = 6\n', encoding="utf-8")
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert config.stat().st_size == stat.st_size and config.stat().st_mtime_ns == stat.st_mtime_ns
    settings = KernelSettings.load(config)
    assert (settings.default_chat, settings.max_call_depth) == ("bbbb", 6)

    config.write_text('default_chat = "cccc"\nmax_call_depth = [\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"kernel\.toml: invalid TOML"):
        KernelSettings.load(config)


def test_a_changed_dotenv_file_is_seen_by_the_next_load(isolated_environment: Path) -> None:
    dotenv = isolated_environment / ".env"
    dotenv.write_text("KERNEL_DEFAULT_MEMORY=one\n", encoding="utf-8")
    assert KernelSettings.load().default_memory == "one"
    dotenv.write_text("KERNEL_DEFAULT_MEMORY=two\n", encoding="utf-8")
    assert KernelSettings.load().default_memory == "two"
    dotenv.unlink()
    assert KernelSettings.load().default_memory is None


def test_two_loads_share_no_mutable_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kernel.toml"
    config.write_text('[services.store]\nprovider = "sqlite"\noptions = { path = "data/memory.db" }\n',
                      encoding="utf-8")
    monkeypatch.setenv("KERNEL_RECALL_COLLECTIONS", '["docs", "notes"]')
    first = KernelSettings.load(config)
    first.services["store"].options["path"] = "elsewhere.db"
    first.recall_collections.append("secrets")
    second = KernelSettings.load(config)
    assert second.services["store"].options["path"] == str(tmp_path / "data" / "memory.db")
    assert second.recall_collections == ["docs", "notes"]


def test_the_file_is_bound_once_and_named_by_config_file(tmp_path: Path) -> None:
    one, other = tmp_path / "one.toml", tmp_path / "other.toml"
    one.write_text('default_chat = "one"\n', encoding="utf-8")
    other.write_text('default_chat = "other"\n', encoding="utf-8")
    first, again, third = KernelSettings.load(one), KernelSettings.load(one), KernelSettings.load(other)
    assert type(first) is type(again)  # the class made for a file is made once
    assert type(first) is not type(third)
    assert isinstance(first, KernelSettings) and isinstance(third, KernelSettings)
    assert (first.config_file, third.config_file) == (one, other)
    assert (first.default_chat, third.default_chat) == ("one", "other")
    assert KernelSettings.load().config_file is None
    assert KernelSettings(**{}).config_file is None


def test_relative_paths_follow_the_file_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "kernel.toml").write_text('plugin_dirs = ["plugins"]\n', encoding="utf-8")
    for name in ("a", "b", "a"):
        monkeypatch.chdir(tmp_path / name)
        settings = KernelSettings.load()  # the same relative name, another file each time
        assert settings.plugin_dirs == [tmp_path / name / "plugins"]


def test_loads_in_many_threads_each_see_their_own_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = []
    for i in range(80):  # more files than the caches keep: entries are evicted while others load
        path = tmp_path / f"k{i}.toml"
        path.write_text(f'default_chat = "chat-{i}"\n', encoding="utf-8")
        files.append((i, path))

    def load(item: tuple[int, Path]) -> bool:
        i, path = item
        settings = KernelSettings.load(path)
        return settings.default_chat == f"chat-{i}" and settings.config_file == path

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(load, files * 3))
