"""Who is asking (`Principal`) and what can go wrong (errors that carry their HTTP status).

A small module of its own so every layer (governance, the service's handlers, the command line,
the readers and the query path) can import these without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCOPE_PREFIX = "custom:dataaccess:"
CAPABILITIES = ("browse", "request", "review", "admin")
METRICS_SCOPE = SCOPE_PREFIX + "metrics"  # a scraper's service token; not a capability of users
# held by the hub's spawn hook alone (a service token configure_hub registers): GET /spawn
SPAWN_SCOPE = SCOPE_PREFIX + "spawn"
MAX_ID = 2**31 - 1  # ids, sequence numbers and offsets are SQL INTEGER: nothing lies beyond


class GovernanceError(Exception):
    """A refusal with its HTTP status; `extra` fields join the JSON error body."""

    status = 400

    def __init__(self, message: str, **extra: Any):
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(GovernanceError):
    status = 400


class Forbidden(GovernanceError):
    status = 403


class NoGrant(Forbidden):
    """No active grant for `dataset`; the message says why. The service's handlers add how to
    ask for one (messages.how_to_ask), which is wording for a person, not a decision."""

    def __init__(self, reason: str, dataset: str):
        super().__init__(reason, dataset=dataset)
        self.dataset = dataset


class NotFound(GovernanceError):
    status = 404


def parse_id(text: str, what: str) -> int:
    """A request's or grant's id from a URL or a command line as a number. Only plain ASCII
    digits within the SQL range count (not '01', ' 1', '1.0' or other scripts' digits, which
    int() would take); anything else is NotFound("No such <what>"), as a missing one is."""
    if text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 10 \
            and int(text) <= MAX_ID:
        return int(text)
    raise NotFound(f"No such {what}")


class Conflict(GovernanceError):
    status = 409


class SourceUnavailable(GovernanceError):
    """The source cannot be read now (the cause goes to the service log, never to the caller),
    or its governance does not fit it (the message says so; the read is refused)."""

    status = 502

    def __init__(self, message: str = "The data source cannot be read right now; the service "
                                      "log has details", **extra: Any):
        super().__init__(message, **extra)

    @classmethod
    def because(cls, reason: str) -> SourceUnavailable:
        """Saying `reason`, a cause any caller may see (a source error's `reason`: never a
        location, a setting or a secret), when there is one; else pointing at the log."""
        return cls(f"The data source cannot be read right now: {reason}") if reason else cls()


class SourceChanged(SourceUnavailable):
    """A file planned to go out as it is was replaced or rewritten before it was sent: nothing
    is sent; asked again, the read (or a new plan) sees the file as it is now."""

    status = 503

    def __init__(self) -> None:
        super().__init__("The dataset's file changed as it was about to be sent, so nothing "
                         "was sent: read it again")


@dataclass(frozen=True)
class Principal:
    """A hub user as the Hub described them to the service.

    `capabilities` are what this credential may do; `holds` what the person holds (review, admin)
    even when this credential may not use it (their server's token: it may only tell).
    """

    name: str
    groups: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    holds: frozenset[str] = frozenset()
    refused_scopes: tuple[str, ...] = ()

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def holds_role(self, capability: str) -> bool:
        return capability in self.holds or self.can(capability)

    @classmethod
    def from_scopes(cls, name: str, groups: list[str], scopes: list[str]) -> Principal:
        """The capabilities a token's scopes give. A filtered scope (`...!user=x`, `!group=g`)
        counts only where it is exact: browse and request act on the caller alone, so a filter
        naming the caller or one of their groups is honoured; review and admin act over other
        people, so a filtered one is refused (listed in `refused_scopes`), never widened."""
        caps: set[str] = set()
        holds: set[str] = set()
        refused: list[str] = []
        for scope in scopes:
            if not scope.startswith(SCOPE_PREFIX):
                continue
            base, _, where = scope[len(SCOPE_PREFIX):].partition("!")
            if where and base.endswith(":status"):
                continue  # expanded from a filtered review/admin scope, refused with it
            if where and not (base in ("browse", "request") and _names_caller(where, name, groups)):
                refused.append(scope)
            elif base in CAPABILITIES:
                caps.add(base)
            elif base in ("review:status", "admin:status"):
                holds.add(base.split(":", 1)[0])
        if "admin" in caps:
            caps |= {"browse", "review"}
        holds |= caps & {"review", "admin"}
        if "admin" in holds:
            holds.add("review")
        return cls(name=name, groups=frozenset(groups), capabilities=frozenset(caps),
                   holds=frozenset(holds), refused_scopes=tuple(sorted(refused)))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "groups": sorted(self.groups),
                "capabilities": [c for c in CAPABILITIES if self.can(c)],
                "admin": self.can("admin"), "can_review": self.holds_role("review"),
                "can_admin": self.holds_role("admin"),
                "refused_scopes": list(self.refused_scopes)}


def _names_caller(where: str, name: str, groups: frozenset[str] | list[str]) -> bool:
    """Whether a scope filter (`user=x`, `group=g`) covers the caller themselves."""
    kind, _, value = where.partition("=")
    return (kind == "user" and value == name) or (kind == "group" and value in groups)


__all__ = ["CAPABILITIES", "METRICS_SCOPE", "SCOPE_PREFIX", "BadRequest", "Conflict", "Forbidden",
           "GovernanceError", "NotFound", "Principal", "SourceChanged",
           "SourceUnavailable"]
