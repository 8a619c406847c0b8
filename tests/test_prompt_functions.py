"""Prompt functions through the kernel: inputs, settings, services, structured output,
recursion, streaming, usage and cost."""

from __future__ import annotations

import pytest

from kernel import InputVariable, Kernel, KernelArguments, KernelSettings, PromptFunction, kernel_function
from kernel.contents import FinalMessage, TextDelta, Usage
from kernel.errors import ArgumentError, InvocationError, RecursionLimitError, ServiceNotFoundError
from kernel.settings import Price
from kernel.testing import ScriptedChatModel, ScriptedReply, json_reply


def make_kernel(*models: tuple[str, ScriptedChatModel], **settings: object) -> Kernel:
    k = Kernel(settings=KernelSettings(**settings), load_entry_points=False, builtins=False)
    for name, model in models:
        k.services.add_service(name, model)
    return k


async def test_invoke_sends_rendered_prompt_and_returns_text() -> None:
    model = ScriptedChatModel(["Bonjour"])
    k = make_kernel(("test", model))
    k.add_function(PromptFunction.from_template("Translate {{ text }} to French", name="fr", plugin="tr"))
    result = await k.invoke("tr.fr", text="Hello")
    assert result.value == "Bonjour"
    assert result.function == "tr.fr"
    assert [(m.role, m.content) for m in model.last_request.messages] == [("user", "Translate Hello to French")]


async def test_typed_inputs_with_defaults() -> None:
    model = ScriptedChatModel(default="ok")
    k = make_kernel(("test", model))
    fn = PromptFunction(
        "{{ topic }} x{{ count + 1 }}",
        name="t", plugin_name="p",
        input_variables=[InputVariable("topic", default="cats"), InputVariable("count", type="integer", default=1)],
    )
    k.add_function(fn)
    assert fn.parameters_schema["required"] == []
    assert fn.parameters_schema["properties"]["count"]["type"] == "integer"
    await k.invoke("p.t")
    assert model.last_request.messages[0].content == "cats x2"
    await k.invoke("p.t", topic="dogs", count="4")
    assert model.last_request.messages[0].content == "dogs x5"
    with pytest.raises(ArgumentError) as info:
        await k.invoke("p.t", count="lots")
    assert info.value.parameter == "count" and info.value.function == "p.t"
    assert len(model.requests) == 2, "bad input must not reach the model"


async def test_discovered_variables_are_required() -> None:
    k = make_kernel(("test", ScriptedChatModel(default="x")))
    k.add_function(PromptFunction.from_template("{{ a }} {{ b }}", name="t", plugin="p"))
    with pytest.raises(ArgumentError) as info:
        await k.invoke("p.t", a="1")
    assert info.value.parameter == "b"


async def test_execution_settings_default_and_per_service() -> None:
    first, second = ScriptedChatModel(default="1"), ScriptedChatModel(default="2")
    k = make_kernel(("first", first), ("second", second))
    fn = PromptFunction(
        "hi", name="t", plugin_name="p",
        execution_settings={"default": {"max_tokens": 8, "temperature": 0.1}, "second": {"max_tokens": 99}},
    )
    k.add_function(fn)
    assert (await k.invoke(fn)).value == "1"  # first service added is the default
    assert first.last_request.settings == {"max_tokens": 8, "temperature": 0.1}
    fn.service = "second"
    assert (await k.invoke(fn)).value == "2"
    assert second.last_request.settings == {"max_tokens": 99}
    await k.invoke(fn, KernelArguments(settings={"max_tokens": 5, "seed": 1}))
    assert second.last_request.settings == {"max_tokens": 5, "seed": 1}


async def test_service_selection_by_name_and_default_chat() -> None:
    first, second = ScriptedChatModel(default="1"), ScriptedChatModel(default="2")
    k = make_kernel(("first", first), ("second", second), default_chat="second")
    k.add_function(PromptFunction.from_template("hi", name="t", plugin="p"))
    k.add_function(PromptFunction.from_template("hi", name="u", plugin="p", service="first"))
    assert (await k.invoke("p.t")).value == "2"
    assert (await k.invoke("p.u")).value == "1"
    k.add_function(PromptFunction.from_template("hi", name="v", plugin="p", service="nowhere"))
    with pytest.raises(ServiceNotFoundError, match="nowhere"):
        await k.invoke("p.v")


async def test_output_schema_parses_json() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    model = ScriptedChatModel([json_reply({"city": "Paris"}), '```json\n{"city": "Rome"}\n```', "not json",
                               "still not json"])
    k = make_kernel(("test", model))
    k.add_function(PromptFunction.from_template("Where?", name="where", plugin="geo", output_schema=schema))
    assert (await k.invoke("geo.where")).value == {"city": "Paris"}
    assert model.last_request.output_schema == schema
    assert (await k.invoke("geo.where")).value == {"city": "Rome"}
    with pytest.raises(InvocationError, match=r"geo\.where.*the output is not JSON"):
        await k.invoke("geo.where")
    assert len(model.requests) == 4  # one repair turn, then the error


