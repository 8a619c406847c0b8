"""`import kernel` and `Kernel()` load no provider SDK (connectors import theirs lazily)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDKS = ("openai", "anthropic", "llama_cpp", "torch", "sentence_transformers", "psycopg", "opentelemetry")
# Loaded when first needed, not by `from kernel import Kernel`.
DEFERRED = ("jinja2", "pydantic", "pydantic_settings", "structlog", "pluggy")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_kernel_loads_no_sdk_and_no_heavy_dependency() -> None:
    modules = loaded_after("import kernel\nfrom kernel import Kernel")
    assert "kernel" in modules
    assert not modules & set(SDKS)
    assert not modules & set(DEFERRED), "these load on first use, keeping the import cheap"


def test_kernel_construction_loads_no_sdk() -> None:
    modules = loaded_after(
        "from kernel import Kernel, KernelSettings\n"
        "k = Kernel(KernelSettings(), load_entry_points=False)\n"
        "assert k.services.connectors, 'built-in connectors registered'"
    )
    assert {"pluggy", "pydantic"} <= modules  # the kernel really was built
    assert not modules & set(SDKS)


def test_every_public_name_loads_without_sdk() -> None:
    modules = loaded_after("import kernel\nfor name in kernel.__all__: getattr(kernel, name)")
    assert not modules & set(SDKS)


def test_a_cli_command_that_logs_nothing_does_not_import_structlog(tmp_path: Path) -> None:
    """The CLI configures logging deferred: structlog loads with the first log event."""
    folder = tmp_path / "greet"
    folder.mkdir()
    (folder / "hello.prompt").write_text("---\ndescription: Say hello\n---\nHello {{ name }}\n", encoding="utf-8")
    modules = loaded_after(
        "import contextlib, io\n"
        "from kernel.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    code = main(['plugins', 'list', '--plugins', {str(folder)!r}])\n"
        "assert code == 0 and 'hello' in out.getvalue(), (code, out.getvalue())"
    )
    assert "structlog" not in modules


def test_deferred_logging_configuration_takes_effect_with_the_first_event() -> None:
    probe = (
        "import io, sys\n"
        "from kernel import logging as klog\n"
        "buffer = io.StringIO()\n"
        "klog.configure('info', 'json', stream=buffer, deferred=True)\n"
        "assert 'structlog' not in sys.modules\n"
        "klog.LazyLogger('kernel.test').info('ping', api_key='sk-secretsecretsecret1234')\n"
        "print(buffer.getvalue().strip())"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         check=True, capture_output=True, text=True).stdout
    event = json.loads(out.splitlines()[-1])
    assert event["event"] == "ping" and event["level"] == "info"
    assert "secretsecret" not in out  # redaction is in the deferred pipeline too
