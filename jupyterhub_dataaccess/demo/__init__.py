"""The demo hub: a real JupyterHub on 127.0.0.1 with demo users, real public data and the panel.

``run_demo(state_dir)`` prepares the data and the catalogue/policy in ``state_dir``, creates the
demo users' passwords, prints how to log in and runs JupyterHub in the foreground.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .auth import ensure_passwords
from .data import prepare_data, prepare_lakehouse, write_catalog_and_policy

__all__ = ["DEMO_GROUPS", "DEMO_USERS", "run_demo", "prepare_demo"]

# Demo user -> hub groups. Two stewards so a restricted dataset can collect two approvals.
DEMO_USERS: dict[str, list[str]] = {
    "analyst": ["analysts"],
    "steward": ["stewards"],
    "steward2": ["stewards"],
    "admin": ["admins"],
}
DEMO_GROUPS = ["analysts", "stewards", "admins"]

CONFIG_FILE = Path(__file__).resolve().parent / "jupyterhub_config.py"


# JupyterLab user setting that keeps the "official Jupyter news?" prompt off the demo screen.
_LAB_NOTIFICATION_SETTINGS = Path(
    ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
)


def _prepare_homes(state: Path) -> None:
    """Create each demo user's home with quiet JupyterLab defaults (their own edits are kept)."""
    for user in DEMO_USERS:
        settings = state / "home" / user / _LAB_NOTIFICATION_SETTINGS
        if not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def prepare_demo(state_dir: str | Path) -> dict[str, str]:
    """Create ``state_dir`` with data (files, an Iceberg and a Delta table), ``catalog.yaml``, ``policy.yaml``, homes and passwords.

    Idempotent: data files and passwords already there are kept. Returns the passwords.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    prepare_data(state)
    prepare_lakehouse(state)
    write_catalog_and_policy(state)
    _prepare_homes(state)
    return ensure_passwords(state / "passwords.json", list(DEMO_USERS))


def _login_box(url: str, passwords: dict[str, str], state: Path) -> str:
    lines = [
        "jupyterhub-dataaccess demo",
        "",
        f"Open {url} and log in as:",
        "",
        *(
            f"  {user:<9} {password:<14} groups: {', '.join(DEMO_USERS[user])}"
            for user, password in passwords.items()
        ),
        "",
        f"State (data, catalogue, policy, databases): {state}",
        "Passwords are kept in passwords.json there.  Ctrl-C stops the hub.",
    ]
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line:<{width}} |" for line in lines), rule])


def _stop_leftover_proxy(state: Path) -> None:
    """Stop the proxy a hub that died left behind (a clean shutdown stops it and removes the file)."""
    pid_file = state / "jupyterhub-proxy.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"configurable-http-proxy" in cmdline:
        os.kill(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def run_demo(state_dir: str, ip: str = "127.0.0.1", port: int = 8000) -> int:
    """Prepare ``state_dir`` and run the demo JupyterHub in the foreground; return its exit code."""
    state = Path(state_dir).resolve()
    passwords = prepare_demo(state)
    bin_dir = Path(sys.executable).parent

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["DATAACCESS_DEMO_DIR"] = str(state)
    env["DATAACCESS_DEMO_IP"] = ip
    env["DATAACCESS_DEMO_PORT"] = str(port)
    if not shutil.which("configurable-http-proxy", path=env["PATH"]):
        print(
            "configurable-http-proxy was not found on PATH or next to Python; "
            "run `make setup` or `npm install -g configurable-http-proxy`.",
            file=sys.stderr,
        )
        return 1

    print(_login_box(f"http://{ip}:{port}", passwords, state), flush=True)
    hub = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)], cwd=state, env=env
    )
    try:
        return _wait_for(hub)
    finally:
        _stop_leftover_proxy(state)


def _wait_for(hub: subprocess.Popen) -> int:
    try:
        return hub.wait()
    except KeyboardInterrupt:
        # The hub got the same Ctrl-C and is stopping its servers and proxy: let it finish.
        try:
            return hub.wait()
        except KeyboardInterrupt:
            hub.terminate()
            return hub.wait()
