"""A query worker keeps one locked, read-only database per setup (query/worker.py `_Setups`):
the views over the same files, version, columns, row filter, masks and hashing key, under the
same limits. Each query gets a fresh connection to it. These tests show that a later query sees
nothing an earlier one left, that any other setup gets a database of its own, and that a
database is dropped on doubt.

The SQL here goes straight to a worker, past the check (query/check.py), as an attacker who got
past it would send it.
"""

from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.query import run
from jupyterhub_dataaccess.query.native import native_view
from jupyterhub_dataaccess.query.worker import (
    Limits,
    QueryFailed,
    WorkerPool,
    _Setups,
    setup_key,
)
from jupyterhub_dataaccess.sources.filters import parse_filter

LIMITS = Limits(timeout_seconds=20, memory_mb=256, max_rows=1000, max_bytes=1 << 20)
WORKER_LIMITS = {"threads": LIMITS.threads, "memory_mb": LIMITS.memory_mb}
VIEW_SQL = "SELECT sql FROM duckdb_views() WHERE view_name = 'flights'"
GOVERNED = "SELECT n, secret FROM flights ORDER BY n"


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(1, LIMITS)  # one worker: every query meets the databases of the last ones
    yield p
    p.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("reuse")
    table = pa.table({"n": list(range(10)), "secret": [f"s{i}" for i in range(10)]})
    pq.write_table(table, d / "flights.parquet")
    pq.write_table(table, d / "copy.parquet")
    return d


def make(path: str, row_filter: str = "n < 5") -> Dataset:
    return Dataset(id="flights", title="f", masks={"secret": "hash"},
                   source=Source(kind="file", uri=path, format="parquet"),
                   row_filter=parse_filter(row_filter))


def view_of(ds: Dataset, key: bytes = b"k" * 32, columns: list[str] | None = None) -> dict:
    view = native_view(ds, run._plan(ds, None)[0], key, columns)
    assert view is not None
    return view.to_json()


def answer(pool: WorkerPool, sql: str, views: list[dict]) -> object:
    """The rows, or the failure's kind and message."""
    try:
        return pool.run(sql, {}, views).to_pylist()
    except QueryFailed as e:
        return (e.kind, e.message)


def database_of(pool: WorkerPool, views: list[dict]) -> str:
    """The view's definition as the database holds it: it names that database's own randomly
    named hash function, so two databases never give the same text."""
    return pool.run(VIEW_SQL, {}, views).column("sql")[0].as_py()


def assert_governed(pool: WorkerPool, views: list[dict]) -> None:
    rows = pool.run(GOVERNED, {}, views).to_pylist()
    assert [r["n"] for r in rows] == [0, 1, 2, 3, 4]  # the row filter
    assert all(len(r["secret"]) == 32 and not r["secret"].startswith("s") for r in rows)


def test_the_next_query_of_a_setup_reuses_its_database_on_a_fresh_connection(pool, data):
    view = view_of(make(str(data / "flights.parquet")))
    first = database_of(pool, [view])
    assert "_dataaccess_hash_" in first
    assert_governed(pool, [view])
    # the service no longer asks for the type check once a worker made it: the same setup
    assert database_of(pool, [dict(view, check=False)]) == first
    assert pool._idle[0].setups[-1] == setup_key([view], WORKER_LIMITS)


