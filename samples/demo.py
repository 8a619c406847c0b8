"""The main job (`make demo`): retrieval with citations and a small plan, all local.

On the default configuration (no key, no network): the local Gemma 3 270M model through
llama.cpp, MiniLM embeddings, the embedded SQLite store in ./.kernel/. It

1. ingests samples/data/docs into vector memory (re-runs skip unchanged chunks);
2. answers a question with the retrieved passages as numbered sources, and lists them;
3. runs a small plan (plain data: recall -> summarize -> count words, plus today's date
   in parallel) as a graph, and prints every step's output.

The tiny model's answers are weak; the wiring is the point. Point kernel.toml at a
bigger model (see samples/07_switching_provider.py) for better ones.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python samples/demo.py` from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel import Kernel, PromptFunction
from kernel.memory import SemanticMemory, reference
from kernel.planning import Plan, execute_plan

DOCS = Path(__file__).parent / "data" / "docs"
COLLECTION = "demo"
QUESTION = "Which vector stores does the kernel support?"

ANSWER = """\
<message role="system">Answer the question in one or two sentences using only these sources. Cite them like [1].

{{ memory.recall(question, collection="demo", k=3) }}</message>
<message role="user">{{ question }}</message>"""

PLAN = {
    "goal": "Brief me on how the kernel handles secrets",
    "inputs": {"topic": "How are API keys and secrets handled?"},
    "steps": [
        {"id": "notes", "function": "memory.recall",
         "arguments": {"question": {"$input": "topic"}, "collection": COLLECTION, "k": 1}},
        {"id": "brief", "function": "writer.summarize", "arguments": {"text": {"$step": "notes"}, "max_words": 25}},
        {"id": "length", "function": "text.word_count", "arguments": {"text": {"$step": "brief"}}},
        {"id": "date", "function": "time.today", "arguments": {}},
    ],
    "output": "brief",
}


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)), flush=True)


async def main(kernel: Kernel | None = None) -> Any:
    started = time.perf_counter()
    kernel = kernel or Kernel()
    if COLLECTION not in kernel.settings.recall_collections:  # memory.recall reads only granted collections
        kernel.settings.recall_collections.append(COLLECTION)
    section("services")
    for kind in ("chat", "embedding", "memory"):
        print(f"{kind:>9}: {kernel.services.default_name(kind)}")

    section("1. ingest samples/data/docs")
    memory = SemanticMemory(kernel.services.embedding(), kernel.services.memory())
    report = await memory.ingest(DOCS, collection=COLLECTION)
    print(f"{report.files} files, {report.chunks} chunks: {report.added} embedded, {report.skipped} already stored")

    section("2. question with retrieved context")
    kernel.add_function(PromptFunction.from_template(ANSWER, name="answer", plugin="demo",
                                                     settings={"max_tokens": 60, "temperature": 0.0}))
    hits = await memory.search(QUESTION, COLLECTION, k=3)
    answer = await kernel.invoke("demo.answer", question=QUESTION)
    print("Q:", QUESTION)
    print("A:", str(answer.value).strip() or "(no answer)")
    print("sources:")
    for number, hit in enumerate(hits, 1):
        print(f"  [{number}] {reference(hit)}  (score {hit.score:.2f})")

    section("3. a small plan")
    plan = Plan.from_dict(PLAN)
    print(plan.to_json())
    run = await execute_plan(kernel, plan)
    for step in plan.steps:
        shown = " ".join(str(run.outputs[step.id]).split())
        print(f"  {step.id:>7} {step.function:<17} -> {shown[:110]}{'...' if len(shown) > 110 else ''}")

    section("done")
    usage = answer.usage + run.usage
    print(f"{usage.requests} model calls, {usage.input_tokens} tokens in, {usage.output_tokens} out, "
          f"{time.perf_counter() - started:.1f} s")
    await kernel.aclose()
    return {
        "ingested": report,
        "answer": answer.value,
        "sources": [reference(hit) for hit in hits],
        "plan": run.outputs,
    }


if __name__ == "__main__":
    asyncio.run(main())
