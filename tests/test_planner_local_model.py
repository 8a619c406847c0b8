"""Planning with the real local model, Gemma 3 270M: behind llama.cpp's OpenAI-compatible
server (the JSON-schema-constrained reply must parse into a plan that is either valid or
rejected with precise problems; never a crash or another exception type), and in-process
on the kernel's defaults, with no configuration at all (the ordered plan schema as a
grammar: the plan validates at the first answer, and runs)."""

from __future__ import annotations

import json
import time

import pytest

from kernel import Kernel, KernelSettings, ServiceSettings, kernel_function
from kernel.contents import ChatRequest, ChatResponse
from kernel.errors import PlanError, PlanExecutionError, PlanValidationError
from kernel.planning import plan_schema
from kernel.planning.model import Plan

pytestmark = [pytest.mark.llama_server, pytest.mark.slow]


class Text:
    @kernel_function
    def shout(self, text: str) -> str:
        """Return the text in upper case."""
        return text.upper()

    @kernel_function
    def count_words(self, text: str) -> int:
        """Count the words of a text."""
        return len(text.split())


@pytest.fixture
def kernel(llama_server) -> Kernel:
    settings = KernelSettings(
        services={
            "gemma": ServiceSettings(
                provider="openai", model=llama_server.model, base_url=llama_server.base_url, timeout=120,
                options={"json_schema_mode": "json_object"},
            )
        },
        default_chat="gemma",
        standard_plugins=False,
        plugin_autoload=False,
    )
    kernel = Kernel(settings=settings, load_entry_points=False)
    kernel.add_plugin(Text(), name="text")
    return kernel


async def test_local_model_plan_is_valid_or_precisely_rejected(kernel):
    requests: list[dict[str, object]] = []
    original = kernel.complete

    async def recording_complete(request, service=None):
        response = await original(request, service)
        requests.append({"schema": request.output_schema, "text": response.text,
                         "prompt": request.messages[0].content})
        return response

    kernel.complete = recording_complete  # type: ignore[method-assign]
    try:
        plan = await kernel.plan(
            "Shout the text",
            inputs={"text": "hello world"},
            max_repairs=1,
            max_steps=3,
            settings={"max_tokens": 300, "temperature": 0},
            system_message=False,  # llama.cpp's "gemma" chat format drops system messages
        )
    except PlanValidationError as exc:
        assert exc.problems, "a rejected plan lists its problems"
        for problem in exc.problems:
            assert isinstance(problem, str) and problem
            # each names where: a step, the plan's shape, the output, or the reply itself
            assert problem.startswith(("step ", "the ", "duplicate step id", "steps form a cycle", "'")), problem
        assert 1 <= len(requests) <= 2
        return
    # llama.cpp's server decodes under a grammar (json_object + schema): the ordered schema
    assert requests and requests[0]["schema"] == plan_schema(kernel.functions(), 3, inputs=["text"], ordered=True)
    prompt = str(requests[0]["prompt"])
    assert "- text.shout: Return the text in upper case." in prompt and "Goal: Shout the text" in prompt
    # the reply was JSON in the plan's shape (grammar-constrained), and the plan is valid
    assert isinstance(json.loads(str(requests[-1]["text"])), dict)
    assert isinstance(plan, Plan) and plan.problems(kernel, max_steps=3) == []
    assert 1 <= len(plan.steps) <= 3
    assert all(step.function in ("text.shout", "text.count_words") for step in plan.steps)
    assert Plan.from_json(plan.to_json()).to_dict() == plan.to_dict()
    try:
        run = await plan.run(kernel)
    except PlanExecutionError as exc:  # a valid plan may still fail at run time; it says where
        assert exc.step_id in {s.id for s in plan.steps}
    else:
        assert run.ok


# --- the in-process local model on the kernel's defaults ----------------------------------------------


def recorded(kernel: Kernel) -> list[tuple[ChatRequest, ChatResponse, float]]:
    """Every model call of `kernel.complete`, with its answer and seconds."""
    calls: list[tuple[ChatRequest, ChatResponse, float]] = []
    original = kernel.complete

    async def complete(request: ChatRequest, service: str | None = None) -> ChatResponse:
        started = time.perf_counter()
        response = await original(request, service)
        calls.append((request, response, time.perf_counter() - started))
        return response

    kernel.complete = complete  # type: ignore[method-assign]
    return calls


def offered(request: ChatRequest) -> list[str]:
    """The functions the ordered plan schema of `request` offers."""
    assert request.output_schema is not None
    return [v["properties"]["function"]["const"] for v in request.output_schema["$defs"]["step1"]["anyOf"]]


