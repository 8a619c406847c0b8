"""The service registry: defaults per kind, services by (kind, name), no cross-kind mix-ups."""

from __future__ import annotations

from kernel import Kernel, KernelSettings, ServiceSettings
from kernel.testing import ScriptedChatModel


def make(**services: ServiceSettings) -> Kernel:
    return Kernel(settings=KernelSettings(services=services), load_entry_points=False)


def test_a_chat_provider_is_not_the_default_embedding_service() -> None:
    k = make(openai=ServiceSettings(provider="openai", model="gpt-4o-mini", api_key="sk-test-123456"))
    assert k.services.default_name("chat") == "openai"
    assert k.services.default_name("embedding") == "local-embedding"
    assert k.services.default_name("memory") == "sqlite"


def test_kind_makes_a_multi_kind_provider_an_embedding_service() -> None:
    k = make(
        chat=ServiceSettings(provider="openai", model="gpt-4o-mini", api_key="sk-test-123456"),
        vectors=ServiceSettings(provider="openai", kind="embedding", model="text-embedding-3-small",
                                api_key="sk-test-123456"),
    )
    assert k.services.default_name("chat") == "chat"
    assert k.services.default_name("embedding") == "vectors"
    embedder = k.services.embedding()
    assert type(embedder.inner).__name__ == "OpenAIEmbeddingModel" and embedder.dimension == 1536
    assert type(k.services.chat().inner).__name__ == "OpenAIChatModel"


def test_one_name_two_kinds_are_two_instances() -> None:
    k = make(openai=ServiceSettings(provider="openai", model="gpt-4o-mini", api_key="sk-test-123456",
                                    options={"dimension": 8}))
    chat = k.services.get("openai", "chat")
    embedding = k.services.get("openai", "embedding")
    assert chat is not embedding
    assert hasattr(embedding, "embed") and not hasattr(chat, "embed")


def test_services_added_in_code_are_per_kind() -> None:
    k = make()
    model = ScriptedChatModel(["hi"])
    k.services.add_service("test", model)
    assert k.services.default_name("chat") == "test"
    assert k.services.default_name("embedding") == "local-embedding"
    assert "test" in k.services.names()
