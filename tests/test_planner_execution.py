"""Plan execution as a graph: dependency order, concurrency of independent branches,
failures that skip dependants, resume, timeouts, approval, structured outputs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.contents import ChatRequest
from kernel.errors import ApprovalDeniedError, PlanError, PlanExecutionError, PlanValidationError
from kernel.planning import execute_plan
from kernel.planning.model import Plan
from kernel.testing import ScriptedChatModel, ScriptedReply, json_reply

WAIT = 5.0  # generous: a timeout here means the steps did not overlap


class Tools:
    """Native functions that record their calls and can be gated by events."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.count_started = asyncio.Event()
        self.summary_requested = asyncio.Event()
        self.count_running_when_summary_requested: bool | None = None
        self.count_done = False
        self.flaky_failures = 1

    @kernel_function
    def read_text(self, name: str) -> str:
        """Read a text file."""
        self.calls.append(f"read_text:{name}")
        return {"report.txt": "the quick brown fox jumps over the lazy dog"}[name]

    @kernel_function
    async def count_words(self, text: str) -> int:
        """Count the words of a text (waits until the other branch has reached the model)."""
        self.calls.append("count_words")
        self.count_started.set()
        await asyncio.wait_for(self.summary_requested.wait(), WAIT)
        self.count_done = True
        return len(text.split())

    @kernel_function
    def flaky(self, text: str) -> str:
        """Fails the first time."""
        self.calls.append("flaky")
        if self.flaky_failures:
            self.flaky_failures -= 1
            raise RuntimeError("disk not ready")
        return text.upper()

    @kernel_function
    def profile(self, text: str) -> dict[str, Any]:
        """Structured facts about a text."""
        self.calls.append("profile")
        return {"first": text.split()[0], "counts": {"words": len(text.split())}}

    @kernel_function
    def shout(self, text: str) -> str:
        """Upper-case a text."""
        self.calls.append(f"shout:{text}")
        return text.upper()

    @kernel_function
    async def slow(self, text: str) -> str:
        """Never finishes in time."""
        self.calls.append("slow")
        await asyncio.sleep(30)
        return text


def writer_reply(tools: Tools) -> Any:
    """Answers the writer prompt functions from the rendered prompt."""

    def reply(request: ChatRequest) -> ScriptedReply | str:
        text = request.messages[-1].content
        if text.startswith("Summarize:"):
            tools.count_running_when_summary_requested = tools.count_started.is_set() and not tools.count_done
            tools.summary_requested.set()
            return "SUMMARY(" + text.removeprefix("Summarize: ") + ")"
        if text.startswith("Translate into "):
            language, _, body = text.removeprefix("Translate into ").partition(": ")
            return f"{language.upper()}[{body}]"
        if text.startswith("Describe as JSON:"):
            return json_reply({"title": "Fox", "tags": ["animal", "quick"]})
        raise AssertionError(f"unexpected prompt {text!r}")

    return reply


def make_kernel() -> tuple[Kernel, Tools, ScriptedChatModel]:
    tools = Tools()
    model = ScriptedChatModel(default=writer_reply(tools))
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(tools, name="tools")
    kernel.add_function(PromptFunction.from_template("Summarize: {{ text }}", name="summarize", plugin="writer"))
    kernel.add_function(PromptFunction.from_template(
        "Translate into {{ language }}: {{ text }}", name="translate", plugin="writer"))
    kernel.add_function(PromptFunction.from_template(
        "Describe as JSON: {{ text }}", name="describe", plugin="writer",
        output_schema={"type": "object", "properties": {"title": {"type": "string"},
                                                        "tags": {"type": "array", "items": {"type": "string"}}}}))
    kernel.services.add_service("test", model)
    return kernel, tools, model


def step(id: str, function: str, **arguments: Any) -> dict[str, Any]:
    return {"id": id, "function": function, "arguments": arguments}


BRANCHES = {
    "goal": "Summarize report.txt in French and count its words",
    "inputs": {"name": "report.txt"},
    "steps": [
        step("read", "tools.read_text", name={"$input": "name"}),
        # listed first: a sequential executor would block here until the timeout
        step("count", "tools.count_words", text={"$step": "read"}),
        step("sum", "writer.summarize", text={"$step": "read"}),
        step("fr", "writer.translate", text={"$step": "sum"}, language="French"),
    ],
    "output": "fr",
}


