"""`needs_approval` is transitive: a gated function reached while serving a model asks.

Serving a model means running a tool call the model asked for, or a plan step. Whatever
that call runs (the template of a prompt function offered as a tool, a native tool's own
`kernel.invoke`, a step's nested calls) is covered: a function marked `needs_approval`
asks the approval callback (the tool loop's `approval=`, else `kernel.approval`; for plan
steps `kernel.approval`) with itself, its validated arguments and the model's call, and is
refused (`ApprovalDeniedError`, naming it) when the callback says no or there is none.
The application calling the kernel directly is trusted and asked nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.chat.tools import DECLINED, NO_APPROVER
from kernel.contents import ToolCall
from kernel.errors import ApprovalDeniedError, PlanExecutionError
from kernel.planning import Plan, execute_plan
from kernel.testing import ScriptedChatModel, tool_call


class Bank:
    def __init__(self) -> None:
        self.transfers: list[int] = []

    @kernel_function(needs_approval=True)
    def transfer(self, amount: int, memo: str = "") -> str:
        """Moves money."""
        self.transfers.append(amount)
        return f"sent {amount}"


class Agent:
    """Native tools that reach the bank through the kernel."""

    @kernel_function
    async def pay(self, amount: int, kernel: Kernel) -> str:
        """Pays through the bank."""
        return str((await kernel.invoke("bank.transfer", amount=amount)).value)

    @kernel_function(needs_approval=True)
    async def pay_gated(self, amount: int, kernel: Kernel) -> str:
        """Gated itself, and pays through the bank."""
        return str((await kernel.invoke("bank.transfer", amount=amount)).value)


class Approver:
    """Records what it was asked; answers `answer` (sync or async)."""

    def __init__(self, answer: bool, *, is_async: bool = False) -> None:
        self.answer, self.is_async = answer, is_async
        self.asked: list[tuple[str, dict[str, Any], ToolCall]] = []

    def __call__(self, function: Any, arguments: dict[str, Any], call: ToolCall) -> Any:
        self.asked.append((function.fully_qualified_name, arguments, call))
        if not self.is_async:
            return self.answer

        async def later() -> bool:
            await asyncio.sleep(0)
            return self.answer

        return later()


def make_kernel(*replies: Any) -> tuple[Kernel, Bank, ScriptedChatModel]:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    bank = Bank()
    kernel.add_plugin(bank, name="bank")
    kernel.add_plugin(Agent(), name="agent")
    kernel.add_function(PromptFunction.from_template(
        "Write a receipt for: {{ bank.transfer(amount=amount, memo='rent') }}", name="receipt", plugin="w"))
    model = ScriptedChatModel(replies)
    kernel.services.add_service("test", model)
    return kernel, bank, model


# --- from the template of a prompt function offered as a tool ------------------------------


@pytest.mark.parametrize("is_async", [False, True])
async def test_template_of_a_tool_asks_and_runs_when_approved(is_async: bool) -> None:
    kernel, bank, model = make_kernel(tool_call("w.receipt", amount=5, id="c1"), "Receipt: sent 5", "done")
    approve = Approver(True, is_async=is_async)
    result = await kernel.chat("pay the rent", tools=["w.receipt"], approval=approve)
    assert bank.transfers == [5]
    assert [(name, args, call.id) for name, args, call in approve.asked] == [
        ("bank.transfer", {"amount": 5, "memo": "rent"}, "c1")]  # validated arguments, the model's call
    assert approve.asked[0][2].name == "w-receipt"
    assert model.requests[1].messages[-1].content == "Write a receipt for: sent 5"
    assert result.messages[1].content == "Receipt: sent 5"


async def test_template_of_a_tool_is_refused_when_declined() -> None:
    kernel, bank, model = make_kernel(tool_call("w.receipt", amount=5), "not paid")
    approve = Approver(False)
    result = await kernel.chat("pay the rent", tools=["w.receipt"], approval=approve)
    assert bank.transfers == [] and len(approve.asked) == 1
    error = result.messages[1].content
    assert error.startswith("error:") and "bank.transfer" in error and "declined" in error
    assert len(model.requests) == 2  # the receipt never reached the model


async def test_template_of_a_tool_is_refused_without_a_callback() -> None:
    kernel, bank, _ = make_kernel(tool_call("w.receipt", amount=5), "not paid")
    result = await kernel.chat("pay the rent", tools=["w.receipt"])
    assert bank.transfers == []
    error = result.messages[1].content
    assert error.startswith("error:") and "bank.transfer" in error and "no approval callback" in error


async def test_kernel_approval_is_the_default_callback() -> None:
    kernel, bank, _ = make_kernel(tool_call("w.receipt", amount=7), "Receipt", "done")
    kernel.approval = approve = Approver(True, is_async=True)
    await kernel.chat("pay", tools=["w.receipt"])
    assert bank.transfers == [7] and [a[0] for a in approve.asked] == ["bank.transfer"]


async def test_template_of_a_prompt_function_running_its_own_tool_loop() -> None:
    """A prompt function that offers tools runs the loop itself; its tools' templates ask."""
    kernel, bank, model = make_kernel(tool_call("w.receipt", amount=3), "not paid")
    kernel.add_function(PromptFunction.from_template(
        "pay {{ amount }}", name="clerk", plugin="a", settings={"function_choice": "auto", "tools": ["w.receipt"]}))
    assert (await kernel.invoke("a.clerk", amount=3)).value == "not paid"
    assert bank.transfers == [] and "bank.transfer" in model.requests[1].messages[-1].content  # no callback
    kernel, bank, _ = make_kernel(tool_call("w.receipt", amount=3), "receipt", "paid")
    kernel.add_function(PromptFunction.from_template(
        "pay {{ amount }}", name="clerk", plugin="a", settings={"function_choice": "auto", "tools": ["w.receipt"]}))
    kernel.approval = Approver(True)
    assert (await kernel.invoke("a.clerk", amount=3)).value == "paid"
    assert bank.transfers == [3]


