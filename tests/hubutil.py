"""A real JupyterHub for tests: configurable-http-proxy, the dataaccess service, local servers.

`Hub` writes a jupyterhub_config.py that calls configure_hub (as an operator would), starts
`python -m jupyterhub` in a temporary directory and talks to it over HTTP through the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_TOKEN = "test-admin-" + uuid.uuid4().hex
SCRAPER_TOKEN = "scraper-" + uuid.uuid4().hex  # a service holding custom:dataaccess:metrics

USERS = {
    "analyst": ["analysts"],
    "steward": ["stewards"],
    "steward2": ["stewards"],
    "otherstew": ["otherstewards"],
    "admin": ["admins"],
    "nobody": [],
}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before (the OS may offer the
    same free port twice in a row, e.g. to a hub's proxy API and to its service)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def find_chp() -> str:
    """The configurable-http-proxy the project installed (never a global guess)."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "configurable-http-proxy"),
                  shutil.which("configurable-http-proxy") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("configurable-http-proxy not found: run `make setup` (it installs it "
                       "from npm into .venv)")


CONFIG = """
import sys
from jupyterhub_dataaccess.hub import configure_hub

c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = set({users!r})
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.load_groups = {groups!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{state}/home/{{username}}"
c.Spawner.args = ["--allow-root"] if __import__("os").getuid() == 0 else []
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{"PYTHONPATH": {repo!r},
                         "JUPYTER_CONFIG_PATH": {repo!r} + "/jupyter-config"}}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.log_level = "DEBUG"
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}},
                         {{"name": "scraper", "api_token": {scraper_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "test-admin", "services": ["test-admin"],
                            "scopes": ["admin:users", "admin:servers", "tokens", "admin:groups",
                                       "read:users", "access:servers"]}},
                          {{"name": "metrics-scraper", "services": ["scraper"],
                            "scopes": ["custom:dataaccess:metrics",
                                       "access:services!service=dataaccess"]}}]
configure_hub(c, catalog={catalog!r}, policy={policy!r}, db_url={db_url!r},
              service_port={service_port}, reviewer_groups=["stewards", "otherstewards"],
              admin_groups=["admins"], fail_open={fail_open!r},
              environment={service_env!r}{extra})
"""


