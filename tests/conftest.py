"""Shared fixtures: test data, catalogue and policy files, and one real JupyterHub per session."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from hubutil import REPO, Hub, Kernel, free_port  # noqa: E402
from policies import SESSION_POLICY  # noqa: E402

sys.path.insert(0, REPO)

CATALOG = """
datasets:
  - id: penguins
    title: Palmer penguins
    description: Size measurements of three penguin species, Palmer Station, Antarctica.
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    tags: [biology, teaching]
    source: {{kind: file, uri: {data}/penguins.csv, format: csv}}
  - id: penguins-masked
    title: Penguins with governance
    description: Masks and a row filter on real data.
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: confidential
    tags: [biology]
    source: {{kind: file, uri: {data}/penguins.parquet, format: parquet}}
    columns:
      body_mass_g: {{mask: hash}}
      sex: {{mask: redact}}
      year: {{mask: "null"}}
    row_filter: "island != 'Torgersen' and species in ('Adelie', 'Gentoo')"
  - id: sales
    title: Internal sales
    description: Generated internal figures.
    owner: steward
    stewards: {{users: [steward]}}
    classification: internal
    tags: [finance]
    source: {{kind: file, uri: {data}/sales.parquet}}
  - id: salaries
    title: Salaries
    description: Restricted; two approvals.
    owner: steward
    stewards: {{groups: [stewards]}}
    classification: restricted
    tags: [hr]
    source: {{kind: file, uri: {data}/salaries.csv}}
    mount: {{path: {data}/salaries.csv}}
  - id: other-team
    title: Another team's data
    description: Stewarded by another group.
    owner: otherstew
    stewards: {{groups: [otherstewards]}}
    classification: confidential
    tags: [other]
    source: {{kind: file, uri: {data}/sales.parquet}}
  - id: forbidden
    title: Never shared
    description: The policy denies it.
    owner: admin
    stewards: {{users: [admin]}}
    classification: restricted
    tags: [denied]
    source: {{kind: file, uri: {data}/sales.parquet}}
  - id: birds-iceberg
    title: Antarctic birds, an Apache Iceberg table
    description: Palmer Station measurements in an Iceberg table of a SQL catalog, two snapshots.
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    tags: [lakehouse]
    source:
      kind: iceberg
      table: lake.birds
      catalog: {{name: lake, type: sql, uri: "sqlite:///{data}/iceberg/catalog.db",
                warehouse: "file://{data}/iceberg/warehouse"}}
    columns:
      body_mass_g: {{mask: hash}}
      sex: {{mask: redact}}
    row_filter: "island != 'Torgersen'"
  - id: birds-delta
    title: Antarctic birds, a Delta Lake table
    description: The same measurements as a Delta table, two versions.
    owner: steward
    stewards: {{users: [steward], groups: [stewards]}}
    classification: public
    tags: [lakehouse]
    source: {{kind: delta, uri: "{data}/delta/birds"}}
    columns:
      body_mass_g: {{mask: hash}}
      sex: {{mask: redact}}
    row_filter: "island != 'Torgersen'"
  - id: lake-gone
    title: A lakehouse table whose catalog lost it
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    tags: [lakehouse]
    source:
      kind: iceberg
      table: lake.gone
      catalog: {{name: lake, type: sql, uri: "sqlite:///{data}/iceberg/catalog.db"}}
  - id: broken
    title: A source that cannot be read
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: file, uri: {data}/does-not-exist.parquet}}
  - id: flights-sql
    title: Flights in a SQL table
    description: A SQL table that scan plans split by ranges of its id key.
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    tags: [sql]
    source: {{kind: sql, url: "sqlite:///{data}/flights.sqlite", table: flights, partition_by: id}}
    columns:
      tail: {{mask: hash}}
    row_filter: "delay >= 0"
  - id: hybrid-governed
    title: Hybrid ranges
    description: Masked columns in a directory of Parquet files, a row filter statistics prove.
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    tags: [hybrid]
    source: {{kind: file, uri: {data}/hybrid, format: parquet}}
    columns: {hybrid_masks}
    row_filter: "id >= 0"
  - id: hybrid-unproven
    title: Hybrid ranges, unproven
    description: The same files, a row filter statistics cannot prove.
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    tags: [hybrid]
    source: {{kind: file, uri: {data}/hybrid, format: parquet}}
    columns: {hybrid_masks}
    row_filter: "value >= -1000.0"
  - id: hybrid-parquet-mr
    title: Hybrid ranges, a parquet-mr file
    description: Small masked column chunks between unmasked ones, a page index, parquet-mr.
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    tags: [hybrid]
    source: {{kind: file, uri: {data}/hybrid-mr/a.parquet, format: parquet}}
    columns:
      secret: {{mask: hash}}
    row_filter: "id >= 0"
