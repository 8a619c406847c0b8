"""`kernel serve`'s guards, in process: API keys (hashed, several, each limited to some
functions, collections and models), rate limits, body sizes, the deadline, cancellation
when the client goes away (a slow model whose cancellation is observed), CORS off unless
configured, cross-origin and rebinding refusals, loopback by default, and no secret or
traceback in any response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kernel import Kernel
from kernel.contents import ChatRequest, ChatResponse, StreamEvent, TextDelta
from kernel.errors import ConfigurationError
from kernel.serve import create_app, generate_key, hash_key, serve, verify_key
from kernel.settings import AgentSettings, KernelSettings, ServeKeySettings
from kernel.testing import tool_call
from tests.test_serve_api import frames, make_kernel


class SlowModel:
    """A model that takes a minute: tells when a call starts and when it is cancelled."""

    provider, model = "slow", "slow-1"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("never answers")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.started.set()
        try:
            for index in range(300):
                yield TextDelta(f"w{index} ")
                await asyncio.sleep(0.2)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


KEY_A, KEY_B, KEY_C = "key-a-" + "x" * 20, "key-b-" + "y" * 20, "key-c-" + "z" * 20


def keyed(**extra: Any) -> dict[str, ServeKeySettings]:
    return {"a": ServeKeySettings(hash=hash_key(KEY_A, "sha256"), **extra),
            "b": ServeKeySettings(hash=hash_key(KEY_B), functions=["math.add", "ops"], collections=["docs"],
                                  models=["kernel"]),
            "c": ServeKeySettings(hash=hash_key(KEY_C, "sha256"), rate_limit=6)}


def client(kernel: Kernel, *, host: str = "127.0.0.1", base: str = "http://127.0.0.1",
           **serve: Any) -> httpx2.AsyncClient:
    settings = kernel.settings.serve.model_copy(update=serve)
    app = create_app(kernel, settings, host=host)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base, timeout=30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- keys -------------------------------------------------------------------------------------


def test_key_hashes_verify_and_never_hold_the_key() -> None:
    key = generate_key()
    assert key.startswith("ksk-") and len(key) > 40 and generate_key() != key
    for scheme in ("scrypt", "sha256"):
        stored = hash_key(key, scheme)  # type: ignore[arg-type]
        assert key not in stored and stored.startswith(scheme + ":")
        assert verify_key(key, stored) and not verify_key(key + "x", stored)
        ServeKeySettings(hash=stored)  # the configuration accepts it
    assert hash_key(key) != hash_key(key)  # salted
    assert not verify_key(key, "md5:abc")
    with pytest.raises(ValueError, match="hash"):
        ServeKeySettings(hash=key)  # a key in clear is refused


async def test_keys_are_required_when_configured(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    async with client(kernel, keys=keyed()) as http:
        anonymous = await http.get("/v1/functions")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.json()["title"] == "missing API key"
        wrong = await http.get("/v1/functions", headers=bearer("key-a-wrong"))
        assert wrong.status_code == 401 and wrong.json()["title"] == "invalid API key"
        assert (await http.get("/v1/functions", headers=bearer(KEY_A))).status_code == 200
        assert (await http.get("/v1/functions", headers={"X-Api-Key": KEY_B})).status_code == 200  # scrypt
        for open_path in ("/", "/healthz", "/openapi.json", "/console/console.js"):
            assert (await http.get(open_path)).status_code == 200, open_path
        document = (await http.get("/openapi.json")).json()
        assert document["security"] == [{"bearer": []}, {"apiKey": []}]
    await kernel.aclose()


async def test_a_key_reaches_only_its_functions_collections_and_models(tmp_path: Path) -> None:
    kernel, model = make_kernel(tmp_path, tool_call("math.add", a=1, b=2), "3")
    async with client(kernel, keys=keyed()) as http:
        limited = bearer(KEY_B)
        names = {f["name"] for f in (await http.get("/v1/functions", headers=limited)).json()["functions"]}
        assert names == {"math.add", "ops.publish", "ops.shout"}
        refused = await http.post("/v1/functions/math.multiply/invoke", headers=limited,
                                  json={"arguments": {"a": 1, "b": 2}})
        assert refused.status_code == 403 and "may not call math.multiply" in refused.json()["detail"]
        assert [m["id"] for m in (await http.get("/v1/models", headers=limited)).json()["data"]] == ["kernel"]
        other_model = await http.post("/v1/chat/completions", headers=limited,
                                      json={"model": "test", "messages": [{"role": "user", "content": "x"}]})
        assert other_model.status_code == 403
        chat = await http.post("/v1/chat/completions", headers=limited,
                               json={"model": "kernel", "messages": [{"role": "user", "content": "1+2"}]})
        assert chat.status_code == 200
        assert {spec.name for spec in model.requests[0].tools} == {"math-add", "ops-publish", "ops-shout"}
        forced = await http.post("/v1/chat/completions", headers=limited, json={
            "model": "kernel", "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "function", "function": {"name": "math-multiply"}}})
        assert forced.status_code == 403
        plan = {"goal": "x", "steps": [{"id": "s1", "function": "math.multiply", "arguments": {"a": 1, "b": 2}}]}
        checked = (await http.post("/v1/plans", headers=limited, json={"plan": plan})).json()
        assert not checked["valid"] and any("math.multiply" in p for p in checked["problems"])
        search = await http.post("/v1/memory/secret/search", headers=limited, json={"query": "x"})
        assert search.status_code == 403 and "collection 'secret'" in search.json()["detail"]
        upload = await http.post("/v1/memory/secret/documents", headers=limited,
                                 json={"documents": [{"text": "x"}]})
        assert upload.status_code == 403

        mine = (await http.post("/v1/functions/math.add/invoke", headers=bearer(KEY_A),
                                json={"arguments": {"a": 1, "b": 2}})).json()["run"]
        assert (await http.get(f"/v1/runs/{mine}", headers=limited)).status_code == 404  # another key's run
        assert (await http.get(f"/v1/runs/{mine}", headers=bearer(KEY_A))).status_code == 200
        assert [r["id"] for r in (await http.get("/v1/runs", headers=limited)).json()["runs"]] != [mine]
    await kernel.aclose()


async def test_an_address_that_guesses_keys_is_slowed_down(tmp_path: Path) -> None:
    from kernel.serve import HttpProblem
    from kernel.serve.auth import FAILED_BURST, FAILED_PER_MINUTE, KeyRing

    kernel, _ = make_kernel(tmp_path)
    settings = kernel.settings.serve.model_copy(update={"keys": keyed()})
    app = create_app(kernel, settings)

    def at(address: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app, client=(address, 5000)),
                                  base_url="http://127.0.0.1")

    async with at("127.0.0.7") as guesser, at("127.0.0.8") as other:
        statuses = [(await guesser.get("/v1/functions", headers=bearer(f"guess-{i}"))).status_code
                    for i in range(FAILED_BURST + 1)]
        assert statuses == [401] * FAILED_BURST + [429]
        blocked = await guesser.get("/v1/functions", headers=bearer(KEY_A))
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1  # not even checked
        assert "guess" not in blocked.text
        assert (await other.get("/v1/functions", headers=bearer(KEY_A))).status_code == 200  # another address
    ring = KeyRing(settings)  # the bucket refills with time
    for i in range(FAILED_BURST):
        with pytest.raises(HttpProblem, match="matches no configured key"):
            await ring.authenticate({"authorization": f"Bearer wrong-{i}"}, "10.0.0.1", now=100.0)
    with pytest.raises(HttpProblem, match=f"gave {FAILED_BURST} wrong keys") as refused:
        await ring.authenticate({"authorization": f"Bearer {KEY_A}"}, "10.0.0.1", now=100.0)
    assert refused.value.status == 429
    later = 100.0 + 60.0 / FAILED_PER_MINUTE
    assert (await ring.authenticate({"authorization": f"Bearer {KEY_A}"}, "10.0.0.1", now=later)).name == "a"
    await kernel.aclose()


async def test_rate_limits_per_key(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    async with client(kernel, keys=keyed()) as http:
        limited = bearer(KEY_C)  # 6 per minute: a burst of 1, then one every 10 s
        assert (await http.get("/v1/functions", headers=limited)).status_code == 200
        over = await http.get("/v1/functions", headers=limited)
        assert over.status_code == 429 and over.json()["title"] == "rate limit exceeded"
        assert 1 <= int(over.headers["retry-after"]) <= 10
        for _ in range(5):  # another key is not affected
            assert (await http.get("/v1/functions", headers=bearer(KEY_A))).status_code == 200
    async with client(kernel, rate_limit=60) as http:  # the default of every key (here: no keys)
        statuses = [(await http.get("/v1/functions")).status_code for _ in range(12)]
        assert statuses[:10] == [200] * 10 and statuses[-1] == 429
    await kernel.aclose()


# --- sizes, deadline, cancellation ------------------------------------------------------------


async def test_request_bodies_are_limited(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    big = json.dumps({"arguments": {"a": 1, "b": 2}, "pad": "x" * 5000}).encode()
    async with client(kernel, max_body_bytes=2048, max_upload_bytes=8192) as http:
        declared = await http.post("/v1/functions/math.add/invoke", content=big,
                                   headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "at most 2048" in declared.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        streamed = await http.post("/v1/functions/math.add/invoke", content=chunks(),
                                   headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error_type"] == "HttpError"
        upload = await http.post("/v1/memory/docs/documents", files=[("files", ("a.md", b"x" * 4000))])
        assert upload.status_code == 200  # uploads have their own, larger limit
        too_big = await http.post("/v1/memory/docs/documents", files=[("files", ("a.md", b"x" * 9000))])
        assert too_big.status_code == 413
    await kernel.aclose()


def _slow_kernel(tmp_path: Path) -> tuple[Kernel, SlowModel]:
    kernel, _ = make_kernel(tmp_path)
    slow = SlowModel()
    kernel.services.add_service("slow", slow)
    return kernel, slow


async def test_a_request_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    kernel, slow = _slow_kernel(tmp_path)
    user = [{"role": "user", "content": "take your time"}]
    async with client(kernel, request_timeout=0.3) as http:
        late = await http.post("/v1/chat/completions", json={"model": "slow", "messages": user})
        assert late.status_code == 504 and late.json()["error_type"] == "DeadlineExceededError"
        assert "serve.request_timeout" in late.json()["detail"]
        assert slow.cancelled.is_set()
        slow.cancelled.clear()
        streamed = await http.post("/v1/chat/completions", json={"model": "slow", "messages": user, "stream": True})
        last = frames(streamed.text)[-1][1]
        assert last["error_type"] == "DeadlineExceededError" and last["status"] == 504
        assert sum(1 for _, d in frames(streamed.text) if isinstance(d, dict) and d.get("choices")) > 0
        await asyncio.wait_for(slow.cancelled.wait(), 2)
    await kernel.aclose()


async def _disconnecting(app: Any, path: str, body: dict[str, Any], when: Any = None,
                         gone: asyncio.Event | None = None) -> list[dict[str, Any]]:
    """Drive the ASGI app as a client that hangs up once `when(messages sent)` is true, or
    once `gone` is set."""
    sent: list[dict[str, Any]] = []
    gone = gone if gone is not None else asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if when is not None and when(sent):
            gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


@pytest.mark.parametrize("model", ["slow", "slowpoke"])
async def test_a_client_that_hangs_up_mid_stream_cancels_the_model_call(tmp_path: Path, model: str) -> None:
    kernel, slow = _slow_kernel(tmp_path)
    settings = kernel.settings.serve.model_copy(update={"agents": {"slowpoke": AgentSettings(service="slow")}})
    app = create_app(kernel, settings)
    started = asyncio.get_running_loop().time()

    def after_two_words(sent: list[dict[str, Any]]) -> bool:
        return b"w1 " in b"".join(m.get("body", b"") for m in sent)

    sent = await _disconnecting(app, "/v1/chat/completions", {"model": model, "stream": True, "messages": [
        {"role": "user", "content": "a long story"}]}, after_two_words)
    await asyncio.wait_for(slow.cancelled.wait(), 2)  # the model call itself was cancelled
    assert asyncio.get_running_loop().time() - started < 5  # not the minute the model would take
    text = b"".join(m.get("body", b"") for m in sent)
    assert b"[DONE]" not in text and b"w5 " not in text
    run = next(iter(app.state.serve.runs.runs.values()))
    assert run.status == "cancelled"
    await kernel.aclose()


async def test_a_client_that_hangs_up_before_the_answer_cancels_the_model_call(tmp_path: Path) -> None:
    kernel, slow = _slow_kernel(tmp_path)
    app = create_app(kernel)
    sent = await _disconnecting(app, "/v1/chat/completions", {"model": "slow", "messages": [
        {"role": "user", "content": "x"}]}, gone=slow.started)  # hangs up once the model works on it
    await asyncio.wait_for(slow.cancelled.wait(), 2)
    assert sent[0]["status"] == 499  # written to nobody
    await kernel.aclose()


async def test_an_idle_stream_is_kept_alive_and_a_busy_one_loses_no_frame() -> None:
    from kernel.serve.sse import EventStream, frame

    async def events() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.35)  # the model thinks: the stream pings meanwhile
        for index in range(500):  # then a burst, faster than it is written
            yield frame({"n": index})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    stream = EventStream(events(), timeout=10, ping=0.1, on_error=lambda exc: b"")
    await stream({"type": "http"}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent).decode()
    assert body.startswith(": ping\n\n") and body.count(": ping") >= 2
    assert [d["n"] for _, d in frames(body)] == list(range(500))
    assert stream.outcome == "done" and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


class Waiter:
    """A plan step that takes a minute: tells when it starts and when it is cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def wait_long(self, seconds: float) -> str:
        """Wait `seconds`."""
        self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "waited"


