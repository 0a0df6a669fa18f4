"""A real PostgreSQL server for tests: Debian's binaries, a temporary cluster, a loopback port.

As root the server runs as the unprivileged `postgres` user (PostgreSQL refuses to run as root).
Missing binaries are an error, never a skip: `make setup` installs Debian's postgresql package.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from hubutil import free_port


def pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                           "run `make setup` (it installs Debian's postgresql package)")
    return os.path.dirname(found[-1])


@dataclass
class Postgres:
    root: str
    port: int
    user: str = "dataaccess"
    database: str = "dataaccess"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "data")

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = list(cmd)
        if os.getuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        if os.getuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("no 'postgres' user: install Debian's postgresql package") from None
            shutil.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
        self._run(os.path.join(pg_bin(), "initdb"), "-D", self.datadir, "-U", self.user,
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run(os.path.join(pg_bin(), "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", self.user, self.database)

    def start(self) -> None:
        self._run(os.path.join(pg_bin(), "pg_ctl"), "-D", self.datadir, "-w", "-t", "60",
                  "-l", os.path.join(self.root, "server.log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=200 -c fsync=off", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = self._run(os.path.join(pg_bin(), "pg_isready"), "-h", "127.0.0.1", "-p",
                          str(self.port), check=False)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("PostgreSQL did not start")

    def stop(self, mode: str = "fast") -> None:
        self._run(os.path.join(pg_bin(), "pg_ctl"), "-D", self.datadir, "-m", mode, "-w",
                  "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_postgres() -> Postgres:
    root = tempfile.mkdtemp(prefix="dataaccess-pg-")
    pg = Postgres(root=root, port=free_port())
    pg.init()
    return pg