async def test_independent_branches_run_concurrently_in_dependency_order():
    kernel, tools, model = make_kernel()
    plan = Plan.from_dict(BRANCHES)
    run = await plan.run(kernel)
    assert run.ok and run.status == {"read": "done", "count": "done", "sum": "done", "fr": "done"}
    # overlap: the count step was running (started, not finished) when the summary was requested
    assert tools.count_running_when_summary_requested is True
    assert tools.calls[0] == "read_text:report.txt"
    assert run.outputs["count"] == 9
    text = "the quick brown fox jumps over the lazy dog"
    assert run.outputs["sum"] == f"SUMMARY({text})"
    assert run.result == f"FRENCH[SUMMARY({text})]"
    # the translate request was built from the summary: it ran after its dependency
    assert [r.messages[-1].content.split(":")[0] for r in model.requests] == ["Summarize", "Translate into French"]
    assert run.usage.requests == 2


async def test_max_concurrency_one_serializes_the_branches():
    kernel, _tools, _ = make_kernel()
    plan = Plan.from_dict(BRANCHES)
    with pytest.raises(PlanExecutionError) as info:
        await execute_plan(kernel, plan, max_concurrency=1, step_timeout=0.3)
    # alone, the count step waits for the other branch, which cannot start: it times out
    assert info.value.step_id == "count"
    assert "timed out after 0.3 s" in info.value.reason
    assert info.value.outputs["read"].startswith("the quick")


async def test_inputs_at_run_time_override_plan_inputs():
    kernel, _tools, _ = make_kernel()
    plan = Plan.from_dict({"goal": "g", "inputs": {"text": "a"},
                           "steps": [step("s", "tools.shout", text={"$input": "text"})]})
    run = await plan.run(kernel, {"text": "hello"})
    assert run.result == "HELLO" and run.inputs == {"text": "hello"}


async def test_failed_step_skips_dependants_and_independent_branch_finishes_then_resume():
    kernel, tools, _ = make_kernel()
    plan = Plan.from_dict({
        "goal": "g", "inputs": {"name": "report.txt"},
        "steps": [
            step("read", "tools.read_text", name={"$input": "name"}),
            step("bad", "tools.flaky", text={"$step": "read"}),
            step("after", "tools.shout", text={"$step": "bad"}),
            step("after2", "tools.shout", text={"$step": "after"}),
            step("other", "tools.shout", text="independent"),
        ],
        "output": "after2",
    })
    with pytest.raises(PlanExecutionError) as info:
        await plan.run(kernel)
    error = info.value
    assert error.step_id == "bad"
    assert "tools.flaky failed: RuntimeError: disk not ready" in error.reason
    assert "skipped: after, after2" in error.reason
    assert set(error.outputs) == {"read", "other"} and error.outputs["other"] == "INDEPENDENT"
    previous = error.run  # type: ignore[attr-defined]
    assert previous.status == {"read": "done", "bad": "failed", "after": "skipped", "after2": "skipped",
                               "other": "done"}
    assert previous.errors["after2"] == "skipped: step 'bad' failed"
    assert previous.result is None
    calls_before = list(tools.calls)

    run = await execute_plan(kernel, plan, resume=previous)
    assert run.ok and run.result == "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"
    new_calls = tools.calls[len(calls_before):]
    assert sorted(run.invoked) == ["after", "after2", "bad"]
    assert "read_text:report.txt" not in new_calls and "shout:independent" not in new_calls
    assert new_calls[0] == "flaky"


async def test_resume_with_another_plan_is_refused():
    kernel, _, _ = make_kernel()
    plan = Plan.from_dict({"goal": "g", "steps": [step("s", "tools.shout", text="a")]})
    run = await plan.run(kernel)
    other = Plan.from_dict({"goal": "g", "steps": [step("s", "tools.shout", text="b")]})
    with pytest.raises(PlanError, match="different plan"):
        await execute_plan(kernel, other, resume=run)


async def test_step_timeout():
    kernel, _tools, _ = make_kernel()
    plan = Plan.from_dict({"goal": "g", "steps": [step("s", "tools.slow", text="a"),
                                                  step("t", "tools.shout", text={"$step": "s"})]})
    with pytest.raises(PlanExecutionError) as info:
        await plan.run(kernel, step_timeout=0.05)
    assert info.value.step_id == "s" and info.value.reason == "tools.slow timed out after 0.05 s (skipped: t)"


