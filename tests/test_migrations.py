"""Alembic migrations on SQLite and a real PostgreSQL: a database made at the first revision and
filled keeps everything through `db upgrade` to head; the models and the migrations agree; the
service creates the schema in an empty database, refuses an older one (unless told to upgrade it),
and replicas starting at once take turns under the schema lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import requests
from hubutil import REPO, free_port, wait_for
from reliabilityutil import cli, new_database
from sqlalchemy import create_engine, text

from jupyterhub_dataaccess import audit
from jupyterhub_dataaccess.catalog import Catalog
from jupyterhub_dataaccess.errors import Principal
from jupyterhub_dataaccess.governance import Config, Governance
from jupyterhub_dataaccess.keys import ENV as KEY_ENV
from jupyterhub_dataaccess.policy import Policy
from jupyterhub_dataaccess.store import (
    MIGRATIONS,
    AuditRecord,
    Base,
    Database,
    Decision,
    Grant,
    Request,
    Setting,
    current_revision,
    upgrade,
)

FIRST = "0001"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
OPERATOR = Principal(name="cli:test", capabilities=frozenset({"browse", "review", "admin"}))


def _head() -> str:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path) -> str:
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    return new_database("", str(tmp_path), pg)


def _naive(at: datetime) -> datetime:
    return at.astimezone(timezone.utc).replace(tzinfo=None)


def _fill_at_first_revision(url: str) -> None:
    """Rows written with the first revision's columns only, as a release of that time would."""
    rows = [("analyst", "request.create", 1, None, '{"days":30}'),
            ("steward", "request.approve", 1, None, '{"comment":"ok"}'),
            ("steward", "grant.create", 1, 1, '{"auto":false}'),
            ("analyst", "data.read", 1, 1, '{"format":"arrow"}'),
            ("nobody", "access.denied", None, None, '{"attempted":"data.read"}')]
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(
            'INSERT INTO requests (id, dataset, "user", justification, days, status, reason, '
            "approvals_required, created_at, updated_at) VALUES "
            "(1, 'penguins', 'analyst', 'before the upgrade', 30, 'approved', 'review', 1, :t, :t),"
            "(2, 'sales', 'nobody', 'still pending', 7, 'pending', 'review', 1, :t, :t)"),
            {"t": _naive(NOW)})
        c.execute(text("INSERT INTO decisions (id, request_id, by, decision, comment, at) VALUES "
                       "(1, 1, 'steward', 'approve', 'ok', :t)"), {"t": _naive(NOW)})
        c.execute(text(
            'INSERT INTO grants (id, dataset, "user", request_id, created_at, expires_at, '
            "revoked_at, revoked_by, expiry_recorded) VALUES "
            "(1, 'penguins', 'analyst', 1, :t, :e, NULL, NULL, 0)"),
            {"t": _naive(NOW), "e": _naive(NOW + timedelta(days=3650))})
        prev = audit.GENESIS
        for seq, (actor, action, rid, gid, detail) in enumerate(rows, start=1):
            digest = audit.record_hash(prev, seq, NOW, actor, action, "penguins", rid, gid, detail)
            c.execute(text(
                "INSERT INTO audit (seq, at, actor, action, dataset, request_id, grant_id, detail, "
                "prev_hash, hash) VALUES (:seq, :at, :actor, :action, 'penguins', :rid, :gid, "
                ":detail, :prev, :hash)"),
                {"seq": seq, "at": _naive(NOW), "actor": actor, "action": action, "rid": rid,
                 "gid": gid, "detail": detail, "prev": prev, "hash": digest})
            prev = digest
        c.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :n, :h)"),
                  {"n": len(rows), "h": prev})
        c.execute(text("INSERT INTO settings (name, value) VALUES ('mask_key', 'abcd')"))
    engine.dispose()


def test_a_database_at_the_first_revision_upgrades_to_head_and_keeps_everything(empty_db: str):
    """Given a database created at revision 0001 and filled, When the operator runs
    `jupyterhub-dataaccess db upgrade`, Then it is at head and every row reads back, the audit
    chain verifies, and governance sees the grant as active."""
    engine = create_engine(empty_db)
    upgrade(engine, FIRST)
    assert current_revision(engine) == FIRST
    engine.dispose()
    _fill_at_first_revision(empty_db)

    p = cli("db", "upgrade", "--db-url", empty_db)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"database at revision {_head()}"
    p = cli("db", "upgrade", "--db-url", empty_db)  # idempotent
    assert p.returncode == 0 and p.stdout.strip() == f"database at revision {_head()}"

    db = Database(empty_db)
    try:
        with db.read() as s:
            reqs = {r.id: (r.user, r.dataset, r.status, r.created_at) for r in
                    s.query(Request).all()}
            assert reqs == {1: ("analyst", "penguins", "approved", NOW),
                            2: ("nobody", "sales", "pending", NOW)}
            (d,) = s.query(Decision).all()
            assert (d.request_id, d.by, d.decision, d.comment, d.at) == (
                1, "steward", "approve", "ok", NOW)
            (g,) = s.query(Grant).all()
            assert (g.user, g.dataset, g.request_id, g.revoked_at) == ("analyst", "penguins", 1,
                                                                       None)
            assert [r.action for r in s.query(AuditRecord).order_by(AuditRecord.seq)] == [
                "request.create", "request.approve", "grant.create", "data.read",
                "access.denied"]
            assert s.get(Setting, "mask_key").value == "abcd"
        gov = Governance(db=db, config=lambda: Config(Catalog({}), Policy()))
        (grant,) = gov.list_grants(OPERATOR, active=True)["items"]
        assert (grant["id"], grant["status"]) == (1, "active")
        assert gov.list_requests(OPERATOR, scope="review", status="pending")["total"] == 1
        # the upgraded database takes new writes and extends the same chain
        gov.revoke(OPERATOR, 1)
    finally:
        db.dispose()
    p = cli("audit", "verify", "--db-url", empty_db)
    assert p.returncode == 0 and "audit log OK: 6 records, chain intact" in p.stdout, p.stderr


