"""Run time on the session's real hub (SQLite, or PostgreSQL with DATAACCESS_TEST_DB=postgresql):
revocation racing reads over HTTP and in a real kernel (SECURITY-CASES 28/35), what the kernel can
see (30), one audit record per operation (31), tampering found by `audit verify` (32), and two
stewards approving at the same instant (34).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hubutil import Hub, Kernel, service_pid, wait_for
from reliabilityutil import (
    active_grants,
    audit_mark,
    audit_since,
    clear_access,
    cli,
    fresh_grant,
    report,
    sql,
)


def _reader_loop(hub: Hub, token: str, path: str, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        r = hub.call(None, "GET", path, token=token, params={"limit": 1, "format": "csv"})
        out.append((t0, time.monotonic(), r.status_code, r.text if r.status_code != 200 else "",
                    path))
        time.sleep(0.02)  # three readers stay under the per-user rate limit (50/s, burst 200)


def test_no_http_read_that_starts_after_the_revoke_returned_succeeds(hub: Hub):
    """Given three readers looping on preview and data, When a steward revokes the grant,
    Then every read started after the revoke answered is a 403, and each read is audited once."""
    grant = fresh_grant(hub, "analyst", "penguins")
    token = hub.token("analyst")
    before = audit_mark(hub)
    stop, reads = threading.Event(), []
    paths = ["/datasets/penguins/preview", "/datasets/penguins/data",
             "/datasets/penguins/preview"]
    threads = [threading.Thread(target=_reader_loop, args=(hub, token, p, stop, reads))
               for p in paths]
    for t in threads:
        t.start()
    wait_for(lambda: sum(x[2] == 200 for x in reads) >= 3, 30, "reads served before the revoke")
    sent = time.monotonic()
    r = hub.call("steward", "DELETE", f"/grants/{grant['id']}")
    answered = time.monotonic()
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text
    wait_for(lambda: sum(x[0] > answered for x in reads) >= 6, 30, "reads after the revoke")
    stop.set()
    for t in threads:
        t.join(60)

    assert {x[2] for x in reads} <= {200, 403}, reads
    after = [x for x in reads if x[0] > answered]
    assert after and all(x[2] == 403 for x in after)
    assert all("da.request('penguins'" in json.loads(x[3])["message"]
               for x in reads if x[2] == 403)
    ok_before = [x for x in reads if x[2] == 200]
    assert ok_before and max(x[0] for x in ok_before) < answered
    first_refused = min(x[1] for x in reads if x[2] == 403)
    last_ok = max(x[0] for x in ok_before)
    report(f"case 28/35 HTTP: {len(reads)} reads; revoke took {1000 * (answered - sent):.0f} ms; "
           f"first refused read ended {1000 * (first_refused - answered):+.0f} ms after the revoke "
           f"answered; last successful read started {1000 * (last_ok - sent):+.0f} ms after the "
           "revoke was sent")
    # every read is in the audit exactly once: served reads as data.*, refused ones as denied
    served = [x[4].rsplit("/", 1)[1] for x in reads if x[2] == 200]
    expected = {"data.preview": served.count("preview"), "data.read": served.count("data"),
                "access.denied": sum(1 for x in reads if x[2] == 403), "grant.revoke": 1}
    assert audit_since(hub, before, "penguins") == {k: v for k, v in expected.items() if v}


KERNEL_LOOP = """
import json, time
import jupyterhub_dataaccess as da
events, stop_at = [], time.time() + {seconds}
while time.time() < stop_at:
    t0 = time.time()
    try:
        da.load("penguins", columns=["species"])
        ok = True
    except da.AccessDenied:
        ok = False
    events.append((t0, time.time(), ok))
    time.sleep(0.05)  # under the per-user rate limit
