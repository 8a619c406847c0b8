"""Planner: plan generation with structured output, validation of every kind of problem,
repair requests, the plan cache, JSON round trip and display."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.contents import ChatRequest
from kernel.errors import FunctionNotFoundError, PlanError, PlanValidationError
from kernel.planning.cache import PlanCache
from kernel.planning.generation import parse_reply, plan_schema
from kernel.planning.model import InputRef, Plan, Step, StepRef
from kernel.testing import ScriptedChatModel, ScriptedReply, json_reply


class Stats(BaseModel):
    words: int
    lines: int


class Files:
    """Read files from a fixed in-memory folder."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    @kernel_function
    def read_text(self, name: Annotated[str, "the file name"]) -> str:
        """Read a text file."""
        return self.texts[name]


class Text:
    @kernel_function
    def count_words(self, text: str) -> int:
        """Count the words of a text."""
        return len(text.split())

    @kernel_function
    def stats(self, text: str) -> Stats:
        """Word and line counts of a text."""
        return Stats(words=len(text.split()), lines=len(text.splitlines()))

    @kernel_function
    def repeat(self, text: str, times: int = 2) -> str:
        """Repeat a text."""
        return text * times


def make_kernel(model: ScriptedChatModel) -> Kernel:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin(Files({"report.txt": "one two three\nfour"}), name="files")
    kernel.add_plugin(Text(), name="text")
    kernel.add_function(PromptFunction.from_template(
        "Summarize: {{ text }}", name="summarize", plugin="writer", description="Summarize a text."))
    kernel.add_function(PromptFunction.from_template(
        "Translate into {{ language }}: {{ text }}", name="translate", plugin="writer",
        description="Translate a text."))
    kernel.services.add_service("test", model)
    return kernel


def step(id: str, function: str, **arguments: Any) -> dict[str, Any]:
    return {"id": id, "function": function, "arguments": arguments}


VALID = {
    "steps": [
        step("s1", "files.read_text", name={"$input": "name"}),
        step("s2", "writer.summarize", text={"$step": "s1"}),
        step("s3", "writer.translate", text={"$step": "s2"}, language="French"),
        step("s4", "text.count_words", text={"$step": "s1"}),
    ],
    "output": "s3",
}
INPUTS = {"name": "report.txt"}


def problems_of(kernel: Kernel, data: dict[str, Any], **kwargs: Any) -> list[str]:
    plan = Plan.from_dict({"goal": "g", "inputs": INPUTS, **data})
    return plan.problems(kernel, **kwargs)


def one_problem(kernel: Kernel, data: dict[str, Any], **kwargs: Any) -> str:
    found = problems_of(kernel, data, **kwargs)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def model() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
def kernel(model: ScriptedChatModel) -> Kernel:
    return make_kernel(model)


# --- generation -----------------------------------------------------------------------------------


async def test_plan_request_uses_structured_output_and_shows_only_allowed_functions(kernel, model):
    model.queue(json_reply({"steps": [step("s1", "text.count_words", text={"$input": "text"})], "output": "s1"}))
    plan = await kernel.plan("Count the words", inputs={"text": "a b c"}, plugins=["text"])
    assert [s.function for s in plan.steps] == ["text.count_words"]
    assert plan.inputs == {"text": "a b c"} and plan.goal == "Count the words"
    request = model.last_request
    assert request.output_schema is not None and request.output_schema_name == "plan"
    assert request.output_schema["properties"]["steps"]["maxItems"] == 10
    system = request.messages[0].content
    assert "text.count_words: Count the words of a text." in system
    assert json.dumps(kernel.get_function("text.count_words").parameters_schema) in system
    assert '"$step"' in system and '"$input"' in system
    assert "writer.summarize" not in system and "files.read_text" not in system
    assert "Goal: Count the words" in request.messages[1].content
    assert '- text: "a b c"' in request.messages[1].content


async def test_plan_schema_constrains_each_function_arguments(kernel):
    fns = [kernel.get_function("text.repeat"), kernel.get_function("files.read_text")]
    schema = plan_schema(fns, max_steps=3)
    variants = schema["properties"]["steps"]["items"]["anyOf"]
    repeat = variants[0]["properties"]
    assert repeat["function"]["enum"] == ["text.repeat"]
    assert repeat["arguments"]["required"] == ["text"]
    times = repeat["arguments"]["properties"]["times"]["anyOf"]
    assert {"type": "integer"} in times and any("$step" in v.get("properties", {}) for v in times)
    assert variants[0]["properties"]["id"]["enum"] == ["s1", "s2", "s3"]
    assert schema["properties"]["output"]["enum"] == ["s1", "s2", "s3"]
    step_ref = next(v for v in times if "$step" in v.get("properties", {}))
    assert step_ref["properties"]["$step"]["enum"] == ["s1", "s2", "s3"]
    loose = plan_schema(fns, detailed=False)["properties"]["steps"]["items"]
    assert loose["properties"]["function"]["enum"] == ["text.repeat", "files.read_text"]


async def test_instructions_in_the_user_message_for_models_without_system_role(kernel, model):
    bad = {"steps": [step("s1", "text.count_words")], "output": "s1"}
    model.queue(json_reply(bad), json_reply({"steps": [step("s1", "text.count_words", text="a")], "output": "s1"}))
    await kernel.plan("Count", plugins=["text"], system_message=False)
    first, repair = model.requests
    assert [m.role for m in first.messages] == ["user"]
    assert first.messages[0].content.startswith("You are a planner.")
    assert first.messages[0].content.endswith("Goal: Count\nInputs: none")
    assert [m.role for m in repair.messages] == ["user", "assistant", "user"]
    assert "missing required argument 'text'" in repair.messages[2].content


