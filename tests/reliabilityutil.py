"""Helpers of the reliability tests (SECURITY-CASES.md 28-40): private hubs with service settings,
direct database access, audit counts, the service's process, and grants that tolerate earlier tests.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
from hubutil import REPO, Hub, approve_after_revocation


@dataclass
class ConfiguredHub(Hub):
    """A Hub with extra config lines at the end of hubutil's template (later assignments win),
    e.g. `c.JupyterHub.cleanup_servers = False`; the service's environment is Hub.service_env."""

    tail: str = ""

    def write_config(self) -> str:
        path = super().write_config()
        with open(path, "a") as f:
            f.write(textwrap.dedent(self.tail))
        return path

    def wait_healthy(self, timeout: float = 60) -> float:
        """Seconds until the service answers /health through the proxy."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if requests.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service not healthy after {timeout}s:\n{self.log_tail()}")


def write_config_files(directory: str, catalog: str, policy: str) -> tuple[str, str]:
    os.makedirs(directory, exist_ok=True)
    paths = os.path.join(directory, "catalog.yaml"), os.path.join(directory, "policy.yaml")
    for path, text in zip(paths, (catalog, policy), strict=True):
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
    return paths


def new_database(base_url: str, state: str, postgres: Any = None) -> str:
    """A fresh, empty database: a SQLite file under `state`, or a new PostgreSQL database."""
    if postgres is None:
        return f"sqlite:///{state}/dataaccess-{uuid.uuid4().hex[:8]}.sqlite"
    import psycopg2

    name = "t" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user,
                            dbname=postgres.database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql+psycopg2://{postgres.user}@127.0.0.1:{postgres.port}/{name}"


def raw_connect(db_url: str) -> Any:
    """A DB-API connection straight to the service's database (sqlite3 or psycopg2), autocommit."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split("///", 1)[1], timeout=30, isolation_level=None)
        return conn
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
    conn.autocommit = True
    return conn


def sql(db_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement directly on the database; the rows it returns (if any)."""
    conn = raw_connect(db_url)
    try:
        if not db_url.startswith("sqlite"):
            statement = statement.replace("?", "%s")
        cur = conn.cursor()
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
        cur.close()
        return rows
    finally:
        conn.close()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m jupyterhub_dataaccess ...` as an operator runs it."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("DATAACCESS_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "jupyterhub_dataaccess", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def audit_mark(hub: Hub) -> int:
    """The sequence number of the last audit record (0 when there is none)."""
    r = hub.call("admin", "GET", "/audit", params={"limit": 1})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    return items[0]["seq"] if items else 0


def audit_since(hub: Hub, mark: int, dataset: str = "") -> dict[str, int]:
    """How many records of each action were written after `mark` (optionally for one dataset).

    One page of 200 per call, newest first, so a test counting often stays under the rate limit.
    """
    out: Counter = Counter()
    offset = 0
    while True:
        params: dict[str, Any] = {"limit": 200, "offset": offset}
        if dataset:
            params["dataset"] = dataset
        r = hub.call("admin", "GET", "/audit", params=params)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        newer = [x for x in items if x["seq"] > mark]
        out.update(x["action"] for x in newer)
        if len(newer) < len(items) or len(items) < 200:
            return dict(out)
        offset += 200


def active_grants(hub: Hub, user: str, dataset: str) -> list[dict]:
    r = hub.call("admin", "GET", "/grants",
                 params={"user": user, "dataset": dataset, "active": "true", "limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def clear_access(hub: Hub, user: str, dataset: str) -> None:
    """No pending request and no active grant of `user` for `dataset` (what earlier tests left)."""
    for g in active_grants(hub, user, dataset):
        assert hub.call("admin", "DELETE", f"/grants/{g['id']}").status_code == 200
    r = hub.call(user, "GET", "/requests", params={"status": "pending", "dataset": dataset})
    for req in r.json()["items"]:
        assert hub.call(user, "POST", f"/requests/{req['id']}/withdraw").status_code == 200


def fresh_grant(hub: Hub, user: str, dataset: str, **extra: Any) -> dict:
    """A new active grant of `user` for an auto-approved `dataset`."""
    clear_access(hub, user, dataset)
    r = hub.call(user, "POST", "/requests",
                 json={"dataset": dataset, "justification": "reliability test", **extra})
    assert r.status_code == 201, r.text
    req = approve_after_revocation(hub, r.json())
    assert req["status"] == "approved", req
    (grant,) = [g for g in active_grants(hub, user, dataset) if g["request_id"] == req["id"]]
    return grant


def assert_json_error(r: requests.Response, status: int) -> dict:
    """A clean JSON error: exactly {"status", "message"}, no traceback."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"status", "message"} and body["status"] == status, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def log_has_no_traceback(path: str, since: int = 0) -> None:
    with open(path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 500:][:3000]


def report(line: str) -> None:
    """A measured figure: printed (shown with `pytest -s`, or `-rP` for passed tests)."""
    print(f"\n[reliability] {line}", flush=True)