print(json.dumps(events))
"""


def test_a_kernel_reading_in_a_loop_is_refused_from_the_next_read_after_revoke(
        hub: Hub, analyst_kernel: Kernel):
    """Given a kernel loading penguins in a loop, When the grant is revoked mid-loop,
    Then no load started after the revoke answered succeeds; the bound is printed."""
    grant = fresh_grant(hub, "analyst", "penguins")
    before = audit_mark(hub)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(
        analyst_kernel.run(KERNEL_LOOP.format(seconds=6), timeout=120)))
    runner.start()
    deadline = time.monotonic() + 60
    while audit_since(hub, before, "penguins").get("data.read", 0) < 3:  # the kernel is reading
        assert time.monotonic() < deadline and runner.is_alive(), result
        time.sleep(0.2)
    sent = time.time()
    r = hub.call("admin", "DELETE", f"/grants/{grant['id']}")
    answered = time.time()
    assert r.status_code == 200, r.text
    runner.join(120)
    assert result["error"] is None, result
    events = json.loads(result["stdout"])
    after = [e for e in events if e[0] > answered]
    assert after and not any(ok for _, _, ok in after), events
    ok_starts = [t0 for t0, _, ok in events if ok]
    assert ok_starts and max(ok_starts) < answered
    first_refused = min(end for _, end, ok in events if not ok)
    report(f"case 28 kernel: {len(events)} loads; revoke answered in "
           f"{1000 * (answered - sent):.0f} ms; first refused load ended "
           f"{1000 * (first_refused - answered):+.0f} ms after it")


@pytest.mark.once  # what reaches the kernel, not the database
def test_nothing_the_kernel_can_read_holds_a_source_path_or_credential(
        hub: Hub, analyst_kernel: Kernel, db_url: str, config_files: dict):
    """When the kernel looks at its environment and every file under its home and working
    directory, Then no database URL, catalogue/policy/data path, mask key or service token is
    there. (The local spawner runs kernels as the service's Unix user: see docs/security.md.)"""
    pid = service_pid(hub)
    with open(f"/proc/{pid}/environ", "rb") as f:
        service_env = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
    keys = {name: open(os.path.join(hub.key_dir, name)).read().strip()
            for name in os.listdir(hub.key_dir)}  # the keys not given in the environment
    secrets = {
        "database URL": db_url,
        "database location": (db_url.split("///", 1)[1] if db_url.startswith("sqlite")
                              else db_url.rsplit("@", 1)[1]),  # the file, or host:port/name
        "catalogue path": config_files["catalog"],
        "policy path": config_files["policy"],
        "data directory": config_files["data"],
        **keys,
        "service token": service_env["JUPYTERHUB_API_TOKEN"],
    }
    code = f"""
import json, os
needles = {secrets!r}
found = []
for k, v in os.environ.items():
    found += [("env " + k, what) for what, n in needles.items() if n in v or n in k]
    if k.startswith("DATAACCESS_") and k not in ("DATAACCESS_URL", "DATAACCESS_GRANTS"):
        found.append(("env " + k, "a service setting"))
seen = 0
for top in {{os.path.expanduser("~"), os.getcwd()}}:
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for name in names:
            path = os.path.join(root, name)
            try:
                if os.path.getsize(path) > 20_000_000:
                    continue
                with open(path, "rb") as f:
                    text = f.read().decode("latin-1")
            except OSError:
                continue
            seen += 1
            found += [(path, what) for what, n in needles.items() if n in text]
try:
    with open("/proc/{pid}/environ", "rb") as f:
        service_environ = "readable"
except OSError as e:
    service_environ = type(e).__name__
print(json.dumps({{"found": found, "files": seen, "uid": os.getuid(),
                   "service_environ": service_environ}}))
"""
    out = analyst_kernel.run(code)
    assert out["error"] is None, out
    seen = json.loads(out["stdout"])
    assert seen["found"] == [], seen["found"]
    assert seen["files"] > 0
    report(f"case 30: kernel env and {seen['files']} files under its home hold no secret; kernel "
           f"uid {seen['uid']}, the service's /proc environ is {seen['service_environ']} to it "
           "(local spawner: same Unix user; see docs/security.md)")


def test_every_operation_writes_exactly_one_audit_record(hub: Hub):
    """When each governed operation happens once, Then exactly one record of its action appears,
    and operations that change nothing (refusals, metadata reads) write none."""
    user, ds = "otherstew", "salaries"  # restricted: two distinct stewards approve
    clear_access(hub, user, ds)

    def step(expected: dict[str, int], fn) -> object:
        before = audit_mark(hub)
        result = fn()
        assert audit_since(hub, before, ds) == expected, fn
        return result

    req = step({"request.create": 1}, lambda: hub.call(user, "POST", "/requests", json={
        "dataset": ds, "justification": "audit count"}).json())
    assert req["status"] == "pending"
    step({}, lambda: hub.call(user, "POST", "/requests",
                              json={"dataset": ds, "justification": "dup"}))  # 409
    step({}, lambda: hub.call(user, "GET", f"/datasets/{ds}"))
    step({}, lambda: hub.call("otherstew", "POST", f"/requests/{req['id']}/approve", json={}))
    step({"request.approve": 1},
         lambda: hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={}))
    step({}, lambda: hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={}))
    step({"request.approve": 1, "grant.create": 1},
         lambda: hub.call("steward2", "POST", f"/requests/{req['id']}/approve", json={}))
    step({"data.read": 1}, lambda: hub.call(user, "GET", f"/datasets/{ds}/data",
                                            params={"format": "csv"}))
    step({"data.preview": 1}, lambda: hub.call(user, "GET", f"/datasets/{ds}/preview"))
    (grant,) = active_grants(hub, user, ds)
    step({"grant.revoke": 1}, lambda: hub.call("admin", "DELETE", f"/grants/{grant['id']}"))
    step({}, lambda: hub.call("admin", "DELETE", f"/grants/{grant['id']}"))  # 409
    step({"access.denied": 1}, lambda: hub.call(user, "GET", f"/datasets/{ds}/data"))
    step({"access.denied": 1}, lambda: hub.call(user, "GET", f"/datasets/{ds}/preview"))
    denied = step({"request.create": 1}, lambda: hub.call(user, "POST", "/requests", json={
        "dataset": ds, "justification": "to be denied"}).json())
    step({"request.deny": 1},
         lambda: hub.call("steward", "POST", f"/requests/{denied['id']}/deny", json={}))
    gone = step({"request.create": 1}, lambda: hub.call(user, "POST", "/requests", json={
        "dataset": ds, "justification": "to be withdrawn"}).json())
    step({"request.withdraw": 1},
         lambda: hub.call(user, "POST", f"/requests/{gone['id']}/withdraw"))
    records = hub.call("admin", "GET", "/audit", params={"dataset": ds, "limit": 200}).json()
    mine = [r for r in records["items"] if r["request_id"] in (req["id"], denied["id"], gone["id"])
            or r["grant_id"] == grant["id"]]
    assert [r["action"] for r in mine if r["request_id"] == req["id"]][::-1] == [
        "request.create", "request.approve", "request.approve", "grant.create", "data.read",
        "data.preview", "grant.revoke"]


