"""Benchmark: governed reads that the service must decode (a hash mask and a row filter that
row-group statistics cannot prove), `da.load(as_="arrow")` through a real hub and service vs
pyarrow reading the file, in the same run.

Two row filters on the benchmark file (x uniform in [0, 1)): one keeping 99% of the rows and one
keeping half. Prints, per read, the median wall time of --runs interleaved runs, the ratio to the
floor (pyarrow.parquet.read_table of the same file), and the CPU seconds of this process (the
client) and of the service apart. Issue 13's goal for a governed read is at most 2x the floor.

    .venv/bin/python benchmarks/governed_read.py [--rows 2000000] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import running_hub, write_parquet  # noqa: E402
from hubutil import service_pid  # noqa: E402
from load import _cpu_seconds  # noqa: E402

FILTERS = {"keeps 99%": "x >= 0.01", "keeps 50%": "x >= 0.5"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data", default="/tmp/dataaccess-bench", help="where the file is written")
    ap.add_argument("--goal", type=float, default=2.0)
    args = ap.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    path = os.path.join(args.data, f"load-{args.rows}.parquet")
    write_parquet(path, args.rows)

    import pyarrow.parquet as pq

    import jupyterhub_dataaccess as da

    datasets = {f"governed-{i}": (path, "    columns: {category: {mask: hash}}\n"
                                        f'    row_filter: "{where}"\n')
                for i, where in enumerate(FILTERS.values())}
    reads = {"floor": lambda: pq.read_table(path)}
    for i, name in enumerate(FILTERS):
        reads[name] = lambda i=i: da.load(f"governed-{i}", as_="arrow")
    with running_hub(datasets) as hub:
        service = service_pid(hub)
        for fn in reads.values():  # warm every path (page cache, imports, sockets)
            fn()
        walls: dict[str, list[float]] = {k: [] for k in reads}
        client: dict[str, list[float]] = {k: [] for k in reads}
        served: dict[str, list[float]] = {k: [] for k in reads}
        rows: dict[str, int] = {}
        for _ in range(args.runs):
            for k, fn in reads.items():
                c0, s0 = os.times(), _cpu_seconds(service)
                t = time.perf_counter()
                out = fn()
                walls[k].append(time.perf_counter() - t)
                c1, s1 = os.times(), _cpu_seconds(service)
                client[k].append(c1.user + c1.system - c0.user - c0.system)
                served[k].append(s1 - s0)
                rows[k] = out.num_rows
    floor = statistics.median(walls["floor"])
    print(f"{args.rows:,} rows, {os.path.getsize(path) / 1e6:.0f} MB Parquet; hash mask on "
          f"category; median of {args.runs} interleaved runs; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'read':<36} {'rows':>10} {'seconds':>8} {'ratio':>6} {'client CPU':>11} "
          f"{'service CPU':>12}")
    met = True
    for k in reads:
        wall = statistics.median(walls[k])
        label = "pyarrow read_table (floor)" if k == "floor" else f"da.load, row filter {k}"
        print(f"{label:<36} {rows[k]:>10,} {wall:8.3f} {wall / floor:6.2f} "
              f"{statistics.median(client[k]):11.3f} "
              f"{statistics.median(served[k]) if k != 'floor' else 0:12.3f}")
        met = met and (k == "floor" or wall / floor <= args.goal)
    print(f"goal: each governed read <= {args.goal}x the floor -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
