"""The data plane on a real JupyterHub: every source kind (CSV, Parquet, JSON lines, SQLite,
PostgreSQL, S3 on moto's server) governed the same way in Arrow, Parquet, CSV and preview; S3
credentials only in the service; the notebook client (pandas, Arrow, polars, open, DuckDB,
request-and-wait); revocation and expiry in a running kernel; bounded service memory on a large
file; mounts at spawn (security cases 24-27).

One private hub serves this module: its configure_hub gets the S3 credentials in `environment`,
as an operator's would, and nothing else of the test process's secrets.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hubutil import Hub, Kernel, free_port, service_pid, status_mb
from policies import SHORT_LIVED_POLICY

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

S3_KEY = "AKIA" + uuid.uuid4().hex[:16].upper()
S3_SECRET = "secret-" + uuid.uuid4().hex
# One run: this module's hub keeps its database in SQLite in every run (PostgreSQL here is one of
# the sources, read in every run), so a second run on PostgreSQL would repeat this one exactly.
pytestmark = pytest.mark.once

BUCKET = "governed-data"
GOVERNED = """
    columns:
      body_mass_g: {{mask: hash}}
      sex: {{mask: redact}}
      year: {{mask: "null"}}
    row_filter: "island != 'Torgersen' and species in ('Adelie', 'Gentoo')"
"""
KINDS = ["csv", "parquet", "jsonl", "sqlite", "postgres", "s3-parquet", "s3-csv"]
SOURCES = {
    "csv": "{{kind: file, uri: {data}/p.csv, format: csv}}",
    "parquet": "{{kind: file, uri: 'file://{data}/p.parquet'}}",
    "jsonl": "{{kind: file, uri: {data}/p.jsonl, format: jsonl}}",
    "sqlite": "{{kind: sql, url: 'sqlite:///{data}/p.sqlite', table: penguins}}",
    "postgres": "{{kind: sql, url: '{pg}', query: 'select * from penguins order by n'}}",
    "s3-parquet": ("{{kind: s3, uri: 's3://" + BUCKET + "/p.parquet', options: "
                   "{{key: '${{S3_KEY}}', secret: '${{S3_SECRET}}', "
                   "endpoint_url: 'http://127.0.0.1:{s3port}'}}}}"),
    "s3-csv": ("{{kind: s3, uri: '" + BUCKET + "/p.csv', format: csv, options: "
               "{{key: '${{S3_KEY}}', secret: '${{S3_SECRET}}', "
               "endpoint_url: 'http://127.0.0.1:{s3port}'}}}}"),
}
EXTRA = """
  - id: s3-no-bucket
    title: An S3 source that cannot be read
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: s3, uri: 's3://no-such-bucket/x.parquet', options: {{key: '${{S3_KEY}}',
              secret: '${{S3_SECRET}}', endpoint_url: 'http://127.0.0.1:{s3port}'}}}}
  - id: s3-missing-env
    title: An S3 source whose credentials the service lacks
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: s3, uri: 's3://{bucket}/p.parquet', options: {{key: '${{NO_SUCH_KEY_VAR}}',
              endpoint_url: 'http://127.0.0.1:{s3port}'}}}}
  - id: reviewed
    title: Needs a steward
    owner: steward
    stewards: {{users: [steward]}}
    classification: confidential
    source: {{kind: file, uri: {data}/p.parquet}}
  - id: shortlived
    title: Granted for seconds
    owner: steward
    stewards: {{users: [steward]}}
    classification: internal
    source: {{kind: file, uri: {data}/p.csv}}
  - id: mountable
    title: Mounted for grant holders
    owner: steward
    stewards: {{users: [steward]}}
    classification: confidential
    source: {{kind: file, uri: {data}/mounts/mountable, format: csv}}
    mount: {{path: {data}/mounts/mountable}}
  - id: other-mountable
    title: Mountable, never granted to the analyst
    owner: steward
    stewards: {{users: [steward]}}
    classification: confidential
    source: {{kind: file, uri: {data}/mounts/other, format: csv}}
    mount: {{path: {data}/mounts/other}}
  - id: mask-case
    title: A mask whose column differs from the source's in case
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: file, uri: {data}/p.csv, format: csv}}
    columns:
      Sex: {{mask: redact}}
  - id: filter-renamed
    title: A row filter on a column the source renamed
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: sql, url: 'sqlite:///{data}/p.sqlite', table: penguins}}
    row_filter: "isle != 'Torgersen'"
  - id: large
    title: A large Parquet file
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: file, uri: {data}/large.parquet}}
"""
EXPECTED_ROWS = 344 - 52 - 68  # the real penguins minus Torgersen and Chinstrap


def data_hub(**kw) -> Hub:
    """The test hub, with source credentials in the service's environment only."""
    return Hub(service_env={"S3_KEY": S3_KEY, "S3_SECRET": S3_SECRET}, **kw)