# --- from a nested kernel.invoke inside a native tool ----------------------------------------


async def test_nested_invoke_asks_and_runs_when_approved() -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=9, id="c9"), "done")
    approve = Approver(True, is_async=True)
    result = await kernel.chat("pay", tools=["agent.pay"], approval=approve)
    assert bank.transfers == [9] and result.messages[1].content == "sent 9"
    assert [(name, args, call.id) for name, args, call in approve.asked] == [
        ("bank.transfer", {"amount": 9, "memo": ""}, "c9")]


@pytest.mark.parametrize("approve", [Approver(False), Approver(False, is_async=True), None])
async def test_nested_invoke_is_refused(approve: Approver | None) -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=9), "not paid")
    result = await kernel.chat("pay", tools=["agent.pay"], approval=approve)
    assert bank.transfers == []
    error = result.messages[1].content
    assert error.startswith("error:") and "bank.transfer" in error
    assert error not in (DECLINED, NO_APPROVER)  # those are for the call the model made itself


async def test_a_callback_that_raises_refuses() -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=9), "not paid")

    def broken(*_: Any) -> bool:
        raise RuntimeError("ui crashed")

    result = await kernel.chat("pay", tools=["agent.pay"], approval=broken)
    assert bank.transfers == [] and "bank.transfer" in result.messages[1].content


async def test_only_true_approves() -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=9), "not paid")
    await kernel.chat("pay", tools=["agent.pay"], approval=lambda *_: "yes")
    assert bank.transfers == []


async def test_streamed_chat_asks_for_nested_calls_too() -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=2), "done")
    approve = Approver(False)
    events = [e async for e in kernel.chat_stream("pay", tools=["agent.pay"], approval=approve)]
    assert bank.transfers == [] and [a[0] for a in approve.asked] == ["bank.transfer"]
    assert events


# --- the call the model made itself ----------------------------------------------------------


async def test_a_gated_tool_is_asked_once_not_twice() -> None:
    kernel, bank, _ = make_kernel(tool_call("bank.transfer", amount=4, id="t4"), "done")
    approve = Approver(True)
    await kernel.chat("pay", tools=["bank.transfer"], approval=approve)
    assert bank.transfers == [4]
    assert [(name, args, call.id) for name, args, call in approve.asked] == [
        ("bank.transfer", {"amount": 4, "memo": ""}, "t4")]


async def test_a_gated_tool_reaching_another_gated_function_asks_for_each() -> None:
    kernel, bank, _ = make_kernel(tool_call("agent.pay_gated", amount=4, id="g4"), "done")
    approve = Approver(True)
    await kernel.chat("pay", tools=["agent.pay_gated"], approval=approve)
    assert bank.transfers == [4]
    assert [(name, call.id) for name, _, call in approve.asked] == [("agent.pay_gated", "g4"), ("bank.transfer", "g4")]


