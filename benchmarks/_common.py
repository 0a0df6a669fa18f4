"""Shared pieces of the benchmarks: a real hub (tests/hubutil.Hub), generated catalogues and data
files, the service's memory from outside (/proc/<pid>/status), statistics, side-by-side tables and
plots.

Every benchmark starts real processes on 127.0.0.1 only, bounds every loop in count and time, and
prints its figures next to a baseline measured in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TESTS = os.path.join(REPO, "tests")
IMAGES = os.path.join(REPO, "docs", "images")
for _p in (TESTS, REPO):
    if _p not in sys.path:
        sys.path.insert(0, _p)
# the hub, the proxy and the service find the project's tools next to this interpreter
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

from hubutil import ADMIN_TOKEN, Hub, Kernel, status_mb  # noqa: E402
from policies import PUBLIC_ONE_DAY, SESSION_POLICY  # noqa: E402

__all__ = ["ADMIN_TOKEN", "BenchHub", "Kernel", "machine", "percentile", "summary", "table"]


WORDS = ("ocean temperature salinity penguins flights delays weather sales revenue churn "
         "clinical trial genome census income housing traffic sensor energy grid retail "
         "inventory fraud claims survey education hospital admissions payroll logistics "
         "shipping satellite imagery rainfall river flow air quality emissions").split()
CLASSES = ("public", "internal", "confidential", "restricted")


def write_catalog(path: str, n: int, source_uri: str, fixed: str = "") -> list[str]:
    """A catalogue of `n` generated datasets (all reading `source_uri`), plus `fixed` YAML items.

    Dataset i is `ds-<i>`; its title/description/tags use a deterministic mix of WORDS so that a
    query such as "salinity" matches about 1 in 10 datasets. Returns the generated ids.
    """
    ids = []
    with open(path, "w") as f:
        f.write("datasets:\n")
        if fixed:
            f.write(fixed.rstrip("\n") + "\n")
        for i in range(n):
            w = [WORDS[(i * k + k) % len(WORDS)] for k in (1, 3, 7, 11)]
            ds = f"ds-{i:06d}"
            ids.append(ds)
            f.write(
                f"  - id: {ds}\n"
                f"    title: {w[0].title()} {w[1]} {i}\n"
                f"    description: Generated dataset {i} about {w[2]} and {w[3]}, for benchmarks.\n"
                f"    owner: steward\n"
                f"    stewards: {{users: [steward], groups: [stewards]}}\n"
                f"    classification: {CLASSES[i % 4]}\n"
                f"    tags: [{w[1]}, {w[3]}]\n"
                f"    source: {{kind: file, uri: {source_uri}}}\n")
    return ids


def write_small_data(directory: str) -> str:
    """A small real table (Palmer penguins, 344 rows) as CSV; returns its path."""
    import palmerpenguins

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "penguins.csv")
    if not os.path.exists(path):
        palmerpenguins.load_penguins().to_csv(path, index=False)
    return path


class BenchHub(Hub):
    """The test hub with the hub's own log at INFO (as in production, not DEBUG)."""

    extra_config: str = ""

    def write_config(self) -> str:
        path = super().write_config()
        with open(path, "a") as f:
            f.write('\nc.JupyterHub.log_level = "INFO"\n' + self.extra_config)
        return path


NO_RATE_LIMIT = """
for _s in c.JupyterHub.services:
    if _s["name"] == "dataaccess":
        _s["command"] = [*_s["command"], "--DataAccessService.rate_limit=0"]
"""


def token_cache(seconds: float | None) -> str:
    """Config lines giving the service a token cache of `seconds` (None: the shipped default)."""
    if seconds is None:
        return ""
    return f"""
for _s in c.JupyterHub.services:
    if _s["name"] == "dataaccess":
        _s["environment"]["DATAACCESS_TOKEN_CACHE_SECONDS"] = "{seconds}"
"""


