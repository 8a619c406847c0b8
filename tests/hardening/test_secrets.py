"""Secrets never leak: not into logs, `kernel config show`, errors raised to the caller,
nor tool results sent to the model."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from kernel import Kernel, KernelSettings, kernel_function
from kernel import logging as klog
from kernel.cli import main
from kernel.contents import ChatMessage, ChatRequest
from kernel.errors import ProviderError
from kernel.testing import ScriptedChatModel, tool_call

ENV_KEY = "env-secret-7f3a9c1e5b"
TOML_KEY = "toml-secret-2d8e4f6a0c"
HEADER_KEY = "sk-proj-HEADERSECRET1234567890"
URL_PASSWORD = "urlpass-9b7c5d3e"
ALL = (ENV_KEY, TOML_KEY, HEADER_KEY, URL_PASSWORD)


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    config = tmp_path / "kernel.toml"
    config.write_text(
        f'default_chat = "b"\n[services.b]\nprovider = "openai"\nmodel = "m"\napi_key = "{TOML_KEY}"\n'
        f'base_url = "https://user:{URL_PASSWORD}@llm.example/v1"\n'
        f'[services.db]\nprovider = "pgvector"\noptions = {{ dsn = "postgresql://u:{URL_PASSWORD}@h/db" }}\n',
        encoding="utf-8")
    monkeypatch.setenv("KERNEL_SERVICES__X__PROVIDER", "anthropic")
    monkeypatch.setenv("KERNEL_SERVICES__X__API_KEY", ENV_KEY)
    monkeypatch.chdir(tmp_path)
    yield config
    klog.configure()


def assert_clean(text: str) -> None:
    for secret in ALL:
        assert secret not in text


@pytest.mark.parametrize("log_values", [False, True])
async def test_logs_at_debug_never_hold_keys(configured: Path, log_values: bool) -> None:
    settings = KernelSettings.load(configured)
    settings.log.log_values = log_values
    k = Kernel(settings=settings, load_entry_points=False)
    stream = io.StringIO()
    klog.configure(level="debug", stream=stream)
    log = klog.get_logger("audit")
    log.debug("request", headers={"Authorization": f"Bearer {HEADER_KEY}", "x-api-key": ENV_KEY},
              url=f"https://user:{URL_PASSWORD}@host/v1", note=f"using {TOML_KEY}")
    log.warning("failed", error=RuntimeError(f"401 for key {ENV_KEY} / Bearer {HEADER_KEY}"))
    try:
        raise ValueError(f"boom {TOML_KEY}")
    except ValueError:
        log.exception("crash")

    @kernel_function
    def leaky(token: str) -> str:
        raise RuntimeError(f"rejected {token}")

    k.add_function(leaky, plugin="a")
    with contextlib.suppress(Exception):
        await k.invoke("a.leaky", token=ENV_KEY)
    text = stream.getvalue()
    assert "event=request" in text and "event=crash" in text
    assert_clean(text)


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show(configured: Path, as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["config", "show", "--config", str(configured), *(["--json"] if as_json else [])])
    out = capsys.readouterr()
    assert code == 0
    assert "llm.example" in out.out and "services" in out.out
    if as_json:
        json.loads(out.out)
    assert_clean(out.out + out.err)


def mock_client(body: dict[str, object], headers: dict[str, str]) -> httpx2.AsyncClient:
    def handler(request: httpx2.Request) -> httpx2.Response:
        echoed = {**body, "echo": dict(request.headers)}
        return httpx2.Response(401, json=echoed, headers=headers)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


REQUEST = ChatRequest([ChatMessage.user("hi")])


async def test_openai_401_echoing_the_key() -> None:
    from connectors.openai_models import OpenAIChatModel

    body = {"error": {"message": f"Incorrect API key provided: {HEADER_KEY}. Authorization: Bearer {HEADER_KEY}",
                      "type": "invalid_request_error", "code": "invalid_api_key"}}
    model = OpenAIChatModel("gpt-x", api_key=HEADER_KEY, base_url="http://llm.test/v1",
                            http_client=mock_client(body, {"x-echo": HEADER_KEY}))
    with pytest.raises(ProviderError) as info:
        await model.complete(REQUEST)
    assert info.value.status_code == 401  # type: ignore[attr-defined]
    assert_clean(str(info.value) + repr(info.value))


async def test_anthropic_401_echoing_the_key() -> None:
    from connectors.anthropic_models import AnthropicChatModel

    body = {"type": "error", "error": {"type": "authentication_error",
                                       "message": f"invalid x-api-key: {ENV_KEY}"}}
    model = AnthropicChatModel("claude-x", api_key=ENV_KEY, base_url="http://llm.test",
                               http_client=mock_client(body, {}))
    with pytest.raises(ProviderError) as info:
        await model.complete(REQUEST)
    assert_clean(str(info.value) + repr(info.value))


async def test_tool_result_of_a_function_raising_with_the_key(configured: Path) -> None:
    k = Kernel(settings=KernelSettings.load(configured), load_entry_points=False)

    @kernel_function
    def call_api() -> str:
        raise RuntimeError(f"HTTP 401 from https://user:{URL_PASSWORD}@api/v1 with key {TOML_KEY}, "
                           f"Authorization: Bearer {HEADER_KEY}, env {ENV_KEY}")

    k.add_function(call_api, plugin="ext")
    model = ScriptedChatModel([tool_call("ext.call_api"), "sorry"])
    k.services.add_service("test", model)
    result = await k.chat("go", service="test", tools=["ext.call_api"])
    tool_message = model.requests[-1].messages[-1]
    assert tool_message.role == "tool" and tool_message.content.startswith("error:")
    assert "RuntimeError" in tool_message.content
    assert_clean(tool_message.content)
    assert_clean(json.dumps([m.content for m in result.messages]))


async def test_tool_result_of_a_function_returning_the_key(configured: Path) -> None:
    k = Kernel(settings=KernelSettings.load(configured), load_entry_points=False)

    @kernel_function
    def show_config() -> dict[str, str]:
        return {"key": TOML_KEY, "env": ENV_KEY, "auth": f"Bearer {HEADER_KEY}", "status": "ok"}

    k.add_function(show_config, plugin="ext")
    model = ScriptedChatModel([tool_call("ext.show_config"), "done"])
    k.services.add_service("test", model)
    await k.chat("go", service="test", tools=["ext.show_config"])
    tool_message = model.requests[-1].messages[-1]
    assert tool_message.role == "tool" and '"status":"ok"' in tool_message.content
    assert_clean(tool_message.content)
