"""Security cases 1-7 (Authentication) on a real JupyterHub: no, bad, stale and misplaced credentials,
the server extension's routes, and cookie authentication with and without its XSRF token."""

from __future__ import annotations

import logging
import os
import secrets
import time

import pytest
import requests
from hubutil import Hub, Kernel, wait_for
from secutil import (
    MISSING_ID,
    SECRETS,
    assert_error,
    fresh_request,
    grant_of,
    hub_login,
    hub_user,
    new_request,
    requests_total,
    service_routes,
    service_xsrf,
)

from jupyterhub_dataaccess.service.app import DataAccessService

ROUTES = service_routes()
AUTH_REQUIRED = {"status": 401, "message": "Authentication required: log in to JupyterHub"}
# the stated bound for a token the Hub deleted or expired (the shipped token_cache_seconds)
TOKEN_BOUND = DataAccessService.token_cache_seconds.default_value
TICKET_REQUIRED = ("A ticket is required: send it as 'Authorization: ticket <ticket>' (da.scan and "
                   "da.load(..., as_='dask') hand them out)")


def _id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


# -- 1. every route, no credentials ----------------------------------------------------------

def test_the_route_list_is_the_applications_own():
    """When the routes are listed from the service, Then each of its API handlers is there."""
    from jupyterhub_dataaccess.service import handlers

    api_handlers = {h for p, h in handlers.routes("/p/") if p.startswith("/p/api/v1/")}
    assert len(ROUTES) >= 19 and len(api_handlers) >= 15
    assert ("DELETE", f"/grants/{MISSING_ID}") in ROUTES
    assert ("POST", f"/requests/{MISSING_ID}/renew") in ROUTES


@pytest.mark.parametrize("route", ROUTES, ids=_id)
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case1_every_service_route_refuses_a_caller_without_credentials(hub: Hub, route):
    """When any route but /health is called with no credentials (and with a bogus cookie),
    Then it answers the same JSON 401 and no data."""
    method, path = route
    for headers in ({}, {"Cookie": "service-dataaccess=forged; _xsrf=forged"}):
        r = requests.request(method, hub.api + path, headers=headers, timeout=30,
                             allow_redirects=False)
        if path == "/health":
            assert r.status_code == 200 and set(r.json()) == {
                "status", "datasets", "config_error", "config_loaded_at"}
            continue
        if path.startswith("/tickets/"):  # a partition of a scan plan: its ticket is the credential
            assert_error(r, 401, TICKET_REQUIRED)
            continue
        assert_error(r, 401, AUTH_REQUIRED["message"])


# -- 1. the server extension's routes ------------------------------------------------------------

def _extension_routes(base_url: str) -> list[tuple[str, type]]:
    """The handlers the server extension registers, captured from its own load function."""
    from jupyterhub_dataaccess.server import load_jupyter_server_extension

    class WebApp:
        settings = {"base_url": base_url}
        handlers: list = []

        def add_handlers(self, host: str, handlers: list) -> None:
            self.handlers.extend(handlers)

    class ServerApp:
        web_app = WebApp()
        log = logging.getLogger("test")

    app = ServerApp()
    load_jupyter_server_extension(app)
    return [(pattern, handler) for pattern, handler, *_ in app.web_app.handlers]


