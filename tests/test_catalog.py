"""The catalogue file (config_files.py): loading, and validation errors that name file, line, dataset, field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyterhub_dataaccess.config_files import CatalogError, load_catalog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = """\
datasets:
  - id: penguins
    title: Palmer penguins
    description: Size measurements of three penguin species.
    owner: bob
    stewards: {users: [bob], groups: [stewards]}
    classification: public
    tags: [biology, teaching]
    source: {kind: file, uri: /srv/data/penguins.csv, format: csv}
    columns:
      body_mass_g: {mask: redact}
      sex: {mask: hash}
      year: {mask: "null"}
    row_filter: "island != 'Torgersen'"
  - id: penguins-raw
    source: {kind: file, uri: /srv/data/penguins-raw, format: csv}
    mount: {path: /srv/data/penguins-raw/}
  - id: flights.2013_v1
    source: {kind: file, uri: "s3://bucket/flights.parquet", options: {anon: true}}
  - id: sales
    classification: confidential
    source: {kind: sql, url: "sqlite:///${HOME}/sales.db", table: main.sales}
  - id: q1
    classification: restricted
    source: {kind: sql, url: "postgresql://db/x", query: "select * from t where a > 1"}
  - id: imagery
    source: {kind: file, uri: "file:///srv/data/imagery-2024/tiles.parquet"}
    mount: {path: /imagery-2024/tiles.parquet, claim: data-pvc}
