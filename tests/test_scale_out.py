"""Scale-out: two service processes on one PostgreSQL database behave as one service.

Replica A is the hub-managed service that configure_hub registers; replica B is a second
`python -m jupyterhub_dataaccess service` started by hand with exactly the environment the Hub gave
A (its API token included) except its own URL — as a second pod behind a Kubernetes Service would
be. Nothing is shared between them but the database: a request made through one is decided through
the other, a revocation through one bites a read through the other at once, the hash-mask key is
the same, and concurrent writes through both extend one intact audit chain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from hubutil import REPO, Hub, free_port, service_pid

# once: the replicas share a PostgreSQL database of their own in every run (the SQLite run
# included), so a second run on PostgreSQL would repeat this one exactly
pytestmark = [pytest.mark.hub, pytest.mark.postgres, pytest.mark.once]

PREFIX = "/services/dataaccess/"


def _managed_env(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\x00") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


class Replica:
    """Replica B: the service as a separate process, reached directly (no proxy route)."""

    def __init__(self, hub: Hub, env: dict[str, str], log_path: str):
        self.hub, self.port = hub, free_port()
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}api/v1"
        env = dict(env, JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{self.port}", PYTHONPATH=REPO)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub_dataaccess", "service"],
                                     env=env, cwd=hub.state, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"replica B exited; see {log_path}"
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica B did not come up; see {log_path}")

    def call(self, user: str, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.hub.token(user)}"}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def replicas(postgres, config_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    from pgutil import pg_bin

    # a database of its own on the session's PostgreSQL server, shared by the two replicas only
    postgres._run(os.path.join(pg_bin(), "createdb"), "-h", "127.0.0.1", "-p",
                  str(postgres.port), "-U", postgres.user, "scaleout")
    db_url = postgres.url.rsplit("/", 1)[0] + "/scaleout"
    state = str(tmp_path_factory.mktemp("scale-out"))
    hub = Hub(state=os.path.join(state, "hub"), catalog=config_files["catalog"],
              policy=config_files["policy"], db_url=db_url)
    os.makedirs(hub.state, exist_ok=True)
    hub.start()
    b = None
    try:
        env = _managed_env(service_pid(hub))
        assert env["DATAACCESS_DB_URL"] == db_url and env.get("JUPYTERHUB_API_TOKEN")
        b = Replica(hub, env, os.path.join(state, "replica-b.log"))
        yield hub, b, db_url
    finally:
        if b is not None:
            b.stop()
        hub.stop()


def _grant_id(call, user: str, dataset: str) -> int:
    items = call(user, "GET", "/grants", params={"user": user, "dataset": dataset,
                                                 "active": "true"}).json()
    return items["items"][0]["id"]


def test_both_replicas_serve_the_same_catalogue(replicas):
    """When both replicas are asked for health and the catalogue, Then they answer alike."""
    hub, b, _ = replicas
    a_health, b_health = hub.call(None, "GET", "/health").json(), b.call("analyst", "GET",
                                                                         "/health").json()
    with open(hub.catalog) as f:
        in_catalogue = sum(line.lstrip().startswith("- id:") for line in f)
    assert a_health["datasets"] == b_health["datasets"] == in_catalogue
    a_ids = [d["id"] for d in hub.call("analyst", "GET", "/datasets").json()["items"]]
    b_ids = [d["id"] for d in b.call("analyst", "GET", "/datasets").json()["items"]]
    assert a_ids == b_ids and "penguins" in a_ids


def test_a_request_made_through_a_is_approved_through_b(replicas):
    """When the analyst asks through A and a steward approves through B, Then A shows the
    decision and both replicas serve the data."""
    hub, b, _ = replicas
    r = hub.call("analyst", "POST", "/requests", json={
        "dataset": "penguins-masked", "justification": "scale-out: approve on the other replica"})
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    rid = r.json()["id"]
    queue = b.call("steward", "GET", "/requests", params={"scope": "review", "status": "pending"})
    assert rid in [q["id"] for q in queue.json()["items"]]
    approved = b.call("steward", "POST", f"/requests/{rid}/approve", json={"comment": "ok"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved", approved.text
    seen = hub.call("analyst", "GET", f"/requests/{rid}").json()
    assert seen["status"] == "approved" and seen["decisions"][0]["by"] == "steward"
    assert hub.call("analyst", "GET", "/datasets/penguins-masked/data").status_code == 200
    assert b.call("analyst", "GET", "/datasets/penguins-masked/data").status_code == 200


def test_both_replicas_hash_masked_columns_with_the_same_key(replicas):
    """When a hash-masked column is previewed through A and through B, Then the values match
    (the mask key lives in the database, not in a replica)."""
    hub, b, _ = replicas
    a_rows = hub.call("analyst", "GET", "/datasets/penguins-masked/preview?limit=5").json()
    b_rows = b.call("analyst", "GET", "/datasets/penguins-masked/preview?limit=5").json()
    # each preview is its own audited read (audit_seq differs); the governed rows must not
    assert a_rows["rows"] and a_rows["rows"] == b_rows["rows"]
    assert a_rows["version"] == b_rows["version"]


def test_a_revocation_through_a_bites_a_read_through_b_at_once(replicas):
    """When a grant is revoked through A, Then the very next read through B is refused."""
    hub, b, _ = replicas
    r = b.call("analyst", "POST", "/requests",
               json={"dataset": "penguins", "justification": "scale-out: revoke across"})
    assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    assert b.call("analyst", "GET", "/datasets/penguins/data").status_code == 200
    gid = _grant_id(b.call, "analyst", "penguins")
    assert hub.call("steward", "DELETE", f"/grants/{gid}").status_code == 200
    refused = b.call("analyst", "GET", "/datasets/penguins/data")
    assert refused.status_code == 403, refused.text
    assert "da.request('penguins'" in refused.json()["message"]
    assert hub.call("analyst", "GET", "/datasets/penguins/data").status_code == 403


def test_concurrent_writes_through_both_replicas_keep_one_intact_audit_chain(replicas):
    """When four users request, read and lose access at once, alternating replicas, Then every
    call succeeds and `audit verify` finds one unbroken chain holding all their records."""
    hub, b, db_url = replicas
    users = ["steward2", "otherstew", "nobody", "analyst"]
    for user in users:  # an active grant left by an earlier test would make requests conflict
        for g in hub.call("admin", "GET", "/grants", params={
                "user": user, "dataset": "penguins", "active": "true"}).json()["items"]:
            hub.call("admin", "DELETE", f"/grants/{g['id']}")
    before = hub.call("admin", "GET", "/audit", params={"limit": 1}).json()["items"][0]["seq"]
    failures: list[str] = []
    rounds = 6

    def work(i: int, user: str) -> None:
        sides = [("A", hub.call), ("B", b.call)]
        for n in range(rounds):
            (name1, first), (name2, second) = sides[(i + n) % 2], sides[(i + n + 1) % 2]
            r = first(user, "POST", "/requests",
                      json={"dataset": "penguins", "justification": f"concurrent {n}"})
            if r.status_code != 201:
                failures.append(f"{user} {name1} POST /requests: {r.status_code} {r.text}")
                return
            if r.json()["status"] == "pending":  # after a revocation a steward decides again
                rid = r.json()["id"]
                r = second("steward", "POST", f"/requests/{rid}/approve", json={"comment": "ok"})
                if r.status_code != 200:
                    failures.append(f"{user} {name2} approve {rid}: {r.status_code} {r.text}")
                    return
            steps = [
                (name2, second, user, "GET", "/datasets/penguins/data", 200, {}),
                (name1, first, user, "GET", "/datasets/penguins/preview?limit=3", 200, {}),
            ]
            for side, call, who, method, path, want, kw in steps:
                r = call(who, method, path, **kw)
                if r.status_code != want:
                    failures.append(f"{user} {side} {method} {path}: {r.status_code} {r.text}")
                    return
            gid = _grant_id(second, user, "penguins")
            r = second("admin", "DELETE", f"/grants/{gid}")
            if r.status_code != 200:
                failures.append(f"{user} revoke {gid}: {r.status_code} {r.text}")
                return

    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    after = hub.call("admin", "GET", "/audit", params={"limit": 1}).json()["items"][0]["seq"]
    # per round: request.create, grant.create, data.read, data.preview, grant.revoke
    assert after - before >= len(users) * rounds * 5
    verify = subprocess.run(
        [sys.executable, "-m", "jupyterhub_dataaccess", "audit", "verify", "--db-url", db_url,
         "--key-dir", hub.key_dir],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert verify.returncode == 0, verify.stdout + verify.stderr
