"""Dask on tickets (issue 13): a real distributed.LocalCluster with worker processes, started from
a real kernel in the session hub, computes on governed data with no token in its workers."""

from __future__ import annotations

import json

import pytest
from conftest import HYBRID_ROWS
from hubutil import Hub, Kernel
from secutil import audit, fresh_request, grant_of

pytestmark = pytest.mark.once  # one run: the database side is covered by test_tickets.py

MASKED = "penguins-masked"

CLUSTER = """
import os, json
import jupyterhub_dataaccess as da
from distributed import Client, LocalCluster
with da.without_token():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
client = Client(cluster)
token = os.environ["JUPYTERHUB_API_TOKEN"]
def holders():
    return sorted(k for k, v in os.environ.items()
                  if k in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN") or v == token)
seen = client.run(holders)
pids = client.run(os.getpid)
print("ENV", json.dumps({"seen": sorted(seen.values()), "kernel": holders(),
                         "pids": sorted(pids.values()), "me": os.getpid()}))
"""

COMPUTE = """
import pandas as pd
ddf = da.load("penguins-masked", as_="dask", columns=["species", "island", "body_mass_g", "sex"],
              where="species != 'Chinstrap'")
whole = da.load("penguins-masked", columns=["species", "island", "body_mass_g", "sex"])
whole = whole[whole.species != "Chinstrap"]
sizes = ddf.groupby("species").size().compute().sort_index()
expected = whole.groupby("species").size().sort_index()
print("OUT", json.dumps({
    "npartitions": ddf.npartitions, "columns": list(ddf.columns),
    "meta_matches": list(map(str, ddf.dtypes)) == list(map(str, ddf.compute().dtypes)),
    "sizes": sizes.to_dict(), "expected": expected.to_dict(),
    "sex": sorted(ddf.sex.unique().compute().tolist()),
    "rows": int(ddf.shape[0].compute()),
    "hashes_equal": sorted(ddf.body_mass_g.dropna().compute().tolist())
                    == sorted(whole.body_mass_g.dropna().tolist()),
}))
"""

SQL = """
plan = da.scan("flights-sql", columns=["carrier", "delay"])
ddf = da.load("flights-sql", as_="dask", columns=["carrier", "delay"])
whole = da.load("flights-sql", columns=["carrier", "delay"])
sums = ddf.groupby("carrier").delay.sum().compute().sort_index()
print("SQL", json.dumps({
    "npartitions": ddf.npartitions, "plan": len(plan["partitions"]),
    "per_partition": [int(n) for n in ddf.map_partitions(len).compute()],
    "sums": sums.to_dict(), "expected": whole.groupby("carrier").delay.sum().sort_index().to_dict(),
}))
"""

HYBRID = """
ddf = da.load("hybrid-governed", as_="dask")
whole = da.load("hybrid-governed")
got = ddf.compute().reset_index(drop=True)
def values(frame):  # (Dask makes text its own string dtype: compare values, nulls as None)
    return frame.astype(object).where(frame.notna(), None).values.tolist()
print("HYBRID", json.dumps({"npartitions": ddf.npartitions, "rows": len(got),
                            "columns": list(got.columns) == list(whole.columns),
                            "equal": values(got) == values(whole)}))
client.close(); cluster.close()
"""


def _out(result: dict, tag: str) -> dict:
    assert result["error"] is None, result
    line = [x for x in result["stdout"].splitlines() if x.startswith(tag + " ")]
    assert line, result
    return json.loads(line[-1][len(tag) + 1:])


def test_dask_workers_without_a_token_compute_a_governed_dataset_through_tickets(
        hub: Hub, analyst_kernel: Kernel):
    """When a kernel starts a LocalCluster of two worker processes with da.without_token() and
    loads a masked, filtered dataset as_="dask", Then no worker holds the server's token, there
    is a partition per ticket, and a group-by computed on the workers equals the same
    computation on da.load's rows (masks, row filter, columns and where honoured), and the
    frame's meta is what its partitions hold. A SQL table the catalogue splits by a key
    gives a Dask partition per range, and its sums are da.load's. A governed Parquet dataset
    whose row filter the statistics prove is fetched as hybrids, equal to da.load's rows."""
    req = fresh_request(hub, "analyst", MASKED)
    assert hub.call("steward", "POST", f"/requests/{req['id']}/approve",
                    json={"comment": "ok"}).status_code == 200
    grant_of(hub, "analyst", MASKED)
    env = _out(analyst_kernel.run(CLUSTER, timeout=180), "ENV")
    assert len(env["pids"]) == 2 and env["me"] not in env["pids"]  # worker processes
    assert "JUPYTERHUB_API_TOKEN" in env["kernel"]  # the kernel has it (and keeps it)...
    assert env["seen"] == [[], []]  # ...but nothing in the workers' environment holds it
    out = _out(analyst_kernel.run(COMPUTE, timeout=180), "OUT")
    # a partition per row group the row filter may keep (the all-Chinstrap one is ruled out)
    assert out["npartitions"] == 3 and out["columns"] == ["species", "island", "body_mass_g",
                                                          "sex"]
    assert out["meta_matches"] and out["sizes"] == out["expected"] and out["rows"] > 0
    assert set(out["sizes"]) == {"Adelie", "Gentoo"} and out["sex"] == ["REDACTED"]
    assert out["hashes_equal"]
    # a SQL table the catalogue splits by a key: a Dask partition per range
    grant_of(hub, "analyst", "flights-sql")
    sql = _out(analyst_kernel.run(SQL, timeout=180), "SQL")
    assert sql["npartitions"] == sql["plan"] >= 4 and all(n > 0 for n in sql["per_partition"])
    assert sql["sums"] == sql["expected"] and set(sql["sums"]) == {"AA", "UA", "DL"}
    # a governed Parquet dataset whose row filter the statistics prove: the tasks' fetches are
    # hybrids (the unmasked columns as byte ranges), equal to da.load's rows
    grant_of(hub, "analyst", "hybrid-governed")
    before = max([r["seq"] for r in audit(hub, dataset="hybrid-governed")], default=0)
    hybrid = _out(analyst_kernel.run(HYBRID, timeout=180), "HYBRID")
    assert hybrid["npartitions"] > 2 and hybrid["rows"] == HYBRID_ROWS
    assert hybrid["equal"] and hybrid["columns"]
    reads = [r for r in audit(hub, dataset="hybrid-governed", action="data.read")
             if r["seq"] > before]
    assert len(reads) > hybrid["npartitions"]  # (the tasks' fetches and da.load's)
    assert {r["detail"]["format"] for r in reads} == {"parquet-ranges"}
