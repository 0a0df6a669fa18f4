"""The data plane (sources/readers.py, sources/stream.py) on real CSV, Parquet, JSON-lines and SQLite.

Every read goes through governed_batches: row filter, then projection, then masks.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.masks import REDACTED
from jupyterhub_dataaccess.sources.plan import governed_batches
from jupyterhub_dataaccess.sources.readers import (
    CatalogMismatch,
    ColumnError,
    SourceError,
    dataset_info,
)
from jupyterhub_dataaccess.sources.stream import FORMATS, encode

KEY = b"k" * 32

ROWS = {
    "id": [1, 2, 3, 4, 5, 6, 7, 8],
    "species": ["Adelie", "Adelie", "Gentoo", "Chinstrap", "Gentoo", "Adelie", "Gentoo", "Adelie"],
    "island": ["Torgersen", "Biscoe", "Biscoe", "Dream", None, "Dream", "Biscoe", "Torgersen"],
    "mass": [3750, 3800, None, 3500, 5000, 3800, 4100, 3900],
    "sex": ["male", "female", "female", None, "male", "female", "male", "male"],
    "name": ["ann", "bob", "cy", "di", "ed", "bob", "fay", "gus"],
}
# the rows a reader of the governed dataset may see: island != 'Torgersen' (null excluded)
VISIBLE = [2, 3, 4, 6, 7]
SOURCE_KINDS = ["csv", "parquet", "jsonl", "sql"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same rows as CSV, Parquet, JSON lines and a SQLite table."""
    d = tmp_path_factory.mktemp("data")
    table = pa.table(ROWS)
    pacsv.write_csv(table, d / "p.csv")
    pq.write_table(table, d / "p.parquet")
    with open(d / "p.jsonl", "w", encoding="utf-8") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    db = d / "p.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table penguins (id integer, species text, island text, mass integer,"
                     " sex text, name text)")
        conn.executemany("insert into penguins values (?, ?, ?, ?, ?, ?)",
                         [tuple(r.values()) for r in table.to_pylist()])
    return {"csv": str(d / "p.csv"), "parquet": str(d / "p.parquet"),
            "jsonl": str(d / "p.jsonl"), "sql": f"sqlite:///{db}"}


def make(files: dict[str, str], kind: str, id: str = "penguins", masks: dict | None = None,
         row_filter: str | None = None, **source: str) -> Dataset:
    if kind == "sql":
        src = Source(kind="sql", url=files["sql"], **(source or {"table": "penguins"}))
    else:
        src = Source(kind="file", uri=files[kind], format=kind)
    return Dataset(id=id, title=id, source=src, masks=masks or {},
                   row_filter=parse_filter(row_filter) if row_filter else None)


def governed(files, kind, columns=None, key=KEY, limit=None, **kw) -> pa.Table:
    schema, batches = governed_batches(make(files, kind, **kw), key, columns, limit)
    return pa.Table.from_batches(list(batches), schema=schema)


# -- plain reads -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_dataset_without_governance_is_read_then_every_row_and_column_arrive(files, kind):
    t = governed(files, kind)
    assert t.column_names == list(ROWS)
    assert t.column("id").to_pylist() == ROWS["id"]
    assert t.column("island").to_pylist() == ROWS["island"]
    assert t.column("mass").to_pylist() == ROWS["mass"]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_limit_is_given_then_only_that_many_rows_arrive(files, kind):
    assert governed(files, kind, limit=3).column("id").to_pylist() == [1, 2, 3]
    assert governed(files, kind, limit=0).num_rows == 0


# -- row filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_row_filter_is_set_then_only_matching_rows_arrive_and_nulls_are_withheld(files,
                                                                                      kind):
    t = governed(files, kind, row_filter="island != 'Torgersen'")
    assert t.column("id").to_pylist() == VISIBLE


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_not_in_filter_is_set_then_null_rows_are_withheld_too(files, kind):
    t = governed(files, kind, row_filter="island not in ('Torgersen')")
    assert t.column("id").to_pylist() == VISIBLE


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_columns_are_projected_then_the_filter_still_applies_on_unprojected_columns(files,
                                                                                       kind):
    t = governed(files, kind, columns=["name"], row_filter="island != 'Torgersen' and mass > 3600")
    assert t.column_names == ["name"]
    assert t.column("name").to_pylist() == ["bob", "bob", "fay"]