def _penguins() -> pa.Table:
    import palmerpenguins

    df = palmerpenguins.load_penguins()
    df.insert(0, "n", range(len(df)))
    return pa.Table.from_pandas(df, preserve_index=False)


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, s3_server, postgres) -> str:
    import s3fs
    import sqlalchemy as sa

    d = tmp_path_factory.mktemp("plane")
    table = _penguins()
    pacsv.write_csv(table, d / "p.csv")
    pq.write_table(table, d / "p.parquet")
    with open(d / "p.jsonl", "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    with sqlite3.connect(d / "p.sqlite") as conn:
        conn.execute("create table penguins (n integer, species text, island text, "
                     "bill_length_mm real, bill_depth_mm real, flipper_length_mm real, "
                     "body_mass_g real, sex text, year integer)")
        conn.executemany("insert into penguins values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [tuple(r.values()) for r in table.to_pylist()])
    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table if exists penguins")
        conn.exec_driver_sql("create table penguins (n bigint, species text, island text, "
                             "bill_length_mm double precision, bill_depth_mm double precision, "
                             "flipper_length_mm double precision, body_mass_g double precision,"
                             " sex text, year bigint)")
        conn.execute(sa.text("insert into penguins values (:n, :species, :island, "
                             ":bill_length_mm, :bill_depth_mm, :flipper_length_mm, "
                             ":body_mass_g, :sex, :year)"), table.to_pylist())
    engine.dispose()
    fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET,
                           endpoint_url=f"http://127.0.0.1:{s3_server}")
    fs.mkdir(BUCKET)
    fs.put(str(d / "p.parquet"), f"{BUCKET}/p.parquet")
    fs.put(str(d / "p.csv"), f"{BUCKET}/p.csv")
    (d / "mounts" / "mountable").mkdir(parents=True)
    (d / "mounts" / "mountable" / "part.csv").write_text("note\ngranted data\n")
    (d / "mounts" / "other").mkdir()
    from _common import write_parquet

    write_parquet(str(d / "large.parquet"), 6_000_000)
    return str(d)


@pytest.fixture(scope="module")
def dhub(tmp_path_factory, data, s3_server, postgres):
    state = tmp_path_factory.mktemp("planehub")
    items = ""
    for kind in KINDS:
        source = SOURCES[kind].format(data=data, pg=postgres.url, s3port=s3_server)
        items += (f"  - id: gov-{kind}\n    title: Penguins from {kind}\n    owner: steward\n"
                  f"    stewards: {{users: [steward]}}\n    classification: public\n"
                  f"    source: {source}\n" + GOVERNED.format())
    items += EXTRA.format(data=data, s3port=s3_server, bucket=BUCKET)
    (state / "catalog.yaml").write_text("datasets:\n" + items)
    (state / "policy.yaml").write_text(SHORT_LIVED_POLICY)
    h = data_hub(state=str(state / "hub"), catalog=str(state / "catalog.yaml"),
                policy=str(state / "policy.yaml"), db_url=f"sqlite:///{state}/da.sqlite")
    os.makedirs(h.state)
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def kernel(dhub):
    dhub.start_server("analyst")
    k = Kernel(dhub, "analyst")
    yield k
    k.shutdown()


def _grant(hub: Hub, dataset: str, user: str = "analyst") -> dict:
    r = hub.call(user, "POST", "/requests", json={"dataset": dataset, "justification": "tests"})
    assert r.status_code in (201, 409), r.text
    req = r.json().get("request", r.json())
    if req["status"] == "pending":
        r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    grants = hub.call(user, "GET", "/grants", params={"dataset": dataset, "active": "true"})
    (grant,) = grants.json()["items"]
    return grant


# -- sources x formats x preview: one governed result ---------------------------------------


def _read(hub: Hub, dataset: str, fmt: str, schema: pa.Schema | None = None) -> pa.Table:
    r = hub.call("analyst", "GET", f"/datasets/{dataset}/data", params={"format": fmt})
    assert r.status_code == 200, (dataset, fmt, r.text)
    if fmt == "arrow":
        return pa.ipc.open_stream(r.content).read_all()
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(r.content))
    return pacsv.read_csv(io.BytesIO(r.content), convert_options=pacsv.ConvertOptions(
        column_types=schema, strings_can_be_null=True))


