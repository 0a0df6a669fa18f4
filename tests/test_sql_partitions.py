"""A SQL table split by the catalogue's key (issue 13): scan plans give ranges of the key, and
the ranges read together are exactly the one-stream read, on SQLite and (with
DATAACCESS_TEST_DB=postgresql) on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest
from conftest import ON_POSTGRES

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.base import WHOLE, PartitionChanged, SourceError
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.plan import execute, plan_read
from jupyterhub_dataaccess.sources.readers import reader_for

pytestmark = pytest.mark.integration  # the database splits and filters: run on both

KEY = b"test-key-for-sql-partitions-0001"
TARGET = 64 << 20  # the service's default partition size
ROWS = 1000
WHERES = [None, "carrier == 'AA'", "carrier != 'UA' and id < 3000 and day >= '2024-03-01'",
          "tail != 'x' and carrier in ('AA', 'DL')"]  # the last reads a masked column


def _rows() -> list[dict]:
    out = []
    for i in range(ROWS):
        out.append({
            "id": None if i % 47 == 3 else i * 7,
            "day": None if i % 61 == 5 else date(2024, 1, 1) + timedelta(days=i % 366),
            "ts": None if i % 53 == 7 else datetime(2024, 1, 1) + timedelta(seconds=i * 3671,
                                                                             microseconds=i),
            "carrier": ["AA", "UA", "DL", "WN", None][i % 5],
            "delay": float(i % 40 - 5),
            "tail": f"N{i % 97:03d}",
        })
    return out


@pytest.fixture(scope="module")
def source_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database holding `sqlpart_flights` (ROWS rows, some keys null) and `sqlpart_empty`:
    a SQLite file, or the session's PostgreSQL with DATAACCESS_TEST_DB=postgresql."""
    import sqlalchemy as sa

    if ON_POSTGRES:
        url = request.getfixturevalue("postgres").url
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlpart') / 'flights.sqlite'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    tables = [sa.Table(name, meta, sa.Column("id", sa.BigInteger), sa.Column("day", sa.Date),
                       sa.Column("ts", sa.DateTime), sa.Column("carrier", sa.String),
                       sa.Column("delay", sa.Float), sa.Column("tail", sa.String))
              for name in ("sqlpart_flights", "sqlpart_empty")]
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(tables[0].insert(), _rows())
    engine.dispose()
    return url


def _ds(url: str, key: str, table: str = "sqlpart_flights", governed: bool = True) -> Dataset:
    return Dataset(id="f", title="f", source=Source(kind="sql", url=url, table=table,
                                                    partition_by=key),
                   masks={"tail": "hash"} if governed else {},
                   row_filter=parse_filter("delay >= 0") if governed else None)


