"""Batch runs: a function, or a plan, over thousands to millions of records, in this
process (asyncio) or on a Ray cluster; and memory ingestion with its chunking and
embedding on Ray.

    records        streaming readers (.jsonl, .csv, .parquet), record ids, argument keys
    work           one record's work on a kernel, as plain data (Outcome)
    output         results and errors files, the state a re-run resumes from
    runner         run_batch, BatchReport: read, skip, chunk, bound, write
    executors      the asyncio executor; choosing one
    ray_executor   chunks as Ray tasks, a cluster connection
    worker         what a Ray worker runs: its own kernel from the driver's configuration;
                   the chunking of documents to ingest
    ingest         memory_for: SemanticMemory with its chunking and embedding spread over Ray workers
    progress       the progress bar and the summary

`Kernel.batch(function, records, ...)` and `kernel batch FUNCTION --input ... --output ...`
call `run_batch`. Ray is the `[ray]` extra; nothing here imports it until a Ray run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .executors import EXECUTORS, AsyncioExecutor, Executor, make_executor
    from .ingest import ClusterChunker, ClusterEmbedding, memory_for
    from .output import BatchResult, ResumeState, companion_paths
    from .progress import summary_line
    from .ray_executor import RayCluster, RayExecutor
    from .records import FORMATS, count_records, read_records
    from .runner import BatchReport, run_batch
    from .work import Outcome, Target
    from .worker import KernelSpec, kernel_spec

__all__ = [
    "EXECUTORS",
    "FORMATS",
    "AsyncioExecutor",
    "BatchReport",
    "BatchResult",
    "ClusterChunker",
    "ClusterEmbedding",
    "Executor",
    "KernelSpec",
    "Outcome",
    "RayCluster",
    "RayExecutor",
    "ResumeState",
    "Target",
    "companion_paths",
    "count_records",
    "kernel_spec",
    "make_executor",
    "memory_for",
    "read_records",
    "run_batch",
    "summary_line",
]

_LOCATIONS = {
    **dict.fromkeys(("EXECUTORS", "AsyncioExecutor", "Executor", "make_executor"), "executors"),
    **dict.fromkeys(("ClusterChunker", "ClusterEmbedding", "memory_for"), "ingest"),
    **dict.fromkeys(("BatchResult", "ResumeState", "companion_paths"), "output"),
    "summary_line": "progress",
    **dict.fromkeys(("RayCluster", "RayExecutor"), "ray_executor"),
    **dict.fromkeys(("FORMATS", "count_records", "read_records"), "records"),
    **dict.fromkeys(("BatchReport", "run_batch"), "runner"),
    **dict.fromkeys(("Outcome", "Target"), "work"),
    **dict.fromkeys(("KernelSpec", "kernel_spec"), "worker"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