def _verify(db_url: str, hub: Hub) -> tuple[int, str]:
    p = cli("audit", "verify", "--db-url", db_url, "--key-dir", hub.key_dir)
    return p.returncode, p.stdout + p.stderr


def test_editing_or_deleting_an_audit_row_is_found_by_audit_verify(hub: Hub, db_url: str):
    """When a record in the service's database is edited, re-hashed or deleted behind its back,
    Then `audit verify` exits 1 naming the record; put back, the chain verifies again."""
    hub.call("analyst", "GET", "/datasets/penguins/preview")  # at least a few records
    for _ in range(3):
        hub.call("analyst", "GET", "/datasets/salaries/preview")
    rc, out = _verify(db_url, hub)
    assert rc == 0 and "chain intact" in out, out
    head = hub.call("admin", "GET", "/audit", params={"limit": 1}).json()["items"][0]["seq"]
    seq = head - 2
    cols = "seq, at, actor, action, dataset, request_id, grant_id, detail, prev_hash, hash"
    (row,) = sql(db_url, f"SELECT {cols} FROM audit WHERE seq = ?", (seq,))

    sql(db_url, "UPDATE audit SET actor = 'mallory' WHERE seq = ?", (seq,))
    rc, out = _verify(db_url, hub)
    assert rc == 1 and f"TAMPERED: record {seq}: contents do not match its hash" in out, out
    sql(db_url, "UPDATE audit SET actor = ? WHERE seq = ?", (row[2], seq))
    assert _verify(db_url, hub)[0] == 0

    # an editor who also recomputes the row's own hash (without the audit key, kept outside the
    # database) makes a record whose keyed hash does not hold
    from jupyterhub_dataaccess.audit import record_hash
    from jupyterhub_dataaccess.store import AuditRecord, Database

    db = Database(db_url)
    with db.read() as s:
        rec = s.get(AuditRecord, seq)
        forged = record_hash(rec.prev_hash, rec.seq, rec.at, rec.actor, rec.action, rec.dataset,
                             rec.request_id, rec.grant_id, '{"forged":true}')
    db.dispose()
    sql(db_url, "UPDATE audit SET detail = ?, hash = ? WHERE seq = ?",
        ('{"forged":true}', forged, seq))
    rc, out = _verify(db_url, hub)
    assert rc == 1 and f"TAMPERED: record {seq}: contents do not match its hash" in out, out
    sql(db_url, "UPDATE audit SET detail = ?, hash = ? WHERE seq = ?", (row[7], row[9], seq))

    sql(db_url, "DELETE FROM audit WHERE seq = ?", (seq,))
    rc, out = _verify(db_url, hub)
    assert rc == 1 and f"TAMPERED: record {seq} is missing (next is {seq + 1})" in out, out
    marks = ", ".join("?" * len(row))
    sql(db_url, f"INSERT INTO audit ({cols}) VALUES ({marks})", row)
    rc, out = _verify(db_url, hub)
    assert rc == 0, out


