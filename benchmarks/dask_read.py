"""Benchmark: a Dask reduction over governed data through tickets vs the same workers reading the
Parquet files directly.

A dataset of --rows rows (50,000,000 by default) in Parquet files of --file-rows rows (`key`, an
int32 of 1,000 groups, and `value`, a float64) is reduced on a Dask LocalCluster of --workers
worker processes (one thread each, started without the hub token): the sum and count of `value`
per `key`, nothing gathered whole. Three reads, interleaved run by run:

- direct: `dask.dataframe.read_parquet` on the files (the floor: the workers read the disk);
- tickets: `da.load(id, as_="dask")`, each task fetching its partition with its ticket alone
  (nothing to govern, so each file goes as it is);
- masked: the same files as a dataset whose `key` is hashed (each partition decoded, masked and
  sent as Arrow by the service); its groups are the hashed keys.

Prints the median of --runs runs of each and the ratios; the goal is at most 1.3x for tickets.

    make setup
    .venv/bin/python benchmarks/dask_read.py [--rows 50000000] [--runs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import running_hub  # noqa: E402


def write_files(directory: str, rows: int, file_rows: int) -> None:
    """Parquet files of `key` (int32, 1,000 groups) and `value` (float64), row groups of 1M."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = os.path.join(directory, f".complete-{rows}-{file_rows}")
    if os.path.exists(stamp):
        return
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    rng = np.random.default_rng(13)
    for i, start in enumerate(range(0, rows, file_rows)):
        n = min(file_rows, rows - start)
        table = pa.table({"key": rng.integers(0, 1000, n, dtype=np.int32),
                          "value": rng.random(n)})
        pq.write_table(table, os.path.join(directory, f"part-{i:04d}.parquet"),
                       row_group_size=1 << 20)
    open(stamp, "w").close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--file-rows", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default="/tmp/dataaccess-bench", help="where the files are written")
    ap.add_argument("--goal", type=float, default=1.3)
    args = ap.parse_args(argv)
    directory = os.path.join(args.data, f"dask-{args.rows}")
    write_files(directory, args.rows, args.file_rows)

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import jupyterhub_dataaccess as da

    def reduce(ddf: dd.DataFrame) -> object:
        return ddf.groupby("key")["value"].agg(["sum", "count"]).compute()

    masked = "    columns: {key: {mask: hash}}\n"
    datasets = {"dask-bench": directory, "dask-bench-masked": (directory, masked)}
    reads = {
        "direct": lambda: reduce(dd.read_parquet(directory)),
        "tickets": lambda: reduce(da.load("dask-bench", as_="dask")),
        "masked": lambda: reduce(da.load("dask-bench-masked", as_="dask")),
    }
    with running_hub(datasets):
        with da.without_token():  # the workers get no token, only the tickets of their tasks
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            token = os.environ["JUPYTERHUB_API_TOKEN"]
            holders = client.run(lambda: [k for k, v in os.environ.items() if v == token])
            assert not any(holders.values()), f"a worker holds the token: {holders}"
            out = {k: fn() for k, fn in reads.items()}  # warm: page cache, imports, workers
            walls: dict[str, list[float]] = {k: [] for k in reads}
            for _ in range(args.runs):
                for k, fn in reads.items():
                    t = time.perf_counter()
                    out[k] = fn()
                    walls[k].append(time.perf_counter() - t)
    direct, tickets, hashed = out["direct"], out["tickets"], out["masked"]
    assert tickets.sort_index().equals(direct.sort_index()), "the reductions differ"
    assert sorted(hashed["count"]) == sorted(direct["count"]), "the masked groups differ"
    assert int(direct["count"].sum()) == args.rows
    med = {k: statistics.median(v) for k, v in walls.items()}
    files = len([f for f in os.listdir(directory) if f.endswith(".parquet")])
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    print(f"dataset: {args.rows:,} rows in {files} Parquet files ({size / 1e6:.0f} MB); "
          f"LocalCluster of {args.workers} worker processes x 1 thread; median of {args.runs} "
          f"interleaved runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    labels = {"direct": "workers read the Parquet files (dd.read_parquet)",
              "tickets": "da.load(as_='dask') through tickets",
              "masked": "the same, key hashed (masked copy)"}
    print(f"{'read, then sum and count per key':<52} {'seconds':>8} {'rows/s':>12}")
    for k, label in labels.items():
        print(f"{label:<52} {med[k]:8.2f} {args.rows / med[k]:12,.0f}")
    ratio = med["tickets"] / med["direct"]
    print(f"ratio tickets/direct: {ratio:.2f} (goal <= {args.goal}) -> "
          f"{'met' if ratio <= args.goal else 'MISSED'}")
    print(f"ratio masked/direct: {med['masked'] / med['direct']:.2f} (no goal)")
    return 0 if ratio <= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
