"""Benchmark: `da.load` through a real JupyterHub + dataaccess service vs pyarrow reading the file.

Both read the same Parquet file of --rows rows (2,000,000 by default) into an Arrow table; the
service path adds the grant check, the audit record and HTTP. With nothing to mask or filter the
service sends the file as it is; a second dataset on the same file with a hash mask and a row
filter shows the governed path (decode, filter, mask, Arrow IPC, client decode). Prints the
median of --runs runs of each, the ratios and MB/s (of the Arrow data in memory). The goal is a
ratio of at most 1.2 for the plain dataset.

    make setup
    .venv/bin/python benchmarks/load.py [--rows 2000000] [--runs 5] [--data /tmp/dataaccess-bench]
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(fn, service: int | None = None) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process and the service, result) of one call."""
    c0, s0 = os.times(), _cpu_seconds(service) if service else 0.0
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    c1, s1 = os.times(), _cpu_seconds(service) if service else 0.0
    return wall, (c1.user + c1.system - c0.user - c0.system) + (s1 - s0), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data", default="/tmp/dataaccess-bench", help="where the file is written")
    ap.add_argument("--goal", type=float, default=1.2)
    args = ap.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    path = os.path.join(args.data, f"load-{args.rows}.parquet")
    write_parquet(path, args.rows)

    import pyarrow.parquet as pq

    import jupyterhub_dataaccess as da

    governed = '    columns: {category: {mask: hash}}\n    row_filter: "id >= 0"\n'
    with running_hub({"bench": path, "bench-governed": (path, governed)}) as hub:
        service = service_pid(hub)
        for ds in ("bench", "bench-governed"):  # warm every path (page cache, imports, sockets)
            da.load(ds, as_="arrow")
        pq.read_table(path)
        direct, served, gov, direct_cpu, served_cpu, gov_cpu = [], [], [], [], [], []
        for _ in range(args.runs):  # interleaved, so all see the same machine load
            wall, cpu, table = _timed(lambda: pq.read_table(path))
            direct.append(wall)
            direct_cpu.append(cpu)
            wall, cpu, loaded = _timed(lambda: da.load("bench", as_="arrow"), service)
            served.append(wall)
            served_cpu.append(cpu)
            wall, cpu, masked = _timed(lambda: da.load("bench-governed", as_="arrow"), service)
            gov.append(wall)
            gov_cpu.append(cpu)
    direct_s, served_s = statistics.median(direct), statistics.median(served)
    gov_s = statistics.median(gov)
    assert loaded.column("id").equals(table.column("id")), "the rows differ"
    assert masked.num_rows == table.num_rows and masked.column("category") != table.column(
        "category"), "the governed read is not masked"
    mb = table.nbytes / 1e6
    ratio = served_s / direct_s
    print(f"dataset: {args.rows:,} rows, {os.path.getsize(path) / 1e6:.0f} MB Parquet on disk, "
          f"{mb:.0f} MB in Arrow; median of {args.runs} interleaved runs; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'path':<44} {'seconds':>8} {'MB/s':>7} {'CPU s':>7}")
    print(f"{'pyarrow.parquet.read_table (direct)':<44} {direct_s:8.3f} {mb / direct_s:7.0f} "
          f"{statistics.median(direct_cpu):7.3f}")
    print(f"{'da.load(as_=arrow) via hub + service':<44} {served_s:8.3f} {mb / served_s:7.0f} "
          f"{statistics.median(served_cpu):7.3f}")
    print(f"{'da.load, hash mask + row filter (governed)':<44} {gov_s:8.3f} {mb / gov_s:7.0f} "
          f"{statistics.median(gov_cpu):7.3f}")
    print("  (CPU s of da.load: the client and the service process together)")
    print(f"ratio service/direct: {ratio:.2f} (goal <= {args.goal})"
          f" -> {'met' if ratio <= args.goal else 'MISSED'}")
    print(f"ratio governed/direct: {gov_s / direct_s:.2f} (no goal: masks and filters cost work)")
    iceberg_row(path, args.data)
    return 0 if ratio <= args.goal else 1


def iceberg_row(parquet: str, data: str) -> None:
    """The same rows as an Iceberg table (pyiceberg's SQL catalog on SQLite, warehouse on local
    disk): da.load through the service against pyiceberg's own scan().to_arrow(), one run each
    after a warm-up read."""
    import shutil

    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    import jupyterhub_dataaccess as da

    lake = os.path.join(data, "iceberg")
    shutil.rmtree(lake, ignore_errors=True)
    os.makedirs(os.path.join(lake, "warehouse"))
    props = {"uri": f"sqlite:///{lake}/catalog.db", "warehouse": f"file://{lake}/warehouse"}
    catalog = SqlCatalog("bench", **props)
    catalog.create_namespace("bench")
    rows = pq.read_table(parquet)
    table = catalog.create_table("bench.load", schema=rows.schema)
    table.append(rows)
    del rows
    source = ("{kind: iceberg, table: bench.load, catalog: {name: bench, type: sql, "
              f"uri: 'sqlite:///{lake}/catalog.db', warehouse: 'file://{lake}/warehouse'}}}}")
    with running_hub({"bench-iceberg": source}) as hub:
        service = service_pid(hub)
        da.load("bench-iceberg", as_="arrow")
        table.scan().to_arrow()
        direct_s, direct_cpu, direct = _timed(lambda: table.scan().to_arrow())
        served_s, served_cpu, served = _timed(lambda: da.load("bench-iceberg", as_="arrow"),
                                              service)
    assert served.num_rows == direct.num_rows, "the rows differ"
    mb = direct.nbytes / 1e6
    print(f"{'pyiceberg scan().to_arrow() (direct)':<44} {direct_s:8.3f} {mb / direct_s:7.0f} "
          f"{direct_cpu:7.3f}")
    print(f"{'da.load(Iceberg table) via hub + service':<44} {served_s:8.3f} "
          f"{mb / served_s:7.0f} {served_cpu:7.3f}")
    print(f"ratio Iceberg service/direct: {served_s / direct_s:.2f} (one run each; no goal)")


if __name__ == "__main__":
    sys.exit(main())
