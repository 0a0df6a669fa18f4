"""Iceberg (pyiceberg's SQL catalog) and Delta Lake (deltalake) tables as governed sources.

Real catalogs and tables: the Iceberg SQL catalog lives in SQLite (PostgreSQL in the PostgreSQL
run), warehouses on the local disk and on the moto S3 server of tests/test_s3_source.py.
"""

from __future__ import annotations

import os
import sqlite3
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import BUCKET, ON_POSTGRES

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.iceberg import to_iceberg
from jupyterhub_dataaccess.sources.masks import REDACTED
from jupyterhub_dataaccess.sources.plan import governed_batches
from jupyterhub_dataaccess.sources.readers import (
    SourceError,
    UnknownVersion,
    dataset_info,
    reader_for,
)

KEY = b"k" * 32
FIRST = pa.table({
    "id": pa.array([1, 2, 3, 4], pa.int64()),
    "island": ["Torgersen", "Biscoe", None, "Dream"],
    "mass": pa.array([3750, 3800, None, 3500], pa.int64()),
    "sex": ["male", "female", "female", None],
})
SECOND = pa.table({
    "id": pa.array([5, 6, 7, 8], pa.int64()),
    "island": ["Biscoe", "Dream", "Torgersen", "Biscoe"],
    "mass": pa.array([5000, 3800, 4100, 3900], pa.int64()),
    "sex": ["male", "female", "male", "male"],
})
GOVERNED = {"masks": {"sex": "redact"}, "row_filter": parse_filter("island != 'Torgersen'")}


def _rows(ds: Dataset, columns=None, version=None) -> pa.Table:
    schema, batches = governed_batches(ds, KEY, columns, reader=reader_for(ds, version))
    return pa.Table.from_batches(list(batches), schema=schema)


