"""Faults on private real hubs: grant expiry in a running session (SECURITY-CASES 29), an audit
that cannot be written (33), 50 concurrent writers (36), the service killed mid-load (37).

Each hub's database is a fresh SQLite file, or a fresh PostgreSQL database with
DATAACCESS_TEST_DB=postgresql.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests
from conftest import ON_POSTGRES
from hubutil import service_pid
from reliabilityutil import (
    ConfiguredHub,
    active_grants,
    assert_json_error,
    audit_mark,
    audit_since,
    cli,
    fresh_grant,
    new_database,
    raw_connect,
    report,
    sql,
    write_config_files,
)

BLINK_DAYS = 3 / 86400  # three seconds: the policy's max_days wins over the one-minute floor
REQUESTERS = ["analyst", "nobody", "otherstew", "admin"]
WRITER_DATASETS = [f"w{i:02d}" for i in range(50)]


def _catalog(data: str) -> str:
    writers = "".join(f"""
  - id: {ds}
    title: Writer dataset {ds}
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: confidential
    source: {{kind: file, uri: {data}/sales.parquet}}""" for ds in WRITER_DATASETS)
    return f"""
datasets:
  - id: penguins
    title: Palmer penguins
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv, format: csv}}
  - id: blink
    title: Granted for three seconds at most
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: public
    source: {{kind: file, uri: {data}/penguins.csv, format: csv}}{writers}
"""


POLICY = f"""
rules:
  - match: {{datasets: [blink]}}
    decision: auto
    max_days: {BLINK_DAYS!r}
  - match: {{classification: public}}
    decision: auto
    max_days: 365
  - match: {{classification: confidential}}
    decision: review
    approvals: 1
    max_days: 30
