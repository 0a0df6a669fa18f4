"""Benchmark: stream a ~2 GB Parquet file through a real hub + dataaccess service, in bounded memory.

Writes the file once under --data (not in the repository), reads it as an Arrow stream from the
service's data route (as a kernel does, batch by batch, nothing kept), and prints the size, rows,
time, MB/s and the service's peak RSS (VmHWM of /proc/<pid>/status, reset before the read), side
by side with pyarrow reading the same file directly (batch by batch, and whole). The goal: the
service's peak RSS stays under 500 MB.

    make setup
    .venv/bin/python benchmarks/stream_memory.py [--rows 58000000] [--data /tmp/dataaccess-bench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import reset_peak, running_hub, write_parquet  # noqa: E402
from hubutil import service_pid, status_mb  # noqa: E402

DIRECT = """
import sys, time, pyarrow.parquet as pq
path, whole = sys.argv[1], sys.argv[2] == "whole"
t = time.perf_counter()
if whole:
    rows = pq.read_table(path).num_rows
else:
    rows = sum(b.num_rows for b in pq.ParquetFile(path).iter_batches(batch_size=131072))
elapsed = time.perf_counter() - t
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(rows, elapsed, int(line.split()[1]) / 1024)
"""


def _direct(path: str, how: str) -> tuple[int, float, float]:
    """(rows, seconds, peak RSS MB) of pyarrow reading the file in a fresh process."""
    out = subprocess.run([sys.executable, "-c", DIRECT, path, how], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=58_000_000, help="58 M rows is about 2 GB")
    ap.add_argument("--data", default="/tmp/dataaccess-bench")
    ap.add_argument("--limit-mb", type=float, default=500)
    ap.add_argument("--skip-whole", action="store_true",
                    help="do not load the whole file with pyarrow (needs several GB of RAM)")
    args = ap.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    path = os.path.join(args.data, f"stream-{args.rows}.parquet")
    t = time.perf_counter()
    write_parquet(path, args.rows)
    print(f"file: {path}, {os.path.getsize(path) / 1e9:.2f} GB on disk "
          f"(ready in {time.perf_counter() - t:.0f} s)")

    import pyarrow as pa
    import requests

    with running_hub({"big": path}) as hub:
        pid = service_pid(hub)
        url = os.environ["DATAACCESS_URL"] + "api/v1/datasets/big/data"
        token = os.environ["JUPYTERHUB_API_TOKEN"]
        idle = status_mb(pid, "VmRSS")
        reset_peak(pid)
        t = time.perf_counter()
        rows = streamed = 0
        with requests.get(url, params={"format": "arrow"}, stream=True, timeout=600,
                          headers={"Authorization": f"token {token}"}) as r:
            r.raise_for_status()
            r.raw.decode_content = True
            with pa.ipc.open_stream(r.raw) as reader:
                for batch in reader:
                    rows += batch.num_rows
                    streamed += batch.nbytes
        served = time.perf_counter() - t
        peak = status_mb(pid, "VmHWM")
    assert rows == args.rows, (rows, args.rows)
    size = os.path.getsize(path) / 1e6
    d_rows, d_time, d_peak = _direct(path, "batches")
    assert d_rows == rows
    print(f"rows: {rows:,}; {size:,.0f} MB Parquet, {streamed / 1e6:,.0f} MB as Arrow")
    print(f"{'path':<46} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12}")
    print(f"{'service: GET /data?format=arrow, streamed':<46} {served:8.1f} "
          f"{streamed / 1e6 / served:7.0f} {peak:12.0f}  (idle {idle:.0f})")
    print(f"{'pyarrow ParquetFile.iter_batches (direct)':<46} {d_time:8.1f} "
          f"{streamed / 1e6 / d_time:7.0f} {d_peak:12.0f}")
    if not args.skip_whole:
        w_rows, w_time, w_peak = _direct(path, "whole")
        print(f"{'pyarrow read_table, whole file (direct)':<46} {w_time:8.1f} "
              f"{streamed / 1e6 / w_time:7.0f} {w_peak:12.0f}")
    ok = peak < args.limit_mb
    print(f"service peak RSS {peak:.0f} MB (goal < {args.limit_mb:.0f} MB) -> "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
