"""Iceberg and Delta tables end to end on the session hub: a real kernel loads them with masks,
the row filter, `where`, a projection and a past version; what it gets names the dataset, the
version and the audit record, and the audit record names the version.

The session catalogue (conftest.py) holds the penguins as `birds-iceberg` (pyiceberg's SQL
catalog on SQLite, warehouse on local disk) and `birds-delta`, each with two versions: the first
LAKE_FIRST_ROWS rows, then the rest appended. Both hash body_mass_g, redact sex and keep only
rows with island != 'Torgersen'.
"""

from __future__ import annotations

import json

import palmerpenguins
import pytest
from conftest import LAKE_FIRST_ROWS
from hubutil import Hub, Kernel

# One run: reading tables, masks and versions; the database side of grants and audit is
# covered by the integration tests.
pytestmark = pytest.mark.once
DATASETS = ("birds-iceberg", "birds-delta")


def _versions(config_files: dict[str, str], ds: str) -> tuple[str, str]:
    """(first, current) version of one of the session's lakehouse tables, as its format
    numbers them."""
    if ds == "birds-delta":
        return "0", "1"
    from pyiceberg.catalog.sql import SqlCatalog

    data = config_files["data"]
    table = SqlCatalog("lake", uri=f"sqlite:///{data}/iceberg/catalog.db",
                       init_catalog_tables="false").load_table("lake.birds")
    first, current = (str(s.snapshot_id) for s in table.snapshots())
    return first, current


def _visible(frame):  # what the row filter lets through
    return frame[frame.island.notna() & (frame.island != "Torgersen")]


@pytest.fixture(scope="module")
def kernel(hub: Hub, analyst_kernel: Kernel) -> Kernel:
    for ds in DATASETS:  # public: granted at once
        r = hub.call("analyst", "POST", "/requests",
                     json={"dataset": ds, "justification": "lakehouse tests", "days": 1})
        assert r.status_code in (201, 409), r.text
    return analyst_kernel


@pytest.mark.parametrize("ds", DATASETS)
def test_a_lakehouse_table_loads_governed_with_where_projection_and_its_version(
        hub, kernel, config_files, ds):
    first, current = _versions(config_files, ds)
    out = kernel.run(f"""
import json, jupyterhub_dataaccess as da
df = da.load({ds!r}, columns=["island", "sex", "body_mass_g", "year"], where="year >= 2008")
past = da.load({ds!r}, version={first!r}, as_="arrow")
print(json.dumps({{
    "columns": list(df.columns), "rows": len(df), "islands": sorted(set(df.island)),
    "sex": sorted(set(df.sex)), "mass": sorted({{type(v).__name__ for v in df.body_mass_g.dropna()}}),
    "years": sorted(int(y) for y in set(df.year)), "attrs": df.attrs["dataaccess"],
    "past_rows": past.num_rows,
    "past": json.loads(past.schema.metadata[b"dataaccess"]),
    "provenance": da.provenance(past)}}))
""")
    assert out["error"] is None, out
    got = json.loads(out["stdout"])
    penguins = palmerpenguins.load_penguins()
    want = _visible(penguins)
    assert got["columns"] == ["island", "sex", "body_mass_g", "year"]
    assert got["rows"] == int((want.year >= 2008).sum())
    assert got["islands"] == ["Biscoe", "Dream"] and got["sex"] == ["REDACTED"]
    assert got["mass"] == ["str"] and got["years"] == [2008, 2009]
    assert got["attrs"]["dataset"] == ds and got["attrs"]["version"] == current
    assert got["past_rows"] == len(_visible(penguins.iloc[:LAKE_FIRST_ROWS]))
    assert got["past"]["version"] == first == got["provenance"]["version"]
    audit = hub.call("admin", "GET", "/audit", params={"dataset": ds, "limit": 200}
                     ).json()["items"]
    # da.load's read is a scan plan: its data.scan record names the version (each partition's
    # data.read names the plan)
    by_seq = {r["seq"]: r for r in audit if r["action"] in ("data.read", "data.scan")}
    assert by_seq[got["attrs"]["audit_seq"]]["detail"]["version"] == current
    assert by_seq[got["past"]["audit_seq"]]["detail"]["version"] == first
    assert by_seq[got["past"]["audit_seq"]]["actor"] == "analyst"


@pytest.mark.parametrize("ds", DATASETS)
def test_details_and_previews_name_the_version(hub, kernel, config_files, ds):
    first, current = _versions(config_files, ds)
    details = hub.call("analyst", "GET", f"/datasets/{ds}").json()
    assert details["version"] == current and isinstance(details["version"], str)
    assert {c["name"]: c["mask"] for c in details["columns"]}["body_mass_g"] == "hash"
    assert details["rows"] is None  # a row filter applies: not known without a scan
    preview = hub.call("analyst", "GET", f"/datasets/{ds}/preview",
                       params={"version": first, "limit": 5})
    assert preview.status_code == 200, preview.text
    assert preview.json()["version"] == first and len(preview.json()["rows"]) == 5
    audit = hub.call("admin", "GET", "/audit", params={"dataset": ds, "action": "data.preview",
                                                       "limit": 1}).json()["items"]
    assert audit[0]["detail"]["version"] == first


