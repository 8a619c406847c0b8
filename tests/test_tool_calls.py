"""The automatic function-calling loop (kernel.tool_calls.run_chat) with the scripted model.

Concurrency is asserted with barriers and event logs, never with timings.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from kernel import ChatMessage, Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.chat import ChatResult, run_chat, short_error
from kernel.chat.history import ChatHistory
from kernel.chat.tools import DECLINED, NO_APPROVER
from kernel.contents import ChatRequest, ToolChoice, Usage
from kernel.errors import ConfigurationError, FunctionNotFoundError, ProviderError, ToolLoopError
from kernel.logging import register_secret
from kernel.testing import ScriptedChatModel, ScriptedReply, error_reply, tool_call, tool_calls


def make_kernel(*plugins: tuple[object, str], **settings: Any) -> Kernel:
    kernel = Kernel(settings=KernelSettings(**settings), load_entry_points=False, builtins=False)
    for obj, name in plugins:
        kernel.add_plugin(obj, name=name)
    return kernel


def with_model(kernel: Kernel, *replies: Any, **kw: Any) -> ScriptedChatModel:
    model = ScriptedChatModel(replies, **kw)
    kernel.services.add_service("test", model)
    return model


def assert_paired(messages: list[ChatMessage]) -> None:
    """Every assistant tool-call message is followed by exactly one tool message per call
    id, in call order, and no tool message appears anywhere else."""
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.role == "assistant" and message.tool_calls:
            ids = [c.id for c in message.tool_calls]
            following = messages[i + 1 : i + 1 + len(ids)]
            assert [m.role for m in following] == ["tool"] * len(ids), messages
            assert [m.tool_call_id for m in following] == ids
            i += 1 + len(ids)
        else:
            assert message.role != "tool", f"orphan tool message at {i}: {message}"
            i += 1


class Point(BaseModel):
    x: int
    y: int


class Calc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @kernel_function
    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        self.calls.append(("add", {"a": a, "b": b}))
        return a + b

    @kernel_function
    def info(self, name: str) -> dict[str, Any]:
        """Structured result."""
        self.calls.append(("info", {"name": name}))
        return {"name": name, "length": len(name), "tags": ["x"]}

    @kernel_function
    def boom(self, text: str) -> str:
        """Always fails."""
        self.calls.append(("boom", {"text": text}))
        raise RuntimeError(text)

    @kernel_function
    async def slow(self) -> str:
        """Sleeps longer than the tool timeout."""
        self.calls.append(("slow", {}))
        await asyncio.sleep(10)
        return "late"

    @kernel_function(timeout=0.05)
    async def own_timeout(self) -> str:
        """Has its own timeout."""
        self.calls.append(("own_timeout", {}))
        await asyncio.sleep(10)
        return "late"


# --- the basic loop ----------------------------------------------------------------------


async def test_multi_round_loop_with_parallel_calls_that_overlap() -> None:
    barrier = asyncio.Barrier(2)
    seen: list[str] = []

    class Meet:
        @kernel_function
        async def meet(self, who: str) -> str:
            """Waits until both parallel calls are running."""
            await asyncio.wait_for(barrier.wait(), 5)  # would time out if run one after the other
            seen.append(who)
            return f"met {who}"

    calc = Calc()
    kernel = make_kernel((Meet(), "meet"), (calc, "calc"))
    model = with_model(
        kernel,
        tool_calls(("meet.meet", {"who": "a"}, "c1"), ("meet.meet", {"who": "b"}, "c2")),
        tool_call("calc.add", a=2, b=3, id="c3"),
        "all done",
    )
    result = await run_chat(kernel, "go")
    assert isinstance(result, ChatResult)
    assert result.text == "all done"
    assert result.rounds == 2
    assert sorted(seen) == ["a", "b"]
    roles = [m.role for m in result.messages]
    assert roles == ["assistant", "tool", "tool", "assistant", "tool", "assistant"]
    assert [m.content for m in result.messages if m.role == "tool"] == ["met a", "met b", "5"]
    assert_paired(result.messages)
    # the second request carried the first round's results, the third the second's
    assert [m.role for m in model.requests[1].messages] == ["user", "assistant", "tool", "tool"]
    assert model.requests[2].messages[-1].content == "5"
    assert result.usage.requests == 3 and result.usage.input_tokens == 30
    assert [r.call.id for r in result.trace] == ["c1", "c2", "c3"]
    assert [r.round for r in result.trace] == [1, 1, 2]
    assert all(not r.is_error for r in result.trace)


async def test_results_are_paired_in_call_order_even_when_finishing_out_of_order() -> None:
    gates = {"first": asyncio.Event(), "second": asyncio.Event()}

    class Order:
        @kernel_function
        async def wait(self, name: str) -> str:
            """The first call finishes last."""
            if name == "first":
                await asyncio.wait_for(gates["second"].wait(), 5)
            else:
                gates["second"].set()
            return name

    kernel = make_kernel((Order(), "order"))
    with_model(kernel, tool_calls(("order.wait", {"name": "first"}, "x1"), ("order.wait", {"name": "second"}, "x2")),
               "ok")
    result = await run_chat(kernel, "go")
    assert_paired(result.messages)
    assert [(m.tool_call_id, m.content) for m in result.messages if m.role == "tool"] == [("x1", "first"),
                                                                                          ("x2", "second")]


async def test_tools_offered_all_by_plugin_by_name_or_none() -> None:
    class Other:
        @kernel_function
        def ping(self) -> str:
            """Ping."""
            return "pong"

    kernel = make_kernel((Calc(), "calc"), (Other(), "other"))
    model = with_model(kernel, default="ok")
    await run_chat(kernel, "x")
    assert {t.name for t in model.last_request.tools} == {"calc-add", "calc-info", "calc-boom", "calc-slow",
                                                          "calc-own_timeout", "other-ping"}
    await run_chat(kernel, "x", plugins=["other"])
    assert [t.name for t in model.last_request.tools] == ["other-ping"]
    await run_chat(kernel, "x", tools=["calc.add", kernel.get_function("other.ping")])
    assert [t.name for t in model.last_request.tools] == ["calc-add", "other-ping"]
    spec = model.last_request.tools[0]
    assert spec.parameters["required"] == ["a", "b"] and spec.description == "Add two integers."
    await run_chat(kernel, "x", tools=[])
    assert model.last_request.tools == [] and model.last_request.tool_choice is None
    with pytest.raises(FunctionNotFoundError, match="nope"):
        await run_chat(kernel, "x", plugins=["nope"])


async def test_function_not_offered_is_refused() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    with_model(kernel, tool_call("calc.add", a=1, b=2), "ok")
    result = await run_chat(kernel, "x", tools=["calc.info"])
    assert calc.calls == []
    assert result.messages[1].content.startswith("error: unknown function 'calc-add'")
    assert "calc-info" in result.messages[1].content


async def test_non_string_results_are_json_encoded() -> None:
    class Geo:
        @kernel_function
        def point(self) -> Point:
            """A point."""
            return Point(x=1, y=2)

        @kernel_function
        def nothing(self) -> None:
            """Nothing."""

    kernel = make_kernel((Calc(), "calc"), (Geo(), "geo"))
    with_model(kernel, tool_calls(("calc.info", {"name": "ada"}), ("calc.add", {"a": 1, "b": 1}), ("geo.point", {}),
                                  ("geo.nothing", {})), "ok")
    result = await run_chat(kernel, "x")
    contents = [m.content for m in result.messages if m.role == "tool"]
    assert json.loads(contents[0]) == {"name": "ada", "length": 3, "tags": ["x"]}
    assert contents[1] == "2"
    assert json.loads(contents[2]) == {"x": 1, "y": 2}
    assert contents[3] == "null"


async def test_chat_history_input_gets_new_messages_and_list_input_is_not_mutated() -> None:
    kernel = make_kernel((Calc(), "calc"))
    with_model(kernel, tool_call("calc.add", a=1, b=2), "three", "again")
    history = ChatHistory(system="be brief")
    history.add_user("1+2?")
    result = await kernel.chat(history)
    assert len(history) == 2 + len(result.messages) == 5
    assert history[-1].content == "three"
    assert_paired(history.messages)
    given = [ChatMessage.user("hi")]
    result = await kernel.chat(given)
    assert given == [ChatMessage.user("hi")] and result.text == "again"


async def test_provider_error_propagates_and_leaves_history_unchanged() -> None:
    kernel = make_kernel((Calc(), "calc"), retry={"max_attempts": 1})
    with_model(kernel, tool_call("calc.add", a=1, b=2), error_reply(ProviderError("upstream down", status_code=400)))
    history = ChatHistory()
    history.add_user("hi")
    with pytest.raises(ProviderError, match="upstream down"):
        await run_chat(kernel, history)
    assert len(history) == 1


# --- concurrency classes -------------------------------------------------------------------


async def test_sequential_calls_run_one_at_a_time_in_request_order() -> None:
    log: list[tuple[str, str]] = []
    active = {"seq": 0, "max_seq": 0}
    parallel_barrier = asyncio.Barrier(2)

    class Work:
        @kernel_function(concurrency="sequential")
        async def seq(self, n: int) -> int:
            """Sequential."""
            active["seq"] += 1
            active["max_seq"] = max(active["max_seq"], active["seq"])
            log.append(("start", f"seq{n}"))
            for _ in range(5):
                await asyncio.sleep(0)
            log.append(("end", f"seq{n}"))
            active["seq"] -= 1
            return n

        @kernel_function
        async def par(self, n: int) -> int:
            """Parallel: both must run at the same time."""
            await asyncio.wait_for(parallel_barrier.wait(), 5)
            return n

    kernel = make_kernel((Work(), "work"))
    with_model(kernel, tool_calls(("work.seq", {"n": 1}), ("work.par", {"n": 10}), ("work.seq", {"n": 2}),
                                  ("work.par", {"n": 11}), ("work.seq", {"n": 3})), "ok")
    result = await run_chat(kernel, "go")
    assert active["max_seq"] == 1
    assert [name for kind, name in log if kind == "start"] == ["seq1", "seq2", "seq3"]
    assert [m.content for m in result.messages if m.role == "tool"] == ["1", "10", "2", "11", "3"]
    assert not any(r.is_error for r in result.trace)


async def test_exclusive_call_runs_alone() -> None:
    log: list[str] = []
    running: set[str] = set()
    overlap: dict[str, set[str]] = {}

    class Work:
        @kernel_function
        async def par(self, n: int) -> int:
            """Parallel."""
            running.add(f"par{n}")
            log.append(f"start par{n}")
            for _ in range(5):
                await asyncio.sleep(0)
            overlap[f"par{n}"] = set(running)
            running.discard(f"par{n}")
            log.append(f"end par{n}")
            return n

        @kernel_function(concurrency="exclusive")
        async def excl(self) -> str:
            """Exclusive."""
            running.add("excl")
            log.append("start excl")
            for _ in range(5):
                await asyncio.sleep(0)
            overlap["excl"] = set(running)
            running.discard("excl")
            log.append("end excl")
            return "x"

    kernel = make_kernel((Work(), "work"))
    with_model(kernel, tool_calls(("work.par", {"n": 1}), ("work.par", {"n": 2}), ("work.excl", {}),
                                  ("work.par", {"n": 3}), ("work.par", {"n": 4})), "ok")
    await run_chat(kernel, "go")
    assert overlap["excl"] == {"excl"}
    excl_start, excl_end = log.index("start excl"), log.index("end excl")
    assert log.index("end par1") < excl_start and log.index("end par2") < excl_start
    assert log.index("start par3") > excl_end and log.index("start par4") > excl_end
    assert overlap["par1"] >= {"par1", "par2"}  # the others did run concurrently


async def test_max_concurrency_bounds_parallel_calls() -> None:
    active = {"now": 0, "max": 0}

    class Work:
        @kernel_function
        async def job(self, n: int) -> int:
            """A job."""
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            for _ in range(10):
                await asyncio.sleep(0)
            active["now"] -= 1
            return n

    kernel = make_kernel((Work(), "work"))
    with_model(kernel, tool_calls(*[("work.job", {"n": i}) for i in range(6)]), "ok")
    result = await run_chat(kernel, "go", policy={"max_concurrency": 2})
    assert active["max"] == 2
    assert [m.content for m in result.messages if m.role == "tool"] == [str(i) for i in range(6)]


# --- bad requests -----------------------------------------------------------------------------


BAD_CALLS: list[tuple[str, Any, str]] = [
    ("calc.nope", {"a": 1}, "error: unknown function 'calc-nope'"),
    ("calc.add", '{"a": 1, "b": ', "error: arguments of calc.add are not valid JSON"),
    ("calc.add", "[1, 2]", "error: arguments of calc.add must be a JSON object, not list"),
    ("calc.add", {"a": 1, "b": "two"}, "error: parameter 'b' of calc.add: Input should be a valid integer"),
    ("calc.add", {"a": 1}, "error: parameter 'b' of calc.add: missing required argument"),
    ("calc.add", {"a": 1, "b": 2, "c": 3}, "error: parameter 'c' of calc.add: unexpected argument"),
    ("calc.add", {"a": 1, "b": 2, "pad": "x" * 300}, "error: arguments of calc.add are 3"),
]


@pytest.mark.parametrize(("name", "arguments", "expected"), BAD_CALLS)
async def test_bad_requests_never_call_the_function(name: str, arguments: Any, expected: str) -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    model = with_model(kernel, tool_call(name, arguments, id="bad"), "recovered")
    result = await run_chat(kernel, "go", policy={"max_argument_bytes": 200})
    assert calc.calls == []
    tool_message = result.messages[1]
    assert tool_message.role == "tool" and tool_message.tool_call_id == "bad"
    assert tool_message.content.startswith(expected), tool_message.content
    assert result.trace[0].is_error
    assert result.text == "recovered"  # the loop went on
    assert model.requests[1].messages[-1].content == tool_message.content


async def test_bad_call_beside_good_ones_does_not_stop_them() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    calls = tool_calls(("calc.add", {"a": 1, "b": 2}), ("calc.add", "{oops"), ("calc.add", {"a": 5, "b": 5}))
    with_model(kernel, calls, "ok")
    result = await run_chat(kernel, "go")
    contents = [m.content for m in result.messages if m.role == "tool"]
    assert contents[0] == "3" and contents[1].startswith("error: ") and contents[2] == "10"
    assert len(calc.calls) == 2
    assert_paired(result.messages)


async def test_function_raising_or_timing_out_becomes_an_error_result() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    with_model(kernel, tool_calls(("calc.boom", {"text": "disk full"}), ("calc.slow", {}), ("calc.own_timeout", {})),
               "ok")
    result = await run_chat(kernel, "go", policy={"tool_timeout": 0.05})
    boom, slow, own = (m.content for m in result.messages if m.role == "tool")
    assert boom == "error: calc.boom failed: RuntimeError: disk full"
    assert slow == "error: calc.slow timed out after 0.05 s"
    assert own == "error: calc.own_timeout timed out after 0.05 s"
    assert sorted(c[0] for c in calc.calls) == ["boom", "own_timeout", "slow"]  # sync ones run in threads
    assert result.text == "ok"


async def test_error_sent_to_the_model_has_no_traceback_path_or_secret() -> None:
    register_secret("hunter2-corp-password")

    class Leaky:
        @kernel_function
        def leak(self) -> str:
            """Fails with sensitive details."""
            raise ValueError(
                "auth failed with key sk-proj-AbCdEfGhIjKlMnOp1234 and password hunter2-corp-password "
                "while reading /home/alice/.config/app/secrets.toml\nTraceback (most recent call last):\n"
                '  File "/srv/app/leaky.py", line 3, in leak'
            )

    kernel = make_kernel((Leaky(), "leaky"))
    model = with_model(kernel, tool_call("leaky.leak"), "ok")
    result = await run_chat(kernel, "go")
    sent = model.requests[1].messages[-1].content
    assert sent == result.messages[1].content
    assert sent.startswith("error: leaky.leak failed: ValueError: auth failed")
    for leaked in ("sk-proj-AbCd", "hunter2", "/home/alice", "secrets.toml", "Traceback", "leaky.py", "/srv", "\n"):
        assert leaked not in sent, (leaked, sent)
    assert "<path>" in sent and "***" in sent


def test_short_error_truncates_and_strips_windows_paths() -> None:
    text = short_error("cannot open C:\\Users\\bob\\key.txt " + "x" * 1000)
    assert "Users" not in text and len(text) <= len("error: ") + 400 and text.endswith("...")


# --- limits ---------------------------------------------------------------------------------


def endless_calls(name: str = "calc.add") -> Any:
    """A model that asks for a new call every time, and answers when tools are off."""
    counter = iter(range(1000))

    def reply(request: ChatRequest) -> Any:
        if request.tool_choice is not None and request.tool_choice.mode == "none":
            return "final answer with what I have"
        n = next(counter)
        return tool_call(name, a=n, b=n)

    return reply


async def test_max_rounds_final_call() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    model = with_model(kernel, default=endless_calls())
    result = await run_chat(kernel, "go", policy={"max_rounds": 2})
    assert len(calc.calls) == 2
    assert result.stop_reason == "exhausted" and result.rounds == 2
    assert result.text == "final answer with what I have"
    assert len(model.requests) == 4
    assert model.requests[-1].tool_choice == ToolChoice("none")
    assert model.requests[-1].tools  # still defined: the history holds tool calls
    unanswered = result.messages[-2]
    assert unanswered.role == "tool"
    assert unanswered.content.startswith("error: not run: the limit of 2 tool-call rounds")
    assert_paired(result.messages)


async def test_max_rounds_error() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"), tool_loop={"max_rounds": 2, "on_exhausted": "error"})
    with_model(kernel, default=endless_calls())
    with pytest.raises(ToolLoopError, match="max_rounds") as info:
        await run_chat(kernel, "go")
    assert len(calc.calls) == 2
    assert_paired(info.value.messages)  # type: ignore[attr-defined]


async def test_max_calls_both_modes() -> None:
    def two_at_a_time() -> Any:
        counter = iter(range(1000))

        def reply(request: ChatRequest) -> Any:
            if request.tool_choice == ToolChoice("none"):
                return "done"
            n = next(counter)
            return tool_calls(("calc.add", {"a": n, "b": 0}), ("calc.add", {"a": n, "b": 1}))

        return reply

    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    with_model(kernel, default=two_at_a_time())
    result = await run_chat(kernel, "go", policy={"max_calls": 3})
    assert len(calc.calls) == 2 and result.stop_reason == "exhausted" and result.text == "done"
    assert "max_calls" in result.messages[-2].content
    calc.calls.clear()
    with pytest.raises(ToolLoopError, match="max_calls"):
        await run_chat(kernel, "go", policy={"max_calls": 3, "on_exhausted": "error"})
    assert len(calc.calls) == 2


async def test_token_budget_both_modes() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    with_model(kernel, default=endless_calls(), usage=Usage(10, 5))  # 15 tokens per request
    result = await run_chat(kernel, "go", policy={"max_tokens": 25})
    assert len(calc.calls) == 1  # 15 < 25: one round; 30 >= 25: stop
    assert result.stop_reason == "exhausted" and result.usage.total_tokens == 45
    assert "token budget of 25" in result.messages[-2].content
    calc.calls.clear()
    with pytest.raises(ToolLoopError, match="max_tokens"):
        await run_chat(kernel, "go", policy={"max_tokens": 25, "on_exhausted": "error"})
    assert len(calc.calls) == 1


async def test_repeated_identical_call_is_not_run_again() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    same = {"a": 1, "b": 2}
    with_model(kernel, tool_call("calc.add", same), tool_call("calc.add", '{"b": 2, "a": 1}'),  # same, reordered
               tool_call("calc.add", same), tool_call("calc.add", a=1, b=3), "ok")
    result = await run_chat(kernel, "go", policy={"max_repeats": 2})
    contents = [m.content for m in result.messages if m.role == "tool"]
    assert contents[:2] == ["3", "3"]
    assert contents[2].startswith("error: you repeated yourself: calc.add was already called 2 time(s)")
    assert contents[3] == "4"  # different arguments run
    assert len(calc.calls) == 3 and result.text == "ok"


@pytest.mark.parametrize("mode", ["final_call", "error"])
async def test_a_model_stuck_repeating_itself_ends_by_the_configured_mode(mode: str) -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))

    def stuck(request: ChatRequest) -> Any:
        if request.tool_choice == ToolChoice("none"):
            return "giving up"
        return tool_call("calc.add", a=1, b=1)

    with_model(kernel, default=stuck)
    policy = {"max_repeats": 1, "max_rounds": 3, "on_exhausted": mode}
    if mode == "error":
        with pytest.raises(ToolLoopError):
            await run_chat(kernel, "go", policy=policy)
    else:
        result = await run_chat(kernel, "go", policy=policy)
        assert result.text == "giving up"
        assert sum("repeated yourself" in m.content for m in result.messages) == 2
    assert len(calc.calls) == 1


async def test_invalid_policy_override_is_a_configuration_error() -> None:
    kernel = make_kernel((Calc(), "calc"))
    with_model(kernel, default="ok")
    with pytest.raises(ConfigurationError, match="max_rounds"):
        await run_chat(kernel, "go", policy={"max_rounds": 0})


# --- approval -----------------------------------------------------------------------------


class Bank:
    def __init__(self) -> None:
        self.transfers: list[int] = []

    @kernel_function(needs_approval=True)
    def transfer(self, amount: int) -> str:
        """Moves money."""
        self.transfers.append(amount)
        return f"sent {amount}"


async def test_approval_allow() -> None:
    bank = Bank()
    kernel = make_kernel((bank, "bank"))
    with_model(kernel, tool_call("bank.transfer", amount=5, id="t1"), "done")
    asked: list[tuple[str, dict[str, Any], str]] = []

    def approve(function: Any, arguments: dict[str, Any], call: Any) -> bool:
        asked.append((function.fully_qualified_name, arguments, call.id))
        return True

    result = await run_chat(kernel, "pay", approval=approve)
    assert asked == [("bank.transfer", {"amount": 5}, "t1")]
    assert bank.transfers == [5] and result.messages[1].content == "sent 5"


async def test_approval_refused_is_reported_and_the_loop_continues() -> None:
    bank = Bank()
    kernel = make_kernel((bank, "bank"))
    model = with_model(kernel, tool_call("bank.transfer", amount=500), "ok, not sent")

    async def deny(function: Any, arguments: dict[str, Any], call: Any) -> bool:
        await asyncio.sleep(0)
        return False

    kernel.approval = deny  # the kernel-wide default callback
    result = await run_chat(kernel, "pay")
    assert bank.transfers == []
    assert result.messages[1].content == DECLINED and "declined" in DECLINED
    assert model.requests[1].messages[-1].content == DECLINED
    assert result.text == "ok, not sent"


async def test_no_approval_callback_refuses_by_default() -> None:
    bank = Bank()
    kernel = make_kernel((bank, "bank"))
    with_model(kernel, tool_call("bank.transfer", amount=1), "ok")
    result = await run_chat(kernel, "pay")
    assert bank.transfers == [] and result.messages[1].content == NO_APPROVER


async def test_failing_approval_callback_refuses() -> None:
    bank = Bank()
    kernel = make_kernel((bank, "bank"))
    with_model(kernel, tool_call("bank.transfer", amount=1), "ok")

    def broken(*_: Any) -> bool:
        raise RuntimeError("ui crashed")

    result = await run_chat(kernel, "pay", approval=broken)
    assert bank.transfers == [] and result.messages[1].content == DECLINED


# --- tool_choice ------------------------------------------------------------------------------


async def test_named_tool_choice_forces_the_first_call_then_switches_to_auto() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    model = with_model(kernel, tool_call("calc.add", a=1, b=2), "3")
    result = await run_chat(kernel, "go", tool_choice="calc.add", tools=["calc.info"])
    assert model.requests[0].tool_choice == ToolChoice("required", "calc-add")
    assert model.requests[1].tool_choice == ToolChoice("auto")
    assert {t.name for t in model.requests[0].tools} == {"calc-info", "calc-add"}  # the named one is added
    assert calc.calls == [("add", {"a": 1, "b": 2})] and result.text == "3"


async def test_required_switches_to_auto_and_none_stays_none() -> None:
    kernel = make_kernel((Calc(), "calc"))
    model = with_model(kernel, tool_call("calc.add", a=1, b=2), "3")
    await run_chat(kernel, "go", tool_choice="required")
    assert [r.tool_choice for r in model.requests] == [ToolChoice("required"), ToolChoice("auto")]
    model.queue("no tools")
    await run_chat(kernel, "go", tool_choice="none")
    assert model.last_request.tool_choice == ToolChoice("none")
    with pytest.raises(FunctionNotFoundError):
        await run_chat(kernel, "go", tool_choice="calc.missing")


# --- through the kernel -----------------------------------------------------------------------


async def test_prompt_function_with_function_choice_runs_the_loop_and_meters_usage() -> None:
    calc = Calc()
    kernel = make_kernel((calc, "calc"))
    model = with_model(kernel, tool_call("calc.add", a=20, b=22), "The answer is 42")
    kernel.add_function(PromptFunction.from_template(
        "What is {{ question }}?", name="ask", plugin="qa",
        settings={"function_choice": "auto", "plugins": ["calc"], "max_tokens": 50, "loop_policy": {"max_rounds": 3}},
    ))
    result = await kernel.invoke("qa.ask", question="20+22")
    assert result.value == "The answer is 42"
    assert calc.calls == [("add", {"a": 20, "b": 22})]
    assert result.usage.requests == 2 and result.usage.input_tokens == 20
    assert model.requests[0].settings == {"max_tokens": 50}  # tool options are not provider settings
    assert {t.name for t in model.requests[0].tools} == {t for t in kernel._functions_by_tool if t.startswith("calc-")}


async def test_prompt_function_as_a_tool_reports_its_usage() -> None:
    kernel = make_kernel()
    kernel.add_function(PromptFunction.from_template("Summarize {{ text }}", name="summarize", plugin="writer"))
    model = with_model(kernel, tool_call("writer.summarize", text="long text"), ScriptedReply(text="short"),
                       "Here it is: short")
    result = await run_chat(kernel, "summarize this", tools=["writer.summarize"])
    assert model.requests[1].messages[-1].content == "Summarize long text"  # the nested prompt
    assert result.messages[1].content == "short"
    assert result.usage.requests == 3  # two loop requests + the nested one