"""


def _private_hub(request: pytest.FixtureRequest, tmp: str, config_files: dict, **env: str):
    catalog, policy = write_config_files(tmp, _catalog(config_files["data"]), POLICY)
    pg = request.getfixturevalue("postgres") if ON_POSTGRES else None
    hub = ConfiguredHub(state=os.path.join(tmp, "hub"), catalog=catalog, policy=policy,
                        db_url=new_database("", tmp, pg), service_env=env)
    os.makedirs(hub.state, exist_ok=True)
    hub.start()
    return hub


@pytest.fixture(scope="module")
def quick_hub(request, tmp_path_factory, config_files):
    """Expiry swept every half second; SQLite writers wait one second for the lock."""
    hub = _private_hub(request, str(tmp_path_factory.mktemp("quick")), config_files,
                       DATAACCESS_EXPIRE_INTERVAL="0.5", DATAACCESS_DB_BUSY_TIMEOUT="1")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def busy_hub(request, tmp_path_factory, config_files):
    """Default settings: the 30 s SQLite busy timeout, the default rate limits."""
    hub = _private_hub(request, str(tmp_path_factory.mktemp("busy")), config_files)
    yield hub
    hub.stop()


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- 29: expiry ---------------------------------------------------------------------------------

def test_a_read_one_second_after_expiry_fails_and_the_sweep_records_it_once(
        quick_hub: ConfiguredHub):
    """Given a grant that expires three seconds after it is made, When a read comes one second
    after expires_at, Then it is a 403, the grant shows expired, and grant.expire is written
    exactly once."""
    hub = quick_hub
    r = hub.call("analyst", "POST", "/requests",
                 json={"dataset": "blink", "justification": "expiry", "days": BLINK_DAYS})
    assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    assert r.json()["days"] == BLINK_DAYS
    (grant,) = active_grants(hub, "analyst", "blink")
    expires = _at(grant["expires_at"])
    assert 2.5 < expires - _at(grant["created_at"]) <= 3.0 + 1e-3
    r = hub.call("analyst", "GET", "/datasets/blink/data", params={"format": "csv"})
    assert r.status_code == 200 and r.text.startswith("\"species\","), r.text[:200]
    time.sleep(max(0.0, expires + 1.0 - time.time()))

    r = hub.call("analyst", "GET", "/datasets/blink/data", params={"format": "csv"})
    assert r.status_code == 403, r.text
    assert r.json()["message"].startswith("You have no active grant for 'blink'.")
    (shown,) = hub.call("analyst", "GET", "/grants", params={"dataset": "blink"}).json()["items"]
    assert shown == dict(grant, status="expired")
    access = hub.call("analyst", "GET", "/datasets/blink").json()["access"]
    assert access == {"status": "expired", "expires_at": grant["expires_at"]}

    def expiries() -> list[dict]:
        return [x for x in hub.call("admin", "GET", "/audit", params={
            "action": "grant.expire", "dataset": "blink"}).json()["items"]
            if x["grant_id"] == grant["id"]]

    deadline = time.monotonic() + 10
    while not expiries():
        assert time.monotonic() < deadline, "no grant.expire within 10 s"
        time.sleep(0.2)
    time.sleep(2.0)  # four more sweeps
    (record,) = expiries()
    assert (record["actor"], record["request_id"], record["detail"]) == (
        "system", grant["request_id"], {"user": "analyst", "expires_at": grant["expires_at"]})
    assert 0 <= _at(record["at"]) - expires < 5


# -- 33: the audit cannot be written ------------------------------------------------------------

def _audit_blocked(db_url: str, on: bool) -> None:
    if db_url.startswith("sqlite"):
        sql(db_url, "CREATE TRIGGER audit_blocked BEFORE INSERT ON audit "
                    "BEGIN SELECT RAISE(ABORT, 'the audit cannot be written'); END" if on
            else "DROP TRIGGER audit_blocked")
    elif on:
        sql(db_url, "CREATE FUNCTION audit_blocked() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'the audit cannot be written'; END $$")
        sql(db_url, "CREATE TRIGGER audit_blocked BEFORE INSERT ON audit FOR EACH ROW "
                    "EXECUTE FUNCTION audit_blocked()")
    else:
        sql(db_url, "DROP TRIGGER audit_blocked ON audit")
        sql(db_url, "DROP FUNCTION audit_blocked()")


def _refused_everywhere(hub: ConfiguredHub) -> None:
    for path in ("/datasets/penguins/data", "/datasets/penguins/preview"):
        r = hub.call("analyst", "GET", path, params={"format": "csv"})
        body = assert_json_error(r, 503)
        assert body["message"] == ("The data access database is not available right now; "
                                   "try again shortly")
        assert "species" not in r.text
    r = hub.call("nobody", "POST", "/requests", json={"dataset": "w00", "justification": "x"})
    assert_json_error(r, 503)


def test_reads_are_refused_with_a_503_when_the_audit_insert_fails(quick_hub: ConfiguredHub):
    """When every insert into the audit table fails, Then reads and requests are a clean 503,
    nothing is served or stored unaudited, and all is well again once the audit is writable."""
    hub = quick_hub
    fresh_grant(hub, "analyst", "penguins")
    before = audit_mark(hub)
    requests_before = sql(hub.db_url, "SELECT count(*) FROM requests")[0][0]
    log_at = os.path.getsize(hub.log_path)
    _audit_blocked(hub.db_url, True)
    try:
        _refused_everywhere(hub)
    finally:
        _audit_blocked(hub.db_url, False)
    assert sql(hub.db_url, "SELECT count(*) FROM requests")[0][0] == requests_before
    assert audit_since(hub, before) == {}
    r = hub.call("analyst", "GET", "/datasets/penguins/data", params={"format": "csv"})
    assert r.status_code == 200 and r.text.startswith("\"species\",")
    assert audit_since(hub, before) == {"data.read": 1}
    with open(hub.log_path, "rb") as f:
        f.seek(log_at)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log and "Database unavailable on GET" in log
    assert cli("audit", "verify", "--db-url", hub.db_url, "--key-dir", hub.key_dir).returncode == 0


def test_reads_are_refused_with_a_503_while_the_database_is_locked_or_read_only(
        quick_hub: ConfiguredHub):
    """SQLite: another process holds the write lock longer than the busy timeout (1 s here);
    PostgreSQL: the database turns read-only. Then reads are a clean 503, and succeed again
    when the lock is released / the database writable, without restarting the service."""
    hub = quick_hub
    fresh_grant(hub, "analyst", "penguins")
    before = audit_mark(hub)
    if hub.db_url.startswith("sqlite"):
        conn = raw_connect(hub.db_url)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            t0 = time.monotonic()
            _refused_everywhere(hub)
            waited = (time.monotonic() - t0) / 3
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        report(f"case 33 SQLite: a locked database answers 503 after {waited:.1f} s "
               "(busy timeout 1 s)")
    else:
        name = hub.db_url.rsplit("/", 1)[1]
        kick = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        sql(hub.db_url, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        sql(hub.db_url, kick)
        try:
            _refused_everywhere(hub)
        finally:
            conn = raw_connect(hub.db_url)  # a new session: read-only too, until it says not
            with conn.cursor() as cur:
                cur.execute("SET default_transaction_read_only = off")
                cur.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
                cur.execute(kick)
            conn.close()
    assert audit_since(hub, before) == {}
    r = hub.call("analyst", "GET", "/datasets/penguins/data", params={"format": "csv"})
    assert r.status_code == 200 and r.text.startswith("\"species\",")


# -- 36: 50 concurrent writers --------------------------------------------------------------------

def _post(hub: ConfiguredHub, user: str, path: str, body: dict, barrier: threading.Barrier):
    barrier.wait()
    return hub.call(user, "POST", path, json=body)


def test_fifty_concurrent_writers_lose_nothing_and_see_no_lock_error(busy_hub: ConfiguredHub):
    """Given 50 requests made at once, When 25 approvals, 25 denials and 50 more requests all
    arrive at the same instant, Then every answer is a success and every row is there."""
    hub = busy_hub
    for u in REQUESTERS + ["steward", "steward2"]:
        hub.token(u)  # tokens first: the race is on the service, not on the hub's token API
    before = audit_mark(hub)
    jobs = [(REQUESTERS[i % 4], "/requests", {"dataset": ds, "justification": f"first {i}"})
            for i, ds in enumerate(WRITER_DATASETS)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        barrier = threading.Barrier(len(jobs))
        first = list(pool.map(lambda j: _post(hub, *j, barrier), jobs))
    assert [r.status_code for r in first] == [201] * 50, [r.text for r in first if r.ok is False]
    jobs = []
    for i, r in enumerate(first):
        verdict = "approve" if i % 2 == 0 else "deny"
        jobs.append(("steward" if i % 2 == 0 else "steward2",
                     f"/requests/{r.json()['id']}/{verdict}", {"comment": f"c{i}"}))
        jobs.append((REQUESTERS[(i + 1) % 4], "/requests",
                     {"dataset": WRITER_DATASETS[i], "justification": f"second {i}"}))
    with ThreadPoolExecutor(len(jobs)) as pool:
        barrier = threading.Barrier(len(jobs))
        second = list(pool.map(lambda j: _post(hub, *j, barrier), jobs))
    bad = [(r.status_code, r.text) for r in second if r.status_code not in (200, 201)]
    assert bad == [], bad
    assert not any("locked" in r.text for r in first + second)

    statuses = sql(hub.db_url, "SELECT status, count(*) FROM requests GROUP BY status")
    assert dict(statuses) == {"approved": 25, "denied": 25, "pending": 50}
    assert sql(hub.db_url, "SELECT count(*) FROM decisions")[0][0] == 50
    assert sql(hub.db_url, "SELECT count(*) FROM grants")[0][0] == 25
    assert audit_since(hub, before) == {
        "request.create": 100, "request.approve": 25, "request.deny": 25, "grant.create": 25}
    assert cli("audit", "verify", "--db-url", hub.db_url, "--key-dir", hub.key_dir).returncode == 0


# -- 37: the service killed mid-load --------------------------------------------------------------

def _writer(hub: ConfiguredHub, pairs: list[tuple[str, str]], stop: threading.Event,
            accepted: list, refused: list) -> None:
    """Request each (user, dataset) and have a steward approve it; retry what is not accepted."""
    todo = list(pairs)
    while todo and not stop.is_set():
        user, ds = todo[0]
        try:
            r = hub.call(user, "POST", "/requests",
                         json={"dataset": ds, "justification": "under load"})
            if r.status_code == 409:  # made before a crash cut the answer: find it
                r2 = hub.call(user, "GET", "/requests", params={"dataset": ds})
                req = r2.json()["items"][0]
            elif r.status_code == 201:
                req = r.json()
                accepted.append(("create", req["id"]))
            else:
                refused.append(r.status_code)
                time.sleep(0.2)
                continue
            if req["status"] == "pending":
                a = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
                if a.status_code == 200:
                    accepted.append(("approve", req["id"]))
                elif a.status_code != 409:
                    refused.append(a.status_code)
                    time.sleep(0.2)
                    continue
            todo.pop(0)
        except requests.RequestException:
            refused.append("connection")
            time.sleep(0.2)


def test_the_service_killed_mid_load_loses_no_accepted_request_or_decision(
        busy_hub: ConfiguredHub):
    """Given writers creating and approving requests, When the service is SIGKILLed, Then the Hub
    starts it again, and every request and decision answered 2xx is in the database."""
    hub = busy_hub
    pairs = [(REQUESTERS[(i + k) % 4], ds) for k in (2, 3) for i, ds in enumerate(WRITER_DATASETS)]
    chunks = [pairs[i::6] for i in range(6)]
    stop, accepted, refused = threading.Event(), [], []
    threads = [threading.Thread(target=_writer, args=(hub, c, stop, accepted, refused))
               for c in chunks]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(accepted) < 30:
        assert time.monotonic() < deadline, refused
        time.sleep(0.05)
    pid = service_pid(hub)
    os.kill(pid, signal.SIGKILL)
    back = hub.wait_healthy(timeout=90)
    report(f"case 37: service SIGKILLed with {len(accepted)} writes accepted; the Hub restarted it "
           f"and it answered again after {back:.1f} s (JupyterHub polls managed services every "
           "30 s)")
    assert service_pid(hub) != pid
    for t in threads:
        t.join(120)
    stop.set()
    assert not any(t.is_alive() for t in threads)

    ids = {rid for kind, rid in accepted}
    rows = dict(sql(hub.db_url, "SELECT id, status FROM requests"))
    assert ids <= set(rows)
    approved = {rid for kind, rid in accepted if kind == "approve"}
    assert all(rows[rid] == "approved" for rid in approved)
    granted = {rid for (rid,) in sql(hub.db_url, "SELECT request_id FROM grants")}
    assert approved <= granted
    # every pair ends approved with one grant: what the kill interrupted was retried
    for user, ds in pairs:
        assert len(active_grants(hub, user, ds)) == 1, (user, ds)
    assert cli("audit", "verify", "--db-url", hub.db_url, "--key-dir", hub.key_dir).returncode == 0
    assert set(refused) <= {"connection", 502, 503}, refused
