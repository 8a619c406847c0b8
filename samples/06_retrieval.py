"""06 - Retrieval-augmented generation with citations.

The documents in samples/data/docs are split into chunks, embedded (local MiniLM by
default) and stored (the embedded SQLite store by default). Re-running skips chunks that
are already stored. The prompt calls `memory.recall`, which inserts the best passages
as numbered sources; the model answers citing them as [1], [2], and we print which file
and section each number refers to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kernel import Kernel, PromptFunction
from kernel.memory import SemanticMemory, reference

DOCS = Path(__file__).parent / "data" / "docs"
COLLECTION = "sample_docs"
QUESTION = "How do I switch the chat model to another provider?"

ANSWER = """\
<message role="system">Answer the question in two sentences, using only the numbered sources below.
Cite the sources you use like [1].

{{ memory.recall(question, collection=collection, k=3) }}</message>
<message role="user">{{ question }}</message>"""


async def main(kernel: Kernel | None = None, question: str = QUESTION) -> Any:
    kernel = kernel or Kernel()
    if COLLECTION not in kernel.settings.recall_collections:  # memory.recall reads only granted collections
        kernel.settings.recall_collections.append(COLLECTION)
    memory = SemanticMemory(kernel.services.embedding(), kernel.services.memory())
    report = await memory.ingest(DOCS, collection=COLLECTION)
    print(f"ingested {report.files} files: {report.added} chunks embedded, {report.skipped} already stored")

    kernel.add_function(PromptFunction.from_template(
        ANSWER, name="answer", plugin="rag", inputs={"collection": COLLECTION}, settings={"max_tokens": 120},
    ))
    answer = await kernel.invoke("rag.answer", question=question)
    hits = await memory.search(question, COLLECTION, k=3)  # the same passages recall inserted
    sources = [reference(hit) for hit in hits]

    print("Q:", question)
    print("A:", str(answer.value).strip())
    for number, source in enumerate(sources, 1):
        print(f"  [{number}] {source}")
    return {"answer": answer.value, "sources": sources}


if __name__ == "__main__":
    asyncio.run(main())
