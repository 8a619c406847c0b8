"""The Ray executor: chunks of records as Ray tasks, on a cluster Ray runs.

* **Cluster.** Connects with `ray.init(address)`: `auto` (a cluster started with
  `ray start --head` on this machine), `ray://host:10001` (Ray Client), `host:6379`. With
  no address (and no `RAY_ADDRESS`), a local cluster is started for the run on loopback,
  without dashboard or usage reporting, and stopped at the end. When the application has
  called `ray.init` itself, that connection is used and left open.
* **Workers build their own kernel** from the driver's configuration, sent as data
  (`kernel.batch.worker.KernelSpec`), with the same plugin folders: on a shared path, or
  inside the runtime environment's `working_dir` (Ray ships that folder to every node).
  The variables holding API keys (`api_key_env` of each service, `*_API_KEY`) travel in
  the runtime environment's `env_vars`. No kernel, SDK client or connection is pickled.
* **Retries.** A task whose worker dies (killed, out of memory, node lost) is retried by
  Ray elsewhere (`max_retries`, 3). A chunk's results reach the driver once, when its task
  finishes: a retried chunk is never written twice. (Its records may run twice: functions
  with side effects should be idempotent.)
* **Backpressure.** At most `max_in_flight` chunks (default: twice the cluster's CPUs) are
  submitted at a time; the reader waits for one to finish before reading further.
* **Concurrency per service.** Each task takes one CPU; inside it, `concurrency` records
  run at once. Each worker's kernel gets each configured service's `max_concurrency`
  divided by the cluster's CPUs (at least 1), so the cluster as a whole stays within it;
  when a model service allows fewer calls than the cluster has CPUs, only that many
  chunks are submitted at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .work import Outcome

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .records import Record
    from .work import Target
    from .worker import KernelSpec

__all__ = ["RayCluster", "RayExecutor", "import_ray"]

DEFAULT_CHUNK_SIZE = 64
MAX_RETRIES = 3
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT = 5.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            'the ray executor needs Ray: pip install "orchestration-kernel[ray]"'
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _is_loopback(address: str) -> bool:
    found = _host_port(address)
    return found is not None and (found[0] in ("localhost", "::1") or found[0].startswith("127."))


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail at once, naming the address, when nothing listens there (Ray itself retries
    for minutes); `auto` and other forms are left to Ray."""
    found = _host_port(address)
    if found is None:
        return
    try:
        socket.create_connection(found, timeout=timeout).close()
    except OSError as exc:
        raise ConfigurationError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


class RayCluster:
    """A connection to a Ray cluster for one run: made (or a local cluster started) on
    `start`, closed on `close` when this object made it."""

    def __init__(self, address: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        self.address = address
        self.options = dict(options or {})
        self.owned = False
        self.env: dict[str, str] = {}

    @property
    def working_dir(self) -> str | None:
        runtime_env = self.options.get("runtime_env") or {}
        value = runtime_env.get("working_dir") if isinstance(runtime_env, Mapping) else None
        return str(value) if isinstance(value, str | os.PathLike) else None

    async def start(self, env: Mapping[str, str]) -> Any:
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if (address is None or _is_loopback(address)) and "ray" not in sys.modules:
            # A local cluster for this run, or one on loopback: the loopback address as the
            # node's (Ray's own switch, read when ray is imported; without it Ray replaces
            # 127.0.0.1 by the machine's address), and no usage report sent anywhere.
            os.environ.setdefault(LOOPBACK_VARIABLE, "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is not None:
            _check_reachable(address)
        ray = import_ray()
        self.env = dict(env)
        if ray.is_initialized():
            return ray
        options = dict(self.options)
        runtime_env = dict(options.pop("runtime_env", None) or {})
        if self.env:
            runtime_env["env_vars"] = {**self.env, **dict(runtime_env.get("env_vars") or {})}
        if address is None:
            options.setdefault("include_dashboard", False)
        options.setdefault("logging_level", logging.WARNING)
        options.setdefault("log_to_driver", False)
        try:
            ray.init(address=address, runtime_env=runtime_env or None, **options)  # on the main thread: its signals
        except ConnectionError as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token)")
            raise ConfigurationError(f"cannot reach the Ray cluster at {address}: {exc}{hint}") from None
        self.owned = True
        return ray

    def task_options(self) -> dict[str, Any]:
        """Per-task options: the key variables, when the connection was not ours to set up."""
        if self.owned or not self.env:
            return {}
        return {"runtime_env": {"env_vars": self.env}}

    @staticmethod
    def cpus() -> int:
        ray = import_ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    async def close(self) -> None:
        if self.owned:
            ray = import_ray()
            ray.shutdown()
            self.owned = False


def tightest_limit(kernel: Kernel) -> int | None:
    """The smallest `max_concurrency` of the configured model services (chat, embedding)."""
    limits = [svc.max_concurrency for svc in kernel.settings.services.values()
              if kernel.services.kind_of(svc) in ("chat", "embedding")]
    return min(limits, default=None)


class RayExecutor:
    """Chunks of records as Ray tasks; workers build their kernel from a `KernelSpec`."""

    name = "ray"

    def __init__(self, kernel: Kernel, target: Target, *, address: str | None = None,
                 concurrency: int | None = None, chunk_size: int | None = None, max_in_flight: int | None = None,
                 plugin_dirs: Iterable[str | Path] = (), options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.max_retries = int(options.pop("max_retries", MAX_RETRIES))
        self.cluster = RayCluster(address, options)
        self.kernel, self.target = kernel, target
        self.concurrency = concurrency
        self.chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        self._max_in_flight = max_in_flight
        self.max_in_flight = max_in_flight or 4
        self.plugin_dirs = [str(p) for p in plugin_dirs]
        self._task: Any = None
        self._spec: Any = None

    async def start(self) -> None:
        from .worker import kernel_spec, run_chunk, secret_environment

        ray = await self.cluster.start(secret_environment(self.kernel))
        slots = self.cluster.cpus()
        self.max_in_flight = self._max_in_flight or 2 * slots
        tightest = tightest_limit(self.kernel)
        if tightest is not None and tightest < slots:  # one call per task: at most that many tasks at once
            self.max_in_flight = min(self.max_in_flight, tightest)
        spec: KernelSpec = kernel_spec(self.kernel, plugin_dirs=self.plugin_dirs, slots=slots,
                                       concurrency=self.concurrency or 8, working_dir=self.cluster.working_dir)
        self._spec = ray.put(spec)
        remote = ray.remote(max_retries=self.max_retries, retry_exceptions=False)(run_chunk)
        task_options = self.cluster.task_options()
        self._task = remote.options(**task_options) if task_options else remote

    async def run(self, records: Sequence[Record]) -> list[Outcome]:
        ray = import_ray()
        ref = self._task.remote(self._spec, self.target, [r.arguments for r in records])
        try:
            outcomes: list[Outcome] = await ref
            return outcomes
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except ray.exceptions.RayError as exc:  # retries exhausted: each record of the chunk failed
            message = " ".join(str(exc).split())[:500]
            return [Outcome(error=message, error_type=type(exc).__name__) for _ in records]

    async def close(self) -> None:
        await self.cluster.close()
