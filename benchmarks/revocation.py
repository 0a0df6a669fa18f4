"""Revocation: from DELETE /grants/{id} returning to the first refused read of a running reader.

A real hub. For each trial the analyst gets a fresh auto grant on a small dataset; a reader thread
reads it in a loop (GET /datasets/{id}/data?format=arrow through the proxy, as da.load does); once
it has read for a moment, a steward revokes the grant. Measured per trial:

  after return  first refused read's end − DELETE's return      (goal ≤ 1 s)
  after send    first refused read's end − DELETE's start
  late reads    reads that *started* after DELETE returned and still got data (must be 0)

Baseline from the same run: one read's latency (the reader loop's own period).

    .venv/bin/python benchmarks/revocation.py [--trials 15]
"""

from __future__ import annotations

import argparse
import threading
import time

import _common as c
import requests

FIXED = """\
  - id: rv
    title: Revocation target
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv}}
"""


def reader(url: str, token: str, stop: threading.Event, log: list[tuple[float, float, int]]
           ) -> None:
    s = requests.Session()
    s.headers["Authorization"] = f"token {token}"
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        t0 = time.perf_counter()
        r = s.get(url, params={"format": "arrow"}, timeout=30)
        _ = r.content
        log.append((t0, time.perf_counter(), r.status_code))
        if r.status_code == 403:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    args = ap.parse_args()
    c.machine()
    hub, _ = c.start_hub(50, fixed=FIXED, prefix="bench-revoke-", rate_limit=False)
    after_return, after_send, read_times, late = [], [], [], 0
    try:
        token = hub.token("analyst")
        url = f"{hub.api}/datasets/rv/data"
        steward = requests.Session()
        steward.headers["Authorization"] = f"token {hub.token('steward')}"
        for _ in range(args.trials):
            r = hub.call("analyst", "POST", "/requests",
                         json={"dataset": "rv", "justification": "benchmark"})
            assert r.status_code == 201 and r.json()["status"] == "approved", r.text
            grant = hub.call("analyst", "GET", "/grants",
                             params={"dataset": "rv", "active": "true"}).json()["items"][0]
            log: list[tuple[float, float, int]] = []
            stop = threading.Event()
            t = threading.Thread(target=reader, args=(url, token, stop, log), daemon=True)
            t.start()
            time.sleep(0.4)
            t_send = time.perf_counter()
            d = steward.delete(f"{hub.api}/grants/{grant['id']}", timeout=30)
            t_ret = time.perf_counter()
            assert d.status_code == 200, d.text
            t.join(10)
            stop.set()
            refused = [e for s0, e, st in log if st == 403]
            if not refused:
                raise RuntimeError("the reader never saw a refusal within 10 s")
            after_return.append(refused[0] - t_ret)
            after_send.append(refused[0] - t_send)
            late += sum(1 for s0, e, st in log if st == 200 and s0 > t_ret)
            read_times += [e - s0 for s0, e, st in log if st == 200]
    finally:
        hub.stop()
    base = c.summary(read_times)
    ar, as_ = c.summary(after_return), c.summary(after_send)
    c.table(f"Revocation to first refused read: ms, {args.trials} trials",
            ["measure", "p50", "p95", "max", "p95 ÷ one read"],
            [["baseline: one read (reader loop period)", base["p50"], base["p95"], base["max"],
              1.0],
             ["refused after DELETE returned", ar["p50"], ar["p95"], ar["max"],
              ar["p95"] / base["p95"]],
             ["refused after DELETE was sent", as_["p50"], as_["p95"], as_["max"],
              as_["p95"] / base["p95"]]])
    print(f"reads that started after DELETE returned and still got data: {late} (must be 0)")
    print("\n## Against the goals")
    print("revocation bites ≤ 1 s after DELETE returns (max):", c.verdict(ar["max"], 1000))
    return 0 if late == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
