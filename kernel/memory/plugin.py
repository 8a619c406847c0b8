"""The `memory` plugin: `recall` formats search hits with numbered source references, for
templates and tool calls: `{{ memory.recall(question, collection="docs") }}`."""

from __future__ import annotations

from typing import Annotated

from ..functions import kernel_function
from ..kernel import Kernel  # a runtime name: the injected parameter's type hint
from .semantic import DEFAULT_COLLECTION, SemanticMemory, format_hits


class MemoryPlugin:
    """The `memory` plugin: recall from vector memory through the kernel's services.

    `embedding` and `store` name services (default: the kernel's default embedding and
    memory services).
    """

    def __init__(self, embedding: str | None = None, store: str | None = None) -> None:
        self.embedding_service, self.store_service = embedding, store

    def memory(self, kernel: Kernel) -> SemanticMemory:
        return SemanticMemory(
            kernel.services.embedding(self.embedding_service),
            kernel.services.memory(self.store_service),
        )

    @kernel_function(
        description="Recall passages from long-term memory that answer a question, "
        "with numbered source references."
    )
    async def recall(
        self,
        question: Annotated[str, "what to look for"],
        collection: Annotated[str, "memory collection"] = DEFAULT_COLLECTION,
        k: Annotated[int, "number of passages"] = 4,
        *,
        kernel: Kernel,
    ) -> str:
        hits = await self.memory(kernel).search(question, collection, max(1, min(k, 50)))
        return format_hits(hits)

