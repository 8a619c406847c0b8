"""What a tool call sends back to the model is bounded (kernel/chat).

* A result longer than `policy.max_result_chars` is cut, with a note for the model, in
  the streaming and the non-streaming loop alike; the full value is never sent.
* A plain sync native function called by the model runs in a worker thread under
  `tool_timeout`: the loop gets `error: ... timed out` and goes on (the thread is
  abandoned, at most MAX_TOOL_THREADS of them), while direct invocations stay inline.

Blocking functions wait on threading.Events, so the tests assert behaviour, not timings;
the only clocks are upper bounds far above what the loop needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, kernel_function
from kernel.chat import tools
from kernel.contents import ToolCallFinished
from kernel.functions import NativeFunction
from kernel.logging import register_secret
from kernel.middleware import FunctionContext, ToolCallContext
from kernel.testing import ScriptedChatModel, tool_call, tool_calls

LIMIT = 20_000  # ToolLoopSettings.max_result_chars, the default


def make_kernel(*functions: Any) -> Kernel:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    if functions:
        kernel.add_plugin(list(functions), name="t")
    return kernel


async def chat(kernel: Kernel, *replies: Any, stream: bool = False, **policy: Any) -> tuple[list[str], Any]:
    """Run one chat turn; the tool results as the model received them, and the model."""
    model = ScriptedChatModel([*replies, "done"])
    kernel.services.add_service("test", model)
    if stream:
        events = [e async for e in kernel.chat_stream("go", service="test", policy=policy or None)]
        by_id = {e.result.call_id: e.result.content for e in events if isinstance(e, ToolCallFinished)}
        tool_ids = [m.tool_call_id or "" for m in model.requests[-1].messages if m.role == "tool"]
        finished = [by_id[i] for i in tool_ids]  # events come as calls finish; results in call order
    else:
        result = await kernel.chat("go", service="test", policy=policy or None)
        assert result.text == "done"
        finished = [r.result.content for r in result.trace]
    sent = [m.content for m in model.requests[-1].messages if m.role == "tool"]
    assert sent == finished  # what the caller sees is what the model got
    return sent, model


# --- result size ----------------------------------------------------------------------------


@kernel_function
def big(n: int) -> str:
    """A long text."""
    return "x" * n


@kernel_function
def rows(n: int) -> list[dict[str, Any]]:
    """A long structured value."""
    return [{"id": i, "name": f"row {i}"} for i in range(n)]


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
async def test_a_long_result_is_cut_with_a_note(stream: bool) -> None:
    kernel = make_kernel(big, rows)
    sent, _ = await chat(kernel, tool_calls(("t.big", {"n": 1_000_000}), ("t.rows", {"n": 50_000}),
                                            ("t.big", {"n": LIMIT})), stream=stream)
    cut_text, cut_rows, whole = sent
    assert len(cut_text) == LIMIT
    note = "\n... [cut: the result had 1000000 characters; the first 19928 are shown]"
    assert cut_text == "x" * 19928 + note
    assert len(cut_rows) <= LIMIT and cut_rows.startswith('[{"id":0,"name":"row 0"}')
    assert "[cut: the result had" in cut_rows
    assert whole == "x" * LIMIT  # exactly at the limit: not cut


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
async def test_the_limit_is_the_policys(stream: bool) -> None:
    kernel = make_kernel(big)
    sent, _ = await chat(kernel, tool_call("t.big", n=5000), stream=stream, max_result_chars=300)
    assert len(sent[0]) == 300 and sent[0].endswith("[cut: the result had 5000 characters; the first 233 are shown]")


async def test_a_result_set_by_a_tool_call_filter_is_cut_too() -> None:
    kernel = make_kernel(big)

    async def flood(context: ToolCallContext, next: Any) -> None:
        from kernel.contents import ToolResult

        context.result = ToolResult(context.call.id, context.call.name, "y" * 100_000)

    kernel.add_filter("tool_call", flood)
    sent, _ = await chat(kernel, tool_call("t.big", n=1))
    assert len(sent[0]) == LIMIT
    assert sent[0].endswith("[cut: the result had 100000 characters; the first 19929 are shown]")


async def test_a_secret_across_the_cut_is_masked_whole() -> None:
    secret = "corp-db-password-0123456789"
    register_secret(secret)

    @kernel_function
    def leak() -> str:
        """A long text with a secret where it is cut."""
        return "a" * (LIMIT - 80) + secret + "b" * 50_000

    kernel = make_kernel(leak)
    sent, _ = await chat(kernel, tool_call("t.leak"))
    assert len(sent[0]) <= LIMIT
    for start in range(len(secret) - 5):  # no six characters of it
        assert secret[start : start + 6] not in sent[0]


async def test_text_replace_amplification_reaches_the_model_bounded() -> None:
    """The standard text.replace turns 8 KB of arguments into a 16 M-character result;
    what reaches the model is max_result_chars characters."""
    from plugins import text_plugin

    kernel = make_kernel()
    kernel.add_plugin(text_plugin, name="text")
    sent, model = await chat(kernel, tool_call("text.replace", text="a" * 4000, old="a", new="b" * 4000))
    assert len(sent[0]) == LIMIT
    assert sent[0].endswith("[cut: the result had 16000000 characters; the first 19927 are shown]")
    largest = max(len(m.content) for r in model.requests for m in r.messages)
    assert largest == LIMIT


async def test_lone_surrogates_in_a_result_are_replaced() -> None:
    @kernel_function
    def broken() -> str:
        """Returns invalid Unicode."""
        return "a\ud800b"

    kernel = make_kernel(broken)
    sent, _ = await chat(kernel, tool_call("t.broken"))
    assert sent == ["a\ufffdb"]


# --- sync functions in worker threads -----------------------------------------------------


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[tools.ToolThreads]:
    """A fresh, small ToolThreads for the test (the process-wide one is left alone)."""
    threads = tools.ToolThreads(2)
    monkeypatch.setattr(tools, "_threads", threads)
    yield threads


class Blocker:
    """Sync functions that block their thread until released (or 30 s at most)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.threads: list[str] = []

    @kernel_function
    def block(self, tag: str) -> str:
        """Blocks."""
        self.started.append(tag)
        self.threads.append(threading.current_thread().name)
        self.release.wait(30)
        self.finished.append(tag)
        return "x" * 10_000_000

    @kernel_function
    def where(self) -> str:
        """Reports its thread."""
        self.threads.append(threading.current_thread().name)
        return threading.current_thread().name