def test_the_models_and_the_migrations_agree(empty_db: str):
    """When the schema is made by the migrations, Then Alembic's autogenerate finds no
    difference with the SQLAlchemy models (a model change without a migration fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(empty_db)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert current_revision(engine) == _head()
    finally:
        engine.dispose()


def test_every_migration_file_is_reachable_from_the_single_head():
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    script = ScriptDirectory.from_config(cfg)
    revisions = [r.revision for r in script.walk_revisions()]
    files = [f for f in os.listdir(os.path.join(MIGRATIONS, "versions")) if f.endswith(".py")]
    assert len(revisions) == len(files) and revisions[-1] == FIRST
    assert revisions[0] == _head()


# -- the service at start: create an empty database, refuse an old one, upgrade on purpose -------

def _start_replicas(db_url: str, config_files: dict[str, str], cwd: str, n: int = 2,
                    upgrade: bool = False) -> list[tuple[subprocess.Popen, str]]:
    """`n` service processes on one database, started at the same moment, as replicas are."""
    out = []
    for _ in range(n):
        port = free_port()
        env = dict(os.environ, PYTHONPATH=REPO, DATAACCESS_DB_URL=db_url,
                   DATAACCESS_CATALOG=config_files["catalog"],
                   DATAACCESS_POLICY=config_files["policy"],
                   JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
                   JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api", JUPYTERHUB_API_TOKEN="x",
                   **{name: "hex:" + "ab" * 32 for name in KEY_ENV.values()},
                   DATAACCESS_UPGRADE_DB="1" if upgrade else "")
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub_dataaccess", "service"],
                                env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out.append((proc, f"http://127.0.0.1:{port}/services/dataaccess/api/v1/health"))
    return out


def _healthy(replicas: list[tuple[subprocess.Popen, str]], timeout: float = 60) -> None:
    def all_up() -> bool:
        for proc, url in replicas:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(url, timeout=2).status_code != 200:
                    return False
            except requests.RequestException:
                return False
        return True

    wait_for(all_up, timeout, "both replicas answering /health")


def _stop(replicas: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in replicas:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_two_replicas_starting_at_once_on_an_empty_database_create_the_schema_once(
        empty_db: str, config_files, tmp_path):
    """Given an empty database, When two service processes start at the same moment, Then both
    come up, the schema is at head, and writes through either work (one chain)."""
    replicas = _start_replicas(empty_db, config_files, str(tmp_path))
    try:
        _healthy(replicas)
    finally:
        _stop(replicas)
    engine = create_engine(empty_db)
    try:
        assert current_revision(engine) == _head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
    finally:
        engine.dispose()


def test_replicas_refuse_an_older_database_until_it_is_upgraded_or_told_to_upgrade(
        empty_db: str, config_files, tmp_path):
    """Given a database at the first revision with rows in it, When two replicas start, Then both
    refuse, naming `jupyterhub-dataaccess db upgrade`, and change nothing; When two start at once
    with upgrade_db, Then the schema is upgraded once, under the lock, and both come up."""
    assert _head() != FIRST, "needs a revision after the first"
    engine = create_engine(empty_db)
    upgrade(engine, FIRST)
    engine.dispose()
    _fill_at_first_revision(empty_db)

    replicas = _start_replicas(empty_db, config_files, str(tmp_path))
    try:
        for proc, _ in replicas:
            assert proc.wait(60) == 2
            log = proc.stdout.read()
            assert "Refusing to start" in log and "run `jupyterhub-dataaccess db upgrade`" in log
            assert "Traceback" not in log
    finally:
        _stop(replicas)
    engine = create_engine(empty_db)
    assert current_revision(engine) == FIRST
    engine.dispose()

    replicas = _start_replicas(empty_db, config_files, str(tmp_path), upgrade=True)
    try:
        _healthy(replicas)
    finally:
        _stop(replicas)
    engine = create_engine(empty_db)
    try:
        assert current_revision(engine) == _head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM requests")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM grants")).scalar() == 1
    finally:
        engine.dispose()
