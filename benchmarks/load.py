"""Benchmark: `da.load` through a real JupyterHub + dataaccess service vs pyarrow reading the file.

Both read the same Parquet file of --rows rows (2,000,000 by default, two row groups) into an
Arrow table and into pandas; the service path adds the scan plan (grant check, audit records)
and HTTP. With nothing to mask or filter the scan is answered with the file as it is (one round
trip); a second dataset on the same file with a hash mask and a row filter shows the governed
path (a ticket per row group, fetched in parallel: decode, filter, mask, Arrow IPC, client
decode; the hashed column travels as a dictionary and is cast back to text by the client).
Its row filter (id >= 0) is proven by the row groups' statistics, so the unmasked columns go as
byte ranges of the file (application/vnd.dataaccess.parquet-hybrid) and only the masked column
is decoded, masked and encoded by the service; a third dataset whose row filter the statistics
cannot prove (x >= 0.01) keeps the general governed path visible.
Prints the median of --runs interleaved runs of each, the ratios and MB/s (of the Arrow data in
memory). Goals: at most 1.2x pyarrow for arrow and pandas, 2x for the governed read.

    make setup
    .venv/bin/python benchmarks/load.py [--rows 2000000] [--runs 7] [--no-iceberg]
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
    ap.add_argument("--governed-goal", type=float, default=2.0)
    ap.add_argument("--no-iceberg", action="store_true", help="skip the Iceberg row")
    args = ap.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    path = os.path.join(args.data, f"load-{args.rows}.parquet")
    write_parquet(path, args.rows)

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import jupyterhub_dataaccess as da

    governed = '    columns: {category: {mask: hash}}\n    row_filter: "id >= 0"\n'
    unproven = '    columns: {category: {mask: hash}}\n    row_filter: "x >= 0.01"\n'
    reads = {  # name: (what it measures, the call); interleaved run by run
        "arrow floor": ("pyarrow.parquet.read_table (direct)", lambda: pq.read_table(path)),
        "arrow": ("da.load(as_=arrow) via the service", lambda: da.load("bench", as_="arrow")),
        "pandas floor": ("pyarrow read_table().to_pandas() (direct)",
                         lambda: pq.read_table(path).to_pandas()),
        "pandas": ("da.load(as_=pandas) via the service", lambda: da.load("bench")),
        "governed": ("da.load, hash mask + row filter (arrow)",
                     lambda: da.load("bench-governed", as_="arrow")),
        "unproven": ("da.load, ... a row filter stats cannot prove",
                     lambda: da.load("bench-unproven", as_="arrow")),
    }
    with running_hub({"bench": path, "bench-governed": (path, governed),
                      "bench-unproven": (path, unproven)}) as hub:
        service = service_pid(hub)
        for _, fn in reads.values():  # warm every path (page cache, imports, sockets)
            fn()
        walls: dict[str, list[float]] = {k: [] for k in reads}
        cpus: dict[str, list[float]] = {k: [] for k in reads}
        out: dict[str, object] = {}
        for _ in range(args.runs):
            for k, (_, fn) in reads.items():
                wall, cpu, out[k] = _timed(fn, None if "floor" in k else service)
                walls[k].append(wall)
                cpus[k].append(cpu)
    med = {k: statistics.median(v) for k, v in walls.items()}
    table = out["arrow floor"]
    assert out["arrow"].column("id").equals(table.column("id")), "the rows differ"
    assert out["pandas"]["id"].equals(out["pandas floor"]["id"]), "the rows differ"
    masked = out["governed"]
    assert masked.num_rows == table.num_rows and masked.column("category") != table.column(
        "category"), "the governed read is not masked"
    kept = out["unproven"]
    assert kept.num_rows < table.num_rows and kept.column("category") != table.column(
        "category").filter(pc.greater_equal(table.column("x"), 0.01)), "not governed"
    mb = table.nbytes / 1e6
    print(f"dataset: {args.rows:,} rows, {os.path.getsize(path) / 1e6:.0f} MB Parquet on disk, "
          f"{mb:.0f} MB in Arrow; median of {args.runs} interleaved runs; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'path':<44} {'seconds':>8} {'MB/s':>7} {'CPU s':>7}")
    for k, (label, _) in reads.items():
        print(f"{label:<44} {med[k]:8.3f} {mb / med[k]:7.0f} {statistics.median(cpus[k]):7.3f}")
    print("  (CPU s of da.load: the client and the service process together)")
    print("  (governed: the row filter id >= 0, proven by the row groups' statistics, so the")
    print("   unmasked columns go as byte ranges of the file and the service masks category;")
    print("   a row filter they cannot prove, x >= 0.01, takes the general governed path)")
    goals = [("arrow", "arrow floor", args.goal), ("pandas", "pandas floor", args.goal),
             ("governed", "arrow floor", args.governed_goal)]
    met = True
    for k, floor, goal in goals:
        ratio = med[k] / med[floor]
        met = met and ratio <= goal
        print(f"ratio {k}/{floor}: {ratio:.2f} (goal <= {goal}) -> "
              f"{'met' if ratio <= goal else 'MISSED'}")
    print(f"ratio unproven/arrow floor: {med['unproven'] / med['arrow floor']:.2f} "
          f"(no goal; {args.governed_goal}x shown for comparison)")
    if not args.no_iceberg:
        iceberg_row(path, args.data)
    return 0 if met else 1


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
