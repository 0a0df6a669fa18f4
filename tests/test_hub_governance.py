"""Governance on a real hub: each route as requester, steward, other steward, admin, no groups."""

from __future__ import annotations

import os
import re
import time

import pytest
import yaml
from hubutil import Hub
from secutil import hub_user

from jupyterhub_dataaccess.service import handlers

SPEC = os.path.join(os.path.dirname(handlers.__file__), "openapi.yaml")


def _spec_routes() -> set[tuple[str, str]]:
    with open(SPEC) as f:
        spec = yaml.safe_load(f)
    return {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops
            if m in ("get", "post", "delete")}


def _app_routes() -> set[tuple[str, str]]:
    out = set()
    for pattern, handler in handlers.routes("/p/"):
        if pattern.startswith("/p/pages/"):  # the service's pages: one spec path, {page}
            out.add(("GET", "/pages/{page}"))
            continue
        if not pattern.startswith("/p/api/v1"):
            continue
        path = pattern[len("/p/api/v1"):]
        actions = re.search(r"\(([a-z|]+)\)$", path)
        bases = [path]
        if actions:
            bases = [path[:actions.start()] + a for a in actions.group(1).split("|")]
        for method in ("get", "post", "delete"):
            if method in handler.__dict__:
                for b in bases:
                    out.add((method.upper(), re.sub(r"\(\[\^/\]\{1,200\}\)", "{id}", b)))
    return out


def test_every_route_of_the_application_is_in_the_openapi_spec_and_back():
    assert _app_routes() == _spec_routes()


def _new_request(hub: Hub, user: str, dataset: str, **extra) -> dict:
    r = hub.call(user, "POST", "/requests",
                 json={"dataset": dataset, "justification": "governance test", **extra})
    if r.status_code == 409:
        return r.json()["request"]
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_mass_assignment_is_refused_and_nothing_is_stored(hub: Hub):
    mine = hub.call("nobody", "GET", "/requests", params={"status": "pending"}).json()["items"]
    for old in mine:  # a pending request of an earlier test would make the new one a 409
        if old["dataset"] == "other-team":
            hub.call("nobody", "POST", f"/requests/{old['id']}/withdraw")
    before = hub.call("nobody", "GET", "/requests").json()["total"]
    for extra in ({"status": "approved"}, {"user": "steward"}, {"id": 1}):
        r = hub.call("nobody", "POST", "/requests",
                     json={"dataset": "other-team", "justification": "x", **extra})
        assert r.status_code == 400 and "unknown field" in r.json()["message"]
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "other-team", "justification": "x", "days": 9999})
    assert r.status_code == 201 and r.json()["days"] == 30.0  # capped by the rule
    assert r.json()["user"] == "nobody" and r.json()["status"] == "pending"
    assert hub.call("nobody", "GET", "/requests").json()["total"] == before + 1
    hub.call("nobody", "POST", f"/requests/{r.json()['id']}/withdraw")


@pytest.mark.parametrize("bad", [{"justification": ""}, {"justification": 5},
                                 {"days": -1}, {"days": "ten"}, {"days": True}])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_bad_fields_are_a_400_naming_the_field(hub: Hub, bad: dict):
    body = {"dataset": "other-team", "justification": "why", **bad}
    r = hub.call("nobody", "POST", "/requests", json=body)
    assert r.status_code == 400
    field = next(iter(bad))
    assert field in r.json()["message"]


def test_steward_sees_and_decides_only_their_datasets(hub: Hub):
    req = _new_request(hub, "nobody", "other-team")
    # the dataset's stewards are the group otherstewards: steward is not one of them
    review = hub.call("steward", "GET", "/requests", params={"scope": "review"}).json()
    assert req["id"] not in {r["id"] for r in review["items"]}
    r = hub.call("steward", "GET", f"/requests/{req['id']}")
    missing = hub.call("steward", "GET", "/requests/999999")
    assert r.status_code == missing.status_code == 404
    assert r.json() == missing.json() == {"status": 404, "message": "No such request"}
    r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
    assert r.status_code == 404 and r.json() == missing.json()
    # otherstew is a steward of it
    review = hub.call("otherstew", "GET", "/requests", params={"scope": "review"}).json()
    assert req["id"] in {r["id"] for r in review["items"]}
    r = hub.call("otherstew", "POST", f"/requests/{req['id']}/deny",
                 json={"comment": "not this quarter"})
    assert r.status_code == 200 and r.json()["status"] == "denied"
    assert r.json()["decisions"][0] == {**r.json()["decisions"][0], "by": "otherstew",
                                        "decision": "deny", "comment": "not this quarter"}
    # decided requests are closed
    for action in ("approve", "deny"):
        r = hub.call("otherstew", "POST", f"/requests/{req['id']}/{action}", json={})
        assert r.status_code == 409 and "already denied" in r.json()["message"]
    r = hub.call("nobody", "POST", f"/requests/{req['id']}/withdraw")
    assert r.status_code == 409
    # the requester sees the denial in the catalogue
    d = hub.call("nobody", "GET", "/datasets/other-team").json()
    assert d["access"]["status"] == "denied"


