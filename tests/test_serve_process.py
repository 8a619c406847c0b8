"""`kernel serve` as users run it: the console script in its own process (uvicorn on a
loopback port), the chat model a third-party connector installed as a distribution with
an entry point (`tests/data/serve/rules_model.py`). The official `openai` SDK as the
client (models, chat, streaming, tools both ways), plain HTTP for the kernel's API (a plan
run whose approval is answered by a second client while the first streams), 200
concurrent streaming clients (no error, flat memory), and clients that hang up mid-stream
or before the answer (the model call is cancelled, as the model's log shows)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.serve_support import Served, serving, upstream, write_project, write_upstream_project

pytestmark = pytest.mark.slow

ADD = {"type": "function", "function": {"name": "get_weather", "description": "the weather of a city",
                                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                       "required": ["city"]}}}
GATED_PLAN = {"goal": "publish the sum", "steps": [
    {"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}},
    {"id": "s2", "function": "ops.publish", "arguments": {"text": {"$step": "s1"}}}], "output": "s2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_project(tmp_path_factory.mktemp("serve-project"))
    with serving(root) as served:
        yield served


def test_the_server_says_where_it_listens(server: Served) -> None:
    facts = server.facts
    assert str(facts["url"]).startswith("http://127.0.0.1:")
    assert facts["openai_base_url"] == f"{server.url}/v1" and facts["console"] == f"{server.url}/"
    assert facts["keys"] == 0 and "kernel" in facts["models"]  # type: ignore[operator]


def test_the_openai_sdk_against_kernel_serve(server: Served) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)
    assert {m.id for m in client.models.list().data} >= {"kernel", "rules"}

    plain = client.chat.completions.create(model="rules", messages=[{"role": "user", "content": "hello"}])
    assert plain.choices[0].message.content == "You said: hello"
    assert plain.usage is not None and plain.usage.total_tokens > 0

    stream = client.chat.completions.create(model="rules", messages=[{"role": "user", "content": "one two three"}],
                                            stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == "You said: one two three" and len(pieces) == 5 and usage is not None

    # the client's tools pass through a service model; the call comes back to the client
    asked = client.chat.completions.create(model="rules", tools=[ADD],  # type: ignore[list-item]
                                           messages=[{"role": "user", "content": 'get_weather {"city": "Oslo"}'}])
    call = asked.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert asked.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    answered = client.chat.completions.create(model="rules", tools=[ADD], messages=[  # type: ignore[list-item]
        {"role": "user", "content": 'get_weather {"city": "Oslo"}'}, asked.choices[0].message,  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "snow"}])
    assert answered.choices[0].message.content == "The result is snow."
    rome = [{"role": "user", "content": 'get_weather {"city": "Rome"}'}]
    streamed_call = client.chat.completions.create(model="rules", tools=[ADD], stream=True,  # type: ignore[list-item]
                                                   messages=rome)  # type: ignore[arg-type]
    arguments, name = "", None
    for chunk in streamed_call:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = delta.function.name or name if delta.function else name
            arguments += delta.function.arguments or "" if delta.function else ""
    assert name == "get_weather" and json.loads(arguments) == {"city": "Rome"}

    # the kernel model: the kernel's functions, called by the kernel
    done = client.chat.completions.create(model="kernel", messages=[
        {"role": "user", "content": 'use math-add with {"a": 2, "b": 3}'}])
    assert done.choices[0].message.content == "The result is 5.0."
    kernel = (done.model_extra or {})["kernel"]
    assert kernel["tool_calls"][0]["function"] == "math.add" and kernel["tool_calls"][0]["content"] == "5.0"
    stream = client.chat.completions.create(model="kernel", stream=True, messages=[
        {"role": "user", "content": 'use text-upper with {"text": "shout"}'}])
    text, events = "", []
    for chunk in stream:
        extra = (chunk.model_extra or {}).get("kernel")
        if extra:
            events.append((extra["event"], extra.get("function")))
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert events == [("tool_call", "text.upper"), ("tool_result", "text.upper"), ("done", None)]
    assert text == "The result is SHOUT."
    forced = client.chat.completions.create(model="kernel", messages=[{"role": "user", "content": '{"text": "x"}'}],
                                            tool_choice={"type": "function", "function": {"name": "ops-shout"}})
    assert forced.choices[0].message.content == "The result is X!."


def test_the_readme_example_runs_against_kernel_serve(server: Served, tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    from tests.serve_support import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [code] = re.findall(r"<!-- readme-test: serve -->\s*```python\n(.*?)```", readme, re.DOTALL)
    assert '"http://127.0.0.1:8080/v1"' in code
    code = code.replace("http://127.0.0.1:8080", server.url)  # the port of this test's server
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "The result is 5.0.\nYou said: Say hello"  # the tool call, then the stream


def test_the_kernel_api_over_plain_http(server: Served) -> None:
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        functions = {f["name"] for f in http.get("/v1/functions").json()["functions"]}
        assert {"math.add", "ops.publish", "text.upper"} <= functions
        assert http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 2, "b": 3}}).json()["value"] == 5.0
        bad = http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 2}})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        assert http.get("/openapi.json").json()["openapi"] == "3.1.0"

        seen: list[tuple[str, Any]] = []
        with http.stream("POST", "/v1/plans/run", json={"plan": GATED_PLAN}) as response:
            run_id = response.headers["x-kernel-run"]
            event = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    seen.append((str(event), data))
                    if event == "approval":  # a second client answers while this one streams
                        with httpx2.Client(base_url=server.url) as other:
                            assert other.post(f"/v1/runs/{run_id}/approve",
                                              json={"approval": data["approval"], "approved": True}).status_code == 200
        names = [e for e, _ in seen]
        assert names[:3] == ["run", "approval", "approval_decided"] and names[-1] == "run_finished"
        assert [(d["step"], d["status"]) for e, d in seen if e == "step"] == [
            ("s1", "running"), ("s1", "done"), ("s2", "running"), ("s2", "done")]
        assert seen[-1][1]["result"] == "published: 5.0"
        run = http.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "done" and run["steps"] == {"s1": "done", "s2": "done"}


async def _one_stream(http: httpx2.AsyncClient, index: int) -> str:
    text = ""
    async with http.stream("POST", "/v1/chat/completions", json={
            "model": "rules", "stream": True, "messages": [{"role": "user", "content": f"client {index} here"}]}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                if chunk["choices"]:
                    text += chunk["choices"][0]["delta"].get("content") or ""
            elif line == "data: [DONE]":
                return text
    raise AssertionError("the stream ended without [DONE]")


def test_200_concurrent_streaming_clients_with_flat_memory(server: Served) -> None:
    async def round_of(clients: int) -> float:
        limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx2.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
            start = time.perf_counter()
            texts = await asyncio.gather(*(_one_stream(http, i) for i in range(clients)))
            elapsed = time.perf_counter() - start
        assert texts == [f"You said: client {i} here" for i in range(clients)]  # each got its own answer
        return elapsed

    rss = []
    times = []
    for _ in range(4):
        times.append(asyncio.run(round_of(200)))
        time.sleep(0.5)
        rss.append(server.rss_kib())
    growth = (rss[-1] - rss[1]) / 1024
    print(f"\n200 concurrent streams: {', '.join(f'{t:.2f} s' for t in times)}; "
          f"server RSS after each round: {', '.join(f'{r / 1024:.1f} MiB' for r in rss)}; growth {growth:+.1f} MiB")
    assert growth < 8, f"server memory grew {growth:.1f} MiB between rounds 2 and 4: {rss}"


def _log(server: Served, name: str) -> str:
    path = server.log_dir / name
    return path.read_text() if path.exists() else ""


def _wait_for_log(server: Served, name: str, marker: str, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while marker not in _log(server, name):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{marker!r} never in {name}: {_log(server, name)!r}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("model", ["rules", "kernel"])
def test_a_client_that_disconnects_mid_stream_cancels_the_model_call(server: Served, model: str) -> None:
    marker = f"slow story {model} {time.monotonic()}"
    with httpx2.Client(base_url=server.url, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions",
            json={"model": model, "stream": True, "messages": [{"role": "user", "content": marker}]}) as response:
        received = ""
        for text in response.iter_text():
            received += text
            if "w2 " in received:
                break  # hang up: the rest of the 300 words (a minute) is never read
    assert marker in _log(server, "started")
    waited = _wait_for_log(server, "cancelled", marker)
    print(f"\n{model}: the model call was cancelled {waited * 1000:.0f} ms after the client hung up")
    assert "w10 " not in received


def test_a_client_that_gives_up_before_the_answer_cancels_the_model_call(server: Served) -> None:
    marker = f"slow answer {time.monotonic()}"
    done = threading.Event()

    def call() -> None:
        with httpx2.Client(base_url=server.url, timeout=1.0) as http, pytest.raises(httpx2.ReadTimeout):
            http.post("/v1/chat/completions", json={"model": "rules", "messages": [
                {"role": "user", "content": marker}]})
        done.set()

    call()
    assert done.is_set() and marker in _log(server, "started")
    _wait_for_log(server, "cancelled", marker)


@pytest.fixture(scope="module")
def over_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    """`kernel serve` whose chat model is the OpenAI connector talking to an OpenAI-compatible
    server in a third process (tests/data/serve/upstream.py), which logs its callers' hang-ups."""
    root = tmp_path_factory.mktemp("serve-upstream")
    log_dir = root / "upstream-log"
    with upstream(log_dir) as base_url, serving(write_upstream_project(root / "project", base_url)) as served:
        yield served, log_dir