async def wait_until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
async def test_a_blocking_sync_function_times_out_and_the_loop_goes_on(
    pool: tools.ToolThreads, stream: bool
) -> None:
    blocker = Blocker()
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(blocker, name="b")
    ticks = 0

    async def ticker() -> None:  # the event loop stays free while the function blocks
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(ticker())
    try:
        sent, _ = await chat(kernel, tool_call("b.block", tag="one"), stream=stream, tool_timeout=0.3)
    finally:
        task.cancel()
    assert sent == ["error: b.block timed out after 0.3 s"]
    assert ticks >= 5
    assert blocker.started == ["one"] and blocker.finished == []  # abandoned, still running
    assert blocker.threads[0].startswith("kernel-tool-")
    blocker.release.set()
    await wait_until(lambda: pool.busy == 0)
    assert blocker.finished == ["one"]  # it ran on; its 10 M-character result was dropped


async def test_abandoned_threads_are_bounded_and_queued_calls_that_time_out_never_start(
    pool: tools.ToolThreads,
) -> None:
    blocker = Blocker()
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(blocker, name="b")
    calls = tool_calls(*(("b.block", {"tag": str(i)}) for i in range(5)))
    sent, _ = await chat(kernel, calls, tool_timeout=0.3)
    assert len(blocker.started) == 2  # two threads, two calls started; three waited
    assert pool.threads == 2 and pool.busy == 2
    saturated = ("; all 2 worker threads for sync functions are busy (a call that timed out runs on until "
                 "it returns)")
    for text in sent:
        assert text in ("error: b.block timed out after 0.3 s", "error: b.block timed out after 0.3 s" + saturated)
    assert sum(saturated in text for text in sent) >= 3  # the three that never got a thread say why
    # With both threads stuck, a new call waits and times out without starting:
    sent, _ = await chat(kernel, tool_call("b.block", tag="late"), tool_timeout=0.1)
    assert sent == ["error: b.block timed out after 0.1 s" + saturated] and "late" not in blocker.started
    blocker.release.set()
    await wait_until(lambda: pool.busy == 0)
    assert len(blocker.started) == 2 and pool.threads == 2  # the cancelled calls were skipped
    sent, _ = await chat(kernel, tool_call("b.where"))
    assert sent[0].startswith("kernel-tool-")


