"""One prompt function, three providers, nothing changed but kernel.toml.

* openai: llama-cpp-python's OpenAI-compatible server with Gemma (the `llama_server` fixture);
* anthropic: a loopback HTTP server speaking the Anthropic Messages wire format, reached
  through `base_url` (configuration only: TOML cannot hold a mock transport);
* local: the in-process llama.cpp model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import Kernel, KernelSettings, PromptFunction
from tests.fixtures_llama import LlamaServer
from tests.http_fakes import FakeHTTPServer, Reply, Request

pytestmark = pytest.mark.llama_server

TEMPLATE = "Answer in one short sentence: what is {{ topic }}?"
ANTHROPIC_KEY = "sk-ant-switching-test-key"


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeHTTPServer]:
    async def handler(request: Request) -> Reply:
        if request.method != "POST" or request.path != "/v1/messages":
            return Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": request.path}})
        body = request.json()
        prompt = body["messages"][-1]["content"]
        prompt = prompt if isinstance(prompt, str) else prompt[0]["text"]
        return Reply(
            200,
            {
                "id": "msg_switch",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": f"(fake claude) you asked: {prompt}"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 9},
            },
        )

    with FakeHTTPServer(handler) as server:
        yield server


def config(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text('default_chat = "chat"\n\n[services.chat]\n' + body, encoding="utf-8")
    return path


def served_requests(log: Path) -> int:
    return log.read_text(errors="replace").count("POST /v1/chat/completions")


async def run_prompt(config_file: Path) -> tuple[str, Kernel]:
    kernel = Kernel(KernelSettings.load(config_file), load_entry_points=False)
    kernel.add_function(
        PromptFunction.from_template(TEMPLATE, name="explain", plugin="demo", settings={"max_tokens": 16})
    )
    result = await kernel.invoke("demo.explain", topic="a rainbow")
    return str(result.value), kernel


async def test_same_prompt_function_on_three_providers(
    tmp_path: Path,
    llama_server: LlamaServer,
    anthropic_server: FakeHTTPServer,
    gemma_model_path: Path,
) -> None:
    configs = {
        "openai": config(
            tmp_path,
            "openai",
            f'provider = "openai"\nmodel = "{llama_server.model}"\nbase_url = "{llama_server.base_url}"\n'
            "timeout = 120\n",
        ),
        "anthropic": config(
            tmp_path,
            "anthropic",
            f'provider = "anthropic"\nmodel = "claude-test"\napi_key = "{ANTHROPIC_KEY}"\n'
            f'base_url = "{anthropic_server.url}"\n',
        ),
        "local": config(
            tmp_path,
            "local",
            f'provider = "local"\noptions = {{ model_path = {json.dumps(str(gemma_model_path))} }}\n',
        ),
    }

    # openai -> the llama.cpp server
    before = served_requests(llama_server.log_path)
    text, kernel = await run_prompt(configs["openai"])
    assert text.strip()
    assert kernel.services.chat().provider == "openai"
    assert served_requests(llama_server.log_path) == before + 1
    await kernel.aclose()

    # anthropic -> the Messages-API server
    text, kernel = await run_prompt(configs["anthropic"])
    assert text == "(fake claude) you asked: Answer in one short sentence: what is a rainbow?"
    [request] = anthropic_server.requests
    assert request.json()["model"] == "claude-test" and request.json()["max_tokens"] == 16
    assert ANTHROPIC_KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    await kernel.aclose()

    # local -> in-process llama.cpp; neither server sees a request
    llama_before = served_requests(llama_server.log_path)
    text, kernel = await run_prompt(configs["local"])
    assert text.strip()
    assert kernel.services.chat().provider == "local"
    assert len(anthropic_server.requests) == 1
    assert served_requests(llama_server.log_path) == llama_before
    await kernel.aclose()
