"""The two ways a dataset reaches a query give equal answers (query/native.py, query/run.py).

A local Parquet dataset is a view over DuckDB's own reader of its files, with the row filter as
SQL and masks as expressions; every other source is governed by the service (sources/plan.py)
and shipped to the worker as Arrow. Here the same queries run over the same datasets both ways
(each Parquet dataset forced through the Arrow path too) and must give the same table: values,
types, nulls, dates, hashed and redacted values, row filters.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.query import run
from jupyterhub_dataaccess.query.check import check_sql
from jupyterhub_dataaccess.query.native import filter_sql, native_view
from jupyterhub_dataaccess.query.worker import Limits, QueryFailed, WorkerPool
from jupyterhub_dataaccess.sources.filters import bind, parse_filter
from jupyterhub_dataaccess.sources.masks import mask_key

KEY = b"n" * 32
N = 300
ROWS = {
    "id": pa.array(range(N), pa.int64()),
    "month": pa.array([1 + i * 12 // N for i in range(N)], pa.int8()),
    "carrier": [None if i % 13 == 0 else ["UA", "AA", "O'Hare", "Ünï", "WN"][i % 5]
                for i in range(N)],
    "delay": [None if i % 7 == 0 else float(i % 50 - 10) / 3 for i in range(N)],
    "day": pa.array([None if i % 17 == 0 else dt.date(2024, 1, 1) + dt.timedelta(days=i)
                     for i in range(N)], pa.date32()),
    "at": pa.array([dt.datetime(2024, 1, 1, 6) + dt.timedelta(hours=7 * i) for i in range(N)],
                   pa.timestamp("us")),
    "cancelled": [None if i % 19 == 0 else i % 9 == 0 for i in range(N)],
    "seats": pa.array([i % 200 for i in range(N)], pa.int32()),
}
VARIANTS = {
    "plain": {},
    "masked": {"masks": {"carrier": "hash", "id": "hash-v1", "seats": "null",
                         "day": "redact", "at": "hash"}},
    "filtered": {"row_filter": "carrier not in ('WN', null) and day >= '2024-03-01'"},
    "both": {"masks": {"carrier": "hash", "delay": "redact", "month": "null"},
             "row_filter": "not (month == 3) or at < '2024-02-10 12:00:00' or cancelled is null"},
    "in-null": {"masks": {"at": "hash"}, "row_filter": "carrier in ('UA', null)"},
}
QUERIES = [
    "select * from {t}",
    "select carrier, count(*) as n, round(avg(delay), 6) as d, min(day) as first, max(at) as last "
    "from {t} group by carrier",
    "select month, sum(seats) as s, count(distinct carrier) as c from {t} where month > 2 "
    "group by month",
    "select id, carrier from {t} where carrier = 'UA' or carrier is null",
    "select count(*) as n from {t} where cast(day as varchar) = 'REDACTED' or cancelled",
    "select a.carrier, count(*) as n from {t} a join {t} b on a.carrier = b.carrier "
    "and a.day = b.day group by a.carrier",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("native")
    table = pa.table(ROWS)
    pq.write_table(table, d / "f.parquet", row_group_size=N // 6)
    parts = d / "parts"
    (parts / "year=2024").mkdir(parents=True)  # hive-looking: no partition column either way
    pq.write_table(table.slice(0, 100), parts / "year=2024" / "a.parquet")
    pq.write_table(table.slice(100), parts / "b.parquet")
    return {"file": str(d / "f.parquet"), "directory": str(parts)}


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(1, Limits(timeout_seconds=20, memory_mb=256, max_rows=10_000,
                             max_bytes=16 << 20))
    yield p
    p.close()


def make(path: str, masks: dict | None = None, row_filter: str | None = None) -> Dataset:
    return Dataset(id="flights", title="flights", source=Source(kind="file", uri=path,
                                                                format="parquet"),
                   masks=masks or {}, row_filter=parse_filter(row_filter) if row_filter else None)


def both_ways(pool: WorkerPool, ds: Dataset, sql: str) -> tuple[object, object]:
    """The answer (a table, or the error's kind and message) over the view and over Arrow."""
    checked = check_sql(sql, {ds.id})
    plan, names = run._plan(ds, checked.columns[ds.id])
    view = native_view(ds, plan, mask_key(KEY, ds.id), names)
    assert view is not None, "the Parquet dataset goes to DuckDB's own reader"

    def answer(*args: object) -> object:
        try:
            return pool.run(checked.sql, *args)
        except QueryFailed as e:
            return (e.kind, e.message)

    return answer({}, [view.to_json()]), answer({ds.id: run._governed(plan, names, KEY)})


def _sorted(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=repr)


@pytest.mark.parametrize("where", ["file", "directory"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_query_gives_the_same_table_over_the_view_and_over_shipped_arrow(
        pool, files, where, variant):
    ds = make(files[where], **VARIANTS[variant])
    for q in QUERIES:
        native, shipped = both_ways(pool, ds, q.format(t="flights"))
        if isinstance(native, tuple):  # e.g. avg() of a redacted column: the same error
            assert native == shipped and native[0] == "bind", q
            continue
        assert native.schema == shipped.schema, q
        assert _sorted(native) == _sorted(shipped), q
        if q == QUERIES[0]:
            assert native.num_rows > 50


def test_masked_values_over_the_view_are_the_services_masks(pool, files):
    """Hashes are the per-dataset keyed hashes (a raw value never matches), redacted values the
    constant, nulled columns typed nulls, the row filter applied before any of it."""
    ds = make(files["file"], **VARIANTS["both"])
    native, _ = both_ways(pool, ds, "select carrier, delay, month from flights where "
                                    "carrier = 'UA' or delay = '3.0' or month = 3")
    assert native.num_rows == 0
    native, _ = both_ways(pool, ds, "select carrier, delay, month from flights limit 5")
    assert native.schema.field("month").type == pa.int8()
    rows = native.to_pylist()
    assert all(r["delay"] == "REDACTED" and r["month"] is None for r in rows)
    assert all(r["carrier"] is None or len(r["carrier"]) == 32 for r in rows)


def test_what_cannot_be_mapped_exactly_keeps_the_arrow_path(files):
    types = pa.table(ROWS).schema
    f = bind(parse_filter("delay > 1"), types)
    assert filter_sql(f, {n.name: n.type for n in types}) is None  # NaN orders differently
    assert filter_sql(bind(parse_filter("carrier == 'it''s'"), types),
                      {n.name: n.type for n in types}) == "(\"carrier\" = 'it''s')"
    csv = Dataset(id="flights", title="f", source=Source(kind="file", uri=files["file"],
                                                         format="csv"))
    ds = make(files["file"], row_filter="delay > 1")
    for d in (ds,):
        assert native_view(d, run._plan(d, None)[0], KEY) is None
    assert csv.source.format == "csv"  # (a CSV never reaches native_view's Parquet branch)


def test_a_column_duckdb_reads_otherwise_is_a_mismatch_and_the_query_falls_back(
        pool, tmp_path):
    """A file whose column DuckDB would read as another type than the Arrow path: the worker
    refuses the view and the query is answered over shipped Arrow."""
    path = tmp_path / "ms.parquet"
    pq.write_table(pa.table({"n": pa.array([1, 2], pa.int64())}), path)
    ds = make(str(path))
    view = native_view(ds, run._plan(ds, None)[0], KEY).to_json()
    view["types"] = {"n": "INTEGER"}  # what a reading by another type looks like to the worker
    with pytest.raises(QueryFailed) as e:
        pool.run("select * from flights", {}, [view])
    assert (e.value.kind, e.value.message) == ("mismatch", "flights")


@pytest.mark.parametrize("sql, fails", [
    # fails only on the rows the row filter drops (carrier 'WN'), wherever DuckDB evaluates it
    ("select count(*) as n from flights where case when carrier = 'WN' "
     "then cast(carrier || 'x' as integer) else 0 end = 0", False),
    # fails on rows the caller may see: a runtime error both ways, its text never shown
    ("select count(*) as n from flights where cast(carrier || 'x' as integer) = 0", True),
])
def test_a_runtime_failure_over_a_filtered_view_answers_as_the_arrow_path_does(
        pool, files, sql, fails):
    """Whether a query fails must not tell of rows the row filter drops: over a view with a row
    filter, a runtime failure is answered by the Arrow path, where those rows are absent."""
    ds = make(files["file"], row_filter="carrier != 'WN' or carrier is null")
    checked = check_sql(sql, {ds.id})
    plans = {ds.id: run._plan(ds, checked.columns[ds.id])}
    if fails:
        with pytest.raises(QueryFailed) as e:
            run._run(pool, checked.sql, plans, KEY, run.Stopwatch())
        assert e.value.kind == "runtime" and "WN" not in e.value.message
        return
    table, _ = run._run(pool, checked.sql, plans, KEY, run.Stopwatch())
    expected = sum(1 for c in pa.table(ROWS)["carrier"].to_pylist() if c != "WN")
    assert table.to_pylist() == [{"n": expected}]


def test_a_view_the_worker_refuses_is_answered_over_arrow_and_remembered(
        pool, tmp_path, monkeypatch):
    """When the service expects another type than DuckDB reads (here: told int64 is INTEGER),
    the query is answered over shipped Arrow, and that version of the dataset keeps that path."""
    from jupyterhub_dataaccess.query import native

    path = tmp_path / "fallback.parquet"
    pq.write_table(pa.table({"n": pa.array([1, 2, 3], pa.int64())}), path)
    ds = make(str(path))
    monkeypatch.setitem(native.DUCK_TYPES, pa.int64(), "INTEGER")
    plans = {ds.id: run._plan(ds, None)}
    table, _ = run._run(pool, "SELECT sum(n) AS s FROM flights", plans, KEY, run.Stopwatch())
    assert table.to_pylist() == [{"s": 6}]
    assert (ds.id, plans[ds.id][0].version) in run._arrow_only
    run._arrow_only.discard((ds.id, plans[ds.id][0].version))


@pytest.mark.parametrize("names", [("a*.parquet", "ab.parquet"), ("c[1].parquet", "c1.parquet")])
def test_a_file_name_duckdb_would_read_as_a_pattern_keeps_the_arrow_path(pool, tmp_path, names):
    """DuckDB's read_parquet expands a name holding * ? [ as a glob: 'a*.parquet' would read
    'ab.parquet' a second time, 'c[1].parquet' would read 'c1.parquet' instead. Such a dataset
    is answered over the Arrow path, with each file's rows once."""
    for i, name in enumerate(names):
        pq.write_table(pa.table({"n": pa.array([10 * i + 1, 10 * i + 2], pa.int64())}),
                       tmp_path / name)
    for ds in (make(str(tmp_path)), make(str(tmp_path / names[0]))):
        plans = {ds.id: run._plan(ds, None)}
        assert native_view(ds, plans[ds.id][0], KEY) is None
        table, _ = run._run(pool, "SELECT n FROM flights ORDER BY n", plans, KEY,
                            run.Stopwatch())
        whole = ds.source.uri == str(tmp_path)
        assert table.column("n").to_pylist() == ([1, 2, 11, 12] if whole else [1, 2])


def test_a_views_text_never_shows_its_hashing_key(files):
    """A View's repr (a log line, a traceback's locals, an assertion's text) leaves the
    dataset's hashing key out; only to_json(), sent to the worker, holds it."""
    ds = make(files["file"], **VARIANTS["masked"])
    view = native_view(ds, run._plan(ds, None)[0], mask_key(KEY, ds.id))
    assert view.key == mask_key(KEY, ds.id).hex() and view.to_json()["key"] == view.key
    assert view.key not in repr(view) and view.key not in str(view)


def test_a_view_that_cannot_be_defined_falls_back_and_never_shows_the_engines_text(
        pool, tmp_path, monkeypatch):
    """A view DuckDB cannot define (here its file no longer has the planned column, as after a
    change between plan and query) is a 'setup' failure naming no column, file or engine text,
    and the query is answered over the Arrow path."""
    good, changed = tmp_path / "good.parquet", tmp_path / "changed.parquet"
    pq.write_table(pa.table({"n": pa.array([1, 2, 3], pa.int64())}), good)
    pq.write_table(pa.table({"other": pa.array([7], pa.int64())}), changed)
    ds = make(str(good))
    view = native_view(ds, run._plan(ds, None)[0], KEY).to_json()
    view["files"] = [str(changed)]
    with pytest.raises(QueryFailed) as e:
        pool.run("select * from flights", {}, [view])
    assert e.value.kind == "setup" and e.value.message.isidentifier()  # the error's type only

    def moved(*args: object, **kwargs: object) -> object:
        from dataclasses import replace
        v = native_view(*args, **kwargs)
        return replace(v, files=[str(changed)]) if v is not None else None

    monkeypatch.setattr(run, "native_view", moved)
    plans = {ds.id: run._plan(ds, None)}
    table, _ = run._run(pool, "SELECT sum(n) AS s FROM flights", plans, KEY, run.Stopwatch())
    assert table.to_pylist() == [{"s": 6}]