"""


def catalog_file(tmp_path: Path, text: str, name: str = "catalog.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def one(source: str = "{kind: file, uri: /d.csv}", **fields: str) -> str:
    """A catalogue with one dataset 'ds'; each keyword is one more 'key: value' line."""
    lines = ["datasets:", "  - id: ds", f"    source: {source}"]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def error_of(tmp_path: Path, text: str) -> str:
    path = catalog_file(tmp_path, text)
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    return str(e.value)


# -- the happy path -----------------------------------------------------------------------------


def test_when_a_good_catalogue_is_loaded_then_every_field_is_kept(tmp_path):
    cat = load_catalog(catalog_file(tmp_path, GOOD))
    assert list(cat.datasets) == ["penguins", "penguins-raw", "flights.2013_v1", "sales", "q1",
                                  "imagery"]
    p = cat.get("penguins")
    assert (p.title, p.owner, p.classification, p.tags) == (
        "Palmer penguins", "bob", "public", ("biology", "teaching"))
    assert (p.stewards.users, p.stewards.groups) == (("bob",), ("stewards",))
    assert (p.source.kind, p.source.uri, p.source.format) == ("file", "/srv/data/penguins.csv",
                                                              "csv")
    assert p.masks == {"body_mass_g": "redact", "sex": "hash", "year": "null"}
    assert p.row_filter.text == "island != 'Torgersen'"
    assert p.mount_path == ""
    r = cat.get("penguins-raw")
    assert (r.mount_path, r.mount_claim, r.mount_file) == ("/srv/data/penguins-raw/", "", True)
    f = cat.get("flights.2013_v1")
    assert (f.title, f.classification, f.source.format, f.source.options) == (
        "flights.2013_v1", "internal", "parquet", {"anon": True})
    s = cat.get("sales")
    assert (s.source.kind, s.source.table, s.source.query) == ("sql", "main.sales", "")
    assert s.source.url == "sqlite:///${HOME}/sales.db"  # expanded only when read, in the service
    q = cat.get("q1")
    assert (q.source.query, q.mount_path) == ("select * from t where a > 1", "")
    i = cat.get("imagery")
    assert (i.mount_path, i.mount_claim, i.mount_file) == (
        "/imagery-2024/tiles.parquet", "data-pvc", True)
    assert cat.get("nope") is None
    assert cat.stewarded_by("bob", set()) == ["penguins"]
    assert cat.stewarded_by("ann", {"stewards"}) == ["penguins"]


def test_when_a_dataset_is_shown_to_browsers_then_no_source_location_leaks(tmp_path):
    cat = load_catalog(catalog_file(tmp_path, GOOD))
    shown = cat.get("sales").public_dict()
    assert "source" not in shown and "sqlite" not in repr(shown)
    p = cat.get("penguins").public_dict()
    assert p["masked_columns"] == ["body_mass_g", "sex", "year"]
    assert p["mountable"] is False
    r = cat.get("penguins-raw").public_dict()
    assert r["mountable"] is True and "/srv" not in repr(r)


@pytest.mark.parametrize("uri, fmt", [("/a/b.parquet", "parquet"), ("/a/b.PQ", "parquet"),
                                      ("/a/b.csv", "csv"), ("/a/b.jsonl", "jsonl"),
                                      ("/a/b.ndjson", "jsonl")])
def test_when_the_format_is_left_out_then_it_comes_from_the_file_suffix(tmp_path, uri, fmt):
    cat = load_catalog(catalog_file(tmp_path, one(f"{{kind: file, uri: {uri}}}")))
    assert cat.get("ds").source.format == fmt


def test_when_the_demo_catalogue_is_loaded_then_it_is_valid():
    import jupyterhub_dataaccess.demo as demo

    path = os.path.join(os.path.dirname(demo.__file__), "catalog.yaml")
    assert len(load_catalog(path).datasets) >= 5


# -- every error names file, line, dataset and field -------------------------------------------


def assert_names(message: str, path: str, line: int, dataset: str, field: str) -> None:
    assert message.startswith(f"{path} line {line}:"), message
    assert f"dataset {dataset!r}" in message, message
    assert f"field {field!r}" in message, message


@pytest.mark.parametrize("bad_id", [
    "Penguins", "PENGUINS", "-penguins", ".penguins", "_x", "a b", "a/b", "a\\b", "a:b",
    "a..b", "..", "penguins\n", "x" * 65, "",
    "p\u0435nguins",  # Cyrillic e
    "penguin\u0455",  # Cyrillic dze looks like s
    "\uff50enguins",  # fullwidth p
    "penguins\u200b",  # zero-width space
    "pe\u0301nguins",  # combining accent
    "\u0661\u0662",  # Arabic-Indic digits
])
def test_when_an_id_is_not_lowercase_ascii_then_the_error_names_it(tmp_path, bad_id):
    text = f"datasets:\n  - title: T\n    id: {json.dumps(bad_id)}\n    source: {{kind: file}}\n"
    path = catalog_file(tmp_path, text)
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert_names(str(e.value), path, 3, bad_id or "#1", "id")


def test_when_an_id_is_one_megabyte_then_the_error_is_short_and_names_the_line(tmp_path):
    path = catalog_file(tmp_path, one().replace("id: ds", "id: " + "a" * 1_000_000))
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    message = str(e.value)
    assert message.startswith(f"{path} line 2:")
    assert "field 'id'" in message
    assert len(message) < 1000, "the error echoes the whole id"


def test_when_an_id_is_not_a_string_then_the_dataset_is_named_by_position(tmp_path):
    message = error_of(tmp_path, "datasets:\n  - id: ok\n    source: {kind: file, uri: /a.csv}\n"
                                 "  - id: 42\n    source: {kind: file, uri: /a.csv}\n")
    assert "line 4" in message and "dataset '#2'" in message and "field 'id'" in message


@pytest.mark.parametrize("fields, line, field, words", [
    ({"classification": "secret"}, 4, "classification", "public, internal, confidential, restricted"),
    ({"classification": "Public"}, 4, "classification", "must be one of"),
    ({"colour": "blue"}, 4, "colour", "not a known field"),
    ({"title": "[a, b]"}, 4, "title", "must be a string"),
    ({"description": "{a: 1}"}, 4, "description", "must be a string"),
    ({"owner": "[bob]"}, 4, "owner", "hub user"),
    ({"tags": "[ok, '']"}, 4, "tags", "non-empty strings"),
    ({"tags": "{a: 1}"}, 4, "tags", "non-empty strings"),
    ({"stewards": "[bob]"}, 4, "stewards", "must be a mapping"),
    ({"stewards": "{users: bob, groups: [1]}"}, 4, "groups", "non-empty strings"),
    ({"columns": "[sex]"}, 4, "columns", "must be a mapping"),
    ({"columns": "{sex: {mask: blur}}"}, 4, "sex", "needs mask: one of redact, hash, hash-v1, hash-v2, null"),
    ({"columns": "{sex: redact}"}, 4, "sex", "needs mask"),
    ({"columns": "{sex: {}}"}, 4, "sex", "needs mask"),
    ({"columns": "{sex: {mask: null}}"}, 4, "sex", 'quote it: mask: "null"'),
    ({"columns": "{sex: {mask: }}"}, 4, "sex", 'quote it: mask: "null"'),
    ({"row_filter": "\"__import__('os')\""}, 4, "row_filter", "expected a comparison"),
    ({"row_filter": "\"island == 'x\""}, 4, "row_filter", "unexpected character"),
    ({"row_filter": "\"a == 1; drop table t\""}, 4, "row_filter", "unexpected character"),
    ({"row_filter": "42"}, 4, "row_filter", "must be a string"),
    ({"mount": "/srv/data"}, 4, "mount", "{path: /absolute/path}"),
    ({"mount": "{path: srv/data}"}, 4, "mount", "absolute"),
    ({"mount": "{path: ./data}"}, 4, "mount", "absolute"),
    ({"mount": "{path: /srv/../etc}"}, 4, "mount", "no '..'"),
    ({"mount": "{path: /srv/data/..}"}, 4, "mount", "no '..'"),
    ({"mount": "{path: '/srv\\data'}"}, 4, "mount", "no '..'"),
    ({"mount": "{path: /srv, claim: Bad_Claim}"}, 4, "mount", "PersistentVolumeClaim"),
    ({"mount": "{path: /srv, readonly: false}"}, 4, "mount", "unknown field 'readonly'"),
    ({"mount": "{path: /srv/data}"}, 4, "mount", "must be the source's own (its uri)"),
    ({"mount": "{path: /, claim: data}"}, 4, "mount", "the source's uri must end with it"),
    ({"mount": "{path: /e.csv, claim: data}"}, 4, "mount", "the source's uri must end with it"),
])
def test_when_a_dataset_field_is_wrong_then_the_error_names_file_line_dataset_field(
        tmp_path, fields, line, field, words):
    path = catalog_file(tmp_path, one(**fields))
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert_names(str(e.value), path, line, "ds", field)
    assert words in str(e.value)


@pytest.mark.parametrize("source, fields, words", [
    ("{kind: file, uri: /d.csv}", {"columns": "{sex: {mask: hash}}"}, "masks (columns)"),
    ("{kind: file, uri: /d.csv}", {"row_filter": "\"a == 1\""}, "or a row_filter"),
    ("{kind: sql, url: 'sqlite:////d.db', table: t}", {}, "only a local 'kind: file' source"),
    ("{kind: s3, uri: 's3://b/d.csv'}", {}, "only a local 'kind: file' source"),
    ("{kind: file, uri: 's3://b/d.csv'}", {}, "only a local 'kind: file' source"),
])
def test_when_a_mount_would_bypass_governance_then_it_is_refused_at_its_line(tmp_path, source,
                                                                             fields, words):
    """Security case 42: a mount hands out files ungoverned, so it is refused on a dataset with
    masks or a row filter and on any source but a local file, naming the line of `mount:`."""
    text = one(source, **fields) + "    title: T\n    mount: {path: /d.csv}\n"
    message = error_of(tmp_path, text)
    assert_names(message, str(tmp_path / "catalog.yaml"), 3 + len(fields) + 2, "ds", "mount")
    assert words in message


def test_when_a_mount_path_is_a_link_to_elsewhere_then_it_is_refused(tmp_path):
    """Security case 42: the mount path and the source's path compare after resolving links, so
    a link that names the source but leads elsewhere is refused, and a link to the source kept."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.csv").write_text("a\n1\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "secrets")
    (tmp_path / "same").symlink_to(tmp_path / "data")
    src = f"{{kind: file, uri: {tmp_path}/data/d.csv}}"
    message = error_of(tmp_path, one(src, mount=f"{{path: {tmp_path}/via}}"))
    assert "must be the source's own" in message
    ds = load_catalog(catalog_file(tmp_path, one(src, mount=f"{{path: {tmp_path}/same/d.csv}}"))
                      ).get("ds")
    assert (ds.mount_path, ds.mount_file) == (f"{tmp_path}/same/d.csv", True)
    folder = load_catalog(catalog_file(tmp_path, one(
        f"{{kind: file, uri: {tmp_path}/data, format: csv}}", mount=f"{{path: {tmp_path}/data}}")))
    assert folder.get("ds").mount_file is False


def test_when_a_mask_is_wrong_on_a_later_line_then_that_line_is_named(tmp_path):
    path = catalog_file(tmp_path, textwrap.dedent("""\
        datasets:
          - id: ds
            source: {kind: file, uri: /d.csv}
            columns:
              a: {mask: hash}
              b: {mask: shuffle}
        """))
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert_names(str(e.value), path, 6, "ds", "b")


def test_when_the_source_is_missing_then_the_error_says_it_is_required(tmp_path):
    path = catalog_file(tmp_path, "datasets:\n  - id: ds\n    title: T\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert "dataset 'ds'" in str(e.value) and "field 'source': is required" in str(e.value)
    assert str(e.value).startswith(path)


@pytest.mark.parametrize("source, field, words", [
    ("/d.csv", "source", "must be a mapping"),
    ("{kind: ftp, uri: /d.csv}", "kind", "file, sql, s3"),
    ("{uri: /d.csv}", "kind", "file, sql, s3"),
    ("{kind: file}", "uri", "is required"),
    ("{kind: file, uri: ''}", "uri", "is required"),
    ("{kind: file, uri: /d.xlsx}", "format", "csv, parquet, jsonl"),
    ("{kind: file, uri: /d.csv, format: excel}", "format", "csv, parquet, jsonl"),
    ("{kind: s3, uri: s3://b/k.csv, options: [a]}", "options", "must be a mapping"),
    ("{kind: sql, table: t}", "url", "SQLAlchemy URL"),
    ("{kind: sql, url: 'sqlite://'}", "table", "exactly one of 'table' or 'query'"),
    ("{kind: sql, url: 'sqlite://', table: t, query: 'select 1'}", "table", "exactly one"),
    ("{kind: sql, url: 'sqlite://', table: 't; drop table x'}", "table", "plain"),
    ("{kind: sql, url: 'sqlite://', table: 'a.b.c'}", "table", "plain"),
    ("{kind: sql, url: 'sqlite://', table: 5}", "table", "must be a string"),
    ("{kind: sql, url: 'sqlite://', query: [select 1]}", "query", "string"),
    ("{kind: sql, url: 'sqlite://', table: t, partition_by: 'a; b'}", "partition_by", "plain"),
    ("{kind: sql, url: 'sqlite://', table: t, partition_by: [a]}", "partition_by", "plain"),
    ("{kind: sql, url: 'sqlite://', query: 'select 1', partition_by: a}", "partition_by",
     "a 'table' only"),
    ("{kind: file, uri: /d.csv, partition_by: a}", "partition_by", "not a known field"),
])
def test_when_the_source_is_wrong_then_the_error_names_the_source_field(tmp_path, source, field,
                                                                       words):
    path = catalog_file(tmp_path, one(source))
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert_names(str(e.value), path, 3, "ds", field)
    assert words in str(e.value)


def test_when_a_sql_table_is_split_by_a_masked_column_then_the_catalogue_is_refused(tmp_path):
    """When partition_by names a masked column, Then the load fails at partition_by's line
    (the ranges' bounds travel in tickets as raw values); an unmasked key loads."""
    text = textwrap.dedent("""\
        datasets:
          - id: ds
            source:
              kind: sql
              url: "sqlite://"
              table: t
              partition_by: id
            columns: {id: {mask: hash}}
        """)
    with pytest.raises(CatalogError) as e:
        load_catalog(catalog_file(tmp_path, text))
    assert_names(str(e.value), str(tmp_path / "catalog.yaml"), 7, "ds", "partition_by")
    assert "is masked" in str(e.value)
    ok = load_catalog(catalog_file(tmp_path, text.replace("id: {mask", "other: {mask")))
    assert ok.get("ds").source.partition_by == "id"


def test_when_two_datasets_share_an_id_then_the_second_is_named(tmp_path):
    path = catalog_file(tmp_path, textwrap.dedent("""\
        datasets:
          - id: ds
            source: {kind: file, uri: /a.csv}
          - id: other
            source: {kind: file, uri: /b.csv}
          - id: ds
            source: {kind: file, uri: /c.csv}
        """))
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert_names(str(e.value), path, 6, "ds", "id")
    assert "used by two datasets" in str(e.value)


@pytest.mark.parametrize("text, words", [
    ("", "must be a mapping with a 'datasets' list"),
    ("- id: ds\n", "must be a mapping with a 'datasets' list"),
    ("datasets: {id: ds}\n", "must be a mapping with a 'datasets' list"),
    ("datasets:\n  - ds\n", "datasets[0]: must be a mapping"),
    ("datasets:\n  - id: ds\n    source: {kind: file\n", "not valid YAML"),
    ("datasets:\n  - id: ds\n\tsource: x\n", "not valid YAML"),
    ("datasets: !!python/object/apply:os.system [id]\n", "not valid YAML"),
])
def test_when_the_file_as_a_whole_is_wrong_then_the_error_names_the_file(tmp_path, text, words):
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "catalog.yaml"))
    assert words in message