@pytest.fixture(scope="module")
def extension_server(hub: Hub):
    """A named server of the analyst with the dataaccess server extension enabled.

    The test venv runs the package from PYTHONPATH (not installed), so the extension is enabled
    the way a user could: in ~/.jupyter of the user's home. Installed, it is enabled anyway.
    """
    conf = os.path.join(hub.state, "home", "analyst", ".jupyter", "jupyter_server_config.d")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "jupyterhub_dataaccess.json"), "w") as f:
        f.write('{"ServerApp": {"jpserver_extensions": {"jupyterhub_dataaccess": true}}}\n')
    hub.start_server("analyst", "secext")
    yield "/user/analyst/secext/"
    hub.stop_server("analyst", "secext")


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case1_server_extension_routes_refuse_anonymous_callers_and_forward_the_owners(
        hub: Hub, extension_server: str):
    """When each route of the server extension is called through the user's server URL with no
    credentials, Then no data comes back (403, or a redirect to the hub's login); With the
    analyst's token, Then the call is forwarded and answers exactly as the service does."""
    routes = _extension_routes(extension_server)
    assert len(routes) == 1  # dataaccess/api/v1/(.*): one forwarding handler
    pattern, handler = routes[0]
    assert pattern == extension_server + "dataaccess/api/v1/(.*)"
    methods = [m.upper() for m in ("get", "post", "delete", "put", "patch")
               if m in handler.__dict__]
    assert methods == ["GET", "POST", "DELETE"]
    prefix = hub.url + extension_server + "dataaccess/api/v1"
    analyst = {"Authorization": f"token {hub.token('analyst')}"}
    checked = 0
    for method, path in ROUTES:
        if method not in methods:
            continue
        body = b"{}" if method == "POST" and not path.endswith("/withdraw") else None
        for headers in ({}, {"Sec-Fetch-Mode": "navigate"}):
            r = requests.request(method, prefix + path, headers=headers, data=body, timeout=30,
                                 allow_redirects=False)
            assert r.status_code in (302, 403), (method, path, r.status_code, r.text[:300])
            if r.status_code == 302:
                assert r.headers["Location"].startswith(("/hub/", hub.url + "/hub/"))
            else:
                assert r.json()["status"] == 403
            assert '"items"' not in r.text and '"name"' not in r.text
        forwarded = requests.request(method, prefix + path, headers=analyst, data=body,
                                     timeout=60, allow_redirects=False)
        direct = hub.call("analyst", method, path, data=body)
        assert forwarded.status_code == direct.status_code, (method, path, forwarded.text)
        if direct.status_code >= 400:
            assert forwarded.json() == direct.json()
        elif path == "/me":
            assert forwarded.json() == direct.json() and direct.json()["name"] == "analyst"
        checked += 1
    assert checked == len(ROUTES)


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case1_server_extension_refuses_traversal_in_the_forwarded_path(hub: Hub,
                                                                        extension_server: str):
    prefix = hub.url + extension_server + "dataaccess/api/v1"
    analyst = {"Authorization": f"token {hub.token('analyst')}"}
    for path in ("/datasets/..%2Fpenguins", "/datasets/%5C..%5Cpenguins", "/requests/1/..",
                 "/datasets\\..\\penguins", "/datasets/penguins%2F..%2F..%2Fhealth"):
        r = requests.get(prefix + path, headers=analyst, timeout=30, allow_redirects=False)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["message"].startswith("Invalid path")


# -- 2. random, truncated and near-miss tokens; a deleted user's token ---------------------------

def _near_misses(token: str) -> list[str]:
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    return [secrets.token_hex(16), token[:-1], token[:8], token + "0", flipped, token.upper(),
            token[1:] + token[0], "a" * 8000, "' OR 1=1 --", "token"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r[1] != "/health"], ids=_id)
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case2_bad_tokens_are_refused_on_every_route(hub: Hub, route):
    method, path = route
    good = hub.token("analyst")
    for bad in _near_misses(good):
        if len(bad) >= 16 and len(set(bad)) > 2:  # token-like: "a" * 8000 is not a secret
            SECRETS.add(bad)
        for scheme in ("token", "Bearer"):
            r = requests.request(method, hub.api + path, timeout=30, allow_redirects=False,
                                 headers={"Authorization": f"{scheme} {bad}"})
            assert_error(r, 401, TICKET_REQUIRED if path.startswith("/tickets/")
                         else AUTH_REQUIRED["message"])


def _refused_within(hub: Hub, token: str, calls: tuple[tuple[str, str], ...], since: float
                    ) -> float:
    """Seconds after `since` until every call with `token` is refused (401, no data); fails
    past the service's stated bound (token_cache_seconds) plus a second of scheduling slack."""
    def all_refused() -> bool:
        for method, path in calls:
            r = hub.call(None, method, path, token=token, json={"dataset": "penguins"})
            if r.status_code != 401:
                assert r.status_code < 500, r.text
                return False
            assert_error(r, 401, AUTH_REQUIRED["message"])
        return True

    wait_for(all_refused, TOKEN_BOUND + 1, "every call refused", every=0.25)
    return time.monotonic() - since


