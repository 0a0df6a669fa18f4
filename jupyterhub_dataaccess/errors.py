"""Who is asking (`Principal`) and what can go wrong (errors that carry their HTTP status).

A small module of its own so every layer (governance, the service's handlers, the command line,
the readers and the query path) can import these without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCOPE_PREFIX = "custom:dataaccess:"
CAPABILITIES = ("browse", "request", "review", "admin")


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


class NotFound(GovernanceError):
    status = 404


class Conflict(GovernanceError):
    status = 409


@dataclass(frozen=True)
class Principal:
    """A hub user as the Hub described them to the service."""

    name: str
    groups: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @classmethod
    def from_scopes(cls, name: str, groups: list[str], scopes: list[str]) -> Principal:
        caps = {s[len(SCOPE_PREFIX):] for s in scopes if s.startswith(SCOPE_PREFIX)}
        caps = {c.split("!", 1)[0] for c in caps} & set(CAPABILITIES)
        if "admin" in caps:
            caps |= {"browse", "review"}
        return cls(name=name, groups=frozenset(groups), capabilities=frozenset(caps))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "groups": sorted(self.groups),
                "capabilities": [c for c in CAPABILITIES if self.can(c)],
                "admin": self.can("admin")}


__all__ = ["CAPABILITIES", "SCOPE_PREFIX", "BadRequest", "Conflict", "Forbidden",
           "GovernanceError", "NotFound", "Principal"]