# -- masks -----------------------------------------------------------------------------------------


def hashes(files, kind="parquet", key=KEY, id="penguins", column="name"):
    return governed(files, kind, key=key, id=id, masks={column: "hash"}).column(column).to_pylist()


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_columns_are_masked_then_redact_hash_and_null_hide_the_values(files, kind):
    t = governed(files, kind, masks={"sex": "redact", "name": "hash", "mass": "null"})
    assert t.column("sex").to_pylist() == [REDACTED] * 8
    assert t.column("mass").null_count == 8
    names = t.column("name").to_pylist()
    assert not set(names) & set(ROWS["name"])
    assert all(isinstance(h, str) and len(h) == 32 for h in names)
    assert t.schema.field("sex").type == pa.string() and t.schema.field("name").type == pa.string()
    assert t.column("species").to_pylist() == ROWS["species"]  # unmasked columns untouched


def test_when_a_value_is_hashed_then_equal_values_share_a_hash_within_the_dataset(files):
    h = hashes(files)
    assert h[1] == h[5]  # both 'bob'
    assert len(set(h)) == 7


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sql"])
def test_when_the_same_dataset_is_read_from_another_format_then_hashes_agree(files, kind):
    assert hashes(files, kind) == hashes(files, "parquet")


def test_when_another_dataset_or_key_hashes_the_same_values_then_the_hashes_differ(files):
    base = hashes(files)
    other_dataset = hashes(files, id="penguins-copy")
    other_key = hashes(files, key=b"another service key")
    assert not set(base) & set(other_dataset)
    assert not set(base) & set(other_key)


def test_when_hashes_are_compared_with_a_dictionary_of_likely_values_then_none_reverse(files):
    h = set(hashes(files))
    dictionary = {v: hashlib.sha256(v.encode()).hexdigest() for v in ROWS["name"]}
    for digest in dictionary.values():
        assert digest not in h and digest[:32] not in h
        assert hashlib.md5(digest.encode()).hexdigest() not in h  # noqa: S324
    assert not {hashlib.sha256(v.encode()).hexdigest()[:32] for v in ROWS["name"]} & h


def test_when_a_hashed_column_has_nulls_then_they_stay_null(files):
    h = hashes(files, column="island")
    assert h[4] is None
    assert h[0] == h[7] != h[1]


def test_when_a_null_or_redact_mask_meets_nulls_then_nothing_about_the_value_leaks(files):
    t = governed(files, "parquet", masks={"island": "redact", "sex": "null"})
    assert t.column("island").to_pylist() == [REDACTED] * 8
    assert t.column("sex").to_pylist() == [None] * 8


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_masked_column_is_asked_for_alone_then_it_is_still_masked(files, kind):
    masks = {"sex": "redact", "name": "hash", "mass": "null"}
    for column in masks:
        t = governed(files, kind, columns=[column], masks=masks)
        assert t.column_names == [column]
        full = governed(files, kind, masks=masks).column(column).to_pylist()
        assert t.column(column).to_pylist() == full
        assert not set(t.column(column).to_pylist()) & (set(ROWS[column]) - {None})


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_a_masked_column_is_filtered_on_then_rows_are_filtered_by_the_true_value_but_masked(
        files, kind):
    t = governed(files, kind, masks={"sex": "redact"}, row_filter="sex == 'female'")
    assert t.column("id").to_pylist() == [2, 3, 6]
    assert t.column("sex").to_pylist() == [REDACTED] * 3


def test_when_a_column_is_asked_twice_then_it_arrives_once(files):
    t = governed(files, "parquet", columns=["id", "id", "name"], masks={"name": "hash"})
    assert t.column_names == ["id", "name"]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_unknown_columns_are_asked_then_columnerror_names_them(files, kind):
    with pytest.raises(ColumnError) as e:
        governed(files, kind, columns=["id", "salary", "ssn"])
    assert "salary" in str(e.value) and "ssn" in str(e.value) and "id" not in str(e.value)


