"""What a model sends as a tool call never escapes the loop as an exception (kernel/chat).

Invalid Unicode (lone surrogates, raw or JSON-escaped), NaN/Infinity, numbers out of
range, deep nesting: each becomes one `error: ...` tool result, the function does not
run, and the next request is still encodable as UTF-8, streaming or not. Repeated call
ids are made unique, the same way in the assistant message and in its tool messages.
Error texts sent to the model carry no paths, URLs or host:port details.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kernel import ChatMessage, Kernel, KernelSettings, kernel_function
from kernel.chat import short_error
from kernel.contents import ChatRequest, ToolCall, ToolCallFinished, ToolCallStarted
from kernel.testing import ScriptedChatModel, ScriptedReply, tool_calls

seen: list[tuple[str, Any]] = []


@kernel_function
def echo(s: str) -> str:
    """Echo a text."""
    seen.append(("echo", s))
    return s


@kernel_function
def count(n: int = 0, x: float = 0.0) -> str:
    """Take numbers."""
    seen.append(("count", (n, x)))
    return f"{n} {x}"


@kernel_function
def tree(data: Any = None) -> str:
    """Take any JSON."""
    seen.append(("tree", data))
    return "ok"


def make_kernel() -> Kernel:
    kernel = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    kernel.add_plugin([echo, count, tree], name="t")
    seen.clear()
    return kernel


def encodable(messages: list[ChatMessage]) -> None:
    """What a connector does with the next request: UTF-8 JSON (raises on a lone surrogate)."""
    json.dumps([m.to_dict() for m in messages], ensure_ascii=False).encode("utf-8")


async def run(kernel: Kernel, calls: list[ToolCall], stream: bool) -> tuple[list[ChatMessage], ScriptedChatModel]:
    model = ScriptedChatModel([ScriptedReply(tool_calls=calls), "done"])
    kernel.services.add_service("test", model)
    if not stream:
        result = await kernel.chat("go", service="test")
        assert result.text == "done"
        messages = result.messages
    else:
        events = [event async for event in kernel.chat_stream("go", service="test")]
        started = [e.call.id for e in events if isinstance(e, ToolCallStarted)]
        finished = [e.result.call_id for e in events if isinstance(e, ToolCallFinished)]
        assert sorted(started) == sorted(finished) and len(set(started)) == len(started)
        messages = model.requests[-1].messages[1:]
    assert len(model.requests) == 2
    encodable(model.requests[-1].messages)
    return messages, model


DEEP = 40
BAD_ARGUMENTS = {
    "raw lone surrogate": ("t-echo", '{"s": "a\ud800b"}', "contain invalid Unicode"),
    "raw lone low surrogate": ("t-echo", '{"s": "\udfff"}', "contain invalid Unicode"),
    "escaped lone surrogate": ("t-echo", '{"s": "\\ud800"}', "contain invalid Unicode"),
    "surrogate in a key": ("t-tree", '{"data": {"\\udc00": 1}}', "contain invalid Unicode"),
    "surrogate outside a string": ("t-echo", '{"s": 1\ud800}', "are not valid JSON"),
    "NaN": ("t-count", '{"x": NaN}', "contain NaN"),
    "Infinity": ("t-count", '{"x": Infinity}', "contain Infinity"),
    "-Infinity": ("t-count", '{"x": -Infinity}', "contain -Infinity"),
    "float overflow": ("t-count", '{"x": 1e999}', "out of the range of a float"),
    "101-digit int": ("t-count", '{"n": ' + "9" * 101 + "}", "an integer of 101 digits"),
    "5000-digit int (over Python's str limit)": ("t-count", '{"n": -' + "9" * 5000 + "}", "5000 digits"),
    "nested 40 deep": ("t-tree", '{"data": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deeply"),
    "nested 5000 deep": ("t-tree", '{"data": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    "objects nested 40 deep": ("t-tree", '{"data": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}", "nested too deeply"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
async def test_bad_arguments_become_an_error_result(case: str, stream: bool) -> None:
    name, raw, expected = BAD_ARGUMENTS[case]
    kernel = make_kernel()
    messages, _model = await run(kernel, [ToolCall("c1", name, raw)], stream)
    tool = [m for m in messages if m.role == "tool"]
    assert len(tool) == 1 and tool[0].tool_call_id == "c1"
    assert tool[0].content.startswith("error: arguments of t."), tool[0].content
    assert expected in tool[0].content, tool[0].content
    assert seen == []  # the function did not run


async def test_a_raw_surrogate_is_echoed_escaped_so_the_next_request_encodes() -> None:
    kernel = make_kernel()
    messages, model = await run(kernel, [ToolCall("c1", "t-echo", '{"s": "\ud800"}')], stream=False)
    echoed = model.requests[1].messages[1].tool_calls[0]
    assert echoed.arguments == '{"s": "\\ud800"}'  # what the model sent, as a JSON escape
    assert messages[0].tool_calls[0] is echoed


async def test_surrogates_in_a_call_id_or_name_do_not_break_the_next_request() -> None:
    kernel = make_kernel()
    messages, _ = await run(kernel, [ToolCall("c\ud800", "t-echo\udc00", "{}")], stream=False)
    assert messages[1].content.startswith("error: unknown function")
    assert messages[0].tool_calls[0].id == messages[1].tool_call_id == "c\ufffd"


async def test_numbers_and_nesting_within_the_bounds_still_run() -> None:
    kernel = make_kernel()
    nested = '{"data": ' + "[" * 31 + "]" * 31 + "}"  # 32 levels with the object itself
    calls = [ToolCall("c1", "t-count", '{"n": ' + "9" * 100 + ', "x": 1e308}'),
             ToolCall("c2", "t-tree", nested),
             ToolCall("c3", "t-echo", '{"s": "\\ud83d\\ude00 \u65e5\u672c"}')]  # an escaped pair is fine
    messages, _ = await run(kernel, calls, stream=False)
    assert [m.content for m in messages if m.role == "tool"] == [f"{'9' * 100} 1e+308", "ok", "\U0001f600 \u65e5\u672c"]
    assert len(seen) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
async def test_duplicate_call_ids_are_each_answered_once_under_a_unique_id(stream: bool) -> None:
    kernel = make_kernel()
    calls = [ToolCall("call_1", "t-echo", '{"s": "a"}'), ToolCall("call_1", "t-echo", '{"s": "b"}'),
             ToolCall("call_1_2", "t-echo", '{"s": "c"}'), ToolCall("call_1", "t-echo", '{"s": "d"}'),
             ToolCall("", "t-echo", '{"s": "e"}'), ToolCall("", "t-echo", '{"s": "f"}')]
    messages, model = await run(kernel, calls, stream)
    ids = [c.id for c in messages[0].tool_calls]
    assert ids == ["call_1", "call_1_3", "call_1_2", "call_1_4", "call_2", "call_3"]
    tool = messages[1:7]
    assert [m.tool_call_id for m in tool] == ids  # each answered once, in call order
    assert [m.content for m in tool] == ["a", "b", "c", "d", "e", "f"]
    sent = model.requests[1].messages
    assert [c.id for c in sent[1].tool_calls] == [m.tool_call_id for m in sent[2:8]] == ids
    assert sorted(s for _, s in seen) == ["a", "b", "c", "d", "e", "f"]


async def test_unique_ids_are_left_alone() -> None:
    kernel = make_kernel()
    reply = tool_calls(("t.echo", {"s": "a"}, "x1"), ("t.echo", {"s": "b"}, "x2"))
    model = ScriptedChatModel([reply, "done"])
    kernel.services.add_service("test", model)
    result = await kernel.chat("go", service="test")
    assert result.messages[0].tool_calls == reply.tool_calls
    assert [m.tool_call_id for m in result.messages[1:3]] == ["x1", "x2"]


async def test_a_repeated_id_with_a_repeated_call_still_counts_as_a_repeat() -> None:
    kernel = make_kernel()
    call = '{"s": "same"}'
    same = ScriptedReply(tool_calls=[ToolCall("c", "t-echo", call) for _ in range(3)])
    model = ScriptedChatModel([same, "done"])
    kernel.services.add_service("test", model)
    result = await kernel.chat("go", service="test", policy={"max_repeats": 2})
    contents = [m.content for m in result.messages if m.role == "tool"]
    assert contents[:2] == ["same", "same"] and contents[2].startswith("error: you repeated yourself")


# --- error texts --------------------------------------------------------------------------

STRIPPED = {
    "/home/alice/.config/app/secrets.toml": "<path>",
    "/home/me/My Documents/a.txt": "<path>",
    "'/home/me/My Documents/My File.txt'": "'<path>'",
    "C:\\Users\\bob\\My Documents\\key.txt": "<path>",
    "\\\\fileserver\\share\\x": "<path>",
    "plugins/x/y.py": "<path>",
    "conf/app.yaml": "<path>",
    "./local/run": "<path>",
    "../up/x": "<path>",
    "~/.ssh/id_rsa": "<path>",
    "/etc": "<path>",
    "secret_config.py": "<path>",
    "'settings.toml'": "'<path>'",
    "backup.tar.gz": "<path>",
    ".env": "<path>",
    ".pgpass": "<path>",
    "10.0.0.5:5432": "<address>",
    "127.0.0.1": "<address>",
    "db.internal:5432": "<address>",
    "localhost:6379": "<address>",
    "[::1]:8080": "<address>",
    "[2001:db8::1]": "<address>",
    "::1": "<address>",
    "fe80::1%eth0": "<address>",
    "2001:0db8:0000:0000:0000:ff00:0042:8329": "<address>",
    "postgresql://admin:pw@db.internal:5432/app": "<url>",
    "https://internal.example/v1/chat?key=1": "<url>",
}
KEPT = ["and/or", "application/json", "HTTP/1.1", "1/2", "km/h", "calc.add", "json.JSONDecodeError",
        "asyncio.Lock", "self.lock", "math.log", "kernel.chat.tools", "at 12:30:45", "2024-01-02T10:30:45Z",
        "version 3.11", "a / b", "v1.2.3", "e.g. this"]


@pytest.mark.parametrize("text", list(STRIPPED))
def test_short_error_strips_paths_urls_and_addresses(text: str) -> None:
    sent = short_error(f"cannot use {text}, try again")
    assert sent == f"error: cannot use {STRIPPED[text]}, try again"


@pytest.mark.parametrize("text", KEPT)
def test_short_error_keeps_what_is_not_a_path(text: str) -> None:
    assert short_error(f"bad {text} here") == f"error: bad {text} here"


def test_short_error_keeps_the_function_name_even_when_it_looks_like_a_file() -> None:
    text = "report.csv failed: OSError: cannot write out.csv in /srv/reports on 10.1.2.3"
    expected = "error: report.csv failed: OSError: cannot write <path> in <path> on <address>"
    assert short_error(text, keep=("report.csv",)) == expected


def test_short_error_is_fast_on_long_adversarial_text() -> None:
    import time

    start = time.perf_counter()
    for text in ("a/" * 50_000, "=" * 100_000, "/a b" * 30_000, "1.2.3." * 20_000, "a:" * 50_000, "x " * 50_000):
        assert len(short_error(text)) <= len("error: ") + 400
    assert time.perf_counter() - start < 2


async def test_an_error_the_model_gets_from_a_function_has_no_path_or_address() -> None:
    @kernel_function
    def connect() -> str:
        """Fails."""
        raise ConnectionError("could not reach db.internal:5432 (10.0.0.5) with /etc/app/My Config/db.toml")

    kernel = make_kernel()
    kernel.add_plugin([connect], name="db")
    model = ScriptedChatModel([tool_calls(("db.connect", {})), "done"])
    kernel.services.add_service("test", model)
    result = await kernel.chat("go", service="test")
    sent = model.requests[1].messages[-1].content
    assert sent == result.messages[1].content
    assert sent == "error: db.connect failed: ConnectionError: could not reach <address> (<address>) with <path>"


def test_request_messages_used_in_tests_are_plain() -> None:
    """The helper above rejects what a connector would reject (guards the guard)."""
    with pytest.raises(UnicodeEncodeError):
        encodable([ChatMessage.user("\ud800")])
    assert isinstance(ChatRequest([ChatMessage.user("x")]), ChatRequest)
