"""Every decision reaches the webhook and the notifications, however it was made: through the API,
by the command line (`grants revoke`), or by the expiry sweep; delivered from the audit log once
across replicas, in order, and retried with backoff while the receiver fails. On SQLite and a real
PostgreSQL, with a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hubutil import free_port
from policies import EVENTS_POLICY
from reliabilityutil import cli, new_database

from jupyterhub_dataaccess.config_files import load_catalog, load_policy
from jupyterhub_dataaccess.errors import Principal
from jupyterhub_dataaccess.events import AuditDelivery
from jupyterhub_dataaccess.governance import Config, Governance
from jupyterhub_dataaccess.store import Database

# once: every test runs on SQLite and on PostgreSQL already (db_url below), in every run
pytestmark = pytest.mark.once

CATALOG = """
datasets:
  - id: pub
    title: Public
    stewards: {users: [steward]}
    classification: public
    source: {kind: file, uri: /data/pub.csv}
  - id: conf
    title: Confidential
    stewards: {users: [steward]}
    classification: confidential
    source: {kind: file, uri: /data/conf.csv}
"""
T0 = datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)
alice = Principal("alice", frozenset(), frozenset({"browse", "request"}))
steward = Principal("steward", frozenset(), frozenset({"browse", "request", "review"}))


class Receiver:
    """A real HTTP server taking the webhook's POSTs; `fail` makes it answer 500."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.fail = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.fail:
                    self.send_response(500)
                else:
                    outer.events.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def send(self, event: dict) -> None:
        def post() -> None:
            req = urllib.request.Request(self.url, data=json.dumps(event).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).close()  # raises on 500

        await asyncio.to_thread(post)


async def _run(fn, *args):
    return await asyncio.to_thread(fn, *args)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    url = new_database("", str(tmp_path), pg)
    Database(url).prepare()
    return url


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def _governance(db: Database, clock: Clock, tmp_path) -> Governance:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    (tmp_path / "policy.yaml").write_text(EVENTS_POLICY)
    config = Config(load_catalog(str(tmp_path / "catalog.yaml")),
                    load_policy(str(tmp_path / "policy.yaml")))
    return Governance(db=db, config=lambda: config, clock=clock)


def test_a_cli_revoke_and_the_expiry_sweep_reach_the_webhook_and_the_notifications(
        db_url: str, receiver: Receiver, tmp_path):
    """Given a webhook delivering from the audit log, When a steward approves through the API,
    an operator revokes with `jupyterhub-dataaccess grants revoke`, and the sweep records an
    expiry, Then the webhook hears each decision once, in order, and alice's notifications
    show the revocation and the expiry."""
    db, clock = Database(db_url), Clock()
    gov = _governance(db, clock, tmp_path)
    delivery = AuditDelivery(db, receiver.send, _run, owner="a", clock=clock)
    delivery.start_at_head()
    try:
        req = gov.create_request(alice, "conf", "a model")
        gov.decide(steward, req["id"], "approve", "fine")
        grant_id = gov.list_grants(alice, active=True)["items"][0]["id"]
        p = cli("grants", "revoke", str(grant_id), "--db-url", db_url,
                "--key-dir", str(tmp_path / "no-keys"))
        assert p.returncode == 0, p.stderr
        gov.create_request(alice, "pub", "a look")
        clock.now += timedelta(days=2)
        assert gov.expire_sweep() == 1

        assert asyncio.run(delivery.deliver()).sent == 7
        assert asyncio.run(delivery.deliver()).sent == 0  # nothing twice
        assert [(e["event"], e["dataset"]) for e in receiver.events] == [
            ("request.create", "conf"), ("request.approve", "conf"), ("grant.create", "conf"),
            ("grant.revoke", "conf"), ("request.create", "pub"), ("grant.create", "pub"),
            ("grant.expire", "pub")]
        revoke = receiver.events[3]
        assert revoke["actor"].startswith("cli:") and revoke["object"]["status"] == "revoked"
        assert receiver.events[6]["object"]["status"] == "expired"
        assert [e["seq"] for e in receiver.events] == sorted(e["seq"] for e in receiver.events)

        seen = {(n["action"], n["dataset"]) for n in gov.notifications(alice)["items"]}
        assert {("grant.revoke", "conf"), ("grant.expire", "pub")} <= seen
    finally:
        db.dispose()


def test_replicas_deliver_each_decision_once_and_retry_with_backoff(db_url: str,
                                                                   receiver: Receiver, tmp_path):
    """Given two replicas delivering from one database, When decisions are made while the
    receiver fails, Then nothing is lost: the failed event is retried after a backoff, and once
    the receiver answers every event arrives exactly once."""
    db, clock = Database(db_url), Clock()
    gov = _governance(db, clock, tmp_path)
    a = AuditDelivery(db, receiver.send, _run, owner="a", clock=clock)
    b = AuditDelivery(db, receiver.send, _run, owner="b", clock=clock)
    a.start_at_head()
    b.start_at_head()
    try:
        receiver.fail = True
        gov.create_request(alice, "pub", "first")
        first = asyncio.run(a.deliver())
        assert (first.sent, first.failed) == (0, "request.create")
        assert asyncio.run(b.deliver()).sent == 0  # backing off: no one tries before retry_at
        receiver.fail = False
        clock.now += timedelta(seconds=1.5)
        for n in range(10):
            gov.create_request(alice, "conf", f"ask {n}")
            gov.withdraw(alice, gov.list_requests(alice, status="pending")["items"][0]["id"])

        async def both() -> None:
            while sum(r.sent for r in await asyncio.gather(a.deliver(), b.deliver())):
                pass

        asyncio.run(both())
        seqs = [e["seq"] for e in receiver.events]
        assert len(seqs) == 2 + 20 and len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
        assert receiver.events[0]["object"]["justification"] == "first"
    finally:
        db.dispose()


def test_a_new_webhook_starts_at_the_end_of_the_log(db_url: str, receiver: Receiver, tmp_path):
    db, clock = Database(db_url), Clock()
    gov = _governance(db, clock, tmp_path)
    try:
        gov.create_request(alice, "pub", "before the webhook")
        delivery = AuditDelivery(db, receiver.send, _run, owner="a", clock=clock)
        delivery.start_at_head()
        assert asyncio.run(delivery.deliver()).sent == 0
        gov.create_request(alice, "conf", "after")
        assert asyncio.run(delivery.deliver()).sent == 1
        assert receiver.events[0]["object"]["justification"] == "after"
    finally:
        db.dispose()