@pytest.fixture(scope="module")
def reference(dhub) -> list[dict]:
    _grant(dhub, "gov-parquet")
    t = _read(dhub, "gov-parquet", "arrow")
    assert t.num_rows == EXPECTED_ROWS
    return t.to_pylist()


def _comparable(rows: list[dict]) -> list[dict]:
    first_seen: dict[str, int] = {}
    out = []
    for r in rows:
        r = {k: float(v) if isinstance(v, int) and k != "n" else v for k, v in r.items()}
        h = r["body_mass_g"]
        r["body_mass_g"] = None if h is None else first_seen.setdefault(h, len(first_seen))
        out.append(r)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_kind_gives_the_same_governed_rows_in_every_format_and_preview(
        dhub, reference, kind):
    """When the same penguins are served from {kind} with masks and a row filter, Then Arrow,
    Parquet, CSV and preview all carry exactly the governed rows of the Parquet reference."""
    dataset = f"gov-{kind}"
    _grant(dhub, dataset)
    arrow = _read(dhub, dataset, "arrow")
    rows = arrow.to_pylist()
    # the same values (a CSV types 174.0 as 174), and hashes that group rows the same way (the
    # key differs per dataset id by design, so the digests themselves differ)
    assert _comparable(rows) == _comparable(reference), kind
    assert {r["island"] for r in rows} == {"Biscoe", "Dream"}
    assert {r["sex"] for r in rows} == {"REDACTED"}
    assert all(r["year"] is None for r in rows)
    assert all(r["body_mass_g"] is None or len(r["body_mass_g"]) == 32 for r in rows)
    assert _read(dhub, dataset, "parquet").to_pylist() == rows
    assert _read(dhub, dataset, "csv", arrow.schema).to_pylist() == rows
    r = dhub.call("analyst", "GET", f"/datasets/{dataset}/preview", params={"limit": 100})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert [c["name"] for c in preview["columns"]] == arrow.schema.names
    assert preview["rows"] == json.loads(json.dumps([list(x.values()) for x in rows[:100]],
                                                    default=str))
    r = dhub.call("analyst", "GET", f"/datasets/{dataset}/data",
                  params={"columns": "sex,species", "format": "arrow"})
    projected = pa.ipc.open_stream(r.content).read_all()
    assert projected.column_names == ["sex", "species"]
    assert projected.to_pylist() == [{"sex": x["sex"], "species": x["species"]} for x in rows]


WHERES = [
    "bill_length_mm > 40 and island in ('Biscoe', 'Dream')",
    "sex == 'REDACTED' and flipper_length_mm >= 200",
    "species not in ('Adelie', null) or bill_depth_mm is null",
]


