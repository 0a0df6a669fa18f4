"""Live configuration and webhooks on a private real hub.

When the catalogue or policy file changes, the service takes it without a restart; a bad new file
keeps the old configuration and shows in /health. A webhook receives each request and decision,
and a webhook that fails never blocks a decision.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hubutil import Hub, free_port


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def receiver():
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


@pytest.fixture()
def private_hub(tmp_path, config_files, receiver):
    catalog = str(tmp_path / "catalog.yaml")
    policy = str(tmp_path / "policy.yaml")
    shutil.copy(config_files["catalog"], catalog)
    shutil.copy(config_files["policy"], policy)
    hub = Hub(state=str(tmp_path / "hub"), catalog=catalog, policy=policy,
              db_url=f"sqlite:///{tmp_path}/dataaccess.sqlite",
              extra=f", webhook_url={receiver!r}")
    os.makedirs(hub.state)
    hub.start()
    yield hub
    hub.stop()


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_policy_and_catalogue_changes_apply_without_a_restart(private_hub: Hub):
    hub = private_hub
    assert hub.call("nobody", "GET", "/policies").json()["rules"][1]["max_days"] == 365.0
    text = open(hub.policy).read().replace("max_days: 365", "max_days: 5")
    with open(hub.policy, "w") as f:
        f.write(text)
    wait_for(lambda: hub.call("nobody", "GET", "/policies").json()["rules"][1]["max_days"] == 5)
    r = hub.call("nobody", "POST", "/requests", json={"dataset": "penguins", "justification": "x",
                                                      "days": 100})
    assert r.status_code == 201 and r.json()["days"] == 5.0

    # a new dataset appears
    with open(hub.catalog, "a") as f:
        f.write("  - id: added-later\n    title: Added later\n    classification: public\n"
                "    source: {kind: file, uri: /nowhere.csv}\n")
    wait_for(lambda: hub.call("nobody", "GET", "/datasets/added-later").status_code == 200)


def test_a_bad_new_file_keeps_the_old_configuration_and_shows_in_health(private_hub: Hub):
    hub = private_hub
    good = open(hub.catalog).read()
    with open(hub.catalog, "w") as f:
        f.write(good.replace("classification: public", "classification: topsecret", 1))
    health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(
        hub.call(None, "GET", "/health").json()))
    assert "field 'classification'" in health["config_error"]
    assert f"{hub.catalog} line " in health["config_error"]
    # the old catalogue is still served
    assert hub.call("nobody", "GET", "/datasets/penguins").status_code == 200
    with open(hub.catalog, "w") as f:
        f.write(good)
    wait_for(lambda: hub.call(None, "GET", "/health").json()["status"] == "ok")
    assert hub.call(None, "GET", "/health").json()["config_error"] is None


def test_the_webhook_hears_each_request_and_decision(private_hub: Hub):
    hub = private_hub
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "penguins-masked", "justification": "webhook check"})
    req = r.json()
    hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={"comment": "fine"})
    events = wait_for(lambda: [e for e in Receiver.received
                               if e["object"].get("id") == req["id"]]
                      if len(Receiver.received) >= 2 else None)
    assert [e["event"] for e in events] == ["request.create", "request.approve"]
    assert events[1]["object"]["status"] == "approved"
    assert events[0]["object"]["justification"] == "webhook check"


def test_a_failing_webhook_never_blocks_a_decision(tmp_path, config_files):
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    hub = Hub(state=str(tmp_path / "hub"), catalog=config_files["catalog"],
              policy=config_files["policy"], db_url=f"sqlite:///{tmp_path}/dataaccess.sqlite",
              extra=f", webhook_url={dead!r}")
    os.makedirs(hub.state)
    hub.start()
    try:
        t0 = time.monotonic()
        r = hub.call("nobody", "POST", "/requests",
                     json={"dataset": "penguins-masked", "justification": "x"})
        assert r.status_code == 201
        r = hub.call("steward", "POST", f"/requests/{r.json()['id']}/approve", json={})
        assert r.status_code == 200 and r.json()["status"] == "approved"
        assert time.monotonic() - t0 < 5
        wait_for(lambda: "Webhook failed for request.approve" in hub.log_tail(400))
    finally:
        hub.stop()
