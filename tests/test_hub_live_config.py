"""Live configuration and webhooks on a private real hub.

When the catalogue or policy file changes, the service takes it without a restart; a bad new file
keeps the old configuration and shows in /health. A webhook receives every decision, however it
was made, and a webhook that fails never blocks a decision.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hubutil import Hub, free_port, wait_for
from reliabilityutil import cli


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def receiver():
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def private_hub(tmp_path_factory, config_files, receiver):
    """One hub for the module's tests (a hub costs 10-20 s): each leaves its files valid, and
    the webhook test picks its own request's events."""
    tmp_path = tmp_path_factory.mktemp("live")
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
    # anyone may read /health: the file is named, where it lives is not (the service log has it)
    assert health["config_error"].startswith(f"{os.path.basename(hub.catalog)} line ")
    assert os.path.dirname(hub.catalog) not in health["config_error"]
    # the old catalogue is still served
    assert hub.call("nobody", "GET", "/datasets/penguins").status_code == 200
    with open(hub.catalog, "w") as f:
        f.write(good)
    wait_for(lambda: hub.call(None, "GET", "/health").json()["status"] == "ok")
    assert hub.call(None, "GET", "/health").json()["config_error"] is None


def test_the_webhook_hears_every_decision_however_it_is_made(private_hub: Hub):
    """When a request is made and approved through the API and the grant is then revoked with
    `jupyterhub-dataaccess grants revoke` (no service involved), Then the webhook hears all
    four decisions, in order, each once."""
    hub = private_hub
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "penguins-masked", "justification": "webhook check"})
    req = r.json()
    grant = hub.call("steward", "POST", f"/requests/{req['id']}/approve",
                     json={"comment": "fine"}).json()
    assert grant["status"] == "approved"
    (g,) = hub.call("steward", "GET", "/grants", params={"user": "nobody",
                                                         "dataset": "penguins-masked"}).json()["items"]
    p = cli("grants", "revoke", str(g["id"]), "--db-url", hub.db_url,
            "--key-dir", os.path.join(hub.state, "dataaccess-keys"))
    assert p.returncode == 0, p.stderr

    def about_this_request() -> list[dict]:
        return [e for e in Receiver.received if e.get("seq") and e["object"]
                and e["object"].get("request_id", e["object"].get("id")) == req["id"]]

    events = wait_for(lambda: (lambda es: es if len(es) >= 4 else None)(about_this_request()))
    assert [e["event"] for e in events] == ["request.create", "request.approve",
                                            "grant.create", "grant.revoke"]
    assert events[0]["object"]["justification"] == "webhook check"
    assert events[1]["actor"] == "steward" and events[3]["actor"].startswith("cli:")
    assert events[3]["object"]["status"] == "revoked"


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
        # delivered from the audit log in order: the first decision is retried until it goes
        wait_for(lambda: "Webhook failed for request.create" in hub.log_tail(400))
    finally:
        hub.stop()
