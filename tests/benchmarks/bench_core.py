"""Core budgets (DESIGN.md): import time, trivial invoke, template render, loading prompt
functions from disk, peak memory of a bare kernel process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
Row = tuple[Any, ...]

IMPORT_RUNS = 15
FUNCTIONS_ON_DISK = 200


def _best_subprocess(code: str, runs: int) -> float:
    """Best CPU time (user + sys) of a child running `code`: on a busy machine CPU time is
    far steadier than wall-clock time, and a cold import is CPU-bound."""
    import resource

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, cpu)
    return best


def bench_import() -> list[Row]:
    _best_subprocess("from kernel import Kernel", 2)  # warm the bytecode cache
    rows: list[Row] = []
    floor = ours = float("inf")
    for _ in range(IMPORT_RUNS // 5):  # interleave, so load changes hit both alike
        floor = min(floor, _best_subprocess("pass", 5))
        ours = min(ours, _best_subprocess("from kernel import Kernel", 5))
    rows.append(("`from kernel import Kernel` (process CPU time, vs `python -c pass`)", ours, floor))
    built = _best_subprocess(
        "from kernel import Kernel, KernelSettings; Kernel(KernelSettings(), load_entry_points=False)", 5
    )
    rows.append(("import + Kernel() with built-in plugins (process CPU time)", built, floor))
    cold = min(_best_subprocess("from kernel import Kernel; Kernel()", 5) for _ in range(2))
    floor = min(floor, _best_subprocess("pass", 5))
    rows.append(("first Kernel() in a fresh process, defaults, imports included (CPU; budget < 200 ms net)",
                 cold, floor))
    return rows


def bench_construction() -> list[Row]:
    """A further `Kernel()` in a warm process (budget: < 1 ms with the defaults; with the
    standard plugins and autoload off, under Semantic Kernel's bare `Kernel()`, 0.1 ms)."""
    from kernel import Kernel, KernelSettings

    Kernel()
    bare = KernelSettings(standard_plugins=False, plugin_autoload=False)
    rows: list[Row] = [
        ("another Kernel() in a warm process, defaults (settings loaded; budget < 1 ms)",
         _best_sync(Kernel, batch=100, repeats=10), None),
        ("  of which KernelSettings.load() (pydantic-settings)", _best_sync(KernelSettings.load, batch=100), None),
        ("another Kernel(settings) without standard plugins and autoload (SK bare: 0.1 ms)",
         _best_sync(lambda: Kernel(bare), batch=200, repeats=10), None),
    ]
    return rows


def _memory_of(code: str) -> float:
    # VmHWM, not ru_maxrss: ru_maxrss survives fork+exec, so a child reports its parent's peak.
    probe = code + "\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe], check=True, env=env, cwd=ROOT,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024  # KiB -> MiB (Linux)


def bench_memory() -> list[Row]:
    floor = _memory_of("pass")
    ours = _memory_of("from kernel import Kernel, KernelSettings\nKernel(KernelSettings(), load_entry_points=False)")
    core = _memory_of("from kernel import Kernel, KernelSettings\n"
                      "Kernel(KernelSettings(), load_entry_points=False, builtins=False)")
    return [
        ("peak RSS of a kernel process, Kernel() with built-in plugins", ours, floor, "MiB"),
        ("peak RSS of a bare kernel process, Kernel(builtins=False)", core, floor, "MiB"),
    ]


async def _best_async(make: Callable[[], Awaitable[Any]], batch: int = 2000, repeats: int = 60) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            await make()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


async def _compare(ours: Callable[[], Awaitable[Any]], floor: Callable[[], Awaitable[Any]],
                   rounds: int = 5) -> tuple[float, float]:
    """Interleaved best-of: both sides see the same machine load."""
    best_ours = best_floor = float("inf")
    for _ in range(rounds):
        best_floor = min(best_floor, await _best_async(floor, repeats=12))
        best_ours = min(best_ours, await _best_async(ours, repeats=12))
    return best_ours, best_floor


def _best_sync(func: Callable[[], Any], batch: int = 2000, repeats: int = 12) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            func()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


async def _bench_invoke_and_render() -> list[Row]:
    import jinja2

    from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
    from kernel.testing import ScriptedChatModel

    async def trivial() -> int:
        return 1

    async def one_arg(x: int) -> int:
        return x

    kernel = Kernel(KernelSettings(), load_entry_points=False, builtins=False)
    kernel.services.add_service("bench", ScriptedChatModel(default="ok"))
    kernel.add_plugin([kernel_function(trivial), kernel_function(one_arg)], name="bench")
    fn0, fn1 = kernel.get_function("bench.trivial"), kernel.get_function("bench.one_arg")
    rows: list[Row] = []
    ours, floor = await _compare(lambda: kernel.invoke(fn0), trivial)
    rows.append(("invoke trivial native function (vs direct await)", ours, floor))
    ours, floor = await _compare(lambda: kernel.invoke(fn1, x=1), lambda: one_arg(1))
    rows.append(("invoke native function, one int argument (vs direct await)", ours, floor))
    ours, floor = await _compare(lambda: kernel.invoke("bench.one_arg", x=1), lambda: one_arg(1))
    rows.append(("invoke by name 'bench.one_arg' (vs direct await)", ours, floor))

    def add(a: int, b: int) -> int:
        return a + b

    async def add_direct(a: int, b: int) -> int:
        return a + b

    kernel.add_plugin([kernel_function(add)], name="calc")
    fn_add = kernel.get_function("calc.add")
    ours, floor = await _compare(lambda: kernel.invoke(fn_add, a=1, b=2), lambda: add_direct(a=1, b=2))
    rows.append(("invoke sync add(a: int, b: int), keyword ints (vs direct await; budget < 3 µs)", ours, floor))
    ours, floor = await _compare(lambda: kernel.invoke("calc.add", a=1, b=2), lambda: add_direct(a=1, b=2))
    rows.append(("  same, by name 'calc.add'", ours, floor))

    source = (
        '<message role="system">You are a {{ style }} assistant.</message>\n'
        '<message role="user">Summarize for {{ audience }}:\n{{ text }}</message>'
    )
    values = {"style": "concise", "audience": "engineers", "text": "A short text about <kernels> & prompts."}
    prompt = PromptFunction.from_template(source, name="summary", plugin="bench")
    kernel.add_function(prompt)
    plain = jinja2.Environment(autoescape=True).from_string(source)
    floor = _best_sync(lambda: plain.render(values))
    ours = await _best_async(lambda: kernel.render(prompt, values), repeats=12)
    for _ in range(2):
        floor = min(floor, _best_sync(lambda: plain.render(values)))
        ours = min(ours, await _best_async(lambda: kernel.render(prompt, values), repeats=12))
    rows.append(("render small chat template to messages (vs precompiled Jinja render)", ours, floor))
    text_only = await _best_async(lambda: prompt.render(kernel, values), repeats=12)
    rows.append(("  of which template render (sandboxed, escaped)", text_only, floor))

    loop_source = (
        '<message role="system">You are helpful.</message>\n<message role="user">Items:\n'
        "{% for item in items %}- {{ item.name }}: {{ item.value }}\n{% endfor %}Question: {{ question }}</message>"
    )
    loop_values = {"items": [{"name": f"n{i}", "value": i} for i in range(5)], "question": "which <one>?"}
    loop = PromptFunction.from_template(loop_source, name="loop", plugin="bench")
    kernel.add_function(loop)
    loop_plain = jinja2.Environment(autoescape=True).from_string(loop_source)
    floor = ours = float("inf")
    for _ in range(3):
        floor = min(floor, _best_sync(lambda: loop_plain.render(loop_values)))
        ours = min(ours, await _best_async(lambda: kernel.render(loop, loop_values), repeats=12))
    rows.append(("kernel.render of a small template with a loop to messages (vs precompiled Jinja; budget < 2x)",
                 ours, floor))
    return rows


def _write_prompt_folder(root: Path, tag: str, count: int) -> tuple[Path, Path, list[Path]]:
    ours_dir, sk_dir = root / "ours", root / "sk"
    ours_dir.mkdir()
    sk_dir.mkdir()
    files: list[Path] = []
    for i in range(count):
        body = (
            f"---\ndescription: Summarize a text, variant {i}.\ninputs:\n  text:\n    description: the text\n"
            "settings:\n  max_tokens: 64\n---\n"
            f'<message role="system">Variant {i} {tag}.</message>\n<message role="user">{{{{ text }}}}</message>\n'
        )
        path = ours_dir / f"f{i}.prompt"
        path.write_text(body, encoding="utf-8")
        files.append(path)
        folder = sk_dir / f"f{i}"
        folder.mkdir()
        (folder / "skprompt.txt").write_text(f"Variant {i} {tag}. Summarize: {{{{$input}}}}", encoding="utf-8")
        (folder / "config.json").write_text(json.dumps({
            "schema": 1, "description": f"variant {i}",
            "execution_settings": {"default": {"max_tokens": 64}},
            "input_variables": [{"name": "input", "description": "the text", "is_required": True}],
        }), encoding="utf-8")
        files += [folder / "skprompt.txt", folder / "config.json"]
    return ours_dir, sk_dir, files


def bench_loading() -> list[Row]:
    try:
        from kernel.plugin_folders import load_plugins
    except ImportError:
        return [("load prompt functions: kernel.loader not available yet", 0.0, None)]
    best_ours = best_sk = best_floor_ours = best_floor_sk = float("inf")
    for repeat in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            ours_dir, sk_dir, files = _write_prompt_folder(Path(tmp), f"r{repeat}-{time.time_ns()}", FUNCTIONS_ON_DISK)
            start = time.perf_counter()
            for path in files:
                if path.suffix == ".prompt":
                    path.read_text(encoding="utf-8")
            best_floor_ours = min(best_floor_ours, (time.perf_counter() - start) / FUNCTIONS_ON_DISK)
            start = time.perf_counter()
            for path in files:
                if path.suffix != ".prompt":
                    path.read_text(encoding="utf-8")
            best_floor_sk = min(best_floor_sk, (time.perf_counter() - start) / FUNCTIONS_ON_DISK)
            start = time.perf_counter()
            plugins = load_plugins(ours_dir)
            best_ours = min(best_ours, (time.perf_counter() - start) / FUNCTIONS_ON_DISK)
            assert sum(len(p) for p in plugins) == FUNCTIONS_ON_DISK
            start = time.perf_counter()
            plugins = load_plugins(sk_dir)
            best_sk = min(best_sk, (time.perf_counter() - start) / FUNCTIONS_ON_DISK)
            assert sum(len(p) for p in plugins) == FUNCTIONS_ON_DISK
    rows: list[Row] = [
        (f"load one prompt function, our .prompt format ({FUNCTIONS_ON_DISK} in a folder; vs reading the files)",
         best_ours, best_floor_ours),
        (f"load one prompt function, SK folder format ({FUNCTIONS_ON_DISK}; vs reading the files)",
         best_sk, best_floor_sk),
    ]
    return rows + _bench_parse_cache()


def _bench_parse_cache() -> list[Row]:
    """Loading with the persistent parse cache (`cache_dir/parse-cache`): cold (an empty
    cache: parse, validate, write), warm from disk (a new process's view: a new cache
    object reading the file) and warm in the same process."""
    from kernel.plugin_folders import ParseCache, load_plugins

    best: dict[str, float] = {}
    floors: dict[str, float] = {}

    def keep(name: str, seconds: float, floor: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds / FUNCTIONS_ON_DISK)
        floors[name] = min(floors.get(name, float("inf")), floor)

    for repeat in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            ours_dir, sk_dir, files = _write_prompt_folder(Path(tmp), f"c{repeat}-{time.time_ns()}", FUNCTIONS_ON_DISK)
            for label, folder, suffix in (("ours", ours_dir, ".prompt"), ("sk", sk_dir, None)):
                start = time.perf_counter()
                for path in files:
                    if (path.suffix == ".prompt") == (suffix == ".prompt"):
                        path.read_bytes()
                floor = (time.perf_counter() - start) / FUNCTIONS_ON_DISK
                cache_dir = Path(tmp) / f"cache-{label}"
                cache = ParseCache(cache_dir)
                for kind in ("cold", "warm from disk", "warm in process"):
                    if kind == "warm from disk":
                        cache = ParseCache(cache_dir)  # what a new process sees: the file only
                    start = time.perf_counter()
                    plugins = load_plugins(folder, cache=cache)
                    keep(f"{label}:{kind}", time.perf_counter() - start, floor)
                    assert sum(len(p) for p in plugins) == FUNCTIONS_ON_DISK
                    expected = FUNCTIONS_ON_DISK if kind == "cold" else 0
                    assert cache.stats.parsed == expected, (kind, cache.stats)
    rows: list[Row] = []
    for label, title in (("ours", "our .prompt format"), ("sk", "SK folder format")):
        for kind, budget in (("cold", "budget < 250 µs"), ("warm from disk", "budget < 60 µs"),
                             ("warm in process", "")):
            rows.append((f"load one prompt function with the parse cache, {title}, {kind}"
                         f"{'; ' + budget if budget else ''} (vs reading the files)",
                         best[f"{label}:{kind}"], floors[f"{label}:{kind}"]))
    return rows


def run() -> list[Row]:
    rows = bench_import()
    rows += bench_construction()
    rows += asyncio.run(_bench_invoke_and_render())
    rows += bench_loading()
    rows += bench_memory()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