async def test_functions_option_limits_the_allowed_set(kernel, model):
    plan_text = {"steps": [step("s1", "writer.summarize", text="x")], "output": "s1"}
    model.queue(json_reply(plan_text), json_reply(plan_text))
    with pytest.raises(PlanValidationError) as info:
        await kernel.plan("Count", functions=["text.count_words"], max_repairs=1)
    assert any("'writer.summarize' is not allowed" in p for p in info.value.problems)
    assert "writer.summarize" not in model.requests[0].messages[0].content


async def test_reply_in_text_with_code_fences_is_parsed(kernel, model):
    body = json.dumps({"steps": [step("s1", "text.count_words", text="a b")], "output": "s1"})
    model.queue(f"Here is the plan:\n```json\n{body}\n```\nDone.")
    plan = await kernel.plan("Count the words of 'a b'")
    assert plan.steps[0].arguments == {"text": "a b"}
    assert parse_reply('noise {"a": 1} more {"b": 2}') == {"a": 1}
    with pytest.raises(PlanValidationError, match="not a JSON plan"):
        parse_reply("no json here")


async def test_invalid_plan_is_repaired_with_the_problems_sent_back(kernel, model):
    bad = {"steps": [step("s1", "text.count_words", txt={"$step": "s0"})], "output": "s1"}
    model.queue(json_reply(bad), json_reply(VALID))
    plan = await kernel.plan("Summarize report.txt in French, count its words", inputs=INPUTS)
    assert [s.id for s in plan.steps] == ["s1", "s2", "s3", "s4"]
    assert len(model.requests) == 2
    repair = model.requests[1].messages
    assert repair[2].role == "assistant" and json.loads(repair[2].content) == bad  # the previous plan
    text = repair[3].content
    assert "step 's1' (text.count_words): unexpected argument 'txt'" in text
    assert "step 's1' (text.count_words): missing required argument 'text'" in text
    assert "refers to step 's0', which does not exist" in text
    assert model.requests[1].output_schema == model.requests[0].output_schema


async def test_repairs_exhausted_raise_every_problem(kernel, model):
    bad = {"steps": [step("s1", "nope.fn"), step("s1", "text.count_words", text=3)], "output": "s9"}
    model.queue(json_reply(bad), json_reply(bad), "not json at all")
    with pytest.raises(PlanValidationError) as info:
        await kernel.plan("Do it", max_repairs=2)
    assert len(model.requests) == 3
    assert info.value.problems == ["the reply is not a JSON plan: 'not json at all'"]
    # the second request carried the full problem list of the first plan
    sent = model.requests[1].messages[3].content
    assert "unknown function 'nope.fn'" in sent
    assert "duplicate step id 's1'" in sent
    assert "argument 'text' has an ill-typed value" in sent
    assert "the output refers to step 's9', which does not exist" in sent


async def test_no_repairs_raises_after_one_request(kernel, model):
    model.queue(json_reply({"steps": [], "output": "s1"}))
    with pytest.raises(PlanValidationError) as info:
        await kernel.plan("Do it", max_repairs=0)
    assert "the plan has no steps" in info.value.problems
    assert len(model.requests) == 1


async def test_model_invented_inputs_do_not_count(kernel, model):
    invented = {"inputs": {"secret": "x"}, "steps": [step("s1", "text.count_words", text={"$input": "secret"})],
                "output": "s1"}
    model.queue(json_reply(invented))
    with pytest.raises(PlanValidationError, match="goal input 'secret', which does not exist"):
        await kernel.plan("Count", max_repairs=0)


async def test_empty_goal_and_unknown_plugin(kernel):
    with pytest.raises(PlanError, match="goal is empty"):
        await kernel.plan("  ")
    with pytest.raises(FunctionNotFoundError, match="no plugin named 'ghost'"):
        await kernel.plan("x", plugins=["ghost"])


# --- cache ----------------------------------------------------------------------------------------


async def test_cache_hit_makes_no_model_request(kernel, model):
    model.queue(json_reply(VALID))
    first = await kernel.plan("Summarize", inputs=INPUTS)
    assert len(model.requests) == 1
    second = await kernel.plan("Summarize", inputs={"name": "other.txt"})
    assert len(model.requests) == 1  # served from the cache
    assert second.to_dict()["steps"] == first.to_dict()["steps"]
    assert second.inputs == {"name": "other.txt"}  # with this call's values
    # another input set, goal or allowed set is a miss
    model.queue(json_reply(VALID), json_reply(VALID))
    await kernel.plan("Summarize", inputs={"name": "a", "extra": 1})
    await kernel.plan("Summarize", inputs=INPUTS, plugins=["files", "writer", "text"], use_cache=False)
    assert len(model.requests) == 3


async def test_cache_key_changes_with_function_schemas(kernel):
    fns = kernel.functions()
    key = PlanCache.key("goal", fns, ["a"])
    assert PlanCache.key("goal", list(reversed(fns)), ["a"]) == key
    changed = PromptFunction.from_template("Summarize: {{ text }} in {{ style }}", name="summarize",
                                           plugin="writer", description="Summarize a text.")
    others = [f for f in fns if f.fully_qualified_name != "writer.summarize"]
    assert PlanCache.key("goal", [*others, changed], ["a"]) != key
    assert PlanCache.key("goal", fns, ["b"]) != key


async def test_disk_cache_survives_a_new_kernel(model, tmp_path):
    cache = PlanCache(tmp_path / "plans")
    kernel = make_kernel(model)
    model.queue(json_reply(VALID))
    await kernel.plan("Summarize", inputs=INPUTS, cache=cache)
    assert len(list((tmp_path / "plans").glob("*.json"))) == 1
    other_model = ScriptedChatModel()
    again = await make_kernel(other_model).plan("Summarize", inputs=INPUTS, cache=PlanCache(tmp_path / "plans"))
    assert other_model.requests == [] and len(again.steps) == 4


