"""Catalogue search through the service vs the Hub's own authenticated round trip.

For each catalogue size (2,000, 10,000 and 100,000 generated datasets) a real hub is started, and a
user token times, through the proxy and interleaved request by request:

  baseline  GET /hub/api/user                                   (the Hub authenticates the token)
  search    GET /services/dataaccess/api/v1/datasets?q=salinity (matches ~1 in 10 datasets)
  browse    GET /services/dataaccess/api/v1/datasets            (first page, no query)
  by id     GET /services/dataaccess/api/v1/datasets?q=ds-000042 (one match)

Goals: search ≤ 1.5× the Hub round trip at 2,000 datasets with the shipped defaults; search p50
< 50 ms at 100,000.

    .venv/bin/python benchmarks/search.py [--sizes 2000,10000,100000] [--runs 5] [--requests 40]
        [--token-cache SECONDS]
"""

from __future__ import annotations

import argparse
import time

import _common as c
import requests

QUERIES = {"search": "salinity", "browse": "", "by id": "ds-000042"}


def measure(hub: c.BenchHub, runs: int, n: int) -> dict[str, list[dict[str, float]]]:
    token = hub.token("analyst")
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    targets = {"hub /api/user": (f"{hub.url}/hub/api/user", {})}
    for name, q in QUERIES.items():
        targets[name] = (f"{hub.api}/datasets", {"q": q} if q else {})

    def get(url: str, params: dict) -> None:
        r = session.get(url, params=params, timeout=60)
        r.raise_for_status()

    for url, params in targets.values():  # warm up: token caches, connections, imports
        for _ in range(5):
            get(url, params)
    out: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(runs):
        samples: dict[str, list[float]] = {name: [] for name in targets}
        deadline = time.monotonic() + 120
        for _ in range(n):  # interleaved, so load from elsewhere hits all targets alike
            for name, (url, params) in targets.items():
                t0 = time.perf_counter()
                get(url, params)
                samples[name].append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
        for name, xs in samples.items():
            out[name].append(c.summary(xs))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=40, help="requests per target per run")
    ap.add_argument("--token-cache", type=float, default=None,
                    help="the service's token_cache_seconds (default: the shipped default, 5; "
                         "0 asks the Hub on every request)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    c.machine()
    results: dict[int, dict[str, dict[str, float]]] = {}
    for size in sizes:
        t0 = time.monotonic()
        hub, _ = c.start_hub(size, prefix=f"bench-search-{size}-", rate_limit=False,
                             extra_config=c.token_cache(args.token_cache))
        print(f"\nhub with {size} datasets up in {time.monotonic() - t0:.1f} s", flush=True)
        try:
            raw = measure(hub, args.runs, args.requests)
        finally:
            hub.stop()
        results[size] = {name: c.median_of_runs(rs) for name, rs in raw.items()}
        base = results[size]["hub /api/user"]
        rows = [[name, s["p50"], s["p95"], s["p50"] / base["p50"], s["p95"] / base["p95"]]
                for name, s in results[size].items()]
        c.table(f"{size} datasets: ms, median of {args.runs} runs × {args.requests} requests",
                ["target", "p50", "p95", "p50 ÷ hub", "p95 ÷ hub"], rows)

    print("\n## Against the goals")
    if 2000 in results:
        r = results[2000]
        ratio = r["search"]["p50"] / r["hub /api/user"]["p50"]
        print(f"search at 2,000 ≤ 1.5× hub round trip (p50): "
              f"{'MET' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}×: "
              f"{r['search']['p50']:.1f} ms vs {r['hub /api/user']['p50']:.1f} ms)")
    if 100000 in results:
        print("search p50 at 100,000 < 50 ms:",
              c.verdict(results[100000]["search"]["p50"], 50))

    def draw(fig, ax) -> None:
        xs = sorted(results)
        for name, style in (("hub /api/user", "k--"), ("search", "o-"), ("browse", "s-"),
                            ("by id", "^-")):
            ax.plot(xs, [results[x][name]["p50"] for x in xs], style, label=f"{name} p50")
        ax.plot(xs, [results[x]["search"]["p95"] for x in xs], "o:", color="C0", alpha=0.6,
                label="search p95")
        ax.axhline(50, color="red", lw=0.8, label="goal at 100k: 50 ms")
        ax.set_xscale("log")
        ax.set_xlabel("datasets in the catalogue")
        ax.set_ylabel("latency (ms)")
        ax.legend(fontsize=8)

    if len(results) > 1:
        c.plot("search", draw, "Catalogue search vs the Hub's own round trip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
