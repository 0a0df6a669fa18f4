"""Hub side: `configure_hub(c, ...)`, the pre_spawn_hook, and the spawner adapters for mounts.

Everything configure_hub sets is ordinary JupyterHub config, appended to what the operator already
has: services, custom scopes, roles, the pre_spawn_hook and the server token's scopes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .errors import METRICS_SCOPE, SPAWN_SCOPE

SERVICE_NAME = "dataaccess"
SERVICE_PREFIX = f"/services/{SERVICE_NAME}/"
# A person who holds review or admin also holds its read-only `:status` subscope; the server's
# token asks for the status scopes only, so it can tell the panel what to show, never act.
SCOPES = {
    "custom:dataaccess:browse": {
        "description": "Browse the data catalogue and see one's own access."},
    "custom:dataaccess:request": {"description": "Request access to datasets."},
    "custom:dataaccess:review:status": {
        "description": "Know that one may review (read-only: the Approvals entry and its count)."},
    "custom:dataaccess:admin:status": {
        "description": "Know that one administers data access (read-only: the Admin entry)."},
    "custom:dataaccess:review": {
        "description": "Approve or deny requests for datasets one stewards.",
        "subscopes": ["custom:dataaccess:review:status"]},
    "custom:dataaccess:admin": {
        "description": "Administer data access: all grants, revocation, the audit log.",
        "subscopes": ["custom:dataaccess:admin:status"]},
}
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
# GET /spawn answers the hub alone: its spawn hook asks as this service, whose token only the
# hub holds (a user's token, their server's included, is refused).
SPAWN_SERVICE = "dataaccess-spawn"
USER_SCOPES = [ACCESS_SCOPE, "custom:dataaccess:browse", "custom:dataaccess:request"]
# A server's token is not its person: browse and request, and the read-only status scopes (which
# JupyterHub keeps only for users who hold them: it intersects with the owner's permissions).
# Deciding, revoking and the audit need the person's own login or a token they made.
SERVER_TOKEN_SCOPES = [*USER_SCOPES, "custom:dataaccess:review:status",
                       "custom:dataaccess:admin:status"]
DEFAULT_SERVER_SCOPES = ["users:activity!user", "access:servers!server"]
SPAWN_TIMEOUT = 15.0

log = logging.getLogger("jupyterhub_dataaccess.hub")


class SpawnRefused(RuntimeError):
    """The spawn is refused; `jupyterhub_message` is what JupyterHub shows the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


def _jupyterhub_version() -> tuple[int, ...]:
    from jupyterhub import version_info

    return tuple(v for v in version_info if isinstance(v, int))


def _get(section: Any, name: str) -> Any:
    """The value an operator set in this config section, or None (never a lazy placeholder)."""
    return section[name] if name in section else None