def test_when_the_file_does_not_exist_then_the_error_names_it(tmp_path):
    with pytest.raises(CatalogError, match=r"missing\.yaml: cannot read"):
        load_catalog(str(tmp_path / "missing.yaml"))


# -- the command ---------------------------------------------------------------------------------


def validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyterhub_dataaccess", "catalog", "validate", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def test_when_the_command_validates_a_good_catalogue_and_policy_then_it_exits_0(tmp_path):
    cat = catalog_file(tmp_path, GOOD)
    pol = catalog_file(tmp_path, "rules:\n  - match: {classification: public}\n"
                                 "    decision: auto\n", "policy.yaml")
    done = validate(cat, "--policy", pol)
    assert done.returncode == 0, done.stderr
    assert f"{cat}: OK, 6 datasets" in done.stdout
    assert f"{pol}: OK, 1 rules" in done.stdout


def test_when_the_command_validates_a_bad_catalogue_then_it_exits_1_naming_line_and_field(
        tmp_path):
    cat = catalog_file(tmp_path, one(classification="secret"))
    done = validate(cat)
    assert done.returncode == 1
    assert f"error: {cat} line 4: dataset 'ds': field 'classification'" in done.stderr
    assert "Traceback" not in done.stderr


def test_when_the_command_validates_a_bad_policy_then_it_exits_1(tmp_path):
    cat = catalog_file(tmp_path, GOOD)
    pol = catalog_file(tmp_path, "rules:\n  - decision: sometimes\n", "policy.yaml")
    done = validate(cat, "--policy", pol)
    assert done.returncode == 1
    assert f"{pol} line 2: field 'decision'" in done.stderr and "Traceback" not in done.stderr


