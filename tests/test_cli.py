"""The command line for operators: a wrong --db-url is one line and exit status 2, never an empty
database created nor a traceback; 0 ok, 1 a check that failed, 2 usage or configuration."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from jupyterhub_dataaccess.store import Database

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB_COMMANDS = [["audit", "verify"], ["grants", "revoke", "1"], ["db", "upgrade"]]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAACCESS_")}
    return subprocess.run([sys.executable, "-m", "jupyterhub_dataaccess", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(env, PYTHONPATH=REPO))


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for w in words:
        assert w in done.stderr, done.stderr


@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_when_the_db_url_names_a_missing_sqlite_file_then_nothing_is_created(tmp_path, command):
    path = tmp_path / "typo.sqlite"
    done = cli(*command, "--db-url", f"sqlite:///{path}")
    one_line_error(done, f"no database at {path}: check --db-url")
    assert os.listdir(tmp_path) == []


def test_when_the_db_url_is_wrong_in_other_ways_then_one_line_says_what(tmp_path):
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()  # an existing file, but not ours
    (tmp_path / "empty.sqlite").write_bytes(b"")
    cases = [
        ([], "give --db-url or set DATAACCESS_DB_URL"),
        (["--db-url", "not a url"], "--db-url is not a database URL"),
        (["--db-url", "sqlite://"], "names no database file"),
        (["--db-url", f"sqlite:///{other}"], "holds no jupyterhub-dataaccess database"),
        (["--db-url", "postgresql://operator:s3cret-pw@127.0.0.1:1/dataaccess"],
         "cannot open the database at postgresql://operator:***@127.0.0.1:1/dataaccess"),
        (["--db-url", "nosuchdialect://x/y"], "cannot open the database"),
    ]
    for extra, words in cases:
        done = cli("audit", "verify", *extra)
        one_line_error(done, words)
        assert "s3cret-pw" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["empty.sqlite", "other.sqlite"]


def test_when_the_database_is_behind_then_commands_point_at_db_upgrade(tmp_path):
    from jupyterhub_dataaccess.store import upgrade

    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(db.engine, "0001")
    done = cli("grants", "list", "--db-url", db.url)
    one_line_error(done, "is at revision 0001", "run `jupyterhub-dataaccess db upgrade`")
    done = cli("db", "upgrade", "--db-url", db.url)
    assert done.returncode == 0 and done.stdout.startswith("database at revision"), done.stderr
    assert cli("grants", "list", "--db-url", db.url).returncode == 0
    db.dispose()


def test_exit_statuses_tell_a_typo_from_a_failed_check(tmp_path):
    """0 ok, 1 the check ran and found something wrong, 2 the command could not run."""
    db = Database(f"sqlite:///{tmp_path / 'da.sqlite'}")
    db.upgrade()
    assert cli("audit", "verify", "--db-url", db.url).returncode == 0
    one_line_error(cli("grants", "revoke", "999", "--db-url", db.url), "No such grant")
    assert cli("audit", "frobnicate").returncode == 2  # argparse: usage
    with sqlite3.connect(tmp_path / "da.sqlite") as conn:
        conn.execute("insert into audit (seq, at, actor, action, dataset, detail, prev_hash, "
                     "hash) values (99, '2026-01-01 00:00:00', 'x', 'data.read', '', '{}', 'a', "
                     "'b')")
    done = cli("audit", "verify", "--db-url", db.url)
    assert done.returncode == 1 and "TAMPERED" in done.stderr, done.stderr
    db.dispose()
