"""The event stream (`kernel.events`): what a trivial invoke costs with no sink, with the
journal on (SQLite, WAL, in a temporary folder), with events kept in memory, and with
OpenTelemetry (the SDK's in-memory exporter); the journal's write throughput.

Every "on" figure is measured side by side with the same kernel with events off, in the
same run, interleaved. "hot path" times the invokes while the writer thread works in the
background; "writer included" adds the time to write everything queued (invokes, then a
flush), divided by the invokes: the whole cost, the writer's CPU on the GIL included.
"""

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]
BATCH = 2000


async def _best(make: Callable[[], Awaitable[Any]], batch: int = BATCH, repeats: int = 10) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            await make()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


async def _side_by_side(on: Callable[[], Awaitable[Any]], off: Callable[[], Awaitable[Any]],
                        rounds: int = 5, batch: int = BATCH) -> tuple[float, float]:
    best_on = best_off = float("inf")
    for _ in range(rounds):
        best_off = min(best_off, await _best(off, batch))
        best_on = min(best_on, await _best(on, batch))
    return best_on, best_off


def _kernels(folder: Path) -> dict[str, Any]:
    from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
    from kernel.testing import ScriptedChatModel

    async def trivial() -> int:
        return 1

    async def outer(kernel: Kernel) -> int:  # one nested call: two function events per invoke
        return (await kernel.invoke("bench.trivial")).value  # type: ignore[no-any-return]

    outer.__annotations__["kernel"] = Kernel

    kernels = {}
    for name in ("off", "journal", "memory", "otel"):
        settings = KernelSettings(journal=name == "journal", journal_path=folder / f"{name}.db",
                                  journal_queue_size=1_000_000)
        kernel = Kernel(settings, load_entry_points=False, builtins=False)
        kernel.add_plugin([kernel_function(trivial), kernel_function(outer)], name="bench")
        kernel.services.add_service("scripted", ScriptedChatModel(default="A short answer of a few words."))
        kernel.add_function(PromptFunction.from_template("Summarize in one line: {{ text }}", name="summarize",
                                                         plugin="prompts"))
        kernels[name] = kernel
    from kernel.events import MemorySink, attach

    attach(kernels["memory"], MemorySink(limit=1000))
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from kernel.events import OtelSink

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        attach(kernels["otel"], OtelSink(tracer_provider=provider))
        kernels["_exporter"] = exporter
    except ImportError:
        kernels.pop("otel")
    return kernels


async def _bench(folder: Path) -> list[Row]:
    from kernel.events import Journal

    kernels = _kernels(folder)
    off = kernels["off"]
    rows: list[Row] = []

    async def trivial() -> int:
        return 1

    fn_off = off.get_function("bench.trivial")
    ours, floor = await _side_by_side(lambda: off.invoke(fn_off), trivial)
    rows.append(("invoke, no sink (kernel.events is None) (vs direct await)", ours, floor))

    journal_kernel = kernels["journal"]
    assert journal_kernel.events is not None
    journal = journal_kernel.events.sink(Journal)
    assert journal is not None
    fn_on = journal_kernel.get_function("bench.trivial")
    ours, floor = await _side_by_side(lambda: journal_kernel.invoke(fn_on), lambda: off.invoke(fn_off))
    rows.append(("invoke, journal on, 1 event: hot path (vs events off)", ours, floor))
    outer_on, outer_off = journal_kernel.get_function("bench.outer"), off.get_function("bench.outer")
    ours2, floor2 = await _side_by_side(lambda: journal_kernel.invoke(outer_on), lambda: off.invoke(outer_off))
    rows.append(("invoke with one nested invoke, journal on, 2 events: hot path (vs events off)", ours2, floor2))
    prompt_on, prompt_off = journal_kernel.get_function("prompts.summarize"), off.get_function("prompts.summarize")
    text = "The journal keeps every run: prompts, answers, tool calls, usage and cost. " * 4
    ours3, floor3 = await _side_by_side(lambda: journal_kernel.invoke(prompt_on, {"text": text}),
                                        lambda: off.invoke(prompt_off, {"text": text}), batch=200)
    rows.append(("invoke a prompt function (render, scripted model call), journal on, 3 events with their "
                 "messages: hot path (vs events off)", ours3, floor3))
    await journal.commit()

    # the whole cost: invokes, then everything written (the writer's CPU included); best of
    # three rounds, each beside the same invokes with events off
    count = 20_000
    whole = bare = float("inf")
    for _ in range(3):
        written = journal.written
        start = time.perf_counter()
        for _ in range(count):
            await journal_kernel.invoke(fn_on)
        await journal.commit()
        whole = min(whole, (time.perf_counter() - start) / count)
        assert journal.written - written == count and journal.dropped == 0, (
            journal.written - written, journal.dropped, journal.failures)
        start = time.perf_counter()
        for _ in range(count):
            await off.invoke(fn_off)
        bare = min(bare, (time.perf_counter() - start) / count)
    rows.append((f"invoke, journal on, writer included ({count:,} invokes then flush) (vs events off)", whole, bare))

    memory = kernels["memory"]
    fn_memory = memory.get_function("bench.trivial")
    ours, floor = await _side_by_side(lambda: memory.invoke(fn_memory), lambda: off.invoke(fn_off))
    rows.append(("invoke, events kept in memory (MemorySink): the emitter alone (vs events off)", ours, floor))
    prompt_memory = memory.get_function("prompts.summarize")
    ours, floor = await _side_by_side(lambda: memory.invoke(prompt_memory, {"text": text}),
                                      lambda: off.invoke(prompt_off, {"text": text}), batch=200)
    rows.append(("invoke a prompt function, events kept in memory: the emitter alone (vs events off)", ours, floor))

    if "otel" in kernels:
        otel = kernels["otel"]
        fn_otel = otel.get_function("bench.trivial")
        exporter = kernels["_exporter"]

        async def traced() -> Any:
            result = await otel.invoke(fn_otel)
            if len(exporter._finished_spans) > 10_000:
                exporter.clear()
            return result

        ours, floor = await _side_by_side(traced, lambda: off.invoke(fn_off))
        rows.append(("invoke, OpenTelemetry span (SDK, in-memory exporter) (vs events off)", ours, floor))

    rows.append(await _throughput(folder))
    for kernel in (k for k in kernels.values() if hasattr(k, "aclose")):
        await kernel.aclose()
    return rows


async def _throughput(folder: Path) -> Row:
    """Events written per second by the writer alone (events built beforehand)."""
    from kernel.events import FunctionEvent, Journal

    journal = Journal(folder / "throughput.db", max_queue=1_000_000)
    await journal.commit()
    events = []
    for i in range(50_000):
        event = FunctionEvent("bench.write", None, None, arguments={"i": i, "text": "some argument text"})
        event.result = i
        event.close()
        events.append(event)
    journal.start(events[0])
    await journal.commit()
    start = time.perf_counter()
    for event in events:
        journal.end(event)
    await journal.commit()
    elapsed = time.perf_counter() - start
    assert journal.dropped == 0
    await journal.aclose()
    return ("journal write throughput, 50,000 events (SQLite WAL, batched)", len(events) / elapsed, None,
            "events/s")


def run() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_bench(Path(tmp)))


if __name__ == "__main__":
    for row in run():
        print(row)