# --- validation: one test per kind of problem --------------------------------------------------


def test_valid_plan_has_no_problems(kernel):
    assert problems_of(kernel, VALID) == []


def test_unknown_function(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.shout", text="a")]})
    assert msg.startswith("step 's1': unknown function 'text.shout'") and "count_words" in msg


def test_function_not_allowed(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.count_words", text="a")]}, allowed={"writer.summarize"})
    assert msg == ("step 's1' (text.count_words): function 'text.count_words' is not allowed in this plan "
                   "(allowed: writer.summarize)")


def test_missing_required_argument(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "writer.translate", text="hi")]})
    assert msg == "step 's1' (writer.translate): missing required argument 'language'"


def test_extra_argument(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.count_words", text="a", lang="en")]})
    assert msg == "step 's1' (text.count_words): unexpected argument 'lang' (parameters: text)"


def test_ill_typed_literal(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.repeat", text="a", times="many")]})
    assert msg.startswith("step 's1' (text.repeat): argument 'times' has an ill-typed value:")
    assert "valid integer" in msg and 'got "many"' in msg
    # a literal that validation accepts is accepted at invocation too (lax int from "3")
    assert problems_of(kernel, {"steps": [step("s1", "text.repeat", text="a", times="3")]}) == []


def test_reference_is_not_type_checked_as_a_literal(kernel):
    data = {"steps": [step("s1", "text.count_words", text="a b"),
                      step("s2", "text.repeat", text="x", times={"$step": "s1"})]}
    assert problems_of(kernel, data) == []


def test_reference_to_missing_step(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.count_words", text={"$step": "s7"})]})
    assert msg == "step 's1' (text.count_words): argument 'text' refers to step 's7', which does not exist"


def test_reference_to_later_step_and_cycle(kernel):
    data = {"steps": [step("s1", "text.count_words", text={"$step": "s2"}),
                      step("s2", "text.repeat", text={"$step": "s1"})]}
    found = problems_of(kernel, data)
    assert "step 's1' (text.count_words): argument 'text' refers to step 's2', which comes later in the plan" in found
    assert "steps form a cycle: s1 -> s2 -> s1" in found or "steps form a cycle: s2 -> s1 -> s2" in found


def test_reference_to_self(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "text.repeat", text={"$step": "s1"})]})
    assert msg == "step 's1' (text.repeat): argument 'text' refers to the step's own output (<s1>)"


def test_reference_to_missing_input(kernel):
    msg = one_problem(kernel, {"steps": [step("s1", "files.read_text", name={"$input": "file"})]})
    assert msg == ("step 's1' (files.read_text): argument 'name' refers to the goal input 'file', "
                   "which does not exist (inputs: name)")


def test_field_path_not_in_return_schema(kernel):
    data = {"steps": [step("s1", "text.stats", text="a"),
                      step("s2", "text.repeat", text="x", times={"$step": "s1", "path": "chars"})]}
    msg = one_problem(kernel, data)
    assert msg == ("step 's2' (text.repeat): argument 'times': the output of step 's1' (text.stats) "
                   "has no field 'chars' (fields: lines, words)")
    data["steps"][1]["arguments"]["times"] = {"$step": "s1", "path": "words"}
    assert problems_of(kernel, data) == []


def test_field_path_on_a_number(kernel):
    data = {"steps": [step("s1", "text.count_words", text="a"),
                      step("s2", "text.repeat", text="x", times="$s1.value")]}
    msg = one_problem(kernel, data)
    assert msg == ("step 's2' (text.repeat): argument 'times': the output of step 's1' (text.count_words) "
                   "is integer, which has no field 'value'")


def test_field_path_on_text_is_left_to_run_time(kernel):
    data = {"steps": [step("s1", "writer.summarize", text="a"),
                      step("s2", "text.count_words", text={"$step": "s1", "path": "summary"})]}
    assert problems_of(kernel, data) == []


def test_duplicate_step_ids(kernel):
    data = {"steps": [step("s1", "text.count_words", text="a"), step("s1", "text.count_words", text="b")]}
    assert one_problem(kernel, data) == "duplicate step id 's1' (steps #1 and #2)"


def test_too_many_steps(kernel):
    data = {"steps": [step(f"s{i}", "text.count_words", text="a") for i in range(4)]}
    assert one_problem(kernel, data, max_steps=3) == "the plan has 4 steps; at most 3 are allowed"


def test_output_missing_step(kernel):
    data = {"steps": [step("s1", "text.count_words", text="a")], "output": "s2"}
    assert one_problem(kernel, data) == "the output refers to step 's2', which does not exist"


def test_output_path_checked(kernel):
    data = {"steps": [step("s1", "text.stats", text="a")], "output": {"$step": "s1", "path": "size"}}
    msg = one_problem(kernel, data)
    assert msg.startswith("the output <s1.size>: the output of step 's1' (text.stats) has no field 'size'")


def test_every_problem_is_collected(kernel):
    data = {"steps": [step("s1", "nope.fn"), step("s2", "text.repeat", text={"$input": "zz"}, times="x", y=1),
                      step("s2", "writer.translate")], "output": "s5"}
    found = problems_of(kernel, data, max_steps=2)
    assert len(found) == 9, found
    assert "step 's2' (writer.translate): missing required argument 'text'" in found
    assert "step 's2' (text.repeat): unexpected argument 'y' (parameters: text, times)" in found


