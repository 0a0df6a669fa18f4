"""Read throughput against dataset size: through the service vs pyarrow reading the file itself.

Parquet files of about 10 MB, 100 MB and 500 MB (an int64 id, three float64 columns of random
values, a low-cardinality string column) are read

  baseline  pyarrow.parquet.read_table(path)             (the file, no service, no network)
  service   jupyterhub_dataaccess.load(id, as_="arrow")  (the notebook client: through the proxy,
            the service checks the grant, audits, streams Arrow IPC; this process decodes it)

Throughput is the table's size in memory (Table.nbytes) over the wall time, median of --runs.

    .venv/bin/python benchmarks/throughput.py [--sizes 10,100,500] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import _common as c

BYTES_PER_ROW = 36  # 4 × 8-byte columns + a dictionary-encoded string column


def write_parquet(path: str, mb: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = mb * 1_000_000 // BYTES_PER_ROW
    rng = np.random.default_rng(mb)
    chunk = 1_000_000
    schema = None
    with pq.ParquetWriter(path, pa.schema([
            ("id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()), ("z", pa.float64()),
            ("region", pa.string())])) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            t = pa.table({
                "id": np.arange(start, start + n, dtype=np.int64),
                "x": rng.random(n), "y": rng.random(n), "z": rng.random(n),
                "region": rng.choice(["north", "south", "east", "west"], n),
            }, schema=schema)
            schema = t.schema
            w.write_table(t, row_group_size=256 * 1024)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,500", help="file sizes in MB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    c.machine()
    fixed = "".join(f"""\
  - id: tp-{mb}mb
    title: Throughput {mb} MB
    owner: steward
    stewards: {{{{users: [steward]}}}}
    classification: public
    source: {{{{kind: file, uri: {{data}}/tp-{mb}mb.parquet}}}}
""" for mb in sizes)
    hub, tmp = c.start_hub(10, fixed=fixed, prefix="bench-throughput-")
    data = os.path.join(tmp, "data")
    results: dict[int, dict[str, float]] = {}
    try:
        token = hub.token("analyst")
        os.environ["DATAACCESS_URL"] = hub.url + "/services/dataaccess/"
        os.environ["JUPYTERHUB_API_TOKEN"] = token
        import pyarrow.parquet as pq

        import jupyterhub_dataaccess as da

        for mb in sizes:
            path = os.path.join(data, f"tp-{mb}mb.parquet")
            t0 = time.monotonic()
            write_parquet(path, mb)
            print(f"wrote {path}: {os.path.getsize(path) / 1e6:.0f} MB in "
                  f"{time.monotonic() - t0:.1f} s", flush=True)
            da.request(f"tp-{mb}mb", justification="throughput benchmark")
            local, service, nbytes, rows = [], [], 0, 0
            for _ in range(args.runs):
                t0 = time.perf_counter()
                table = pq.read_table(path)
                local.append(time.perf_counter() - t0)
                nbytes, rows = table.nbytes, table.num_rows
                del table
                t0 = time.perf_counter()
                table = da.load(f"tp-{mb}mb", as_="arrow")
                service.append(time.perf_counter() - t0)
                assert table.num_rows == rows
                del table
            results[mb] = {"file MB": os.path.getsize(path) / 1e6, "MB": nbytes / 1e6,
                           "rows": rows, "local s": statistics.median(local),
                           "service s": statistics.median(service)}
            os.remove(path)
    finally:
        hub.stop()
    rows_out = []
    for r in results.values():
        local_rate, svc_rate = r["MB"] / r["local s"], r["MB"] / r["service s"]
        r.update(local_rate=local_rate, svc_rate=svc_rate)
        rows_out.append([f"{r['file MB']:.0f} MB file", f"{r['rows']:,}", r["MB"], local_rate,
                         svc_rate, svc_rate / local_rate, r["service s"]])
    c.table(f"Read throughput, MB/s of Arrow data, median of {args.runs} runs",
            ["dataset", "rows", "Arrow MB", "pyarrow file MB/s", "service MB/s",
             "service ÷ pyarrow", "service s"], rows_out)

    def draw(fig, ax) -> None:
        xs = [results[mb]["MB"] for mb in results]
        ax.plot(xs, [results[mb]["local_rate"] for mb in results], "k--o",
                label="pyarrow reads the file (baseline)")
        ax.plot(xs, [results[mb]["svc_rate"] for mb in results], "o-",
                label="da.load through the service")
        ax.set_xscale("log")
        ax.set_xlabel("dataset size in memory (MB)")
        ax.set_ylabel("throughput (MB/s)")
        ax.legend(fontsize=8)

    c.plot("throughput", draw, "Read throughput against dataset size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