def _audit(hub: Hub, **params) -> list[dict]:
    r = hub.call("admin", "GET", "/audit", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.mark.parametrize("kind", KINDS)
def test_where_and_limit_give_the_rows_of_filtering_the_governed_read_on_every_source_kind(
        dhub, kind):
    """When a read of {kind} asks `where` and `limit`, Then the service answers exactly the
    governed rows filtered on their masked values (whatever went down to the source), the limit
    cuts after the filter, preview agrees, and the audit record names where and limit."""
    from jupyterhub_dataaccess.sources.filters import bind, parse_filter

    dataset = f"gov-{kind}"
    _grant(dhub, dataset)
    whole = _read(dhub, dataset, "arrow")
    for where in WHERES:
        r = dhub.call("analyst", "GET", f"/datasets/{dataset}/data",
                      params={"where": where, "format": "arrow"})
        assert r.status_code == 200, (kind, where, r.text)
        got = pa.ipc.open_stream(r.content).read_all()
        expected = whole.filter(bind(parse_filter(where), whole.schema).to_arrow())
        assert got.num_rows > 0 and got.to_pylist() == expected.to_pylist(), (kind, where)
    r = dhub.call("analyst", "GET", f"/datasets/{dataset}/data",
                  params={"where": WHERES[0], "limit": "7", "columns": "n,sex"})
    limited = pa.ipc.open_stream(r.content).read_all()
    assert limited.column_names == ["n", "sex"] and limited.num_rows == 7
    (record,) = _audit(dhub, dataset=dataset, action="data.read", limit=1)
    assert record["detail"]["where"] == WHERES[0] and record["detail"]["limit"] == 7
    r = dhub.call("analyst", "GET", f"/datasets/{dataset}/preview",
                  params={"where": WHERES[1], "limit": "3"})
    assert r.status_code == 200, r.text
    assert [row[0] for row in r.json()["rows"]] == limited_ns(whole, WHERES[1], 3)
    # a hashed value never equals its raw value: no raw mass matches the masked column
    r = dhub.call("analyst", "GET", f"/datasets/{dataset}/data",
                  params={"where": "body_mass_g in ('3750', '3750.0', '4500')"})
    assert r.status_code == 200 and pa.ipc.open_stream(r.content).read_all().num_rows == 0


def limited_ns(whole: pa.Table, where: str, n: int) -> list[int]:
    from jupyterhub_dataaccess.sources.filters import bind, parse_filter

    return whole.filter(bind(parse_filter(where), whole.schema).to_arrow()).column(
        "n").to_pylist()[:n]


@pytest.mark.parametrize("where, says", [
    ("body_mass_g > 4000", "column 'body_mass_g' is masked (hash)"),
    ("sex == 1", "column 'sex' is masked (redact)"),
    ("wingspan > 3", "unknown column 'wingspan'"),
    ("island = 'Dream'", "unexpected"),
])
def test_a_where_that_cannot_run_is_a_400_before_any_data_and_no_read_is_audited(
        dhub, where, says):
    _grant(dhub, "gov-parquet")
    before = _audit(dhub, dataset="gov-parquet", limit=1)[0]["seq"]
    for path in ("data", "preview"):
        r = dhub.call("analyst", "GET", f"/datasets/gov-parquet/{path}", params={"where": where})
        assert r.status_code == 400, r.text
        assert says in r.json()["message"] and r.json()["status"] == 400
    assert _audit(dhub, dataset="gov-parquet", limit=1)[0]["seq"] == before


def test_a_where_and_limit_in_a_kernel_and_a_bad_one_raised_with_the_services_message(
        dhub, kernel):
    _grant(dhub, "gov-postgres")
    out = kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "df = da.load('gov-postgres', where=\"island == 'Dream' and bill_length_mm > 39\",\n"
        "             columns=['n', 'island'], limit=10)\n"
        "print(df.shape, sorted(set(df.island)))\n"
        "rel = da.duckdb('gov-postgres', where=\"species == 'Gentoo'\", connection=None)\n"
        "print(rel.aggregate('count(*)').fetchall())\n"
        "with da.open('gov-postgres', 'csv', where='n < 60') as f:\n"
        "    print(len(f.read().splitlines()))\n"
        "try:\n    da.load('gov-postgres', where='wingspan > 3')\n"
        "except da.DataAccessError as e:\n    print('BAD', type(e).__name__, e.status, e)\n")
    assert out["error"] is None, out
    lines = out["stdout"].splitlines()
    assert lines[0] == "(10, 2) ['Dream']"
    assert lines[1] == "[(124,)]"
    assert int(lines[2]) > 1
    assert lines[3].startswith("BAD DataAccessError 400 where names unknown column 'wingspan'")


def test_dataset_details_of_an_s3_source_carry_schema_and_rows(dhub):
    d = dhub.call("nobody", "GET", "/datasets/gov-s3-parquet").json()
    assert d["rows"] == EXPECTED_ROWS and "source_error" not in d
    assert {c["name"]: c["mask"] for c in d["columns"]}["body_mass_g"] == "hash"
    assert S3_KEY not in json.dumps(d) and "127.0.0.1" not in json.dumps(d)


@pytest.mark.parametrize("dataset", ["s3-no-bucket", "s3-missing-env"])
def test_an_unreadable_s3_source_is_a_502_with_details_only_in_the_service_log(dhub, dataset):
    """When a source cannot be read, Then a read, a preview, a scan (asked for a plan and for
    the file) and a query of it answer the same 502 and the same words: a missing variable is
    said in words any caller may see (never its name or value); other failures leave the
    details to the service log."""
    _grant(dhub, dataset)
    message = ("The data source cannot be read right now: a credential the service needs for it "
               "is not set" if dataset == "s3-missing-env" else
               "The data source cannot be read right now; the service log has details")
    asks = [("GET", f"/datasets/{dataset}/data", {}), ("GET", f"/datasets/{dataset}/preview", {}),
            ("POST", f"/datasets/{dataset}/scan", {"json": {}}),
            ("POST", f"/datasets/{dataset}/scan", {"json": {}, "headers": {
                "Accept": "application/vnd.apache.parquet"}}),
            ("POST", "/query", {"json": {"sql": f'select count(*) from "{dataset}"'}})]
    for method, path, how in asks:
        r = dhub.call("analyst", method, path, **how)
        assert r.status_code == 502, (path, r.text)
        assert r.json() == {"status": 502, "message": message}
        assert "NO_SUCH_KEY_VAR" not in r.text
    log = dhub.log_tail(400)
    assert f"Cannot open {dataset}" in log
    if dataset == "s3-missing-env":
        assert "the service environment lacks NO_SUCH_KEY_VAR" in log
    assert S3_SECRET not in log and S3_KEY not in log


