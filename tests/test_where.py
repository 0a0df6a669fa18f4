"""`where` and `limit` on governed reads (sources/plan.py): pushed down where safe, the same rows
either way, on every source kind (CSV, Parquet, JSON lines, SQLite table and query, PostgreSQL).

The reference for each `where` is the governed dataset read whole, then filtered in Arrow on its
governed (masked) values: what the fixed order "row filter, masks, then where" means. A read with
`where` must give exactly those rows, whatever the reader pushed down to its source.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources import readers
from jupyterhub_dataaccess.sources.filters import FilterError, bind, parse_filter
from jupyterhub_dataaccess.sources.masks import REDACTED, mask_array, mask_key
from jupyterhub_dataaccess.sources.plan import execute, governed_batches, plan_read
from jupyterhub_dataaccess.sources.readers import CatalogMismatch

KEY = b"w" * 32
N = 400
CARRIERS = ["UA", "AA", "DL", "WN", None]
ROWS = {
    "id": list(range(N)),
    "month": [1 + i * 12 // N for i in range(N)],  # in time order: row groups by month
    "carrier": [CARRIERS[i % 5] for i in range(N)],
    "delay": [None if i % 7 == 0 else float(i % 50 - 10) for i in range(N)],
    "tail": [f"N{i % 23:03d}" for i in range(N)],
    "region": [None if i % 11 == 0 else ["east", "west", "north"][i % 3] for i in range(N)],
    "cancelled": [i % 9 == 0 for i in range(N)],
}


def write_layout(directory: Path, table: pa.Table) -> dict[str, str]:
    """`table` of N rows as one Parquet file (row groups of N // 12 rows) and as a directory of
    two files (its halves, row groups of N // 10 and N // 7 rows): {"file": path, "dir": path}."""
    pq.write_table(table, directory / "f.parquet", row_group_size=N // 12)
    os.makedirs(directory / "dir")
    pq.write_table(table.slice(0, N // 2), directory / "dir" / "a.parquet",
                   row_group_size=N // 10)
    pq.write_table(table.slice(N // 2), directory / "dir" / "b.parquet", row_group_size=N // 7)
    return {"file": str(directory / "f.parquet"), "dir": str(directory / "dir")}


GOVERNED = {"masks": {"tail": "hash", "region": "redact"}, "row_filter": "carrier != 'WN'"}
WHERES = [
    "month == 3",
    "month == 3 and carrier in ('UA', 'AA')",
    "month >= 4 and month < 6 or delay > 30",
    "carrier not in ('UA', 'DL')",
    "carrier not in ('UA', null)",
    "carrier in ('AA', null)",
    "not (carrier == 'AA')",
    "delay is null",
    "delay is not null and delay <= 0",
    "delay == null",
    "not (delay != 5)",
    "carrier > 'B'",
    "cancelled == true and month > 6",
    "id < month",
    "region == 'REDACTED' and month == 2",
    "region != 'east'",
    "tail == 'N001'",
    "month == 99",
]
KINDS = ["csv", "parquet", "jsonl", "sql-table", "sql-query"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("where")
    table = pa.table(ROWS)
    pacsv.write_csv(table, d / "f.csv")
    pq.write_table(table, d / "f.parquet", row_group_size=N // 12)
    with open(d / "f.jsonl", "w") as f:
        import json

        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    with sqlite3.connect(d / "f.sqlite") as conn:
        conn.execute("create table flights (id integer, month integer, carrier text, delay real,"
                     " tail text, region text, cancelled boolean)")
        conn.executemany("insert into flights values (?, ?, ?, ?, ?, ?, ?)",
                         [tuple(r.values()) for r in table.to_pylist()])
    return {"csv": str(d / "f.csv"), "parquet": str(d / "f.parquet"),
            "jsonl": str(d / "f.jsonl"), "sql": f"sqlite:///{d / 'f.sqlite'}"}


def make(files: dict[str, str], kind: str, masks: dict | None = None,
         row_filter: str | None = None, url: str | None = None) -> Dataset:
    if kind == "sql-table":
        src = Source(kind="sql", url=url or files["sql"], table="flights")
    elif kind == "sql-query":
        src = Source(kind="sql", url=url or files["sql"], query="select * from flights")
    else:
        src = Source(kind="file", uri=files[kind], format=kind)
    return Dataset(id="flights", title="flights", source=src, masks=masks or {},
                   row_filter=parse_filter(row_filter) if row_filter else None)


def read(ds: Dataset, where: str | None = None, columns=None, limit=None) -> pa.Table:
    schema, batches = governed_batches(ds, KEY, columns, limit, where)
    return pa.Table.from_batches(list(batches), schema=schema)


def reference(ds: Dataset, where: str) -> list[dict]:
    """The governed rows filtered afterwards, in Arrow, on their masked values."""
    whole = read(ds)
    return whole.filter(bind(parse_filter(where), whole.schema).to_arrow()).to_pylist()


def _normal(rows: list[dict]) -> list[dict]:  # SQLite gives booleans back as 0/1
    return [{k: bool(v) if k == "cancelled" and v is not None else v for k, v in r.items()}
            for r in rows]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("governed", [False, True], ids=["plain", "governed"])
def test_when_a_where_is_pushed_down_then_the_rows_equal_filtering_the_governed_rows_after(
        files, kind, governed):
    ds = make(files, kind, **(GOVERNED if governed else {}))
    for where in WHERES:
        if not governed and where.startswith("region == 'REDACTED'"):
            continue
        got = _normal(read(ds, where).to_pylist())
        assert got == _normal(reference(ds, where)), (kind, where)


def test_when_every_source_kind_answers_the_same_where_then_they_agree(files):
    for where in WHERES:
        answers = {kind: _normal(read(make(files, kind, **GOVERNED), where).to_pylist())
                   for kind in KINDS}
        assert all(a == answers["parquet"] for a in answers.values()), where


def test_when_the_row_filter_excludes_rows_then_no_where_can_reach_them(files):
    ds = make(files, "parquet", **GOVERNED)
    assert read(ds, "carrier == 'WN'").num_rows == 0
    assert read(ds, "carrier == 'WN' or carrier is null").num_rows == 0  # nulls: filtered too
    assert read(make(files, "parquet"), "carrier == 'WN' or carrier is null").num_rows > 0


@pytest.mark.parametrize("kind", KINDS)
def test_when_a_where_names_a_masked_column_then_it_compares_masked_values_never_raw_ones(
        files, kind):
    ds = make(files, kind, **GOVERNED)
    assert read(ds, "tail == 'N001'").num_rows == 0  # the raw value never matches its hash
    assert read(ds, "region == 'east'").num_rows == 0
    assert read(ds, "region in ('east', 'west')").num_rows == 0
    hashed = mask_array(pa.array(["N001"]), "hash", mask_key(KEY, "flights"))[0].as_py()
    by_hash = read(ds, f"tail == '{hashed}'")
    assert by_hash.num_rows > 0 and set(by_hash.column("tail").to_pylist()) == {hashed}
    assert read(ds, "region == 'REDACTED'").num_rows == read(ds).num_rows


@pytest.mark.parametrize("where, says", [
    ("region == 3", "masked (redact)"),
    ("tail > 100", "masked (hash)"),
    ("tail in (1, 2)", "masked (hash)"),
    ("month == 'March'", "holds number"),
    ("carrier == 1", "holds text"),
    ("cancelled == 'yes'", "holds boolean"),
    ("id == month and carrier == delay", "cannot be compared"),
    ("salary > 1", "unknown column 'salary'"),
    ("month ==", "expected"),
    ("month == 3 and", "expected"),
    ("month = 3", "unexpected"),
])
def test_when_a_where_cannot_run_then_it_is_refused_before_any_read_naming_the_problem(
        files, where, says):
    with pytest.raises(FilterError, match=says.replace("(", r"\(").replace(")", r"\)")):
        plan_read(make(files, "parquet", **GOVERNED), where=where)


def test_when_a_column_is_null_masked_then_a_where_on_it_keeps_no_row(files):
    ds = make(files, "parquet", masks={"delay": "null"})
    assert read(ds, "delay > 0").num_rows == 0
    assert read(ds, "delay is null").num_rows == N


@pytest.mark.parametrize("kind", KINDS)
def test_when_columns_and_limit_are_given_then_the_where_still_sees_unprojected_columns(
        files, kind):
    ds = make(files, kind, **GOVERNED)
    t = read(ds, "month == 3 and region == 'REDACTED'", columns=["id", "delay"], limit=5)
    assert t.column_names == ["id", "delay"]
    full = reference(ds, "month == 3 and region == 'REDACTED'")
    assert t.column("id").to_pylist() == [r["id"] for r in full][:5]
    assert read(ds, "month == 3", limit=0).num_rows == 0


def test_when_parquet_is_read_with_a_where_then_only_row_groups_that_may_match_are_read(
        files, monkeypatch):
    seen: list[int] = []
    original = readers.FileReader._row_group

    def spy(f, meta, group, *args):
        seen.append(group)
        return original(f, meta, group, *args)

    monkeypatch.setattr(readers.FileReader, "_row_group", staticmethod(spy))
    ds = make(files, "parquet", **GOVERNED)
    assert read(ds, "month == 3").num_rows > 0
    assert seen and len(seen) <= 2  # row groups of about a month each
    seen.clear()
    read(ds, "tail == 'x'")  # on a masked column: evaluated after masking, every group read
    assert len(seen) == pq.ParquetFile(files["parquet"]).num_row_groups


def test_when_a_sql_source_is_read_with_a_where_then_the_database_filters_with_bound_values(
        files):
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    for kind in ("sql-table", "sql-query"):
        ds = make(files, kind, **GOVERNED)
        engine = readers.SQLReader(ds)._engine()

        event.listen(engine, "before_cursor_execute", capture)
        ran = []  # the last statement of each read (a table's reflection comes first)
        try:
            for where in ("carrier in ('UA', 'AA') and region == 'x'", "carrier in ('UA', 'AA')"):
                plan = plan_read(ds, where=where, limit=3)
                statements.clear()
                list(execute(plan, KEY))
                ran.append(statements[-1])
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        (masked_sql, _), (plain_sql, _) = ran
        for sql, params in ran:
            assert "WHERE" in sql and "'UA'" not in sql and "UA" in str(params), kind
            assert "WN" in str(params), kind  # the row filter went to the database too
        assert "region" not in masked_sql.split("WHERE")[1]  # masked: compared after masking
        assert "LIMIT" not in masked_sql and "LIMIT" in plain_sql, kind


def test_when_a_time_column_is_compared_with_a_date_string_then_it_is_compared_as_a_time(
        tmp_path):
    path = tmp_path / "t.parquet"
    days = [dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(90)]
    pq.write_table(pa.table({"at": pa.array(days, pa.timestamp("us")),
                             "day": pa.array([d.date() for d in days], pa.date32())}), path)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(path), format="parquet"))
    assert read(ds, "at >= '2024-03-01'").num_rows == 30  # 2024 is a leap year
    assert read(ds, "day < '2024-01-11'").num_rows == 10
    with pytest.raises(FilterError, match="not a valid value for column 'day'"):
        plan_read(ds, where="day == 'soon'")


def test_when_the_catalogue_masks_or_filters_a_column_the_source_lacks_then_reads_fail_closed(
        files):
    with pytest.raises(CatalogMismatch, match="masks column 'SSN'"):
        plan_read(make(files, "parquet", masks={"SSN": "hash"}))
    with pytest.raises(CatalogMismatch, match="row filter names column 'Carrier'.*'carrier'"):
        plan_read(make(files, "csv", row_filter="Carrier != 'WN'"))
    with pytest.raises(CatalogMismatch, match="column 'month' holds number"):
        plan_read(make(files, "csv", row_filter="month != 'March'"))


def test_when_a_plan_is_audited_then_its_detail_names_where_limit_and_columns(files):
    plan = plan_read(make(files, "parquet", **GOVERNED), ["id"], "month == 3", 10, "arrow")
    assert plan.audit_detail() == {"format": "arrow", "columns": ["id"], "where": "month == 3",
                                   "limit": 10, "version": plan.version}
    assert plan.version  # a file's version: a digest of its size and modification time
    assert plan.whole_file is None
    assert plan_read(make(files, "parquet")).whole_file == files["parquet"]
    assert REDACTED in read(make(files, "parquet", **GOVERNED), limit=1).column(
        "region").to_pylist()


# -- PostgreSQL (the `postgres` fixture marks these integration) ----------------------------


@pytest.fixture(scope="module")
def pg_flights(postgres) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table if exists flights")
        conn.exec_driver_sql("create table flights (id bigint, month bigint, carrier text, "
                             "delay double precision, tail text, region text, cancelled boolean)")
        conn.execute(sa.text("insert into flights values (:id, :month, :carrier, :delay, :tail, "
                             ":region, :cancelled)"), pa.table(ROWS).to_pylist())
    engine.dispose()
    return postgres.url


@pytest.mark.parametrize("kind", ["sql-table", "sql-query"])
@pytest.mark.once  # PostgreSQL is the source here, in every run
def test_when_postgresql_filters_then_the_rows_equal_filtering_the_governed_rows_after(
        files, pg_flights, kind):
    ds = make(files, kind, url=pg_flights, **GOVERNED)
    parquet = make(files, "parquet", **GOVERNED)
    for where in WHERES:
        got = read(ds, where).to_pylist()
        assert got == reference(ds, where), where
        assert got == read(parquet, where).to_pylist(), where


def test_small_dictionary_text_comes_back_as_the_same_plain_text(tmp_path):
    """When a Parquet file's text columns are stored as small dictionaries (read as Arrow
    dictionaries, each distinct value decoded once) and a read's `where` and row filter read
    other columns, or these, Then the rows, nulls and types are those of the plain read: string
    and large_string stay so, a redacted column is still redacted, a hashed one still hashed."""
    n = 200_000
    i = pa.array(range(n))
    raw = pa.table({
        "month": pc.add(pc.divide(pc.multiply(i, 12), n), 1),
        "carrier": pa.array([CARRIERS[k % 5] for k in range(n)]),
        "wide": pa.array([["north", None, "south"][k % 3] for k in range(n)], pa.large_string()),
        "region": pa.array([["east", "west"][k % 2] for k in range(n)]),
        "tail": pa.array([f"N{k % 23:03d}" for k in range(n)]),
        "delay": pa.array([float(k % 50) for k in range(n)]),
    })
    path = tmp_path / "flights.parquet"
    pq.write_table(raw, path, row_group_size=50_000)
    meta = pq.read_metadata(path)
    for c in range(1, 5):  # the columns are the small dictionaries the reader decodes once
        chunk = meta.row_group(0).column(c)
        assert chunk.has_dictionary_page and chunk.total_uncompressed_size <= 4 * 50_000
    ds = Dataset(id="f", title="f", source=Source(kind="file", uri=str(path), format="parquet"),
                 masks={"tail": "hash", "region": "redact"},
                 row_filter=parse_filter("delay >= 5"))
    schema, batches = governed_batches(ds, KEY, ["carrier", "wide", "region", "tail"], None,
                                       "month == 3")
    got = pa.Table.from_batches(list(batches), schema)
    kept = raw.filter(pc.and_(pc.greater_equal(raw["delay"], 5),
                          pc.equal(raw["month"], 3)))
    assert got.schema == pa.schema([("carrier", pa.string()), ("wide", pa.large_string()),
                                    ("region", pa.string()), ("tail", pa.string())])
    assert 0 < got.num_rows == kept.num_rows < n // 10
    assert got.column("carrier").equals(kept.column("carrier").cast(pa.string()))
    assert got.column("wide").equals(kept.column("wide"))
    assert got.column("carrier").null_count == kept.column("carrier").null_count > 0
    assert got.column("region").combine_chunks().equals(
        mask_array(kept.column("region").combine_chunks(), "redact", mask_key(KEY, "f")))
    assert got.column("tail").combine_chunks().equals(
        mask_array(kept.column("tail").combine_chunks(), "hash", mask_key(KEY, "f")))
    # a filter that reads such a column (decoded before the filter): the same rows as Arrow's
    schema, batches = governed_batches(ds, KEY, ["carrier", "wide"], None,
                                       "month == 3 and carrier != 'AA' and wide == 'north'")
    got = pa.Table.from_batches(list(batches), schema)
    kept = kept.filter(pc.and_(pc.not_equal(kept["carrier"], "AA"),
                               pc.equal(kept["wide"], "north")))
    assert 0 < got.num_rows == kept.num_rows
    assert got.equals(kept.select(["carrier", "wide"]).cast(schema))


def test_when_a_batch_is_filtered_by_mask_then_it_keeps_exactly_the_rows_filter_keeps():
    """filter_batch (the expression on its own columns, then one filter by the mask) keeps
    exactly the rows RecordBatch.filter(expression) keeps, nulls and NaN included."""
    rows = dict(ROWS, delay=[float("nan") if i % 13 == 0 else v
                             for i, v in enumerate(ROWS["delay"])])
    batch = pa.RecordBatch.from_pydict(rows)
    for where in [*WHERES, "delay > 0", "not (delay <= 0)", "delay != 3 or carrier is null"]:
        if where.startswith("region == 'REDACTED'"):
            continue
        tree = bind(parse_filter(where), batch.schema)
        got = readers.filter_batch(batch, tree.to_arrow(), tree.columns)
        assert got.serialize() == batch.filter(tree.to_arrow()).serialize(), where  # (NaN too)
        assert got.schema == batch.schema
    empty = batch.slice(0, 0)
    tree = bind(parse_filter("month == 3"), batch.schema)
    assert readers.filter_batch(empty, tree.to_arrow(), tree.columns).num_rows == 0
    # a batch of many of Acero's own batches (32 Ki rows): the mask stays in row order
    big = pa.RecordBatch.from_pydict({"n": range(300_000), "x": [i * 7919 % 1000 for i in
                                                                 range(300_000)]})
    tree = bind(parse_filter("x >= 10 and n != 5"), big.schema)
    assert (readers.filter_batch(big, tree.to_arrow(), tree.columns).serialize()
            == big.filter(tree.to_arrow()).serialize())