def test_structural_problems_are_collected():
    with pytest.raises(PlanValidationError) as info:
        Plan.from_dict({"goal": "g", "steps": [
            "s1",
            {"function": "a.b"},
            {"id": "s3", "function": "text.count_words", "arguments": ["x"]},
            {"id": "s4", "function": "text.count_words", "arguments": {"text": {"$step": 4}}},
        ], "output": 5})
    problems = info.value.problems
    assert problems[0] == "step #1 must be an object with id, function and arguments, not a string"
    assert problems[1].startswith("step #2: 'id' must be a non-empty string")
    assert problems[2] == "step 's3' (text.count_words): 'arguments' must be an object, not a list"
    assert problems[3].startswith("step 's4' (text.count_words): argument 'text': a step reference is")
    assert problems[4].startswith("'output' must be a step id")
    with pytest.raises(PlanValidationError, match="not valid JSON"):
        Plan.from_json("{nope")


# --- data model -----------------------------------------------------------------------------------


def test_json_round_trip_and_canonical_references():
    plan = Plan.from_dict({"goal": "g", "inputs": INPUTS, **VALID})
    assert plan.steps[0].arguments["name"] == InputRef("name")
    assert plan.steps[1].arguments["text"] == StepRef("s1")
    again = Plan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict()
    assert json.loads(plan.to_json())["steps"][0]["arguments"]["name"] == {"$input": "name"}


def test_string_shorthands_and_escaped_literals():
    plan = Plan.from_dict({"goal": "g", "steps": [
        step("s1", "a.b", x="$input.name", y="$s0.summary.title", z="$5 off", w={"$value": "$s0"},
             v={"$value": {"$step": "raw"}}, u="$s0"),
    ]})
    args = plan.steps[0].arguments
    assert args["x"] == InputRef("name")
    assert args["y"] == StepRef("s0", "summary.title")
    assert args["u"] == StepRef("s0")
    assert args["z"] == "$5 off" and args["w"] == "$s0" and args["v"] == {"$step": "raw"}
    dumped = plan.to_dict()["steps"][0]["arguments"]
    assert dumped["y"] == {"$step": "s0", "path": "summary.title"}
    assert dumped["w"] == {"$value": "$s0"} and dumped["v"] == {"$value": {"$step": "raw"}}
    assert Plan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()


def test_str_is_readable():
    plan = Plan("Summarize the report", {"name": "report.txt"}, [
        Step("s1", "files.read_text", {"name": InputRef("name")}, "read it"),
        Step("s2", "writer.translate", {"text": StepRef("s1", "summary.title"), "language": "French"}),
    ], "s2")
    assert plan.output == StepRef("s2")
    assert Plan("g", {}, [], "$s1.a.b").output == StepRef("s1", "a.b")
    assert str(plan) == (
        "Plan: Summarize the report\n"
        "Inputs:\n"
        '  name = "report.txt"\n'
        "Steps:\n"
        "  1. s1 = files.read_text(name=<input.name>)  # read it\n"
        '  2. s2 = writer.translate(text=<s1.summary.title>, language="French")\n'
        "Output: <s2>"
    )


def test_output_defaults_to_last_step():
    plan = Plan.from_dict({"goal": "g", "steps": [step("a", "x.y"), step("b", "x.y")]})
    assert plan.output is None and plan.output_ref == StepRef("b")
    assert "output" not in plan.to_dict()


async def test_plan_request_is_a_plain_chat_request(kernel, model):
    seen: list[ChatRequest] = []

    def reply(request: ChatRequest) -> ScriptedReply:
        seen.append(request)
        return json_reply({"steps": [step("s1", "text.count_words", text="a")], "output": "s1"})

    model.queue(reply)
    await kernel.plan("Count", settings={"max_tokens": 400, "temperature": 0})
    assert seen[0].settings == {"max_tokens": 400, "temperature": 0}
    assert seen[0].tools == []


# --- the solve strategy ---------------------------------------------------------------------------


async def test_solve_returns_answer_and_trace(kernel, model):
    from kernel.planning.solve import SOLVE_INSTRUCTIONS, solve
    from kernel.testing import tool_call

    model.queue(tool_call("text.count_words", text="one two three"), "The text has 3 words.")
    solution = await solve(kernel, "How many words are in 'one two three'?", plugins=["text"])
    assert solution.answer == "The text has 3 words."
    assert [(r.function, r.result.content) for r in solution.trace] == [("text.count_words", "3")]
    first = model.requests[0]
    assert first.messages[0].role == "system" and first.messages[0].content == SOLVE_INSTRUCTIONS
    assert "How many words" in first.messages[1].content
    assert {t.name for t in first.tools} == {"text-count_words", "text-stats", "text-repeat"}
    assert solution.messages[-1].content == "The text has 3 words."
    assert solution.usage.requests == 2


# --- the CLI --------------------------------------------------------------------------------------


def cli(argv: list[str], model: ScriptedChatModel) -> int:
    from kernel.cli import main

    def configure(k: Kernel) -> None:
        k.add_plugin(Files({"report.txt": "one two three\nfour"}), name="files")
        k.add_plugin(Text(), name="text")
        k.add_plugin(Text(), name="extra")
        k.add_function(PromptFunction.from_template("Summarize: {{ text }}", name="summarize", plugin="writer"))
        k.add_function(PromptFunction.from_template(
            "Translate into {{ language }}: {{ text }}", name="translate", plugin="writer"))
        k.services.add_service("test", model)

    return main(argv, configure=configure)


def answer_writer(request: ChatRequest) -> str:
    text = request.messages[-1].content
    return "SUMMARY" if text.startswith("Summarize") else "RESUME"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_STANDARD_PLUGINS", "false")  # the standard 'writer' plugin would clash
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    return tmp_path


