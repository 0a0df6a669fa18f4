"""SQL in the service (POST /query, da.sql), defended in depth (SECURITY-CASES 51).

Layer 1, the check (query/check.py): one SELECT, tables resolved by scope to dataset ids, no
table functions, functions from an allow-list, SQL regenerated from the tree. Layer 2, the engine
(query/worker.py): a worker process with no credentials, external access off, no extensions,
configuration locked, bounded in time, memory and answer size. Layer 3, the data: the worker only
ever holds governed relations (row filter, then masks). Each layer is tested on its own.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
from hubutil import Hub
from secutil import audit, fresh_request, grant_of

from jupyterhub_dataaccess.query.check import QueryError, check_sql
from jupyterhub_dataaccess.query.worker import Limits, QueryFailed, WorkerPool, landlock_abi
from jupyterhub_dataaccess.service.app import DataAccessService

IDS = frozenset({"flights", "nyc-taxi", "x.csv", "penguins"})

ESCAPES = [
    ("select * from read_csv('/etc/passwd')", "read_csv"),
    ("select * from read_parquet('/srv/data/*.parquet')", "read_parquet"),
    ("select * from '/etc/passwd'", "unknown table '/etc/passwd'"),
    ("select * from 'data/*.csv'", "unknown table 'data/*.csv'"),
    ('select * from "/srv/data/penguins.csv"', "unknown table"),
    ("select * from glob('/srv/*')", "glob"),
    ("select getenv('S3_SECRET') from flights", "getenv"),
    ("select current_setting('s3_secret_access_key') from flights", "current_setting"),
    ("select * from duckdb_settings()", "duckdb_settings"),
    ("select * from duckdb_secrets()", "duckdb_secrets"),
    ("select * from duckdb_extensions()", "duckdb_extensions"),
    ("install httpfs", "INSTALL"),
    ("load httpfs", "LOAD"),
    ("attach 'other.db' as o", "ATTACH"),
    ("copy flights to '/tmp/out.csv'", "COPY"),
    ("pragma database_list", "PRAGMA"),
    ("set enable_external_access = true", "SET"),
    ("select 1 from flights; select * from read_csv('/etc/passwd')", "exactly one statement"),
    ("create table t as select * from flights", "CREATE"),
    ("select * from flights where month in (select * from read_csv('/etc/passwd'))", "read_csv"),
    ("select (select getenv('HOME')) from flights", "getenv"),
    ("with x as (select * from read_text('/etc/passwd')) select * from x", "read_text"),
    ("select * from main.flights", "without a schema"),
    ("select * from other_db.main.flights", "without a schema"),
    ("select * into t2 from flights", "only a SELECT"),
    ("select * from flights, range(1000000000)", "generate_series"),
    ("select * from sqlite_scan('x.db', 't')", "sqlite_scan"),
    ("select load_extension('x') from flights", "load_extension"),
    ("with recursive r as (select 1 union all select 1 from r) select * from r, flights",
     "RECURSIVE"),
    ("select * from system.information_schema.tables", "without a schema"),
    # with DuckDB's own Parquet reader allowed a dataset's files (query/native.py)
    ("with v as (select * from read_parquet('/srv/data/flights.parquet')) select * from v",
     "read_parquet"),
    ("select * from flights, (select * from parquet_scan('/srv/data/other.parquet'))",
     "parquet_scan"),
    ("select * from '/srv/data/flights.parquet'", "unknown table '/srv/data/flights.parquet'"),
    ("select * from flights.parquet", "without a schema"),
    ("select * from query_table('flights')", "query_table"),
    ("select * from flights where exists (select * from read_blob('/srv/data/f.parquet'))",
     "read_blob"),
    ("select _dataaccess_hash_0123456789abcdef('guess') from flights",
     "_dataaccess_hash_0123456789abcdef"),
]


@pytest.mark.parametrize("sql, says", ESCAPES)
def test_case51_an_escape_attempt_is_refused_by_the_check_naming_what_is_not_allowed(sql, says):
    with pytest.raises(QueryError, match=None) as e:
        check_sql(sql, IDS)
    assert says.lower() in str(e.value).lower(), str(e.value)


def test_what_runs_is_regenerated_from_the_tree_and_ctes_shadow_by_scope():
    c = check_sql("select carrier, avg(dep_delay) d, count(*) from flights where month = 3 "
                  "group by carrier -- a comment\n", IDS)
    assert c.sql == ("SELECT carrier, AVG(dep_delay) AS d, COUNT(*) FROM flights "
                     "WHERE month = 3 GROUP BY carrier")
    assert c.datasets == ["flights"] and c.columns == {"flights": {"carrier", "dep_delay",
                                                                   "month"}}
    assert check_sql('select * from "nyc-taxi" join flights using (id)', IDS).datasets == [
        "nyc-taxi", "flights"]
    # a CTE named like a dataset shadows it; one defined later or inside itself does not
    with pytest.raises(QueryError, match="reads no dataset"):
        check_sql("with flights as (select 1 as a) select * from flights", IDS)
    assert check_sql("with a as (select * from flights) select * from a", IDS).datasets == [
        "flights"]
    with pytest.raises(QueryError, match="unknown table 'b'"):
        check_sql("with a as (select * from b), b as (select 1) select * from a, flights", IDS)
    # a quoted path that happens to be a dataset id is that dataset's view, nothing else
    assert check_sql("select * from 'x.csv'", IDS).sql == 'SELECT * FROM "x.csv"'


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, Limits(timeout_seconds=6, memory_mb=256, max_rows=1000, max_bytes=1 << 20),
                   per_user=1)
    for _ in range(2):  # both workers started (importing DuckDB takes a moment)
        p.run("SELECT 1", {})
    yield p
    p.close()


TABLE = pa.table({"n": list(range(20_000)), "g": ["a", "b"] * 10_000})


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT getenv('HOME')",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "ATTACH '/tmp/x.db' AS x",
    "COPY t TO '/tmp/leak.csv'",
    "SELECT * FROM duckdb_secrets()",
])
def test_case51_the_engine_refuses_files_settings_and_extensions_even_without_the_check(
        pool, sql):
    """Layer 2 alone: SQL that got past the check still reaches nothing outside its tables."""
    with pytest.raises(QueryFailed) as e:
        pool.run(sql, {"t": TABLE})
    assert e.value.kind in ("bind", "runtime")


@pytest.fixture(scope="module")
def parquet_view(tmp_path_factory: pytest.TempPathFactory):
    """A dataset's view over its one Parquet file (query/native.py), and a file beside it."""
    import pyarrow.parquet as pq

    from jupyterhub_dataaccess.catalog import Dataset, Source
    from jupyterhub_dataaccess.query.native import native_view
    from jupyterhub_dataaccess.sources.filters import parse_filter
    from jupyterhub_dataaccess.sources.plan import plan_read

    d = tmp_path_factory.mktemp("allowed")
    pq.write_table(pa.table({"n": list(range(10)), "secret": [f"s{i}" for i in range(10)]}),
                   d / "flights.parquet")
    pq.write_table(pa.table({"other": ["not yours"]}), d / "other.parquet")
    ds = Dataset(id="flights", title="f", source=Source(kind="file", uri=str(d / "flights.parquet"),
                                                        format="parquet"),
                 masks={"secret": "hash"}, row_filter=parse_filter("n < 5"))
    view = native_view(ds, plan_read(ds), b"k" * 32)
    assert view is not None and view.files == [str(d / "flights.parquet")]
    return view.to_json(), d


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_parquet('{d}/other.parquet')",
    "SELECT * FROM '{d}/other.parquet'",
    "SELECT * FROM read_parquet('{d}/*.parquet')",
    "SELECT * FROM read_parquet(['{d}/flights.parquet', '{d}/other.parquet'])",
    "SELECT * FROM glob('{d}/*')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "WITH v AS (SELECT * FROM read_parquet('{d}/other.parquet')) SELECT * FROM v",
    "SELECT * FROM flights, read_text('{d}/other.parquet')",
    "SET allowed_paths = ['{d}/other.parquet']",
    "SET allowed_directories = ['{d}']",
    "SET enable_external_access = true",
    "CREATE OR REPLACE VIEW flights AS SELECT * FROM read_parquet('{d}/other.parquet')",
    "ATTACH '{d}/other.duckdb' AS o",
    "COPY (SELECT * FROM flights) TO '{d}/leak.parquet'",
    # the one path DuckDB may open: it reads it, and cannot overwrite it (Landlock)
    "COPY (SELECT 1 AS n) TO '{d}/flights.parquet' (FORMAT parquet, USE_TMP_FILE false)",
])
def test_case51_the_engine_opens_no_file_but_the_views_own_even_without_the_check(
        pool, parquet_view, sql):
    """Layer 2 alone, with DuckDB allowed exactly the files of the datasets queried: no other
    file, glob, setting or view swap is reachable, the allowed file is never written, and the
    view still answers governed."""
    view, d = parquet_view
    with pytest.raises(QueryFailed) as e:
        pool.run(sql.format(d=d), {}, [view])
    assert e.value.kind in ("bind", "runtime"), e.value
    assert "not yours" not in e.value.message
    assert not (d / "leak.parquet").exists() and not (d / "other.duckdb").exists()
    rows = pool.run("SELECT n, secret FROM flights ORDER BY n", {}, [view]).to_pylist()
    assert [r["n"] for r in rows] == [0, 1, 2, 3, 4]  # the row filter
    assert all(len(r["secret"]) == 32 and not r["secret"].startswith("s") for r in rows)


