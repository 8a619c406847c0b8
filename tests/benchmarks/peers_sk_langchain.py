"""Side by side with the peers (`run.py --peers`): the same operations through this kernel,
Semantic Kernel (`semantic-kernel`) and LangChain (`langchain-core`), interleaved in one
run so that the ratios see the same machine load. A peer that is not installed gives a row
saying how to install it; nothing is downloaded here.

Operations: import (process CPU time, net of `python -c pass`), building a kernel, invoking
`add(a: int, b: int)` with keyword ints, rendering a small chat template with a loop to
messages. Rows are (label, ours, peer): the "floor" column holds the peer's figure, so a
ratio under 1 means ours is faster.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = tuple[Any, ...]
ITEMS = [{"name": f"n{i}", "value": i} for i in range(5)]
SYSTEM = "You are helpful."
USER = "Items:\n{% for item in items %}- {{ item.name }}: {{ item.value }}\n{% endfor %}Question: {{ question }}"
OURS_TEMPLATE = f'<message role="system">{SYSTEM}</message>\n<message role="user">{USER}</message>'
VALUES = {"items": ITEMS, "question": "which <one>?"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cpu(code: str, runs: int = 5) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best


def _sync(func: Callable[[], Any], batch: int = 200, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            func()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


async def _async(make: Callable[[], Awaitable[Any]], batch: int = 500, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            await make()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


class Ours:
    name = "ours"
    import_code = "from kernel import Kernel"

    def __init__(self) -> None:
        from kernel import Kernel, KernelSettings, PromptFunction, kernel_function

        self.settings = KernelSettings(standard_plugins=False, plugin_autoload=False)
        self.Kernel = Kernel
        kernel = Kernel(self.settings)

        def add(a: int, b: int) -> int:
            return a + b

        kernel.add_plugin([kernel_function(add)], name="calc")
        self.kernel, self.add = kernel, kernel.get_function("calc.add")
        self.prompt = PromptFunction.from_template(OURS_TEMPLATE, name="loop", plugin="bench")

    def build(self) -> Any:
        return self.Kernel(self.settings)

    def invoke(self) -> Awaitable[Any]:
        return self.kernel.invoke(self.add, a=1, b=2)

    def render(self) -> Awaitable[Any]:
        return self.kernel.render(self.prompt, VALUES)


class SemanticKernel:
    name = "Semantic Kernel"
    module = "semantic_kernel"
    install = "pip install semantic-kernel"
    import_code = "from semantic_kernel import Kernel"

    def __init__(self) -> None:
        from semantic_kernel import Kernel
        from semantic_kernel.functions import KernelArguments, kernel_function
        from semantic_kernel.prompt_template import Jinja2PromptTemplate, PromptTemplateConfig

        class Calc:
            @kernel_function
            def add(self, a: int, b: int) -> int:
                return a + b

        self.Kernel, self.Arguments = Kernel, KernelArguments
        self.kernel = Kernel()
        self.kernel.add_plugin(Calc(), "calc")
        self.add = self.kernel.get_function("calc", "add")
        source = f'<message role="system">{SYSTEM}</message>\n<message role="user">{USER}</message>'
        self.template = Jinja2PromptTemplate(
            prompt_template_config=PromptTemplateConfig(template=source, template_format="jinja2"))
        from semantic_kernel.contents import ChatHistory

        self.ChatHistory = ChatHistory

    def build(self) -> Any:
        return self.Kernel()

    def invoke(self) -> Awaitable[Any]:
        return self.kernel.invoke(self.add, self.Arguments(a=1, b=2))

    async def render(self) -> Any:
        text = await self.template.render(self.kernel, self.Arguments(**VALUES))
        return self.ChatHistory.from_rendered_prompt(text)


class LangChain:
    name = "LangChain"
    module = "langchain_core"
    install = "pip install langchain-core"
    import_code = "from langchain_core.runnables import RunnableLambda"

    def __init__(self) -> None:
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.tools import tool

        @tool
        def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        self.add = add
        self.template = ChatPromptTemplate.from_messages([("system", SYSTEM), ("user", USER)],
                                                         template_format="jinja2")

    def build(self) -> Any:
        return None  # LangChain has no kernel object

    def invoke(self) -> Awaitable[Any]:
        return self.add.ainvoke({"a": 1, "b": 2})

    async def render(self) -> Any:
        return self.template.format_messages(**VALUES)


async def _side_by_side(ours: Ours, peer: Any) -> list[Row]:
    rows: list[Row] = []
    if peer.build() is not None:
        peer_build, our_build = _sync(peer.build), _sync(ours.build)
        rows.append((f"vs {peer.name}: build a kernel (ours: without standard plugins and autoload)",
                     our_build, peer_build))
    for label, peer_op, our_op in (("invoke add(a: int, b: int), keyword ints", peer.invoke, ours.invoke),
                                   ("render a small template with a loop to messages", peer.render, ours.render)):
        await peer_op()
        await our_op()
        best_peer = best_ours = float("inf")
        for _ in range(3):  # interleaved
            best_peer = min(best_peer, await _async(peer_op))
            best_ours = min(best_ours, await _async(our_op))
        rows.append((f"vs {peer.name}: {label}", best_ours, best_peer))
    return rows


def run() -> list[Row]:
    rows: list[Row] = []
    ours = Ours()
    floor = _cpu("pass")
    our_import = _cpu(Ours.import_code) - floor
    for peer_class in (SemanticKernel, LangChain):
        if not installed(peer_class.module):
            rows.append((f"{peer_class.name}: not installed ({peer_class.install})", 0.0, None, "-"))
            continue
        try:
            rows.append((f"vs {peer_class.name}: import, net of python -c pass (CPU)",
                         our_import, _cpu(peer_class.import_code) - floor))
            rows += asyncio.run(_side_by_side(ours, peer_class()))
        except Exception as exc:  # an API that moved: say so, keep the other peer
            rows.append((f"{peer_class.name}: FAILED {type(exc).__name__}: {exc}", 0.0, None, "-"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
