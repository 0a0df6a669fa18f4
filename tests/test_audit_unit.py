"""The hash-chained audit log (audit.py) on a real SQLite database, and the `audit` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from jupyterhub_dataaccess import audit
from jupyterhub_dataaccess.store import Database

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    database.upgrade()
    yield database
    database.dispose()


def fill(db: Database, n: int) -> None:
    """n records, with every field set and varied."""
    for i in range(n):
        with db.write() as s:
            audit.append(s, f"user{i % 3}", audit.ACTIONS[i % len(audit.ACTIONS)],
                         dataset=f"ds{i % 4}", request_id=i or None, grant_id=i % 5 or None,
                         detail={"i": i, "note": "ünïcode \u202e\n"}, at=T0 + timedelta(seconds=i))


def verify(db: Database) -> audit.VerifyResult:
    with db.read() as s:
        return audit.verify(s)


def sql(db: Database, statement: str, **params) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATAACCESS_DB_URL"}
    return subprocess.run([sys.executable, "-m", "jupyterhub_dataaccess", "audit", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(env, PYTHONPATH=REPO))


# -- append and verify ------------------------------------------------------------------------


def test_when_the_log_is_empty_then_it_verifies(db):
    result = verify(db)
    assert (result.ok, result.records, result.problems) == (True, 0, [])


def test_when_many_records_are_appended_then_the_chain_is_intact_and_linked(db):
    fill(db, 120)
    result = verify(db)
    assert (result.ok, result.records, result.problems) == (True, 120, [])
    with db.read() as s:
        rows = [json.loads(line) for line in audit.export(s)]
    assert [r["seq"] for r in rows] == list(range(1, 121))
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:], strict=False))
    assert len({r["hash"] for r in rows}) == 120


def test_when_verify_reads_in_small_batches_then_the_result_is_the_same(db):
    fill(db, 23)
    with db.read() as s:
        assert audit.verify(s, batch=4).ok
        assert audit.verify(s, batch=4).records == 23


def test_when_an_unknown_action_is_appended_then_it_is_refused_and_nothing_is_written(db):
    with pytest.raises(ValueError, match="unknown audit action"), db.write() as s:
        audit.append(s, "u", "data.steal")
    assert verify(db).records == 0


def test_when_the_transaction_rolls_back_then_the_record_and_head_roll_back_with_it(db):
    fill(db, 2)
    with pytest.raises(RuntimeError), db.write() as s:
        audit.append(s, "u", "data.read", dataset="x")
        raise RuntimeError("the read failed")
    result = verify(db)
    assert (result.ok, result.records) == (True, 2)


def test_when_a_record_is_appended_without_a_time_then_now_is_used(db):
    before = datetime.now(timezone.utc)
    with db.write() as s:
        rec = audit.append(s, "u", "data.read")
    assert before <= rec.at <= datetime.now(timezone.utc)
    assert verify(db).ok


# -- tampering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("column, value", [
    ("actor", "someone-else"),
    ("action", "data.preview"),
    ("dataset", "other"),
    ("request_id", 999),
    ("grant_id", 777),
    ("detail", '{"i":10,"note":"edited"}'),
    ("at", "2024-05-01 12:00:11.000000"),
    ("prev_hash", "f" * 64),
    ("hash", "0" * 64),
])
@pytest.mark.parametrize("seq", [1, 10, 30])
def test_when_any_field_of_any_record_is_edited_then_verify_fails(db, column, value, seq):
    fill(db, 30)
    sql(db, f"update audit set {column} = :v where seq = :seq", v=value, seq=seq)  # noqa: S608
    result = verify(db)
    assert not result.ok
    assert any(f"record {seq}" in p for p in result.problems) or (
        seq == 30 and any("ends at record" in p for p in result.problems)), result.problems


def test_when_a_record_is_edited_and_its_hash_recomputed_then_the_next_record_breaks(db):
    fill(db, 10)
    with db.read() as s:
        r = s.get(audit.AuditRecord, 5)
        forged = audit.record_hash(r.prev_hash, r.seq, r.at, "forger", r.action, r.dataset,
                                   r.request_id, r.grant_id, r.detail)
    sql(db, "update audit set actor = 'forger', hash = :h where seq = 5", h=forged)
    result = verify(db)
    assert not result.ok
    assert result.problems == ["record 6: previous hash does not match record 5"]


@pytest.mark.parametrize("seq", [1, 15, 30])
def test_when_a_record_is_deleted_then_verify_fails(db, seq):
    fill(db, 30)
    sql(db, "delete from audit where seq = :seq", seq=seq)
    result = verify(db)
    assert not result.ok and result.records == 29
    assert result.problems


def test_when_the_last_records_are_deleted_then_the_head_shows_they_were_written(db):
    fill(db, 10)
    sql(db, "delete from audit where seq > 7")
    result = verify(db)
    assert not result.ok
    assert result.problems == ["the log ends at record 7 but 10 were written"]


def test_when_every_record_is_deleted_then_verify_fails(db):
    fill(db, 5)
    sql(db, "delete from audit")
    assert not verify(db).ok


def test_when_two_records_swap_places_then_verify_fails(db):
    fill(db, 10)
    sql(db, "update audit set seq = -1 where seq = 4")
    sql(db, "update audit set seq = 4 where seq = 5")
    sql(db, "update audit set seq = 5 where seq = -1")
    result = verify(db)
    assert not result.ok
    assert any("record 4" in p for p in result.problems)
    assert any("record 5" in p for p in result.problems)


def test_when_a_record_is_inserted_then_verify_fails(db):
    fill(db, 5)
    sql(db, "update audit_head set seq = 6 where id = 1")
    with db.read() as s:
        head = s.get(audit.AuditHead, 1)
        r = s.get(audit.AuditRecord, 5)
        h = audit.record_hash(r.hash, 6, T0, "x", "data.read", "", None, None, "{}")
    sql(db, "insert into audit (seq, at, actor, action, dataset, detail, prev_hash, hash) values "
            "(6, :at, 'x', 'data.read', '', '{}', :p, :h)", at=T0.replace(tzinfo=None),
        p="a" * 64, h=h)
    assert head is not None
    assert not verify(db).ok


# -- export ------------------------------------------------------------------------------------------


def test_when_the_log_is_exported_then_each_record_is_one_json_line(db):
    fill(db, 12)
    with db.read() as s:
        lines = list(audit.export(s, batch=5))
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert set(first) == {"seq", "at", "actor", "action", "dataset", "request_id", "grant_id",
                          "detail", "prev_hash", "hash"}
    assert first["at"] == "2024-05-01T12:00:00.123456Z"
    assert first["detail"] == {"i": 0, "note": "ünïcode \u202e\n"}
    assert all("\n" not in line for line in lines)


# -- the command --------------------------------------------------------------------------------------


def test_when_the_command_verifies_an_intact_log_then_it_exits_0_then_1_after_tampering(db):
    fill(db, 8)
    done = cli("verify", "--db-url", db.url)
    assert done.returncode == 0, done.stderr
    assert "audit log OK: 8 records, chain intact" in done.stdout
    sql(db, "update audit set detail = '{}' where seq = 3")
    done = cli("verify", "--db-url", db.url)
    assert done.returncode == 1
    assert "TAMPERED: record 3: contents do not match its hash" in done.stderr
    assert "Traceback" not in done.stderr


def test_when_the_command_runs_after_a_deletion_then_it_exits_non_zero(db):
    fill(db, 4)
    sql(db, "delete from audit where seq = 2")
    assert cli("verify", "--db-url", db.url).returncode != 0


def test_when_the_command_exports_then_it_writes_one_json_line_per_record(db, tmp_path):
    fill(db, 6)
    out = tmp_path / "audit.jsonl"
    done = cli("export", "--db-url", db.url, "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    done = cli("export", "--db-url", db.url)
    assert done.stdout.splitlines() == lines


def test_when_the_command_has_no_database_then_it_says_so(db):
    done = cli("verify")
    assert done.returncode != 0
    assert "--db-url" in done.stderr


def test_when_the_audit_head_is_deleted_then_verify_fails(db):
    fill(db, 3)
    sql(db, "delete from audit_head")
    result = verify(db)
    assert not result.ok and result.problems == ["the audit head is missing"]