@pytest.mark.once  # scopes, checked before the database
def test_users_without_review_scope_cannot_review(hub: Hub):
    r = hub.call("analyst", "GET", "/requests", params={"scope": "review"})
    assert r.status_code == 403
    r = hub.call("analyst", "GET", "/audit")
    assert r.status_code == 403


def test_other_users_requests_and_grants_are_invisible(hub: Hub):
    req = _new_request(hub, "analyst", "sales")  # auto for analysts
    assert req["status"] == "approved"
    grant = next(g for g in hub.call("analyst", "GET", "/grants").json()["items"]
                 if g["request_id"] == req["id"])
    r = hub.call("nobody", "GET", f"/requests/{req['id']}")
    assert r.status_code == 404 and r.json()["message"] == "No such request"
    r = hub.call("nobody", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 404 and r.json()["message"] == "No such grant"
    r = hub.call("nobody", "GET", "/grants", params={"user": "analyst"})
    assert r.json() == {"items": [], "total": 0}
    # the owner may see but not revoke their own grant
    r = hub.call("analyst", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 403


def test_internal_data_is_auto_only_for_analysts(hub: Hub):
    r = hub.call("nobody", "POST", "/requests", json={"dataset": "sales", "justification": "x"})
    assert r.status_code == 201
    assert r.json()["status"] == "pending"
    assert r.json()["reason"] == "needs 1 steward approval (no policy rule matched)"
    hub.call("nobody", "POST", f"/requests/{r.json()['id']}/withdraw")


def test_policy_deny_is_immediate_and_audited(hub: Hub):
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "forbidden", "justification": "x"})
    assert r.status_code == 201 and r.json()["status"] == "denied"
    assert r.json()["reason"] == "denied by policy: dataset forbidden"
    records = hub.call("admin", "GET", "/audit", params={"dataset": "forbidden"}).json()["items"]
    assert [rec["action"] for rec in records[:2]] == ["request.deny", "request.create"]


