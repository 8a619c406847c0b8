"""Planning with the real local model (Gemma 3 270M behind llama.cpp's OpenAI-compatible
server): the JSON-schema-constrained reply must parse into a plan that is either valid or
rejected with precise problems; never a crash or another exception type."""

from __future__ import annotations

import json

import pytest

from kernel import Kernel, KernelSettings, ServiceSettings, kernel_function
from kernel.errors import PlanExecutionError, PlanValidationError
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
    assert requests and requests[0]["schema"] == plan_schema(kernel.functions(), 3)
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
