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

from .models import AuditHead, AuditRecord, Base, Decision, Delivery, Grant, Request, Setting

__all__ = [
    "AuditHead", "AuditRecord", "Base", "Database", "Decision", "Delivery", "Grant", "Request",
    "SchemaError",
    "Setting", "prepare", "upgrade",
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

    def prepare(self, allow_upgrade: bool = False) -> str:
        return prepare(self.engine, allow_upgrade)

    def dispose(self) -> None:
        self.engine.dispose()


def _alembic_config(engine: Engine | None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection_engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic), creating it on an empty database, under the
    schema lock (replicas and `db upgrade` never migrate at the same time)."""
    from alembic import command

    with schema_lock(engine):
        command.upgrade(_alembic_config(engine), revision)


class SchemaError(RuntimeError):
    """The database's schema is not the one this release needs; the message says what to do."""


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {r.revision for r in ScriptDirectory.from_config(_alembic_config(None))
            .walk_revisions()}


def prepare(engine: Engine, allow_upgrade: bool = False) -> str:
    """Make the database ready for this release at start, as JupyterHub does: an empty database
    gets the schema; an existing one must be at this release's revision, else SchemaError names
    the command to run — or, with `allow_upgrade` (single-replica installs, the demo), it is
    upgraded here. All of it under the schema lock, so replicas starting at once take turns.
    Returns the revision the database is at."""
    head = head_revision()
    with schema_lock(engine):
        current = current_revision(engine)
        if current == head:
            return head
        if current is None and not has_schema(engine):
            _upgrade_locked(engine)
            return head
        if current is not None and current not in known_revisions():
            raise SchemaError(
                f"The database is at revision {current}, which this release of "
                f"jupyterhub-dataaccess does not know (its newest is {head}): run the release "
                "that made it, or a newer one")
        if not allow_upgrade:
            raise SchemaError(
                f"The database is at revision {current}, this release needs {head}: back it up, "
                "then run `jupyterhub-dataaccess db upgrade` (or set "
                "DataAccessService.upgrade_db = True to upgrade at start on a single replica)")
        _upgrade_locked(engine)
        return head


def _upgrade_locked(engine: Engine) -> None:
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


SCHEMA_LOCK_KEY = 0x6461_7461_6163  # "dataac": the PostgreSQL advisory lock of schema changes


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Held while the schema is checked or changed: a PostgreSQL advisory lock (released when
    its connection ends, even if the process dies), or an flock beside a SQLite file."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})")
                conn.commit()
        return
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    with open(path + ".schema-lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("requests")
