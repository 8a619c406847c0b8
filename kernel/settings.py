"""Configuration: one pydantic-settings model read from `kernel.toml`, `KERNEL_*`
environment variables (nested with `__`) and `.env`.

Precedence, highest first: arguments given in code, environment variables, `.env`,
`kernel.toml`, defaults. Switching a whole application to another provider is one edit,
for example `KERNEL_DEFAULT_CHAT=openai` or `[services.chat] provider = "anthropic"`.

A relative path written in the configuration file (`plugin_dirs`, `cache_dir`, and the
path options of a service, such as `options.path` of the sqlite store or
`options.model_path`) is resolved against the folder of that file, so a project's
`kernel.toml` means the same files from any working directory. Paths given in the
environment or in code stay relative to the working directory.
"""

from __future__ import annotations

import copy
import os
import threading
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigurationError
from .logging import mask_data, register_secret_env, register_secrets, secrets_in

CONFIG_ENV_VAR = "KERNEL_CONFIG"
DEFAULT_CONFIG_FILE = "kernel.toml"
SHOWN_MASK = "**********"
"""What `masked()` and `kernel config show` print for a secret (as `SecretStr` does)."""


def _masked_repr_args(args: Iterable[tuple[str | None, Any]]) -> Iterator[tuple[str | None, Any]]:
    """A model's repr arguments with secrets masked: plain data through `mask_data`
    (`SecretStr` and nested models show themselves masked)."""
    for name, value in args:
        yield name, mask_data(value, name or "", SHOWN_MASK) if isinstance(value, str | dict | list | tuple) else value


class RetrySettings(BaseModel):
    """Retries owned by the kernel (SDK retries are off)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=20, description="attempts per service, first included")
    initial_backoff: float = Field(0.5, ge=0, description="seconds before the first retry")
    max_backoff: float = Field(20.0, ge=0, description="cap of one backoff, seconds")
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1, description="fraction of random spread on each backoff")
    max_retry_after: float = Field(60.0, ge=0, description="cap on a provider's Retry-After")


class BreakerSettings(BaseModel):
    """A circuit breaker per service: after `failures` consecutive failed calls the service
    is skipped (straight to its fallbacks, or an error) for `cooldown` seconds; then one
    trial call decides whether it closes again."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(5, ge=1, description="consecutive failed calls that open the breaker")
    cooldown: float = Field(30.0, gt=0, description="seconds the open breaker skips the service")


class ServiceSettings(BaseModel):
    """One named service: a chat model, an embedding model or a vector store."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="connector name: openai, anthropic, local, sqlite, ...")
    kind: Literal["chat", "embedding", "memory"] | None = Field(
        None, description="what the service is for (default: the first its provider offers: chat, embedding, memory)"
    )
    model: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(
        None, description="environment variable holding the key (default per provider)"
    )
    base_url: str | None = None
    settings: dict[str, Any] = Field(
        default_factory=dict, description="default execution settings (temperature, max_tokens...)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="connector options (model_path, n_ctx, dsn, path...)"
    )
    timeout: float | None = Field(None, gt=0, description="per-request timeout, seconds")
    deadline: float | None = Field(600.0, gt=0, description="whole call incl. retries and fallbacks, seconds")
    stream_idle_timeout: float | None = Field(
        120.0, gt=0, description="longest wait for the next event of a stream, seconds"
    )
    max_concurrency: int = Field(16, ge=1, description="concurrent requests to this service")
    retry: RetrySettings | None = None
    breaker: BreakerSettings | None = Field(None, description="circuit breaker (default: the kernel's)")
    fallbacks: list[str] = Field(default_factory=list, description="services tried in order")

    def secret(self, default_env: str | None = None) -> str | None:
        """The API key: from the settings, else from `api_key_env` or the provider default
        (registered, so that it is masked wherever it would be logged or shown)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        env = self.api_key_env or default_env
        register_secret_env(env)
        return os.environ.get(env) if env else None

    def secret_values(self) -> list[str]:
        """Every secret this service holds or names: its key (`api_key`, or the value of
        `api_key_env`), the values of auth-looking headers and of other secret-named
        options and settings, and the passwords of DSNs and URLs with userinfo."""
        values = list(secrets_in([self.api_key, self.base_url, self.options, self.settings]))
        if self.api_key_env:
            values += secrets_in(os.environ.get(self.api_key_env), "secret")
        return values

    @model_validator(mode="after")
    def _register_secrets(self) -> Self:
        """A configured service's secrets are known (and masked everywhere) from now on; the
        variable of `api_key_env` is read again each time a `Kernel` is built."""
        register_secret_env(self.api_key_env)
        register_secrets(self.secret_values())
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        return _masked_repr_args(super().__repr_args__())


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = "warning"
    format: Literal["console", "json"] = "console"
    log_values: bool = Field(False, description="log argument and prompt values (opt-in)")