@pytest.mark.parametrize("change", ["hashing key", "version", "files", "columns", "row filter"])
def test_any_other_setup_gets_a_database_of_its_own(pool, data, change):
    """Two setups differing in one thing never share a database, so neither one's hash function
    (and key) nor its view serves the other."""
    ds = make(str(data / "flights.parquet"))
    base = view_of(ds)
    other = {
        "hashing key": lambda: view_of(ds, key=b"j" * 32),
        "version": lambda: dict(base, version="another version of the files"),
        "files": lambda: view_of(make(str(data / "copy.parquet"))),
        "columns": lambda: view_of(ds, columns=["n"]),
        "row filter": lambda: view_of(make(str(data / "flights.parquet"), "n < 4")),
    }[change]()
    assert setup_key([other], WORKER_LIMITS) != setup_key([base], WORKER_LIMITS)
    mine = database_of(pool, [base])
    theirs = database_of(pool, [other])
    assert theirs != mine
    assert database_of(pool, [base]) == mine  # and the first is still kept
    function = mine[mine.index("_dataaccess_hash_"):].split("(")[0]
    assert answer(pool, f"SELECT {function}('x') AS h", [other])[0] == "bind"
    if change == "hashing key":
        ours, theirs_rows = (pool.run(GOVERNED, {}, [v]).column("secret").to_pylist()
                             for v in (base, other))
        assert not set(ours) & set(theirs_rows)


def test_a_macro_named_as_the_hash_function_never_unmasks_the_view(pool, data):
    """When a statement past the check knows the view's hash function (its name is kept with
    the database, and duckdb_views() shows it) and defines a temporary macro of that name
    returning its argument, in the same request or an earlier one, Then the view still calls
    the worker's function (it names it qualified) and answers hashed values, never raw ones."""
    view = view_of(make(str(data / "flights.parquet")))
    sql = database_of(pool, [view])
    function = sql[sql.index("_dataaccess_hash_"):].split("(")[0]
    for leave in (f"CREATE TEMP MACRO {function}(x) AS x; ",
                  f"CREATE TEMP MACRO {function}(x) AS x; SET search_path = 'temp,main'; ",
                  ""):
        rows = answer(pool, leave + GOVERNED, [view])
        assert isinstance(rows, list) and [r["n"] for r in rows] == [0, 1, 2, 3, 4], leave
        assert not any(r["secret"].startswith("s") for r in rows), leave


LEFTOVERS = [
    # (what a query leaves, a later query that would see it)
    ("CREATE TEMP TABLE leak AS SELECT 42 AS n", "SELECT * FROM leak"),
    ("CREATE TEMP VIEW leak AS SELECT 42 AS n", "SELECT * FROM leak"),
    ("CREATE TEMP MACRO avg(x) AS 42", "SELECT avg(n) AS a FROM flights"),
    ("CREATE MACRO avg(x) AS 42", "SELECT avg(n) AS a FROM flights"),
    ("CREATE MACRO main.leak() AS 42", "SELECT leak() AS a"),
    ("SET VARIABLE leak = 42", "SELECT getvariable('leak') AS v"),
    ("PREPARE leak AS SELECT 42 AS n", "EXECUTE leak"),
    ("SET search_path = 'temp'", "SELECT current_setting('search_path') AS s"),
    ("CREATE TABLE leak AS SELECT 42 AS n", "SELECT * FROM leak"),
    ("CREATE OR REPLACE VIEW flights AS SELECT 42 AS n, 's' AS secret", GOVERNED),
    ("DROP VIEW flights", GOVERNED),
    ("ATTACH ':memory:' AS leak", "SELECT database_name FROM duckdb_databases() ORDER BY 1"),
    ("CREATE SCHEMA leak", "SELECT schema_name FROM duckdb_schemas() ORDER BY 1"),
    ("CREATE SEQUENCE leak", "SELECT nextval('leak') AS n"),
    ("CREATE TYPE leak AS INTEGER", "SELECT CAST(1 AS leak) AS n"),
]


@pytest.mark.parametrize("leave,probe", LEFTOVERS)
def test_a_query_sees_nothing_an_earlier_query_left(pool, data, leave, probe):
    """Whatever a statement past the check leaves (temporary objects, macros shadowing a
    builtin, variables, prepared statements, settings, tables, a swapped or dropped view,
    another database, schemas, sequences, types), a later query over the same setup answers as
    if it had never run, and the view still answers governed."""
    view = view_of(make(str(data / "flights.parquet")))
    before = answer(pool, probe, [view])
    answer(pool, leave, [view])
    assert answer(pool, probe, [view]) == before
    assert_governed(pool, [view])