@dataclass
class Hub:
    state: str
    catalog: str
    policy: str
    db_url: str
    fail_open: bool = False
    extra: str = ""  # more keyword arguments of configure_hub, as source text: ", x=1"
    service_env: dict[str, str] = field(default_factory=dict)  # the service's environment
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    service_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/services/dataaccess/api/v1"

    @property
    def key_dir(self) -> str:
        """Where the service generated its keys (configure_hub's default, in the hub's cwd)."""
        return os.path.join(self.state, "dataaccess-keys")

    @property
    def log_path(self) -> str:
        return os.path.join(self.state, "jupyterhub.log")

    def write_config(self) -> str:
        os.makedirs(os.path.join(self.state, "home"), exist_ok=True)
        path = os.path.join(self.state, "jupyterhub_config.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(CONFIG).format(
                port=self.port, hub_port=self.hub_port, proxy_api_port=self.proxy_api_port,
                chp=find_chp(), state=self.state, password=self.password, users=sorted(USERS),
                groups={g: [u for u, gs in USERS.items() if g in gs]
                        for g in sorted({g for gs in USERS.values() for g in gs})},
                repo=REPO, admin_token=ADMIN_TOKEN, scraper_token=SCRAPER_TOKEN,
                catalog=self.catalog, policy=self.policy,
                db_url=self.db_url, service_port=self.service_port, fail_open=self.fail_open,
                extra=self.extra, service_env={"PYTHONPATH": REPO, **self.service_env},
            ))
        return path

    def start(self, timeout: float = 90) -> None:
        """Start the hub and wait until it and the service answer; on failure leave nothing
        running."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        config = self.write_config()
        bindir = os.path.dirname(sys.executable)
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1",
                   PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", config], cwd=self.state, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterHub exited: see {self.log_path}\n" + self.log_tail())
            try:
                r = requests.get(f"{self.url}/hub/api/", timeout=2)
                s = requests.get(f"{self.api}/health", timeout=2)
                if r.status_code == 200 and s.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("JupyterHub did not come up:\n" + self.log_tail())

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._stop_orphaned_proxy()
        if getattr(self, "_log", None):
            self._log.close()

    def _stop_orphaned_proxy(self) -> None:
        """JupyterHub leaves its proxy running when it exits on its own (e.g. its service failed
        to start): stop the one its pid file names, if it is still a configurable-http-proxy."""
        try:
            with open(os.path.join(self.state, "jupyterhub-proxy.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"configurable-http-proxy" not in f.read():
                    return
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass

    # -- the Hub's own API, as the test-admin service --------------------------------------

    def hub_api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}",
                                headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=60,
                                **kw)

    def token(self, user: str, scopes: list[str] | None = None, expires_in: int | None = None
              ) -> str:
        """A new API token of `user` (all the user's permissions unless scopes are given)."""
        key = f"{user}:{scopes}:{expires_in}"
        if key in self.tokens and expires_in is None:
            return self.tokens[key]
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in is not None:
            body["expires_in"] = expires_in
        r = self.hub_api("POST", f"/users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        self.tokens[key] = r.json()["token"]
        return self.tokens[key]

    def call(self, user: str | None, method: str, path: str, token: str | None = None,
             **kw: Any) -> requests.Response:
        """A request to the dataaccess service through the proxy, as `user` (None: anonymous)."""
        headers = dict(kw.pop("headers", {}))
        if token is None and user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"token {token}"
        return requests.request(method, self.api + path, headers=headers, timeout=60, **kw)

    def start_server(self, user: str, name: str = "", timeout: float = 120) -> dict[str, Any]:
        path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
        r = self.hub_api("POST", path)
        assert r.status_code in (201, 202, 400), r.text  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.hub_api("GET", f"/users/{user}").json()
            server = model.get("servers", {}).get(name, {})
            if server.get("ready"):
                return server
            if not server.get("pending") and not server.get("ready") and r.status_code != 400:
                if time.monotonic() > deadline - timeout + 5:
                    break
            time.sleep(0.5)
        raise RuntimeError(f"server of {user} did not start:\n" + self.log_tail())

    def stop_server(self, user: str, name: str = "") -> None:
        path = f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"
        self.hub_api("DELETE", path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = self.hub_api("GET", f"/users/{user}").json()
            if name not in model.get("servers", {}):
                return
            time.sleep(0.3)


STEWARDS = ("steward", "steward2", "otherstew", "admin")


def approve_after_revocation(hub: Hub, request: dict[str, Any]) -> dict[str, Any]:
    """A request that waits for stewards only because the user's access to the dataset was
    revoked before (a revocation sticks: SECURITY-CASES 50), approved by the stewards of the test
    catalogues; any other request is returned as it is."""
    for steward in STEWARDS:
        if request["status"] != "pending" or "was revoked" not in request["reason"]:
            return request
        if steward != request["user"]:
            r = hub.call(steward, "POST", f"/requests/{request['id']}/approve",
                         json={"comment": "again, after a revocation"})
            if r.status_code == 200:
                request = r.json()
    return request


def service_pid(hub: Hub, timeout: float = 10) -> int:
    """The pid of the dataaccess service the hub started (a child of the hub's process)."""
    assert hub.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == hub.proc.pid and b"jupyterhub_dataaccess" in cmd and b"service" in cmd:
                return int(entry)
        if time.monotonic() > deadline:
            raise RuntimeError("the dataaccess service process was not found")
        time.sleep(0.2)


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM...), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Kernel:
    """A real kernel in a user's server, driven over the Jupyter websocket protocol."""

    def __init__(self, hub: Hub, user: str, server_name: str = ""):
        self.hub, self.user = hub, user
        self.base = f"{hub.url}/user/{user}/{server_name + '/' if server_name else ''}"
        self.token = hub.token(user)
        r = requests.post(self.base + "api/kernels", json={"name": "python3"},
                          headers=self._headers(), timeout=60)
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def run(self, code: str, timeout: float = 120) -> dict[str, Any]:
        """Execute code; return {'stdout', 'stderr', 'error': (ename, evalue) | None, 'result'}."""
        return asyncio.run(self._run(code, timeout))

    async def _run(self, code: str, timeout: float) -> dict[str, Any]:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = self.base.replace("http://", "ws://") + f"api/kernels/{self.id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers=self._headers()))
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        out: dict[str, Any] = {"stdout": "", "stderr": "", "error": None, "result": None}
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"kernel did not finish in {timeout}s: {out}")
                raw = await asyncio.wait_for(ws.read_message(), left)
                if raw is None:
                    raise RuntimeError("kernel websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out[content["name"]] += content["text"]
                elif kind == "error":
                    out["error"] = (content["ename"], content["evalue"])
                elif kind == "execute_result":
                    out["result"] = content["data"].get("text/plain")
                elif kind == "status" and content["execution_state"] == "idle":
                    return out
        finally:
            ws.close()

    def shutdown(self) -> None:
        requests.delete(self.base + f"api/kernels/{self.id}", headers=self._headers(), timeout=30)


def wait_for(check: Any, timeout: float = 15.0, what: str = "the condition", every: float = 0.2
             ) -> Any:
    """Poll `check()` until it returns something true (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


@contextmanager
def loopback_app(app: Any) -> Iterator[int]:
    """A tornado `app` served on 127.0.0.1 (a port of its own) by an event loop in a thread of
    its own, for the block: yields the port. For a handler tested on a real connection without
    a hub (the service's send paths)."""
    import threading

    from tornado import httpserver

    ready, state = threading.Event(), {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        httpserver.HTTPServer(app).add_sockets([sock])
        state.update(loop=loop, port=sock.getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the loopback server did not start")
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
