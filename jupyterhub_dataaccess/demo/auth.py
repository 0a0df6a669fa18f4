"""A tiny username/password authenticator for the demo hub only.

Each demo user gets a random password, generated on the first demo start and kept in
``<state_dir>/passwords.json`` (mode 0600). Not for production: use a real authenticator there.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from traitlets import Unicode


def ensure_passwords(path: str | Path, users: list[str]) -> dict[str, str]:
    """Load the demo passwords from ``path``, adding a random one for each user without one.

    The file is (re)written with mode 0600 whenever a password is added.
    """
    path = Path(path)
    passwords: dict[str, str] = {}
    if path.exists():
        passwords = json.loads(path.read_text(encoding="utf-8"))
    missing = [user for user in users if not passwords.get(user)]
    for user in missing:
        passwords[user] = secrets.token_urlsafe(9)
    if missing or not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(passwords, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return {user: passwords[user] for user in users}


class DemoAuthenticator(Authenticator):
    """Checks a username and password against the demo's ``passwords.json``."""

    passwords_file = Unicode(
        "passwords.json",
        help="JSON file mapping each demo username to its password (written by the demo).",
    ).tag(config=True)

    def _passwords(self) -> dict[str, str]:
        try:
            return json.loads(Path(self.passwords_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.log.error("Demo passwords file %s is missing", self.passwords_file)
            return {}

    async def authenticate(self, handler, data):
        username = (data or {}).get("username", "").strip()
        password = (data or {}).get("password", "")
        expected = self._passwords().get(username)
        if not expected or not hmac.compare_digest(expected.encode(), password.encode()):
            self.log.warning("Demo login failed for user %r", username)
            return None
        return username