@pytest.mark.parametrize("ds", DATASETS)
def test_an_unknown_version_is_a_404_naming_it_and_reads_nothing(hub, kernel, ds):
    before = hub.call("admin", "GET", "/audit", params={"dataset": ds, "limit": 1}).json()
    r = hub.call("analyst", "GET", f"/datasets/{ds}/data", params={"version": "424242"})
    assert r.status_code == 404 and "424242" in r.json()["message"], r.text
    after = hub.call("admin", "GET", "/audit", params={"dataset": ds, "limit": 1}).json()
    assert after["items"][0]["seq"] == before["items"][0]["seq"]  # no data.read recorded
    out = kernel.run(f"""
import jupyterhub_dataaccess as da
try:
    da.load({ds!r}, version="424242")
except da.DataAccessError as e:
    print(e.status, e)
""")
    assert out["stdout"].startswith("404") and "424242" in out["stdout"], out


def test_a_file_dataset_names_its_version_too(hub, kernel):
    details = hub.call("analyst", "GET", "/datasets/penguins").json()
    assert isinstance(details["version"], str) and len(details["version"]) == 16
    # checked before the grant (details show the current version to anyone who may browse)
    stale = hub.call("nobody", "GET", "/datasets/penguins/data", params={"version": "0" * 16})
    assert stale.status_code == 404 and "0" * 16 in stale.json()["message"]


@pytest.mark.parametrize("ds", DATASETS)
def test_a_scan_plan_of_a_past_version_has_a_partition_per_data_file_and_reads_governed(
        kernel, config_files, ds):
    first, _ = _versions(config_files, ds)
    out = kernel.run(f"""
import json, jupyterhub_dataaccess as da
plan = da.scan({ds!r}, columns=["island", "sex"], version={first!r})
frame = da.load({ds!r}, columns=["island", "sex"], version={first!r}, as_="dask").compute()
print(json.dumps({{"version": plan["version"], "parts": len(plan["partitions"]),
                  "rows": len(frame), "islands": sorted(set(frame.island)),
                  "sex": sorted(set(frame.sex))}}))
""")
    assert out["error"] is None, out
    got = json.loads(out["stdout"])
    visible = _visible(palmerpenguins.load_penguins().iloc[:LAKE_FIRST_ROWS])
    assert got == {"version": first, "parts": 1, "rows": len(visible),
                   "islands": sorted(set(visible.island)), "sex": ["REDACTED"]}


def test_a_table_its_catalog_lacks_shows_unavailable_and_the_rest_works(hub, kernel):
    details = hub.call("analyst", "GET", "/datasets/lake-gone").json()
    assert details["source_error"] == ("The data source cannot be read right now: its table "
                                       "is not in its Iceberg catalog")
    assert (details["columns"], details["rows"], details["version"]) == ([], None, None)
    r = hub.call("analyst", "POST", "/requests",
                 json={"dataset": "lake-gone", "justification": "unavailable", "days": 1})
    assert r.status_code in (201, 409)
    data = hub.call("analyst", "GET", "/datasets/lake-gone/data")
    assert data.status_code == 502 and "not in its Iceberg catalog" in data.json()["message"]
    assert "lake.gone" not in data.text and "catalog.db" not in data.text
    assert hub.call("analyst", "GET", "/datasets/birds-iceberg").json()["version"]


def test_sql_over_both_lakehouse_tables_is_governed_and_names_their_versions(
        hub, kernel, config_files):
    _, iceberg_now = _versions(config_files, "birds-iceberg")
    out = kernel.run("""
import json, jupyterhub_dataaccess as da
df = da.sql('select island, sex, count(*) as n from (select island, sex from "birds-iceberg" '
            'union all select island, sex from "birds-delta") group by 1, 2 order by 1')
print(json.dumps({"islands": sorted(set(df.island)), "sex": sorted(set(df.sex)),
                  "meta": df.attrs["dataaccess"]}))
""")
    assert out["error"] is None, out
    got = json.loads(out["stdout"])
    assert got["islands"] == ["Biscoe", "Dream"] and got["sex"] == ["REDACTED"]  # governed
    assert got["meta"]["datasets"] == {"birds-iceberg": iceberg_now, "birds-delta": "1"}
    record = hub.call("admin", "GET", "/audit", params={"action": "data.query", "limit": 1}
                      ).json()["items"][0]
    assert record["seq"] == got["meta"]["audit_seq"]
    assert iceberg_now in json.dumps(record["detail"])
