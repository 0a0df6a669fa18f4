"""JupyterHub configuration of the demo hub.

``run_demo()`` starts ``jupyterhub -f`` on this file after preparing the state directory, whose
path it passes in ``DATAACCESS_DEMO_DIR``. Everything the hub writes stays in that directory.
Insecure on purpose (one local Unix user for everyone): a demo on 127.0.0.1, not a deployment.
"""

import os
import shutil
import sys
from pathlib import Path

from jupyterhub_dataaccess.demo import DEMO_GROUPS, DEMO_USERS
from jupyterhub_dataaccess.demo.auth import DemoAuthenticator
from jupyterhub_dataaccess.hub import configure_hub

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)

if "DATAACCESS_DEMO_DIR" not in os.environ:
    sys.exit("Start the demo with `jupyterhub-dataaccess demo`, which sets DATAACCESS_DEMO_DIR.")
state_dir = Path(os.environ["DATAACCESS_DEMO_DIR"]).resolve()
bin_dir = Path(sys.executable).parent

# --- data access: the catalogue, the policy and the service's database ---------------------------
configure_hub(
    c,
    catalog=str(state_dir / "catalog.yaml"),
    policy=str(state_dir / "policy.yaml"),
    db_url=f"sqlite:///{state_dir / 'dataaccess.sqlite'}",
    service_port=int(os.environ.get("DATAACCESS_DEMO_SERVICE_PORT", "10101")),
    reviewer_groups=["stewards"],
    admin_groups=["admins"],
    settings={"upgrade_db": True},  # one replica: a demo kept from an older release upgrades
)

# --- the hub ---------------------------------------------------------------------------------------
c.JupyterHub.ip = os.environ.get("DATAACCESS_DEMO_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("DATAACCESS_DEMO_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("DATAACCESS_DEMO_HUB_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
c.JupyterHub.template_vars = {
    "announcement_login": (
        "Demo users: analyst, steward, steward2, admin. "
        f"Their passwords were printed at start and are in {state_dir / 'passwords.json'}."
    ),
}

proxy = shutil.which("configurable-http-proxy", path=str(bin_dir)) or shutil.which(
    "configurable-http-proxy"
)
if proxy:
    c.ConfigurableHTTPProxy.command = [proxy]
c.ConfigurableHTTPProxy.pid_file = str(state_dir / "jupyterhub-proxy.pid")

# --- users, groups, login ----------------------------------------------------------------------------
c.JupyterHub.authenticator_class = DemoAuthenticator
c.DemoAuthenticator.passwords_file = str(state_dir / "passwords.json")
c.Authenticator.allowed_users = set(DEMO_USERS)
c.Authenticator.admin_users = {"admin"}
c.JupyterHub.load_groups = {
    group: {"users": sorted(u for u, groups in DEMO_USERS.items() if group in groups)}
    for group in DEMO_GROUPS
}

# --- single-user servers: local processes, one home directory per user under the state dir -----------
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(state_dir / "home" / "{username}")
c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
if os.geteuid() == 0:  # one local user for everyone, and here that user is root
    c.Spawner.args.append("--allow-root")