"""

FLIGHTS_SQL_ROWS = 2000  # in flights-sql; every 50th id is null
HYBRID_ROWS = 600  # in hybrid/: two files, row groups of 100 and of 75 rows
HYBRID_MASKS = '{secret: {mask: hash}, secret2: {mask: hash-v1}, note: {mask: redact}, ' \
    'flag: {mask: "null"}}'  # (both hybrid datasets)


def make_hybrid(data: str) -> None:
    """hybrid/: Parquet files whose masked text columns hold distinctive words (zebra, okapi,
    lynx, heron: searched for in the bytes sent), nulls in masked and unmasked columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = HYBRID_ROWS
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "secret": [None if i % 11 == 0 else f"zebra-secret-{i % 37:03d}" for i in range(n)],
        "secret2": [None if i % 13 == 0 else f"okapi-private-{i:05d}" for i in range(n)],
        "label": [None if i % 9 == 0 else f"visible-{i % 5}" for i in range(n)],
        "value": [None if i % 7 == 0 else (i % 50) / 4 - 3 for i in range(n)],
        "note": [f"lynx-hidden-{i % 7}" for i in range(n)],
        "flag": [None if i % 5 == 0 else f"heron-null-{i:04d}" for i in range(n)],
    })
    os.makedirs(os.path.join(data, "hybrid"), exist_ok=True)
    pq.write_table(table.slice(0, n // 2), os.path.join(data, "hybrid", "a.parquet"),
                   row_group_size=100)
    pq.write_table(table.slice(n // 2), os.path.join(data, "hybrid", "b.parquet"),
                   row_group_size=75)
    # parquet-mr (as Spark writes): a masked column's chunks (a few values: far under 100 bytes)
    # lie between unmasked ones, the page index (every column's page minimum and maximum) after
    os.makedirs(os.path.join(data, "hybrid-mr"), exist_ok=True)
    path = os.path.join(data, "hybrid-mr", "a.parquet")
    pq.write_table(pa.table({"id": table["id"], "secret": [f"zebra-{i % 3}" for i in range(n)],
                             "label": table["label"]}), path, row_group_size=100,
                   write_page_index=True)
    written_by(path, "parquet-mr version 1.12.3 (build f8dced182c4c1fbdec6ccb3185537b5a01e6ed6b)")


def written_by(path: str, created_by: str) -> None:
    """The Parquet file at `path` with its footer's created_by set to `created_by` (pyarrow
    cannot write another writer's name; the bytes before the footer stay as they are)."""
    from jupyterhub_dataaccess.sources import footer as thrift

    with open(path, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[-8:-4], "little")
    meta = thrift._parse(data[-8 - size:-8])
    writer = thrift._Writer()
    writer.struct(thrift._set(meta, 6, thrift._BINARY, created_by.encode()))
    with open(path, "wb") as f:
        f.write(data[:-8 - size] + bytes(writer.out) + len(writer.out).to_bytes(4, "little")
                + b"PAR1")



def make_data(data: str) -> None:
    import numpy as np
    import palmerpenguins
    import pandas as pd

    os.makedirs(data, exist_ok=True)
    penguins = palmerpenguins.load_penguins()
    penguins.to_csv(os.path.join(data, "penguins.csv"), index=False)
    # in row groups of 100 rows: a scan plan of penguins-masked has several partitions
    penguins.to_parquet(os.path.join(data, "penguins.parquet"), index=False, row_group_size=100)
    rng = np.random.default_rng(7)
    pd.DataFrame({
        "region": rng.choice(["north", "south", "east", "west"], 5000),
        "amount": rng.integers(1, 10_000, 5000),
        "day": pd.date_range("2024-01-01", periods=5000, freq="h"),
    }).to_parquet(os.path.join(data, "sales.parquet"), index=False)
    pd.DataFrame({"name": [f"person{i}" for i in range(50)],
                  "salary": rng.integers(30_000, 200_000, 50)}).to_csv(
        os.path.join(data, "salaries.csv"), index=False)
    make_lakehouse(data, penguins)
    make_hybrid(data)
    import sqlite3

    with sqlite3.connect(os.path.join(data, "flights.sqlite")) as conn:
        conn.execute("create table flights (id integer, carrier text, delay real, tail text)")
        conn.executemany("insert into flights values (?, ?, ?, ?)", [
            (None if i % 50 == 7 else i * 3, ["AA", "UA", "DL"][i % 3], float(i % 30 - 3),
             f"N{i % 41:03d}") for i in range(FLIGHTS_SQL_ROWS)])


LAKE_FIRST_ROWS = 200  # the first version of each lakehouse table; the second appends the rest


def make_lakehouse(data: str, penguins) -> None:
    """The penguins as an Iceberg table (SQL catalog on SQLite) and as a Delta table, each with
    two versions: the first LAKE_FIRST_ROWS rows, then the rest appended."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from pyiceberg.catalog.sql import SqlCatalog

    table = pa.Table.from_pandas(penguins, preserve_index=False)
    first, rest = table.slice(0, LAKE_FIRST_ROWS), table.slice(LAKE_FIRST_ROWS)
    os.makedirs(os.path.join(data, "iceberg", "warehouse"))
    catalog = SqlCatalog("lake", uri=f"sqlite:///{data}/iceberg/catalog.db",
                         warehouse=f"file://{data}/iceberg/warehouse")
    catalog.create_namespace("lake")
    birds = catalog.create_table("lake.birds", schema=table.schema)
    birds.append(first)
    birds.append(rest)
    write_deltalake(os.path.join(data, "delta", "birds"), first)
    write_deltalake(os.path.join(data, "delta", "birds"), rest, mode="append")


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("dataaccess"))


@pytest.fixture(scope="session")
def config_files(state_dir: str) -> dict[str, str]:
    data = os.path.join(state_dir, "data")
    make_data(data)
    catalog = os.path.join(state_dir, "catalog.yaml")
    policy = os.path.join(state_dir, "policy.yaml")
    with open(catalog, "w") as f:
        f.write(CATALOG.format(data=data, hybrid_masks=HYBRID_MASKS))
    with open(policy, "w") as f:
        f.write(SESSION_POLICY)
    return {"catalog": catalog, "policy": policy, "data": data}


ON_POSTGRES = os.environ.get("DATAACCESS_TEST_DB", "sqlite") == "postgresql"
# the session hub's ticket key, so that tests can make tickets the service would (expired ones)
TICKET_KEY = "test-ticket-key-" + os.urandom(16).hex()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this session (started on first use)."""
    from pgutil import start_postgres

    pg = start_postgres()
    yield pg
    pg.stop("immediate")


@pytest.fixture(scope="session")
def db_url(state_dir: str, request: pytest.FixtureRequest) -> str:
    """The service database of this run: SQLite, or PostgreSQL with DATAACCESS_TEST_DB=postgresql
    (`make test` runs the integration suite once on each)."""
    if ON_POSTGRES:
        return request.getfixturevalue("postgres").url
    return f"sqlite:///{state_dir}/dataaccess.sqlite"


BUCKET = "lake"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server on loopback, one per session (moto keeps its buckets in the process),
    with bucket BUCKET holding three Parquet files under events/ and one.jsonl."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError as e:  # never a skip: the test extra installs them
        raise RuntimeError(f"{e}: install the test extra (pip install '.[test]')") from None
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    fs = s3fs.S3FileSystem(key="admin", secret="admin", endpoint_url=endpoint)
    fs.mkdir(BUCKET)
    d = tmp_path_factory.mktemp("s3")
    for part in range(3):  # a partitioned dataset: three files under one prefix
        pq.write_table(pa.table({"id": [part * 10 + i for i in range(10)],
                                 "team": ["a", "b"] * 5}), d / f"{part}.parquet")
        fs.put(str(d / f"{part}.parquet"), f"{BUCKET}/events/{part}.parquet")
    (d / "one.jsonl").write_text('{"x": 1, "y": "p"}\n{"x": 2, "y": null}\n')
    fs.put(str(d / "one.jsonl"), f"{BUCKET}/one.jsonl")
    yield endpoint
    server.stop()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random S3 credentials in the environment (moto accepts any)."""
    monkeypatch.setenv("TEST_S3_KEY", "AKIA" + uuid.uuid4().hex[:12])
    monkeypatch.setenv("TEST_S3_SECRET", uuid.uuid4().hex)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that runs against the service's database as `integration`: `make test`
    runs those a second time on PostgreSQL. Browser tests are not: they run once."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("once"):
            continue  # browser and Dask tests run once (no second run on PostgreSQL)
        if {"hub", "db_url", "postgres"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config: pytest.Config) -> str:
    return f"dataaccess service database: {'PostgreSQL' if ON_POSTGRES else 'SQLite'}"


@pytest.fixture(scope="session")
def hub(state_dir: str, config_files: dict[str, str], db_url: str):
    # The whole suite speaks as a few users, far faster than people do: the per-user rate limit
    # is raised here (tests/test_security_input.py tests the limiter on a hub of its own).
    h = Hub(state=os.path.join(state_dir, "hub"), catalog=config_files["catalog"],
            policy=config_files["policy"], db_url=db_url,
            extra=", settings={'rate_limit': 1000, 'rate_burst': 20000, "
                  "'scan_partition_mb': 0.001, "  # scan plans: a partition per row group
                  "'query_timings': True}",  # POST /query says where its time went
            service_env={"DATAACCESS_TICKET_KEY": TICKET_KEY})
    os.makedirs(h.state, exist_ok=True)
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def analyst_kernel(hub: Hub):
    hub.start_server("analyst")
    k = Kernel(hub, "analyst")
    yield k
    k.shutdown()
