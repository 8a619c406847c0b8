"""structlog: one event per invocation, no argument values by default, secrets redacted
everywhere (fields, nested data, exception texts)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, kernel_function
from kernel import logging as klog
from kernel.errors import InvocationError
from kernel.settings import ServiceSettings

SECRET_IN_SETTINGS = "cfg-secret-value-42"


@pytest.fixture
def captured() -> Iterator[tuple[Kernel, io.StringIO]]:
    settings = KernelSettings(services={"main": ServiceSettings(provider="openai", api_key=SECRET_IN_SETTINGS)})
    k = Kernel(settings=settings, load_entry_points=False, builtins=False)  # (re)configures logging
    stream = io.StringIO()
    klog.configure(level="debug", stream=stream)
    yield k, stream
    klog.configure()  # back to the default: warnings to stderr


def lines(stream: io.StringIO, event: str) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if f"event={event}" in line]


async def test_one_info_event_per_invocation_without_values(captured: tuple[Kernel, io.StringIO]) -> None:
    k, stream = captured

    @kernel_function
    def greet(name: str) -> str:
        return f"hello {name}"

    k.add_plugin([greet], name="demo")
    await k.invoke("demo.greet", name="PRIVATE-VALUE")
    events = lines(stream, "function_invoked")
    assert len(events) == 1
    line = events[0]
    assert "level=info" in line and "function=demo.greet" in line and "outcome=ok" in line
    assert "duration_ms=" in line
    assert "PRIVATE-VALUE" not in stream.getvalue()
    assert "hello" not in stream.getvalue()


async def test_failure_event_names_error_not_values(captured: tuple[Kernel, io.StringIO]) -> None:
    k, stream = captured

    @kernel_function
    def fail(token: str) -> str:
        raise RuntimeError("bad thing")

    k.add_plugin([fail], name="demo")
    with pytest.raises(InvocationError):
        await k.invoke("demo.fail", token="ARG-VALUE")
    events = lines(stream, "function_invoked")
    assert len(events) == 1 and "outcome=error" in events[0] and "error=InvocationError" in events[0]
    assert "ARG-VALUE" not in stream.getvalue()


async def test_no_info_events_at_warning_level() -> None:
    k = Kernel(settings=KernelSettings(), load_entry_points=False, builtins=False)
    stream = io.StringIO()
    klog.configure(level="warning", stream=stream)
    try:
        @kernel_function
        def ping() -> str:
            return "pong"

        k.add_plugin([ping], name="demo")
        await k.invoke("demo.ping")
        assert stream.getvalue() == ""
    finally:
        klog.configure()


SHAPES = [
    "sk-proj-abcdefghijklmnop1234",
    "sk-ant-api03-abcdefghijklmnop",
    "Bearer abcdefghijklmnop.qrstu",
    "postgresql://admin:hunter2secret@db.example:5432/app",
]


@pytest.mark.parametrize("text", SHAPES)
def test_secret_shapes_masked(captured: tuple[Kernel, io.StringIO], text: str) -> None:
    _, stream = captured
    log = klog.get_logger("test")
    log.warning("provider_said", detail=f"request failed with {text} in it", nested={"items": [text]})
    out = stream.getvalue()
    secret = text.split("://")[1].split("@")[0].split(":")[1] if "://" in text else text.split()[-1]
    assert secret not in out
    assert klog.MASK in out


def test_secret_from_settings_masked_in_fields_and_exceptions(captured: tuple[Kernel, io.StringIO]) -> None:
    _, stream = captured
    log = klog.get_logger("test")
    log.warning("call_failed", message=f"the key {SECRET_IN_SETTINGS} was rejected")
    log.warning("headers", headers={"Authorization": "anything", "x-api-key": "anything-else"}, api_key="plain")
    try:
        raise ValueError(f"server echoed {SECRET_IN_SETTINGS} and sk-abcdefghijklmnopqrst")
    except ValueError:
        log.exception("boom")
    out = stream.getvalue()
    assert SECRET_IN_SETTINGS not in out
    assert "sk-abcdefghijklmnopqrst" not in out
    assert "anything-else" not in out and "api_key=plain" not in out
    assert "ValueError" in out  # the exception is still logged, just redacted


def test_mask_text_directly() -> None:
    klog.register_secret("my-registered-secret")
    assert klog.mask_text("x my-registered-secret y") == f"x {klog.MASK} y"
    assert klog.mask_text("nothing secret here") == "nothing secret here"


async def test_log_values_opt_in_logs_arguments_and_prompts_with_secrets_masked() -> None:
    from kernel import PromptFunction
    from kernel.testing import ScriptedChatModel

    settings = KernelSettings(
        services={"main": ServiceSettings(provider="openai", api_key=SECRET_IN_SETTINGS)},
        log={"log_values": True},
    )
    k = Kernel(settings=settings, load_entry_points=False, builtins=False)
    stream = io.StringIO()
    klog.configure(level="debug", stream=stream)
    try:
        k.services.add_service("test", ScriptedChatModel(["fine"]))
        k.add_function(PromptFunction.from_template("Tell {{ who }}", name="tell", plugin="demo"))
        await k.invoke("demo.tell", who=f"VISIBLE-VALUE {SECRET_IN_SETTINGS}")
    finally:
        klog.configure()
    output = stream.getvalue()
    assert "VISIBLE-VALUE" in "".join(lines(stream, "function_invoked"))
    assert "VISIBLE-VALUE" in "".join(lines(stream, "prompt_rendered"))
    assert SECRET_IN_SETTINGS not in output


@pytest.mark.parametrize(
    ("key", "secret"),
    [("api_key", True), ("OPENAI_API_KEY", True), ("x-api-key", True), ("Authorization", True),
     ("access_token", True), ("db_password", True), ("dsn", True), ("max_tokens", False),
     ("input_tokens", False), ("api_key_env", False), ("model", False)],
)
def test_secret_keys_are_whole_words(key: str, secret: bool) -> None:
    assert klog.is_secret_key(key) is secret


LIBRARY_PROBE = r'''
import io, json, logging, sys
import structlog
from kernel import Kernel, KernelSettings, hookimpl

class Broken:
    @hookimpl
    def register_plugins(self, register):
        raise RuntimeError("token sk-proj-abcdefghijklmnop1234 leaked")

mode = sys.argv[1]
stream = io.StringIO()
if mode == "stdlib":
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(name)s|%(levelname)s|%(message)s")
elif mode == "structlog":
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(stream))
handlers_before = list(logging.getLogger().handlers)
config_before = structlog.is_configured()
kernel = Kernel(KernelSettings(), load_entry_points=False, plugins=[Broken()])
print(json.dumps({
    "structlog_configured": structlog.is_configured(), "configured_before": config_before,
    "root_handlers_unchanged": logging.getLogger().handlers == handlers_before,
    "failures": len(kernel.plugin_failures), "output": stream.getvalue(),
}))
'''


def _probe(mode: str, tmp_path: Path) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", LIBRARY_PROBE, mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["stderr"] = done.stderr
    return result


def test_building_a_kernel_configures_no_logging(tmp_path: Path) -> None:
    """An application's own stdlib logging gets the kernel's warnings (redacted) under the
    `kernel.*` loggers; the kernel configures neither structlog nor the root logger."""
    result = _probe("stdlib", tmp_path)
    assert result["structlog_configured"] is False and result["root_handlers_unchanged"] is True
    assert result["failures"] == 1
    assert "kernel.plugins|WARNING|" in result["output"] and "plugin_failed" in result["output"]
    assert "sk-proj-abcdefghijklmnop1234" not in result["output"] and klog.MASK in result["output"]


def test_an_application_structlog_configuration_is_kept(tmp_path: Path) -> None:
    result = _probe("structlog", tmp_path)
    assert result["configured_before"] is True and result["structlog_configured"] is True
    event = json.loads(result["output"].splitlines()[0])  # the application's own JSON renderer
    assert event["event"] == "plugin_failed" and "sk-proj-abcdefghijklmnop1234" not in event["error"]


def test_without_any_configuration_warnings_reach_stderr_only(tmp_path: Path) -> None:
    result = _probe("none", tmp_path)
    assert result["output"] == "" and result["structlog_configured"] is False
    assert "plugin_failed" in result["stderr"] and "sk-proj-abcdefghijklmnop1234" not in result["stderr"]


# --- every secret the kernel knows (see also tests/hardening/test_secrets_known.py) ----------


@pytest.mark.parametrize(
    ("key", "secret"),
    [("Cookie", True), ("Set-Cookie", True), ("Proxy-Authorization", True), ("X-Auth-Token", True),
     ("api-key", True), ("X-Team-Key", True), ("X-Vendor-Secret", True), ("X-Gateway-Auth", True),
     ("X-Request-Id", False), ("Content-Type", False), ("primary_key", False), ("cache_key", False)],
)
def test_auth_looking_header_names_are_secret(key: str, secret: bool) -> None:
    assert klog.is_secret_key(key) is secret


@pytest.mark.parametrize(
    ("text", "masked"),
    [("host=db user=app password=kvpass-0a1b dbname=app", "host=db user=app password=*** dbname=app"),
     ("host=db password='quoted pass 42' dbname=app", "host=db password=*** dbname=app"),
     ("KERNEL_DB_PASSWORD=envpass-9z8y", "KERNEL_DB_PASSWORD=***"),
     ("postgresql://h/db?sslmode=require&password=qpass-77&x=1", "postgresql://h/db?sslmode=require&password=***&x=1"),
     ("postgresql://:emptyuser-pass@h/db", "postgresql://:***@h/db"),
     ("https://gw:gwpass-5c6d@llm.example/v1", "https://gw:***@llm.example/v1"),
     ("https://llm.example:8443/v1?a=b", "https://llm.example:8443/v1?a=b")],
)
def test_password_shapes_masked_and_the_rest_kept(text: str, masked: str) -> None:
    assert klog.mask_text(text) == masked


def test_short_and_common_values_are_not_registered() -> None:
    """A floor and well-known placeholders: masking them would mangle ordinary text; in a
    URL or `password=` they are still masked by shape."""
    for value in ("abc12", "postgres", "password", "not-needed"):
        klog.register_secret(value)
    assert klog.mask_text("abc12 uses postgres") == "abc12 uses postgres"
    assert klog.mask_text("postgresql://postgres:postgres@db/app") == "postgresql://postgres:***@db/app"


def test_a_secret_holding_another_is_masked_whole() -> None:
    klog.register_secret("nested-secret-1")
    klog.register_secret("nested-secret-1-and-its-tail")
    assert klog.mask_text("x nested-secret-1-and-its-tail y") == f"x {klog.MASK} y"


def test_forms_of_a_secret_are_masked() -> None:
    """Percent-decoded (a DSN password as an error quotes it) and JSON-escaped (a tool result)."""
    klog.register_secret("p%40ss%22word-31")
    assert klog.mask_text('said p@ss"word-31') == f"said {klog.MASK}"
    assert klog.mask_text(json.dumps({"v": 'p@ss"word-31'})) == f'{{"v": "{klog.MASK}"}}'


def test_secret_values_found_in_configuration_data() -> None:
    data = {"dsn": "postgresql://u:dsnpass-1@h/db", "nodsn": {"dsn": "postgresql://localhost/db"},
            "default_headers": {"Authorization": "Bearer hdrtok-22",
                                "Cookie": "a=1; theme=dark-mode; sid=cookie-session-33",
                                "Accept": "application/json"},
            "base_url": "https://u:urlpass-44@h", "token": "plain-token-55", "model": "gpt-x"}
    found = set(klog.secrets_in(data))
    assert found >= {"dsnpass-1", "Bearer hdrtok-22", "hdrtok-22", "cookie-session-33", "urlpass-44", "plain-token-55"}
    assert not found & {"dark-mode", "postgresql://u:dsnpass-1@h/db", "postgresql://localhost/db",
                        "application/json", "gpt-x"}


def test_objects_rendered_as_text_are_masked(captured: tuple[Kernel, io.StringIO]) -> None:
    _, stream = captured

    class Holder:
        def __str__(self) -> str:
            return f"Holder({SECRET_IN_SETTINGS})"

        __repr__ = __str__

    nested: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": {"f": SECRET_IN_SETTINGS}}}}}}
    klog.get_logger("test").warning("objects", holder=Holder(), deep=nested)
    out = stream.getvalue()
    assert "event=objects" in out and SECRET_IN_SETTINGS not in out


def test_settings_repr_masks_headers_dsn_and_url_passwords() -> None:
    service = ServiceSettings(
        provider="openai", base_url="https://gw:repr-url-pass@h/v1",
        options={"default_headers": {"X-Api-Key": "repr-header-key", "Accept": "text/plain"},
                 "dsn": "host=h password=repr-dsn-pass"})
    settings = KernelSettings(services={"x": service})
    shown = "\n".join([repr(settings), str(settings), repr(service), str(service), json.dumps(settings.masked())])
    for secret in ("repr-url-pass", "repr-header-key", "repr-dsn-pass"):
        assert secret not in shown
    assert "text/plain" in shown and "https://gw:***@h/v1" in shown
