"""What a person reads: the wording that tells someone what to do next or what happened.

Governance decides and raises plain facts (`NoGrant` names the dataset; a notification item is an
audit action, its actor, the requester and the dataset); the service's handlers put them into
these words. A leaf: it imports nothing of the package, so any layer may use it.
"""

from __future__ import annotations


def how_to_ask(dataset: str) -> str:
    """The sentence after "you have no grant": the exact call to make, or the panel's button."""
    return (f"Ask for it with da.request({dataset!r}, justification=\"why you need it\") "
            "or with 'Request access' in the Data panel.")


def notification(action: str, actor: str, user: str, dataset: str) -> str:
    """One line of the panel's notifications for the audit `action` on `user`'s request."""
    return {
        "request.create": f"{user} asks for access to {dataset}",
        "request.approve": f"{actor} approved your request for {dataset}",
        "request.deny": f"{actor} denied your request for {dataset}",
        "grant.create": f"You now have access to {dataset}",
        "grant.revoke": f"{actor} revoked your access to {dataset}",
        "grant.expire": f"Your access to {dataset} expired",
    }.get(action, action)
