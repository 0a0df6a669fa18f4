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


# -- keyed records and anchors (SECURITY-CASES 47) -------------------------------------------------

KEY = b"the audit key, kept outside the db"


def keyed(db: Database, key: bytes = KEY) -> Database:
    """The same database as a process holding the audit key sees it."""
    return Database(db.url, audit_key=key)


def fill_keyed(db: Database, plain: int, more: int) -> Database:
    """`plain` records written before the upgrade, then `more` by a process with the key."""
    fill(db, plain)
    kdb = keyed(db)
    for i in range(more):
        with kdb.write() as s:
            audit.append(s, "analyst", "data.read", dataset="ds", detail={"i": i},
                         at=T0 + timedelta(minutes=i))
    return kdb


def anchor_of(db: Database, key: bytes = KEY) -> list[tuple[int, dict]]:
    with db.read() as s:
        a = audit.anchor(s, key, at=T0, source="test")
    return [(1, a)]


def verify_with(db: Database, keys=(KEY,), anchors=()) -> audit.VerifyResult:
    with db.read() as s:
        return audit.verify(s, keys=keys, anchors=anchors)


def test_when_a_key_is_first_used_then_the_switch_is_a_record_and_later_records_are_keyed(db):
    kdb = fill_keyed(db, 3, 3)
    with db.read() as s:
        rows = s.query(audit.AuditRecord).order_by(audit.AuditRecord.seq).all()
        head = s.get(audit.AuditHead, 1)
    assert [r.action for r in rows][3:] == ["audit.keyed", "data.read", "data.read", "data.read"]
    assert json.loads(rows[3].detail)["key_id"] == audit.key_id(KEY) == head.key_id
    result = verify_with(db)
    assert (result.ok, result.records, result.keyed_from) == (True, 7, 4), result.problems
    # the plain part still verifies as it did, the keyed part needs the key
    result = verify_with(db, keys=())
    assert result.problems == [f"record 4 onward are keyed with audit key {audit.key_id(KEY)}, "
                               "which was not given: cannot verify them"]
    # and a process without the key may not add plain records to a keyed chain
    with pytest.raises(audit.AuditKeyMissing, match="DATAACCESS_AUDIT_KEY"), db.write() as s:
        audit.append(s, "x", "data.read")
    kdb.dispose()


def test_when_a_keyed_record_is_edited_and_rehashed_without_the_key_then_verify_names_it(db):
    fill_keyed(db, 2, 4).dispose()
    with db.read() as s:
        r = s.get(audit.AuditRecord, 5)
        forged = audit.record_hash(r.prev_hash, r.seq, r.at, "mallory", r.action, r.dataset,
                                   r.request_id, r.grant_id, r.detail)
        guessed = audit.record_hash(r.prev_hash, r.seq, r.at, "mallory", r.action, r.dataset,
                                    r.request_id, r.grant_id, r.detail, b"a guessed key!!!!")
    for digest in (forged, guessed):
        sql(db, "update audit set actor = 'mallory', hash = :h where seq = 5", h=digest)
        problems = verify_with(db).problems
        assert "record 5: contents do not match its hash" in problems, problems


def test_when_every_record_is_rehashed_after_an_edit_then_verify_fails(db):
    """The writer edits record 2 and recomputes every later hash as plain SHA-256 (all they can
    do without the key), even turning the switch record into an ordinary one."""
    fill_keyed(db, 3, 3).dispose()
    with db.read() as s:
        rows = [(r.seq, r.at, r.actor, r.action, r.dataset, r.request_id, r.grant_id, r.detail)
                for r in s.query(audit.AuditRecord).order_by(audit.AuditRecord.seq)]
    prev = audit.GENESIS
    for seq, at, actor, action, dataset, rid, gid, detail in rows:
        if seq == 2:
            detail = '{"i":999}'
        if action == "audit.keyed":
            action, detail = "data.read", "{}"
        digest = audit.record_hash(prev, seq, at, actor, action, dataset, rid, gid, detail)
        sql(db, "update audit set action = :a, detail = :d, prev_hash = :p, hash = :h "
                "where seq = :s", a=action, d=detail, p=prev, h=digest, s=seq)
        prev = digest
    sql(db, "update audit_head set hash = :h, key_id = null", h=prev)
    assert verify_with(db, keys=()).ok  # the plain chain is self-consistent...
    result = verify_with(db)  # ...but the key's holder knows it must be keyed
    assert result.problems == ["no record is keyed although an audit key was given: the chain "
                               "was never keyed, or its keyed records were rewritten as plain ones"]