# -- encodings ---------------------------------------------------------------------------------------


def encoded(files, kind, fmt, **kw) -> bytes:
    schema, batches = governed_batches(make(files, kind, **kw), KEY)
    return b"".join(encode(schema, batches, fmt))


def decode(data: bytes, fmt: str, schema: pa.Schema) -> pa.Table:
    if fmt == "arrow":
        return ipc.open_stream(io.BytesIO(data)).read_all()
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    types = pacsv.ConvertOptions(column_types=schema)
    return pacsv.read_csv(io.BytesIO(data), convert_options=types)


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_when_governed_rows_are_encoded_then_each_format_decodes_to_the_same_rows(files, kind):
    kw = {"masks": {"sex": "redact", "name": "hash", "mass": "null"},
          "row_filter": "island != 'Torgersen'"}
    expected = governed(files, kind, **kw)
    assert expected.column("id").to_pylist() == VISIBLE
    for fmt in FORMATS:
        got = decode(encoded(files, kind, fmt, **kw), fmt, expected.schema)
        assert got.column_names == expected.column_names, fmt
        assert got.to_pylist() == expected.to_pylist(), fmt


def test_when_an_unknown_format_is_asked_then_encode_refuses(files):
    schema, batches = governed_batches(make(files, "parquet"), KEY)
    with pytest.raises(ValueError, match="unsupported format"):
        list(encode(schema, batches, "xlsx"))


def test_when_a_dataset_is_empty_after_the_filter_then_every_format_still_has_a_header(files):
    for fmt in FORMATS:
        schema, batches = governed_batches(make(files, "parquet", row_filter="id > 100"), KEY)
        got = decode(b"".join(encode(schema, batches, fmt)), fmt, schema)
        assert got.num_rows == 0 and got.column_names == list(ROWS), fmt


# -- faults and info ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_when_the_file_is_missing_then_sourceerror(tmp_path, fmt):
    ds = Dataset(id="gone", title="gone",
                 source=Source(kind="file", uri=str(tmp_path / f"gone.{fmt}"), format=fmt))
    with pytest.raises(SourceError):
        governed_batches(ds, KEY)
    with pytest.raises(SourceError):
        dataset_info(ds)