def test_cli_plan_prints_and_saves(in_tmp, capsys):
    model = ScriptedChatModel([json_reply(VALID)])
    code = cli(["plan", "Summarize the report in French", "--input", "name=report.txt", "--plugin", "files",
                "--plugin", "writer", "--plugin", "text", "--save", "plan.json"], model)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1. s1 = files.read_text(name=<input.name>)" in out
    assert '3. s3 = writer.translate(text=<s2>, language="French")' in out
    saved = json.loads((in_tmp / "plan.json").read_text())
    assert saved["inputs"] == {"name": "report.txt"} and saved["steps"][1]["function"] == "writer.summarize"
    assert "extra.count_words" not in model.requests[0].messages[0].content  # only the chosen plugins
    assert "files.read_text" in model.requests[0].messages[0].content


def test_cli_plan_json(in_tmp, capsys):
    model = ScriptedChatModel([json_reply(VALID)])
    assert cli(["plan", "Summarize", "-i", "name=report.txt", "--json"], model) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["goal"] == "Summarize" and len(printed["steps"]) == 4


def test_cli_replay_from_file_and_run_with_yes(in_tmp, capsys):
    (in_tmp / "plan.json").write_text(json.dumps({"goal": "g", "inputs": INPUTS, **VALID}))
    model = ScriptedChatModel(default=answer_writer)
    code = cli(["plan", "--from", "plan.json", "--run", "--yes", "--json"], model)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["run"]["status"] == {"s1": "done", "s2": "done", "s3": "done", "s4": "done"}
    assert result["run"]["result"] == "RESUME" and result["run"]["outputs"]["s4"] == 4
    # no planning request: only the two prompt functions asked the model
    assert all(r.output_schema is None for r in model.requests) and len(model.requests) == 2


def test_cli_run_without_terminal_or_yes_refuses(in_tmp, capsys):
    (in_tmp / "plan.json").write_text(json.dumps({"goal": "g", "inputs": INPUTS, **VALID}))
    model = ScriptedChatModel(default=answer_writer)
    assert cli(["plan", "--from", "plan.json", "--run"], model) == 1
    err = capsys.readouterr().err
    assert "refusing to run the plan without confirmation" in err and "--yes" in err
    assert model.requests == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code"), [("y\n", 0), ("n\n", 1), ("\n", 1)])
def test_cli_run_asks_on_the_terminal(in_tmp, capsys, monkeypatch, answer, code):
    (in_tmp / "plan.json").write_text(json.dumps({"goal": "g", "inputs": INPUTS, **VALID}))
    monkeypatch.setattr("sys.stdin", FakeTerminal(answer))
    model = ScriptedChatModel(default=answer_writer)
    assert cli(["plan", "--from", "plan.json", "--run"], model) == code
    out, err = capsys.readouterr()
    assert "Run this plan? [y/N]" in err
    if code == 0:
        assert out.rstrip().endswith("Result:\nRESUME")
    else:
        assert "plan not run" in err and model.requests == []


def test_cli_invalid_plan_file_lists_problems(in_tmp, capsys):
    bad = {"goal": "g", "steps": [step("s1", "text.count_words", txt="x")]}
    (in_tmp / "bad.json").write_text(json.dumps(bad))
    assert cli(["plan", "--from", "bad.json", "--run", "--yes"], ScriptedChatModel()) == 2
    err = capsys.readouterr().err
    assert "invalid plan in bad.json: 2 problem(s)" in err
    assert "step 's1' (text.count_words): unexpected argument 'txt'" in err
    (in_tmp / "broken.json").write_text("{nope")
    assert cli(["plan", "--from", "broken.json"], ScriptedChatModel()) == 2
    assert cli(["plan", "--from", "missing.json"], ScriptedChatModel()) == 2
    assert "cannot read plan file missing.json" in capsys.readouterr().err


def test_cli_usage_errors(in_tmp, capsys):
    assert cli(["plan"], ScriptedChatModel()) == 2
    assert "give a GOAL" in capsys.readouterr().err
    assert cli(["plan", "x", "--input", "novalue"], ScriptedChatModel()) == 2
    assert "bad --input 'novalue'" in capsys.readouterr().err


def test_cli_failed_step_exits_1(in_tmp, capsys):
    plan = {"goal": "g", "inputs": {"name": "nope.txt"}, "steps": [
        step("s1", "files.read_text", name={"$input": "name"}), step("s2", "text.count_words", text={"$step": "s1"})]}
    (in_tmp / "plan.json").write_text(json.dumps(plan))
    assert cli(["plan", "--from", "plan.json", "--run", "--yes"], ScriptedChatModel()) == 1
    err = capsys.readouterr().err
    assert "s2: skipped" in err
    assert "error: plan step 's1' failed: files.read_text failed: KeyError: 'nope.txt'" in err


# --- property: any plan survives the JSON round trip --------------------------------------------


_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(
    ["$s1", "$input.x", "$s2.a.b", "$5 off", "$"])
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["$step", "$input", "$value", "path", "a"]), inner, max_size=3),
    max_leaves=6,
)
_refs = st.builds(InputRef, _names) | st.builds(StepRef, _names, st.none() | st.from_regex(r"[a-z]+(\.[0-9a-z]+){0,2}",
                                                                                            fullmatch=True))
