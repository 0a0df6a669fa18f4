"""Helpers of the security tests (SECURITY-CASES.md 1-23): requests that tolerate what earlier test
files left behind, throw-away hub users, exact JSON error checks, and the secrets to look for in logs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import requests
from hubutil import Hub, approve_after_revocation

# Every secret a security test sent (cookies, canaries); the log-hygiene check looks for each.
SECRETS: set[str] = set()
# jupyterhub-session-id values: JupyterHub itself logs them when it sets an _xsrf cookie.
SESSION_IDS: set[str] = set()
# Other hubs the security tests started; their logs are checked too.
EXTRA_LOGS: list[str] = []

MISSING_ID = "999999999"


def assert_error(r: requests.Response, status: int, message: str | None = None,
                 extra: dict | None = None) -> dict:
    """The response is the service's JSON error: exactly {"status", "message"} (and `extra`),
    no traceback."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"status", "message", *(extra or {})}, body
    assert {k: body[k] for k in extra or {}} == (extra or {})
    assert body["status"] == status
    if message is not None:
        assert body["message"] == message, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def new_request(hub: Hub, user: str, dataset: str, justification: str = "security test",
                **extra: Any) -> dict:
    """A request of `user` for `dataset`: a new one, or the pending/granted one that exists."""
    r = hub.call(user, "POST", "/requests",
                 json={"dataset": dataset, "justification": justification, **extra})
    if r.status_code == 409:
        return r.json()["request"]
    assert r.status_code == 201, r.text
    return r.json()


def fresh_request(hub: Hub, user: str, dataset: str, justification: str = "security test",
                  **extra: Any) -> dict:
    """A new pending request. What other tests on the shared hub left is cleared first: a pending
    request is withdrawn, an active grant revoked (by the admin)."""
    for _ in range(3):
        r = hub.call(user, "POST", "/requests",
                     json={"dataset": dataset, "justification": justification, **extra})
        if r.status_code == 201:
            return r.json()
        assert r.status_code == 409, r.text
        body = r.json()
        if body["request"]["status"] == "pending":
            hub.call(user, "POST", f"/requests/{body['request']['id']}/withdraw")
        else:
            assert hub.call("admin", "DELETE", f"/grants/{body['grant']['id']}").status_code == 200
    raise AssertionError("could not make a fresh request")


def grant_of(hub: Hub, user: str, dataset: str) -> dict:
    """The user's active grant for a dataset they were auto-approved for (approved by a steward
    when an earlier test's revocation sent the request to review)."""
    approve_after_revocation(hub, new_request(hub, user, dataset))
    items = hub.call(user, "GET", "/grants", params={"dataset": dataset, "active": "true"}
                     ).json()["items"]
    assert items, f"{user} has no active grant for {dataset}"
    return items[0]


def audit(hub: Hub, **params: Any) -> list[dict]:
    return hub.call("admin", "GET", "/audit", params={"limit": 200, **params}).json()["items"]


def audit_total(hub: Hub, **params: Any) -> int:
    return hub.call("admin", "GET", "/audit", params={"limit": 1, **params}).json()["total"]


def requests_total(hub: Hub, user: str) -> int:
    return hub.call(user, "GET", "/requests", params={"limit": 1}).json()["total"]


@contextlib.contextmanager
def hub_user(hub: Hub, groups: tuple[str, ...] = (), prefix: str = "sec") -> Iterator[str]:
    """A throw-away hub user in `groups`, deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    r = hub.hub_api("POST", f"/users/{name}")
    assert r.status_code == 201, r.text
    for g in groups:
        r = hub.hub_api("POST", f"/groups/{g}/users", json={"users": [name]})
        assert r.status_code == 200, r.text
    try:
        yield name
    finally:
        hub.hub_api("DELETE", f"/users/{name}")


def hub_login(hub: Hub, user: str) -> requests.Session:
    """A browser-like session logged in to the hub (DummyAuthenticator) and to the service by
    OAuth; every cookie value it holds is remembered for the log-hygiene check."""
    s = requests.Session()
    r = s.get(hub.url + "/hub/login", headers={"Sec-Fetch-Mode": "navigate"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    r = s.post(hub.url + "/hub/login", timeout=30, allow_redirects=False,
               data={"username": user, "password": hub.password,
                     "_xsrf": s.cookies.get("_xsrf", path="/hub/")})
    assert r.status_code == 302, r.text[:300]
    # a navigation to the service sends it through the hub's OAuth authorize and back
    r = s.get(hub.api + "/me", headers={"Sec-Fetch-Mode": "navigate"}, timeout=30)
    assert r.status_code == 200 and r.json()["name"] == user, r.text[:300]
    assert [h.status_code for h in r.history] == [302, 302, 302]
    remember_cookies(s)
    return s


def remember_cookies(s: requests.Session) -> None:
    for c in s.cookies:
        (SESSION_IDS if c.name == "jupyterhub-session-id" else SECRETS).add(c.value)


def service_xsrf(s: requests.Session) -> str:
    token = s.cookies.get("_xsrf", path="/services/dataaccess/")
    assert token, "the service set no _xsrf cookie at the end of the OAuth flow"
    return token


def route_methods(prefix: str = "/services/dataaccess/") -> list[tuple[str, str]]:
    """(METHOD, path) for every method of every route the service registers below `prefix`
    (its catch-all left out), each id filled in as a missing one and each action spelled out."""
    import re

    from jupyterhub_dataaccess.service import handlers

    out = []
    for pattern, handler in handlers.routes(prefix):
        if pattern.endswith(".*"):
            continue
        actions = re.search(r"\(([a-z|]+)\)$", pattern)
        paths = [pattern[:actions.start()] + a for a in actions.group(1).split("|")] if actions \
            else [pattern]
        methods = [m for m in ("get", "post", "delete")
                   if m.upper() in handler.SUPPORTED_METHODS  # e.g. /query: POST only
                   and any(m in cls.__dict__ for cls in handler.__mro__
                          if cls.__module__ == handlers.__name__ and cls is not handlers.BaseHandler)]
        assert methods or not pattern.startswith(prefix + "api/v1/"), pattern
        for p in paths:
            concrete = re.sub(r"\(\[\^/\]\{1,200\}\)", MISSING_ID, p)
            out += [(m.upper(), concrete) for m in methods]
    return out


def service_routes() -> list[tuple[str, str]]:
    """route_methods of the API, as paths below api/v1."""
    api = "/p/api/v1"
    return [(m, p[len(api):]) for m, p in route_methods("/p/") if p.startswith(api + "/")]
