"""SECURITY-CASES 50 on the session's real hub: after a steward revokes a grant, the same user's
renewal or new request for that dataset never auto-approves; it waits for a steward whatever the
tier, until a steward approves one. (No stewards at all: a clear denial, in
test_governance_unit.py and test_policy.py, as the shared catalogue gives every dataset stewards.)
"""

from __future__ import annotations

import pytest
from hubutil import Hub
from secutil import assert_error, audit, hub_user

REVOKED_REASON = ("needs 1 steward approval: your access to this dataset was revoked, so a "
                  "steward decides again")


@pytest.mark.parametrize("dataset", ["penguins", "sales"])  # public: auto; internal: auto for analysts
def test_case50_after_a_revocation_renew_and_new_requests_wait_for_a_steward(hub: Hub,
                                                                            dataset: str):
    with hub_user(hub, groups=("analysts",)) as user:
        first = hub.call(user, "POST", "/requests",
                         json={"dataset": dataset, "justification": "case 50"})
        assert first.status_code == 201 and first.json()["status"] == "approved", first.text
        (grant,) = hub.call(user, "GET", "/grants", params={"dataset": dataset}).json()["items"]
        assert hub.call("steward", "DELETE", f"/grants/{grant['id']}").status_code == 200

        # the renewal of the revoked grant's request waits for a steward
        renewed = hub.call(user, "POST", f"/requests/{first.json()['id']}/renew", json={})
        assert renewed.status_code == 201, renewed.text
        body = renewed.json()
        assert (body["status"], body["approvals_required"], body["reason"]) == (
            "pending", 1, REVOKED_REASON)
        assert hub.call(user, "GET", f"/datasets/{dataset}").json()["request_policy"][
            "outcome"] == "review"
        assert_error(hub.call(user, "GET", f"/datasets/{dataset}/data"), 403,
                     extra={"dataset": dataset})
        created = [r for r in audit(hub, dataset=dataset, action="request.create")
                   if r["request_id"] == body["id"]]
        assert created[0]["detail"]["policy"] == "review"

        # a new request instead: the same (withdrawn first, since one may be pending at a time)
        assert hub.call(user, "POST", f"/requests/{body['id']}/withdraw").status_code == 200
        again = hub.call(user, "POST", "/requests",
                         json={"dataset": dataset, "justification": "case 50, again"}).json()
        assert (again["status"], again["reason"]) == ("pending", REVOKED_REASON)
        review = hub.call("steward", "GET", "/requests",
                          params={"scope": "review", "status": "pending", "dataset": dataset})
        assert again["id"] in [r["id"] for r in review.json()["items"]]

        # a steward approves: access is back, and the policy applies as before from then on
        approved = hub.call("steward", "POST", f"/requests/{again['id']}/approve",
                            json={"comment": "ok again"})
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert hub.call(user, "GET", f"/datasets/{dataset}/data").status_code == 200
        later = hub.call(user, "POST", f"/requests/{again['id']}/renew", json={})
        assert later.status_code == 201 and later.json()["status"] == "approved", later.text
