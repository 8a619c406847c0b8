"""`kernel serve` in process (httpx2's ASGI transport, no socket): every endpoint, with a
scripted model: OpenAI-compatible chat (kernel model and pass-through, plain and
streamed, the official SDK as the client), models, functions and invocation (plain and
streamed, usage and cost), plans (made, validated, run with progress and approvals),
runs, memory (search, uploads), the OpenAPI document and the console's files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kernel import Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.errors import ProviderStatusError
from kernel.serve import create_app
from kernel.settings import AgentSettings
from kernel.testing import ScriptedChatModel, json_reply, tool_call
from tests.serve_support import DATA

PLAN = {"goal": "add, then multiply", "steps": [
    {"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}},
    {"id": "s2", "function": "math.multiply", "arguments": {"a": {"$step": "s1"}, "b": 10}}], "output": "s2"}
GATED_PLAN = {"goal": "publish the sum", "steps": [
    {"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}},
    {"id": "s2", "function": "ops.publish", "arguments": {"text": {"$step": "s1"}}}], "output": "s2"}


class Hashing:
    provider, model, dimension = "test", "hashing", 64

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vector = [0.0] * 64
            for word in text.lower().split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


@kernel_function
async def relay(text: str, kernel: Kernel) -> str:
    """Publish through ops.publish (a gated function called from inside a step)."""
    return str((await kernel.invoke("ops.publish", text=text)).value)


def make_kernel(tmp_path: Path, *replies: Any, **settings: Any) -> tuple[Kernel, ScriptedChatModel]:
    store = {"provider": "sqlite", "options": {"path": str(tmp_path / "memory.db")}}
    kernel = Kernel(KernelSettings(services={"store": store}, default_memory="store",
                                   default_embedding="hash", **settings), load_entry_points=False)
    model = ScriptedChatModel(replies)
    kernel.services.add_service("test", model)
    kernel.services.add_service("hash", Hashing(), "embedding")
    kernel.settings.default_chat = "test"
    kernel.add_plugin(DATA / "plugins")
    kernel.add_function(relay, plugin="relays")
    kernel.add_function(PromptFunction.from_template("Say hello to {{ name }}", name="hello", plugin="greet"))
    return kernel, model


def client(kernel: Kernel, **serve: Any) -> httpx2.AsyncClient:
    settings = kernel.settings.serve.model_copy(update=serve)
    app = create_app(kernel, settings)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=30)


def frames(text: str) -> list[tuple[str, Any]]:
    """(event, data) of each SSE frame; data parsed as JSON when it is."""
    found = []
    for block in text.split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            raw = "\n".join(data)
            try:
                found.append((event, json.loads(raw)))
            except json.JSONDecodeError:
                found.append((event, raw))
    return found


@pytest.fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    built, _ = make_kernel(tmp_path)
    yield built
    await built.aclose()


# --- OpenAI-compatible chat -------------------------------------------------------------------


async def test_models_are_the_kernel_agents_and_the_chat_services(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    agents = {"helper": AgentSettings(functions=["math"], description="math helper")}
    async with client(kernel, agents=agents) as http:
        listed = (await http.get("/v1/models")).json()
        assert listed["object"] == "list"
        kinds = {m["id"]: m["kernel"]["kind"] for m in listed["data"]}
        assert kinds == {"kernel": "agent", "helper": "agent", "test": "service"}
        assert (await http.get("/v1/models/helper")).json()["kernel"]["description"] == "math helper"
        missing = await http.get("/v1/models/nope")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["error"]["message"].startswith("no model 'nope'")  # what the OpenAI SDK shows
    await kernel.aclose()


async def test_kernel_model_runs_the_tool_loop_and_reports_the_calls(tmp_path: Path) -> None:
    kernel, model = make_kernel(tmp_path, tool_call("math.add", a=2, b=3), "The sum is 5.")
    async with client(kernel) as http:
        answer = await http.post("/v1/chat/completions", json={
            "model": "kernel", "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "What is 2 + 3?"}],
            "temperature": 0, "max_tokens": 50})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == "kernel"
    assert body["choices"][0]["message"] == {"role": "assistant", "refusal": None, "content": "The sum is 5."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 30 and body["usage"]["prompt_tokens"] == 20
    [call] = body["kernel"]["tool_calls"]
    assert call["function"] == "math.add" and json.loads(call["arguments"]) == {"a": 2, "b": 3}
    assert call["content"] == "5.0" and call["is_error"] is False
    assert answer.headers["x-kernel-run"] == body["kernel"]["run"]
    offered = {spec.name for spec in model.requests[0].tools}
    assert {"math-add", "ops-publish", "greet-hello"} <= offered
    assert model.requests[0].settings == {"temperature": 0, "max_tokens": 50}
    assert model.requests[0].messages[0].content == "Be brief."
    await kernel.aclose()


async def test_kernel_model_is_refused_a_function_that_needs_approval(tmp_path: Path) -> None:
    kernel, model = make_kernel(tmp_path, tool_call("ops.publish", text="secret plans"), "I could not publish.")
    async with client(kernel) as http:
        body = (await http.post("/v1/chat/completions", json={
            "model": "kernel", "messages": [{"role": "user", "content": "Publish it"}]})).json()
    [call] = body["kernel"]["tool_calls"]
    assert call["function"] == "ops.publish" and call["is_error"] is True and "approval" in call["content"]
    assert "published" not in call["content"]  # it did not run
    assert model.requests[1].messages[-1].role == "tool" and "approval" in model.requests[1].messages[-1].content
    await kernel.aclose()


async def test_kernel_model_streams_openai_chunks_with_the_tool_calls(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path, tool_call("math.add", a=2, b=3), "The sum is 5.")
    async with client(kernel) as http:
        answer = await http.post("/v1/chat/completions", json={
            "model": "kernel", "messages": [{"role": "user", "content": "2 + 3?"}], "stream": True,
            "stream_options": {"include_usage": True}})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    chunks = [data for _, data in frames(answer.text)]
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    events = [c["kernel"]["event"] for c in chunks if "kernel" in c]
    assert events == ["tool_call", "tool_result", "done"]
    result = next(c["kernel"] for c in chunks if c.get("kernel", {}).get("event") == "tool_result")
    assert result["function"] == "math.add" and result["content"] == "5.0"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The sum is 5."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30
    await kernel.aclose()


async def test_a_configured_agent_is_a_kernel_model_with_its_service_system_functions_and_settings(
        tmp_path: Path) -> None:
    kernel, default = make_kernel(tmp_path)
    helper = ScriptedChatModel([tool_call("math.multiply", a=6, b=7), "42, tersely."])
    kernel.services.add_service("helper-model", helper)
    agents = {"helper": AgentSettings(service="helper-model", system="Answer tersely.", functions=["math"],
                                      settings={"temperature": 0.7, "max_tokens": 30})}
    async with client(kernel, agents=agents) as http:
        answer = await http.post("/v1/chat/completions", json={
            "model": "helper", "temperature": 0, "messages": [{"role": "user", "content": "6 x 7?"}]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "helper" and body["choices"][0]["message"]["content"] == "42, tersely."
        assert body["kernel"]["tool_calls"][0]["function"] == "math.multiply"
        assert body["kernel"]["tool_calls"][0]["content"] == "42.0"
        first = helper.requests[0]
        assert [(m.role, m.content) for m in first.messages] == [("system", "Answer tersely."), ("user", "6 x 7?")]
        assert {spec.name.split("-")[0] for spec in first.tools} == {"math"}  # only the agent's functions
        assert first.settings == {"temperature": 0, "max_tokens": 30}  # the client's win over the agent's
        assert default.requests == []  # the default chat service was not used
        outside = await http.post("/v1/chat/completions", json={
            "model": "helper", "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "function", "function": {"name": "text-upper"}}})
        assert outside.status_code == 400 and "does not offer" in outside.json()["detail"]
    await kernel.aclose()


async def test_a_service_model_passes_the_clients_tools_through(tmp_path: Path) -> None:
    kernel, model = make_kernel(tmp_path, tool_call("get_weather", city="Paris"), "Sunny in Paris.",
                                tool_call("get_weather", city="Oslo"))
    weather = {"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                                "parameters": {"type": "object",
                                                               "properties": {"city": {"type": "string"}}}}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    async with client(kernel) as http:
        first = (await http.post("/v1/chat/completions", json={
            "model": "test", "messages": messages, "tools": [weather],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})).json()
        choice = first["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        request = model.requests[0]
        assert [spec.name for spec in request.tools] == ["get_weather"]  # the client's tools, not the kernel's
        assert (request.tool_choice.mode, request.tool_choice.function) == ("required", "get_weather")
        messages += [choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
        second = (await http.post("/v1/chat/completions", json={"model": "test", "messages": messages,
                                                                "tools": [weather]})).json()
        assert second["choices"][0]["message"]["content"] == "Sunny in Paris."
        sent = model.requests[1].messages
        assert [m.role for m in sent] == ["user", "assistant", "tool"]
        assert sent[1].tool_calls[0].name == "get_weather" and sent[2].tool_call_id == call["id"]
        streamed = await http.post("/v1/chat/completions", json={
            "model": "test", "messages": [{"role": "user", "content": "Oslo?"}], "tools": [weather], "stream": True})
    chunks = [data for _, data in frames(streamed.text)][:-1]
    pieces = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", []) if c["choices"]]
    assert pieces[0]["id"] and pieces[0]["function"]["name"] == "get_weather" and pieces[0]["type"] == "function"
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"city": "Oslo"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    await kernel.aclose()


async def test_the_openai_sdk_works_unchanged_in_process(tmp_path: Path) -> None:
    from openai import AsyncOpenAI

    kernel, _ = make_kernel(tmp_path, "Hello there.", tool_call("math.multiply", a=6, b=7), "42.")
    app = create_app(kernel)
    transport = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1")
    sdk = AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="unused", http_client=transport, max_retries=0)
    assert {m.id for m in (await sdk.models.list()).data} == {"kernel", "test"}
    done = await sdk.chat.completions.create(model="test", messages=[{"role": "user", "content": "Hi"}])
    assert done.choices[0].message.content == "Hello there." and done.usage is not None
    stream = await sdk.chat.completions.create(model="kernel", messages=[{"role": "user", "content": "6*7?"}],
                                               stream=True)
    text, events = "", []
    async for chunk in stream:
        extra = chunk.model_extra or {}
        if "kernel" in extra:
            events.append(extra["kernel"]["event"])
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == "42." and events == ["tool_call", "tool_result", "done"]
    from openai import NotFoundError

    with pytest.raises(NotFoundError, match="no model 'gpt-9'"):
        await sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "Hi"}])
    await sdk.close()
    await kernel.aclose()


async def test_structured_output_through_the_sdks_parse(tmp_path: Path) -> None:
    from openai import AsyncOpenAI
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    kernel, model = make_kernel(tmp_path, json_reply({"name": "Oslo", "population": 709000}),
                                json_reply({"name": "Bergen", "population": 291000}))
    app = create_app(kernel)
    transport = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1")
    sdk = AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="unused", http_client=transport, max_retries=0)
    for name in ("test", "kernel"):  # a chat service as it is, and the kernel model
        parsed = await sdk.chat.completions.parse(model=name, response_format=City,
                                                  messages=[{"role": "user", "content": "A city of Norway"}])
        assert parsed.choices[0].message.parsed is not None
        assert parsed.choices[0].message.parsed.name in ("Oslo", "Bergen")
    for request in model.requests:
        assert request.output_schema is not None and request.output_schema["properties"].keys() == {"name",
                                                                                                 "population"}
    await sdk.close()
    await kernel.aclose()


async def test_chat_request_errors_are_problem_details(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path, ProviderStatusError("upstream refused key sk-abcdefghijklmnopqrstuv",
                                                          status_code=500, retryable=False),
                            ProviderStatusError("upstream down", status_code=500, retryable=False))
    user = [{"role": "user", "content": "Hi"}]
    async with client(kernel) as http:
        cases = {
            400: [{"messages": user}, {"model": "test", "messages": []}, {"model": "test", "messages": user, "n": 2},
                  {"model": "test", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                  {"model": "test", "messages": [{"role": "wizard", "content": "x"}]},
                  {"model": "kernel", "messages": user, "tools": [{"type": "function",
                                                                   "function": {"name": "mine"}}]},
                  {"model": "kernel", "messages": user, "tool_choice": 7},
                  {"model": "test", "messages": user, "max_tokens": -1},
                  {"model": "test", "messages": user, "temperature": "hot"},
                  {"model": "test", "messages": user, "stop": {"a": 1}},
                  {"model": "test", "messages": user, "seed": 1.5},
                  {"model": "test", "messages": user, "stream": "yes"},
                  {"model": "test", "messages": user, "tools": [{"type": "function",
                                                                  "function": {"name": "f", "parameters": "x"}}]}],
            404: [{"model": "nope", "messages": user}],
        }
        for status, bodies in cases.items():
            for body in bodies:
                answer = await http.post("/v1/chat/completions", json=body)
                assert answer.status_code == status, (body, answer.text)
                problem = answer.json()
                assert problem["status"] == status and problem["type"].startswith("urn:orchestration-kernel:error:")
                assert problem["error"]["message"] == problem["detail"]
        bad_json = await http.post("/v1/chat/completions", content=b"{nope",
                                   headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["title"] == "invalid JSON"
        failed = await http.post("/v1/chat/completions", json={"model": "test", "messages": user})
        assert failed.status_code == 502 and failed.json()["error_type"] == "ProviderStatusError"
        assert "sk-abcdefghijklmnopqrstuv" not in failed.text and "Traceback" not in failed.text
        streamed = await http.post("/v1/chat/completions", json={"model": "test", "messages": user, "stream": True})
        last = frames(streamed.text)[-1][1]
        assert last["error"]["type"] == "ProviderStatusError" and last["status"] == 502
    await kernel.aclose()


# --- functions and invocation -----------------------------------------------------------------


async def test_functions_are_listed_with_their_schemas(kernel: Kernel) -> None:
    async with client(kernel) as http:
        listed = (await http.get("/v1/functions")).json()
    functions = {f["name"]: f for f in listed["functions"]}
    add = functions["math.add"]
    assert add["parameters"]["required"] == ["a", "b"] and add["kind"] == "native" and add["tool_name"] == "math-add"
    assert add["returns"] == {"type": "number"}
    assert functions["ops.publish"]["needs_approval"] is True
    assert functions["greet.hello"]["kind"] == "prompt" and functions["greet.hello"]["streams"] is True
    assert "ops" in listed["plugins"]


async def test_invoke_gives_the_value_usage_and_cost(tmp_path: Path) -> None:
    prices = {"scripted-model": {"input": 1.0, "output": 2.0}}
    kernel, model = make_kernel(tmp_path, "Hello, Ada!", "Hi Bob!", prices=prices)
    async with client(kernel) as http:
        added = await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 2, "b": 3}})
        assert added.status_code == 200
        body = added.json()
        assert body["value"] == 5.0 and body["function"] == "math.add" and body["cost"] == 0.0
        assert body["run"] == added.headers["x-kernel-run"]
        hello = (await http.post("/v1/functions/greet.hello/invoke",
                                 json={"arguments": {"name": "Ada"}, "settings": {"max_tokens": 9}})).json()
        assert hello["value"] == "Hello, Ada!" and hello["usage"]["total_tokens"] == 15
        assert hello["cost"] == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
        assert model.requests[0].settings["max_tokens"] == 9
        streamed = await http.post("/v1/functions/greet.hello/invoke?stream=true", json={"arguments": {"name": "Bob"}})
    events = frames(streamed.text)
    assert [e for e, _ in events[:-1]] == ["delta"] * (len(events) - 1)
    assert "".join(d["text"] for e, d in events if e == "delta") == "Hi Bob!"
    event, result = events[-1]
    assert event == "result" and result["value"] == "Hi Bob!" and result["usage"]["total_tokens"] == 15
    assert result["cost"] == pytest.approx(20 / 1e6)
    async with client(kernel) as http:  # a native function streamed: one result, its value typed
        native = frames((await http.post("/v1/functions/math.add/invoke?stream=true",
                                          json={"arguments": {"a": 2, "b": 3}})).text)
        failed = frames((await http.post("/v1/functions/math.divide/invoke?stream=true",
                                          json={"arguments": {"a": 2, "b": 0}})).text)
    assert [e for e, _ in native] == ["result"] and native[0][1]["value"] == 5.0
    assert failed[-1][0] == "error" and failed[-1][1]["error_type"] == "ArgumentError"
    await kernel.aclose()


async def test_invocation_errors(kernel: Kernel) -> None:
    async with client(kernel) as http:
        missing = await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 1}})
        assert missing.status_code == 422
        assert missing.json() | {"instance": ""} == missing.json() | {
            "instance": "", "error_type": "ArgumentError", "parameter": "b", "function": "math.add",
            "detail": "parameter 'b' of math.add: missing required argument"}
        wrong = await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": "x", "b": 1}})
        assert wrong.status_code == 422 and wrong.json()["parameter"] == "a"
        extra = await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 1, "b": 2, "c": 3}})
        assert extra.status_code == 422 and "unexpected argument" in extra.json()["detail"]
        unknown = await http.post("/v1/functions/nope.x/invoke", json={})
        assert unknown.status_code == 404 and unknown.json()["error_type"] == "FunctionNotFoundError"
        native_settings = await http.post("/v1/functions/math.add/invoke",
                                          json={"arguments": {"a": 1, "b": 2}, "settings": {"temperature": 0}})
        assert native_settings.status_code == 400
        gated = await http.post("/v1/functions/ops.publish/invoke", json={"arguments": {"text": "x"}})
        assert gated.status_code == 403 and "POST /v1/plans/run" in gated.json()["detail"]
        assert (await http.post("/v1/functions/math.add/invoke", json=[1])).status_code == 400
        assert (await http.post("/v1/functions/math.add/invoke", json={"arguments": [1]})).status_code == 400
        divided = await http.post("/v1/functions/math.divide/invoke", json={"arguments": {"a": 1, "b": 0}})
        assert divided.status_code == 422 and divided.json()["parameter"] == "b"
        wrong_method = await http.get("/v1/functions/math.add/invoke")
        assert wrong_method.status_code == 405 and wrong_method.json()["error_type"] == "HttpError"
    async with client(kernel, allow_needs_approval=True) as http:
        allowed = await http.post("/v1/functions/ops.publish/invoke", json={"arguments": {"text": "x"}})
        assert allowed.json()["value"] == "published: x"
    async with client(kernel, functions=["math.add", "ops"]) as http:
        names = {f["name"] for f in (await http.get("/v1/functions")).json()["functions"]}
        assert names == {"math.add", "ops.publish", "ops.shout"}
        assert (await http.post("/v1/functions/math.multiply/invoke", json={})).status_code == 404


# --- plans and runs ---------------------------------------------------------------------------


async def test_a_plan_is_made_from_a_goal_or_validated(tmp_path: Path) -> None:
    kernel, model = make_kernel(tmp_path, json_reply(PLAN))
    async with client(kernel) as http:
        made = (await http.post("/v1/plans", json={"goal": "add, then multiply", "max_steps": 5})).json()
        assert made["valid"] and made["plan"]["steps"] == PLAN["steps"]
        assert made["graph"]["edges"] == [["s1", "s2"]] and made["graph"]["output"] == "s2"
        assert model.requests[0].output_schema is not None  # structured output: the plan's schema
        given = (await http.post("/v1/plans", json={"plan": GATED_PLAN})).json()
        assert given["valid"] and [n["needs_approval"] for n in given["graph"]["nodes"]] == [False, True]
        broken = {"goal": "x", "steps": [{"id": "s1", "function": "math.nope", "arguments": {}},
                                         {"id": "s2", "function": "math.add", "arguments": {"a": {"$step": "s9"}}}]}
        invalid = (await http.post("/v1/plans", json={"plan": broken})).json()
        assert not invalid["valid"] and len(invalid["problems"]) >= 3
        assert any("math.nope" in p for p in invalid["problems"])
        shapeless = (await http.post("/v1/plans", json={"plan": {"steps": "no"}})).json()
        assert not shapeless["valid"] and shapeless["plan"] is None
        assert (await http.post("/v1/plans", json={})).status_code == 400
        assert (await http.post("/v1/plans", json={"goal": "x", "max_steps": 0})).status_code == 400
        run_invalid = await http.post("/v1/plans/run", json={"plan": broken})
        assert run_invalid.status_code == 422 and run_invalid.json()["error_type"] == "PlanValidationError"
        assert len(run_invalid.json()["problems"]) >= 3
    await kernel.aclose()


async def test_a_plan_run_streams_its_steps(kernel: Kernel) -> None:
    async with client(kernel) as http:
        answer = await http.post("/v1/plans/run", json={"plan": PLAN})
    events = frames(answer.text)
    names = [e for e, _ in events]
    assert names == ["run", "step", "step", "step", "step", "run_finished"]
    steps = [(d["step"], d["status"]) for e, d in events if e == "step"]
    assert steps == [("s1", "running"), ("s1", "done"), ("s2", "running"), ("s2", "done")]
    assert events[0][1]["graph"]["edges"] == [["s1", "s2"]]
    assert events[2][1]["output"] == 5.0
    finished = events[-1][1]
    assert finished["status"] == "done" and finished["result"] == 50.0
    assert answer.headers["x-kernel-run"] == events[0][1]["run"]


async def test_a_failed_step_skips_its_dependants(kernel: Kernel) -> None:
    plan = {"goal": "divide", "steps": [
        {"id": "s1", "function": "math.divide", "arguments": {"a": 1, "b": 0}},
        {"id": "s2", "function": "math.add", "arguments": {"a": {"$step": "s1"}, "b": 1}},
        {"id": "s3", "function": "math.add", "arguments": {"a": 1, "b": 1}}]}
    async with client(kernel) as http:
        events = frames((await http.post("/v1/plans/run", json={"plan": plan})).text)
    status = {d["step"]: d["status"] for e, d in events if e == "step"}
    assert status == {"s1": "failed", "s2": "skipped", "s3": "done"}
    finished = events[-1][1]
    assert finished["status"] == "failed" and finished["error"]["error_type"] == "PlanExecutionError"
    assert finished["error"]["step"] == "s1"


async def _wait_for(http: httpx2.AsyncClient, run_id: str, check: Any) -> dict[str, Any]:
    for _ in range(200):
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        if check(run):
            return dict(run)
        await asyncio.sleep(0.01)
    raise AssertionError(f"run never got there: {run}")


async def test_approvals_are_asked_through_the_run_and_answered_over_http(kernel: Kernel) -> None:
    async with client(kernel) as http:
        started = await http.post("/v1/plans/run", json={"plan": GATED_PLAN, "stream": False})
        assert started.status_code == 202 and started.headers["location"] == f"/v1/runs/{started.json()['run']}"
        run_id = started.json()["run"]
        waiting = await _wait_for(http, run_id, lambda r: r["pending_approvals"])
        assert waiting["status"] == "waiting"
        [pending] = waiting["pending_approvals"]
        assert pending["kind"] == "plan" and [s["function"] for s in pending["steps"]] == ["ops.publish"]
        assert waiting["steps"] == {"s1": "pending", "s2": "pending"}  # nothing runs before the approval
        answered = await http.post(f"/v1/runs/{run_id}/approve", json={"approval": pending["approval"],
                                                                       "approved": True})
        assert answered.json() == {"run": run_id, "approval": pending["approval"], "approved": True}
        done = await _wait_for(http, run_id, lambda r: r["status"] == "done")
        assert done["result"] == "published: 5.0" and done["steps"] == {"s1": "done", "s2": "done"}
        assert [e["event"] for e in done["events"]][:3] == ["run", "approval", "approval_decided"]
        again = await http.post(f"/v1/runs/{run_id}/approve", json={"approval": pending["approval"]})
        assert again.status_code == 409

        refused = (await http.post("/v1/plans/run", json={"plan": GATED_PLAN, "stream": False})).json()["run"]
        await _wait_for(http, refused, lambda r: r["pending_approvals"])
        assert (await http.post(f"/v1/runs/{refused}/approve", json={"approved": False})).status_code == 200
        failed = await _wait_for(http, refused, lambda r: r["status"] == "failed")
        assert failed["error"]["error_type"] == "ApprovalDeniedError" and failed["steps"]["s1"] == "pending"

        nested = {"goal": "relay", "steps": [{"id": "r1", "function": "relays.relay", "arguments": {"text": "hi"}}]}
        inner = (await http.post("/v1/plans/run", json={"plan": nested, "stream": False})).json()["run"]
        asked = await _wait_for(http, inner, lambda r: r["pending_approvals"])
        [call] = asked["pending_approvals"]
        assert call["kind"] == "function" and call["function"] == "ops.publish" and call["step"] == "r1"
        assert call["arguments"] == {"text": "hi"} and asked["steps"]["r1"] == "running"
        await http.post(f"/v1/runs/{inner}/approve", json={"approved": True})
        assert (await _wait_for(http, inner, lambda r: r["status"] == "done"))["result"] == "published: hi"

        assert (await http.post("/v1/runs/run_nope/approve", json={})).status_code == 404
        assert (await http.post(f"/v1/runs/{inner}/approve", json={"approved": "yes"})).status_code == 400


async def test_runs_are_listed_newest_first_and_bounded(kernel: Kernel) -> None:
    async with client(kernel, max_runs=3) as http:
        ids = [(await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": i, "b": 1}})).json()["run"]
               for i in range(5)]
        listed = (await http.get("/v1/runs")).json()
        assert [r["id"] for r in listed["runs"]] == ids[:1:-1]
        assert listed["journal"] is None or isinstance(listed["journal"], list)
        assert (await http.get(f"/v1/runs/{ids[0]}")).status_code == 404  # forgotten: the oldest finished
        detail = (await http.get(f"/v1/runs/{ids[-1]}")).json()
        assert detail["status"] == "done" and detail["result"] == 5.0 and detail["kind"] == "invoke"


async def test_the_journal_runs_are_listed_and_shown_once_there_is_a_journal(tmp_path: Path) -> None:
    from tests.test_serve_security import KEY_A, bearer, keyed

    kernel, _ = make_kernel(tmp_path, journal_path=str(tmp_path / "journal.db"))
    async with client(kernel) as http:
        assert (await http.get("/v1/runs")).json()["journal"] is None  # no journal yet
    await kernel.aclose()

    kernel, _ = make_kernel(tmp_path, journal=True, journal_path=str(tmp_path / "journal.db"))
    async with client(kernel) as http:
        served = (await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 2, "b": 3}})).json()
        assert kernel.events is not None
        await kernel.events.commit()  # the journal's writer thread has written the run
        listed = (await http.get("/v1/runs")).json()
        assert [r["id"] for r in listed["runs"]] == [served["run"]]
        [journaled] = listed["journal"]
        assert journaled["source"] == "journal" and journaled["title"] == "math.add" and journaled["status"] == "ok"
        detail = (await http.get(f"/v1/runs/{journaled['id']}")).json()
        assert detail["source"] == "journal" and detail["id"] == journaled["id"]
        assert [e["name"] for e in detail["events"]] == ["math.add"]
        assert (await http.get("/v1/runs/nothing-like-it")).status_code == 404
    async with client(kernel, keys=keyed()) as http:  # with keys: a key sees only its own runs, not the journal
        listed = (await http.get("/v1/runs", headers=bearer(KEY_A))).json()
        assert listed["journal"] is None
        assert (await http.get(f"/v1/runs/{journaled['id']}", headers=bearer(KEY_A))).status_code == 404
    await kernel.aclose()


# --- memory -----------------------------------------------------------------------------------


async def test_memory_ingests_uploads_and_searches(kernel: Kernel) -> None:
    async with client(kernel) as http:
        files = [("files", ("soup.md", b"# Soup\n\nTomato soup needs tomatoes, onions and basil.\n", "text/markdown")),
                 ("files", ("bread.txt", b"Bread needs flour, water, salt and yeast.", "text/plain"))]
        report = await http.post("/v1/memory/recipes/documents", files=files, data={"chunk_size": "200"})
        assert report.status_code == 200, report.text
        assert report.json() | {"chunks": 0} == {"collection": "recipes", "documents": ["soup.md", "bread.txt"],
                                                  "files": 2, "chunks": 0, "added": 2, "skipped": 0, "removed": 0}
        again = (await http.post("/v1/memory/recipes/documents", json={
            "documents": [{"source": "soup.md", "text": "# Soup\n\nTomato soup needs tomatoes, onions and basil.\n"},
                          {"source": "tea.md", "text": "Tea needs hot water.", "metadata": {"kind": "drink"}}]})).json()
        assert again["added"] == 1 and again["skipped"] == 1
        assert "recipes" in (await http.get("/v1/memory/collections")).json()["collections"]
        found = (await http.post("/v1/memory/recipes/search", json={"query": "tomato soup basil", "k": 2})).json()
        assert found["hits"][0]["source"] == "soup.md" and found["hits"][0]["reference"].startswith("soup.md")
        keyword = (await http.post("/v1/memory/recipes/search", json={"query": "yeast", "mode": "keyword"})).json()
        assert [h["source"] for h in keyword["hits"]] == ["bread.txt"]
        filtered = (await http.post("/v1/memory/recipes/search",
                                    json={"query": "water", "filter": "kind=drink"})).json()
        assert [h["source"] for h in filtered["hits"]] == ["tea.md"]

        binary = await http.post("/v1/memory/recipes/documents", files=[("files", ("x.md", b"\x00\x01", "text/plain"))])
        assert binary.status_code == 415
        pdf = await http.post("/v1/memory/recipes/documents", files=[("files", ("x.pdf", b"%PDF", "application/pdf"))])
        assert pdf.status_code == 415 and ".md" in pdf.json()["detail"]
        latin = await http.post("/v1/memory/recipes/documents", files=[("files", ("x.txt", "é".encode("latin-1")))])
        assert latin.status_code == 415
        assert (await http.post("/v1/memory/bad%20name/search", json={"query": "x"})).status_code == 400
        assert (await http.post("/v1/memory/nothing/search", json={"query": "x"})).status_code == 404
        assert (await http.post("/v1/memory/recipes/search", json={"query": ""})).status_code == 400
        assert (await http.post("/v1/memory/recipes/search", json={"query": "x", "mode": "fuzzy"})).status_code == 400
        bad_filter = await http.post("/v1/memory/recipes/search", json={"query": "x", "filter": {"field": "a",
                                                                                                 "op": "like"}})
        assert bad_filter.status_code == 400 and bad_filter.json()["error_type"] == "FilterError"
        assert (await http.post("/v1/memory/recipes/documents", json={"documents": []})).status_code == 400


# --- the document and the console -------------------------------------------------------------


def test_the_web_stack_loads_only_when_a_server_is_built() -> None:
    from tests.test_import import loaded_after

    web = {"starlette", "uvicorn", "multipart", "python_multipart"}
    quiet = loaded_after("import kernel\nfrom kernel import Kernel, KernelSettings\nimport kernel.serve\n"
                         "k = Kernel(KernelSettings(), load_entry_points=False)\nk.settings.serve\n"
                         "from kernel.cli import build_parser\nbuild_parser(['serve'])")
    assert not quiet & web, f"loaded by import kernel / Kernel() / the CLI parser: {quiet & web}"
    built = loaded_after("from kernel import Kernel, KernelSettings\nfrom kernel.serve import create_app\n"
                         "create_app(Kernel(KernelSettings(), load_entry_points=False))")
    assert "starlette" in built  # the probe can see it when it is there


async def test_the_openapi_document_covers_every_route(kernel: Kernel) -> None:
    app = create_app(kernel)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        document = (await http.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    routes = {getattr(r, "path", "") for r in app.routes if getattr(r, "path", "").startswith("/v1/")}
    documented = {path.replace("{model}", "{model:path}") for path in document["paths"]}
    assert routes == documented
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
    for path in document["paths"].values():
        for operation in path.values():
            assert operation["responses"]["422"] == {"$ref": "#/components/responses/Problem"}


async def test_the_console_is_served_from_the_package(kernel: Kernel) -> None:
    async with client(kernel) as http:
        page = await http.get("/")
        script = await http.get("/console/console.js")
        style = await http.get("/console/console.css")
        health = await http.get("/healthz")
    assert page.status_code == 200 and '<script src="/console/console.js"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "innerHTML" not in script.text  # values are put in the page as text
    assert style.status_code == 200 and health.json() == {"status": "ok"}
    async with client(kernel, console=False) as http:
        assert (await http.get("/")).status_code == 404
