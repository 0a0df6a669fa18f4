"""The pre_spawn_hook's cost with 10,000 grants in the service's database.

A real hub and service. The hook is the one configure_hub installs (hub.make_pre_spawn_hook), run in
this process against the running service with the analyst's token, on a stand-in KubeSpawner (so
the Kubernetes mount adapter runs too). Timed:

  GET /spawn   hub.fetch_spawn_plan, the call the hook makes (it writes a spawn.mounts audit record)
  whole hook   environment + GET /spawn + mounts

first on the empty database (baseline), then after 10,000 grants were written straight into it
(1,000 users × 10 grants, plus 20 for the analyst, 5 of them with mounts). Another baseline from
the same run: the Hub's own GET /hub/api/user, straight to the Hub as the hook would call it.

Goal: GET /spawn and the whole hook ≤ 50 ms (p95) with 10,000 grants.

    .venv/bin/python benchmarks/spawn_hook.py [--grants 10000] [--calls 60] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import _common as c
import requests

FIXED = "".join(f"""\
  - id: mnt-{i}
    title: Mountable {i}
    owner: steward
    stewards: {{{{users: [steward]}}}}
    classification: public
    source: {{{{kind: file, uri: {{data}}/penguins.csv}}}}
    mount: {{{{path: /penguins.csv, claim: datasets}}}}
""" for i in range(5))


class KubeSpawner:
    """A stand-in with what the hook and the Kubernetes adapter touch."""

    def __init__(self) -> None:
        self.user = SimpleNamespace(name="analyst")
        self.environment, self._log_name = {}, "analyst"
        self.volumes, self.volume_mounts = [], []


def fill(db_url: str, n_grants: int, ids: list[str]) -> float:
    """Write n_grants grants (with their approved requests) in one transaction; seconds taken."""
    from sqlalchemy import insert

    from jupyterhub_dataaccess.store import Database, Grant, Request

    t0 = time.perf_counter()
    db = Database(db_url)
    now = datetime.now(timezone.utc)
    reqs, grants = [], []
    users = [(f"user{u:04d}", 10) for u in range(n_grants // 10)] + [("analyst", 20)]
    rid = 1_000_000
    for user, k in users:
        for j in range(k):
            rid += 1
            ds = f"mnt-{j}" if user == "analyst" and j < 5 else ids[(rid * 7) % len(ids)]
            reqs.append({"id": rid, "dataset": ds, "user": user, "justification": "bench",
                         "days": 30.0, "status": "approved", "reason": "", "approvals_required": 0,
                         "created_at": now, "updated_at": now})
            grants.append({"id": rid, "dataset": ds, "user": user, "request_id": rid,
                           "created_at": now, "expires_at": now + timedelta(days=30),
                           "revoked_at": None, "revoked_by": None, "expiry_recorded": 0})
    with db.write() as s:
        s.execute(insert(Request), reqs)
        s.execute(insert(Grant), grants)
    db.dispose()
    return time.perf_counter() - t0


def measure(hub: c.BenchHub, calls: int) -> dict[str, list[float]]:
    from jupyterhub_dataaccess.hub import (
        SERVICE_PREFIX,
        fetch_spawn_plan,
        make_pre_spawn_hook,
        spawn_token,
    )

    token = hub.token("analyst")
    hub_token = spawn_token(hub.key_dir)  # what the hub's hook asks with
    root = f"http://127.0.0.1:{hub.service_port}{SERVICE_PREFIX}"
    hook = make_pre_spawn_hook(root, token=hub_token)
    hub_api = f"http://127.0.0.1:{hub.hub_port}/hub/api/user"

    async def go() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"GET /spawn": [], "whole hook": [], "mounts": []}
        for _ in range(5):
            await fetch_spawn_plan(root, hub_token, "analyst")
        for _ in range(calls):
            t0 = time.perf_counter()
            plan = await fetch_spawn_plan(root, hub_token, "analyst")
            out["GET /spawn"].append(time.perf_counter() - t0)
            spawner = KubeSpawner()
            t0 = time.perf_counter()
            await hook(spawner)
            out["whole hook"].append(time.perf_counter() - t0)
            out["mounts"].append(len(spawner.volume_mounts))
        out["grants"] = [len(plan["grants"])]
        return out

    s = requests.Session()
    s.headers["Authorization"] = f"token {token}"
    hub_times = c.timed(lambda: s.get(hub_api, timeout=30).raise_for_status(), calls)
    res = asyncio.run(go())
    res["hub /api/user (direct)"] = hub_times
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grants", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--postgres", action="store_true", help="the service on PostgreSQL")
    args = ap.parse_args()
    c.machine()
    pg = None
    if args.postgres:
        from pgutil import start_postgres

        pg = start_postgres()
    hub, tmp = c.start_hub(2000, fixed=FIXED, prefix="bench-spawn-", db_url=pg.url if pg else "")
    try:
        empty = measure(hub, args.calls)
        ids = [f"ds-{i:06d}" for i in range(2000)]
        took = fill(hub.db_url, args.grants, ids)
        print(f"wrote {args.grants + 20} grants in {took:.1f} s", flush=True)
        full = measure(hub, args.calls)
    finally:
        hub.stop()
        if pg:
            pg.stop("immediate")
    assert full["grants"] == [20] and full["mounts"][-1] == 5, (full["grants"], full["mounts"][-1])
    db = "PostgreSQL" if pg else "SQLite"
    rows = []
    hub_base = c.summary(full["hub /api/user (direct)"])
    rows.append(["hub GET /hub/api/user (direct)", hub_base["p50"], hub_base["p95"], "", "", ""])
    for name in ("GET /spawn", "whole hook"):
        e, f = c.summary(empty[name]), c.summary(full[name])
        rows.append([name, e["p50"], e["p95"], f["p50"], f["p95"], f["p95"] / e["p95"]])
    c.table(f"pre_spawn_hook on {db}: ms, {args.calls} calls each",
            ["measure", "p50 empty DB", "p95 empty DB", f"p50 {args.grants} grants",
             f"p95 {args.grants} grants", "p95 ratio"], rows)
    print("\n## Against the goals")
    print(f"GET /spawn with {args.grants} grants ≤ 50 ms (p95):",
          c.verdict(c.summary(full["GET /spawn"])["p95"], 50))
    print(f"whole hook with {args.grants} grants ≤ 50 ms (p95):",
          c.verdict(c.summary(full["whole hook"])["p95"], 50))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