def _upstream_log(log_dir: Path, name: str) -> str:
    path = log_dir / name
    return path.read_text() if path.exists() else ""


def _wait_upstream(log_dir: Path, name: str, marker: str, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while marker not in _upstream_log(log_dir, name):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{marker!r} never in the upstream's {name}: {_upstream_log(log_dir, name)!r}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_chat_through_kernel_serve_to_a_real_upstream(over_http: tuple[Served, Path]) -> None:
    from openai import OpenAI

    served, _ = over_http
    client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    plain = client.chat.completions.create(model="upstream", messages=[{"role": "user", "content": "hello there"}])
    assert plain.choices[0].message.content == "You said: hello there" and plain.usage.total_tokens == 2 + 4  # type: ignore[union-attr]
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="kernel", stream=True, messages=[{"role": "user", "content": "one two"}])
        if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "You said: one two" and len(pieces) == 4


@pytest.mark.parametrize("model", ["upstream", "kernel"])
def test_a_hang_up_mid_stream_closes_the_upstream_model_call(over_http: tuple[Served, Path], model: str) -> None:
    served, log_dir = over_http
    marker = f"slow story {model} {time.monotonic()}"
    with httpx2.Client(base_url=served.url, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions",
            json={"model": model, "stream": True, "messages": [{"role": "user", "content": marker}]}) as response:
        received = ""
        for text in response.iter_text():
            received += text
            if "w2 " in received:
                break  # hang up: the upstream would stream for another minute
    assert marker in _upstream_log(log_dir, "started")
    waited = _wait_upstream(log_dir, "disconnected", marker)
    print(f"\n{model}: the upstream saw its caller hang up {waited * 1000:.0f} ms after the client did")
    assert "w10 " not in received


