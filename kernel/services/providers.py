"""Providers: how a connector reaches its API. A provider owns the key lookup (the
configured key, the configured variable, or the provider's default variable, with an error
that names the variable to set), the SDK client (built once, its own retries off: the
kernel's resilience layer owns retries) and an injected `http_client`.

Models (chat, embeddings) take a provider and translate requests; the provider's
`profile()` states what a model honours (see `profiles`). This is pydantic-ai's split of
provider, model and profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import MissingSecretError
from ..logging import register_secret, register_secret_env, register_secrets

if TYPE_CHECKING:
    from ..settings import ServiceSettings
    from .profiles import ModelProfile

__all__ = ["Provider"]


class Provider:
    """The connection to one provider for one configured service."""

    name: ClassVar[str]
    """The provider's name in configuration (`provider = "openai"`)."""
    key_env: ClassVar[str | None] = None
    """The environment variable read for the key when the service names none (its value is
    masked wherever it would be logged or shown, from the moment the provider class exists)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_secret_env(cls.key_env)

    def __init__(self, service: str, settings: ServiceSettings, *, http_client: Any = None) -> None:
        self.service = service
        self.settings = settings
        # The key, auth headers, DSN and URL passwords: known even if the settings were
        # changed after they were read.
        register_secrets(settings.secret_values())
        register_secret_env(settings.api_key_env or self.key_env)
        self.http_client = http_client
        self._client: Any = None

    @property
    def where(self) -> str:
        """How error messages name this service: `service 'x' (provider openai)`."""
        return f"service {self.service!r} (provider {self.name})"

    def api_key(self, *, required: bool = True) -> str | None:
        """The key: `api_key` in the configuration, else the variable named by `api_key_env`,
        else `key_env`. Missing and required: `MissingSecretError` naming the variable."""
        key = self.settings.secret(self.key_env)
        if key:
            register_secret(key)  # masked wherever it would be logged or shown
            return key
        if required:
            env = self.settings.api_key_env or self.key_env or "its API key variable"
            raise MissingSecretError(
                f"{self.where} needs an API key: set the environment variable {env}, or `api_key` "
                f"(or `api_key_env`) in [services.{self.service}] of kernel.toml"
            )
        return None

    @property
    def client(self) -> Any:
        """The SDK client, built on first use."""
        if self._client is None:
            self._client = self.create_client()
        return self._client

    def create_client(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} builds no client")

    def profile(self, model: str) -> ModelProfile:
        raise NotImplementedError(f"{type(self).__name__} has no model profile")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            closer = getattr(client, "close", None)
            if closer is not None:
                await closer()