def test_when_the_command_is_given_a_missing_file_then_it_exits_2(tmp_path):
    done = validate(str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_when_check_sources_runs_then_each_dataset_is_read_as_the_service_would(tmp_path):
    """Issue 16 item 2: --check-sources opens every source and names, per dataset, what would
    stop it being served (a column in the wrong case, a renamed one, a filter that cannot run, a
    missing file); a resolved ${ENV} secret is never printed; exit 1 on any, 0 when all read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"species": ["Adelie"], "sex": ["male"], "year": [2007]}),
                   tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_text("species,sex\nAdelie,male\n")
    src = f"{{kind: file, uri: {tmp_path}/p.parquet}}"
    text = textwrap.dedent(f"""\
        datasets:
          - id: good
            source: {src}
            columns: {{sex: {{mask: hash}}, year: {{mask: "null"}}}}
            row_filter: "species != 'Gentoo'"
          - id: wrong-case
            source: {src}
            columns: {{Sex: {{mask: redact}}}}
          - id: renamed
            source: {{kind: file, uri: {tmp_path}/p.csv}}
            row_filter: "yr > 2000"
          - id: cannot-run
            source: {src}
            row_filter: "species > 3"
          - id: missing
            source: {{kind: file, uri: "${{DATA_DIR}}/gone.csv"}}
          - id: no-db
            source: {{kind: sql, url: "sqlite:///{tmp_path}/none.db", table: t}}
          - id: no-key
            source: {{kind: sql, url: "sqlite:///{tmp_path}/t.db", table: t, partition_by: ID}}
          - id: text-key
            source: {{kind: sql, url: "sqlite:///{tmp_path}/t.db", table: t, partition_by: name}}
        """)
    import sqlite3

    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.execute("create table t (id integer, name text)")
        conn.execute("insert into t values (1, 'a')")
    cat = catalog_file(tmp_path, text)
    env_value = str(tmp_path / "secret-dir")
    done = subprocess.run(
        [sys.executable, "-m", "jupyterhub_dataaccess", "catalog", "validate", cat,
         "--check-sources"], capture_output=True, text=True, timeout=120, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, DATA_DIR=env_value))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [f"{cat}: OK, 8 datasets", "good: OK"]
    assert done.stderr.splitlines() == [
        "wrong-case: FAILED: the catalogue masks column 'Sex', which the source lacks (did you "
        "mean 'sex'?)",
        "renamed: FAILED: the row filter names column 'yr', which the source lacks",
        "cannot-run: FAILED: the row filter: column 'species' holds text; compare it with a "
        "quoted string, not a number",
        "missing: FAILED: the source cannot be read: FileNotFoundError: ${DATA_DIR}/gone.csv",
        f"no-db: FAILED: the source cannot be read: no SQLite file at {tmp_path}/none.db",
        "no-key: FAILED: the catalogue splits by column 'ID' (partition_by), which the source "
        "lacks (did you mean 'id'?)",
        "text-key: FAILED: the catalogue splits by column 'name' (partition_by), of type "
        "string: it must be an integer, date or timestamp column",
        "sources: 7 of 8 datasets would not be served; fix the catalogue or the sources"]
    assert env_value not in done.stderr and not (tmp_path / "none.db").exists()
    assert "Traceback" not in done.stderr
    good = catalog_file(tmp_path, text.split("  - id: wrong-case")[0], "good.yaml")
    done = validate(good, "--check-sources")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "sources: OK, 1 datasets readable as the service reads them"


def test_when_a_key_is_given_twice_then_the_file_is_refused_at_that_line(tmp_path):
    text = "datasets:\n  - id: a\n    id: b\n    source: {kind: file, uri: /x.csv}\n"
    message = error_of(tmp_path, text)
    assert "line 3" in message and "duplicate key 'id'" in message


@pytest.mark.parametrize("source,field", [
    ("{kind: file, uri: /x.csv, password: hunter2}", "password"),
    ("{kind: sql, url: 'sqlite://', table: t, uri: /x}", "uri"),
])
def test_when_a_source_has_an_unknown_field_then_it_is_named(tmp_path, source, field):
    message = error_of(tmp_path, f"datasets:\n  - id: a\n    source: {source}\n")
    assert f"dataset 'a': field '{field}': is not a known field" in message


def test_when_stewards_or_columns_have_unknown_fields_then_they_are_named(tmp_path):
    text = ("datasets:\n  - id: a\n    stewards: {users: [bob], admins: [eve]}\n"
            "    source: {kind: file, uri: /x.csv}\n")
    assert "field 'admins': is not a known stewards field" in error_of(tmp_path, text)
    text = ("datasets:\n  - id: a\n    source: {kind: file, uri: /x.csv}\n"
            "    columns:\n      ssn: {mask: hash, unmask_for: [eve]}\n")
    assert "field 'ssn': takes only 'mask'" in error_of(tmp_path, text)


def test_when_the_service_starts_with_a_mount_that_bypasses_governance_then_it_refuses(tmp_path):
    """Security case 42 at service start: the service reads the catalogue with the same rules,
    refuses to start naming line and field, and creates no database."""
    cat = catalog_file(tmp_path, one(columns="{sex: {mask: hash}}", mount="{path: /d.csv}"))
    pol = catalog_file(tmp_path, "rules: []\n", "policy.yaml")
    db = tmp_path / "da.sqlite"
    done = subprocess.run(
        [sys.executable, "-m", "jupyterhub_dataaccess", "service", f"--catalog={cat}",
         f"--policy={pol}", f"--db-url=sqlite:///{db}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 2
    assert (f"Refusing to start: {cat} line 5: dataset 'ds': field 'mount': a dataset with masks "
            "(columns) or a row_filter cannot be mounted") in done.stderr
    assert "Traceback" not in done.stderr and not db.exists()
