"""SECURITY-CASES 46 on the session's real hub: the service's database and keys are its owner's
alone, and its cookie secret is the shared key, not a per-process random one (issue 10 item 6).
"""

from __future__ import annotations

import os
import stat

import pytest
from conftest import ON_POSTGRES
from hubutil import Hub, service_pid
from secutil import hub_login
from tornado.web import decode_signed_value

KEY_FILES = ("mask_key", "audit_key", "ticket_key", "cookie_secret", "spawn_token")


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.once  # file modes (the SQLite files only on SQLite)
def test_the_database_and_the_key_files_are_readable_by_their_owner_only(hub: Hub, db_url: str):
    """Given the service has started and written, Then its key directory is 0700, every key file
    and (on SQLite) the database with its -wal and -shm files are 0600."""
    assert hub.call("analyst", "GET", "/datasets/penguins/preview").status_code in (200, 403)
    key_dir = hub.key_dir
    assert _mode(key_dir) == 0o700
    present = os.listdir(key_dir)  # all but those given in the environment (the ticket key)
    assert {"audit_key", "cookie_secret", "spawn_token"} <= set(present) <= set(KEY_FILES)
    for name in present:
        assert _mode(os.path.join(key_dir, name)) == 0o600, name
    if not ON_POSTGRES:
        path = db_url.split("///", 1)[1]
        present = [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]
        assert path + "-wal" in present, present  # WAL mode: the journal exists while open
        assert {p: _mode(p) for p in present} == dict.fromkeys(present, 0o600)


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_the_service_signs_its_cookies_with_the_shared_cookie_secret(hub: Hub):
    """When a person logs in to the service (OAuth), Then the login cookie it sets verifies with
    the cookie secret of the key directory: any replica, or the service after a restart, reading
    the same secret accepts it (a per-process random secret did not)."""
    session = hub_login(hub, "analyst")
    with open(os.path.join(hub.key_dir, "cookie_secret")) as f:
        secret = f.read().strip()
    service_cookies = [c for c in session.cookies if c.path.startswith("/services/dataaccess")]
    signed = [c.name for c in service_cookies
              if decode_signed_value(secret, c.name, c.value) is not None]
    assert signed, [c.name for c in service_cookies]
    assert decode_signed_value("another secret entirely!", signed[0],
                               session.cookies.get(signed[0], path="/services/dataaccess/")) is None
    # and the secret is nowhere in the service's environment or command line
    with open(f"/proc/{service_pid(hub)}/environ", "rb") as f:
        environ = f.read()
    with open(f"/proc/{service_pid(hub)}/cmdline", "rb") as f:
        cmdline = f.read()
    assert secret.encode() not in environ and secret.encode() not in cmdline