class ToolLoopSettings(BaseModel):
    """Policy of the automatic function-calling loop (overridable per call)."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(8, ge=1)
    max_calls: int = Field(64, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="token budget over the whole loop")
    max_concurrency: int = Field(8, ge=1)
    max_argument_bytes: int = Field(64_000, ge=1)
    tool_timeout: float | None = Field(60.0, gt=0)
    max_repeats: int = Field(2, ge=1, description="same call with same arguments allowed N times")
    max_result_chars: int = Field(
        20_000, ge=100, description="a longer tool result is cut, with a note to the model"
    )
    on_exhausted: Literal["final_call", "error"] = "final_call"


class TelemetrySettings(BaseModel):
    """OpenTelemetry spans and metrics of every run (`kernel.events`, the `[otel]` extra),
    through the application's tracer and meter providers."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="emit spans and metrics (GenAI semantic conventions)")
    capture_content: bool = Field(False, description="put prompts, answers and tool arguments on spans (opt-in)")


class BatchSettings(BaseModel):
    """Where `kernel batch` and `kernel memory ingest` run (`kernel.batch`): `--executor` and
    `--address` override these."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["asyncio", "ray"] = Field("asyncio", description="in this process, or on a Ray cluster")
    address: str | None = Field(
        None, description="Ray cluster: auto, ray://HOST:10001, HOST:6379 (default: $RAY_ADDRESS, else a local one)"
    )


class McpServerSettings(BaseModel):
    """One MCP server, `[mcp.servers.NAME]`: a `command` run over stdio, or a streamable HTTP
    `url`. It becomes the plugin NAME: its tools, prompts and resources kernel functions."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(None, description="executable of a stdio server")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="added to a stdio server's environment")
    cwd: Path | None = None
    url: str | None = Field(None, description="endpoint of a streamable HTTP server")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers; their values are secrets")
    tools: list[str] | None = Field(None, description="the tools offered (default: all)")
    exclude_tools: list[str] = Field(default_factory=list, description="tools never offered")
    needs_approval: bool | list[str] = Field(False, description="every tool (true) or the tools named")
    prompts: bool = Field(True, description="the server's prompts as prompt functions")
    resources: bool = Field(True, description="list_resources / read_resource functions")
    start: Literal["lazy", "eager"] = Field("lazy", description="start when first needed, or with the kernel")
    startup_timeout: float = Field(30.0, gt=0, description="start, handshake and listing, seconds")
    timeout: float = Field(60.0, gt=0, description="deadline of one request, seconds")
    max_restarts: int = Field(5, ge=0, description="restarts after crashes in a row, with backoff")
    max_message_bytes: int = Field(16 * 2**20, ge=4096, description="a larger answer is cut (stdio)")
    service: str | None = Field(None, description="chat service of the server's prompts")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.command is None) == (self.url is None):
            raise ValueError("set either `command` (a stdio server) or `url` (a streamable HTTP server)")
        register_secrets([*self.headers.values(), *secrets_in([self.env, self.url, self.headers])])
        return self


class McpSettings(BaseModel):
    """MCP servers whose tools become kernel functions (`kernel.mcp`)."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, McpServerSettings] = Field(default_factory=dict, description="by plugin name")


_KEY_HASH = r"^(sha256:[0-9a-f]{64}|scrypt:[0-9]+:[0-9]+:[0-9]+:[0-9a-f]{16,128}:[0-9a-f]{32,128})$"
"""An API key's stored form (`kernel serve hash-key` makes one): never the key itself."""