async def test_direct_invocations_of_sync_functions_stay_inline(pool: tools.ToolThreads) -> None:
    blocker = Blocker()
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(blocker, name="b")
    main = threading.current_thread().name
    assert (await kernel.invoke("b.where")).value == main
    sent, _ = await chat(kernel, tool_call("b.where"))
    assert sent[0].startswith("kernel-tool-")
    assert (await kernel.invoke("b.where")).value == main
    sent, _ = await chat(kernel, tool_call("b.where"), tool_timeout=None)  # nothing to stop it: inline
    assert sent == [main]
    fn = kernel.get_function("b.where")
    assert isinstance(fn, NativeFunction) and fn.func.__name__ == "where"  # the function itself is untouched


async def test_a_threaded_call_keeps_filters_context_arguments_and_its_own_timeout(pool: tools.ToolThreads) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    seen: list[Any] = []

    @kernel_function
    def context_and_kernel(kernel: Kernel, word: str) -> str:
        """Sees the caller's context and the kernel."""
        seen.append((request_id.get(), isinstance(kernel, Kernel), threading.current_thread().name))
        return word.upper()

    @kernel_function(timeout=0.2)
    def own_timeout() -> str:
        """Has its own timeout, shorter than the loop's."""
        threading.Event().wait(2)
        return "late"

    kernel = make_kernel(context_and_kernel, own_timeout)
    names: list[str] = []
    registered = {fn.fully_qualified_name: fn for fn in kernel.functions()}

    async def function_filter(context: FunctionContext, next: Any) -> None:
        assert context.function is registered[context.function.fully_qualified_name]  # the function, not a copy
        names.append(context.function.fully_qualified_name)
        if "word" in context.arguments:
            context.arguments["word"] += "!"
        await next(context)

    kernel.add_filter("function", function_filter)
    request_id.set("r-42")
    sent, _ = await chat(kernel, tool_calls(("t.context_and_kernel", {"word": "hi"}), ("t.own_timeout", {})),
                         tool_timeout=30)
    assert sent == ["HI!", "error: t.own_timeout timed out after 0.2 s"]
    assert names == ["t.context_and_kernel", "t.own_timeout"]
    assert seen[0][:2] == ("r-42", True) and seen[0][2].startswith("kernel-tool-")


async def test_a_thread_that_finishes_after_its_event_loop_closed_is_harmless(pool: tools.ToolThreads) -> None:
    blocker = Blocker()
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(blocker, name="b")
    model = ScriptedChatModel([tool_call("b.block", tag="orphan"), "done"])
    kernel.services.add_service("other-loop", model)
    outcome: list[Any] = []

    def other_loop() -> None:  # a chat on its own event loop, closed when it returns
        result = asyncio.run(kernel.chat("go", service="other-loop", policy={"tool_timeout": 0.2}))
        outcome.append(result.messages[1].content)

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(thread.join, 20)
    assert outcome == ["error: b.block timed out after 0.2 s"]
    blocker.release.set()  # the worker settles a future of a closed loop: ignored
    await wait_until(lambda: pool.busy == 0 and blocker.finished == ["orphan"])
    sent, _ = await chat(kernel, tool_call("b.where"))
    assert sent[0].startswith("kernel-tool-")  # the worker lives on


async def test_an_exception_in_a_threaded_function_is_an_error_result(pool: tools.ToolThreads) -> None:
    @kernel_function
    def fail() -> str:
        """Fails in its thread."""
        raise KeyError("missing in /srv/app/data.json")

    kernel = make_kernel(fail)
    sent, _ = await chat(kernel, tool_call("t.fail"))
    assert sent == ["error: t.fail failed: KeyError: 'missing in <path>'"]


async def test_parallel_sync_calls_overlap_in_threads_and_sequential_ones_do_not(pool: tools.ToolThreads) -> None:
    """A sync function is no longer serialised by the event loop: `parallel` calls (the
    default) may run at the same time; `sequential` ones still run one at a time."""
    barrier = threading.Barrier(2, timeout=5)
    running: list[int] = []
    overlap: list[int] = []

    @kernel_function
    def meet(tag: str) -> str:
        """Waits for the other call."""
        barrier.wait()
        return tag

    @kernel_function(concurrency="sequential")
    def alone(tag: str) -> str:
        """Records overlaps."""
        running.append(1)
        overlap.append(len(running))
        threading.Event().wait(0.05)
        running.pop()
        return tag

    kernel = make_kernel(meet, alone)
    sent, _ = await chat(kernel, tool_calls(("t.meet", {"tag": "a"}), ("t.meet", {"tag": "b"})))
    assert sent == ["a", "b"]  # both were in their threads at once, or the barrier had broken
    sent, _ = await chat(kernel, tool_calls(("t.alone", {"tag": "a"}), ("t.alone", {"tag": "b"})))
    assert sent == ["a", "b"] and overlap == [1, 1]