async def test_field_paths_into_structured_outputs():
    kernel, _tools, _ = make_kernel()
    plan = Plan.from_dict({"goal": "g", "steps": [
        step("p", "tools.profile", text="quick fox"),
        step("a", "tools.shout", text={"$step": "p", "path": "first"}),
        step("b", "tools.shout", text={"$step": "p", "path": "counts.words"}),  # a number fed to text
        step("d", "writer.describe", text="fox"),                  # structured output of a prompt function
        step("e", "tools.shout", text={"$step": "d", "path": "tags.1"}),
        step("f", "tools.shout", text={"$step": "p", "path": "counts"}),  # an object fed to text: JSON
    ], "output": {"$step": "d", "path": "title"}})
    run = await plan.run(kernel)
    assert run.outputs["a"] == "QUICK" and run.outputs["b"] == "2" and run.outputs["e"] == "QUICK"
    assert run.outputs["f"] == '{"WORDS": 2}'
    assert run.result == "Fox"


async def test_missing_field_at_run_time_fails_the_step():
    kernel, _, _ = make_kernel()
    plan = Plan.from_dict({"goal": "g", "steps": [
        step("p", "tools.profile", text="quick fox"),
        step("a", "tools.shout", text={"$step": "p", "path": "last"}),
    ]})
    with pytest.raises(PlanExecutionError) as info:
        await plan.run(kernel)
    assert info.value.step_id == "a"
    assert info.value.reason == "argument 'text': the output of step 'p' has no field 'last' (fields: first, counts)"


async def test_invalid_plan_is_rejected_before_anything_runs():
    kernel, tools, model = make_kernel()
    plan = Plan.from_dict({"goal": "g", "steps": [
        step("a", "tools.shout", text="x"),
        step("b", "tools.shout", text={"$input": "missing"}),
    ]})
    with pytest.raises(PlanValidationError, match="goal input 'missing'"):
        await plan.run(kernel)
    assert tools.calls == [] and model.requests == []
    run = await plan.run(kernel, {"missing": "now given"})
    assert run.outputs["b"] == "NOW GIVEN"


async def test_approval_refusal_invokes_nothing():
    kernel, tools, model = make_kernel()
    plan = Plan.from_dict(BRANCHES)
    seen: list[Plan] = []

    def refuse(p: Plan) -> bool:
        seen.append(p)
        return False

    with pytest.raises(ApprovalDeniedError, match="not approved; no step was run"):
        await plan.run(kernel, approval=refuse)
    assert seen[0].inputs == {"name": "report.txt"} and len(seen[0].steps) == 4
    assert tools.calls == [] and model.requests == []

    async def refuse_async(p: Plan) -> bool:
        return False

    with pytest.raises(ApprovalDeniedError):
        await execute_plan(kernel, plan, approval=refuse_async)
    assert tools.calls == []

    async def accept(p: Plan) -> bool:
        return "tools.read_text" in str(p)

    run = await execute_plan(kernel, plan, approval=accept)
    assert run.ok


async def test_hand_edited_plan_json_runs():
    kernel, _, _ = make_kernel()
    text = """
    {
      "goal": "Shout the first word of a text",
      "inputs": {"text": "hello world"},
      "steps": [
        {"id": "p", "function": "tools.profile", "arguments": {"text": {"$input": "text"}}},
        {"id": "s", "function": "tools.shout", "arguments": {"text": "$p.first"},
         "description": "edited by hand"}
      ],
      "output": "s"
    }"""
    run = await Plan.from_json(text).run(kernel)
    assert run.result == "HELLO"
    assert run.to_dict()["status"] == {"p": "done", "s": "done"}


async def test_steps_needing_approval_do_not_run_without_a_callback():
    """The tool loop's rule holds for plans too: a function marked needs_approval never
    runs unless an approval callback accepts the plan."""
    deleted: list[str] = []

    @kernel_function(needs_approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        deleted.append(path)
        return "deleted"

    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin([delete], name="files")
    plan = Plan.from_dict({"goal": "clean up", "steps": [
        {"id": "s1", "function": "files.delete", "arguments": {"path": "/tmp/x"}}], "output": {"$step": "s1"}})
    with pytest.raises(ApprovalDeniedError, match=r"s1 \(files.delete\)"):
        await execute_plan(kernel, plan)
    assert deleted == []
    run = await execute_plan(kernel, plan, approval=lambda p: True)
    assert run.ok and deleted == ["/tmp/x"]