# -- Iceberg ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalog_uri(tmp_path_factory, request) -> str:
    """The SQL database of the Iceberg catalog: SQLite, or a fresh PostgreSQL database."""
    if not ON_POSTGRES:
        return f"sqlite:///{tmp_path_factory.mktemp('iceberg')}/catalog.db"
    from sqlalchemy import create_engine, text

    pg = request.getfixturevalue("postgres")
    name = "lake_" + uuid.uuid4().hex[:8]
    with create_engine(pg.url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    return pg.url.rsplit("/", 1)[0] + "/" + name


def _write_catalog(uri: str, warehouse: str, **extra: str):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("lake", uri=uri, warehouse=warehouse, **extra)


@pytest.fixture(scope="module")
def iceberg(catalog_uri, tmp_path_factory) -> dict:
    """Table lake.penguins with two snapshots (FIRST, then SECOND appended), written by
    pyiceberg as any other engine would; returns the catalogue's properties and snapshot ids."""
    warehouse = str(tmp_path_factory.mktemp("warehouse"))
    cat = _write_catalog(catalog_uri, "file://" + warehouse)
    cat.create_namespace("lake")
    table = cat.create_table("lake.penguins", schema=FIRST.schema)
    table.append(FIRST)
    first = table.current_snapshot().snapshot_id
    table.append(SECOND)
    second = table.current_snapshot().snapshot_id
    return {"props": {"name": "lake", "type": "sql", "uri": catalog_uri,
                      "warehouse": "file://" + warehouse},
            "first": str(first), "second": str(second), "catalog": cat, "warehouse": warehouse}


def _ice(props: dict, table: str = "lake.penguins", **kw) -> Dataset:
    return Dataset(id="ice", title="ice", source=Source(kind="iceberg", table=table,
                                                        catalog=props), **kw)


@pytest.mark.integration
def test_an_iceberg_table_is_read_with_row_filter_projection_and_masks(iceberg):
    t = _rows(_ice(iceberg["props"], **GOVERNED), ["id", "sex"])
    assert t.column_names == ["id", "sex"]
    assert sorted(t.column("id").to_pylist()) == [2, 4, 5, 6, 8]  # null island excluded too
    assert set(t.column("sex").to_pylist()) == {REDACTED}


@pytest.mark.integration
def test_iceberg_versions_are_snapshot_ids_and_a_past_one_can_be_read(iceberg):
    ds = _ice(iceberg["props"])
    assert reader_for(ds).version() == iceberg["second"]
    assert isinstance(dataset_info(ds).version, str) and dataset_info(ds).version == iceberg[
        "second"]
    past = _rows(ds, version=iceberg["first"])
    assert sorted(past.column("id").to_pylist()) == [1, 2, 3, 4]
    assert reader_for(ds, iceberg["first"]).version() == iceberg["first"]
    assert _rows(ds).num_rows == 8


@pytest.mark.integration
def test_an_unknown_iceberg_version_is_named(iceberg):
    ds = _ice(iceberg["props"])
    for bad in ("12345", "not-a-number"):
        with pytest.raises(UnknownVersion, match=f"dataset 'ice' has no version '{bad}'"):
            _rows(ds, version=bad)


@pytest.mark.integration
def test_iceberg_details_come_from_metadata_without_reading_data_files(iceberg,
                                                                        tmp_path_factory):
    # a table of its own whose data files are then deleted: only metadata can answer
    cat = iceberg["catalog"]
    table = cat.create_table("lake.meta_only", schema=FIRST.schema)
    table.append(FIRST)
    for task in table.scan().plan_files():
        os.remove(task.file.file_path.removeprefix("file://"))
    info = dataset_info(_ice(iceberg["props"], "lake.meta_only", masks={"sex": "hash"}))
    assert info.rows == 4
    assert [(c["name"], c["type"], c["mask"]) for c in info.columns] == [
        ("id", "int64", None), ("island", "string", None), ("mass", "int64", None),
        ("sex", "string", "hash")]
    assert info.updated_at.endswith("Z") and info.version == str(
        table.current_snapshot().snapshot_id)


@pytest.mark.integration
def test_an_added_iceberg_column_shows_at_once(iceberg):
    cat = iceberg["catalog"]
    table = cat.create_table("lake.evolving", schema=FIRST.schema)
    table.append(FIRST)
    ds = _ice(iceberg["props"], "lake.evolving")
    assert "flipper" not in [c["name"] for c in dataset_info(ds).columns]
    from pyiceberg.types import LongType

    with table.update_schema() as update:
        update.add_column("flipper", LongType())
    assert [c["name"] for c in dataset_info(ds).columns][-1] == "flipper"
    assert _rows(ds, ["id", "flipper"]).column("flipper").null_count == 4


@pytest.mark.integration
def test_a_where_pushed_into_iceberg_prunes_files_and_keeps_the_unpushed_result(iceberg):
    """Each append is a data file; a filter on `island` opens only the files that may match,
    and gives exactly the rows the same filter gives on the rows read whole."""
    cat = iceberg["catalog"]
    table = cat.create_table("lake.pruned", schema=FIRST.schema)
    for island in ("Biscoe", "Dream", "Torgersen"):
        table.append(pa.concat_tables([FIRST, SECOND]).filter(pc.field("island") == island))
    table.append(FIRST.filter(pc.field("island").is_null()))
    everything = table.scan().to_arrow()
    for text in ("island == 'Dream'", "island in ('Dream', 'Biscoe')", "mass >= 3900",
                 "island not in ('Dream', 'Biscoe')", "island not in ('Dream', null)",
                 "island is null or mass < 3600", "not (island == 'Dream')",
                 "3800 <= mass and island != 'Biscoe'"):
        f = parse_filter(text)
        ds = _ice(iceberg["props"], "lake.pruned", row_filter=f)
        got = sorted(_rows(ds, ["id"]).column("id").to_pylist())
        want = sorted(everything.filter(f.to_arrow()).column("id").to_pylist())
        assert got == want, text
    schema = everything.schema
    dream = table.scan(row_filter=to_iceberg(parse_filter("island == 'Dream'").tree, schema))
    assert len(list(dream.plan_files())) == 1
    assert len(list(table.scan().plan_files())) == 4


def test_filters_iceberg_cannot_express_exactly_push_down_nothing_they_would_lose():
    from pyiceberg.expressions import AlwaysTrue

    schema = pa.schema([("x", pa.float32()), ("s", pa.string()), ("d", pa.date32())])
    for text in ("x > 0.1", "d > '2024-01-01'", "s == 1", "x == s", "not (s == 'a')",
                 "s == 'a' or x > 0.1"):
        assert to_iceberg(parse_filter(text).tree, schema) == AlwaysTrue(), text
    assert to_iceberg(parse_filter("s == 'a' and x > 0.1").tree, schema) != AlwaysTrue()


@pytest.mark.integration
def test_the_service_never_creates_tables_in_an_iceberg_catalog_database(tmp_path):
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    ds = _ice({"type": "sql", "uri": f"sqlite:///{db}", "init_catalog_tables": "true",
               "warehouse": f"file://{tmp_path}"})
    with pytest.raises(SourceError):
        dataset_info(ds)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select name from sqlite_master").fetchall() == []


@pytest.mark.integration
def test_a_missing_table_or_a_silent_catalog_is_a_source_error(iceberg):
    from hubutil import free_port

    with pytest.raises(SourceError, match="has no table 'lake.nothing'"):
        dataset_info(_ice(iceberg["props"], "lake.nothing"))
    silent = {"type": "rest", "uri": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(SourceError, match="did not answer"):
        dataset_info(_ice(silent))


def test_a_missing_credential_variable_is_named_never_guessed(monkeypatch):
    monkeypatch.delenv("TEST_ICEBERG_TOKEN", raising=False)
    ds = _ice({"type": "rest", "uri": "http://127.0.0.1:1", "token": "${TEST_ICEBERG_TOKEN}"})
    with pytest.raises(SourceError, match="the service environment lacks TEST_ICEBERG_TOKEN"):
        dataset_info(ds)


@pytest.mark.integration
def test_an_iceberg_warehouse_on_s3(s3, creds, catalog_uri):
    s3_props = {"s3.endpoint": s3, "s3.region": "us-east-1",
                "s3.access-key-id": os.environ["TEST_S3_KEY"],
                "s3.secret-access-key": os.environ["TEST_S3_SECRET"]}
    writer = _write_catalog(catalog_uri, f"s3://{BUCKET}/warehouse", **s3_props)
    ns = "s3" + uuid.uuid4().hex[:6]
    writer.create_namespace(ns)
    table = writer.create_table(f"{ns}.penguins", schema=FIRST.schema)
    table.append(FIRST)
    first = str(table.current_snapshot().snapshot_id)
    table.append(SECOND)
    props = {"name": "lake", "type": "sql", "uri": catalog_uri, "s3.endpoint": s3,
             "s3.region": "us-east-1",
             "s3.access-key-id": "${TEST_S3_KEY}", "s3.secret-access-key": "${TEST_S3_SECRET}"}
    ds = _ice(props, f"{ns}.penguins", **GOVERNED)
    assert sorted(_rows(ds).column("id").to_pylist()) == [2, 4, 5, 6, 8]
    assert sorted(_rows(ds, version=first).column("id").to_pylist()) == [2, 4]
    assert dataset_info(_ice(props, f"{ns}.penguins")).rows == 8


# -- Delta Lake ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def delta(tmp_path_factory) -> str:
    from deltalake import write_deltalake

    path = str(tmp_path_factory.mktemp("delta") / "penguins")
    write_deltalake(path, FIRST)
    write_deltalake(path, SECOND, mode="append")
    return path


def _delta(uri: str, **kw) -> Dataset:
    options = kw.pop("options", {})
    return Dataset(id="dl", title="dl", source=Source(kind="delta", uri=uri, options=options),
                   **kw)


def test_a_delta_table_is_read_governed_at_any_of_its_versions(delta):
    ds = _delta(delta, **GOVERNED)
    t = _rows(ds, ["id", "sex"])
    assert sorted(t.column("id").to_pylist()) == [2, 4, 5, 6, 8]
    assert set(t.column("sex").to_pylist()) == {REDACTED}
    assert reader_for(ds).version() == "1"
    assert sorted(_rows(ds, version="0").column("id").to_pylist()) == [2, 4]
    for bad in ("2", "-1", "x"):
        with pytest.raises(UnknownVersion, match=f"has no version '{bad}'"):
            _rows(ds, version=bad)


def test_delta_details_come_from_the_log(delta):
    info = dataset_info(_delta(delta, masks={"mass": "null"}))
    assert info.rows == 8 and info.version == "1" and info.updated_at.endswith("Z")
    assert [(c["name"], c["type"]) for c in info.columns] == [
        ("id", "int64"), ("island", "string"), ("mass", "int64"), ("sex", "string")]
    assert dataset_info(_delta(delta, row_filter=parse_filter("id > 1"))).rows is None


def test_an_added_delta_column_shows_at_once_and_the_pushdown_matches(tmp_path):
    from deltalake import write_deltalake

    path = str(tmp_path / "t")
    write_deltalake(path, FIRST)
    ds = _delta(path)
    assert dataset_info(ds).version == "0"
    write_deltalake(path, SECOND.append_column("flipper", pa.array([1, 2, 3, 4])),
                    mode="append", schema_mode="merge")
    assert [c["name"] for c in dataset_info(ds).columns][-1] == "flipper"
    everything = _rows(ds)
    for text in ("island not in ('Dream', 'Biscoe')", "island not in ('Dream', null)",
                 "flipper is null", "mass > 3700 and island != 'Biscoe'"):
        f = parse_filter(text)
        got = sorted(_rows(_delta(path, row_filter=f)).column("id").to_pylist())
        assert got == sorted(everything.filter(f.to_arrow()).column("id").to_pylist()), text


def test_a_missing_delta_table_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="cannot open the Delta table"):
        dataset_info(_delta(str(tmp_path / "nothing")))


def test_a_delta_table_on_s3(s3, creds, tmp_path):
    from deltalake import write_deltalake

    options = {"AWS_ACCESS_KEY_ID": os.environ["TEST_S3_KEY"],
               "AWS_SECRET_ACCESS_KEY": os.environ["TEST_S3_SECRET"], "AWS_ENDPOINT_URL": s3,
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true", "timeout": "5s"}
    uri = f"s3://{BUCKET}/delta-{uuid.uuid4().hex[:6]}"
    write_deltalake(uri, FIRST, storage_options=options)
    write_deltalake(uri, SECOND, mode="append", storage_options=options)
    refs = dict(options, AWS_ACCESS_KEY_ID="${TEST_S3_KEY}",
                AWS_SECRET_ACCESS_KEY="${TEST_S3_SECRET}")
    ds = _delta(uri, options=refs, **GOVERNED)
    assert sorted(_rows(ds).column("id").to_pylist()) == [2, 4, 5, 6, 8]
    assert sorted(_rows(ds, version="0").column("id").to_pylist()) == [2, 4]
    assert dataset_info(_delta(uri, options=refs)).rows == 8


# -- files and SQL ---------------------------------------------------------------------------

def test_a_file_version_is_a_digest_of_size_and_mtime_and_only_the_current_one_reads(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(FIRST, path)
    ds = Dataset(id="f", title="f", source=Source(kind="file", uri=str(path), format="parquet"))
    v1 = reader_for(ds).version()
    assert v1 == dataset_info(ds).version and len(v1) == 16
    assert _rows(ds, version=v1).num_rows == 4
    os.utime(path, ns=(1, 1))
    v2 = reader_for(ds).version()
    assert v2 != v1 and dataset_info(ds).version == v2
    with pytest.raises(UnknownVersion, match=f"has no version '{v1}'"):
        _rows(ds, version=v1)


def test_a_sql_table_has_no_version(tmp_path):
    db = tmp_path / "s.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (x integer)")
        conn.execute("insert into t values (1)")
    ds = Dataset(id="s", title="s", source=Source(kind="sql", url=f"sqlite:///{db}", table="t"))
    assert dataset_info(ds).version is None
    with pytest.raises(UnknownVersion):
        _rows(ds, version="1")


# -- the catalogue file ----------------------------------------------------------------------

def _load(tmp_path, source: str):
    from jupyterhub_dataaccess.config_files import load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(f"datasets:\n  - id: ds\n    source: {source}\n", encoding="utf-8")
    return load_catalog(str(path)).datasets["ds"].source


def test_catalogue_entries_for_iceberg_and_delta_keep_their_settings(tmp_path):
    src = _load(tmp_path, "{kind: iceberg, table: lake.penguins, catalog: {type: rest, "
                          "uri: 'https://cat.example.org', credential: '${ICE_CRED}'}}")
    assert (src.kind, src.table, src.catalog) == ("iceberg", "lake.penguins", {
        "type": "rest", "uri": "https://cat.example.org", "credential": "${ICE_CRED}"})
    src = _load(tmp_path, "{kind: delta, uri: 's3://b/t', options: {AWS_REGION: eu-west-1, "
                          "AWS_SECRET_ACCESS_KEY: '${SECRET}'}}")
    assert (src.kind, src.uri, src.options["AWS_SECRET_ACCESS_KEY"]) == ("delta", "s3://b/t",
                                                                          "${SECRET}")


@pytest.mark.parametrize("source, problem", [
    ("{kind: iceberg, table: penguins, catalog: {type: sql}}", "as namespace.name"),
    ("{kind: iceberg, table: lake.penguins}", "'catalog': is required"),
    ("{kind: iceberg, table: a.b, catalog: {type: rest, token: abc123}}", "'token' holds a cred"),
    ("{kind: iceberg, table: a.b, catalog: {uri: 'postgresql://u:pw@h/db'}}", "'uri' holds a c"),
    ("{kind: delta, uri: /t, options: {AWS_SECRET_ACCESS_KEY: plain}}", "holds a credential"),
    ("{kind: delta, options: {}}", "'uri': is required"),
    ("{kind: delta, uri: /t, format: parquet}", "'format': is not a known field"),
])
def test_bad_lakehouse_entries_are_refused_with_the_field_named(tmp_path, source, problem):
    from jupyterhub_dataaccess.config_files import CatalogError

    with pytest.raises(CatalogError, match=problem) as e:
        _load(tmp_path, source)
    assert "line 3" in str(e.value) and "abc123" not in str(e.value)


def test_variables_a_catalogue_names_but_the_environment_lacks_are_listed(tmp_path, monkeypatch):
    from jupyterhub_dataaccess.config_files import load_catalog, missing_env

    monkeypatch.setenv("ICE_SET", "x")
    monkeypatch.delenv("ICE_UNSET", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  - id: ds\n    source: {kind: iceberg, table: a.b, catalog: "
                    "{uri: 'https://x', credential: '${ICE_UNSET}', token: '${ICE_SET}'}}\n")
    assert missing_env(load_catalog(str(path))) == [("ds", "ICE_UNSET")]


# -- the caller's where, on lakehouse tables (the cases of tests/test_where.py) ----------------

@pytest.fixture(scope="module")
def where_tables(catalog_uri, tmp_path_factory) -> dict[str, Source]:
    """test_where.py's rows as an Iceberg table (two data files) and a Delta table."""
    from deltalake import write_deltalake
    from test_where import ROWS

    rows = pa.table(ROWS)
    half = rows.num_rows // 2
    d = tmp_path_factory.mktemp("where-lake")
    cat = _write_catalog(catalog_uri, f"file://{d}/warehouse")
    cat.create_namespace("wh")
    table = cat.create_table("wh.flights", schema=rows.schema)
    table.append(rows.slice(0, half))
    table.append(rows.slice(half))
    write_deltalake(str(d / "delta"), rows.slice(0, half))
    write_deltalake(str(d / "delta"), rows.slice(half), mode="append")
    return {"iceberg": Source(kind="iceberg", table="wh.flights", catalog={
                "name": "lake", "type": "sql", "uri": catalog_uri,
                "warehouse": f"file://{d}/warehouse"}),
            "delta": Source(kind="delta", uri=str(d / "delta"))}


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["iceberg", "delta"])
@pytest.mark.parametrize("governed", [False, True], ids=["plain", "governed"])
def test_a_where_pushed_into_a_lakehouse_table_gives_the_rows_filtering_after_gives(
        where_tables, kind, governed):
    from test_where import GOVERNED, WHERES, read, reference

    extra = {"masks": GOVERNED["masks"], "row_filter": parse_filter(GOVERNED["row_filter"])} \
        if governed else {}
    ds = Dataset(id="flights", title="flights", source=where_tables[kind], **extra)
    for where in WHERES:
        if not governed and where.startswith("region == 'REDACTED'"):
            continue
        assert read(ds, where).to_pylist() == reference(ds, where), (kind, where)


# -- partitions (scan plans and tickets read a data file each) -------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("kind", ["iceberg", "delta"])
def test_a_lakehouse_table_is_partitioned_by_data_file(iceberg, delta, kind):
    from jupyterhub_dataaccess.sources.base import PartitionChanged
    from jupyterhub_dataaccess.sources.filters import bind

    ds = _ice(iceberg["props"]) if kind == "iceberg" else _delta(delta)
    reader = reader_for(ds, iceberg["second"] if kind == "iceberg" else "1")
    parts = reader.partitions(1 << 20)
    assert len(parts) == 2  # one data file per append
    raw = reader.raw_schema()
    where = bind(parse_filter("island != 'Torgersen'"), raw)
    got = sorted(i for p in parts for b in reader.partition_batches(p.spec, ["id"], where)
                 for i in b.column("id").to_pylist())
    assert got == [2, 4, 5, 6, 8]
    stale = (parts[0].spec[0], 0, "0" * 12)
    with pytest.raises(PartitionChanged):
        list(reader.partition_batches(stale, ["id"], None))


@pytest.mark.integration
def test_a_mask_on_a_column_the_table_lacks_fails_closed(iceberg, delta):
    from jupyterhub_dataaccess.sources.plan import CatalogMismatch, plan_read

    for ds in (_ice(iceberg["props"], masks={"ssn": "hash"}), _delta(delta, masks={"ssn": "hash"})):
        with pytest.raises(CatalogMismatch, match="ssn"):
            plan_read(ds)