@pytest.mark.once  # the Hub's token check, not the service's database
def test_case2_a_deleted_users_token_stops_working_within_the_bound(hub: Hub):
    """Given a steward (by group) whose token works, When the hub deletes the user, Then the same
    token is refused within the service's token bound (token_cache_seconds, 5 s by default),
    with no data."""
    with hub_user(hub, groups=("stewards",)) as name:
        token = hub.token(name)
        me = hub.call(None, "GET", "/me", token=token)
        assert me.status_code == 200 and "review" in me.json()["capabilities"]
        req = new_request(hub, name, "penguins")
        assert hub.call(None, "GET", "/datasets/penguins/data", token=token).status_code == 200
        assert hub.hub_api("DELETE", f"/users/{name}").status_code == 204
        took = _refused_within(hub, token, (
            ("GET", "/me"), ("GET", "/requests"), ("GET", f"/requests/{req['id']}"),
            ("GET", "/datasets/penguins/data"), ("GET", "/grants"), ("POST", "/requests")),
            since=time.monotonic())
        assert took <= TOKEN_BOUND + 1


# -- 3. an expired token ----------------------------------------------------------------------------

@pytest.mark.once  # the Hub's token check, not the service's database
def test_case3_an_expired_token_is_refused_within_the_bound_even_if_it_was_just_used(hub: Hub):
    token = hub.token("analyst", expires_in=2)
    unused = hub.token("steward", expires_in=1)
    expiry = time.monotonic() + 2
    assert hub.call(None, "GET", "/me", token=token).status_code == 200
    calls = (("GET", "/me"), ("GET", "/datasets"), ("POST", "/requests"))
    wait_for(lambda: time.monotonic() >= expiry, 3, "the tokens' expiry")
    for t in (token, unused):
        assert _refused_within(hub, t, calls, since=expiry) <= TOKEN_BOUND + 1


# -- 4. user A's token on user B's things ----------------------------------------------------------