_steps = st.builds(Step, _names, st.from_regex(r"[a-z]+\.[a-z]+", fullmatch=True),
                   st.dictionaries(_names, _refs | _json_values, max_size=4), st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(goal=st.text(max_size=20), inputs=st.dictionaries(_names, _json_values, max_size=3),
       steps=st.lists(_steps, max_size=4), output=st.none() | st.builds(StepRef, _names))
def test_json_round_trip_property(goal, inputs, steps, output):
    plan = Plan(goal, inputs, steps, output)
    again = Plan.from_json(plan.to_json())
    assert again == plan


# --- large and deep plans: problems, never a RecursionError ---------------------------------------


def forward_chain(count: int) -> dict[str, Any]:
    """`count` steps, each reading the output of the NEXT one (so every reference is forward)."""
    steps = [step(f"s{i}", "text.count_words", text={"$step": f"s{i + 1}"}) for i in range(count - 1)]
    return {"goal": "g", "steps": [*steps, step(f"s{count - 1}", "text.count_words", text="last")]}


@pytest.mark.parametrize("count", [5_000, 100_000])
def test_long_chains_of_forward_references(kernel, count):
    plan = Plan.from_dict(forward_chain(count))
    found = plan.problems(kernel)
    assert len(found) == count - 1
    assert found[0] == ("step 's0' (text.count_words): argument 'text' refers to step 's1', "
                        "which comes later in the plan")
    with pytest.raises(PlanValidationError):
        plan.validate(kernel)


def test_a_long_cycle_is_found_and_shown_short(kernel):
    data = forward_chain(5_000)
    data["steps"][-1]["arguments"] = {"text": {"$step": "s0"}}  # the last step closes the loop
    found = Plan.from_dict(data).problems(kernel)
    cycles = [p for p in found if p.startswith("steps form a cycle")]
    assert cycles == ["steps form a cycle: s0 -> s4999 -> s4998 -> s4997 -> s4996 -> s4995 -> "
                      "... (4989 more steps) ... -> s5 -> s4 -> s3 -> s2 -> s1 -> s0"]


def test_many_cycles_are_listed_up_to_a_bound(kernel):
    from kernel.planning.validation import MAX_CYCLES_SHOWN

    data = forward_chain(200)  # and the last step refers back to every other step
    data["steps"][-1]["arguments"] = {f"x{i}": {"$step": f"s{i}"} for i in range(199)}
    found = Plan.from_dict(data).problems(kernel)
    cycles = [p for p in found if p.startswith("steps form")]
    assert len(cycles) == MAX_CYCLES_SHOWN + 1
    assert cycles[-1] == f"steps form more cycles than the {MAX_CYCLES_SHOWN} listed"


def deep_value(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def test_deep_values_are_plan_problems():
    deep = deep_value(50_000)
    with pytest.raises(PlanValidationError) as info:
        Plan.from_dict({"goal": deep, "inputs": {"doc": deep}, "steps": [
            {"id": deep, "function": "text.count_words"},
            {"id": "s1", "function": deep},
            {"id": "s2", "function": "text.count_words", "arguments": {"text": deep, "ref": {"$input": deep},
                                                                        "other": {"$step": deep}}},
            {"id": "s3", "function": "text.count_words", "description": deep, "arguments": {"text": "ok"}},
        ], "output": deep})
    problems = info.value.problems
    assert problems[0] == "'goal' must be a string, not an object"
    assert problems[1] == "input 'doc': the value is nested too deeply (more than 64 levels of lists and objects)"
    assert problems[2] == "step #1: 'id' must be a non-empty string, not {'a': [{'a': [{...}]}]}"  # cut short
    assert problems[3].startswith("step 's1': 'function' must be a 'plugin.function' name, not {")
    assert "step 's2' (text.count_words): argument 'text': the value is nested too deeply" in problems[4]
    assert problems[5].startswith("step 's2' (text.count_words): argument 'ref': an input reference is")
    assert problems[6].startswith("step 's2' (text.count_words): argument 'other': a step reference is")
    assert problems[7].startswith("'output' must be a step id")
    assert len(problems) == 8
    text = '{"goal": "g", "steps": [{"id": "s1", "function": "text.count_words", "arguments": {"text": ' \
           + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}}]}"
    with pytest.raises(PlanValidationError, match="nested too deeply"):
        Plan.from_json(text)


def test_deep_values_in_a_plan_built_in_code(kernel):
    # deep_value(32): 32 objects each holding a list, 64 levels (the bound); one more is too deep
    plan = Plan("g", {"ok": deep_value(32), "doc": deep_value(33)},
                [Step("s1", "text.count_words", {"text": deep_value(50_000)})])
    found = plan.problems(kernel)
    assert found == ["input 'doc': the value is nested too deeply (more than 64 levels of lists and objects)",
                     "step 's1' (text.count_words): argument 'text': the value is nested too deeply "
                     "(more than 64 levels of lists and objects)"]
    assert "Inputs:\n  ok = {" in str(plan) and "\n  doc = {" in str(plan)
    cyclic: list[Any] = []
    cyclic.extend([cyclic, cyclic])
    shared: Any = "x"
    for _ in range(60):
        shared = [shared, shared]  # 2**60 paths: walked once per depth, never expanded
    plan = Plan("g", {"cyclic": cyclic, "shared": shared}, [Step("s1", "text.count_words", {"text": "t"})])
    found = plan.problems(kernel)
    assert found == ["input 'cyclic': the value is nested too deeply (more than 64 levels of lists and objects)"]


# --- the ordered schema and the prompt fitted to the context (issue 14) ------------------------------

from jsonschema import Draft202012Validator  # noqa: E402

from kernel.planning import generation as planning_generation  # noqa: E402
from kernel.services import ModelProfile  # noqa: E402
from kernel.settings import ServiceSettings  # noqa: E402


