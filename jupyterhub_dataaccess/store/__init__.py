"""The database: engine set-up (SQLite in WAL mode, or PostgreSQL), sessions, Alembic migrations.

Writes use `Database.write()`: on SQLite it starts with BEGIN IMMEDIATE, so concurrent writers queue
on the busy timeout instead of failing with "database is locked" half-way through a transaction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from .models import AuditHead, AuditRecord, Base, Decision, Grant, Request, Setting

__all__ = [
    "AuditHead", "AuditRecord", "Base", "Database", "Decision", "Grant", "Request", "Setting",
    "upgrade",
]

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for the lock


def private_sqlite_file(path: str) -> None:
    """Create the SQLite file (and let SQLite give its -wal and -shm files the same mode) readable
    by its owner only; tighten an existing one made before this rule."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, path + "-wal", path + "-shm"):
        try:
            st = os.stat(name)
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(name, 0o600)
        except OSError:
            pass


def _make_engine(db_url: str, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> Engine:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            private_sqlite_file(url.database)
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout, "check_same_thread": False},
            pool_pre_ping=False,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("dataaccess_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """Sessions on one database URL: `read()` for queries, `write()` for one atomic change.

    `audit_key` (kept outside the database, see keys.py) is handed to every session as
    `session.info["audit_key"]`, where audit.append finds it.
    """

    def __init__(self, db_url: str, busy_timeout: float = SQLITE_BUSY_TIMEOUT,
                 audit_key: bytes | None = None):
        self.url = db_url
        self.audit_key = audit_key
        self.engine = _make_engine(db_url, busy_timeout)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(dataaccess_write=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read(info={"audit_key": self.audit_key}) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._write(info={"audit_key": self.audit_key}) as session, session.begin():
            yield session

    def upgrade(self) -> None:
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection_engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic), creating it on an empty database."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("requests")