def test_revocation_bites_on_the_next_read_and_is_audited(hub: Hub):
    req = _new_request(hub, "steward2", "penguins")
    assert req["status"] == "approved"
    r = hub.call("steward2", "GET", "/datasets/penguins/data", params={"format": "csv"})
    assert r.status_code == 200
    grant = next(g for g in hub.call("admin", "GET", "/grants",
                                     params={"user": "steward2", "active": "true"}).json()["items"]
                 if g["dataset"] == "penguins")
    t0 = time.monotonic()
    r = hub.call("admin", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = hub.call("steward2", "GET", "/datasets/penguins/data", params={"format": "csv"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 403 and "da.request('penguins'" in r.json()["message"]
    assert elapsed < 5
    r = hub.call("admin", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 409
    recs = hub.call("admin", "GET", "/audit",
                    params={"user": "steward2", "dataset": "penguins"}).json()["items"]
    actions = [x["action"] for x in recs]
    assert actions[:2] == ["access.denied", "data.read"]
    revokes = hub.call("admin", "GET", "/audit", params={"action": "grant.revoke"}).json()
    assert any(x["grant_id"] == grant["id"] and x["actor"] == "admin" for x in revokes["items"])
    assert hub.call("steward2", "GET", "/datasets/penguins").json()["access"]["status"] == "revoked"


def test_renew_makes_a_new_request_while_the_grant_is_active(hub: Hub):
    req = _new_request(hub, "otherstew", "penguins")
    r = hub.call("otherstew", "POST", f"/requests/{req['id']}/renew", json={"days": 10})
    assert r.status_code == 201, r.text
    assert r.json()["id"] != req["id"] and r.json()["status"] == "approved"
    assert r.json()["days"] == 10
    r = hub.call("nobody", "POST", f"/requests/{req['id']}/renew", json={})
    assert r.status_code == 404


def test_stewards_audit_view_is_limited_to_their_datasets(hub: Hub):
    items = hub.call("otherstew", "GET", "/audit", params={"limit": 200}).json()["items"]
    assert items and {i["dataset"] for i in items} <= {"other-team"}
    everything = hub.call("admin", "GET", "/audit", params={"limit": 5}).json()
    assert everything["total"] > len(items) and len(everything["items"]) == 5


def test_notifications_tell_requesters_and_stewards(hub: Hub):
    start = hub.call("nobody", "GET", "/notifications").json()["last_seq"]
    req = _new_request(hub, "nobody", "penguins-masked")
    steward_view = hub.call("steward", "GET", "/notifications",
                            params={"since": start}).json()["items"]
    assert any(n["request_id"] == req["id"] and n["action"] == "request.create"
               and n["message"] == "nobody asks for access to penguins-masked"
               for n in steward_view)
    hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
    mine = hub.call("nobody", "GET", "/notifications", params={"since": start}).json()["items"]
    assert [n["action"] for n in mine if n["request_id"] == req["id"]] == [
        "request.approve", "grant.create"]


@pytest.mark.once  # the policy file, not the database
def test_policies_show_the_effective_rules(hub: Hub):
    body = hub.call("nobody", "GET", "/policies").json()
    assert body["rules"][0] == {"match": {"datasets": ["forbidden"]}, "decision": "deny",
                                "max_days": 30.0}
    assert body["rules"][-1]["approvals"] == 2
    assert body["default"]["decision"] == "review"


@pytest.mark.parametrize("params", [{"limit": "-1"}, {"offset": "-5"}, {"limit": "ten"}])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_bad_paging_is_a_400(hub: Hub, params: dict):
    r = hub.call("analyst", "GET", "/datasets", params=params)
    assert r.status_code == 400 and r.json()["status"] == 400


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_huge_limit_is_capped_at_200(hub: Hub):
    r = hub.call("admin", "GET", "/audit", params={"limit": "1000000000"})
    assert r.status_code == 200 and len(r.json()["items"]) <= 200


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_token_in_url_is_refused(hub: Hub):
    import requests

    token = hub.token("analyst")
    r = requests.get(f"{hub.api}/me", params={"token": token}, timeout=30)
    assert r.status_code == 400 and "Tokens in URLs" in r.json()["message"]


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_a_token_without_the_dataaccess_scopes_is_forbidden(hub: Hub):
    token = hub.token("analyst", scopes=["read:users:name!user"])
    r = hub.call(None, "GET", "/me", token=token)
    assert r.status_code == 403
    token = hub.token("analyst", scopes=["access:services!service=dataaccess"])
    r = hub.call(None, "GET", "/datasets", token=token)
    assert r.status_code == 403 and "browse" in r.json()["message"]


def test_dataset_details_say_what_asking_now_would_give(hub: Hub):
    """New users ask: other tests revoke the shared users' grants, and after a revocation a
    request waits for a steward whatever the tier (SECURITY-CASES 50)."""
    with hub_user(hub, prefix="gov") as someone, \
            hub_user(hub, groups=("analysts",), prefix="gov") as analyst:
        public = hub.call(someone, "GET", "/datasets/penguins").json()["request_policy"]
        assert public == {"outcome": "auto", "approvals": 0, "max_days": 365.0,
                          "reason": "auto-approved: public data"}
        restricted = hub.call(someone, "GET", "/datasets/salaries").json()["request_policy"]
        assert restricted["outcome"] == "review" and restricted["approvals"] == 2
        assert restricted["max_days"] == 7.0
        # the same internal dataset: auto for an analyst, review for anyone else
        assert hub.call(analyst, "GET", "/datasets/sales").json()["request_policy"][
            "outcome"] == "auto"
        assert hub.call(someone, "GET", "/datasets/sales").json()["request_policy"][
            "outcome"] == "review"