class WindowedModel(ScriptedChatModel):
    """A scripted model that knows its context and counts tokens (four characters each),
    optionally decoding under a grammar (as the local llama.cpp model does)."""

    def __init__(self, window: int, *, grammar: bool = False) -> None:
        super().__init__()
        self.context_window = window
        self.counted: list[str] = []
        if grammar:
            self.profile = ModelProfile("scripted", {}, structured_output="grammar")

    async def count_tokens(self, text: str) -> int:
        self.counted.append(text)
        return (len(text) + 3) // 4


def windowed_kernel(model: WindowedModel) -> Kernel:
    kernel = make_kernel(ScriptedChatModel())
    kernel.services.add_service("test", model)
    return kernel


async def needed(kernel: Kernel, model: WindowedModel, goal: str, detail: int, *, ordered: bool = False,
                 inputs: dict[str, Any] | None = None) -> int:
    """The context a prompt at `detail` needs, an answer of 200 tokens included."""
    messages = planning_generation.planning_messages(goal, kernel.functions(), inputs or {}, 10, detail=detail,
                                                     ordered=ordered)
    return await planning_generation._prompt_tokens(messages, model.count_tokens) + 200 + 8


def test_ordered_schema_admits_only_plans_that_validate(kernel):
    """Ids fixed by position, references only to earlier steps, the output first and
    naming the last step, goal inputs by name, each function its own arguments."""
    fns = [kernel.get_function(n) for n in ("files.read_text", "text.count_words", "text.repeat")]
    schema = plan_schema(fns, 3, inputs=["name"], ordered=True)
    check = Draft202012Validator(schema)
    good = {"output": "s2", "steps": [step("s1", "files.read_text", name={"$input": "name"}),
                                      step("s2", "text.repeat", text={"$step": "s1"}, times=3)]}
    assert check.is_valid(good)
    assert Plan.from_dict({**good, "goal": "g", "inputs": INPUTS}).problems(kernel) == []
    one = {"output": "s1", "steps": [step("s1", "text.count_words", text="a b")]}
    assert check.is_valid(one)
    bad = {
        "output names no step": {"output": "s3", "steps": good["steps"]},
        "output not the last": {"output": "s1", "steps": good["steps"]},
        "ids out of order": {"output": "s1", "steps": [step("s2", "text.count_words", text="a")]},
        "a step refers to itself": {"output": "s1", "steps": [step("s1", "text.count_words", text={"$step": "s1"})]},
        "a later step": {"output": "s2", "steps": [step("s1", "text.count_words", text={"$step": "s2"}),
                                                   step("s2", "text.count_words", text="a")]},
        "an unknown input": {"output": "s1", "steps": [step("s1", "text.count_words", text={"$input": "other"})]},
        "a function not offered": {"output": "s1", "steps": [step("s1", "writer.summarize", text="a")]},
        "an extra argument": {"output": "s1", "steps": [step("s1", "text.count_words", text="a", lang="en")]},
        "a missing argument": {"output": "s1", "steps": [step("s1", "text.count_words")]},
        "an ill-typed literal": {"output": "s1", "steps": [step("s1", "text.repeat", text="a", times="x")]},
        "a field path": {"output": "s2", "steps": [step("s1", "files.read_text", name="a"),
                                                   step("s2", "text.count_words", text={"$step": "s1", "path": "x"})]},
        "too many steps": {"output": "s4", "steps": [step(f"s{i}", "text.count_words", text="a") for i in range(1, 5)]},
    }
    for why, data in bad.items():
        assert not check.is_valid(data), why
    # llama.cpp's converter (the one the local model uses) takes it whole: no fallback to free JSON
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = json_schema_to_gbnf(json.dumps(schema))
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"] == "alternative-0 | alternative-1 | alternative-2"
    assert rules["step1-1-id"] == '"\\"s1\\""' and rules["step1-1-function"] == '"\\"text.count_words\\""'
    assert rules["step3-1-arguments-text-1--step"] == '"\\"s1\\"" | "\\"s2\\""'  # earlier steps only
    assert not any("--step" in name for name in rules if name.startswith("step1"))  # step 1 has no earlier step
    assert rules["step1-1-arguments-text-0--input"] == '"\\"name\\""'


def test_input_references_name_the_goal_inputs(kernel):
    fns = [kernel.get_function("text.count_words")]
    text = plan_schema(fns, 2, inputs=[])["properties"]["steps"]["items"]["anyOf"][0]["properties"]["arguments"]
    assert all("$input" not in v.get("properties", {}) for v in text["properties"]["text"]["anyOf"])
    named = plan_schema(fns, 2, inputs=["doc"])["properties"]["steps"]["items"]["anyOf"][0]["properties"]
    ref = next(v for v in named["arguments"]["properties"]["text"]["anyOf"] if "$input" in v.get("properties", {}))
    assert ref["properties"]["$input"]["enum"] == ["doc"]
    ordered = plan_schema(fns, 1, inputs=[], ordered=True)["$defs"]["step1"]["anyOf"][0]
    assert ordered["properties"]["arguments"]["properties"]["text"] == {"type": "string"}  # a literal, nothing else


async def test_a_grammar_model_is_asked_for_the_ordered_plan():
    model = WindowedModel(100_000, grammar=True)
    kernel = windowed_kernel(model)
    model.queue(json_reply({"output": "s1", "steps": [step("s1", "text.count_words", text={"$input": "text"})]}))
    plan = await kernel.plan("Count the words", inputs={"text": "a b c"}, plugins=["text"])
    assert plan.problems(kernel) == [] and plan.output == StepRef("s1")
    request = model.last_request
    assert request.output_schema == plan_schema(list(kernel.plugins["text"]), 10, inputs=["text"], ordered=True)
    assert '{"output": "s1", "steps": [{"id": "s1"' in request.messages[0].content
    assert request.settings == {"max_tokens": 1024}  # the planner's own room for the answer
    # a model without a grammar keeps the plain schema; ordered_schema= overrides either way
    plain = ScriptedChatModel([json_reply({"steps": [step("s1", "text.count_words", text="a")], "output": "s1"})])
    other = make_kernel(plain)
    await other.plan("Count", plugins=["text"])
    assert "steps" in plain.last_request.output_schema["properties"]
    plain.queue(json_reply({"output": "s1", "steps": [step("s1", "text.count_words", text="a")]}))
    await other.plan("Count again", plugins=["text"], ordered_schema=True)
    assert "anyOf" in plain.last_request.output_schema and plain.last_request.settings == {}