def test_case4_another_users_requests_grants_and_audit_look_missing(hub: Hub):
    """Given nobody's pending request and nobody's grant, When the analyst asks for, decides,
    withdraws, renews or revokes them, Then each answer is the body of a missing one."""
    req = new_request(hub, "nobody", "other-team")
    grant = grant_of(hub, "nobody", "penguins")
    missing_req = hub.call("analyst", "GET", f"/requests/{MISSING_ID}")
    assert_error(missing_req, 404, "No such request")
    for rid in (req["id"], grant["request_id"]):
        assert hub.call("analyst", "GET", f"/requests/{rid}").json() == missing_req.json()
        for action in ("approve", "deny", "withdraw", "renew"):
            body = None if action == "withdraw" else {}
            r = hub.call("analyst", "POST", f"/requests/{rid}/{action}", json=body)
            assert r.status_code == 404 and r.json() == missing_req.json(), (action, r.text)
    missing_grant = hub.call("analyst", "DELETE", f"/grants/{MISSING_ID}")
    assert_error(missing_grant, 404, "No such grant")
    r = hub.call("analyst", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 404 and r.json() == missing_grant.json()
    for params in ({"user": "nobody"}, {"dataset": "penguins", "user": "nobody"}):
        assert hub.call("analyst", "GET", "/grants", params=params).json() == {
            "items": [], "total": 0}
    assert all(r["user"] == "analyst" for r in hub.call(
        "analyst", "GET", "/requests", params={"limit": 200}).json()["items"])
    assert_error(hub.call("analyst", "GET", "/audit", params={"user": "nobody"}), 403,
                 "You lack the dataaccess 'review' permission")
    # and nothing changed
    assert hub.call("nobody", "GET", f"/requests/{req['id']}").json()["status"] == req["status"]
    assert hub.call("nobody", "GET", "/grants", params={"active": "true", "dataset": "penguins"}
                    ).json()["total"] >= 1


# -- 5. the user server's token on steward and admin routes -------------------------------------

@pytest.mark.once  # scopes, checked before the database
def test_case5_the_servers_token_cannot_review_administer_or_see_others(hub: Hub,
                                                                      analyst_kernel: Kernel):
    """Given the token the analyst's server holds (read in the analyst's own kernel), When it is
    used on steward and admin routes, Then 403; on another user's requests and grants, Then 404."""
    out = analyst_kernel.run("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])")
    assert out["error"] is None, out
    token = out["stdout"].strip()
    assert len(token) >= 16
    SECRETS.add(token)
    me = hub.call(None, "GET", "/me", token=token).json()
    assert {k: me[k] for k in ("name", "groups", "capabilities", "admin", "can_review")} == {
        "name": "analyst", "groups": ["analysts"], "capabilities": ["browse", "request"],
        "admin": False, "can_review": False}
    assert_error(hub.call(None, "GET", "/audit", token=token), 403,
                 "You lack the dataaccess 'review' permission")
    assert_error(hub.call(None, "GET", "/requests", token=token, params={"scope": "review"}),
                 403, "You lack the dataaccess 'review' permission")
    other = fresh_request(hub, "nobody", "penguins-masked")
    for action in ("approve", "deny"):
        r = hub.call(None, "POST", f"/requests/{other['id']}/{action}", token=token, json={})
        assert_error(r, 404, "No such request")
    grant = grant_of(hub, "nobody", "penguins")
    assert_error(hub.call(None, "DELETE", f"/grants/{grant['id']}", token=token), 404,
                 "No such grant")
    # its own grant it may see but not revoke: only stewards and admins revoke
    own = grant_of(hub, "analyst", "penguins")
    assert_error(hub.call(None, "DELETE", f"/grants/{own['id']}", token=token), 403,
                 "Only a steward of this dataset or an admin may revoke")
    assert hub.call("nobody", "GET", f"/requests/{other['id']}").json()["status"] == "pending"
    # nor does it reach the Hub's admin API
    r = requests.get(hub.url + "/hub/api/users", headers={"Authorization": f"token {token}"},
                     timeout=30)
    assert r.status_code == 403
    hub.call("nobody", "POST", f"/requests/{other['id']}/withdraw")


# -- 6. tokens in URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES, ids=_id)
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case6_a_token_in_the_url_is_refused_on_every_route(hub: Hub, route):
    method, path = route
    token = hub.token("analyst")
    for headers in ({}, {"Authorization": f"token {token}"}):
        r = requests.request(method, hub.api + path, params={"token": token}, headers=headers,
                             timeout=30, allow_redirects=False)
        assert_error(r, 400, "Tokens in URLs are refused; send an Authorization header")


# -- 7. cookie authentication and XSRF ------------------------------------------------------------

@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case7_a_cookie_post_without_a_valid_xsrf_token_is_refused_and_stores_nothing(hub: Hub):
    """Given a browser session logged in to the hub and to the service by OAuth, When it POSTs or
    DELETEs with its cookie but without the right _xsrf token, Then 403 and nothing is stored;
    With the token, Then the request is made."""
    s = hub_login(hub, "nobody")
    xsrf = service_xsrf(s)
    body = {"dataset": "penguins-masked", "justification": "cookie test"}
    pending = hub.call("nobody", "POST", "/requests", json=body)
    if pending.status_code == 409:  # left by another test: start from none
        hub.call("nobody", "POST", f"/requests/{pending.json()['request']['id']}/withdraw")
    else:
        hub.call("nobody", "POST", f"/requests/{pending.json()['id']}/withdraw")
    before = requests_total(hub, "nobody")
    refused = "XSRF check failed: send the _xsrf cookie's value in an X-XSRFToken header"
    hubs_own = s.cookies.get("_xsrf", path="/hub/")  # valid, but the hub's, not the service's
    for headers in ({}, {"X-XSRFToken": "forged"}, {"X-XSRFToken": xsrf[:-2]},
                    {"X-XSRFToken": hubs_own}, {"X-CSRFToken": "forged"}):
        r = s.post(hub.api + "/requests", json=body, headers=headers, timeout=30)
        assert_error(r, 403, refused)
        assert_error(s.delete(hub.api + f"/grants/{MISSING_ID}", headers=headers, timeout=30),
                     403, refused)
    assert requests_total(hub, "nobody") == before
    # a page view needs no token; an API read from script (cors) does
    assert s.get(hub.api + "/me", headers={"Sec-Fetch-Mode": "navigate"}).status_code == 200
    assert_error(s.get(hub.api + "/me", headers={"Sec-Fetch-Mode": "cors"}), 403, refused)
    r = s.post(hub.api + "/requests", json=body, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 201 and r.json()["user"] == "nobody", r.text
    assert requests_total(hub, "nobody") == before + 1
    r = s.post(hub.api + f"/requests/{r.json()['id']}/withdraw", headers={"X-XSRFToken": xsrf})
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
