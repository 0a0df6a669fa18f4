"""S3 sources in the service process, against moto's S3 server on loopback (conftest.py `s3`).

Credentials are ${ENV} references in the catalogue's source.options, resolved from the service's
environment at read time and handed to s3fs as its storage options.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import BUCKET

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.plan import governed_batches
from jupyterhub_dataaccess.sources.readers import SourceError, dataset_info

KEY = b"k" * 32


def _ds(endpoint: str, uri: str, fmt: str = "parquet", **kw) -> Dataset:
    options = {"key": "${TEST_S3_KEY}", "secret": "${TEST_S3_SECRET}", "endpoint_url": endpoint}
    return Dataset(id="s3data", title="s3", source=Source(kind="s3", uri=uri, format=fmt,
                                                          options=options), **kw)


def _rows(ds: Dataset, columns=None) -> pa.Table:
    schema, batches = governed_batches(ds, KEY, columns)
    return pa.Table.from_batches(list(batches), schema=schema)


def test_a_prefix_of_parquet_files_is_read_governed(s3, creds):
    ds = _ds(s3, f"s3://{BUCKET}/events/", masks={"team": "redact"},
             row_filter=parse_filter("id >= 5"))
    t = _rows(ds)
    assert sorted(t.column("id").to_pylist()) == [i for i in range(30) if i >= 5]
    assert set(t.column("team").to_pylist()) == {"REDACTED"}
    info = dataset_info(ds)
    assert info.rows == 25 and [c["name"] for c in info.columns] == ["id", "team"]


def test_a_bucket_path_without_scheme_and_json_lines_work(s3, creds):
    t = _rows(_ds(s3, f"{BUCKET}/one.jsonl", fmt="jsonl"))
    assert t.to_pylist() == [{"x": 1, "y": "p"}, {"x": 2, "y": None}]
    info = dataset_info(_ds(s3, f"{BUCKET}/one.jsonl", fmt="jsonl"))
    assert info.updated_at and info.updated_at.endswith("Z")


def test_a_credential_variable_missing_from_the_service_is_named_not_guessed(s3, monkeypatch):
    monkeypatch.delenv("TEST_S3_KEY", raising=False)
    monkeypatch.setenv("TEST_S3_SECRET", "x")
    with pytest.raises(SourceError, match="the service environment lacks TEST_S3_KEY"):
        _rows(_ds(s3, f"s3://{BUCKET}/events/"))


def test_a_missing_object_is_a_source_error(s3, creds):
    with pytest.raises(SourceError):
        _rows(_ds(s3, f"s3://{BUCKET}/nothing-here.parquet"))


def test_nested_options_are_resolved_and_the_catalogue_entry_is_not_changed(s3, creds):
    options = {"key": "${TEST_S3_KEY}", "secret": "${TEST_S3_SECRET}",
               "client_kwargs": {"endpoint_url": s3, "region_name": "us-east-1"}}
    ds = Dataset(id="s3n", title="n", source=Source(kind="s3", uri=f"s3://{BUCKET}/events/",
                                                    format="parquet", options=options))
    assert _rows(ds, ["id"]).num_rows == 30
    assert ds.source.options == {"key": "${TEST_S3_KEY}", "secret": "${TEST_S3_SECRET}",
                                 "client_kwargs": {"endpoint_url": s3, "region_name": "us-east-1"}}