class ServeKeySettings(BaseModel):
    """One API key of `kernel serve`, `[serve.keys.NAME]`: its hash, and what it may reach."""

    model_config = ConfigDict(extra="forbid")

    hash: str = Field(pattern=_KEY_HASH, description="sha256:HEX or scrypt:N:R:P:SALT:HASH (kernel serve hash-key)")
    functions: list[str] | None = Field(None, description="plugin or plugin.function names (default: all served)")
    collections: list[str] | None = Field(None, description="memory collections it may search and fill (default: all)")
    models: list[str] | None = Field(None, description="model ids of /v1/chat/completions (default: all)")
    rate_limit: float | None = Field(None, gt=0, description="requests per minute (default: serve.rate_limit)")


class AgentSettings(BaseModel):
    """A kernel "model" of `/v1/chat/completions`, `[serve.agents.NAME]`: a chat service with
    kernel functions offered as tools (automatic function calling)."""

    model_config = ConfigDict(extra="forbid")

    service: str | None = Field(None, description="chat service (default: default_chat)")
    system: str | None = Field(None, description="system message put before the client's messages")
    functions: list[str] | None = Field(None, description="plugin or plugin.function names (default: all served)")
    settings: dict[str, Any] = Field(default_factory=dict, description="execution settings under the client's")
    description: str = ""


class ServeSettings(BaseModel):
    """`kernel serve`: the kernel over HTTP (`kernel.serve`, the `[serve]` extra)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to bind; off loopback, API keys are required")
    port: int = Field(8080, ge=0, le=65535, description="port (0: any free port)")
    keys: dict[str, ServeKeySettings] = Field(default_factory=dict, description="API keys by name (none: open)")
    functions: list[str] | None = Field(None, description="plugin or plugin.function names served (default: all)")
    allow_needs_approval: bool = Field(False, description="let clients invoke needs_approval functions directly")
    agents: dict[str, AgentSettings] = Field(default_factory=dict, description="kernel models besides `kernel`")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (default: none)")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body, bytes")
    max_upload_bytes: int = Field(16_777_216, ge=1024, description="largest document upload, bytes")
    request_timeout: float = Field(300.0, gt=0, description="deadline of one request or stream, seconds")
    rate_limit: float | None = Field(None, gt=0, description="requests per minute per key (default: unlimited)")
    max_runs: int = Field(200, ge=1, description="runs kept in memory for GET /v1/runs")
    console: bool = Field(True, description="serve the web console at /")


class Price(BaseModel):
    """Price per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float
    output: float
    cached_input: float | None = None


_PATH_NAMES = ("path", "dir", "file", "paths", "dirs", "files", "cassette")
"""A setting named one of these, or ending in `_` and one of these, holds paths."""


def _is_path_name(name: str) -> bool:
    return name in _PATH_NAMES or ("_" in name and name.rsplit("_", 1)[-1] in _PATH_NAMES)


