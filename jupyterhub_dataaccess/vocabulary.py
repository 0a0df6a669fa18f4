"""The words the API shares with its clients — classifications, access, request and grant
statuses, audit actions — read from `service/openapi.yaml`, their one source. The labextension's
TypeScript types come from the same file; to add a status or an action, add it there.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import yaml

SPEC = os.path.join(os.path.dirname(__file__), "service", "openapi.yaml")


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document, parsed once."""
    with open(SPEC, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def enum(schema: str, field: str) -> tuple[str, ...]:
    """The values `components.schemas.<schema>.properties.<field>.enum` allows, in order."""
    return tuple(spec()["components"]["schemas"][schema]["properties"][field]["enum"])


CLASSIFICATIONS = enum("Dataset", "classification")
ACCESS_STATUSES = enum("Access", "status")
REQUEST_STATUSES = enum("Request", "status")
GRANT_STATUSES = enum("Grant", "status")
AUDIT_ACTIONS = enum("AuditRecord", "action")

__all__ = ["ACCESS_STATUSES", "AUDIT_ACTIONS", "CLASSIFICATIONS", "GRANT_STATUSES",
           "REQUEST_STATUSES", "enum", "spec"]