async def test_a_refused_top_level_call_keeps_the_loops_texts() -> None:
    kernel, bank, model = make_kernel(tool_call("bank.transfer", amount=4), tool_call("bank.transfer", amount=5), "ok")
    await kernel.chat("pay", tools=["bank.transfer"], approval=Approver(False))
    assert model.requests[1].messages[-1].content == DECLINED
    kernel2, bank2, model2 = make_kernel(tool_call("bank.transfer", amount=4), "ok")
    await kernel2.chat("pay", tools=["bank.transfer"])
    assert model2.requests[1].messages[-1].content == NO_APPROVER
    assert bank.transfers == bank2.transfers == []


async def test_an_approved_call_does_not_approve_a_second_call_of_the_same_function() -> None:
    """The grant covers the model's call, once: the same gated function invoked again
    from inside it asks again."""
    kernel, _, _ = make_kernel()

    class Twice:
        @kernel_function(needs_approval=True)
        async def twice(self, kernel: Kernel, depth: int = 0) -> str:
            """Calls itself once."""
            if depth == 0:
                await kernel.invoke("twice.twice", depth=1)
            return "ok"

    kernel.add_plugin(Twice(), name="twice")
    kernel.services.add_service("test", ScriptedChatModel([tool_call("twice.twice"), "done"]))
    approve = Approver(True)
    await kernel.chat("go", tools=["twice.twice"], approval=approve)
    assert [args for _, args, _ in approve.asked] == [{"depth": 0}, {"depth": 1}]


# --- plan steps ----------------------------------------------------------------------------


def pay_plan(function: str = "agent.pay") -> Plan:
    return Plan.from_dict({"goal": "pay", "steps": [
        {"id": "s1", "function": function, "arguments": {"amount": 6}}], "output": {"$step": "s1"}})


async def test_nested_gated_function_under_a_plan_step_is_refused_without_a_callback() -> None:
    kernel, bank, _ = make_kernel()
    with pytest.raises(PlanExecutionError, match=r"bank\.transfer.*no approval callback"):
        await execute_plan(kernel, pay_plan())
    assert bank.transfers == []


async def test_nested_gated_function_under_a_plan_step_asks_kernel_approval() -> None:
    kernel, bank, _ = make_kernel()
    kernel.approval = deny = Approver(False)
    with pytest.raises(PlanExecutionError, match=r"bank\.transfer.*declined"):
        await execute_plan(kernel, pay_plan())
    assert bank.transfers == []
    kernel.approval = approve = Approver(True, is_async=True)
    run = await execute_plan(kernel, pay_plan())
    assert run.result == "sent 6" and bank.transfers == [6]
    for asked in (deny.asked, approve.asked):
        [(name, args, call)] = asked
        assert (name, args, call.id, call.name) == ("bank.transfer", {"amount": 6, "memo": ""}, "plan-step-s1",
                                                    "agent-pay")


async def test_a_gated_step_approved_with_the_plan_is_not_asked_again_but_its_nested_calls_are() -> None:
    kernel, bank, _ = make_kernel()
    kernel.approval = approve = Approver(True)
    run = await execute_plan(kernel, pay_plan("agent.pay_gated"), approval=lambda plan: True)
    assert run.ok and bank.transfers == [6]
    assert [name for name, _, _ in approve.asked] == ["bank.transfer"]
    with pytest.raises(ApprovalDeniedError, match=r"agent\.pay_gated"):  # the plan-level rule is unchanged
        await execute_plan(kernel, pay_plan("agent.pay_gated"))


# --- the application itself is trusted --------------------------------------------------------


async def test_direct_calls_of_the_application_need_no_approval() -> None:
    kernel, bank, _ = make_kernel("receipt")
    assert (await kernel.invoke("bank.transfer", amount=1)).value == "sent 1"
    assert (await kernel.invoke("agent.pay", amount=2)).value == "sent 2"
    assert (await kernel.invoke("w.receipt", amount=3)).value == "receipt"  # the application's own template
    assert bank.transfers == [1, 2, 3]


async def test_the_approval_scope_ends_with_the_tool_call() -> None:
    """After a chat turn, the application's own calls are trusted again."""
    kernel, bank, _ = make_kernel(tool_call("agent.pay", amount=1), "done")
    await kernel.chat("pay", tools=["agent.pay"])
    assert bank.transfers == []
    assert (await kernel.invoke("agent.pay", amount=2)).value == "sent 2"
    assert bank.transfers == [2]