SLOW_PLAN = {"goal": "add, then wait", "steps": [
    {"id": "s1", "function": "math.add", "arguments": {"a": 1, "b": 2}},
    {"id": "s2", "function": "slow.wait_long", "arguments": {"seconds": 60}}]}


def _waiting_kernel(tmp_path: Path) -> tuple[Kernel, Waiter]:
    from kernel import kernel_function

    kernel, _ = make_kernel(tmp_path)
    waiter = Waiter()

    @kernel_function
    async def wait_long(seconds: float) -> str:
        """Wait `seconds`."""
        return await waiter.wait_long(seconds)

    kernel.add_function(wait_long, plugin="slow")
    return kernel, waiter


async def test_a_client_that_leaves_a_plan_run_stops_the_run(tmp_path: Path) -> None:
    kernel, waiter = _waiting_kernel(tmp_path)
    app = create_app(kernel)
    sent = await _disconnecting(app, "/v1/plans/run", {"plan": SLOW_PLAN}, gone=waiter.started)
    await asyncio.wait_for(waiter.cancelled.wait(), 2)  # the running step was cancelled
    [run] = app.state.serve.runs.runs.values()
    assert run.status == "cancelled" and run.steps == {"s1": "done", "s2": "failed"}
    assert b"run_finished" not in b"".join(m.get("body", b"") for m in sent)
    await kernel.aclose()


