"""Executors: where the records of a batch run.

An executor takes chunks of records and gives back their outcomes; the runner
(`kernel.batch.runner`) reads, skips, orders and writes. Two exist, and neither brings a
cluster, queue or scheduler of its own:

* `asyncio` (the default): in this process, on the kernel given, at most `concurrency`
  records at once (one record per chunk). Each service's calls are bounded by its own
  `max_concurrency`, with its retries, fallbacks and breaker (the resilience layer).
* `ray`: chunks of records as Ray tasks (`kernel.batch.ray_executor`).

The executor is chosen by argument (`--executor`), else by the configuration
(`[batch] executor`, `KERNEL_BATCH__EXECUTOR`); the Ray address by `--address`, else
`[batch] address` (`KERNEL_BATCH__ADDRESS`), else Ray's own `RAY_ADDRESS`, else a local
cluster is started for the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .records import Record
    from .work import Outcome, Target

__all__ = ["EXECUTORS", "AsyncioExecutor", "Executor", "make_executor"]

EXECUTORS = ("asyncio", "ray")
DEFAULT_CONCURRENCY = 16


class Executor(Protocol):
    """Runs chunks of records. `chunk_size` records go in one `run` call; the runner keeps
    at most `max_in_flight` calls running (its backpressure)."""

    name: str
    chunk_size: int
    max_in_flight: int

    async def start(self) -> None: ...

    async def run(self, records: Sequence[Record]) -> list[Outcome]: ...

    async def close(self) -> None: ...


class AsyncioExecutor:
    """In this process: each record a task, at most `concurrency` at once."""

    name = "asyncio"

    def __init__(self, kernel: Kernel, runnable: Any, *, concurrency: int = DEFAULT_CONCURRENCY,
                 chunk_size: int | None = None) -> None:
        self.kernel, self.runnable = kernel, runnable
        self.chunk_size = chunk_size or 1
        self.max_in_flight = max(1, concurrency)

    async def start(self) -> None:
        return None

    async def run(self, records: Sequence[Record]) -> list[Outcome]:
        from .work import run_many, run_one

        if len(records) == 1:
            return [await run_one(self.kernel, self.runnable, dict(records[0].arguments))]
        return await run_many(self.kernel, self.runnable, [r.arguments for r in records], 1)

    async def close(self) -> None:
        return None


def executor_name(name: str | None, kernel: Kernel) -> str:
    """The executor asked for, else the configured one (`[batch] executor`)."""
    chosen = (name or kernel.settings.batch.executor).strip().lower()
    if chosen not in EXECUTORS:
        raise ConfigurationError(f"unknown executor {chosen!r}; expected one of {', '.join(EXECUTORS)}")
    return chosen


def cluster_address(address: str | None, kernel: Kernel) -> str | None:
    """The Ray address asked for, else the configured one (`[batch] address`); None: Ray's
    `RAY_ADDRESS`, else a local cluster."""
    return address or kernel.settings.batch.address or None


def make_executor(
    name: str | None,
    kernel: Kernel,
    target: Target,
    runnable: Any,
    *,
    address: str | None = None,
    concurrency: int | None = None,
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    plugin_dirs: Iterable[str | Path] = (),
    ray_options: Mapping[str, Any] | None = None,
) -> Executor:
    """The executor `name` (else the configured one, else asyncio) for one batch."""
    chosen = executor_name(name, kernel)
    if concurrency is not None and concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    if chosen == "asyncio":
        return AsyncioExecutor(kernel, runnable, concurrency=concurrency or DEFAULT_CONCURRENCY,
                               chunk_size=chunk_size)
    from .ray_executor import RayExecutor

    return RayExecutor(kernel, target, address=cluster_address(address, kernel),
                       concurrency=concurrency, chunk_size=chunk_size, max_in_flight=max_in_flight,
                       plugin_dirs=plugin_dirs, options=ray_options)