def test_when_a_file_is_not_in_its_format_then_sourceerror(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("this is not parquet")
    ds = Dataset(id="bad", title="bad", source=Source(kind="file", uri=str(bad), format="parquet"))
    with pytest.raises(SourceError):
        schema, batches = governed_batches(ds, KEY)
        list(batches)


def test_when_the_sql_table_is_missing_then_sourceerror(files):
    with pytest.raises(SourceError):
        governed(files, "sql", table="no_such_table")


def test_when_the_sql_source_is_a_query_then_its_rows_are_governed(files):
    t = governed(files, "sql", query="select id, name, island from penguins where id > 2",
                 masks={"name": "redact"}, row_filter="island != 'Dream'")
    assert t.column("id").to_pylist() == [3, 7, 8]
    assert t.column("name").to_pylist() == [REDACTED] * 3


@pytest.mark.parametrize("kind", SOURCE_KINDS)
@pytest.mark.parametrize(("governance", "problem"), [
    ({"masks": {"Sex": "redact"}},
     "the catalogue masks column 'Sex', which the source lacks (did you mean 'sex'?)"),
    ({"row_filter": "salary > 1"}, "the row filter names column 'salary', which the source lacks"),
])
def test_when_a_mask_or_filter_names_a_column_the_source_lacks_then_nothing_is_read(
        files, kind, governance, problem):
    """Security case 43 at the source: reads, projections that leave the column out, and the
    dataset's details all refuse, naming the dataset and the column."""
    for columns in (None, ["id"]):
        with pytest.raises(CatalogMismatch) as e:
            governed(files, kind, columns=columns, **governance)
        assert str(e.value) == (f"dataset 'penguins' cannot be served: {problem}. Nothing was "
                                "read; an operator must fix the catalogue or the source")
    with pytest.raises(CatalogMismatch):
        dataset_info(make(files, kind, **governance))


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_when_dataset_info_is_asked_then_rows_are_counted_after_the_filter(files, kind):
    info = dataset_info(make(files, kind, row_filter="island != 'Torgersen'",
                             masks={"name": "hash", "mass": "null"}))
    assert info.rows == len(VISIBLE)
    cols = {c["name"]: c for c in info.columns}
    assert list(cols) == list(ROWS)
    assert cols["name"]["mask"] == "hash" and cols["name"]["type"] == "string"
    assert cols["mass"]["mask"] == "null" and cols["id"]["mask"] is None
    assert info.updated_at and info.updated_at.endswith("Z")
    assert dataset_info(make(files, kind)).rows == len(ROWS["id"])


def test_when_dataset_info_is_asked_for_a_sql_source_then_the_schema_is_governed_and_not_counted(
        files):
    # a SQL source is not counted: that would stream the whole table on every metadata request
    info = dataset_info(make(files, "sql", row_filter="island != 'Torgersen'",
                             masks={"name": "redact"}))
    assert info.rows is None and info.updated_at is None
    assert {c["name"]: c["mask"] for c in info.columns}["name"] == "redact"


def test_when_the_file_changes_then_dataset_info_is_not_stale(tmp_path):
    path = tmp_path / "grow.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), path)
    ds = Dataset(id="grow", title="grow", source=Source(kind="file", uri=str(path),
                                                        format="parquet"))
    assert dataset_info(ds).rows == 2
    pq.write_table(pa.table({"id": [1, 2, 3]}), path)
    import os

    os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 5))
    assert dataset_info(ds).rows == 3


def test_when_file_uris_use_the_file_scheme_then_they_are_read_locally(files):
    ds = Dataset(id="p", title="p",
                 source=Source(kind="file", uri="file://" + files["parquet"], format="parquet"))
    schema, batches = governed_batches(ds, KEY)
    assert sum(b.num_rows for b in batches) == 8


def test_when_the_source_uri_references_an_env_var_then_it_is_expanded_in_the_service(
        files, monkeypatch):
    folder, name = Path(files["parquet"]).parent, Path(files["parquet"]).name
    monkeypatch.setenv("DATAACCESS_TEST_ROOT", str(folder))
    ds = Dataset(id="p", title="p", source=Source(
        kind="file", uri="${DATAACCESS_TEST_ROOT}/" + name, format="parquet"))
    assert dataset_info(ds).rows == 8


def test_when_a_sql_column_is_null_for_the_whole_first_batch_then_later_values_still_arrive(
        tmp_path):
    db = tmp_path / "late.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer, late real, never text)")
        conn.executemany("insert into t values (?, ?, null)",
                         [(i, None if i < 40_000 else i / 2) for i in range(50_000)])
    for source in ({"table": "t"}, {"query": "select id, late, never from t"}):
        ds = Dataset(id="late", title="late", masks={"never": "hash"},
                     source=Source(kind="sql", url=f"sqlite:///{db}", **source))
        schema, batches = governed_batches(ds, KEY)
        t = pa.Table.from_batches(list(batches), schema=schema)
        assert t.num_rows == 50_000, source
        assert t.column("late").null_count == 40_000, source
        assert t.column("never").null_count == 50_000, source
    assert schema.field("id").type == pa.int64()


def test_when_a_sql_table_is_empty_then_its_columns_are_still_known(tmp_path):
    db = tmp_path / "empty.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer, name text)")
    ds = Dataset(id="empty", title="empty", masks={"name": "redact"},
                 source=Source(kind="sql", url=f"sqlite:///{db}", table="t"))
    schema, batches = governed_batches(ds, KEY, columns=["name"])
    assert list(batches) == [] and schema.names == ["name"]
    assert [c["name"] for c in dataset_info(ds).columns] == ["id", "name"]
