"""Time to data: from the request to rows in a real kernel, per policy tier.

A real hub, the analyst's real server and a real kernel. Each trial runs in the kernel

    t0 = perf_counter(); da.request(ID, justification=...); df = da.load(ID); t1 = perf_counter()

  auto tier    a public dataset: the policy grants at once (goal ≤ 1 s)
  review tier  a confidential dataset: a steward, polling the review queue through the API every
               20 ms, approves as soon as the request appears; the kernel waits with
               da.request(..., wait=True, poll=0.05)

Between trials a steward revokes the grant (DELETE /grants/{id}) so the next request is new.
Baselines from the same run: an empty cell (the kernel round trip) and da.load alone of a dataset
already granted (the data path without the request).

    .venv/bin/python benchmarks/time_to_data.py [--trials 7]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import _common as c

FIXED = """\
  - id: tt-auto
    title: Time to data, auto tier
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv}}
  - id: tt-review
    title: Time to data, review tier
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: confidential
    source: {{kind: file, uri: {data}/penguins.csv}}
  - id: tt-granted
    title: Already granted
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv}}
"""

CELL = """
import json, time
import jupyterhub_dataaccess as da
t0 = time.perf_counter()
r = da.request({ds!r}, justification="benchmark: time to data", wait={wait}, poll=0.05,
               timeout=30)
t1 = time.perf_counter()
df = da.load({ds!r})
t2 = time.perf_counter()
print(json.dumps({{"status": r["status"], "rows": len(df), "request": t1 - t0, "load": t2 - t1,
                  "total": t2 - t0}}))
"""

LOAD_ONLY = """
import json, time
import jupyterhub_dataaccess as da
t0 = time.perf_counter(); df = da.load("tt-granted"); t1 = time.perf_counter()
print(json.dumps({"rows": len(df), "total": t1 - t0}))
"""


def revoke_all(hub: c.BenchHub, dataset: str) -> None:
    grants = hub.call("steward", "GET", "/grants", params={"dataset": dataset, "active": "true"})
    for g in grants.json()["items"]:
        assert hub.call("steward", "DELETE", f"/grants/{g['id']}").status_code == 200


def steward_approver(hub: c.BenchHub, stop: threading.Event, clicks: list[float]) -> None:
    """Approves every pending tt-review request the moment it shows in the review queue."""
    while not stop.is_set():
        r = hub.call("steward", "GET", "/requests",
                     params={"scope": "review", "status": "pending", "dataset": "tt-review"})
        for req in r.json()["items"]:
            t0 = time.perf_counter()
            a = hub.call("steward", "POST", f"/requests/{req['id']}/approve",
                         json={"comment": "ok"})
            if a.status_code == 200:
                clicks.append(time.perf_counter() - t0)
        stop.wait(0.02)


def run_cell(kernel: c.Kernel, code: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = kernel.run(code, timeout=120)
    wall = time.perf_counter() - t0
    if out["error"]:
        raise RuntimeError(f"kernel error: {out['error']}\n{out['stderr']}")
    return json.loads(out["stdout"].strip().splitlines()[-1]), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=7)
    args = ap.parse_args()
    c.machine()
    hub, _ = c.start_hub(50, fixed=FIXED, prefix="bench-ttd-", rate_limit=False)
    try:
        hub.start_server("analyst")
        kernel = c.Kernel(hub, "analyst")
        kernel.run("import jupyterhub_dataaccess, pandas, pyarrow")  # imports out of the timing
        assert hub.call("analyst", "POST", "/requests", json={
            "dataset": "tt-granted", "justification": "baseline"}).status_code == 201
        for _ in range(2):  # warm: the client's connection, the reader's first open
            run_cell(kernel, LOAD_ONLY)
        empty, load_only = [], []
        for _ in range(args.trials):
            empty.append(_empty(kernel))
            load_only.append(run_cell(kernel, LOAD_ONLY)[0]["total"])
        tiers: dict[str, dict[str, list[float]]] = {}
        clicks: list[float] = []
        stop = threading.Event()
        approver = threading.Thread(target=steward_approver, args=(hub, stop, clicks), daemon=True)
        approver.start()
        try:
            for tier, ds, wait in (("auto", "tt-auto", False), ("review", "tt-review", True)):
                rec: dict[str, list[float]] = {"total": [], "request": [], "load": [],
                                               "cell wall": []}
                for _ in range(args.trials):
                    res, wall = run_cell(kernel, CELL.format(ds=ds, wait=wait))
                    assert res["status"] == "approved" and res["rows"] == 344, res
                    for k in ("total", "request", "load"):
                        rec[k].append(res[k])
                    rec["cell wall"].append(wall)
                    revoke_all(hub, ds)
                tiers[tier] = rec
        finally:
            stop.set()
            approver.join(10)
        kernel.shutdown()
    finally:
        hub.stop()

    base_empty = c.summary(empty)
    base_load = c.summary(load_only)
    rows = [["baseline: empty cell (kernel round trip)", base_empty["p50"], base_empty["p95"], ""],
            ["baseline: da.load of a granted dataset", base_load["p50"], base_load["p95"], ""]]
    for tier, rec in tiers.items():
        for k in ("total", "request", "load", "cell wall"):
            s = c.summary(rec[k])
            rows.append([f"{tier}: {k}", s["p50"], s["p95"],
                         f"{s['p50'] / base_load['p50']:.2f}× load" if k == "total" else ""])
    sc = c.summary(clicks)
    rows.append(["review: the steward's approve call", sc["p50"], sc["p95"], ""])
    c.table(f"Time to data in a real kernel: ms, {args.trials} trials each (344 rows)",
            ["measure", "p50", "p95", "ratio"], rows)
    print("\n## Against the goals")
    print("auto tier, request to rows ≤ 1 s (p95):",
          c.verdict(c.summary(tiers["auto"]["total"])["p95"], 1000))
    print("review tier, request to rows with an immediate steward (p50, no goal): "
          f"{c.summary(tiers['review']['total'])['p50']:.0f} ms")
    return 0


def _empty(kernel: c.Kernel) -> float:
    t0 = time.perf_counter()
    kernel.run("pass")
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
