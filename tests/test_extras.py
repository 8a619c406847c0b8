"""The core install holds what `Kernel()` with the defaults needs; the provider SDKs and numpy
are extras. Without one, `Kernel()` still starts, and what needs it fails when it is built or
first used, with an error naming the extra to install. Each case runs in a fresh process
where the module cannot be imported (as if it were not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

BLOCK = (
    "import sys\n"
    "for name in {blocked!r}:\n"
    "    sys.modules[name] = None  # `import name` raises ModuleNotFoundError, as when not installed\n"
)


def run(code: str, blocked: list[str], tmp_path: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_", "OPENAI_", "ANTHROPIC_"))}
    env.update(PYTHONPATH=str(REPO), KERNEL_PLUGIN_AUTOLOAD="false", KERNEL_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", BLOCK.format(blocked=blocked) + code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_core_leaves_out_the_provider_sdks_and_numpy() -> None:
    core = {Requirement(r).name for r in PROJECT["dependencies"]}
    assert not core & {"openai", "anthropic", "numpy", "torch"}
    extras = PROJECT["optional-dependencies"]
    for extra, name in (("openai", "openai"), ("anthropic", "anthropic"), ("memory", "numpy"),
                        ("azure", "openai"), ("bedrock", "anthropic"), ("vertex", "anthropic"),
                        ("local", "numpy"), ("postgres", "numpy")):
        assert name in {Requirement(r).name for r in extras[extra]}, (extra, name)


def test_a_default_kernel_starts_without_them(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "from kernel import Kernel\n"
        "kernel = Kernel()\n"
        "print(json.dumps({'functions': sorted(kernel.plugins)}))\n"
    )
    result = run(code, ["openai", "anthropic", "numpy"], tmp_path)
    assert {"math", "text", "time", "writer"} <= set(result["functions"])  # type: ignore[arg-type]


@pytest.mark.parametrize(("provider", "module", "extra"), [
    ("openai", "openai", "openai"), ("ollama", "openai", "openai"), ("azure_openai", "openai", "openai"),
    ("anthropic", "anthropic", "anthropic"),
])
def test_a_service_without_its_sdk_names_the_extra(tmp_path: Path, provider: str, module: str, extra: str) -> None:
    code = (
        "import json\n"
        "from kernel import Kernel, KernelSettings\n"
        "from kernel.errors import ExtraNotInstalledError\n"
        f"settings = KernelSettings(services={{'svc': {{'provider': {provider!r}, 'model': 'm', 'api_key': 'k-123456',"
        " 'base_url': 'http://127.0.0.1:9'}}, default_chat='svc')\n"
        "kernel = Kernel(settings)\n"
        "try:\n"
        "    kernel.services.get('svc', 'chat')  # the service is built here\n"
        "except ExtraNotInstalledError as exc:\n"
        "    print(json.dumps({'error': str(exc), 'extra': exc.extra}))\n"
        "else:\n"
        "    print(json.dumps({'error': None}))\n"
    )
    result = run(code, [module], tmp_path)
    assert result["extra"] == extra
    assert f'pip install "orchestration-kernel[{extra}]"' in str(result["error"])


def test_the_sqlite_store_without_numpy_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import asyncio, json\n"
        "from connectors.sqlite_store import SQLiteVectorStore\n"
        "from kernel.errors import ExtraNotInstalledError\n"
        "async def main():\n"
        "    store = SQLiteVectorStore('m.db')\n"
        "    await store.create_collection('docs', 3)\n"
        "    try:\n"
        "        await store.search('docs', [1.0, 0.0, 0.0], k=1)\n"
        "    except ExtraNotInstalledError as exc:\n"
        "        return {'error': str(exc), 'extra': exc.extra}\n"
        "    finally:\n"
        "        await store.close()\n"
        "    return {'error': None}\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    result = run(code, ["numpy"], tmp_path)
    assert result["extra"] == "memory"
    assert "the SQLite vector store" in str(result["error"])
