"""Checked by mypy (tests/test_typing.py), never run: the public API returns real types,
and a misspelled option is a type error (each `type: ignore` below must be needed:
`warn_unused_ignores` fails the check otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import assert_type

from kernel import (
    ChatMessage,
    ChatModel,
    ChatResult,
    EmbeddingModel,
    FunctionResult,
    Kernel,
    KernelStreamEvent,
    Plan,
    PlanRun,
    VectorStore,
)
from kernel.memory import SearchHit, SemanticMemory
from kernel.services import ResilientChatModel, ResilientEmbeddingModel


async def check(kernel: Kernel) -> None:
    assert_type(await kernel.invoke("math.add", a=1, b=2), FunctionResult)
    assert_type(kernel.run("math.add", a=1, b=2), FunctionResult)
    assert_type(await kernel.chat("hi"), ChatResult)
    assert_type(await kernel.chat([ChatMessage.user("hi")], tools=["math.add"], policy={"max_rounds": 2}), ChatResult)
    assert_type(kernel.chat_stream("hi"), AsyncIterator[KernelStreamEvent])
    assert_type(kernel.invoke_stream("writer.summarize", text="x"), AsyncIterator[KernelStreamEvent])
    assert_type(await kernel.plan("goal", max_steps=3), Plan)
    assert_type(await (await kernel.plan("goal")).run(kernel), PlanRun)
    assert_type(await kernel.render("writer.summarize", text="x"), list[ChatMessage])

    assert_type(kernel.services.get("x", "chat"), ChatModel)
    assert_type(kernel.services.get("x", "embedding"), EmbeddingModel)
    assert_type(kernel.services.get("x", "memory"), VectorStore)
    assert_type(kernel.services.chat(), ResilientChatModel)
    assert_type(kernel.services.embedding(), ResilientEmbeddingModel)
    assert_type(kernel.services.memory(), VectorStore)

    memory = SemanticMemory(kernel.services.embedding(), kernel.services.memory())
    assert_type(await memory.search("q"), list[SearchHit])

    await kernel.chat("hi", toolz=["math.add"])  # type: ignore[call-arg]
    await kernel.chat("hi", max_rounds=2)  # type: ignore[call-arg]
    await kernel.plan("goal", max_step=3)  # type: ignore[call-arg]
    kernel.services.get("x", "vectors")  # type: ignore[call-overload]
