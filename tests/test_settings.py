"""Configuration: kernel.toml, KERNEL_* environment (nested with __), .env; precise errors;
masked output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel import KernelSettings
from kernel.errors import ConfigurationError

TOML = """
default_chat = "from-toml"
max_call_depth = 5

[services.main]
provider = "openai"
model = "gpt-4o-mini"
api_key = "sk-toml-secret-0123456789"
settings = { temperature = 0.2 }

[services.backup]
provider = "anthropic"
model = "claude-x"
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with no KERNEL_* variables from the outside."""
    import os

    for name in list(os.environ):
        if name.startswith("KERNEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_values(isolated: Path) -> None:
    settings = KernelSettings.load(write(isolated / "conf.toml", TOML))
    assert settings.default_chat == "from-toml"
    assert settings.max_call_depth == 5
    assert settings.services["main"].model == "gpt-4o-mini"
    assert settings.services["main"].settings == {"temperature": 0.2}
    assert settings.services["main"].secret() == "sk-toml-secret-0123456789"


def test_env_overrides_dotenv_overrides_toml(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(isolated / "conf.toml", TOML)
    write(isolated / ".env", "KERNEL_DEFAULT_CHAT=from-dotenv\nKERNEL_MAX_CALL_DEPTH=7\n")
    settings = KernelSettings.load(config)
    assert settings.default_chat == "from-dotenv"
    assert settings.max_call_depth == 7
    monkeypatch.setenv("KERNEL_DEFAULT_CHAT", "from-env")
    settings = KernelSettings.load(config)
    assert settings.default_chat == "from-env"
    assert settings.max_call_depth == 7  # still from .env
    assert KernelSettings.load(config, default_chat="from-code").default_chat == "from-code"


def test_nested_env_with_double_underscore(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_SERVICES__LOCALAI__PROVIDER", "openai")
    monkeypatch.setenv("KERNEL_SERVICES__LOCALAI__BASE_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("KERNEL_TOOL_LOOP__MAX_ROUNDS", "3")
    monkeypatch.setenv("KERNEL_LOG__LEVEL", "debug")
    settings = KernelSettings.load()
    assert settings.services["localai"].provider == "openai"
    assert settings.services["localai"].base_url == "http://127.0.0.1:8080/v1"
    assert settings.tool_loop.max_rounds == 3
    assert settings.log.level == "debug"


def test_default_kernel_toml_in_cwd_and_kernel_config_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert KernelSettings.load().default_chat is None
    write(isolated / "kernel.toml", 'default_chat = "cwd"\n')
    assert KernelSettings.load().default_chat == "cwd"
    other = write(isolated / "other.toml", 'default_chat = "via-env"\n')
    monkeypatch.setenv("KERNEL_CONFIG", str(other))
    assert KernelSettings.load().default_chat == "via-env"


def test_missing_file_is_named(isolated: Path) -> None:
    missing = isolated / "nope" / "kernel.toml"
    with pytest.raises(ConfigurationError, match="not found") as info:
        KernelSettings.load(missing)
    assert str(missing) in str(info.value)


def test_invalid_toml_names_the_file(isolated: Path) -> None:
    bad = write(isolated / "bad.toml", "default_chat = \n[services\n")
    with pytest.raises(ConfigurationError, match="invalid TOML") as info:
        KernelSettings.load(bad)
    assert str(bad) in str(info.value)


def test_unknown_key_is_named(isolated: Path) -> None:
    config = write(isolated / "conf.toml", 'default_chat = "x"\ndefault_chatt = "typo"\n')
    with pytest.raises(ConfigurationError, match="default_chatt") as info:
        KernelSettings.load(config)
    assert str(config) in str(info.value)
    nested = write(isolated / "nested.toml", '[services.a]\nprovider = "openai"\nmodle = "x"\n')
    with pytest.raises(ConfigurationError, match=r"services\.a\.modle"):
        KernelSettings.load(nested)


def test_invalid_value_is_named(isolated: Path) -> None:
    config = write(isolated / "conf.toml", "max_call_depth = 0\n")
    with pytest.raises(ConfigurationError, match="max_call_depth"):
        KernelSettings.load(config)


def test_masked_hides_keys(isolated: Path) -> None:
    settings = KernelSettings.load(write(isolated / "conf.toml", TOML))
    masked = settings.masked()
    text = json.dumps(masked)
    assert "sk-toml-secret-0123456789" not in text
    assert masked["services"]["main"]["api_key"] not in (None, "")
    assert masked["services"]["main"]["model"] == "gpt-4o-mini"
    assert "sk-toml-secret-0123456789" not in repr(settings)
