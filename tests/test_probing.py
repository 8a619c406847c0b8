"""`kernel.services.probe_services`: per configured service, reachable or not, the model
there or not, and the capability profile, without a token spent, and never raising.

Faked at the HTTP boundary (a loopback server; `httpx2.MockTransport` for Anthropic's
`GET /v1/models/{model}`); a closed port for an unreachable server; a server that never
answers for the timeout; the SQLite store for a vector store; a scripted model added in
code for a service with no probe.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kernel import Kernel
from kernel.services import ProbeResult, Reachability, probe_service, probe_services
from kernel.settings import KernelSettings, ServiceSettings
from kernel.testing import ScriptedChatModel
from tests.http_fakes import FakeHTTPServer, Reply, Request

SECRET = "sk-probe-secret-0123456789"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    async def handler(request: Request) -> Reply:
        if request.path.startswith("/hang"):
            await asyncio.sleep(30)
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return Reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        return Reply(body={"object": "list", "data": [{"id": "served-model", "object": "model", "created": 1,
                                                       "owned_by": "me"}]})

    with FakeHTTPServer(handler) as fake:
        yield fake


def by_name(results: list[ProbeResult]) -> dict[str, ProbeResult]:
    return {r.service: r for r in results}


async def test_every_configured_service_is_probed_and_nothing_raises(
    server: FakeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    services: dict[str, Any] = {
        "good": {"provider": "openai", "model": "served-model", "base_url": f"{server.url}/v1", "api_key": SECRET},
        "wrong-model": {"provider": "vllm", "model": "other-model", "base_url": f"{server.url}/v1",
                        "api_key": SECRET},
        "bad-key": {"provider": "openai", "model": "served-model", "base_url": f"{server.url}/v1",
                    "api_key": "sk-wrong-key-000000"},
        "down": {"provider": "ollama", "model": "m", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
        "hangs": {"provider": "lmstudio", "model": "m", "base_url": f"{server.url}/hang/v1", "timeout": 30},
        "no-key": {"provider": "openai", "model": "gpt-4o"},
        "typo": {"provider": "opneai", "model": "gpt-4o"},
        "store": {"provider": "sqlite", "options": {"path": str(tmp_path / "memory.db")}},
    }
    settings = KernelSettings(services={k: ServiceSettings.model_validate(v) for k, v in services.items()},
                              standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings=settings, load_entry_points=False)
    kernel.services.add_service("scripted", ScriptedChatModel(["hi"]))
    results = await probe_services(kernel.services, timeout=1.5)
    await kernel.aclose()
    assert [r.service for r in results] == sorted([*services, "scripted"])
    found = by_name(results)

    good = found["good"]
    assert (good.ok, good.reachable, good.model_available) == (True, True, True)
    assert good.kind == "chat" and good.provider == "openai" and good.model == "served-model"
    assert good.profile is not None and good.profile["structured_output"] == "json_schema"
    assert "max_tokens" in good.profile["settings"] and good.profile["tool_choices"] == [
        "auto", "function", "none", "required"]

    assert (found["wrong-model"].ok, found["wrong-model"].model_available) == (False, False)
    assert "'other-model' is not among them" in found["wrong-model"].detail

    bad = found["bad-key"]
    assert (bad.ok, bad.reachable) == (False, True) and "HTTP 401" in bad.detail

    assert (found["down"].ok, found["down"].reachable) == (False, False)
    assert "could not reach" in found["down"].detail

    hangs = found["hangs"]
    assert (hangs.ok, hangs.reachable) == (False, False) and "no answer within 1.5 s" in hangs.detail
    assert hangs.seconds < 10

    no_key = found["no-key"]
    assert (no_key.ok, no_key.reachable) == (False, None) and "OPENAI_API_KEY" in no_key.detail

    assert found["typo"].ok is False and "opneai" in found["typo"].detail

    store = found["store"]
    assert (store.ok, store.reachable, store.kind) == (True, True, "memory") and "collection" in store.detail

    scripted = found["scripted"]
    assert (scripted.ok, scripted.reachable, scripted.kind) == (True, None, "chat") and "no probe" in scripted.detail

    for result in results:
        assert SECRET not in str(result.to_dict()) and "sk-wrong-key-000000" not in str(result.to_dict())
    # only GET /models went out: nothing that could spend tokens
    assert {(r.method, r.path.rsplit("/", 1)[-1]) for r in server.requests} == {("GET", "models")}


async def test_anthropic_probe_asks_for_the_model() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path.endswith("/claude-known"):
            return httpx2.Response(200, json={"type": "model", "id": "claude-known", "display_name": "Claude",
                                              "created_at": "2025-01-01T00:00:00Z"})
        return httpx2.Response(404, json={"type": "error", "error": {"type": "not_found_error",
                                                                     "message": "model: claude-unknown"}})

    services = {name: ServiceSettings(provider="anthropic", model=name, api_key="sk-ant-probe-0123456789")
                for name in ("claude-known", "claude-unknown")}
    settings = KernelSettings(services=services, standard_plugins=False, plugin_autoload=False)
    kernel = Kernel(settings=settings, load_entry_points=False, http_clients={
        name: httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) for name in services})
    known = await probe_service(kernel.services, "claude-known")
    unknown = await probe_service(kernel.services, "claude-unknown")
    await kernel.aclose()
    assert (known.ok, known.reachable, known.model_available) == (True, True, True)
    assert (unknown.ok, unknown.reachable, unknown.model_available) == (False, True, False)
    assert [(r.method, r.url.path) for r in seen] == [("GET", "/v1/models/claude-known"),
                                                       ("GET", "/v1/models/claude-unknown")]
    assert known.profile is not None and known.profile["structured_output"] == "tool"


async def test_a_third_party_service_with_its_own_probe() -> None:
    class Custom:
        provider, model = "custom", "c1"

        async def probe(self) -> Reachability:
            return Reachability(True, True, "pinged", model_available=True)

    kernel = Kernel(KernelSettings(standard_plugins=False, plugin_autoload=False), load_entry_points=False)
    kernel.services.add_service("custom", Custom())
    [result] = await probe_services(kernel.services)
    assert (result.service, result.provider, result.model, result.ok, result.detail) == (
        "custom", "custom", "c1", True, "pinged")
    assert set(result.to_dict()) == {"service", "kind", "provider", "model", "reachable", "ok", "detail",
                                     "model_available", "profile", "seconds"}