def test_a_query_answers_within_bounds_and_runtime_errors_say_nothing_of_the_data(pool):
    out = pool.run("SELECT g, count(*) AS c, sum(n) AS s FROM t GROUP BY g ORDER BY g",
                   {"t": TABLE})
    assert out.to_pylist() == [{"g": "a", "c": 10_000, "s": sum(range(0, 20_000, 2))},
                               {"g": "b", "c": 10_000, "s": sum(range(1, 20_000, 2))}]
    with pytest.raises(QueryFailed) as e:
        pool.run("SELECT * FROM t", {"t": TABLE})
    assert (e.value.kind, e.value.message) == ("limit", "more than 1000 rows")
    with pytest.raises(QueryFailed) as e:
        pool.run("SELECT CAST(g AS INTEGER) FROM t", {"t": TABLE})
    assert e.value.kind == "runtime" and "'a'" not in e.value.message


def test_case51_a_runaway_join_stops_at_its_bound_while_other_queries_answer(pool):
    """When a triple self-join runs away, Then it is killed at the timeout with a clean error,
    a query on the other worker answers meanwhile, and the pool goes on."""
    big = pa.table({"n": list(range(200_000))})
    failed: list[QueryFailed] = []

    def runaway() -> None:
        try:
            pool.run("SELECT count(*) FROM t a, t b, t c WHERE a.n + b.n + c.n = -1", {"t": big})
        except QueryFailed as e:
            failed.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(0.5)
    assert pool.run("SELECT count(*) AS c FROM t", {"t": TABLE}).to_pylist() == [{"c": 20_000}]
    assert thread.is_alive() and not failed  # answered while the runaway still ran
    thread.join(30)
    assert [(e.kind, e.message) for e in failed] == [("limit", "time")]
    assert time.monotonic() - started < 15
    assert pool.run("SELECT 1 AS one", {}).to_pylist() == [{"one": 1}]