def _resolve_path(value: Any, base: Path) -> Any:
    """A relative path (or a list of them) made absolute against `base`; URLs, `:memory:`
    and non-strings unchanged."""
    if isinstance(value, list):
        return [_resolve_path(item, base) for item in value]
    if not isinstance(value, str) or not value or value.startswith(":") or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_config_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The data of a configuration file with its relative paths resolved against `base`
    (the file's folder): top-level path settings and each service's path options."""
    out = {key: _resolve_path(value, base) if _is_path_name(key) else value for key, value in data.items()}
    services = out.get("services")
    if isinstance(services, dict):
        out["services"] = {
            name: {**svc, "options": {key: _resolve_path(value, base) if _is_path_name(key) else value
                                      for key, value in svc["options"].items()}}
            if isinstance(svc, dict) and isinstance(svc.get("options"), dict) else svc
            for name, svc in services.items()
        }
    return out


_CACHES_LOCK = threading.Lock()


def _keep(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Put `value` in one of the caches below, the oldest entry evicted beyond `size` (under a
    lock: kernels may be built in several threads at once)."""
    with _CACHES_LOCK:
        while len(cache) >= size:
            cache.pop(next(iter(cache)))
        cache[key] = value


_FILE_DATA: dict[tuple[str, bytes], dict[str, Any]] = {}
"""Parsed configuration files, their paths resolved, by (absolute path, content): a file is
read on every load (a few µs) but parsed again only when its bytes change."""
_FILE_DATA_MAX = 16


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML data of `path`, relative paths resolved against its folder; a file that
    cannot be read or parsed is a `ConfigurationError` naming it."""
    absolute = path.absolute()
    try:
        raw = absolute.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    key = (str(absolute), raw)
    data = _FILE_DATA.get(key)
    if data is None:
        try:
            parsed = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{path}: not UTF-8 text: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: invalid TOML: {exc}") from None
        data = resolve_config_paths(parsed, absolute.parent)
        _keep(_FILE_DATA, key, data, _FILE_DATA_MAX)
    return copy.deepcopy(data)  # validation never sees (nor changes) the cached tables


class _ConfigFileSource(TomlConfigSettingsSource):
    """kernel.toml, its relative paths resolved against its own folder."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_config_file(Path(str(file_path)))


_SOURCE_VALUES: dict[tuple[Any, ...], dict[str, Any]] = {}
_SOURCE_VALUES_MAX = 64


class _Remembered(PydanticBaseSettingsSource):
    """pydantic-settings' environment or `.env` source, its values remembered by the
    settings class and the variables the source read: the same variables give the same
    values, so only the first load with them pays for pydantic-settings' analysis of every
    field (most of the cost of a load). The source still reads the environment and `.env`
    on every load; `only_prefixed`: only variables with the settings' prefix matter."""

    def __init__(self, source: EnvSettingsSource, *, only_prefixed: bool) -> None:
        super().__init__(source.settings_cls)
        self.source = source
        self.__name__ = type(source).__name__
        self._only_prefixed = only_prefixed

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        variables = self.source.env_vars
        if self._only_prefixed:
            prefix = self.source.env_prefix.lower()
            items = tuple(sorted(item for item in variables.items() if item[0].startswith(prefix)))
        else:
            items = tuple(sorted(variables.items()))
        key = (type(self.source), self.settings_cls, items)
        values = _SOURCE_VALUES.get(key)
        if values is None:
            values = self.source()
            _keep(_SOURCE_VALUES, key, values, _SOURCE_VALUES_MAX)
        return copy.deepcopy(values)


_BOUND: dict[str, type[KernelSettings]] = {}
"""The settings class bound to each configuration file path (creating a pydantic class is
most of the cost of a load): a class holds only the path, never values, so every load
still reads the environment, `.env` and the file."""
_BOUND_MAX = 64


class KernelSettings(BaseSettings):
    """The whole configuration of a kernel.

    `KernelSettings(**values)` reads `KERNEL_*` variables and `.env` under `values`;
    `KernelSettings.load()` also reads the configuration file (see `load`)."""

    model_config = SettingsConfigDict(
        env_prefix="KERNEL_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        toml_file=None,
    )
    _config_file: ClassVar[Path | None] = None

    services: dict[str, ServiceSettings] = Field(default_factory=dict)
    default_chat: str | None = Field(None, description="service used when a function names none")
    default_embedding: str | None = None
    default_memory: str | None = None
    plugin_dirs: list[Path] = Field(default_factory=list)
    strict_plugins: bool = Field(False, description="fail when a plugin cannot be loaded")
    plugin_autoload: bool = Field(True, description="load third-party plugins from entry points")
    plugin_allowlist: str | None = Field(
        None, description="comma-separated distributions allowed to autoload, each optionally narrowed to "
        "one entry point: 'kernel-echo, acme-tools:shout' (default: all)"
    )
    standard_plugins: bool = Field(True, description="register the standard plugins (time, math...)")
    max_call_depth: int = Field(16, ge=1, description="nesting limit of function calls")
    max_model_calls: int = Field(
        100, ge=1, description="model calls one top-level invocation may make, nested ones included"
    )
    max_function_calls: int = Field(
        1000, ge=1, description="function invocations one top-level invocation may make, nested ones included"
    )
    recall_collections: list[str] = Field(
        default_factory=lambda: ["docs"],
        description="memory collections a model may read through memory.recall (tool calls, templates)",
    )
    # `model_validate({})` rather than the class: type checkers without pydantic's plugin
    # do not know that every field has a default.
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings.model_validate({}))
    breaker: BreakerSettings = Field(default_factory=lambda: BreakerSettings.model_validate({}))
    tool_loop: ToolLoopSettings = Field(default_factory=lambda: ToolLoopSettings.model_validate({}))
    log: LogSettings = Field(default_factory=lambda: LogSettings.model_validate({}))
    mcp: McpSettings = Field(default_factory=lambda: McpSettings.model_validate({}))
    serve: ServeSettings = Field(default_factory=lambda: ServeSettings.model_validate({}))
    prices: dict[str, Price] = Field(default_factory=dict, description="keyed by model id")
    replay: Literal["off", "record", "replay", "auto"] = Field(
        "off", description="model calls recorded to `replay_cassette`, replayed from it (a request it does not hold "
        "is an error), or `auto`: replayed when the cassette exists, else recorded (`kernel.services.replay`)"
    )
    replay_cassette: Path | None = Field(None, description="the cassette file of `replay` (JSON)")
    journal: bool | None = Field(
        None, description="journal every run (kernel.events): unset, on for the `kernel` command and off for an "
        "application; false turns it off"
    )
    journal_content: bool = Field(True, description="journal prompts, arguments and answers (false: metadata only)")
    journal_exclude: list[str] = Field(
        default_factory=list, description="functions (`plugin.function`, `plugin.*`) journaled without content"
    )
    journal_path: Path = Field(Path(".kernel") / "journal.db", description="the SQLite journal")
    journal_dsn: SecretStr | None = Field(None, description="a PostgreSQL DSN: the journal there instead")
    journal_keep_days: float | None = Field(None, gt=0, description="prune runs older than this (default: keep)")
    journal_keep_runs: int | None = Field(None, ge=1, description="keep at most this many runs (default: all)")
    journal_queue_size: int = Field(10_000, ge=10, description="events waiting for the writer; more are dropped")
    telemetry: TelemetrySettings = Field(default_factory=lambda: TelemetrySettings.model_validate({}))
    batch: BatchSettings = Field(default_factory=lambda: BatchSettings.model_validate({}))
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "orchestration-kernel"
    )
    parse_cache: bool = Field(
        True, description="keep parsed prompt files in cache_dir/parse-cache (written only where it can be "
        "created), so an unchanged plugin folder loads without parsing; false: nothing is written"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        sources += [_Remembered(env_settings, only_prefixed=True) if isinstance(env_settings, EnvSettingsSource)
                    else env_settings]
        sources += [_Remembered(dotenv_settings, only_prefixed=False)
                    if isinstance(dotenv_settings, DotEnvSettingsSource) else dotenv_settings]
        if cls._config_file is not None:
            sources.append(_ConfigFileSource(settings_cls, toml_file=cls._config_file))
        return tuple(sources)

    @classmethod
    def bound_to(cls, path: Path) -> type[KernelSettings]:
        """The subclass whose sources include the configuration file `path` (one per path
        and process)."""
        key = f"{cls.__module__}.{cls.__qualname__}:{path}"
        bound = _BOUND.get(key)
        if bound is None or not issubclass(bound, cls):
            bound = type(cls.__name__, (cls,), {"_config_file": path, "__module__": cls.__module__,
                                                "__qualname__": cls.__qualname__})
            _keep(_BOUND, key, bound, _BOUND_MAX)
        return bound

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> KernelSettings:
        """Read the configuration.

        `config_file` (or `$KERNEL_CONFIG`) must exist; without either, `./kernel.toml` is
        read when present. Errors name the file and the setting at fault. Every load reads
        the environment, `.env` and the file again (a file is parsed again only when its
        content changed).
        """
        path: Path | None
        explicit = config_file or os.environ.get(CONFIG_ENV_VAR)
        if explicit:
            path = Path(explicit)
            if not path.is_file():
                raise ConfigurationError(f"config file not found: {path}")
        else:
            path = Path(DEFAULT_CONFIG_FILE) if os.path.isfile(DEFAULT_CONFIG_FILE) else None
        bound = cls if path is None else cls.bound_to(path)
        try:
            settings: KernelSettings = bound(**overrides)
            return settings
        except ValidationError as exc:
            origin = str(path) if path else "environment"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid configuration ({origin}): {problems}") from None

    @property
    def config_file(self) -> Path | None:
        """The configuration file `load()` read (None: none)."""
        return type(self)._config_file

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked: keys, values of
        secret-named fields and headers (`Authorization`, `X-Api-Key`, `Cookie`, `dsn`...),
        passwords in URLs and DSNs, and every secret the kernel knows of."""
        data: dict[str, Any] = mask_data(self.model_dump(mode="json"), mask=SHOWN_MASK)
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        return _masked_repr_args(super().__repr_args__())
