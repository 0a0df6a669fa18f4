"""Load test: hundreds of simulated users on loopback browsing, requesting, deciding and reading.

A real hub (2,000 generated datasets), 500 hub users created through the Hub's API with one token
each, and one asyncio client (aiohttp, a JupyterHub dependency; keep-alive connections like a
browser's) going through the proxy. Each user, after a random start within the ramp, does with
think times (exponential, mean --think s) between steps:

  browse   GET /datasets?q=<word>, GET /datasets (first page), GET /requests?scope=mine
  request  POST /requests for a small public dataset (auto) and for a confidential one (review)
  read     GET /datasets/lt-small/data?format=arrow (344 rows)

Two stewards loop over their review queue (GET /requests?scope=review&status=pending) and approve
what they find ("decide"). Bounded: each user does its script once; the whole run stops at
--max-seconds. Reported: p50/p95/p99 per kind and overall, errors (any status other than the one
expected), throughput; and, as the baseline from the same run, the Hub's own GET /hub/api/user
made by the same users in the same loop.

Goal: no errors, p95 ≤ 250 ms on a 2-core machine.

    .venv/bin/python benchmarks/load_test.py [--users 500] [--think 5] [--ramp 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import _common as c

FIXED = """\
  - id: lt-small
    title: Small dataset read under load
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    tags: [load]
    source: {{kind: file, uri: {data}/penguins.csv}}