@pytest.mark.parametrize(("dataset", "problem"), [
    ("mask-case", "the catalogue masks column 'Sex', which the source lacks (did you mean 'sex'?)"),
    ("filter-renamed", "the row filter names column 'isle', which the source lacks "
                       "(did you mean 'island'?)"),
])
def test_a_mask_or_row_filter_on_a_column_the_source_lacks_fails_closed(dhub, kernel, dataset,
                                                                        problem):
    """Security case 43. When the catalogue governs a column the source does not have (a case
    difference, an upstream rename), Then data in every format, preview, details and da.load
    answer a clear error naming the dataset and the column, and no row leaves the service."""
    _grant(dhub, dataset)
    message = (f"dataset {dataset!r} cannot be served: {problem}. Nothing was read; an operator "
               "must fix the catalogue or the source")
    for path, params in [("data", {"format": "arrow"}), ("data", {"format": "csv"}),
                         ("data", {"format": "parquet"}), ("data", {"columns": "species"}),
                         ("preview", {"limit": 5})]:
        r = dhub.call("analyst", "GET", f"/datasets/{dataset}/{path}", params=params)
        assert (r.status_code, r.json()) == (502, {"status": 502, "message": message}), params
        assert "Adelie" not in r.text and "Torgersen" not in r.text
    details = dhub.call("analyst", "GET", f"/datasets/{dataset}").json()
    assert (details["source_error"], details["rows"], details["columns"]) == (message, None, [])
    out = kernel.run("import jupyterhub_dataaccess as da\n"
                     f"try:\n    da.load({dataset!r})\n"
                     "except da.DataAccessError as e:\n    print('REFUSED', e.status, e)\n")
    assert out["stdout"].strip() == f"REFUSED 502 {message}", out
    assert f"Refused to serve {dataset}" in dhub.log_tail(400)


# -- credentials stay in the service ----------------------------------------------------------


def test_s3_credentials_reach_neither_the_kernel_nor_the_users_files(dhub, kernel):
    """When the analyst loads the S3 dataset from a kernel, Then the rows arrive, and the kernel's
    environment, its server's environment and the analyst's files hold no S3 credential."""
    _grant(dhub, "gov-s3-parquet")
    out = kernel.run(
        "import os, json, jupyterhub_dataaccess as da\n"
        "df = da.load('gov-s3-parquet')\n"
        "print('ROWS', len(df))\n"
        "server_env = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('utf8', 'replace')\n"
        "print('ENV', json.dumps([dict(os.environ), server_env]))\n")
    assert out["error"] is None, out
    assert f"ROWS {EXPECTED_ROWS}" in out["stdout"]
    env_dump = out["stdout"].split("ENV ", 1)[1]
    for secret in (S3_KEY, S3_SECRET):
        assert secret not in env_dump
    assert "S3_KEY" not in env_dump and "S3_SECRET" not in env_dump
    home = os.path.join(dhub.state, "home", "analyst")
    for root, _dirs, files in os.walk(home):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    blob = f.read()
            except OSError:
                continue
            assert S3_KEY.encode() not in blob and S3_SECRET.encode() not in blob, name
    # the service, and only it, holds them (read here from outside, as the operator could)
    with open(f"/proc/{service_pid(dhub)}/environ", "rb") as f:
        assert S3_SECRET.encode() in f.read()


# -- the notebook client -----------------------------------------------------------------------


def test_load_returns_pandas_arrow_and_polars_with_projection(dhub, kernel):
    _grant(dhub, "gov-csv")
    out = kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "p = da.load('gov-csv')\n"
        "a = da.load('gov-csv', columns=['species', 'sex'], as_='arrow')\n"
        "pl = da.load('gov-csv', columns=['n'], as_='polars')\n"
        "print(type(p).__module__.split('.')[0], p.shape)\n"
        "print(type(a).__name__, a.column_names, a.num_rows, set(a.column('sex').to_pylist()))\n"
        "print(type(pl).__module__.split('.')[0], pl.shape)\n"
        "try:\n    da.load('gov-csv', columns=['nope'])\n"
        "except da.DataAccessError as e:\n    print('BAD', e.status, e)\n")
    assert out["error"] is None, out
    lines = out["stdout"].splitlines()
    assert lines[0] == f"pandas ({EXPECTED_ROWS}, 9)"
    assert lines[1] == f"Table ['species', 'sex'] {EXPECTED_ROWS} {{'REDACTED'}}"
    assert lines[2] == f"polars ({EXPECTED_ROWS}, 1)"
    assert lines[3] == "BAD 400 unknown column(s): nope"


