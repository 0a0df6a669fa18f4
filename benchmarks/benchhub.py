"""Shared by the benchmarks: test data on disk, a real JupyterHub + dataaccess service, and the
service's memory as the kernel sees it from outside (/proc/<pid>/status).

The hub is the test suite's (tests/hubutil.py): configurable-http-proxy, the service started by
the hub from configure_hub, SQLite for the service database. Reads go straight to the service's
URL, as a notebook kernel's do (DATAACCESS_URL set by the spawn hook).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from hubutil import Hub  # noqa: E402

CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon"]


def write_parquet(path: str, rows: int, chunk: int = 1 << 20) -> None:
    """A Parquet file of `rows` rows of ints, random floats (incompressible) and short strings."""
    if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    rng = np.random.default_rng(4)
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64()), ("y", pa.float64()),
                        ("z", pa.float64()), ("category", pa.string()), ("label", pa.string())])
    tmp = path + ".part"
    with pq.ParquetWriter(tmp, schema, compression="snappy") as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = pa.array(np.arange(start, start + n))
            w.write_table(pa.table({
                "id": ids, "x": rng.random(n), "y": rng.normal(size=n),
                "z": rng.exponential(size=n),
                "category": pa.array(np.array(CATEGORIES)[rng.integers(0, 5, n)]),
                "label": pc.binary_join_element_wise("row-", pc.cast(ids, pa.string()), ""),
            }, schema=schema))
    os.replace(tmp, path)


CATALOG = """
datasets:
{items}
"""
ITEM = """  - id: {id}
    title: {id}
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: file, uri: {path}, format: parquet}}
"""
POLICY = "rules:\n  - match: {classification: public}\n    decision: auto\n    max_days: 1\n"


@contextmanager
def running_hub(datasets: dict[str, str]) -> Iterator[Hub]:
    """A real hub whose catalogue holds these {id: parquet path}, each granted to `analyst`."""
    state = tempfile.mkdtemp(prefix="dataaccess-bench-")
    catalog, policy = os.path.join(state, "catalog.yaml"), os.path.join(state, "policy.yaml")
    with open(catalog, "w") as f:
        f.write(CATALOG.format(items="".join(ITEM.format(id=k, path=v)
                                             for k, v in datasets.items())))
    with open(policy, "w") as f:
        f.write(POLICY)
    hub = Hub(state=os.path.join(state, "hub"), catalog=catalog, policy=policy,
              db_url=f"sqlite:///{state}/dataaccess.sqlite")
    os.makedirs(hub.state, exist_ok=True)
    hub.start()
    try:
        for ds in datasets:
            r = hub.call("analyst", "POST", "/requests",
                         json={"dataset": ds, "justification": "benchmark"})
            assert r.status_code == 201 and r.json()["status"] == "approved", r.text
        # the client speaks to the service directly, as a kernel does (DATAACCESS_URL)
        os.environ["DATAACCESS_URL"] = (f"http://127.0.0.1:{hub.service_port}"
                                        "/services/dataaccess/")
        os.environ["JUPYTERHUB_API_TOKEN"] = hub.token("analyst")
        yield hub
    finally:
        hub.stop()


def service_pid(hub: Hub) -> int:
    """The pid of the dataaccess service the hub started (a child of the hub process)."""
    assert hub.proc is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == hub.proc.pid and b"jupyterhub_dataaccess" in cmd and b"service" in cmd:
                return int(entry)
        time.sleep(0.2)
    raise RuntimeError("the dataaccess service process was not found")


def status_mb(pid: int, field: str) -> float:
    """VmHWM (peak RSS) or VmRSS of a process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Start a new peak-RSS measurement of the process (Linux: clear_refs 5 resets VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def own_peak_mb() -> float:
    return status_mb(os.getpid(), "VmHWM")
