"""Restarts on private real hubs: the Hub restarts under a running server (SECURITY-CASES 38), and
PostgreSQL restarts under load (39).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from conftest import ON_POSTGRES
from hubutil import Kernel, service_pid
from pgutil import start_postgres
from policies import PUBLIC_AUTO_CONFIDENTIAL_REVIEW
from reliabilityutil import (
    ConfiguredHub,
    active_grants,
    assert_json_error,
    fresh_grant,
    new_database,
    report,
    sql,
    write_config_files,
)

CATALOG = """
datasets:
  - id: penguins
    title: Palmer penguins
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv, format: csv}}
  - id: sales
    title: Internal sales
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: confidential
    source: {{kind: file, uri: {data}/sales.parquet}}
"""


UNAVAILABLE = {"status": 503,
               "message": "The data access database is not available right now; try again shortly"}


def _hub(tmp: str, config_files: dict, db_url: str, tail: str = "", **env: str
         ) -> ConfiguredHub:
    catalog, policy = write_config_files(tmp, CATALOG.format(data=config_files["data"]), PUBLIC_AUTO_CONFIDENTIAL_REVIEW)
    hub = ConfiguredHub(state=os.path.join(tmp, "hub"), catalog=catalog, policy=policy,
                        db_url=db_url, tail=tail, service_env=env)
    os.makedirs(hub.state, exist_ok=True)
    hub.start()
    return hub


# -- 38: the Hub restarts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keeping_hub(request, tmp_path_factory, config_files):
    """A hub that leaves user servers running when it stops (cleanup_servers = False)."""
    tmp = str(tmp_path_factory.mktemp("keeping"))
    pg = request.getfixturevalue("postgres") if ON_POSTGRES else None
    hub = _hub(tmp, config_files, new_database("", tmp, pg),
               tail="c.JupyterHub.cleanup_servers = False\n")
    yield hub
    if hub.proc is None or hub.proc.poll() is not None:
        hub.start()
    hub.stop_server("analyst")
    hub.stop()


def test_the_hub_restarts_and_grants_and_a_running_kernel_go_on(keeping_hub: ConfiguredHub):
    """Given a running server whose kernel has loaded granted data, When the Hub (with its proxy
    and the service) stops and starts again, Then grants are unchanged, the same server is still
    running without a respawn, and the same kernel loads the data again."""
    hub = keeping_hub
    fresh_grant(hub, "analyst", "penguins")
    r = hub.call("analyst", "POST", "/requests", json={"dataset": "sales", "justification": "x"})
    assert r.status_code == 201
    assert hub.call("steward", "POST", f"/requests/{r.json()['id']}/approve", json={}).ok
    server = hub.start_server("analyst")
    kernel = Kernel(hub, "analyst")
    load = ("import jupyterhub_dataaccess as da\n"
            "print(len(da.load('penguins')), len(da.load('sales')))")
    assert kernel.run(load)["stdout"].split() == ["344", "5000"]
    grants = hub.call("admin", "GET", "/grants").json()
    requests_before = hub.call("admin", "GET", "/requests", params={"scope": "review"}).json()
    old_service = service_pid(hub)

    hub.stop()
    assert hub.proc.poll() is not None
    t0 = time.monotonic()
    hub.start()
    report(f"case 38: the Hub and the service answered again {time.monotonic() - t0:.1f} s "
           "after the Hub was started again")

    assert service_pid(hub) != old_service
    assert hub.call("admin", "GET", "/grants").json() == grants
    assert hub.call("admin", "GET", "/requests",
                    params={"scope": "review"}).json() == requests_before
    model = hub.hub_api("GET", "/users/analyst").json()["servers"][""]
    assert model["ready"] and model["started"] == server["started"]
    out = kernel.run(load)
    assert out["error"] is None and out["stdout"].split() == ["344", "5000"], out
    # revocation still bites in that kernel after the restart
    (grant,) = active_grants(hub, "analyst", "sales")
    assert hub.call("admin", "DELETE", f"/grants/{grant['id']}").status_code == 200
    out = kernel.run("try:\n    da.load('sales')\nexcept da.AccessDenied:\n    print('denied')")
    assert out["stdout"].strip() == "denied", out
    kernel.shutdown()


# -- 39: PostgreSQL restarts under load ------------------------------------------------------------

@pytest.fixture(scope="module")
def own_postgres():
    """A PostgreSQL server of this module alone, so restarting it disturbs no other hub."""
    pg = start_postgres()
    yield pg
    pg.stop("immediate")


@pytest.fixture(scope="module")
def pg_hub(own_postgres, tmp_path_factory, config_files):
    # the load is about the database, not the per-user rate limit
    hub = _hub(str(tmp_path_factory.mktemp("pghub")), config_files, own_postgres.url,
               DATAACCESS_RATE_LIMIT="1000", DATAACCESS_RATE_BURST="10000")
    yield hub
    hub.stop()


def _load(hub: ConfiguredHub, stop: threading.Event, seen: list) -> None:
    """Reads, searches and writes in a loop; each answer recorded with its time."""
    n = 0
    while not stop.is_set():
        n += 1
        calls = [("analyst", "GET", "/datasets/penguins/preview", None),
                 ("nobody", "GET", "/datasets", None),
                 ("admin", "GET", "/grants", None)]
        if n % 3 == 0:
            calls.append(("nobody", "POST", "/requests",
                          {"dataset": "sales", "justification": f"load {n}"}))
        for user, method, path, body in calls:
            try:
                r = hub.call(user, method, path, json=body)
            except requests.RequestException as e:
                seen.append((time.monotonic(), path, type(e).__name__, None))
                continue
            seen.append((time.monotonic(), path, r.status_code, r))
            if r.status_code in (201, 409):  # withdraw it so the next POST makes a new one
                rid = (r.json() if r.status_code == 201 else r.json()["request"])["id"]
                w = hub.call("nobody", "POST", f"/requests/{rid}/withdraw")
                seen.append((time.monotonic(), "withdraw", w.status_code, w))


def test_postgresql_restarting_under_load_gives_clean_503s_then_service_again(
        pg_hub: ConfiguredHub, own_postgres):
    """Given reads and writes in a loop, When PostgreSQL restarts, Then answers are 2xx or a clean
    503 JSON (never a 500 or a traceback), and all succeed again without restarting the service."""
    hub = pg_hub
    fresh_grant(hub, "analyst", "penguins")
    pid = service_pid(hub)
    log_at = os.path.getsize(hub.log_path)
    stop, seen = threading.Event(), []
    workers = [threading.Thread(target=_load, args=(hub, stop, seen)) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    down = time.monotonic()
    own_postgres.stop("fast")
    time.sleep(2.0)
    own_postgres.start()
    up = time.monotonic()
    time.sleep(4.0)
    stop.set()
    for w in workers:
        w.join(60)

    # 409: a request made just before the database went away, and not yet withdrawn
    odd = [(p, s, r.text[:300]) for _, p, s, r in seen
           if s not in (200, 201, 503) and not (s == 409 and p in ("/requests", "withdraw"))]
    assert odd == []
    failed = [(at, r) for at, _, status, r in seen if status == 503]
    assert failed, "no request met the database down"
    for _, r in failed:
        assert_json_error(r, 503)
        assert r.json() == UNAVAILABLE
    assert all(down - 1 <= at for at, _ in failed)
    last_failure = max(at for at, _ in failed)
    after = [s for at, _, s, _ in seen if at > last_failure]
    assert after and set(after) <= {200, 201, 409}
    report(f"case 39: {len(seen)} answers, {len(failed)} clean 503s while PostgreSQL was down "
           f"{up - down:.1f} s; the last 503 came {last_failure - up:+.1f} s after it was back")
    assert service_pid(hub) == pid  # never restarted
    with open(hub.log_path, "rb") as f:
        f.seek(log_at)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log and " 500 " not in log
    # everything accepted is there
    created = [r.json()["id"] for _, _, status, r in seen if status == 201]
    rows = dict(sql(hub.db_url, "SELECT id, status FROM requests"))
    assert all(rid in rows for rid in created)