# -- on the hub ------------------------------------------------------------------------------


def _query(hub: Hub, sql: str, user: str = "analyst", fmt: str = "arrow"):
    return hub.call(user, "POST", "/query", json={"sql": sql, "format": fmt})


def _grant_masked(hub: Hub) -> None:
    req = fresh_request(hub, "analyst", "penguins-masked")
    r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={"comment": "ok"})
    assert r.status_code == 200, r.text


def test_query_answers_over_governed_relations_and_is_audited_once(hub):
    _grant_masked(hub)
    r = _query(hub, "select species, count(*) as n, count(distinct sex) as sexes, "
                    "min(body_mass_g) as m from \"penguins-masked\" group by species "
                    "order by species")
    assert r.status_code == 200, r.text
    rows = pa.ipc.open_stream(r.content).read_all().to_pylist()
    assert [x["species"] for x in rows] == ["Adelie", "Gentoo"]  # the row filter applied first
    assert all(x["sexes"] == 1 for x in rows)  # one value: REDACTED
    assert all(isinstance(x["m"], str) and len(x["m"]) == 32 for x in rows)  # hashed
    # a predicate on a masked column compares masked values: raw ones never match
    r = _query(hub, "select count(*) as c from \"penguins-masked\" where sex = 'male' "
                    "or body_mass_g = '3750' or cast(year as varchar) = '2007'")
    assert r.status_code == 200, r.text
    assert pa.ipc.open_stream(r.content).read_all().to_pylist() == [{"c": 0}]
    assert "engine.execute;dur=" in r.headers["Server-Timing"]  # where the time went
    (record,) = audit(hub, action="data.query", user="analyst", limit=1)[:1]
    assert record["dataset"] == "penguins-masked"
    assert record["detail"]["datasets"] == ["penguins-masked"] and record["detail"]["rows"] == 1
    assert record["detail"]["sql"].startswith("SELECT COUNT(*) AS c FROM \"penguins-masked\"")
    assert record["detail"]["versions"]["penguins-masked"]


