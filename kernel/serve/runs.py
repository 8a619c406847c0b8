"""The runs of a server: what each request started, its events and approvals, in memory.

Every invocation, chat completion and plan run is a `Run` with an id (sent back in the
`X-Kernel-Run` header): its status, its events (the progress a client streamed, kept to
the last `MAX_EVENTS`), its result, usage and cost, and the approvals it waits for. The
registry keeps at most `max_runs`; past that the oldest finished runs are forgotten (a
server answering a million requests holds the same memory as after the first few hundred).
A run is visible to the key that started it (everyone's, when the server has no keys).

An approval is a future the run awaits: `Run.ask(...)` publishes an `approval` event and
waits until `POST /v1/runs/{id}/approve` answers it (or the run ends).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..contents import Usage
from .problems import HttpProblem

__all__ = ["MAX_EVENTS", "Approval", "Run", "RunRegistry", "usage_dict"]

MAX_EVENTS = 500
RunStatus = Literal["running", "waiting", "done", "failed", "cancelled"]
FINISHED = frozenset({"done", "failed", "cancelled"})


def usage_dict(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "cached_tokens": usage.cached_tokens, "requests": usage.requests}


@dataclass(slots=True)
class Approval:
    id: str
    info: dict[str, Any]
    future: asyncio.Future[bool]


@dataclass(slots=True)
class Run:
    id: str
    kind: Literal["invoke", "chat", "plan"]
    owner: str
    title: str
    created: float = field(default_factory=time.time)
    status: RunStatus = "running"
    finished: float | None = None
    plan: dict[str, Any] | None = None
    steps: dict[str, str] = field(default_factory=dict)
    result: Any = None
    usage: dict[str, int] | None = None
    cost: float | None = None
    error: dict[str, Any] | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    approvals: dict[str, Approval] = field(default_factory=dict)
    listeners: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    # -- events ----------------------------------------------------------------------------

    def emit(self, event: str, /, **data: Any) -> dict[str, Any]:
        item = {**data, "seq": next(self._seq), "event": event, "at": round(time.time(), 3)}
        self.events.append(item)
        for queue in self.listeners:
            queue.put_nowait(item)
        return item

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """The events from now on, until the run finishes."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.listeners.append(queue)
        try:
            if self.status in FINISHED:
                return
            while (item := await queue.get()) is not None:
                yield item
        finally:
            self.listeners.remove(queue)

    def finish(self, status: RunStatus, *, result: Any = None, usage: Usage | None = None,
               cost: float | None = None, error: dict[str, Any] | None = None) -> None:
        if self.status in FINISHED:
            return
        self.status, self.finished = status, time.time()
        self.result, self.cost, self.error = result, cost, error
        if usage is not None:
            self.usage = usage_dict(usage)
        for approval in self.approvals.values():
            if not approval.future.done():
                approval.future.set_result(False)
        self.emit("run_finished", status=status, result=result, usage=self.usage, cost=cost, error=error)
        for queue in self.listeners:
            queue.put_nowait(None)

    # -- approvals ---------------------------------------------------------------------------

    async def ask(self, **info: Any) -> bool:
        """Publish an approval request and wait for its answer (False when the run ends)."""
        approval = Approval(secrets.token_hex(4), info, asyncio.get_running_loop().create_future())
        self.approvals[approval.id] = approval
        previous, self.status = self.status, "waiting"
        self.emit("approval", approval=approval.id, **info)
        try:
            verdict = await approval.future
        finally:
            if self.status == "waiting" and not any(not a.future.done() for a in self.approvals.values()):
                self.status = previous
        self.emit("approval_decided", approval=approval.id, approved=verdict)
        return verdict

    def answer(self, approval_id: str | None, approved: bool) -> str:
        pending = [a for a in self.approvals.values() if not a.future.done()]
        if approval_id is None:
            if len(pending) != 1:
                raise HttpProblem(409, "no single pending approval",
                                  f"run {self.id} waits for {len(pending)} approvals; name one with 'approval'",
                                  pending=[a.id for a in pending])
            chosen = pending[0]
        else:
            found = self.approvals.get(approval_id)
            if found is None or found.future.done():
                raise HttpProblem(409, "no such pending approval",
                                  f"run {self.id} does not wait for approval {approval_id!r}",
                                  pending=[a.id for a in pending])
            chosen = found
        chosen.future.set_result(approved)
        return chosen.id

    # -- views -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "status": self.status,
                "created": self.created, "finished": self.finished, "usage": self.usage, "cost": self.cost,
                "error": self.error["detail"] if self.error else None, "source": "server"}

    def detail(self) -> dict[str, Any]:
        pending = [{"approval": a.id, **a.info} for a in self.approvals.values() if not a.future.done()]
        return {**self.summary(), "error": self.error, "plan": self.plan, "steps": dict(self.steps),
                "result": self.result, "pending_approvals": pending, "events": list(self.events)}


class RunRegistry:
    """Runs by id, at most `max_runs` (the oldest finished ones are forgotten first)."""

    def __init__(self, max_runs: int) -> None:
        self.max_runs = max_runs
        self.runs: OrderedDict[str, Run] = OrderedDict()

    def start(self, kind: Literal["invoke", "chat", "plan"], owner: str, title: str, **fields: Any) -> Run:
        self._make_room()
        run = Run(f"run_{secrets.token_hex(8)}", kind, owner, title[:200], **fields)
        self.runs[run.id] = run
        return run

    def _make_room(self) -> None:
        while len(self.runs) >= self.max_runs:
            oldest = next((r for r in self.runs.values() if r.status in FINISHED), None)
            if oldest is None:
                raise HttpProblem(503, "too many runs in progress",
                                  f"{len(self.runs)} runs are running (serve.max_runs); retry later",
                                  headers={"Retry-After": "5"})
            del self.runs[oldest.id]

    def get(self, run_id: str, owner: str, everyone: bool) -> Run:
        run = self.runs.get(run_id)
        if run is None or not (everyone or run.owner == owner):
            raise HttpProblem(404, "no such run", f"no run {run_id[:40]!r} (runs are kept in memory, the "
                              "last serve.max_runs of them)")
        return run

    def recent(self, owner: str, everyone: bool, limit: int = 50) -> list[Run]:
        runs = [r for r in reversed(self.runs.values()) if everyone or r.owner == owner]
        return runs[:limit]