def start_hub(n_datasets: int, *, fixed: str = "", db_url: str = "", prefix: str = "bench-",
              extra_config: str = "", rate_limit: bool = True, timeout: float = 300
              ) -> tuple[BenchHub, str]:
    """A running hub whose catalogue has `n_datasets` generated datasets. Returns (hub, tmpdir).

    rate_limit=False turns the service's per-user limiter off, for benchmarks where one user
    calls back to back faster than a person could (latency loops), never for the load test.
    """
    tmp = tempfile.mkdtemp(prefix=prefix)
    data = os.path.join(tmp, "data")
    small = write_small_data(data)
    catalog = os.path.join(tmp, "catalog.yaml")
    policy = os.path.join(tmp, "policy.yaml")
    write_catalog(catalog, n_datasets, small, fixed=fixed.format(data=data))
    with open(policy, "w") as f:
        f.write(SESSION_POLICY)
    hub = BenchHub(state=os.path.join(tmp, "hub"), catalog=catalog, policy=policy,
                   db_url=db_url or f"sqlite:///{tmp}/dataaccess.sqlite")
    hub.extra_config = extra_config + ("" if rate_limit else NO_RATE_LIMIT)
    os.makedirs(hub.state, exist_ok=True)
    hub.start(timeout=timeout)
    return hub, tmp


# -- statistics and reports ----------------------------------------------------------------------

def percentile(samples: Iterable[float], p: float) -> float:
    xs = sorted(samples)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of a list of seconds, in milliseconds."""
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95),
            "p99": percentile(ms, 99), "mean": statistics.fmean(ms) if ms else float("nan"),
            "max": max(ms) if ms else float("nan")}


def timed(fn: Callable[[], Any], n: int, warmup: int = 3, max_seconds: float = 60) -> list[float]:
    """Seconds of each of up to `n` calls of fn (after `warmup` untimed calls), bounded in time."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(out) < n and time.monotonic() < deadline:
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_of_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median, key by key, of several runs' summaries."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table (also valid Markdown) that the docs can take as it is."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

    out = [f"\n### {title}\n", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    text = (f"machine: {os.cpu_count()} CPUs ({cpu}), {mem} memory, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")
    print(text, flush=True)
    return text


def plot(name: str, draw: Callable[[Any, Any], None], title: str) -> str:
    """Save docs/images/bench-<name>.png drawn by draw(fig, ax)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(IMAGES, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    draw(fig, ax)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = os.path.join(IMAGES, f"bench-{name}.png")
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: {os.path.relpath(path, REPO)}", flush=True)
    return path


def verdict(value: float, goal: float, unit: str = "ms") -> str:
    return f"{'MET' if value <= goal else 'MISSED'} ({value:.1f} {unit} vs goal {goal:g} {unit})"


# -- large data files and the service's memory -----------------------------------------------

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
    source: {source}
{extra}"""


@contextmanager
def running_hub(datasets: dict[str, str | tuple[str, str]]) -> Iterator[Hub]:
    """A real hub whose catalogue holds these {id: parquet path, or (path, more catalogue
    lines)}, each granted to `analyst`. A "path" that starts with "{" is the source itself, as a
    YAML flow mapping (an Iceberg table, say)."""
    state = tempfile.mkdtemp(prefix="dataaccess-bench-")
    catalog, policy = os.path.join(state, "catalog.yaml"), os.path.join(state, "policy.yaml")
    with open(catalog, "w") as f:
        items = [(k, v) if isinstance(v, tuple) else (k, (v, "")) for k, v in datasets.items()]
        f.write(CATALOG.format(items="".join(
            ITEM.format(id=k, extra=extra, source=path if path.startswith("{")
                        else f"{{kind: file, uri: {path}, format: parquet}}")
            for k, (path, extra) in items)))
    with open(policy, "w") as f:
        f.write(PUBLIC_ONE_DAY)
    hub = Hub(state=os.path.join(state, "hub"), catalog=catalog, policy=policy,
              db_url=f"sqlite:///{state}/dataaccess.sqlite",
              extra=", settings={'query_timings': True}")  # query.py prints Server-Timing
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


def reset_peak(pid: int) -> None:
    """Start a new peak-RSS measurement of the process (Linux: clear_refs 5 resets VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def own_peak_mb() -> float:
    return status_mb(os.getpid(), "VmHWM")
