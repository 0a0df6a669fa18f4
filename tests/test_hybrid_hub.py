"""Governed partitions sent as byte ranges of their unmasked columns, a replacement footer and
their masked columns (`application/vnd.dataaccess.parquet-hybrid`), on the session's real hub:
equal to the governed Arrow stream, audited as such, holding no raw value of a masked column
and no footer of another column or row group; never sent to a client that did not ask."""

from __future__ import annotations

import glob
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from hubutil import Hub
from secutil import SECRETS, audit, grant_of

from jupyterhub_dataaccess import client
from jupyterhub_dataaccess.sources.readers import _merged

pytestmark = pytest.mark.once  # reading files, not the database

GOVERNED, UNPROVEN = "hybrid-governed", "hybrid-unproven"
RAW_WORDS = (b"zebra", b"okapi", b"lynx", b"heron")  # in the masked columns' raw values only
MASKED = {"secret", "secret2", "note", "flag"}


def _plan(hub: Hub, dataset: str, **body) -> dict:
    r = hub.call("analyst", "POST", f"/datasets/{dataset}/scan", json=body)
    assert r.status_code == 200, r.text
    plan = r.json()
    SECRETS.update(p["ticket"] for p in plan["partitions"])  # the log-hygiene test looks too
    return plan


def _get(part: dict, accept: str, dictionaries: bool = False) -> requests.Response:
    headers = {"Authorization": f"ticket {part['ticket']}", "Accept": accept}
    if dictionaries:
        headers["X-Dataaccess-Dictionaries"] = "accept"
    r = requests.get(part["url"], headers=headers, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return r


def _governed(part: dict, schema: pa.Schema) -> pa.Table:
    r = _get(part, "application/vnd.apache.arrow.stream")
    assert r.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
    return pa.ipc.open_stream(io.BytesIO(r.content)).read_all().cast(schema)


def _parts(body: bytes) -> tuple[dict, bytes]:
    """The header of a hybrid body and its replacement footer."""
    n = int.from_bytes(body[:4], "big")
    head = json.loads(body[4:4 + n])
    at = 4 + n + sum(length for _, length in head["ranges"])
    return head, body[at:at + head["footer"]]


def _reads(hub: Hub, dataset: str, scan: int) -> list[dict]:
    return [a["detail"] for a in audit(hub, dataset=dataset, action="data.read")
            if a["detail"].get("scan") == scan]


@pytest.mark.parametrize("columns,where", [
    (None, None), (["secret", "label"], None), (["label", "value", "id"], None),
    (["flag", "value", "secret2", "note"], "label in ('visible-1', null) and id > 40"),
    (["secret"], "value is null or value > 5"),
], ids=["all", "mixed", "unmasked", "masked-first-where", "masked-only-where"])
@pytest.mark.parametrize("dictionaries", [True, False], ids=["dict", "plain"])
def test_a_governed_partition_as_ranges_and_masked_columns_is_the_governed_partition(
        hub: Hub, config_files, columns, where, dictionaries):
    """When each partition of a dataset whose row filter the statistics prove is fetched
    accepting the hybrid type, Then the body is of that type, the client makes it exactly the
    governed partition (values, nulls, types, order), it holds no raw value of a masked column,
    its footer names only the unmasked columns sent and the partition's row groups, its ranges
    lie in those row groups' column chunks; each fetch is audited as parquet-ranges with its
    row groups, rows and masked columns; da.load's fetches (load_partitions) take that path."""
    grant_of(hub, "analyst", GOVERNED)
    plan = _plan(hub, GOVERNED, columns=columns, where=where)
    schema = client.plan_schema(plan)
    assert len(plan["partitions"]) > 2
    files = sorted(glob.glob(f"{config_files['data']}/hybrid/*.parquet"))
    wanted = [n for n in schema.names if n not in MASKED]
    for part in plan["partitions"]:
        r = _get(part, client.HYBRID, dictionaries)
        assert r.headers["Content-Type"] == client.HYBRID
        # masked columns are computed while the ranges go out: a chunked body
        assert (r.headers.get("Transfer-Encoding") == "chunked") == bool(set(schema.names)
                                                                        & MASKED)
        got = client._from_hybrid(io.BytesIO(r.content))
        assert got.schema == schema and got.equals(_governed(part, schema))
        assert not any(word in r.content for word in RAW_WORDS)
        head, footer = _parts(r.content)
        meta = pq.read_metadata(io.BytesIO(b"PAR1" + footer + len(footer).to_bytes(4, "little")
                                           + b"PAR1"))
        assert set(meta.schema.names) == set(head["columns"]) and not MASKED & set(
            meta.schema.names) and set(wanted) <= set(head["columns"])
        [read] = [d for d in _reads(hub, GOVERNED, plan["audit_seq"])
                  if d["ticket"] == part["url"].rsplit("/", 1)[-1] and d["format"] != "arrow"]
        assert read["format"] == "parquet-ranges" and read["masked"] == [
            n for n in schema.names if n in MASKED]
        assert meta.num_row_groups == len(read["row_groups"]) and read["rows"] == meta.num_rows
        source = pq.read_metadata(files[read["partition"][1]])
        chunks = [(c.dictionary_page_offset or c.data_page_offset, c.total_compressed_size)
                  for g in read["row_groups"] for c in (
                      source.row_group(g).column(i) for i in range(source.num_columns))
                  if c.path_in_schema in head["columns"]]
        assert all(any(o <= a and a + n <= o + m for o, m in _merged(chunks))
                   for a, n in head["ranges"])  # (no byte of a masked column's chunks)
    assert client.load_partitions(plan).equals(pa.concat_tables(
        [_governed(p, schema) for p in plan["partitions"]]))


def test_what_cannot_go_as_a_hybrid_goes_governed_and_old_clients_never_get_one(hub: Hub):
    """When the row filter is one statistics cannot prove, or the caller's where reads a masked
    column, Then a fetch accepting the hybrid type gets the governed Arrow stream (audited as
    arrow); a client that does not name the type (parquet-ranges, Parquet, Arrow) never gets
    it, from a ticket or a scan."""
    grant_of(hub, "analyst", GOVERNED)
    grant_of(hub, "analyst", UNPROVEN)
    arrow = "application/vnd.apache.arrow.stream"
    for dataset, where in ((UNPROVEN, None), (GOVERNED, "secret != 'x'")):
        plan = _plan(hub, dataset, where=where)
        part = plan["partitions"][0]
        r = _get(part, f"{client.HYBRID}, {arrow};q=0.9")
        assert r.headers["Content-Type"] == arrow
        assert {d["format"] for d in _reads(hub, dataset, plan["audit_seq"])} == {"arrow"}
    plan = _plan(hub, GOVERNED)
    for accept in (client.RANGES, "application/vnd.apache.parquet", arrow,
                   f"application/vnd.apache.parquet, {client.RANGES}, {arrow};q=0.9"):
        assert _get(plan["partitions"][0], accept).headers["Content-Type"] == arrow
        r = hub.call("analyst", "POST", f"/datasets/{GOVERNED}/scan", json={"where": "id < 250"},
                     headers={"Accept": f"application/json, {accept}"})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")


def test_a_scan_of_one_file_accepting_the_hybrid_type_is_answered_with_it(hub: Hub):
    """When a scan whose partitions are row groups of one file is asked accepting the hybrid
    type (da.load does), Then the answer is the hybrid body, equal to the plan's partitions
    fetched governed, audited as data.scan then one data.read (parquet-ranges, the row groups,
    rows and masked columns)."""
    grant_of(hub, "analyst", GOVERNED)
    body = {"columns": ["note", "label", "secret"], "where": "id < 250"}
    r = hub.call("analyst", "POST", f"/datasets/{GOVERNED}/scan", json=body, headers={
        "Accept": f"application/json, {client.HYBRID}", "X-Dataaccess-Dictionaries": "accept"})
    assert r.status_code == 200 and r.headers["Content-Type"] == client.HYBRID
    assert not any(word in r.content for word in RAW_WORDS)
    got = client._from_hybrid(io.BytesIO(r.content))
    plan = _plan(hub, GOVERNED, **body)
    schema = client.plan_schema(plan)
    assert got.equals(pa.concat_tables([_governed(p, schema) for p in plan["partitions"]]))
    seq = int(r.headers["X-Dataaccess-Audit-Seq"])
    [read] = _reads(hub, GOVERNED, seq)
    assert read["format"] == "parquet-ranges" and read["masked"] == ["note", "secret"]
    assert read["row_groups"] == [0, 1, 2] and read["rows"] == 300


KERNEL_LOAD = """
import json
import jupyterhub_dataaccess as da
whole = da.load("hybrid-governed", as_="arrow")
part = da.load("hybrid-governed", as_="arrow", columns=["note", "label", "secret"],
               where="id < 250")
print("OUT" + json.dumps([[str(t.schema.remove_metadata()), t.to_pylist(),
                           da.provenance(t)["audit_seq"]] for t in (whole, part)]))
"""


def test_da_load_in_a_kernel_reads_a_governed_dataset_as_hybrids_equal_to_the_governed_read(
        hub: Hub, analyst_kernel):
    """When da.load reads a governed dataset in a real kernel, Then its fetches (several files:
    tickets) and its scan answer (one file) take the hybrid path, audited so, and give what the
    governed Arrow partitions give."""
    grant_of(hub, "analyst", GOVERNED)
    out = analyst_kernel.run(KERNEL_LOAD, timeout=120)
    assert out["error"] is None, out
    [line] = [x for x in out["stdout"].splitlines() if x.startswith("OUT")]
    for (schema_text, rows, seq), body in zip(json.loads(line[3:]), (
            {}, {"columns": ["note", "label", "secret"], "where": "id < 250"}), strict=True):
        plan = _plan(hub, GOVERNED, **body)
        schema = client.plan_schema(plan)
        expected = pa.concat_tables([_governed(p, schema) for p in plan["partitions"]])
        assert schema_text == str(schema) and rows == expected.to_pylist()
        reads = _reads(hub, GOVERNED, seq)
        assert reads and {d["format"] for d in reads} == {"parquet-ranges"}
        assert all(d["masked"] == [n for n in schema.names if n in MASKED] for d in reads)


def test_an_http_1_0_client_gets_the_same_hybrid_with_its_length(hub: Hub):
    """When a client speaking HTTP/1.0 (no chunked bodies) fetches a hybrid, Then the masked
    columns are computed first and the body comes with its Content-Length, the same body."""
    import http.client
    from urllib.parse import urlsplit

    class OldConnection(http.client.HTTPConnection):
        _http_vsn, _http_vsn_str = 10, "HTTP/1.0"

    grant_of(hub, "analyst", GOVERNED)
    plan = _plan(hub, GOVERNED, columns=["secret", "label"])
    schema = client.plan_schema(plan)
    for part in plan["partitions"][:2]:
        url = urlsplit(part["url"])  # (to the service itself: the proxy speaks HTTP/1.1)
        conn = OldConnection(f"127.0.0.1:{hub.service_port}", timeout=60)
        conn.request("GET", url.path, headers={"Authorization": f"ticket {part['ticket']}",
                                               "Accept": client.HYBRID})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == client.HYBRID
        assert int(resp.getheader("Content-Length")) > 0 and not resp.getheader(
            "Transfer-Encoding")
        assert client._from_hybrid(resp).equals(_governed(part, schema))
        conn.close()
