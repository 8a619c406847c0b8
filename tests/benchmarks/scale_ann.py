"""Vector search at scale: exact search (what the SQLite store does: one matrix product over
every vector of the collection, held in memory) against an HNSW index (hnswlib), with the
index's recall@10 measured against the exact answer. Not run by `run.py` (minutes of CPU and
GBs of memory); the figures are in BENCHMARKS.md ("Vector search at scale").

    python tests/benchmarks/scale_ann.py --exact 1000000 --ann 200000   # hnswlib if installed

The vectors are 384-d float32 (MiniLM's size), drawn around 2,000 random centres so that
neighbourhoods exist as in real embeddings (uniform noise is the worst case for any index),
unit-normalised; queries are perturbed copies of stored vectors.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time

import numpy as np

DIM = 384
K = 10


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, DIM),
                                                                                                   dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def queries(data: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = data[rng.integers(0, len(data), count)] + 0.05 * rng.standard_normal((count, DIM), dtype=np.float32)
    picked /= np.linalg.norm(picked, axis=1, keepdims=True)
    return picked.astype(np.float32)


def exact(data: np.ndarray, qs: np.ndarray) -> tuple[np.ndarray, float]:
    """Top-K ids per query, and the median seconds per query (one query at a time, as a
    search call does)."""
    times, ids = [], []
    for q in qs:
        start = time.perf_counter()
        scores = data @ q
        top = np.argpartition(-scores, K - 1)[:K]
        top = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - start)
        ids.append(top)
    return np.array(ids), float(np.median(times))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exact", type=int, default=1_000_000, help="vectors for exact search")
    parser.add_argument("--ann", type=int, default=200_000, help="vectors for the HNSW comparison (0: skip)")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()

    data = vectors(args.exact)
    qs = queries(data, args.queries)
    _, seconds = exact(data, qs)
    print(f"exact, {args.exact:,} x {DIM}: {seconds * 1e3:.1f} ms per query (median of {args.queries}); "
          f"matrix {data.nbytes / 2**20:,.0f} MiB; peak RSS {rss_mib():,.0f} MiB")
    del data

    if not args.ann:
        return
    if importlib.util.find_spec("hnswlib") is None:
        print("hnswlib not installed: no ANN figures (pip install hnswlib)")
        return
    import hnswlib

    data = vectors(args.ann, seed=2)
    qs = queries(data, args.queries, seed=3)
    truth, exact_seconds = exact(data, qs)
    print(f"exact, {args.ann:,} x {DIM}: {exact_seconds * 1e3:.2f} ms per query")
    for m, ef_construction in ((16, 64), (16, 200)):
        index = hnswlib.Index(space="ip", dim=DIM)
        start = time.perf_counter()
        index.init_index(max_elements=args.ann, M=m, ef_construction=ef_construction)
        index.add_items(data, np.arange(args.ann))
        build = time.perf_counter() - start
        for ef in (40, 100, 200):
            index.set_ef(ef)
            times, found = [], []
            for q in qs:
                t = time.perf_counter()
                labels, _ = index.knn_query(q, k=K)
                times.append(time.perf_counter() - t)
                found.append(labels[0])
            recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))
            print(f"hnsw M={m} ef_construction={ef_construction} (built in {build:.0f} s) ef_search={ef}: "
                  f"{np.median(times) * 1e3:.2f} ms per query, recall@{K} {recall:.3f}")
    print(f"peak RSS {rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