"""
N_DATASETS = 2000


class Recorder:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []

    async def call(self, session, kind: str, method: str, url: str, expect: tuple[int, ...],
                   **kw) -> tuple[int, object]:
        t0 = time.perf_counter()
        try:
            async with session.request(method, url, **kw) as r:
                body = await r.read()
                status = r.status
        except Exception as e:  # a refused or broken connection is an error of the run
            status, body = 0, repr(e).encode()
        self.times[kind].append(time.perf_counter() - t0)
        if status not in expect:
            self.errors[kind] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind} {method} {url} -> {status} {body[:200]!r}")
        return status, body


def make_users(hub: c.BenchHub, n: int) -> dict[str, str]:
    names = [f"lt{i:04d}" for i in range(n)]
    for i in range(0, n, 100):
        r = hub.hub_api("POST", "/users", json={"usernames": names[i:i + 100]})
        assert r.status_code in (201, 409), r.text

    def token(name: str) -> str:
        r = hub.hub_api("POST", f"/users/{name}/tokens", json={"note": "load test"})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(names, pool.map(token, names), strict=True))


async def run(hub: c.BenchHub, tokens: dict[str, str], stewards: dict[str, str], think: float,
              ramp: float, max_seconds: float) -> tuple[Recorder, float, int]:
    import aiohttp

    rec = Recorder()
    api = hub.api
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    public = [f"ds-{i:06d}" for i in range(0, N_DATASETS, 4)]
    confidential = [f"ds-{i:06d}" for i in range(2, N_DATASETS, 4)]
    words = c.WORDS
    done_users = 0
    end = time.monotonic() + max_seconds

    async def pause() -> None:
        await asyncio.sleep(min(random.expovariate(1 / think), 4 * think))

    async def user(i: int, name: str, token: str) -> None:
        nonlocal done_users
        h = {"Authorization": f"token {token}"}
        await asyncio.sleep(random.uniform(0, ramp))
        async with aiohttp.ClientSession(connector=conn, connector_owner=False, headers=h) as s:
            steps = [
                ("hub /api/user", "GET", f"{hub.url}/hub/api/user", (200,), {}),
                ("browse", "GET", f"{api}/datasets", (200,), {"params": {"q": words[i % len(words)]}}),
                ("browse", "GET", f"{api}/datasets", (200,), {}),
                ("request", "POST", f"{api}/requests", (201,),
                 {"json": {"dataset": "lt-small", "justification": "load test"}}),
                ("read", "GET", f"{api}/datasets/lt-small/data", (200,),
                 {"params": {"format": "arrow"}}),
                ("request", "POST", f"{api}/requests", (201,),
                 {"json": {"dataset": confidential[i % len(confidential)],
                           "justification": "load test, review tier", "days": 7}}),
                ("hub /api/user", "GET", f"{hub.url}/hub/api/user", (200,), {}),
                ("request", "POST", f"{api}/requests", (201,),
                 {"json": {"dataset": public[i % len(public)], "justification": "load test"}}),
                ("browse", "GET", f"{api}/requests", (200,), {"params": {"scope": "mine"}}),
                ("read", "GET", f"{api}/datasets/lt-small/data", (200,),
                 {"params": {"format": "arrow"}}),
            ]
            for kind, method, url, expect, kw in steps:
                if time.monotonic() > end:
                    return
                await rec.call(s, kind, method, url, expect, **kw)
                await pause()
        done_users += 1

    async def steward(name: str, token: str) -> None:
        import json

        h = {"Authorization": f"token {token}"}
        async with aiohttp.ClientSession(connector=conn, connector_owner=False, headers=h) as s:
            while time.monotonic() < end and not all_users.done():
                st, body = await rec.call(s, "decide (queue)", "GET", f"{api}/requests", (200,),
                                          params={"scope": "review", "status": "pending",
                                                  "limit": "20"})
                items = json.loads(body)["items"] if st == 200 else []
                for req in items:
                    # the other steward may have decided it a moment earlier: 409 is expected
                    await rec.call(s, "decide", "POST", f"{api}/requests/{req['id']}/approve",
                                   (200, 409), json={"comment": "ok"})
                await asyncio.sleep(1.0)

    t0 = time.monotonic()
    users = [user(i, n, t) for i, (n, t) in enumerate(tokens.items())]
    all_users = asyncio.ensure_future(asyncio.gather(*users))
    await asyncio.gather(all_users, *(steward(n, t) for n, t in stewards.items()))
    elapsed = time.monotonic() - t0
    await conn.close()
    return rec, elapsed, done_users


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--think", type=float, default=5.0, help="mean think time between steps (s)")
    ap.add_argument("--ramp", type=float, default=20.0, help="users start within this many s")
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    random.seed(args.seed)
    c.machine()
    hub, _ = c.start_hub(N_DATASETS, fixed=FIXED, prefix="bench-load-")
    try:
        t0 = time.monotonic()
        tokens = make_users(hub, args.users)
        print(f"{args.users} users and tokens made in {time.monotonic() - t0:.1f} s", flush=True)
        stewards = {n: hub.token(n) for n in ("steward", "steward2")}
        rec, elapsed, done = asyncio.run(run(hub, tokens, stewards, args.think, args.ramp,
                                             args.max_seconds))
        # every review-tier request was decided by a steward or is still queued: count them
        pending = hub.call("admin", "GET", "/requests",
                           params={"scope": "review", "status": "pending"}).json()["total"]
    finally:
        hub.stop()
    service_kinds = [k for k in rec.times if k != "hub /api/user"]
    all_service = [t for k in service_kinds for t in rec.times[k]]
    total_ops = sum(len(v) for v in rec.times.values())
    base = c.summary(rec.times["hub /api/user"])
    rows = [["baseline: hub /api/user", base["n"], base["p50"], base["p95"], base["p99"], 1.0,
             rec.errors.get("hub /api/user", 0)]]
    for k in ("browse", "request", "read", "decide (queue)", "decide"):
        s = c.summary(rec.times[k])
        rows.append([k, s["n"], s["p50"], s["p95"], s["p99"], s["p95"] / base["p95"],
                     rec.errors.get(k, 0)])
    s_all = c.summary(all_service)
    errors = sum(v for k, v in rec.errors.items())
    rows.append(["all service calls", s_all["n"], s_all["p50"], s_all["p95"], s_all["p99"],
                 s_all["p95"] / base["p95"], errors - rec.errors.get("hub /api/user", 0)])
    c.table(f"{args.users} users, think {args.think} s, {elapsed:.0f} s, "
            f"{total_ops / elapsed:.0f} requests/s: ms",
            ["kind", "n", "p50", "p95", "p99", "p95 ÷ hub", "errors"], rows)
    print(f"users that finished their script: {done} of {args.users}; review requests still "
          f"pending at the end: {pending}")
    for e in rec.error_samples:
        print("error:", e)
    print("\n## Against the goals")
    print(f"no errors: {'MET' if errors == 0 else 'MISSED'} ({errors} errors)")
    print("p95 of all service calls ≤ 250 ms:", c.verdict(s_all["p95"], 250))

    def draw(fig, ax) -> None:
        kinds = ["hub /api/user", "browse", "request", "read", "decide"]
        data = [[t * 1000 for t in rec.times[k]] for k in kinds]
        ax.boxplot(data, tick_labels=kinds, whis=(5, 95), showfliers=False)
        ax.axhline(250, color="red", lw=0.8, label="goal: p95 ≤ 250 ms")
        ax.set_ylabel("latency (ms), box = p25..p75, whiskers = p5..p95")
        ax.legend(fontsize=8)

    c.plot("load", draw, f"{args.users} users on a 2-core machine ({total_ops / elapsed:.0f} req/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