async def test_default_kernel_plans_a_simple_goal_that_validates_and_runs() -> None:
    """No configuration: the local model, its grammar built from the ordered plan schema
    (function names fixed to the offered ones, each function's own arguments, ids and
    references by position, the output first), so the first answer is a valid plan."""
    kernel = Kernel()
    calls = recorded(kernel)
    plan = await kernel.plan("Add 2 and 3", plugins=["math"])
    math = sorted(fn.fully_qualified_name for fn in kernel.plugins["math"])
    assert plan.problems(kernel, allowed=math) == []
    assert len(calls) == 1  # nothing to repair
    request, response, seconds = calls[0]
    assert sorted(offered(request)) == math
    assert request.settings == {"max_tokens": 1024}  # the planner's own room for the answer
    data = json.loads(response.text)
    assert list(data) == ["output", "steps"] and data["output"] == f"s{len(data['steps'])}"
    assert [s["id"] for s in data["steps"]] == [f"s{i}" for i in range(1, len(data["steps"]) + 1)]
    run = await plan.run(kernel)
    assert run.ok and isinstance(run.result, int | float)
    print(f"plan in {seconds:.1f}s ({response.usage.input_tokens} tokens in, {response.usage.output_tokens} out): "
          f"{[(s.function, s.arguments) for s in plan.steps]} -> {run.result}")
    await kernel.aclose()


@pytest.mark.slow
async def test_default_context_holds_the_planner_over_every_standard_plugin() -> None:
    """`kernel plan GOAL` on defaults: every standard function, described in full, fits
    the default context (8192) with the answer's room; the plan validates."""
    kernel = Kernel()
    calls = recorded(kernel)
    plan = await kernel.plan("Add 2 and 3")
    assert plan.problems(kernel) == [] and len(calls) == 1
    request, response, seconds = calls[0]
    assert kernel.services.chat().inner.context_window == 8192
    assert len(offered(request)) == len(kernel.functions()) >= 27
    assert request.messages[0].content.count("\n  parameters: {") == len(kernel.functions())  # full descriptions
    assert 2500 < response.usage.input_tokens < 8192 - 1024
    print(f"plan over {len(kernel.functions())} functions in {seconds:.1f}s "
          f"({response.usage.input_tokens} tokens in): {[(s.function, s.arguments) for s in plan.steps]}")
    await kernel.aclose()


async def test_a_small_local_context_offers_fewer_functions() -> None:
    """options.n_ctx = 1024: shorter descriptions are not enough, so the planner offers the
    functions that share words with the goal first, as many as fit; the plan validates."""
    settings = KernelSettings(services={"local": ServiceSettings(provider="local", options={"n_ctx": 1024})})
    kernel = Kernel(settings=settings)
    calls = recorded(kernel)
    plan = await kernel.plan("Add 2 and 3")
    request, response, _ = calls[0]
    names = offered(request)
    assert "math.add" in names and 1 <= len(names) < len(kernel.functions())
    assert plan.problems(kernel, allowed=names) == []
    assert "parameters:" not in request.messages[0].content  # signatures only
    assert request.settings == {"max_tokens": 256}  # a quarter of a small context
    assert response.usage.input_tokens <= 1024 - 256
    await kernel.aclose()


async def test_a_local_context_too_small_for_one_function_is_a_clear_plan_error() -> None:
    settings = KernelSettings(services={"local": ServiceSettings(provider="local", options={"n_ctx": 320})})
    kernel = Kernel(settings=settings)
    calls = recorded(kernel)
    # llama.cpp rounds a context up to 512: the window is what the loaded model has
    with pytest.raises(PlanError, match=r"context of service 'local': 512 tokens.*options\.n_ctx.*bigger model"):
        await kernel.plan("Add 2 and 3", plugins=["math"])
    assert calls == []  # counted with the model's tokenizer; nothing generated
    await kernel.aclose()


async def test_a_server_declares_its_context_and_gets_a_fitted_ordered_plan(llama_server) -> None:
    """An OpenAI-compatible server cannot say its context: `options.context_window` does.
    The server runs with 2048 tokens; the prompt over every standard plugin (~3,000 in full)
    is fitted, the ordered schema goes through its json_object grammar, the plan validates."""
    settings = KernelSettings(
        services={"gemma": ServiceSettings(
            provider="openai", model=llama_server.model, base_url=llama_server.base_url, timeout=120,
            options={"json_schema_mode": "json_object", "context_window": 2048})},
        default_chat="gemma",
    )
    kernel = Kernel(settings=settings)
    calls = recorded(kernel)
    plan = await kernel.plan("Add 2 and 3", settings={"temperature": 0})
    request, response, _ = calls[0]
    assert "anyOf" in (request.output_schema or {}) and request.settings["max_tokens"] == 512
    assert plan.problems(kernel) == [] and len(calls) == 1
    assert response.usage.input_tokens <= 2048 - 512
