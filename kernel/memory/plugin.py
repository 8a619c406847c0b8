"""The `memory` plugin: `recall` formats search hits with numbered source references, for
templates and tool calls: `{{ memory.recall(question, collection="docs") }}`.

`recall` is the model-facing way into memory, so it reads only the collections the
application granted in `KernelSettings.recall_collections` (default `["docs"]`): the
kernel checks the collection, whoever passed it (a tool call's arguments, a template,
a plan step, a direct invoke), before the store or the embedding service is touched.
Applications read any collection through `SemanticMemory` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from ..errors import ArgumentError
from ..functions import kernel_function
from ..kernel import Kernel  # a runtime name: the injected parameter's type hint
from .types import DEFAULT_COLLECTION

if TYPE_CHECKING:
    from .semantic import SemanticMemory


class MemoryPlugin:
    """The `memory` plugin: recall from vector memory through the kernel's services.

    `embedding` and `store` name services (default: the kernel's default embedding and
    memory services).
    """

    def __init__(self, embedding: str | None = None, store: str | None = None) -> None:
        self.embedding_service, self.store_service = embedding, store

    def memory(self, kernel: Kernel) -> SemanticMemory:
        from .semantic import SemanticMemory  # when memory is first used, not with every kernel

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
        granted = kernel.settings.recall_collections
        if collection not in granted:
            raise ArgumentError(
                "memory.recall", "collection",
                f"collection {collection[:80]!r} is not granted to recall; recall_collections grants "
                f"{', '.join(map(repr, granted)) or 'none'} (the application grants more in the setting "
                "recall_collections, KERNEL_RECALL_COLLECTIONS)",
            )
        from .semantic import format_hits

        hits = await self.memory(kernel).search(question, collection, max(1, min(k, 50)))
        return format_hits(hits)