def test_a_join_needs_a_grant_on_each_dataset_and_the_403_names_the_missing_one(hub):
    grant_of(hub, "analyst", "penguins")
    r = _query(hub, "select count(*) from penguins p join forbidden f on true")
    assert r.status_code == 403, r.text
    body = r.json()
    assert "'forbidden'" in body["message"] and "da.request('forbidden'" in body["message"]
    assert audit(hub, action="access.denied", dataset="forbidden", limit=1)[0]["detail"][
        "attempted"] == "data.query"


@pytest.mark.parametrize("sql, status, says", [
    ("select * from read_csv('/etc/passwd')", 400, "read_csv"),
    ("select * from penguins; select 1", 400, "exactly one statement"),
    ("select nope from penguins", 400, "nope"),
    ("select cast(species as integer) from penguins", 400, "not shown"),
    ("select * from penguins a, penguins b, penguins c", 400, "more than"),
    ("select * from no_such_dataset", 400, "unknown table"),
])
@pytest.mark.once  # the SQL checker, not the database
def test_case51_bad_sql_over_http_is_a_clean_json_400(hub, sql, status, says):
    grant_of(hub, "analyst", "penguins")
    r = _query(hub, sql)
    assert r.status_code == status, r.text
    assert r.json()["status"] == status and says in r.json()["message"], r.json()
    assert "Adelie" not in r.text and "Traceback" not in r.text


@pytest.mark.once  # the SQL engine in a kernel, not the database
def test_da_sql_in_a_real_kernel(hub, analyst_kernel):
    grant_of(hub, "analyst", "penguins")
    out = analyst_kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "df = da.sql(\"select species, count(*) as n from penguins group by 1 order by 1\")\n"
        "print(df.to_dict('records'))\n"
        "print(sorted(df.attrs['dataaccess']['datasets']))\n"
        "try:\n    da.sql('select * from forbidden')\n"
        "except da.AccessDenied as e:\n    print('DENIED', e.status, 'da.request' in str(e))\n")
    assert out["error"] is None, out
    lines = out["stdout"].splitlines()
    assert lines[0].startswith("[{'species': 'Adelie', 'n': ")
    assert lines[1] == "['penguins']"
    assert lines[2] == "DENIED 403 True"


def test_the_write_restriction_leaves_no_ruleset_descriptor_open(tmp_path):
    """write_only_under (Landlock) is in force on this machine's kernel, and the worker keeps no
    file descriptor of the ruleset once it applies (a handle the SQL engine never needs)."""
    code = ("import os, sys\nfrom jupyterhub_dataaccess.query.worker import write_only_under\n"
            f"ok = write_only_under({str(tmp_path)!r})\n"
            "links = [os.readlink(f'/proc/self/fd/{n}') for n in os.listdir('/proc/self/fd')\n"
            "         if os.path.exists(f'/proc/self/fd/{n}')]\n"
            "print(ok, [x for x in links if 'landlock' in x])\n")
    import subprocess
    import sys

    from hubutil import REPO

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.stdout.strip() == "True []", (out.stdout, out.stderr[-2000:])


@pytest.mark.once  # no database behaviour
def test_per_stage_timings_are_sent_only_when_an_operator_turns_them_on(hub):
    # the session hub turns query_timings on (the test above reads Server-Timing); by default
    # a caller sees only the whole round trip (docs/security.md: the timing side channel)
    assert DataAccessService().query_timings is False
    _grant_masked(hub)
    r = _query(hub, "select count(*) as c from \"penguins-masked\"")
    assert r.status_code == 200 and "engine.execute;dur=" in r.headers["Server-Timing"]


@pytest.mark.once  # no database behaviour
def test_the_service_says_at_start_whether_query_workers_writes_are_confined(hub):
    with open(hub.log_path) as f:
        log = f.read()
    if landlock_abi():
        assert "Query workers may write only under their temporary directory" in log
    else:
        assert "This kernel has no Landlock" in log
