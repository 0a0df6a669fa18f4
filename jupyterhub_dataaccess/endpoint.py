"""The service as the user's server sees it: where it is, the token to speak with, how to join
its API paths, and what its error answers say. Shared by the notebook client (client.py) and the
server extension (server/), which both run in the user's server and read the environment the
hub's spawn hook set, now (it may change while the server runs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_URL_ENV = "DATAACCESS_URL"  # the service's root, its prefix included, e.g. .../services/dataaccess/
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # the server's own token (browse and request only)
API = "api/v1/"


class NotConfigured(RuntimeError):
    """The environment does not say where the service is or how to speak to it."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(f"{' and '.join(missing)} is not set")


@dataclass(frozen=True)
class Endpoint:
    root: str  # ends with "/"
    token: str = field(repr=False)

    def url(self, path: str) -> str:
        """The URL of API path `path` (e.g. "datasets/penguins/data"), still percent-encoded."""
        return self.root + API + path.lstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


def endpoint(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The service's endpoint from the environment; NotConfigured names what is missing (a URL
    that is not http(s) counts as missing)."""
    env = os.environ if environ is None else environ
    root = env.get(SERVICE_URL_ENV, "").strip()
    token = env.get(TOKEN_ENV, "")
    missing = [name for name, ok in ((SERVICE_URL_ENV, root.startswith(("http://", "https://"))),
                                     (TOKEN_ENV, bool(token))) if not ok]
    if missing:
        raise NotConfigured(missing)
    return Endpoint(root if root.endswith("/") else root + "/", token)


def error_of(status: int, body: bytes | str, reason: str = "") -> tuple[str, dict[str, Any]]:
    """The message and JSON body of an error answer: the service's `{"status", "message"}`, or
    the HTTP reason when the body is not that (a proxy's page, an empty body)."""
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return parsed["message"], parsed
    return reason or f"HTTP {status}", {}


__all__ = ["API", "SERVICE_URL_ENV", "TOKEN_ENV", "Endpoint", "NotConfigured", "endpoint",
           "error_of"]