def _approve(hub: Hub, user: str, request_id: int, barrier: threading.Barrier):
    barrier.wait()
    return hub.call(user, "POST", f"/requests/{request_id}/approve", json={"comment": user})


@pytest.mark.parametrize("dataset,approvals,repeat", [("penguins-masked", 1, 20),
                                                     ("salaries", 2, 10)])
def test_two_stewards_approving_at_the_same_instant_make_one_grant(
        hub: Hub, dataset: str, approvals: int, repeat: int):
    """Again and again: two stewards approve one request at the same instant, Then there is exactly
    one grant; with one approval needed one of them is told 409, with two both count once."""
    user = "analyst"
    for rep in range(repeat):
        clear_access(hub, user, dataset)
        r = hub.call(user, "POST", "/requests", json={"dataset": dataset,
                                                      "justification": f"race {rep}"})
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        rid = r.json()["id"]
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(_approve, [hub, hub], ["steward", "steward2"], [rid, rid],
                                    [barrier, barrier]))
        codes = sorted(a.status_code for a in answers)
        final = hub.call(user, "GET", f"/requests/{rid}").json()
        assert final["status"] == "approved", final
        grants = [g for g in active_grants(hub, user, dataset) if g["request_id"] == rid]
        assert len(grants) == 1, grants
        approvers = [d["by"] for d in final["decisions"]]
        records = hub.call("admin", "GET", "/audit", params={
            "dataset": dataset, "limit": 50}).json()["items"]
        mine = [x["action"] for x in records if x["request_id"] == rid]
        if approvals == 1:
            assert codes == [200, 409], [a.text for a in answers]
            (lost,) = [a for a in answers if a.status_code == 409]
            assert lost.json()["message"] in ("This request is already approved",
                                              "This request was decided at the same moment; "
                                              "reload it")
            assert len(approvers) == 1
            assert sorted(mine) == ["grant.create", "request.approve", "request.create"]
        else:
            assert codes == [200, 200], [a.text for a in answers]
            assert sorted(approvers) == ["steward", "steward2"]
            assert sorted(mine) == ["grant.create", "request.approve", "request.approve",
                                    "request.create"]
        assert [x for x in answers if x.status_code == 200][-1].json()["id"] == rid
