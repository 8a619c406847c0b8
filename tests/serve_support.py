"""Support of the `kernel serve` tests: the `rules` test connector installed as a
third-party distribution (a dist-info with an entry point, as `pip install` leaves one),
a project folder with its kernel.toml, and `kernel serve` run in a real uvicorn process
through the console script.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "serve"
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def install_rules_model(site: Path) -> Path:
    """The `rules` connector as an installed distribution `kernel-rules-model` in `site`."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "rules_model.py", site / "rules_model.py")
    info = site / "kernel_rules_model-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernel-rules-model\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[orchestration_kernel]\nrules = rules_model\n", encoding="utf-8")
    return site


def write_project(root: Path, extra: str = "", *, delay: float = 0.0) -> Path:
    """A project folder: the rules connector installed beside it, a kernel.toml whose
    default chat service is `rules` (logging what it starts and what is cancelled to
    `root/model-log`)."""
    install_rules_model(root / "site-packages")
    log_dir = root / "model-log"
    log_dir.mkdir(exist_ok=True)
    (root / "kernel.toml").write_text(f'''
default_chat = "rules"
plugin_allowlist = "kernel-rules-model"

[services.rules]
provider = "rules"
options = {{ log_dir = "{log_dir}", delay = {delay}, delay_slow = 0.2 }}
{extra}
''', encoding="utf-8")
    return root


def write_upstream_project(root: Path, base_url: str, model: str = "stub-1") -> Path:
    """A project folder whose default chat service is the OpenAI connector pointed at an
    OpenAI-compatible server (`upstream`: tests/data/serve/upstream.py), no retries."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model-log").mkdir(exist_ok=True)
    (root / "kernel.toml").write_text(f'''
default_chat = "upstream"
plugin_autoload = false

[services.upstream]
provider = "openai"
model = "{model}"
base_url = "{base_url}"
api_key = "unused-upstream-key"
retry = {{ max_attempts = 1 }}
''', encoding="utf-8")
    return root


@contextlib.contextmanager
def upstream(log_dir: Path | None = None, *, delay: float = 0.2, timeout: float = 30.0) -> Iterator[str]:
    """The OpenAI-compatible stub server (tests/data/serve/upstream.py) in its own uvicorn
    process: yields its base URL (`http://127.0.0.1:PORT/v1`)."""
    argv = [sys.executable, str(DATA / "upstream.py"), "--port", "0", "--delay", str(delay)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--log-dir", str(log_dir)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")})
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            url = lines.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError("the upstream stub did not start") from None
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def project_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "site-packages"), str(ROOT)])
    return env


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    root: Path
    facts: dict[str, object]

    @property
    def log_dir(self) -> Path:
        return self.root / "model-log"

    def rss_kib(self) -> int:
        """The server process's resident memory (VmRSS), KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def serving(root: Path, *args: str, timeout: float = 60.0) -> Iterator[Served]:
    """`kernel serve --port 0 --json ...` in `root`, until the block ends."""
    argv = [str(CONSOLE_SCRIPT), "serve", "--port", "0", "--json", "--plugins", str(DATA / "plugins"), *args]
    process = subprocess.Popen(argv, cwd=root, env=project_env(root), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    assert process.stdout is not None and process.stderr is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    threading.Thread(target=lambda: [errors.append(line) for line in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"kernel serve did not start:\n{''.join(errors)[-3000:]}") from None
        facts = json.loads(first)
        yield Served(str(facts["url"]), process, root, facts)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    stderr = "".join(errors)
    assert "Traceback" not in stderr, stderr[-3000:]