async def test_the_prompt_is_fitted_to_the_context():
    """Full descriptions when they fit; then signatures; then no return types; then fewer
    functions, those sharing words with the goal first; the schema offers only those."""
    goal = "Count the words of the report"
    probe = WindowedModel(100_000)
    kernel = windowed_kernel(probe)
    full, short, brief = [await needed(kernel, probe, goal, d) for d in (0, 1, 2)]
    assert full > short > brief

    async def plan_with(window: int) -> ChatRequest:
        model = WindowedModel(window)
        kernel.services.add_service("test", model)
        model.queue(json_reply({"steps": [step("s1", "text.count_words", text="a")], "output": "s1"}))
        await kernel.plan(goal, use_cache=False, settings={"max_tokens": 200})
        return model.last_request

    request = await plan_with(full)
    assert "  parameters: {" in request.messages[0].content and len(request.output_schema["properties"]["steps"]
                                                                    ["items"]["anyOf"]) == 6
    assert request.settings == {"max_tokens": 200}
    request = await plan_with(full - 1)
    assert "- text.repeat(text: string, times: integer = 2) -> string: Repeat a text." in request.messages[0].content
    assert "parameters:" not in request.messages[0].content
    request = await plan_with(brief)
    assert "- text.count_words(text: string): Count the words of a text." in request.messages[0].content
    assert " -> " not in request.messages[0].content.split("Functions:")[1]
    request = await plan_with(brief - 40)
    offered = [v["properties"]["function"]["enum"][0] for v in request.output_schema["properties"]["steps"]
               ["items"]["anyOf"]]
    assert "text.count_words" in offered and 1 <= len(offered) < 6
    catalogue = request.messages[0].content.split("Functions:")[1]
    assert all(f"- {name}(" in catalogue for name in offered) and catalogue.count("\n- ") == len(offered)


async def test_a_context_too_small_is_a_plan_error_that_says_what_helps():
    model = WindowedModel(300)
    kernel = windowed_kernel(model)
    with pytest.raises(PlanError) as info:
        await kernel.plan("Count the words of the report")
    message = str(info.value)
    assert "does not fit the context of service 'test': 300 tokens, 256 of them kept for the plan" in message
    for hint in ("plugins=[...]", "--plugin", "options.n_ctx", "options.context_window", "max_tokens",
                 "bigger model"):
        assert hint in message
    assert model.requests == []  # no model call was made


async def test_a_repair_that_would_not_fit_leaves_out_the_previous_reply():
    goal = "Count the words of the report"
    probe = WindowedModel(100_000)
    kernel = windowed_kernel(probe)
    model = WindowedModel(await needed(kernel, probe, goal, 0) + 200)
    kernel.services.add_service("test", model)
    long_bad = {"steps": [step("s1", "text.count_words", text="x" * 8000, lang="en")], "output": "s1"}
    model.queue(json_reply(long_bad), json_reply({"steps": [step("s1", "text.count_words", text="a")],
                                                  "output": "s1"}))
    await kernel.plan(goal, settings={"max_tokens": 200})
    repair = model.requests[1].messages
    assert [m.role for m in repair] == ["system", "user", "user"]
    assert "unexpected argument 'lang'" in repair[2].content


async def test_a_configured_service_declares_its_context_window():
    """`options.context_window` of a configured service (one whose model does not know
    its context, such as an OpenAI-compatible server) fits the prompt just the same."""
    model = ScriptedChatModel([json_reply({"steps": [step("s1", "text.count_words", text="a")],
                                           "output": "s1"})])
    settings = KernelSettings(services={"remote": ServiceSettings(provider="fake", options={"context_window": 1500})},
                              default_chat="remote")
    kernel = Kernel(settings=settings, load_entry_points=False, builtins=False)
    kernel.services.add_connector("chat", "fake", lambda name, svc, ks: model, "test")
    kernel.add_plugin(Text(), name="text")
    await kernel.plan("Count the words")
    assert model.last_request.settings == {"max_tokens": 375}  # a quarter of a small context
    bad = KernelSettings(services={"remote": ServiceSettings(provider="fake", options={"context_window": "lots"})},
                         default_chat="remote")
    kernel = Kernel(settings=bad, load_entry_points=False, builtins=False)
    kernel.services.add_connector("chat", "fake", lambda name, svc, ks: model, "test")
    kernel.add_plugin(Text(), name="text")
    with pytest.raises(PlanError, match=r"options\.context_window must be a number of tokens, not 'lots'"):
        await kernel.plan("Count the words")


def test_functions_are_ranked_by_the_words_they_share_with_the_goal(kernel):
    ranked = planning_generation.rank_functions("Translate the summary into French", kernel.functions())
    assert [fn.fully_qualified_name for fn in ranked[:1]] == ["writer.translate"]
    ranked = planning_generation.rank_functions("Count the words", kernel.functions(), inputs=["name"])
    names = [fn.fully_qualified_name for fn in ranked]
    assert names[:2] == ["text.count_words", "text.stats"]  # "Word and line counts of a text."
    assert names.index("files.read_text") < names.index("writer.summarize")  # its parameter is named like the input