def test_open_gives_a_file_like_object_in_every_format(dhub, kernel):
    _grant(dhub, "gov-jsonl")
    out = kernel.run(
        "import jupyterhub_dataaccess as da, pandas as pd, pyarrow as pa, pyarrow.parquet as pq\n"
        "with da.open('gov-jsonl', 'csv') as f:\n    c = pd.read_csv(f)\n"
        "with da.open('gov-jsonl', 'arrow') as f:\n    a = pa.ipc.open_stream(f).read_all()\n"
        "with da.open('gov-jsonl') as f:\n    p = pq.read_table(f)\n"
        "print(len(c), a.num_rows, p.num_rows, list(c.columns) == a.column_names == p.column_names)\n"
        "print(sorted(set(c['sex'])))\n")
    assert out["error"] is None, out
    assert out["stdout"].splitlines() == [f"{EXPECTED_ROWS} {EXPECTED_ROWS} {EXPECTED_ROWS} True",
                                          "['REDACTED']"]


def test_duckdb_relation_runs_sql_over_a_granted_dataset(dhub, kernel):
    _grant(dhub, "gov-sqlite")
    out = kernel.run(
        "import duckdb, jupyterhub_dataaccess as da\n"
        "rel = da.duckdb('gov-sqlite')\n"
        "print(sorted(rel.aggregate('species, count(*)').fetchall()))\n"
        "print(duckdb.sql('select count(distinct sex) from \"gov-sqlite\"').fetchall())\n")
    assert out["error"] is None, out
    counts = out["stdout"].splitlines()
    assert counts[0] == "[('Adelie', 100), ('Gentoo', 124)]"  # real data: 152-52 Adelie
    assert counts[1] == "[(1,)]"  # one masked value


def test_request_with_wait_returns_when_a_steward_approves(dhub, kernel):
    """When the kernel asks for reviewed data with wait=True, Then it waits, and returns approved
    as soon as the steward (here, the test) approves; the data then loads."""
    result: dict = {}
    code = ("import jupyterhub_dataaccess as da\n"
            "r = da.request('reviewed', justification='need it', wait=True, timeout=90, poll=0.3)\n"
            "print(r['status'], da.load('reviewed').shape)\n")
    t = threading.Thread(target=lambda: result.update(kernel.run(code, timeout=120)))
    t.start()
    deadline = time.monotonic() + 60
    pending = []
    while time.monotonic() < deadline and not pending:
        time.sleep(0.3)
        pending = [r for r in dhub.call("steward", "GET", "/requests",
                                        params={"scope": "review", "status": "pending"}
                                        ).json()["items"] if r["dataset"] == "reviewed"]
    assert pending, "the kernel's request never arrived"
    time.sleep(1)
    assert t.is_alive(), "da.request returned before the approval"
    r = dhub.call("steward", "POST", f"/requests/{pending[0]['id']}/approve", json={})
    assert r.status_code == 200
    t.join(60)
    assert result.get("error") is None, result
    assert result["stdout"].strip() == "approved (344, 9)"  # no row filter on this one


def test_request_wait_times_out_with_a_clear_error(dhub, kernel):
    out = kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "try:\n    da.request('mountable', justification='x', wait=True, timeout=1, poll=0.2)\n"
        "except TimeoutError as e:\n    print('TIMEOUT', e)\n")
    assert "TIMEOUT request" in out["stdout"] and "'mountable' is still pending" in out["stdout"]
    for r in dhub.call("analyst", "GET", "/requests", params={"status": "pending"}).json()["items"]:
        dhub.call("analyst", "POST", f"/requests/{r['id']}/withdraw")


# -- live grants: revoke and expiry bite in the running kernel ------------------------------


def test_revocation_stops_the_next_read_in_a_running_kernel(dhub, kernel):
    grant = _grant(dhub, "gov-jsonl")
    out = kernel.run("import jupyterhub_dataaccess as da; print(len(da.load('gov-jsonl')))")
    assert out["stdout"].strip() == str(EXPECTED_ROWS)
    r = dhub.call("steward", "DELETE", f"/grants/{grant['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    out = kernel.run(
        "try:\n    da.load('gov-jsonl')\nexcept da.AccessDenied as e:\n    print('DENIED', e)\n")
    assert "DENIED You have no active grant for 'gov-jsonl'" in out["stdout"]
    assert "da.request('gov-jsonl', justification=" in out["stdout"]


