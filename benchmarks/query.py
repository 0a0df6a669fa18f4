"""Benchmark: a question about a big table, asked six ways, side by side.

A year of departures (month, carrier, dep_delay, distance, tailnum; --rows rows, 20,000,000 by
default) written by this script as Parquet in row groups of rows/20 (1,000,000 at full size), in
time order. The question: average delay and count by carrier for one month.

- floor: DuckDB on the file, in this process, result to pandas through Arrow;
- da.sql through the hub's service (POST /query);
- da.load(where=month, columns=...) then pandas groupby, and the da.load alone; against DuckDB
  reading that month into pandas through Arrow (the second goal's floor, which compares it with
  the da.load alone: the pandas groupby after it is the same work on either frame);
- today's path: load the columns, filter and group in pandas;
- the same da.load(where=) and da.sql on a copy with a hashed tailnum and a row filter.

Goals: da.sql <= 1.5x the floor; da.load(where=) of one month <= 1.5x DuckDB reading that month.
Also prints where the service's time goes on da.sql (its Server-Timing header) and the service's
peak RSS while answering da.sql, and over the whole run (goal: under 500 MB).

    .venv/bin/python benchmarks/query.py [--rows 20000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import reset_peak, running_hub  # noqa: E402
from hubutil import service_pid, status_mb  # noqa: E402

QUESTION = ("select carrier, avg(dep_delay) as delay, count(*) as n from {t} "
            "where month = 3 group by carrier order by carrier")


def write_flights(path: str, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    group = max(rows // 20, 1)
    rng = np.random.default_rng(7)
    carriers = np.array(["AA", "AS", "B6", "DL", "F9", "HA", "NK", "UA", "WN", "OO"])
    with pq.ParquetWriter(path, pa.schema([
            ("month", pa.int8()), ("carrier", pa.string()), ("dep_delay", pa.float64()),
            ("distance", pa.int32()), ("tailnum", pa.string())])) as w:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            month = (1 + (np.arange(start, start + n) * 12) // rows).astype(np.int8)  # time order
            w.write_table(pa.table({
                "month": month,
                "carrier": carriers[rng.integers(0, len(carriers), n)],
                "dep_delay": rng.normal(10, 30, n).round(1),
                "distance": rng.integers(100, 3000, n, dtype=np.int32),
                "tailnum": np.char.add("N", rng.integers(100, 999, n).astype(str)),
            }), row_group_size=n)


def median_ms(fn, runs: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def where_the_time_goes(hub, sql: str, runs: int) -> dict[str, float]:
    """The service's own account of a query (its Server-Timing header: authentication, check,
    grants, plan, read, engine, audit), median ms of `runs`, and the whole round trip, asked
    as da.sql asks (straight to the service, with the analyst's token)."""
    import requests

    url = os.environ["DATAACCESS_URL"] + "api/v1/query"
    auth = {"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        t = time.perf_counter()
        r = requests.post(url, json={"sql": sql, "format": "arrow"}, headers=auth, timeout=60)
        total = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, r.text
        for part in r.headers.get("Server-Timing", "").split(","):
            name, _, dur = part.strip().partition(";dur=")
            samples.setdefault(name, []).append(float(dur))
        samples.setdefault("round trip", []).append(total)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    import shutil
    import tempfile

    data = tempfile.mkdtemp(prefix="dataaccess-query-bench-")
    try:
        run(os.path.join(data, "flights.parquet"))
    finally:
        shutil.rmtree(data, ignore_errors=True)  # up to a GB at full size


def run(path: str) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import duckdb

    write_flights(path, args.rows)
    governed = ('    columns:\n      tailnum: {mask: hash}\n'
                '    row_filter: "carrier != \'OO\'"\n')
    con = duckdb.connect()
    sql_runs = max(args.runs, 5)  # a query is quick now: the SQL pair gets at least 5 runs
    floor = median_ms(lambda: con.sql(QUESTION.format(t=f"'{path}'")).to_arrow_table()
                      .to_pandas(), sql_runs)
    month_floor = median_ms(lambda: con.sql(
        f"select carrier, dep_delay from '{path}' where month = 3").to_arrow_table().to_pandas(),
        args.runs)
    with running_hub({"flights": path, "flights-governed": (path, governed)}) as hub:
        import jupyterhub_dataaccess as da

        pid = service_pid(hub)
        reset_peak(pid)
        by_sql = median_ms(lambda: da.sql(QUESTION.format(t="flights")), sql_runs)
        sql_peak = status_mb(pid, "VmHWM")
        stages = where_the_time_goes(hub, QUESTION.format(t="flights"), sql_runs)

        def by_load(dataset: str) -> None:
            df = da.load(dataset, where="month == 3", columns=["carrier", "dep_delay"])
            df.groupby("carrier")["dep_delay"].agg(["mean", "count"])

        def today() -> None:
            df = da.load("flights", columns=["month", "carrier", "dep_delay"])
            df[df.month == 3].groupby("carrier")["dep_delay"].agg(["mean", "count"])

        rows = [
            ("floor: DuckDB on the file, to pandas", floor),
            ("da.sql through hub and service", by_sql),
            ("DuckDB reading one month, to pandas", month_floor),
            ("da.load(where=month, columns=) + pandas", median_ms(
                lambda: by_load("flights"), args.runs)),
            ("da.load(where=month, columns=) alone, to pandas", median_ms(
                lambda: da.load("flights", where="month == 3", columns=["carrier", "dep_delay"]),
                args.runs)),
            ("today: da.load(columns=) + pandas filter", median_ms(today, max(args.runs // 2, 1))),
            ("da.load(where=) on the hashed, filtered copy", median_ms(
                lambda: by_load("flights-governed"), args.runs)),
            ("da.sql on the hashed, filtered copy", median_ms(
                lambda: da.sql(QUESTION.format(t='"flights-governed"')), sql_runs)),
        ]
        peak = status_mb(pid, "VmHWM")
    print(f"{args.rows:,} rows, row groups of {max(args.rows // 20, 1):,}, in time order "
          f"(median of {args.runs}, the floor and da.sql of {sql_runs}; the machine was shared)")
    for name, ms in rows:
        print(f"  {name:48s} {ms:9.1f} ms")
    # the goal compares reads: DuckDB's month into pandas against da.load's (no groupby on
    # either side); the line with the pandas groupby is printed too
    sql_ratio, load_ratio = rows[1][1] / floor, rows[4][1] / month_floor
    print(f"da.sql / floor = {sql_ratio:.1f}x (goal <= 1.5x: "
          f"{'MET' if sql_ratio <= 1.5 else 'NOT MET'})")
    print(f"da.load(where=) / DuckDB month = {load_ratio:.1f}x (goal <= 1.5x: "
          f"{'MET' if load_ratio <= 1.5 else 'NOT MET'}); with the pandas groupby "
          f"{rows[3][1] / month_floor:.1f}x")
    print("da.sql, where the service's time goes (Server-Timing, median ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print(f"service peak RSS while answering da.sql {sql_peak:.0f} MB (goal < 500 MB: "
          f"{'MET' if sql_peak < 500 else 'NOT MET'}); over the whole run (da.load too) "
          f"{peak:.0f} MB")


if __name__ == "__main__":
    main()
