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