def test_expiry_stops_the_next_read_in_a_running_kernel(dhub, kernel):
    """When a grant of 0.0001 days (8.6 s) runs out, Then the next read is refused and the grant
    shows expired."""
    out = kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "r = da.request('shortlived', justification='brief look')\n"
        "print(r['status'], len(da.load('shortlived')))\n")
    assert out["stdout"].strip() == "approved 344"
    (grant,) = dhub.call("analyst", "GET", "/grants", params={"dataset": "shortlived",
                                                              "active": "true"}).json()["items"]
    from datetime import datetime, timezone

    expires = datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00"))
    wait = (expires - datetime.now(timezone.utc)).total_seconds() + 1
    assert 0 < wait < 12
    time.sleep(wait)
    out = kernel.run(
        "try:\n    da.load('shortlived')\nexcept da.AccessDenied as e:\n    print('DENIED', e.status)\n")
    assert out["stdout"].strip() == "DENIED 403"
    grants = dhub.call("analyst", "GET", "/grants", params={"dataset": "shortlived",
                                                            "active": "false"}).json()["items"]
    assert grants[0]["status"] == "expired"


# -- bounded memory ----------------------------------------------------------------------------


def test_a_large_file_streams_through_the_service_in_bounded_memory(dhub, data):
    """When a ~200 MB Parquet file (6 M rows) is read through the service, Then every row
    arrives and the service's peak RSS grows by far less than the data (one batch at a time)."""
    import requests
    from _common import reset_peak

    _grant(dhub, "large")
    pid = service_pid(dhub)
    reset_peak(pid)
    before = status_mb(pid, "VmRSS")
    url = f"http://127.0.0.1:{dhub.service_port}/services/dataaccess/api/v1/datasets/large/data"
    rows = 0
    with requests.get(url, headers={"Authorization": f"token {dhub.token('analyst')}"},
                      stream=True, timeout=300) as r:
        assert r.status_code == 200
        r.raw.decode_content = True
        with pa.ipc.open_stream(r.raw) as reader:
            for batch in reader:
                rows += batch.num_rows
    peak = status_mb(pid, "VmHWM")
    path = os.path.join(data, "large.parquet")
    size_mb = os.path.getsize(path) / 1e6
    arrow_mb = pq.read_table(path).nbytes / 1e6
    assert rows == 6_000_000
    assert size_mb > 150 and arrow_mb > 250
    # what a whole-table read would hold is arrow_mb, twice over with its IPC copy
    grew = peak - before
    print(f"service RSS {before:.0f} MB, peak {peak:.0f} MB (+{grew:.0f}) streaming "
          f"{size_mb:.0f} MB Parquet / {arrow_mb:.0f} MB Arrow")
    assert grew < min(200, arrow_mb / 1.5), f"service RSS grew {grew:.0f} MB"
    assert peak < 500


# -- mounts at spawn: security cases 24-27 ---------------------------------------------------


def _links(hub: Hub, user: str) -> dict[str, str]:
    root = os.path.join(hub.state, "home", user, "datasets")
    if not os.path.isdir(root):
        return {}
    return {e: os.readlink(os.path.join(root, e)) for e in os.listdir(root)
            if os.path.islink(os.path.join(root, e))}