def configure_hub(
    c: Any,
    catalog: str,
    policy: str,
    db_url: str = "sqlite:///dataaccess.sqlite",
    *,
    service_port: int = 10101,
    service_ip: str = "127.0.0.1",
    reviewer_groups: Iterable[str] = (),
    admin_groups: Iterable[str] = (),
    fail_open: bool = False,
    webhook_url: str | None = None,
    python: str = sys.executable,
    environment: dict[str, str] | None = None,
    mount_root: str = "",
    key_dir: str = "dataaccess-keys",
    settings: dict[str, Any] | None = None,
    start_timeout: int = 300,
) -> None:
    """Register the dataaccess service, its scopes and roles, the spawn hook and token scopes.

    catalog, policy: YAML files (relative paths are taken from the hub's working directory).
    db_url: the service's database (SQLite file or PostgreSQL URL; kept out of the command line).
    reviewer_groups / admin_groups: hub groups given the review / admin scopes.
    fail_open: start servers without data access when the service does not answer (default:
        refuse the spawn with a clear message).
    mount_root: where granted datasets with `mount:` appear in the user's server (default
        ~/datasets for local spawners, /home/jovyan/datasets for containers).
    key_dir: where the service keeps the keys it generates when none is given in its
        environment (relative to the hub's working directory; see keys.py). With several
        replicas, give every key in the environment instead (DATAACCESS_MASK_KEY, ...).
    settings: the service's own settings, by name (`DataAccessService` traitlets, e.g.
        {"threads": 16, "token_cache_seconds": 0}); a name it does not have is an error here.
    start_timeout: how long the hub waits for the service to answer when it starts it, in
        seconds (JupyterHub 6's service `timeout`, 30 by default there: too short for the
        service to load a catalogue of about 100,000 datasets on a busy machine). JupyterHub 5
        has no such setting; it is left out there.
    """
    service_url = f"http://{service_ip}:{service_port}"
    env = {
        "DATAACCESS_DB_URL": db_url,
        "DATAACCESS_CATALOG": os.path.abspath(catalog),
        "DATAACCESS_POLICY": os.path.abspath(policy),
        "DATAACCESS_KEY_DIR": os.path.abspath(key_dir),
        "PYTHONUNBUFFERED": "1",
    }
    if webhook_url:
        env["DATAACCESS_WEBHOOK_URL"] = webhook_url
    if settings:
        from .service.app import SETTINGS_ENV

        env[SETTINGS_ENV] = service_settings(settings)
    for key in ("PYTHONPATH", "PATH"):
        if key in os.environ:
            env.setdefault(key, os.environ[key])
    env.update(environment or {})
    services = _get(c.JupyterHub, "services") or []
    if not any(s.get("name") == SERVICE_NAME for s in services):
        services.append({
            "name": SERVICE_NAME,
            "url": service_url,
            "command": [python, "-m", "jupyterhub_dataaccess", "service"],
            "environment": env,
            "oauth_no_confirm": True,
            "oauth_client_allowed_scopes": list(SCOPES),
            "display": False,
        })
        if _jupyterhub_version() >= (6,):
            services[-1]["timeout"] = int(start_timeout)
    c.JupyterHub.services = services

    if not any(s.get("name") == SPAWN_SERVICE for s in services):
        services.append({"name": SPAWN_SERVICE, "api_token": spawn_token(key_dir),
                         "display": False})

    scopes = dict(_get(c.JupyterHub, "custom_scopes") or {})
    for name, definition in SCOPES.items():
        scopes.setdefault(name, dict(definition))
    scopes.setdefault(METRICS_SCOPE, {"description": "Read the dataaccess service's metrics."})
    scopes.setdefault(SPAWN_SCOPE, {"description": "Ask the data access service for a user's "
                                                   "grants and mounts (the hub's spawn hook)."})
    c.JupyterHub.custom_scopes = scopes

    roles = list(_get(c.JupyterHub, "load_roles") or [])
    by_name = {r.get("name"): r for r in roles}
    user_role = by_name.get("user")
    if user_role is None:
        roles.append({"name": "user", "scopes": ["self", *USER_SCOPES]})
    else:
        user_role["scopes"] = list(dict.fromkeys([*user_role.get("scopes", ["self"]),
                                                  *USER_SCOPES]))
    if "dataaccess-service" not in by_name:
        roles.append({"name": "dataaccess-service", "services": [SERVICE_NAME],
                      "description": "What the dataaccess service asks of the Hub",
                      "scopes": ["read:users:groups", "read:users:name"]})
    if SPAWN_SERVICE not in by_name:
        roles.append({"name": SPAWN_SERVICE, "services": [SPAWN_SERVICE],
                      "description": "The hub's spawn hook asking the dataaccess service",
                      "scopes": [SPAWN_SCOPE, ACCESS_SCOPE]})
    for role, scope, groups in (
        ("dataaccess-reviewer", "custom:dataaccess:review", list(reviewer_groups)),
        ("dataaccess-admin", "custom:dataaccess:admin", list(admin_groups)),
    ):
        if groups and role not in by_name:
            roles.append({"name": role, "groups": groups,
                          "scopes": [scope, ACCESS_SCOPE, "custom:dataaccess:browse"]})
    c.JupyterHub.load_roles = roles

    requested = _get(c.Spawner, "server_token_scopes")
    if callable(requested):
        operator_scopes = requested

        async def _scopes(spawner: Any) -> list[str]:
            from inspect import isawaitable

            base = operator_scopes(spawner)
            base = await base if isawaitable(base) else base
            return list(dict.fromkeys([*(base or DEFAULT_SERVER_SCOPES), *SERVER_TOKEN_SCOPES]))

        c.Spawner.server_token_scopes = _scopes
    else:
        c.Spawner.server_token_scopes = list(
            dict.fromkeys([*(requested or DEFAULT_SERVER_SCOPES), *SERVER_TOKEN_SCOPES]))

    hook = make_pre_spawn_hook(service_url + SERVICE_PREFIX, fail_open=fail_open,
                               mount_root=mount_root, token=_spawn_service_token(services))
    c.Spawner.pre_spawn_hook = chain_hooks(_get(c.Spawner, "pre_spawn_hook"), hook)