async def test_a_plan_run_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    kernel, waiter = _waiting_kernel(tmp_path)
    async with client(kernel, request_timeout=0.5) as http:
        streamed = await http.post("/v1/plans/run", json={"plan": SLOW_PLAN})
        events = frames(streamed.text)
        assert events[-1][0] == "error" and events[-1][1]["error_type"] == "DeadlineExceededError"
        assert waiter.cancelled.is_set()
        run = (await http.get(f"/v1/runs/{events[0][1]['run']}")).json()
        assert run["status"] == "cancelled"
        waiter.cancelled.clear()
        background = (await http.post("/v1/plans/run", json={"plan": SLOW_PLAN, "stream": False})).json()
        await asyncio.wait_for(waiter.cancelled.wait(), 3)  # a run nobody streams has the deadline too
        assert (await http.get(f"/v1/runs/{background['run']}")).json()["status"] == "cancelled"
    await kernel.aclose()


# --- browsers ---------------------------------------------------------------------------------


async def test_cors_is_off_unless_configured_and_cross_origin_posts_are_refused(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    add = {"arguments": {"a": 1, "b": 2}}
    async with client(kernel) as http:
        evil = {"Origin": "https://evil.example"}
        assert "access-control-allow-origin" not in (await http.get("/v1/functions", headers=evil)).headers
        preflight = await http.options("/v1/functions/math.add/invoke", headers={
            **evil, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        forged = await http.post("/v1/functions/math.add/invoke", headers=evil, json=add)
        assert forged.status_code == 403 and "https://evil.example" in forged.json()["detail"]
        upload = await http.post("/v1/memory/docs/documents", headers=evil, files=[("files", ("a.md", b"x"))])
        assert upload.status_code == 403  # a form post, which browsers send without a preflight
        same = await http.post("/v1/functions/math.add/invoke", headers={"Origin": "http://127.0.0.1"}, json=add)
        assert same.status_code == 200  # the console itself
    async with client(kernel, cors_origins=["https://app.example"]) as http:
        allowed = {"Origin": "https://app.example"}
        preflight = await http.options("/v1/functions/math.add/invoke", headers={
            **allowed, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        posted = await http.post("/v1/functions/math.add/invoke", headers=allowed, json=add)
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "https://app.example"
        assert (await http.post("/v1/functions/math.add/invoke", headers={"Origin": "https://evil.example"},
                                json=add)).status_code == 403
    await kernel.aclose()


async def test_on_loopback_only_local_host_names_are_answered(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    async with client(kernel, base="http://rebound.example:8080") as http:
        rebound = await http.get("/v1/functions")
        assert rebound.status_code == 421 and rebound.json()["title"] == "misdirected request"
    async with client(kernel, base="http://localhost:8080") as http:
        assert (await http.get("/v1/functions")).status_code == 200
    async with client(kernel, host="0.0.0.0", base="http://server.example", keys=keyed()) as http:
        assert (await http.get("/v1/functions", headers=bearer(KEY_A))).status_code == 200
    await kernel.aclose()


async def test_serving_off_loopback_needs_keys(tmp_path: Path) -> None:
    kernel, _ = make_kernel(tmp_path)
    with pytest.raises(ConfigurationError, match="needs API keys"):
        await serve(kernel, host="0.0.0.0", port=0)
    assert KernelSettings().serve.host == "127.0.0.1"
    await kernel.aclose()


async def test_no_secret_and_no_traceback_in_responses(tmp_path: Path) -> None:
    from kernel.errors import ProviderConnectionError

    secret = "sk-live-" + "s" * 30
    kernel, _ = make_kernel(tmp_path, ProviderConnectionError(
        f"cannot reach http://user:{secret}@10.1.2.3:8443/v1 with key {secret}", retryable=False))
    kernel.services.add_service("test", kernel.services.get("test"))

    from kernel.logging import register_secret

    register_secret(secret)

    def broken(**_: Any) -> Any:
        raise KeyError(f"internal state {secret} at /srv/app/secret.py")

    app = create_app(kernel)
    app.state.serve.runs.start = broken  # a bug in the server itself
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        bug = await http.post("/v1/functions/math.add/invoke", json={"arguments": {"a": 1, "b": 2}})
    assert bug.status_code == 500 and bug.json()["error_type"] == "InternalError"
    assert "incident" in bug.json()["detail"]
    assert secret not in bug.text and "KeyError" not in bug.text and "Traceback" not in bug.text
    async with client(kernel) as http:
        failed = await http.post("/v1/chat/completions", json={"model": "test", "messages": [
            {"role": "user", "content": "x"}]})
    assert failed.status_code == 502
    assert secret not in failed.text and "10.1.2.3" not in failed.text and "Traceback" not in failed.text
    await kernel.aclose()