def test_a_client_giving_up_before_the_answer_closes_the_upstream_call(over_http: tuple[Served, Path]) -> None:
    served, log_dir = over_http
    marker = f"slow answer {time.monotonic()}"
    with httpx2.Client(base_url=served.url, timeout=1.0) as http, pytest.raises(httpx2.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "upstream", "messages": [{"role": "user", "content": marker}]})
    assert marker in _upstream_log(log_dir, "started")
    _wait_upstream(log_dir, "disconnected", marker)


@pytest.mark.llama_server
def test_kernel_serve_in_front_of_a_real_model_server(tmp_path: Path, llama_server: Any) -> None:
    """The upstream is llama-cpp-python's OpenAI-compatible server with Gemma 3 270M: plain,
    streamed, the client's tool with a named tool_choice, and the kernel model calling a
    kernel function, all through the official SDK."""
    from openai import OpenAI

    root = write_upstream_project(tmp_path, llama_server.base_url, llama_server.model)
    with serving(root) as served:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)
        user = [{"role": "user", "content": "Name a colour."}]
        plain = client.chat.completions.create(model="upstream", messages=user, max_tokens=8)  # type: ignore[arg-type]
        assert plain.choices[0].message.content and plain.usage is not None and plain.usage.completion_tokens > 0
        pieces, usage = [], None
        for chunk in client.chat.completions.create(model="upstream", messages=user, max_tokens=8,  # type: ignore[arg-type]
                                                    stream=True, stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        # a usage chunk as asked (llama.cpp's server counts no tokens in a stream: zeros, as it reported them)
        assert len(pieces) >= 2 and usage is not None
        asked = client.chat.completions.create(
            model="upstream", tools=[ADD], tool_choice={"type": "function", "function": {"name": "get_weather"}},  # type: ignore[list-item]
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}], max_tokens=60, temperature=0)
        [call] = asked.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
        done = client.chat.completions.create(
            model="kernel", tool_choice={"type": "function", "function": {"name": "math-add"}}, max_tokens=120,
            temperature=0,
            messages=[{"role": "user", "content": "Add 2 and 3."}])
        [made] = (done.model_extra or {})["kernel"]["tool_calls"]
        assert made["function"] == "math.add" and made["is_error"] is False
        assert float(made["content"]) == sum(json.loads(made["arguments"]).values())  # the kernel ran it


