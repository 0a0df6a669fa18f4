"""The service's secrets, in one place: the mask key, the audit key, the ticket key, the cookie secret.

Each key comes from the first of:

1. the environment variable (`DATAACCESS_MASK_KEY`, `DATAACCESS_AUDIT_KEY`,
   `DATAACCESS_TICKET_KEY`, `DATAACCESS_COOKIE_SECRET`; and the hub's spawn token,
   `DATAACCESS_SPAWN_TOKEN`, which configure_hub reads);
2. the file named by the same variable with `_FILE` appended (a mounted Kubernetes Secret);
3. the mask key only: the key an earlier release generated into the database (`settings`
   table), so an existing install keeps its hashes;
4. a file in the key directory (`key_dir`: `DATAACCESS_KEY_DIR`, which configure_hub sets to
   `dataaccess-keys` in the hub's working directory), generated there the first time, mode 0600
   in a 0700 directory, as JupyterHub does its cookie_secret_file. This is the single-node
   default: several replicas must share the values (items 1 or 2, or a shared key directory).

A value is its text as UTF-8 bytes (surrounding whitespace dropped); `hex:` followed by hex digits
gives those bytes instead. Keys are at least 16 bytes. The audit key may be rotated: the key
that verifies older records goes in `DATAACCESS_AUDIT_KEY_OLD` (or `..._FILE`), several separated
by whitespace. Key files readable by other users are refused. No key is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ENV = {
    "mask": "DATAACCESS_MASK_KEY",
    "audit": "DATAACCESS_AUDIT_KEY",
    "ticket": "DATAACCESS_TICKET_KEY",
    "cookie": "DATAACCESS_COOKIE_SECRET",
    "spawn": "DATAACCESS_SPAWN_TOKEN",  # the hub's, not the service's (hub.spawn_token)
}
FILES = {"mask": "mask_key", "audit": "audit_key", "ticket": "ticket_key", "cookie": "cookie_secret",
         "spawn": "spawn_token"}
SERVICE_KEYS = ("mask", "audit", "ticket", "cookie")
AUDIT_OLD_ENV = "DATAACCESS_AUDIT_KEY_OLD"
KEY_DIR_ENV = "DATAACCESS_KEY_DIR"
DEFAULT_KEY_DIR = "dataaccess-keys"
MIN_BYTES = 16


class KeyConfigError(ValueError):
    """A key is missing, too short, or kept in a file others can read; the message says which."""


@dataclass(frozen=True)
class Keys:
    """The service's keys (bytes); `sources` says where each came from, for the start-up log."""

    mask: bytes = field(repr=False)
    audit: bytes = field(repr=False)
    ticket: bytes = field(repr=False)
    cookie: bytes = field(repr=False)
    audit_old: tuple[bytes, ...] = field(default=(), repr=False)
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def key_id(key: bytes) -> str:
    """A short public name of a key (never the key): recorded in the audit chain and anchors."""
    return hmac.new(key, b"jupyterhub-dataaccess key id", hashlib.sha256).hexdigest()[:16]


def decode(text: str, what: str) -> bytes:
    text = text.strip()
    if text.startswith("hex:"):
        try:
            value = bytes.fromhex(text[4:])
        except ValueError:
            raise KeyConfigError(f"{what}: 'hex:' must be followed by hex digits") from None
    else:
        value = text.encode()
    if len(value) < MIN_BYTES:
        raise KeyConfigError(f"{what}: a key must be at least {MIN_BYTES} bytes")
    return value


def _read_file(path: str, what: str) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise KeyConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
    if st.st_mode & stat.S_IRWXO:
        raise KeyConfigError(f"{what}: {path} can be read or written by other users; "
                             f"chmod 600 it")
    return text


def _generated(key_dir: str, name: str) -> tuple[str, bool]:
    """The text of key file `name` in `key_dir`, made (0600, atomically) if missing."""
    path = os.path.join(key_dir, name)
    if os.path.exists(path):
        return _read_file(path, f"key file {name}"), False
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces a key another process made first
            made = True
        except FileExistsError:
            made = False
    finally:
        os.unlink(tmp)
    return _read_file(path, f"key file {name}"), made


def read_key(name: str, key_dir: str = "", environ: Mapping[str, str] | None = None,
             generate: bool = False) -> tuple[bytes | None, str]:
    """One key and where it came from: environment, `..._FILE`, the key directory (made there
    when `generate`), or (None, "missing")."""
    env = os.environ if environ is None else environ
    var = ENV[name]
    if env.get(var):
        return decode(env[var], var), "environment"
    if env.get(var + "_FILE"):
        path = env[var + "_FILE"]
        return decode(_read_file(path, var + "_FILE"), path), f"file {path}"
    if key_dir:
        path = os.path.join(key_dir, FILES[name])
        if generate:
            text, made = _generated(key_dir, FILES[name])
            return decode(text, path), f"{'generated ' if made else ''}file {path}"
        if os.path.exists(path):
            return decode(_read_file(path, path), path), f"file {path}"
    return None, "missing"


def old_audit_keys(environ: Mapping[str, str] | None = None) -> tuple[bytes, ...]:
    """Earlier audit keys, which still verify the records they wrote."""
    env = os.environ if environ is None else environ
    text = env.get(AUDIT_OLD_ENV, "")
    if not text and env.get(AUDIT_OLD_ENV + "_FILE"):
        text = _read_file(env[AUDIT_OLD_ENV + "_FILE"], AUDIT_OLD_ENV + "_FILE")
    return tuple(decode(t, AUDIT_OLD_ENV) for t in text.split())


def load_keys(key_dir: str, environ: Mapping[str, str] | None = None,
              legacy_mask: Callable[[], bytes | None] | None = None) -> Keys:
    """Every key of the service, generating in `key_dir` those given nowhere else."""
    values: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for name in SERVICE_KEYS:
        value, source = read_key(name, "", environ)
        if value is None and name == "mask" and legacy_mask is not None:
            value, source = legacy_mask(), "database (set by an earlier release)"
        if value is None:
            if not key_dir:
                raise KeyConfigError(f"no {name} key: set {ENV[name]} or a key directory")
            value, source = read_key(name, key_dir, environ, generate=True)
        values[name], sources[name] = value, source  # type: ignore[assignment]
    return Keys(**values, audit_old=old_audit_keys(environ), sources=sources)


def all_audit_keys(key_dir: str = "", environ: Mapping[str, str] | None = None
                   ) -> tuple[bytes, ...]:
    """The current audit key (if any is configured; never generated) and the older ones."""
    current, _ = read_key("audit", key_dir, environ)
    return ((current,) if current else ()) + old_audit_keys(environ)
