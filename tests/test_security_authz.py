"""Security cases 8-16 (Authorization) on a real JupyterHub: guessed ids, self-approval, stewards of
other datasets, self-promotion, colliding ids, reading what was not granted, decided requests, mass
assignment and redirects."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
import requests
from hubutil import Hub
from secutil import (
    MISSING_ID,
    assert_error,
    audit,
    audit_total,
    fresh_request,
    grant_of,
    hub_login,
    hub_user,
    new_request,
    requests_total,
)

EXPIRING_DAYS = 1 / 24 / 60  # one minute, the shortest grant the policy gives


@pytest.fixture(scope="module", autouse=True)
def expiring(hub: Hub):
    """A one-minute grant made when the module starts; the last test waits for it to expire."""
    with hub_user(hub, prefix="sec-exp") as name:
        req = new_request(hub, name, "penguins", days=EXPIRING_DAYS)
        assert req["status"] == "approved" and req["days"] == EXPIRING_DAYS
        grant = hub.call(name, "GET", "/grants").json()["items"][0]
        yield {"user": name, "request": req, "grant": grant}


# -- 8. sequential and guessed ids ---------------------------------------------------------------

def test_case8_walking_request_and_grant_ids_reveals_nothing_of_others(hub: Hub):
    """When nobody walks the ids around the newest requests and grants, Then their own come back
    and every other one answers exactly like a missing id; nothing is revoked or decided."""
    new_request(hub, "analyst", "sales")  # at least one of someone else's
    top_req = max(r["request_id"] for r in hub.call("admin", "GET", "/audit", params={
        "action": "request.create", "limit": 5}).json()["items"])
    top_grant = hub.call("admin", "GET", "/grants", params={"limit": 1}).json()["items"][0]["id"]
    missing_req = hub.call("nobody", "GET", f"/requests/{MISSING_ID}").json()
    missing_grant = hub.call("nobody", "DELETE", f"/grants/{MISSING_ID}").json()
    grants_before = hub.call("admin", "GET", "/grants", params={"active": "true"}).json()["total"]
    others = 0
    for rid in range(max(1, top_req - 40), top_req + 3):
        r = hub.call("nobody", "GET", f"/requests/{rid}")
        if r.status_code == 200:
            assert r.json()["user"] == "nobody"
            continue
        assert r.json() == missing_req
        others += 1
        for action in ("approve", "deny", "withdraw", "renew"):
            r = hub.call("nobody", "POST", f"/requests/{rid}/{action}")
            assert r.status_code == 404 and r.json() == missing_req
    for gid in range(max(1, top_grant - 40), top_grant + 3):
        r = hub.call("nobody", "DELETE", f"/grants/{gid}")
        if r.status_code == 403:  # its own grant: visible, not revocable by its holder
            assert r.json()["message"] == "Only a steward of this dataset or an admin may revoke"
            continue
        assert r.status_code == 404 and r.json() == missing_grant
    assert others > 0
    assert hub.call("admin", "GET", "/grants", params={"active": "true"}).json()["total"] \
        == grants_before
    for rid in ("0", "-1", "1.0", "0x10", "1e3", "01", "%201", "\u0661", "\uff11", "9" * 20,
                str(2**31), str(2**63), "9" * 150, "1;2", "1%00"):
        assert hub.call("nobody", "GET", f"/requests/{rid}").json() == missing_req, rid


# -- 9. self-approval ----------------------------------------------------------------------------

def test_case9_a_steward_by_group_never_decides_their_own_request(hub: Hub):
    """Given a user who is a steward of penguins-masked through the group 'stewards', When they
    approve or deny their own request, with their token or a second one, Then 403, no decision."""
    with hub_user(hub, groups=("stewards",)) as name:
        req = fresh_request(hub, name, "penguins-masked")
        assert req["status"] == "pending"
        second = hub.token(name, scopes=["access:services!service=dataaccess",
                                         "custom:dataaccess:browse", "custom:dataaccess:review"])
        assert "review" in hub.call(None, "GET", "/me", token=second).json()["capabilities"]
        for token in (hub.token(name), second):
            for action in ("approve", "deny"):
                r = hub.call(None, "POST", f"/requests/{req['id']}/{action}", token=token,
                             json={"comment": "mine"})
                assert_error(r, 403, "You cannot decide your own request")
        review = hub.call(name, "GET", "/requests", params={"scope": "review"}).json()
        assert req["id"] not in {r["id"] for r in review["items"]}
        after = hub.call(name, "GET", f"/requests/{req['id']}").json()
        assert after["status"] == "pending" and after["decisions"] == []
        assert [a["action"] for a in audit(hub, dataset="penguins-masked", user=name)] == [
            "request.create"]


def test_case9_restricted_data_needs_two_distinct_stewards_neither_the_requester(hub: Hub):
    with hub_user(hub, groups=("stewards",)) as name:
        req = fresh_request(hub, name, "salaries", days=1)
        assert req["status"] == "pending" and req["approvals_required"] == 2
        url = f"/requests/{req['id']}/approve"
        assert hub.call("steward", "POST", url, json={}).json()["status"] == "pending"
        # the same steward again, with a second token: still one approval
        again = hub.token("steward", scopes=["access:services!service=dataaccess",
                                             "custom:dataaccess:browse",
                                             "custom:dataaccess:review"])
        r = hub.call(None, "POST", url, token=again, json={})
        assert r.status_code == 409 and r.json()["message"] == "You have already approved this request"
        assert_error(hub.call(name, "POST", url, json={}), 403, "You cannot decide your own request")
        assert_error(hub.call("admin", "POST", url, json={}), 403,
                     "Only a steward of this dataset may decide this request")
        assert_error(hub.call("otherstew", "POST", url, json={}), 404, "No such request")
        assert hub.call(name, "GET", "/grants", params={"user": name}).json()["total"] == 0
        r = hub.call("steward2", "POST", url, json={"comment": "second"})
        assert r.status_code == 200 and r.json()["status"] == "approved"
        assert [(d["by"], d["decision"]) for d in r.json()["decisions"]] == [
            ("steward", "approve"), ("steward2", "approve")]
        grants = hub.call(name, "GET", "/grants", params={"user": name}).json()["items"]
        assert [(g["dataset"], g["status"]) for g in grants] == [("salaries", "active")]
        records = [a for a in audit(hub, dataset="salaries") if a["request_id"] == req["id"]]
        assert sorted(a["action"] for a in records) == [
            "grant.create", "request.approve", "request.approve", "request.create"]


# -- 10. a steward of X decides for Y --------------------------------------------------------------

@pytest.mark.parametrize("steward,requester,dataset", [
    ("otherstew", "nobody", "penguins-masked"),  # stewards other-team only
    ("steward", "nobody", "other-team"),  # stewards penguins*, sales, salaries, broken
    ("steward2", "nobody", "sales"),  # in group 'stewards', but sales names user steward only
])
def test_case10_a_steward_of_another_dataset_cannot_see_or_decide(hub: Hub, steward, requester,
                                                                  dataset):
    req = fresh_request(hub, requester, dataset)
    for action in ("approve", "deny"):
        assert_error(hub.call(steward, "POST", f"/requests/{req['id']}/{action}", json={}), 404,
                     "No such request")
    assert_error(hub.call(steward, "GET", f"/requests/{req['id']}"), 404, "No such request")
    review = hub.call(steward, "GET", "/requests", params={"scope": "review", "limit": 200})
    assert req["id"] not in {r["id"] for r in review.json()["items"]}
    assert hub.call(requester, "GET", f"/requests/{req['id']}").json()["decisions"] == []
    hub.call(requester, "POST", f"/requests/{req['id']}/withdraw")


# -- 11. giving oneself review or admin ------------------------------------------------------------

@pytest.mark.once  # scopes, checked before the database
def test_case11_a_user_cannot_give_themselves_review_or_admin(hub: Hub):
    """When the analyst, with their own token, asks the hub for a token with the dataaccess review
    or admin scope, for the admin role, or to join the admins group, Then the hub refuses, and
    the service still answers 403 on steward and admin routes."""
    own = {"Authorization": f"token {hub.token('analyst')}"}
    hub_api = hub.url + "/hub/api"
    for body in ({"scopes": ["custom:dataaccess:admin"]},
                 {"scopes": ["custom:dataaccess:review"]},
                 {"scopes": ["custom:dataaccess:admin!user=analyst"]},
                 {"roles": ["dataaccess-admin"]}, {"roles": ["admin"]}):
        r = requests.post(f"{hub_api}/users/analyst/tokens", json={"note": "escalate", **body},
                          headers=own, timeout=30)
        if r.status_code == 201:  # a token was made: it must not carry what the user lacks
            token = r.json()["token"]
            assert not {"custom:dataaccess:admin", "custom:dataaccess:review"} & set(
                r.json()["scopes"]), r.json()
            assert_error(hub.call(None, "GET", "/audit", token=token), 403)
        else:
            assert r.status_code in (400, 403), (body, r.status_code, r.text)
    r = requests.post(f"{hub_api}/groups/admins/users", json={"users": ["analyst"]}, headers=own,
                      timeout=30)
    assert r.status_code in (403, 404), r.text
    r = requests.patch(f"{hub_api}/users/analyst", json={"admin": True, "groups": ["admins"]},
                       headers=own, timeout=30)
    assert r.status_code in (403, 404), r.text
    assert "analyst" not in hub.hub_api("GET", "/groups/admins").json()["users"]
    assert hub.call("analyst", "GET", "/me").json()["capabilities"] == ["browse", "request"]
    assert_error(hub.call("analyst", "GET", "/audit"), 403,
                 "You lack the dataaccess 'review' permission")
    assert_error(hub.call("analyst", "GET", "/requests", params={"scope": "review"}), 403,
                 "You lack the dataaccess 'review' permission")


# -- 12. ids that collide after folding, normalisation or escaping --------------------------------

COLLIDING = ["Penguins", "PENGUINS", "penguins ", " penguins", "penguins.", "penguins%2F..",
             "penguins%2F..%2Fpenguins", "pengu\u0131ns", "PENGU\u0130NS", "\uff50enguins",
             "\uff50\uff45\uff4e\uff47\uff55\uff49\uff4e\uff53", "pen\u200bguins",
             "penguin\u0455", "penguins%00", "penguins%0a", "penguins%E2%80%8B", "p%C3%A9nguins",
             "penguins;", "penguins%3Bsalaries", "penguins%09"]


def test_case12_ids_that_collide_after_folding_or_escaping_are_missing(hub: Hub):
    """Given nobody holds a grant for penguins, When they use ids that fold, normalise or unescape
    towards it, Then 404 'No such dataset' everywhere, no request is stored, no data flows."""
    grant_of(hub, "nobody", "penguins")
    before = requests_total(hub, "nobody")
    reads = audit_total(hub, action="data.read")
    for ds in COLLIDING:
        for suffix in ("", "/data", "/preview"):
            r = hub.call("nobody", "GET", f"/datasets/{ds}{suffix}", params={"format": "csv"})
            assert r.status_code == 404, (ds, suffix, r.status_code, r.text[:200])
            assert r.json()["message"] in ("No such dataset", "Not found")
        raw = requests.utils.unquote(ds)
        r = hub.call("nobody", "POST", "/requests", json={"dataset": raw, "justification": "x"})
        assert_error(r, 404, "No such dataset")
    assert requests_total(hub, "nobody") == before
    assert audit_total(hub, action="data.read") == reads
    # an escape of the very same id is the same dataset, not a collision
    assert hub.call("nobody", "GET", "/datasets/%70enguins").json()["id"] == "penguins"


# -- 13. granted A, reading B -----------------------------------------------------------------------

def test_case13_a_grant_for_one_dataset_never_reads_another(hub: Hub):
    grant_of(hub, "nobody", "penguins")
    denied = audit_total(hub, action="access.denied", user="nobody", dataset="salaries")
    for suffix in ("/data", "/preview"):
        r = hub.call("nobody", "GET", f"/datasets/salaries{suffix}")
        body = assert_error(r, 403, extra={"dataset": "salaries"})
        assert "da.request('salaries'" in body["message"]
    assert audit_total(hub, action="access.denied", user="nobody", dataset="salaries") \
        == denied + 2
    # query tricks on the granted one still read only the granted one
    r = hub.call("nobody", "GET", "/datasets/penguins/data",
                 params={"format": "csv", "dataset": "salaries", "id": "salaries"})
    header = r.text.splitlines()[0].replace('"', "").split(",")
    assert r.status_code == 200 and header[:2] == ["species", "island"] and "salary" not in header
    assert_error(hub.call("nobody", "GET", "/datasets/penguins/data",
                          params={"columns": "salary,name"}), 400,
                 "unknown column(s): salary, name")
    r = hub.call("nobody", "GET", "/datasets/penguins/../salaries/data")
    assert r.status_code == 403


# -- 14. decided requests ---------------------------------------------------------------------------

def test_case14_withdrawn_denied_and_approved_requests_are_closed(hub: Hub):
    withdrawn = fresh_request(hub, "nobody", "penguins-masked")
    hub.call("nobody", "POST", f"/requests/{withdrawn['id']}/withdraw")
    denied = fresh_request(hub, "nobody", "penguins-masked")
    assert hub.call("steward", "POST", f"/requests/{denied['id']}/deny", json={}).status_code == 200
    approved = fresh_request(hub, "nobody", "other-team")
    assert hub.call("otherstew", "POST", f"/requests/{approved['id']}/approve",
                    json={}).status_code == 200
    cases = [(withdrawn, "steward", "withdrawn"), (denied, "steward", "denied"),
             (approved, "otherstew", "approved")]
    records = audit_total(hub, dataset="penguins-masked") + audit_total(hub, dataset="other-team")
    for req, steward, status in cases:
        for action in ("approve", "deny"):
            r = hub.call(steward, "POST", f"/requests/{req['id']}/{action}", json={})
            assert r.status_code == 409 and r.json()["message"] == f"This request is already {status}"
            assert r.json()["request"]["status"] == status
        r = hub.call("nobody", "POST", f"/requests/{req['id']}/withdraw")
        assert r.status_code == 409 and r.json()["message"] == f"This request is already {status}"
        # there is no way to edit a request
        for method in ("PUT", "PATCH"):
            r = hub.call("nobody", method, f"/requests/{req['id']}",
                         json={"status": "approved", "days": 3650})
            assert_error(r, 405)
        assert_error(hub.call("nobody", "POST", f"/requests/{req['id']}", json={}), 405)
        assert hub.call("nobody", "GET", f"/requests/{req['id']}").json()["status"] == status
    assert audit_total(hub, dataset="penguins-masked") + audit_total(
        hub, dataset="other-team") == records
    hub.call("otherstew", "DELETE", "/grants/" + str(hub.call(
        "nobody", "GET", "/grants", params={"dataset": "other-team", "active": "true"}
    ).json()["items"][0]["id"]))


# -- 15. mass assignment ------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    {"status": "approved"}, {"user": "steward"}, {"id": 1}, {"approvals_required": 0},
    {"reason": "auto"}, {"decisions": [{"by": "steward", "decision": "approve"}]},
    {"created_at": "2000-01-01T00:00:00Z"}, {"grant": {"days": 3650}}, {"Status": "approved"},
])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case15_fields_a_requester_may_not_set_are_refused_and_nothing_stored(hub: Hub, extra):
    before = requests_total(hub, "nobody")
    records = audit_total(hub, dataset="other-team")
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "other-team", "justification": "x", **extra})
    assert_error(r, 400, f"unknown field(s): {next(iter(extra))}")
    assert requests_total(hub, "nobody") == before
    assert audit_total(hub, dataset="other-team") == records


def test_case15_days_are_capped_and_decisions_take_only_a_comment(hub: Hub):
    for days, expected in ((9999, 30.0), (1e308, 30.0), (10**30, 30.0), (0.5, 0.5)):
        req = fresh_request(hub, "nobody", "other-team", days=days)
        assert (req["days"], req["status"], req["user"]) == (expected, "pending", "nobody")
        hub.call("nobody", "POST", f"/requests/{req['id']}/withdraw")
    req = fresh_request(hub, "nobody", "other-team")
    for body in ({"comment": "ok", "by": "admin"}, {"decision": "approve"},
                 {"status": "approved"}, {"approvals": 2}):
        r = hub.call("otherstew", "POST", f"/requests/{req['id']}/approve", json=body)
        assert_error(r, 400)
        assert r.json()["message"].startswith("unknown field(s): ")
    assert hub.call("nobody", "GET", f"/requests/{req['id']}").json()["decisions"] == []
    assert_error(hub.call("nobody", "POST", f"/requests/{req['id']}/withdraw",
                          json={"status": "approved"}), 400, "withdraw takes no body")
    hub.call("nobody", "POST", f"/requests/{req['id']}/withdraw")
    granted = new_request(hub, "nobody", "penguins")
    for body in ({"status": "approved"}, {"user": "steward"}, {"dataset": "salaries"}):
        r = hub.call("nobody", "POST", f"/requests/{granted['id']}/renew", json=body)
        assert_error(r, 400, f"unknown field(s): {next(iter(body))}")


# -- 16. redirects -------------------------------------------------------------------------------------

@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case16_no_redirect_leaves_the_hub(hub: Hub):
    """The service takes no next=: its OAuth callback redirects only to what its own state kept,
    and a login redirect always points at the hub."""
    evil = ("https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example")
    for target in evil:
        for params in ({"next": target}, {"next": target, "code": "x", "state": "y"},
                       {"next_url": target, "redirect_uri": target}):
            r = requests.get(hub.url + "/services/dataaccess/oauth_callback", params=params,
                             allow_redirects=False, timeout=30)
            if r.is_redirect:
                loc = r.headers["Location"]
                assert loc.startswith("/") and not loc.startswith(("//", "/\\")), loc
            else:
                assert_error(r, r.status_code)
                assert r.status_code in (400, 403)
        r = requests.get(hub.api + "/me", params={"next": target},
                         headers={"Sec-Fetch-Mode": "navigate"}, allow_redirects=False, timeout=30)
        assert r.status_code == 302
        loc = urlparse(r.headers["Location"])
        assert not loc.netloc and loc.path == "/hub/api/oauth2/authorize"
        assert "evil" not in r.headers["Location"].split("redirect_uri=")[1].split("&")[0]
    # a logged-in browser following every redirect stays on the hub
    s = hub_login(hub, "nobody")
    for target in evil:
        r = s.get(hub.api + "/me", params={"next": target},
                  headers={"Sec-Fetch-Mode": "navigate"}, timeout=30)
        assert urlparse(r.url).netloc == urlparse(hub.url).netloc and r.status_code == 200
        r = s.get(hub.url + "/services/dataaccess/oauth_callback", params={"next": target},
                  timeout=30)
        assert urlparse(r.url).netloc == urlparse(hub.url).netloc


# -- 14 (expired), last: the module's one-minute grant has run out by now ------------------------

def test_case14_an_expired_grants_request_cannot_be_approved_again(hub: Hub, expiring):
    left = time.monotonic()  # the module's other tests took most of the minute
    expires = expiring["grant"]["expires_at"]
    from datetime import datetime, timezone

    wait = (datetime.fromisoformat(expires.replace("Z", "+00:00"))
            - datetime.now(timezone.utc)).total_seconds() + 1
    if wait > 0:
        time.sleep(wait)
    user, req = expiring["user"], expiring["request"]
    grant = hub.call(user, "GET", "/grants").json()["items"][0]
    assert grant["status"] == "expired", (grant, time.monotonic() - left)
    for steward in ("steward", "steward2"):
        r = hub.call(steward, "POST", f"/requests/{req['id']}/approve", json={})
        assert r.status_code == 409 and r.json()["message"] == "This request is already approved"
    assert_error(hub.call("admin", "POST", f"/requests/{req['id']}/approve", json={}), 403,
                 "Only a steward of this dataset may decide this request")
    r = hub.call(user, "POST", f"/requests/{req['id']}/withdraw")
    assert r.status_code == 409
    assert_error(hub.call(user, "GET", "/datasets/penguins/data"), 403,
                 extra={"dataset": "penguins"})
    assert hub.call(user, "GET", "/grants").json()["total"] == 1
