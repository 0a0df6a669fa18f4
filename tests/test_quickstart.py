"""The operator guide's "From zero" section, run as written: every fenced block tagged
`quickstart` in docs/operator-guide.md, in order, in an empty directory next to a copy of the
checkout (build the wheel, a new environment with it, the data, catalogue and policy,
`catalog validate --check-sources`, a Hub started with `configure_hub`, a user's request and
`da.load` in a real kernel).

Blocks: ```bash quickstart``` runs in bash; ```<lang> quickstart file=NAME``` is written to NAME;
```bash quickstart background``` is started and left running (the Hub); ```python quickstart
kernel=USER``` runs in a kernel of USER's server, who logs in with the password the guide gives.

One liberty, stated in the guide: before the blocks run, the new environment's directory is given
the dependencies already installed in this (the project's) environment — a path entry, the data
files under share/ and etc/, and their commands — without jupyterhub-dataaccess itself. pip then
resolves the wheel's requirements against them and installs the wheel alone: seconds, instead of
minutes of downloading and unpacking 800 MB. The package, its data files, its server extension,
labextension and command all come from the wheel. Not proved here: that the declared
dependencies suffice on an empty machine (the project's environment holds the test extra too).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from hubutil import REPO, Kernel, find_chp, wait_for

pytestmark = [pytest.mark.hub, pytest.mark.once, pytest.mark.timeout(600)]

GUIDE = Path(REPO) / "docs" / "operator-guide.md"
BLOCK = re.compile(r"^```(\w+) quickstart([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
PORTS = (8000, 8081, 8001, 10101)  # the guide's hub, JupyterHub's internal API, proxy API, service
HUB = "http://127.0.0.1:8000"
# What the project's environment holds that the wheel installs itself, or the venv brings.
OWN = ("jupyterhub_dataaccess", "jupyterhub-dataaccess")
VENV_OWN = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")


def guide_blocks() -> list[tuple[str, dict[str, str], str]]:
    """(language, tags, text) of every quickstart block of the guide, in order."""
    blocks = []
    for lang, tags, text in BLOCK.findall(GUIDE.read_text()):
        options = dict(t.partition("=")[::2] for t in tags.split())
        blocks.append((lang, options, text))
    return blocks


def copy_checkout(dest: Path) -> None:
    """The checkout's files (tracked and new, not ignored) and its built labextension."""
    built = Path(REPO) / "jupyterhub_dataaccess" / "labextension"
    if not (built / "package.json").is_file():
        raise RuntimeError("the checkout's labextension is not built: run `make setup`")
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = Path(REPO) / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shutil.copytree(built, dest / "jupyterhub_dataaccess" / "labextension")


def _own(name: str) -> bool:
    base = name.split("-")[0] if name.endswith(".dist-info") else name
    return base in (OWN[0], *VENV_OWN)