def test_a_statement_that_is_not_one_select_costs_its_database_and_a_bind_error_does_not(
        pool, data):
    view = view_of(make(str(data / "flights.parquet")))
    first = database_of(pool, [view])
    assert answer(pool, "SELECT nope FROM flights", [view])[0] == "bind"
    assert database_of(pool, [view]) == first
    assert answer(pool, "SELECT n FROM flights LIMIT 1", [view]) == [{"n": 0}]
    assert database_of(pool, [view]) == first
    answer(pool, "SET VARIABLE x = 1", [view])  # runs (connection-local), yet not a SELECT
    second = database_of(pool, [view])
    assert second != first
    assert answer(pool, "SELECT CAST(secret AS INTEGER) FROM flights", [view])[0] == "runtime"
    assert database_of(pool, [view]) != second  # a runtime failure: dropped too


def test_a_worker_keeps_the_databases_of_its_last_four_setups(pool, data):
    ds = make(str(data / "flights.parquet"))
    views = [dict(view_of(ds), version=f"v{i}") for i in range(5)]
    first = database_of(pool, [views[0]])
    for v in views[1:]:
        database_of(pool, [v])
    assert pool._idle[0].setups == [setup_key([v], WORKER_LIMITS) for v in views[1:]]
    assert database_of(pool, [views[0]]) != first  # the least recently used was closed
    # with four databases kept (their threads and address space), a query needing memory runs
    big = "SELECT count(*) AS c FROM (SELECT DISTINCT i FROM range(4000000) t(i))"
    assert pool.run(big, {}, [views[4]]).to_pylist() == [{"c": 4_000_000}]


def test_a_changed_file_is_read_through_a_new_database(pool, tmp_path):
    """The setup holds the files' version: a file rewritten between two queries is a new
    setup, so the second query reads the new rows, never a database made for the old ones."""
    path = tmp_path / "flights.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "secret": ["a", "b", "c"]}), path)
    ds = make(str(path), "n < 100")
    plans = {ds.id: run._plan(ds, None)}
    table, _ = run._run(pool, "SELECT sum(n) AS s FROM flights", plans, b"k" * 32,
                        run.Stopwatch())
    assert table.to_pylist() == [{"s": 6}]
    pq.write_table(pa.table({"n": [10, 20, 30, 40], "secret": ["a", "b", "c", "d"]}), path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    plans = {ds.id: run._plan(ds, None)}
    table, _ = run._run(pool, "SELECT sum(n) AS s FROM flights", plans, b"k" * 32,
                        run.Stopwatch())
    assert table.to_pylist() == [{"s": 100}]


def _ask(pool: WorkerPool, ds: Dataset, sql: str) -> tuple[list[dict], str]:
    """The answer at run level (query/run.py) and the setup its worker used last."""
    from jupyterhub_dataaccess.query.check import check_sql

    checked = check_sql(sql, {ds.id})
    plans = {ds.id: run._plan(ds, checked.columns[ds.id])}
    table, _ = run._run(pool, checked.sql, plans, b"k" * 32, run.Stopwatch())
    return table.to_pylist(), pool._idle[0].setups[-1]


def test_questions_naming_other_columns_of_a_dataset_share_its_database(pool, data):
    ds = make(str(data / "flights.parquet"))
    sums, first = _ask(pool, ds, "SELECT sum(n) AS s FROM flights")
    counts, second = _ask(pool, ds, "SELECT count(DISTINCT secret) AS c FROM flights")
    assert (sums, counts) == ([{"s": 10}], [{"c": 5}])
    assert first == second != setup_key([], WORKER_LIMITS)  # one view of every column


def test_a_column_duckdb_cannot_read_as_arrow_does_keeps_only_the_questions_columns(
        pool, tmp_path):
    """A decimal column keeps the whole dataset off DuckDB's reader only when it is asked."""
    from decimal import Decimal

    path = tmp_path / "flights.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "secret": ["a", "b", "c"],
                             "price": pa.array([Decimal("1.50")] * 3, pa.decimal128(5, 2))}),
                   path)
    ds = make(str(path), "n < 100")
    rows, setup = _ask(pool, ds, "SELECT sum(n) AS s FROM flights")
    assert rows == [{"s": 6}] and setup != setup_key([], WORKER_LIMITS)  # a view
    rows, setup = _ask(pool, ds, "SELECT sum(price) AS p FROM flights")
    assert rows == [{"p": Decimal("4.50")}] and setup == setup_key([], WORKER_LIMITS)  # Arrow