def test_serving_with_keys_in_a_real_process(tmp_path: Path) -> None:
    from kernel.serve import hash_key

    key = "ksk-test-" + "k" * 30
    root = write_project(tmp_path, f'[serve.keys.ci]\nhash = "{hash_key(key)}"\nfunctions = ["math"]\n')
    from openai import AuthenticationError, OpenAI

    with serving(root) as served:
        assert served.facts["keys"] == 1
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{served.url}/v1", api_key="wrong-key-123456", max_retries=0).models.list()
        client = OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(model="kernel", messages=[
            {"role": "user", "content": 'use math-multiply with {"a": 6, "b": 7}'}])
        assert answer.choices[0].message.content == "The result is 42.0."
        with httpx2.Client(base_url=served.url, headers={"Authorization": f"Bearer {key}"}) as http:
            names = {f["plugin"] for f in http.get("/v1/functions").json()["functions"]}
            assert names == {"math"}


def test_the_serve_commands_refuse_what_is_unsafe_and_make_key_hashes(tmp_path: Path) -> None:
    import subprocess

    from kernel.settings import KernelSettings
    from tests.serve_support import CONSOLE_SCRIPT, project_env

    root = write_project(tmp_path)
    env = project_env(root)

    def kernel(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=root, env=env, input=stdin, capture_output=True,
                              text=True, timeout=60)

    exposed = kernel("serve", "--host", "0.0.0.0", "--port", "0")
    assert exposed.returncode == 3 and "needs API keys" in exposed.stderr and "[serve.keys" in exposed.stderr
    assert "Traceback" not in exposed.stderr
    assert kernel("serve", "--port", "70000").returncode == 2

    made = kernel("serve", "hash-key", "--name", "app", stdin="my-chosen-key-1234\n")
    assert made.returncode == 0 and "my-chosen-key-1234" not in made.stdout
    assert made.stdout.startswith("[serve.keys.app]\nhash = \"scrypt:")
    (root / "keys.toml").write_text(made.stdout, encoding="utf-8")
    from kernel.serve import verify_key

    stored = KernelSettings.load(root / "keys.toml").serve.keys["app"].hash  # the configuration takes it as is
    assert verify_key("my-chosen-key-1234", stored) and not verify_key("my-chosen-key-1235", stored)
    generated = json.loads(kernel("serve", "hash-key", "--generate", "--scheme", "sha256", "--json").stdout)
    assert generated["key"].startswith("ksk-") and verify_key(generated["key"], generated["hash"])
    assert kernel("serve", "hash-key", stdin="").returncode == 2