def provide_dependencies(env: Path, deps: Path) -> None:
    """Make `env` (not yet a venv) an environment holding this one's packages, except
    jupyterhub-dataaccess: a directory of links to them on its path, links to their data files
    (JupyterLab's app, JupyterHub's templates, server-extension configs), and their commands."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = env / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if not _own(entry.name) and entry.name != "__pycache__":
            (deps / entry.name).symlink_to(entry)
    (site / "project_dependencies.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    prefix = Path(sys.prefix)
    for folder in ("share", "etc"):
        for src in (prefix / folder).rglob("*"):
            rel = src.relative_to(prefix)
            if src.is_dir() or "jupyterhub-dataaccess" in rel.parts or OWN[0] in src.name:
                continue
            (env / rel).parent.mkdir(parents=True, exist_ok=True)
            (env / rel).symlink_to(src)
    bindir = env / "bin"
    bindir.mkdir()
    for dist in metadata.distributions(path=[str(deps)]):
        for ep in dist.entry_points.select(group="console_scripts"):
            script = bindir / ep.name
            if script.exists():
                continue
            head, _, rest = ep.attr.partition(".")
            call = head + ("." + rest if rest else "")
            script.write_text(f"#!{env}/bin/python\nimport sys\nfrom {ep.module} import {head}\n"
                              f"sys.exit({call}())\n")
            script.chmod(0o755)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class _UserHub:
    """What hubutil.Kernel needs: the hub's URL and the user's token."""

    def __init__(self, url: str, token: str):
        self.url, self._token = url, token

    def token(self, user: str) -> str:
        return self._token


def login(user: str, password: str) -> tuple[requests.Session, str]:
    """Log in through the hub's form as a person would (which starts their server) and make an
    API token on their behalf, as the token page does."""
    s = requests.Session()
    s.get(f"{HUB}/hub/login", timeout=30)
    r = s.post(f"{HUB}/hub/login", timeout=180,
               data={"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")})
    assert r.ok, r.text[:500]
    r = s.post(f"{HUB}/hub/api/users/{user}/tokens", json={"note": "quick start"}, timeout=30,
               headers={"X-XSRFToken": s.cookies.get("_xsrf", path="/hub/") or ""})
    assert r.status_code == 201, r.text[:500]
    return s, r.json()["token"]


def test_the_from_zero_section_of_the_operator_guide_runs_as_written(tmp_path: Path) -> None:
    blocks = guide_blocks()
    kinds = [(lang, sorted(opts)) for lang, opts, _ in blocks]
    assert ("bash", ["background"]) in kinds and ("python", ["kernel"]) in kinds, kinds
    # the guide's ports, as an operator reads them (nothing else in the suite takes them)
    wait_for(lambda: all(map(port_free, PORTS)), timeout=60, every=1,
             what=f"the guide's ports {PORTS} free on 127.0.0.1 (stop what holds them)")

    copy_checkout(tmp_path / "jupyterhub-dataaccess")
    provide_dependencies(tmp_path / "env", tmp_path / "project-dependencies")
    tools = tmp_path / "tools"  # what the guide expects on PATH, and nothing of the project's
    tools.mkdir()
    for name in ("python3", "pip"):
        (tools / name).symlink_to(Path(sys.executable).parent / name)
    (tools / "configurable-http-proxy").symlink_to(find_chp())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "DATAACCESS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{tools}{os.pathsep}/usr/bin{os.pathsep}/bin", PYTHONUNBUFFERED="1")

    hub: subprocess.Popen | None = None
    log = open(tmp_path / "hub.log", "wb")
    outputs: list[str] = []
    try:
        for lang, opts, text in blocks:
            if "file" in opts:
                (tmp_path / opts["file"]).write_text(text)
            elif lang == "bash" and "background" in opts:
                hub = subprocess.Popen(["bash", "-c", text], cwd=tmp_path, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)

                wait_for_hub(hub, tmp_path / "hub.log")
            elif lang == "bash":
                done = subprocess.run(["bash", "-e", "-c", text], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"{text}\n---\n{done.stdout}\n{done.stderr}"
                outputs.append(done.stdout)
            elif lang == "python" and "kernel" in opts:
                user = opts["kernel"]
                password = re.search(r'DummyAuthenticator.password = "([^"]+)"',
                                     (tmp_path / "jupyterhub_config.py").read_text()).group(1)
                _, token = login(user, password)
                check_in_kernel(tmp_path, user, token, text)
            else:
                raise AssertionError(f"a quickstart block the test cannot run: {lang} {opts}")
    finally:
        if hub is not None and hub.poll() is None:
            # the proxy, service and servers run in sessions of their own: note them first, so
            # none outlives a hub that had to be killed (they would hold the guide's ports)
            children = psutil.Process(hub.pid).children(recursive=True)
            os.killpg(hub.pid, signal.SIGTERM)  # as Ctrl-C: the hub stops servers and service
            try:
                hub.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(hub.pid, signal.SIGKILL)
                hub.wait(10)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        log.close()

    validated = "".join(outputs)
    assert re.search(r"stations\b.*OK", validated) and re.search(r"visits\b.*OK", validated), \
        validated
    assert "FAILED" not in validated, validated


def wait_for_hub(hub: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        if hub.poll() is not None:
            pytest.fail("the hub exited:\n" + log.read_text()[-4000:])
        try:
            return (requests.get(f"{HUB}/hub/api/", timeout=2).ok
                    and requests.get(f"{HUB}/services/dataaccess/api/v1/health", timeout=2).ok)
        except requests.RequestException:
            return False

    wait_for(up, timeout=120, what="the guide's hub and service", every=0.5)


def check_in_kernel(home: Path, user: str, token: str, code: str) -> None:
    """Run the guide's notebook code in a kernel of the user's server, then check in the same
    kernel what it loaded: from the wheel's package, and governed."""
    api = {"Authorization": f"token {token}"}

    def server_ready() -> bool:
        r = requests.get(f"{HUB}/hub/api/users/{user}", headers=api, timeout=30)
        return bool(r.ok and r.json().get("servers", {}).get("", {}).get("ready"))

    wait_for(server_ready, timeout=180, what=f"{user}'s server", every=0.5)
    kernel = Kernel(_UserHub(HUB, token), user)  # type: ignore[arg-type]
    try:
        ran = kernel.run(code)
        assert ran["error"] is None, ran
        assert ran["stdout"].splitlines()[0] == "approved", ran["stdout"]
        seen = kernel.run("import json, sys\nprint(json.dumps({'prefix': sys.prefix, "
                          "'module': da.__file__, 'rows': visits.to_dict('list')}))")
        assert seen["error"] is None, seen
        got: dict[str, Any] = json.loads(seen["stdout"])
    finally:
        kernel.shutdown()
    env = str(home / "env")
    assert got["prefix"] == env and got["module"].startswith(env + "/lib/"), got
    rows = got["rows"]
    assert rows["year"] == [2024, 2024, 2025], rows  # the row filter: 2023 is not served
    assert rows["cost"] == [80.5, 310.0, 42.0], rows
    assert all(re.fullmatch(r"[0-9a-f]{32}", p) for p in rows["patient"]), rows  # hashed
    assert len(set(rows["patient"])) == 3, rows