# -- one layer down: a database kept although nothing was in doubt ----------------------------

CONNECTION_LOCAL = [
    ("CREATE TEMP TABLE leak AS SELECT 42 AS n", "SELECT * FROM leak"),
    ("CREATE TEMP VIEW leak AS SELECT 42 AS n", "SELECT * FROM leak"),
    ("CREATE TEMP MACRO avg(x) AS 42", "SELECT avg(n) AS a FROM flights"),
    ("SET VARIABLE leak = 42", "SELECT getvariable('leak') AS v"),
    ("PREPARE leak AS SELECT 42 AS n", "EXECUTE leak"),
    ("SET search_path = 'temp'", "SELECT current_setting('search_path') AS s"),
]
REFUSED_BY_THE_DATABASE = [
    "CREATE MACRO avg(x) AS 42", "CREATE TABLE leak AS SELECT 1", "DROP VIEW flights",
    "CREATE OR REPLACE VIEW flights AS SELECT 42 AS n", "ATTACH ':memory:' AS leak",
    "CREATE SCHEMA leak", "SET lock_configuration = false", "SET enable_external_access = true",
]


@pytest.fixture
def setups(data):
    root = tempfile.mkdtemp()
    kept = _Setups(root)
    yield kept, view_of(make(str(data / "flights.parquet")))
    kept.clear()
    os.rmdir(root)


def _on_a_connection(db: object, sql: str) -> object:
    import duckdb

    con = db.cursor()
    try:
        return con.execute(sql).fetchall()
    except duckdb.Error as e:
        return type(e).__name__
    finally:
        con.close()


@pytest.mark.parametrize("leave,probe", CONNECTION_LOCAL)
def test_what_a_connection_makes_goes_with_it_even_when_its_database_is_kept(
        setups, leave, probe):
    """Without the worker's doubt (a statement that is not one SELECT drops the database),
    the kept database still shows a new connection nothing of an earlier one."""
    kept, view = setups
    key = setup_key([view], WORKER_LIMITS)
    db = kept.take(key, WORKER_LIMITS, [view])
    before = _on_a_connection(db, probe)
    assert not isinstance(_on_a_connection(db, leave), str)  # it ran
    kept.settle(key, doubt=False)
    assert kept.keys() == [key]  # kept: its catalogue is what the setup left
    assert kept.take(key, WORKER_LIMITS, [view]) is db
    assert _on_a_connection(db, probe) == before


@pytest.mark.parametrize("sql", REFUSED_BY_THE_DATABASE)
def test_the_kept_database_refuses_every_change_to_its_catalogue_and_settings(setups, sql):
    kept, view = setups
    key = setup_key([view], WORKER_LIMITS)
    db = kept.take(key, WORKER_LIMITS, [view])
    assert isinstance(_on_a_connection(db, sql), str)  # an error
    kept.settle(key, doubt=False)
    assert kept.keys() == [key]
    assert _on_a_connection(db, "SELECT count(*) FROM flights") == [(5,)]


def test_a_database_whose_catalogue_changed_is_dropped(setups):
    kept, view = setups
    key = setup_key([view], WORKER_LIMITS)
    kept.take(key, WORKER_LIMITS, [view])
    db, temp, _ = kept._dbs[key]
    kept._dbs[key] = (db, temp, "what the setup left")  # as if a database had been attached
    kept.settle(key, doubt=False)
    assert kept.keys() == [] and not os.path.exists(temp)
