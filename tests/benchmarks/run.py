"""Run the benchmarks and print ours vs the floor.

    python tests/benchmarks/run.py                 # every tests/benchmarks/bench_*.py
    python tests/benchmarks/run.py --only core,chat
    python tests/benchmarks/run.py --peers         # also Semantic Kernel and LangChain, when installed

`--peers` adds `peers_sk_langchain.py`: the same operations through Semantic Kernel and
LangChain, each interleaved with ours in one run (pip install semantic-kernel langchain-core
into the same environment; a peer that is not installed gives a row saying so).

Each `bench_NAME.py` module has `run() -> list[row]`, a row being
`(label, ours, floor)` in seconds, or `(label, ours, floor, unit)` for other quantities
("MiB"). `floor` may be None when there is nothing to compare with. The table shows the
ratio ours/floor and the overhead ours - floor (µs for times). Figures are best-of-N:
on a busy machine compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


PEERS = HERE / "peers_sk_langchain.py"


def discover(only: set[str] | None, peers: bool = False) -> list[Path]:
    files = sorted(HERE.glob("bench_*.py"))
    if only is not None:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
    if peers:
        files.append(PEERS)
    return files


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds * 1e6:,.2f} µs"


def format_row(group: str, row: Sequence[Any]) -> list[str]:
    label, ours, floor = row[0], row[1], row[2]
    unit = row[3] if len(row) > 3 else "s"
    if unit == "s":
        ours_s, floor_s = _fmt_time(ours), ("-" if floor is None else _fmt_time(floor))
        overhead = "-" if floor is None else f"{(ours - floor) * 1e6:+,.2f} µs"
    else:
        digits = 1 if unit in ("MiB", "MB") or abs(ours) >= 10 else 3  # scores (MRR, recall) need 3
        ours_s = f"{ours:,.{digits}f} {unit}"
        floor_s = "-" if floor is None else f"{floor:,.{digits}f} {unit}"
        overhead = "-" if floor is None else f"{ours - floor:+,.1f} {unit}"
    ratio = "-" if not floor else f"{ours / floor:,.2f}x"
    return [group, label, ours_s, floor_s, ratio, overhead]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated benchmark names (bench_NAME.py): core,chat,...")
    parser.add_argument("--peers", action="store_true",
                        help="also run Semantic Kernel and LangChain side by side (those installed)")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    files = discover(only, args.peers)
    if not files:
        print(f"no benchmarks match {args.only!r}", file=sys.stderr)
        return 2
    header = ["group", "what", "ours", "floor", "ratio", "overhead"]
    rows: list[list[str]] = []
    for path in files:
        group = "peers" if path == PEERS else path.stem.removeprefix("bench_")
        started = time.perf_counter()
        try:
            results = load(path).run()
        except Exception as exc:  # one broken benchmark must not hide the others
            rows.append([group, f"FAILED: {type(exc).__name__}: {exc}", "", "", "", ""])
            continue
        rows.extend(format_row(group, row) for row in results)
        print(f"[{group}: {time.perf_counter() - started:.1f} s]", file=sys.stderr)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