async def test_output_that_breaks_the_schema_gets_one_repair_turn() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    model = ScriptedChatModel([json_reply({"town": "Paris"}), json_reply({"city": "Paris"}),
                               json_reply({"city": 3}), json_reply({"city": [4]})])
    k = make_kernel(("test", model))
    k.add_function(PromptFunction.from_template("Where?", name="where", plugin="geo", output_schema=schema))
    result = await k.invoke("geo.where")
    assert result.value == {"city": "Paris"} and result.usage.requests == 2
    repair = model.requests[1].messages
    assert repair[-2].role == "assistant" and repair[-2].content == '{"town": "Paris"}'
    assert repair[-1].role == "user" and "'city' is a required property" in repair[-1].content
    assert "Additional properties are not allowed ('town' was unexpected)" in repair[-1].content
    with pytest.raises(InvocationError, match=r"geo\.where: the model's output does not match the output schema"
                                               r".*at city: \[4\] is not of type 'string'"):
        await k.invoke("geo.where")


async def test_prompt_function_calling_itself_hits_recursion_limit() -> None:
    model = ScriptedChatModel(default="again")
    k = make_kernel(("test", model), max_call_depth=8)
    k.add_function(PromptFunction.from_template("{{ loop.me() }}", name="me", plugin="loop"))
    # Bounded work, shown by the limit that stopped it (8 nested renders), not by a clock.
    with pytest.raises(RecursionLimitError, match=r"loop\.me: functions nested deeper than 8 calls"):
        await k.invoke("loop.me")
    assert model.requests == []  # every level was still rendering: the model was never asked


async def test_invoke_stream_prompt_and_native() -> None:
    model = ScriptedChatModel(["streamed answer text"])
    k = make_kernel(("test", model))
    k.add_function(PromptFunction.from_template("Tell {{ x }}", name="t", plugin="p"))

    @kernel_function
    def native(x: int) -> int:
        return x * 2

    k.add_plugin([native], name="n")
    events = [e async for e in k.invoke_stream("p.t", x="y")]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "streamed answer text"
    assert isinstance(events[-1], FinalMessage) and events[-1].message.content == text
    events = [e async for e in k.invoke_stream("n.native", x=4)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["8"]


class TestUsageAndCost:
    async def test_nested_usage_sums_into_the_top_result(self) -> None:
        model = ScriptedChatModel([
            ScriptedReply("a", usage=Usage(input_tokens=10, output_tokens=1)),
            ScriptedReply("b", usage=Usage(input_tokens=20, output_tokens=2)),
            ScriptedReply("c", usage=Usage(input_tokens=30, output_tokens=3)),
        ])
        k = make_kernel(("test", model))
        k.add_function(PromptFunction.from_template("one {{ x }}", name="one", plugin="p"))
        k.add_function(PromptFunction.from_template("two {{ p.one(x='y') }}", name="two", plugin="p"))

        @kernel_function
        async def both(kernel: Kernel) -> str:
            first = await kernel.invoke("p.two")
            second = await kernel.invoke("p.one", x="z")
            return f"{first.value}+{second.value}"

        k.add_plugin([both], name="agg")
        result = await k.invoke("agg.both")
        assert result.value == "b+c"
        assert result.usage.input_tokens == 60
        assert result.usage.output_tokens == 6
        assert result.usage.requests == 3
        assert result.cost is None, "unpriced models have an unknown cost, never 0"

    async def test_single_call_usage_and_no_cost_without_prices(self) -> None:
        k = make_kernel(("test", ScriptedChatModel(["x"], usage=Usage(input_tokens=7, output_tokens=3))))
        k.add_function(PromptFunction.from_template("hi", name="t", plugin="p"))
        result = await k.invoke("p.t")
        assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.requests) == (7, 3, 1)
        assert result.cost is None

    async def test_cost_with_prices(self) -> None:
        prices = {"priced-model": Price(input=2.0, output=10.0)}
        model = ScriptedChatModel(default="x", model="priced-model", usage=Usage(input_tokens=1000, output_tokens=100))
        k = make_kernel(("test", model), prices=prices)
        k.add_function(PromptFunction.from_template("hi", name="t", plugin="p"))
        result = await k.invoke("p.t")
        assert result.cost == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)

    async def test_one_unpriced_call_makes_the_total_unpriced(self) -> None:
        prices = {"priced-model": Price(input=2.0, output=10.0)}
        priced = ScriptedChatModel(default="x", model="priced-model")
        unpriced = ScriptedChatModel(default="y", model="mystery-model")
        k = make_kernel(("priced", priced), ("unpriced", unpriced), prices=prices)
        k.add_function(PromptFunction.from_template("hi", name="a", plugin="p", service="priced"))
        k.add_function(PromptFunction.from_template("hi", name="b", plugin="p", service="unpriced"))
        assert (await k.invoke("p.a")).cost is not None
        mixed = PromptFunction.from_template("{{ p.a() }} {{ p.b() }}", name="mixed", plugin="q", service="priced")
        k.add_function(mixed)
        assert (await k.invoke("q.mixed")).cost is None


async def test_streaming_respects_the_call_depth_limit() -> None:
    k = make_kernel(("test", ScriptedChatModel(default="deep")), max_call_depth=1)
    k.add_function(PromptFunction.from_template("Tell {{ x }}", name="tell", plugin="p"))

    @kernel_function
    async def relay(kernel: Kernel) -> str:
        return "".join([e.text async for e in kernel.invoke_stream("p.tell", x="y") if isinstance(e, TextDelta)])

    k.add_function(relay, plugin="n")
    with pytest.raises(RecursionLimitError, match=r"p\.tell: functions nested deeper than 1"):
        await k.invoke("n.relay")
    assert "".join([e.text async for e in k.invoke_stream("p.tell", x="y") if isinstance(e, TextDelta)]) == "deep"
