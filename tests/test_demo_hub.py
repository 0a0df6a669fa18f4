"""The demo end to end: `run_demo` starts a real hub; a demo user logs in, gets a server and data."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from hubutil import REPO

pytestmark = pytest.mark.hub


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and the one after it too, when ``pair``)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def demo_hub(tmp_path_factory):
    state = tmp_path_factory.mktemp("demo-hub")
    port = free_port(pair=True)  # the proxy's API listens on port + 1
    env = dict(
        os.environ,
        PYTHONPATH=REPO,  # this checkout, in the hub and its services too (not an older install)
        DATAACCESS_DEMO_HUB_PORT=str(free_port()),
        DATAACCESS_DEMO_SERVICE_PORT=str(free_port()),
    )
    log = open(state / "demo.log", "w")
    demo = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from jupyterhub_dataaccess.demo import run_demo; "
            f"sys.exit(run_demo({str(state)!r}, port={port}))",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def hub_answers() -> bool:
        if demo.poll() is not None:
            pytest.fail("demo exited early:\n" + (state / "demo.log").read_text()[-4000:])
        return requests.get(url + "/hub/api", timeout=5).ok

    try:
        wait_until(hub_answers, timeout=120, what="the demo hub")
        yield url, state
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # as Ctrl-C in a terminal
        try:
            demo.wait(timeout=60)  # the hub stops its servers, service and proxy first
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        log.close()


def login(url: str, state: Path, user: str) -> requests.Session:
    password = json.loads((state / "passwords.json").read_text())[user]
    session = requests.Session()
    session.get(url + "/hub/login", timeout=30)
    response = session.post(
        url + "/hub/login",
        data={"username": user, "password": password, "_xsrf": session.cookies.get("_xsrf")},
        timeout=180,
    )
    assert response.ok, response.text[:500]
    return session


def test_when_a_wrong_password_is_given_then_login_is_refused(demo_hub):
    url, _ = demo_hub
    session = requests.Session()
    session.get(url + "/hub/login", timeout=30)
    response = session.post(
        url + "/hub/login",
        data={"username": "analyst", "password": "wrong", "_xsrf": session.cookies.get("_xsrf")},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 403


def test_when_the_analyst_logs_in_then_lab_opens_and_public_data_loads(demo_hub):
    url, state = demo_hub
    session = login(url, state, "analyst")
    server = f"{url}/user/analyst"

    def lab_page() -> requests.Response | None:
        page = session.get(server + "/lab", timeout=30)
        return page if page.ok and "/user/" in page.url else None

    lab = wait_until(lab_page, timeout=180, what="the analyst's JupyterLab")
    assert "JupyterLab" in lab.text
    api = server + "/dataaccess/api/v1"
    headers = {"X-XSRFToken": session.cookies.get("_xsrf", path="/user/analyst/") or ""}

    datasets = session.get(api + "/datasets", params={"limit": 200}, timeout=30)
    assert datasets.status_code == 200, datasets.text[:500]
    items = {d["id"]: d for d in datasets.json()["items"]}
    assert {"penguins", "airlines", "flights", "planes"} <= set(items)
    assert {d["classification"] for d in items.values()} == {
        "public",
        "internal",
        "confidential",
        "restricted",
    }

    request = session.post(
        api + "/requests",
        json={"dataset": "penguins", "justification": "demo smoke test", "days": 1},
        headers=headers,
        timeout=30,
    )
    assert request.status_code == 201, request.text[:500]
    assert request.json()["status"] == "approved"

    data = session.get(api + "/datasets/penguins/data", params={"format": "csv"}, timeout=60)
    assert data.status_code == 200, data.text[:500]
    assert len(pd.read_csv(io.StringIO(data.text))) == 344
