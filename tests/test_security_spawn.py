"""SECURITY-CASES 49 on the session's real hub: `GET /spawn` answers the hub's spawn hook alone (a
service token only the hub holds, with the custom:dataaccess:spawn scope, naming the user). A
user's token, their running server's included, is refused and writes no audit record in their name.
"""

from __future__ import annotations

import json
import os

import pytest
import requests
from hubutil import ADMIN_TOKEN, Hub, Kernel
from secutil import assert_error, audit, grant_of

HUB_ONLY = {"status": 403, "message": "GET /spawn answers the hub's spawn hook only"}


def _spawn_token(hub: Hub) -> str:
    with open(os.path.join(hub.key_dir, "spawn_token")) as f:
        return f.read().strip()


def _last_seq(hub: Hub) -> int:
    return audit(hub, limit=1)[0]["seq"]


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case49_a_users_own_tokens_are_refused_and_write_no_record(hub: Hub):
    """When a user asks GET /spawn with their own token (about themselves or another user), or
    a hub service without the spawn scope asks, Then 403 with one clear message, and no record."""
    grant_of(hub, "analyst", "penguins")
    before = _last_seq(hub)
    for params in ({}, {"user": "analyst"}, {"user": "steward"}):
        assert_error(hub.call("analyst", "GET", "/spawn", params=params), **HUB_ONLY)
    admin_user = hub.call("admin", "GET", "/spawn", params={"user": "analyst"})
    assert_error(admin_user, **HUB_ONLY)
    other_service = requests.get(hub.api + "/spawn", params={"user": "analyst"}, timeout=30,
                                 headers={"Authorization": f"token {ADMIN_TOKEN}"})
    assert other_service.status_code == 403, other_service.text
    assert "Traceback" not in other_service.text
    assert _last_seq(hub) == before
    assert not [r for r in audit(hub, action="spawn.mounts") if r["seq"] > before]


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case49_the_servers_token_from_a_kernel_is_refused(hub: Hub, analyst_kernel: Kernel):
    """When code in the user's kernel calls GET /spawn with the server's JUPYTERHUB_API_TOKEN,
    Then 403 and no record."""
    before = _last_seq(hub)
    out = analyst_kernel.run("""
import json, os, requests
r = requests.get(os.environ["DATAACCESS_URL"] + "api/v1/spawn", params={"user": "analyst"},
                 headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]},
                 timeout=30)
print(json.dumps([r.status_code, r.json()]))
""")
    assert out["error"] is None, out
    status, body = json.loads(out["stdout"])
    assert (status, body) == (403, HUB_ONLY)
    assert _last_seq(hub) == before


@pytest.mark.once  # the spawn token's check, not the database
def test_case49_the_hubs_spawn_token_gets_the_named_users_plan_audited_in_their_name(hub: Hub):
    """When the hub's spawn service asks about a user, Then it gets that user's grants and one
    spawn.mounts record names the user and that the hub asked; without `user` it is a 400."""
    grant = grant_of(hub, "analyst", "penguins")
    token = _spawn_token(hub)
    headers = {"Authorization": f"token {token}"}
    r = requests.get(hub.api + "/spawn", params={"user": "analyst"}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["user"] == "analyst" and grant["id"] in [g["id"] for g in plan["grants"]]
    (record,) = audit(hub, action="spawn.mounts", limit=1)
    assert record["actor"] == "analyst" and record["detail"]["asked_by"] == "hub:dataaccess-spawn"
    r = requests.get(hub.api + "/spawn", headers=headers, timeout=30)
    assert_error(r, 400, "user is required: the user whose server is starting")
    # the token is the hub's: nothing about it reaches a user's server
    assert token not in hub.call("analyst", "GET", "/me").text
