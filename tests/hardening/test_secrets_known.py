"""Every secret the kernel knows is masked everywhere.

Each kind of secret below is configured as an operator would (a `kernel.toml` in the working
directory, and environment variables), a `Kernel` is built, and the secret, quoted ALONE
(not in a shape such as `Bearer ...` or `user:pass@` that masking would catch anyway), must
not appear in: structlog output, the standard library route of the kernel's loggers,
`kernel config show` (TOML and --json), `KernelSettings.masked()`, `repr()`/`str()` of the
settings and of the service, a tool result sent to the model, the error of a failing native
function sent to the model, and a plugin failure record. No service is ever used: the
kernel must know the secret from its configuration alone.

Every secret value is fresh for each test, so a test never passes because an earlier one
registered the same value.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from kernel import Kernel, KernelSettings, hookimpl, kernel_function
from kernel import logging as klog
from kernel.cli import main
from kernel.testing import ScriptedChatModel, tool_call


@dataclass
class Kind:
    """One kind of secret: the service table configuring it, the environment, the secret
    values to look for, and text that must stay visible in `config show`."""

    service: str
    secrets: list[str]
    env: dict[str, str] = field(default_factory=dict)
    visible: str = "[services.x]"


def _fresh(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def custom_key_env() -> Kind:
    key = _fresh("teamkey")
    return Kind('provider = "openai"\nmodel = "m"\napi_key_env = "MY_TEAM_KEY"\n', [key], {"MY_TEAM_KEY": key},
                visible='api_key_env = "MY_TEAM_KEY"')


def auth_headers() -> Kind:
    values = {name: _fresh(name.lower().replace("-", "")) for name in (
        "Authorization", "X-Api-Key", "api-key", "Proxy-Authorization", "Cookie", "X-Auth-Token",
        "X-Team-Key", "X-Gateway-Token", "X-Vendor-Secret")}
    shown = {**values, "Authorization": f"Bearer {values['Authorization']}",
             "Proxy-Authorization": f"Basic {values['Proxy-Authorization']}",
             "Cookie": f"theme=dark; session={values['Cookie']}"}
    headers = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in shown.items())
    return Kind('provider = "openai"\nmodel = "m"\nbase_url = "http://llm.test/v1"\n'
                f'options = {{ default_headers = {{ {headers}, "X-Request-Source" = "kernel-tests" }} }}\n',
                list(values.values()), visible="kernel-tests")


def dsn_url() -> Kind:
    password = _fresh("dsnurl")
    return Kind(f'provider = "pgvector"\noptions = {{ dsn = "postgresql://app:{password}@db.internal:5432/app" }}\n',
                [password])


def dsn_url_percent_encoded() -> Kind:
    password = _fresh("p@ss/w:rd")  # sent encoded in the URL, quoted decoded in errors
    encoded = password.replace("@", "%40").replace("/", "%2F").replace(":", "%3A")
    return Kind(f'provider = "pgvector"\noptions = {{ dsn = "postgresql://app:{encoded}@db.internal/app" }}\n',
                [password, encoded])


def dsn_key_value() -> Kind:
    password = _fresh("kvdsn")
    return Kind(f'provider = "pgvector"\noptions = {{ dsn = "host=db.internal user=app password={password} '
                'dbname=app" }\n', [password])


def dsn_key_value_quoted() -> Kind:
    password = _fresh("kv dsn quoted")  # libpq: single quotes around a value with spaces
    return Kind(f'provider = "pgvector"\noptions = {{ dsn = "host=db.internal password=\'{password}\' '
                'dbname=app" }\n', [password])


def dsn_env() -> Kind:
    password = _fresh("envdsn")
    return Kind('provider = "pgvector"\n', [password],
                {"KERNEL_POSTGRES_DSN": f"postgresql://app:{password}@db.internal/app"})


def base_url_userinfo() -> Kind:
    password = _fresh("baseurl")
    return Kind(f'provider = "openai"\nmodel = "m"\nbase_url = "https://gw:{password}@llm.example/v1"\n',
                [password], visible="llm.example")


KINDS = {fn.__name__: fn for fn in (custom_key_env, auth_headers, dsn_url, dsn_url_percent_encoded,
                                     dsn_key_value, dsn_key_value_quoted, dsn_env, base_url_userinfo)}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kind]:
    made = KINDS[request.param]()
    (tmp_path / "kernel.toml").write_text(f"[services.x]\n{made.service}", encoding="utf-8")
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    yield made
    klog.configure()  # back to the default the rest of the suite expects


def build() -> Kernel:
    return Kernel(settings=KernelSettings.load(), load_entry_points=False)


def assert_clean(kind: Kind, text: str) -> None:
    for secret in kind.secrets:
        assert secret not in text


def test_structlog_output(kind: Kind) -> None:
    build()
    stream = io.StringIO()
    klog.configure(level="debug", stream=stream)
    log = klog.get_logger("kernel.audit")
    for secret in kind.secrets:
        log.warning("upstream_rejected", detail=f"credential {secret} was rejected", nested={"items": [secret]},
                    error=RuntimeError(f"401: {secret}"))
        try:
            raise ValueError(f"connect failed: {secret}")
        except ValueError:
            log.exception("crash")
    text = stream.getvalue()
    assert "event=upstream_rejected" in text and "event=crash" in text and klog.MASK in text
    assert_clean(kind, text)


def test_stdlib_route(kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    structlog.reset_defaults()  # no structlog configuration: events go to `logging.getLogger(name)`
    build()
    with caplog.at_level(logging.WARNING, logger="kernel.audit"):
        for secret in kind.secrets:
            klog.get_logger("kernel.audit").warning("upstream_rejected", detail=f"credential {secret} was rejected")
    assert caplog.records and "upstream_rejected" in caplog.text
    assert_clean(kind, caplog.text)


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show(kind: Kind, as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    build()
    code = main(["config", "show", *(["--json"] if as_json else [])])
    out = capsys.readouterr()
    assert code == 0
    if as_json:
        data = json.loads(out.out)
        assert "x" in data["services"]
    else:
        assert kind.visible in out.out
    assert_clean(kind, out.out + out.err)


def test_masked_repr_and_str(kind: Kind) -> None:
    k = build()
    settings = k.settings
    service = settings.services["x"]
    shown = [json.dumps(settings.masked()), repr(settings), str(settings), repr(service), str(service)]
    assert all("provider" in text for text in shown)
    assert_clean(kind, "\n".join(shown))


async def test_tool_result_sent_to_the_model(kind: Kind) -> None:
    k = build()

    @kernel_function
    def read_config() -> dict[str, object]:
        return {"status": "ok", "values": kind.secrets, "note": " ".join(kind.secrets)}

    k.add_function(read_config, plugin="ext")
    model = ScriptedChatModel([tool_call("ext.read_config"), "done"])
    k.services.add_service("test", model)
    await k.chat("go", service="test", tools=["ext.read_config"])
    tool_message = model.last_request.messages[-1]
    assert tool_message.role == "tool" and '"status":"ok"' in tool_message.content
    assert_clean(kind, tool_message.content)


async def test_error_of_a_failing_function_sent_to_the_model(kind: Kind) -> None:
    k = build()

    @kernel_function
    def call_api() -> str:
        raise RuntimeError("upstream said: " + " / ".join(kind.secrets))

    k.add_function(call_api, plugin="ext")
    model = ScriptedChatModel([tool_call("ext.call_api"), "sorry"])
    k.services.add_service("test", model)
    await k.chat("go", service="test", tools=["ext.call_api"])
    tool_message = model.last_request.messages[-1]
    assert tool_message.role == "tool" and tool_message.content.startswith("error:")
    assert "RuntimeError" in tool_message.content
    assert_clean(kind, tool_message.content)


def test_plugin_failure_record(kind: Kind, caplog: pytest.LogCaptureFixture) -> None:
    structlog.reset_defaults()
    leaked = " ".join(kind.secrets)

    class Broken:
        @hookimpl
        def register_plugins(self, register: object) -> None:
            raise RuntimeError(f"could not authenticate with {leaked}")

    with caplog.at_level(logging.WARNING, logger="kernel.plugins"):
        k = Kernel(settings=KernelSettings.load(), load_entry_points=False, plugins=[Broken()])
    assert len(k.plugin_failures) == 1 and "RuntimeError" in k.plugin_failures[0].error
    assert "plugin_failed" in caplog.text
    assert_clean(kind, str(k.plugin_failures[0]) + caplog.text)


def test_api_key_env_is_read_when_the_kernel_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable named by `api_key_env` is read again by `Kernel()`: a value set after
    the settings were loaded is masked before the service is ever used."""
    (tmp_path / "kernel.toml").write_text('[services.x]\nprovider = "openai"\nmodel = "m"\n'
                                          'api_key_env = "MY_LATE_KEY"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = KernelSettings.load()
    key = _fresh("latekey")
    monkeypatch.setenv("MY_LATE_KEY", key)
    Kernel(settings=settings, load_entry_points=False)
    assert key not in klog.mask_text(f"the key {key} was rejected")


def test_settings_built_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same guarantee for settings given in code rather than read from files."""
    from kernel.settings import ServiceSettings

    key, header, password = _fresh("codekey"), _fresh("codehdr"), _fresh("codepass")
    monkeypatch.setenv("CODE_KEY", key)
    settings = KernelSettings(services={
        "x": ServiceSettings(provider="openai", model="m", api_key_env="CODE_KEY",
                             options={"default_headers": {"X-Api-Key": header}}),
        "db": ServiceSettings(provider="postgres", options={"dsn": f"postgresql://u:{password}@h/db"}),
    })
    Kernel(settings=settings, load_entry_points=False)
    shown = "\n".join([json.dumps(settings.masked()), repr(settings), str(settings.services["db"]),
                       klog.mask_text(f"{key} {header} {password}")])
    for secret in (key, header, password):
        assert secret not in shown



def test_provider_key_variables_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default key variable of any `Provider` subclass (a third party's too), and
    `ANTHROPIC_AUTH_TOKEN` (which the Anthropic SDK sends by itself), are masked as soon as
    a kernel is built."""
    from kernel.services import Provider

    acme, token = _fresh("acmekey"), _fresh("authtoken")
    monkeypatch.setenv("ACME_API_KEY", acme)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", token)

    class AcmeProvider(Provider):
        name = "acme"
        key_env = "ACME_API_KEY"

    Kernel(settings=KernelSettings(), load_entry_points=False)
    assert klog.mask_text(f"{acme} {token}") == f"{klog.MASK} {klog.MASK}"


def test_a_store_built_in_code_registers_its_dsn_password() -> None:
    from connectors.pgvector_store import PgVectorStore
    from kernel.errors import ExtraNotInstalledError

    password = _fresh("storepass")
    with contextlib.suppress(ExtraNotInstalledError):  # no connection is made here
        PgVectorStore(f"postgresql://app:{password}@db.internal/app")
    assert password not in klog.mask_text(f"FATAL: password {password} rejected")