def _sorted(table: pa.Table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def _read(ds: Dataset, columns: list[str] | None, where: str | None, target: int = TARGET
          ) -> tuple[pa.Table, list[pa.Table], list]:
    """(the one-stream read, each partition's read, the partitions) as the service does them:
    the plan's pushed filter sizes the ranges; each partition is read by a fresh plan."""
    plan = plan_read(ds, columns, where)
    whole = pa.Table.from_batches(list(execute(plan, KEY)), plan.schema)
    parts = reader_for(ds).partitions(target, plan.pushed, spread=4)
    tables = []
    for part in parts:
        one = replace(plan_read(ds, columns, where), partition=part.spec)
        tables.append(pa.Table.from_batches(list(execute(one, KEY)), one.schema))
    return whole, tables, parts


@pytest.mark.parametrize("key", ["id", "day", "ts"])
def test_the_ranges_of_a_key_read_together_are_exactly_the_one_stream_read(source_url, key):
    """When a governed SQL table (hash mask, row filter) is split by an integer, a date or a
    timestamp key, with each `where` (also one on the masked column) and a projection without
    the key, Then there are at least 4 ranges, the first alone takes the null keys, and the
    ranges' rows together equal the one-stream read's, row for row."""
    ds = _ds(source_url, key)
    for columns in (None, ["carrier", "tail"]):
        for where in WHERES:
            whole, tables, parts = _read(ds, columns, where)
            assert 4 <= len(parts) <= 64, (key, where)
            specs = [p.spec for p in parts]
            assert [s[0] for s in specs] == ["key"] * len(specs)
            assert [s[4] for s in specs] == [True] + [False] * (len(specs) - 1)
            assert specs[0][2] is None and specs[-1][3] is None  # open at both ends
            assert all(a[3] == b[2]  # no gap, no overlap
                       for a, b in zip(specs[:-1], specs[1:], strict=True))
            assert whole.num_rows > 0 and all(t.schema == whole.schema for t in tables)
            assert sum(t.num_rows for t in tables) == whole.num_rows, (key, columns, where)
            assert _sorted(pa.concat_tables(tables)) == _sorted(whole), (key, columns, where)
    whole, tables, _ = _read(ds, None, None)
    nulls = [t.column(key).null_count for t in tables]
    assert nulls[0] == whole.column(key).null_count > 0 and sum(nulls[1:]) == 0
    assert not set(whole.column("tail").to_pylist()) & {r["tail"] for r in _rows()}  # hashed


def test_the_ranges_are_sized_by_the_rows_and_never_thousands(source_url):
    """When the partition target is tiny, Then the ranges stop at MAX_KEY_PARTITIONS (64);
    an ungoverned read is split too (a SQL table always goes through the service); and the
    reads still add up."""
    ds = _ds(source_url, "id", governed=False)
    whole, tables, parts = _read(ds, ["id", "carrier"], None, target=1)
    assert len(parts) == 64 and _sorted(pa.concat_tables(tables)) == _sorted(whole)
    assert len(reader_for(ds).partitions(TARGET * 4)) == 4
    assert whole.num_rows == ROWS


def test_an_empty_table_is_one_partition_with_its_columns(source_url):
    """When the table is empty (or `where` keeps nothing), Then the plan is one partition
    and reading it gives no rows but the governed columns."""
    for ds, where in ((_ds(source_url, "id", table="sqlpart_empty"), None),
                      (_ds(source_url, "id"), "carrier == 'none such'")):
        whole, tables, parts = _read(ds, None, where)
        assert [p.spec for p in parts] == [WHOLE]
        assert tables[0].num_rows == whole.num_rows == 0 and tables[0].schema == whole.schema
        assert tables[0].column_names == ["id", "day", "ts", "carrier", "delay", "tail"]


def test_a_range_of_another_key_or_a_bound_of_the_wrong_type_is_refused(source_url):
    """When a partition names another key than the catalogue's (the catalogue changed since
    the plan) or a bound of another type, Then PartitionChanged and no row."""
    ds = _ds(source_url, "id")
    reader = reader_for(ds)
    for spec in (("key", "day", None, None, True), ("key", "id", "2024-01-01", None, True),
                 ("key", "id", None, 5, "yes"), ("key", "id", True, None, False),
                 ("rg", 0, "x", 0, 1)):
        with pytest.raises(PartitionChanged):
            list(reader.partition_batches(spec, ["id"], None))
    by_day = reader_for(_ds(source_url, "day"))
    with pytest.raises(PartitionChanged):
        list(by_day.partition_batches(("key", "day", 5, None, False), ["id"], None))


def test_a_hostile_range_is_refused_or_reads_only_what_the_row_filter_keeps(source_url):
    """When a range's bounds are SQL-shaped text (they are bound parameters, parsed as the key's
    type first: refused), or a range spans the whole key with the nulls (as a forged ticket
    would, were tickets not signed), Then no text reaches the statement and the widest range
    still reads only the rows the row filter keeps, masked: exactly the one-stream read."""
    for key, bound in (("day", "2024-01-01' OR '1'='1"), ("ts", "2024-01-01 00:00:00; --"),
                       ("id", "0 OR 1=1")):
        reader = reader_for(_ds(source_url, key))
        for spec in (("key", key, bound, None, False), ("key", key, None, bound, True)):
            with pytest.raises(PartitionChanged):
                list(reader.partition_batches(spec, ["id"], None))
    ds = _ds(source_url, "id")
    plan = plan_read(ds, None, None)
    whole = pa.Table.from_batches(list(execute(plan, KEY)), plan.schema)
    widest = replace(plan, partition=("key", "id", None, None, True))
    got = pa.Table.from_batches(list(execute(widest, KEY)), plan.schema)
    assert 0 < got.num_rows == whole.num_rows < ROWS
    assert min(got.column("delay").to_pylist()) >= 0
    assert _sorted(got) == _sorted(whole)


def test_the_reads_and_the_key_ranges_use_one_connection_that_cannot_write(source_url):
    """When the reader's connection (SQLReader._read_only: the rows, the schema and the key
    ranges all read through it) is asked to change the table, Then the database refuses
    (PostgreSQL: a READ ONLY transaction; SQLite: query_only), the refusal is a SourceError
    (a clean 502 upstream), and every row is still there."""
    ds = _ds(source_url, "id", governed=False)
    reader = reader_for(ds)
    for change in ("DELETE FROM sqlpart_flights", "CREATE TABLE sqlpart_x (n integer)"):
        with pytest.raises(SourceError), reader._read_only() as conn:
            conn.exec_driver_sql(change)
    with reader._read_only() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sqlpart_flights").scalar() == ROWS
    assert _read(ds, ["id"], None)[0].num_rows == ROWS