def test_mounts_follow_grants_only_and_a_revoke_before_respawn_removes_them(dhub, data):
    """Case 24/25: user_options and the user's own links add no mount; a granted dataset is
    linked at spawn; revoked before the next spawn, it is gone."""
    user = "steward2"
    grant = _grant(dhub, "mountable", user)
    home = os.path.join(dhub.state, "home", user)
    os.makedirs(os.path.join(home, "datasets"), exist_ok=True)
    os.symlink(os.path.join(data, "mounts", "other"),
               os.path.join(home, "datasets", "other-mountable"))  # the user's own "mount"
    os.makedirs(os.path.join(home, ".jupyter"), exist_ok=True)
    with open(os.path.join(home, ".jupyter", "jupyter_server_config.json"), "w") as f:
        json.dump({"ServerApp": {"jpserver_extensions": {"jupyterhub_dataaccess": False}}}, f)
    r = dhub.hub_api("POST", f"/users/{user}/server", json={
        "mounts": [{"dataset": "other-mountable", "path": "/"}],
        "volumes": {"/": {"bind": "/root", "mode": "rw"}}, "DATAACCESS_GRANTS": "other-mountable"})
    assert r.status_code in (201, 202), r.text
    dhub.start_server(user)
    assert _links(dhub, user) == {"mountable": os.path.join(data, "mounts", "mountable")}
    k = Kernel(dhub, user)
    out = k.run("import os; print(os.environ['DATAACCESS_GRANTS']);"
                "print(open(os.path.expanduser('~/datasets/mountable/part.csv')).read())\n"
                "import jupyterhub_dataaccess as da\n"
                "try:\n    da.load('other-mountable')\nexcept da.AccessDenied:\n    print('DENIED')\n")
    k.shutdown()
    assert out["stdout"].split() == ["mountable", "note", "granted", "data", "DENIED"]
    dhub.stop_server(user)
    assert dhub.call("steward", "DELETE", f"/grants/{grant['id']}").status_code == 200
    dhub.start_server(user)
    assert _links(dhub, user) == {}
    dhub.stop_server(user)


def test_a_second_named_server_gets_exactly_the_users_grants_and_mounts(dhub, data):
    """Case 27."""
    user = "otherstew"
    _grant(dhub, "mountable", user)
    dhub.start_server(user, "second")
    try:
        k = Kernel(dhub, user, "second")
        out = k.run("import os; print(os.environ['DATAACCESS_GRANTS'])")
        k.shutdown()
        active = dhub.call(user, "GET", "/grants", params={"active": "true"}).json()["items"]
        assert out["stdout"].strip().split(",") == sorted({g["dataset"] for g in active})
        assert _links(dhub, user) == {"mountable": os.path.join(data, "mounts", "mountable")}
    finally:
        dhub.stop_server(user, "second")


def _spawn_outcome(hub: Hub, user: str, timeout: float = 90) -> dict:
    """Start the user's server and wait for its outcome: the progress API's last event."""
    import requests

    r = hub.hub_api("POST", f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.hub_api("GET", f"/users/{user}").json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return {"ready": True}
        if not server or not server.get("pending"):
            break
        time.sleep(0.5)
    resp = requests.get(f"{hub.url}/hub/api/users/{user}/server/progress",
                        headers={"Authorization": f"token {hub.token(user)}"}, timeout=30)
    events = [json.loads(line[5:]) for line in resp.text.splitlines()
              if line.startswith("data:")]
    return events[-1] if events else {"status": resp.status_code, "text": resp.text}


def test_the_service_down_at_spawn_fails_the_spawn_closed_with_a_clear_message(dhub):
    """Case 26: when the service does not answer, Then the spawn is refused and the user reads
    why; when it answers again, the spawn works."""
    pid = service_pid(dhub)
    os.kill(pid, signal.SIGSTOP)
    try:
        outcome = _spawn_outcome(dhub, "nobody")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert outcome.get("failed") is True, outcome
    assert outcome["message"] == (
        "Spawn failed: The data access service is not answering, so your server was not "
        "started. Try again in a minute; if it persists, tell your JupyterHub operator.")
    assert "Refusing spawn of nobody" in dhub.log_tail(300)
    assert _spawn_outcome(dhub, "nobody") == {"ready": True}
    dhub.stop_server("nobody")


# -- a malformed row filter stops the service ------------------------------------------------


def test_a_malformed_row_filter_stops_the_service_naming_the_dataset(tmp_path):
    """When the catalogue holds a row filter that does not parse, Then the service refuses to
    start and names file, line, dataset and field; no source is read."""
    import subprocess

    from hubutil import REPO

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("datasets:\n  - id: fine\n    source: {kind: file, uri: /x.csv}\n"
                       "  - id: leaky\n    source: {kind: file, uri: /y.csv}\n"
                       "    row_filter: \"region = 'north' or __import__('os')\"\n")
    (tmp_path / "policy.yaml").write_text("rules: []\n")
    env = dict(os.environ, PYTHONPATH=REPO, DATAACCESS_CATALOG=str(catalog),
               DATAACCESS_POLICY=str(tmp_path / "policy.yaml"),
               DATAACCESS_DB_URL=f"sqlite:///{tmp_path}/d.sqlite",
               JUPYTERHUB_SERVICE_URL="http://127.0.0.1:1")
    p = subprocess.run([sys.executable, "-m", "jupyterhub_dataaccess", "service"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert f"{catalog} line 6: dataset 'leaky': field 'row_filter'" in p.stderr
    assert "Traceback" not in p.stderr