def service_settings(settings: dict[str, Any]) -> str:
    """The service's settings as the JSON it reads from DATAACCESS_SETTINGS, names checked."""
    from .service.app import DataAccessService

    known = set(DataAccessService.class_trait_names(config=True))
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"configure_hub: the dataaccess service has no setting "
                         f"{', '.join(map(repr, unknown))}; it has {', '.join(sorted(known))}")
    return json.dumps(settings)


def chain_hooks(first: Callable | None, second: Callable) -> Callable:
    """A hook that runs the operator's hook, then ours."""
    if first is None:
        return second

    async def chained(spawner: Any) -> None:
        from inspect import isawaitable

        result = first(spawner)
        if isawaitable(result):
            await result
        await second(spawner)

    return chained


def spawn_token(key_dir: str) -> str:
    """The token of the hub's spawn hook: DATAACCESS_SPAWN_TOKEN (or ..._FILE), else a file
    generated (0600) in the key directory. The hub alone holds it; the service never needs it."""
    from .keys import read_key

    token, _ = read_key("spawn", os.path.abspath(key_dir), generate=True)
    assert token is not None
    return token.decode()


def _spawn_service_token(services: list[dict[str, Any]]) -> str:
    return next(s["api_token"] for s in services if s.get("name") == SPAWN_SERVICE)


async def fetch_spawn_plan(service_root: str, token: str, user: str,
                           timeout: float = SPAWN_TIMEOUT) -> dict[str, Any]:
    """Ask the service, as the hub (its spawn token), for `user`'s grants and mounts (with
    retries)."""
    import asyncio
    from urllib.parse import quote

    from tornado import httpclient

    client = httpclient.AsyncHTTPClient()
    deadline = asyncio.get_running_loop().time() + timeout
    last = "no answer"
    while True:
        try:
            resp = await client.fetch(service_root + f"api/v1/spawn?user={quote(user, safe='')}",
                                      headers={"Authorization": f"token {token}"},
                                      request_timeout=5)
            return json.loads(resp.body)
        except httpclient.HTTPClientError as e:
            last = f"HTTP {e.code}"
            if e.code in (401, 403, 404):
                break
        except OSError as e:
            last = type(e).__name__
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    raise ConnectionError(last)


def make_pre_spawn_hook(service_root: str, *, token: str, fail_open: bool = False,
                        mount_root: str = "") -> Callable:
    """The pre_spawn_hook: environment and read-only mounts from the user's active grants only,
    asked of the service with the hub's spawn `token`."""

    async def dataaccess_pre_spawn_hook(spawner: Any) -> None:
        env = dict(spawner.environment or {})
        env["DATAACCESS_URL"] = service_root
        try:
            plan = await fetch_spawn_plan(service_root, token, spawner.user.name)
        except ConnectionError as e:
            if not fail_open:
                log.error("Refusing spawn of %s: data access service: %s", spawner._log_name, e)
                raise SpawnRefused(
                    "The data access service is not answering, so your server was not started. "
                    "Try again in a minute; if it persists, tell your JupyterHub operator."
                ) from None
            log.warning("Starting %s without data access (service: %s)", spawner._log_name, e)
            plan = {"grants": [], "mounts": []}
        env["DATAACCESS_GRANTS"] = ",".join(sorted({g["dataset"] for g in plan["grants"]}))
        spawner.environment = env
        apply_mounts(spawner, plan.get("mounts", []), mount_root)

    return dataaccess_pre_spawn_hook


def apply_mounts(spawner: Any, mounts: list[dict[str, Any]], mount_root: str = "") -> None:
    """Give the server read-only mounts for exactly these granted datasets (and no others)."""
    from .spawners import adapter_for

    adapter_for(spawner).apply(spawner, mounts, mount_root)