def test_when_the_last_records_are_deleted_and_the_head_moved_back_then_an_anchor_shows_it(db):
    kdb = fill_keyed(db, 2, 6)
    published = anchor_of(db)  # the service published the head at record 9
    assert published[0][1]["seq"] == 9
    with db.read() as s:
        seven = s.get(audit.AuditRecord, 7)
    sql(db, "delete from audit where seq > 7")
    sql(db, "update audit_head set seq = 7, hash = :h", h=seven.hash)
    assert verify_with(db).ok  # the chain alone cannot tell: the truncation window
    result = verify_with(db, anchors=published)
    assert result.problems == [
        f"records 8 to 9 are missing: an anchor published at {published[0][1]['at']} (line 1) "
        "names record 9, the log ends at 7"]
    kdb.dispose()


def test_when_an_anchor_is_forged_or_the_anchored_record_changed_then_verify_fails(db):
    kdb = fill_keyed(db, 1, 3)
    ((line, a),) = anchor_of(db)
    assert verify_with(db, anchors=[(line, a)]).ok
    forged = dict(a, hash="f" * 64, mac="0" * 64)
    problems = verify_with(db, anchors=[(3, forged)]).problems
    assert problems == [f"record {a['seq']} does not match the anchor published at {a['at']} "
                        "(line 3)", "anchor on line 3 is not signed by the audit key it names"]
    kdb.dispose()


def test_anchors_are_found_in_the_anchor_file_the_log_and_webhook_bodies(db):
    kdb = fill_keyed(db, 0, 2)
    ((_, a),) = anchor_of(db)
    lines = [json.dumps(a), "[I 2026-12-01 dataaccess] audit anchor " + json.dumps(a),
             json.dumps({"event": "audit.anchor", "object": a, "at": "x"}), "noise {not json",
             '{"event": "other"}']
    assert [n for n, _ in audit.read_anchors(lines)] == [1, 2, 3]
    kdb.dispose()


def test_the_command_verifies_with_the_key_and_anchors_and_publishes_an_anchor(db, tmp_path):
    fill_keyed(db, 2, 2).dispose()
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    (key_dir / "audit_key").write_text(KEY.decode())
    (key_dir / "audit_key").chmod(0o600)
    anchors = tmp_path / "anchors.jsonl"
    done = cli("anchor", "--db-url", db.url, "--key-dir", str(key_dir), "--anchors", str(anchors))
    assert done.returncode == 0, done.stderr
    assert json.loads(anchors.read_text())["seq"] == 5 and stat_mode(anchors) == 0o600
    done = cli("verify", "--db-url", db.url, "--key-dir", str(key_dir), "--anchors", str(anchors))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("audit log OK: 5 records, chain intact, keyed from record 3; "
                                   "1 anchors match")
    sql(db, "delete from audit where seq = 5")
    sql(db, "update audit_head set seq = 4, hash = (select hash from audit where seq = 4)")
    done = cli("verify", "--db-url", db.url, "--key-dir", str(key_dir), "--anchors", str(anchors))
    assert done.returncode == 1
    assert "TAMPERED: records 5 to 5 are missing" in done.stderr and "Traceback" not in done.stderr
    done = cli("verify", "--db-url", db.url, "--key-dir", str(tmp_path / "none"))
    assert done.returncode == 1 and "which was not given" in done.stderr


def stat_mode(path) -> int:
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)
