"""Scan plans and tickets (issue 13, SECURITY-CASES 52): a governed read split into partitions,
each fetched with a short-lived ticket and nothing else, on the session's real hub."""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from conftest import TICKET_KEY
from hubutil import Hub
from secutil import SECRETS, assert_error, audit, audit_total, fresh_request, grant_of

from jupyterhub_dataaccess import client, tickets
from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.client import load_partitions
from jupyterhub_dataaccess.sources.base import merge_row_groups
from jupyterhub_dataaccess.sources.filters import bind, parse_filter
from jupyterhub_dataaccess.sources.readers import keeps_every_row, reader_for

KEY = TICKET_KEY.encode()
MASKED = "penguins-masked"  # 4 row groups of 100 rows; the session hub plans one partition each


# -- tickets without the service -------------------------------------------------------------

def _claims(**kw) -> tickets.Claims:
    base = dict(id="abc", user="alice", grant=1, dataset="ds", version="v1",
                partition=("rg", 0, "tag", 0, 1), columns=None, where=None,
                expires=int(time.time()) + 60, scan=7)
    return tickets.Claims(**{**base, **kw})


def test_a_ticket_is_accepted_only_whole_unaltered_for_its_own_id_and_before_it_expires():
    """When a ticket is checked, Then only the intact one, under its own id, unexpired, passes;
    each failure has its status and a message that never repeats the ticket."""
    t = tickets.mint(KEY, _claims())
    assert tickets.verify(KEY, "abc", f"ticket {t}", time.time()) == _claims(
        expires=_claims().expires)
    payload = t.split(".")[1]
    flipped = t.replace(payload, payload[:-2] + ("A" if payload[-2] != "A" else "B")
                        + payload[-1])
    cases = {
        "": (401, tickets.TicketRequired), f"token {t}": (401, tickets.TicketRequired),
        "ticket ": (401, tickets.TicketRequired),
        f"ticket {flipped}": (403, tickets.InvalidTicket),
        f"ticket {t[:-5]}": (403, tickets.InvalidTicket),
        f"ticket {t[: len(t) // 2]}": (403, tickets.InvalidTicket),
        f"ticket {tickets.mint(b'another key of the service!', _claims())}":
            (403, tickets.InvalidTicket),
        f"ticket {t}x": (403, tickets.InvalidTicket),
        f"ticket {tickets.mint(KEY, _claims(id='other'))}": (403, tickets.InvalidTicket),
        f"ticket {tickets.mint(KEY, _claims(expires=int(time.time()) - 1))}":
            (410, tickets.ExpiredTicket),
    }
    for header, (status, cls) in cases.items():
        with pytest.raises(cls) as err:
            tickets.verify(KEY, "abc", header, time.time())
        assert err.value.status == status
        secret = header.partition(" ")[2]
        assert not secret or secret not in err.value.message


def test_row_groups_are_merged_into_runs_near_the_target_size():
    """When row groups are merged, Then consecutive runs stay near the target and a big group
    stands alone."""
    sizes = [(100, 10), (100, 10), (100, 10), (50, 100), (10, 1)]
    assert merge_row_groups(sizes, 25) == [(0, 2, 200, 20), (2, 3, 100, 10), (3, 4, 50, 100),
                                           (4, 5, 10, 1)]
    assert merge_row_groups(sizes, 1000) == [(0, 5, 360, 131)]
    assert merge_row_groups([], 10) == []


def test_a_file_dataset_is_partitioned_by_file_and_row_group_and_the_parts_make_the_whole(
        tmp_path):
    """When a directory of Parquet files is partitioned, Then each file's row groups form
    partitions, and reading them all gives every row once, in order."""
    for i in range(3):
        pq.write_table(pa.table({"n": list(range(i * 1000, i * 1000 + 1000))}),
                       tmp_path / f"part-{i}.parquet", row_group_size=250)
    ds = Dataset(id="d", title="d", source=Source(kind="file", uri=str(tmp_path),
                                                  format="parquet"))
    reader = reader_for(ds)
    parts = reader.partitions(1)
    assert [p.spec[0] for p in parts] == ["rg"] * 12 and {p.rows for p in parts} == {250}
    merged = reader.partitions(10 ** 9)
    assert len(merged) == 3 and [p.rows for p in merged] == [1000] * 3
    got = [b.column(0).to_pylist() for p in parts
           for b in reader.partition_batches(p.spec, ["n"], None)]
    assert sum(got, []) == list(range(3000))
    assert all(str(tmp_path) not in repr(p.spec) for p in parts)  # no path leaves in a ticket


def test_a_where_plans_only_the_row_groups_that_may_match_and_spreads_them_for_parallel_fetches(
        tmp_path):
    """When a filter is given, Then only row groups whose statistics may match it are planned
    (none when nothing can match), consecutive ones merged; with a spread they are split so
    several can be fetched at once; and the partitions read exactly the matching rows."""
    pq.write_table(pa.table({"n": list(range(4000))}), tmp_path / "t.parquet",
                   row_group_size=500)
    ds = Dataset(id="d", title="d", source=Source(kind="file", uri=str(tmp_path / "t.parquet"),
                                                  format="parquet"))
    reader = reader_for(ds)

    def where(text: str):
        return bind(parse_filter(text), reader.raw_schema())

    month = where("n >= 1200 and n < 2600")  # row groups 2, 3, 4 and 5
    assert [p.spec[3:] for p in reader.partitions(10 ** 9, month)] == [(2, 6)]
    spread = reader.partitions(10 ** 9, month, spread=4)
    assert [p.spec[3:] for p in spread] == [(2, 3), (3, 4), (4, 5), (5, 6)]
    assert [p.spec[3:] for p in reader.partitions(10 ** 9, where("n < 100 or n >= 3900"))
            ] == [(0, 1), (7, 8)]  # runs never join row groups that are not consecutive
    assert reader.partitions(10 ** 9, where("n > 99999")) == []
    got = [v for p in spread for b in reader.partition_batches(p.spec, ["n"], month)
           for v in b.column(0).to_pylist()]
    assert got == list(range(1200, 2600))
    assert len(reader.partitions(10 ** 9, spread=4)) == 4  # a spread without a filter too


def test_a_filter_is_skipped_only_where_row_group_statistics_prove_it_keeps_every_row(
        tmp_path):
    """When row-group statistics prove a filter true for every row of a group (integer
    comparisons without nulls, `is not null`, and/or of them), Then keeps_every_row says so;
    with a null, a float, text or a value inside the range it does not; and reading gives the
    same rows as filtering everything."""
    n = pa.array(range(1000))
    pq.write_table(pa.table({"n": n, "m": pa.array([None] + list(range(1, 1000))),
                             "s": pa.array(["a"] * 1000), "f": pa.array([1.5] * 1000)}),
                   tmp_path / "t.parquet", row_group_size=500)
    ds = Dataset(id="d", title="d", source=Source(kind="file", uri=str(tmp_path / "t.parquet"),
                                                  format="parquet"))
    reader = reader_for(ds)
    schema = reader.raw_schema()
    meta = pq.read_metadata(tmp_path / "t.parquet")

    def keeps(text: str, group: int = 0) -> bool:
        return keeps_every_row(bind(parse_filter(text), schema).tree, meta.row_group(group),
                               schema)

    assert keeps("n >= 0") and keeps("n < 500") and keeps("0 <= n") and keeps("n != 700")
    assert keeps("n is not null and (n < 0 or n >= 0)") and keeps("n >= 500", group=1)
    assert not keeps("n >= 1") and not keeps("n != 7") and not keeps("n >= 500")
    assert not keeps("m >= 0") and keeps("m >= 0", group=1)  # a null: a comparison drops it
    assert not keeps("s == 'a'") and not keeps("f > 1") and not keeps("n in (1, 2)")
    for text in ("n >= 0", "n >= 1", "m >= 0 and n != 3"):
        where = bind(parse_filter(text), schema)
        got = pa.Table.from_batches(list(reader.raw_batches(["n"], where)))
        expected = pa.table({"n": n, "m": pa.array([None] + list(range(1, 1000)))}).filter(
            where.to_arrow()).select(["n"])
        assert got.equals(expected), text


# -- plans and tickets on the hub -------------------------------------------------------------

def _grant_masked(hub: Hub) -> dict:
    req = fresh_request(hub, "analyst", MASKED)
    r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={"comment": "ok"})
    assert r.status_code == 200, r.text
    return grant_of(hub, "analyst", MASKED)


def _plan(hub: Hub, dataset: str, user: str = "analyst", **body) -> dict:
    r = hub.call(user, "POST", f"/datasets/{dataset}/scan", json=body)
    assert r.status_code == 200, r.text
    plan = r.json()
    SECRETS.update(p["ticket"] for p in plan["partitions"])  # the log-hygiene test looks too
    return plan


def _fetch(part: dict, ticket: str | None = None, url: str | None = None) -> requests.Response:
    headers = {"Authorization": f"ticket {part['ticket'] if ticket is None else ticket}"}
    return requests.get(url or part["url"], headers=headers, timeout=60)


def _table(r: requests.Response) -> pa.Table:
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
    return pa.ipc.open_stream(io.BytesIO(r.content)).read_all()


@pytest.mark.once  # reading files, not the database
def test_a_scan_plan_gives_a_ticket_per_row_group_and_the_tickets_alone_read_the_governed_rows(
        hub: Hub):
    """When the analyst plans a scan of a masked, filtered dataset, Then there is one data.scan
    record and a partition per row group that may hold rows the row filter keeps (the last,
    all Chinstrap, cannot: its statistics rule it out); each partition, fetched with its ticket
    alone (no token, no cookie), is an Arrow stream with masks and row filter applied, one
    data.read record each; all of them together are exactly the governed read."""
    _grant_masked(hub)
    plan = _plan(hub, MASKED)
    assert set(plan) >= {"dataset", "version", "expires_at", "audit_seq", "partitions", "schema"}
    assert [p["rows"] for p in plan["partitions"]] == [100, 100, 100]
    scans = audit(hub, dataset=MASKED, action="data.scan")
    assert scans[0]["seq"] == plan["audit_seq"] and scans[0]["actor"] == "analyst"
    for p in plan["partitions"]:
        assert p["ticket"] not in p["url"] and p["url"].startswith(hub.api + "/tickets/")
    tables = [_table(_fetch(p)) for p in plan["partitions"]]
    whole = hub.call("analyst", "GET", f"/datasets/{MASKED}/data", params={"format": "arrow"})
    expected = pa.ipc.open_stream(io.BytesIO(whole.content)).read_all()
    got = pa.concat_tables(tables)
    assert got.equals(expected) and got.num_rows > 0
    # a client that takes dictionaries (da.load) gets the same rows (no hashed text here)
    plan2 = _plan(hub, MASKED)
    assert pa.concat_tables([_table(requests.get(p["url"], timeout=60, headers={
        "Authorization": f"ticket {p['ticket']}", "X-Dataaccess-Dictionaries": "accept"}))
        for p in plan2["partitions"]]).equals(expected)
    assert set(got.column("sex").to_pylist()) == {"REDACTED"}
    assert "Torgersen" not in got.column("island").to_pylist()
    reads = [a for a in audit(hub, dataset=MASKED, action="data.read")
             if a["detail"].get("scan") == plan["audit_seq"]]
    assert len(reads) == 3 and {tuple(a["detail"]["partition"]) for a in reads} == {
        tuple(p) for p in ([["rg", 0, reads[0]["detail"]["partition"][2], i, i + 1]
                            for i in range(3)])}


@pytest.mark.once  # reading files, not the database
def test_a_partition_with_nothing_to_govern_is_its_parquet_file_as_it_is(hub: Hub, config_files):
    """When a ticket of a whole Parquet file with no mask, filter, projection or where is
    fetched accepting Parquet, Then the body is the file's own bytes; without that Accept, or
    with a projection, it is the governed Arrow stream. A plain read accepting Parquet is the
    file too (the same send, DataHandler._send_file)."""
    grant_of(hub, "analyst", "sales")
    part = _plan(hub, "sales")["partitions"][0]
    with open(f"{config_files['data']}/sales.parquet", "rb") as f:
        raw = f.read()
    r = hub.call("analyst", "GET", "/datasets/sales/data",
                 headers={"Accept": "application/vnd.apache.parquet"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(
        "application/vnd.apache.parquet") and r.content == raw
    assert int(r.headers["Content-Length"]) == len(raw)
    r = requests.get(part["url"], timeout=60, headers={
        "Authorization": f"ticket {part['ticket']}", "Accept": "application/vnd.apache.parquet"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(
        "application/vnd.apache.parquet") and r.content == raw
    assert _table(_fetch(part)).equals(pq.read_table(io.BytesIO(raw)))
    projected = _plan(hub, "sales", columns=["region"])["partitions"][0]
    r = requests.get(projected["url"], timeout=60, headers={
        "Authorization": f"ticket {projected['ticket']}",
        "Accept": "application/vnd.apache.parquet"})
    assert _table(r).column_names == ["region"]


@pytest.mark.once  # reading files, not the database
def test_a_partition_of_a_dataset_with_no_mask_or_row_filter_is_sent_as_ranges_of_its_file(
        hub: Hub):
    """When a partition of a plan with columns and a where of a Parquet dataset with no mask
    and no row filter is fetched accepting ranges, Then the body is byte ranges of its file
    that the client makes into exactly the governed Arrow partition, and its data.read record
    names the row groups and rows sent; da.load's fetches take that path. A scan accepting
    ranges is answered with them (its data.scan, then one data.read). A masked dataset's scan
    is a plan, and its partition fetched accepting ranges is the governed Arrow stream."""
    grant_of(hub, "analyst", "sales")
    where = "region in ('north', null) and amount > 5000"
    plan = _plan(hub, "sales", columns=["amount", "day"], where=where)
    [part] = plan["partitions"]
    ranges = {"Authorization": f"ticket {part['ticket']}", "Accept": client.RANGES}
    r = requests.get(part["url"], headers=ranges, timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == client.RANGES
    got, governed = client._from_ranges(io.BytesIO(r.content)), _table(_fetch(part))
    assert got.equals(governed) and got.num_rows > 0 and got.column_names == ["amount", "day"]
    assert load_partitions(plan).equals(governed)
    reads = {a["detail"]["format"]: a["detail"] for a in audit(hub, dataset="sales",
                                                               action="data.read")
             if a["detail"].get("scan") == plan["audit_seq"]}
    assert reads["parquet-ranges"]["row_groups"] == [0] and reads["arrow"]["where"] == where
    assert reads["parquet-ranges"]["rows"] == 5000 and "row_groups" not in reads["arrow"]
    # asked of the scan (da.load does): the same ranges in the same round trip, and its records
    r = hub.call("analyst", "POST", "/datasets/sales/scan", headers={"Accept": client.RANGES},
                 json={"columns": ["amount", "day"], "where": where})
    assert r.status_code == 200 and r.headers["Content-Type"] == client.RANGES
    assert client._from_ranges(io.BytesIO(r.content)).equals(governed)
    seq = int(r.headers["X-Dataaccess-Audit-Seq"])
    [read] = [a for a in audit(hub, dataset="sales", action="data.read")
              if a["detail"].get("scan") == seq]
    assert read["detail"]["format"] == "parquet-ranges" and read["detail"]["rows"] == 5000
    assert audit(hub, dataset="sales", action="data.scan")[0]["seq"] == seq
    _grant_masked(hub)
    r = hub.call("analyst", "POST", f"/datasets/{MASKED}/scan", headers={
        "Accept": client.RANGES}, json={"where": "bill_length_mm > 40"})
    assert r.headers["Content-Type"].startswith("application/json")  # governed: a plan
    [first, *_] = _plan(hub, MASKED, columns=["species"], where="bill_length_mm > 40")[
        "partitions"]
    r = requests.get(first["url"], timeout=60, headers={
        "Authorization": f"ticket {first['ticket']}", "Accept": client.RANGES})
    assert _table(r).column_names == ["species"]  # (Content-Type: the Arrow stream)


@pytest.mark.once  # reading files, not the database
def test_a_scan_accepting_parquet_of_one_whole_file_with_nothing_to_govern_is_that_file(
        hub: Hub, config_files, monkeypatch):
    """When a scan plan that would be one whole Parquet file with nothing to govern is asked
    for accepting Parquet, Then the answer is the file itself, audited as a plan and its one
    fetch (data.scan, then data.read naming it); da.load reads it so, equal to the file, its
    provenance the data.scan; asked otherwise, or of a governed dataset, the answer is the plan;
    the route takes no GET."""
    grant_of(hub, "analyst", "sales")
    _grant_masked(hub)
    with open(f"{config_files['data']}/sales.parquet", "rb") as f:
        raw = f.read()
    parquet = {"Accept": "application/json, application/vnd.apache.parquet"}
    r = hub.call("analyst", "POST", "/datasets/sales/scan", json={}, headers=parquet)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(
        "application/vnd.apache.parquet") and r.content == raw
    seq = int(r.headers["X-Dataaccess-Audit-Seq"])
    scan = next(a for a in audit(hub, dataset="sales", action="data.scan") if a["seq"] == seq)
    assert scan["detail"]["partitions"] == 1 and r.headers["X-Dataaccess-Version"]
    read = [a for a in audit(hub, dataset="sales", action="data.read")
            if a["detail"].get("scan") == seq]
    assert len(read) == 1 and read[0]["seq"] > seq and read[0]["detail"]["format"] == "parquet"
    assert read[0]["detail"]["ticket"] is None
    assert "partitions" in _plan(hub, "sales")  # without Accept: the plan, as before
    for body, ds in (({"columns": ["region"]}, "sales"), ({}, MASKED)):
        r = hub.call("analyst", "POST", f"/datasets/{ds}/scan", json=body, headers=parquet)
        assert r.status_code == 200 and "partitions" in r.json()
    assert_error(hub.call("analyst", "GET", "/datasets/sales/scan"), 405)
    monkeypatch.setenv("DATAACCESS_URL", hub.api.removesuffix("api/v1"))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token("analyst"))
    import jupyterhub_dataaccess as da

    before = audit_total(hub, dataset="sales", action="data.read")
    table = da.load("sales", as_="arrow")
    assert table.equals(pq.read_table(io.BytesIO(raw)))
    origin = da.provenance(table)
    assert audit_total(hub, dataset="sales", action="data.read") == before + 1
    assert next(a for a in audit(hub, dataset="sales", action="data.scan")
                if a["seq"] == origin["audit_seq"])["detail"]["partitions"] == 1


@pytest.mark.once  # reading and masking files, not the database
def test_a_scan_honours_columns_and_where_on_masked_values(hub: Hub):
    """When a plan names columns and a where, Then every partition has only those columns and
    only rows matching where; a where on a hashed column compares hashed values."""
    _grant_masked(hub)
    plan = _plan(hub, MASKED, columns=["species", "body_mass_g"], where="species == 'Gentoo'")
    got = pa.concat_tables([_table(_fetch(p)) for p in plan["partitions"]])
    assert got.column_names == ["species", "body_mass_g"]
    assert set(got.column("species").to_pylist()) == {"Gentoo"} and got.num_rows > 0
    r = hub.call("analyst", "POST", f"/datasets/{MASKED}/scan", json={"columns": ["nope"]})
    assert_error(r, 400)
    r = hub.call("analyst", "POST", f"/datasets/{MASKED}/scan", json={"where": "species =="})
    assert_error(r, 400)
    scans = audit_total(hub, dataset=MASKED, action="data.scan")
    for where, named in (("island > 3", "island"), ("body_mass_g > 3000", "body_mass_g"),
                         ("bill_length_mm == 'long'", "bill_length_mm"),
                         ("sex > 3", "sex")):  # a type mismatch, also on a masked column
        r = hub.call("analyst", "POST", f"/datasets/{MASKED}/scan", json={"where": where})
        assert repr(named) in assert_error(r, 400)["message"]
    assert audit_total(hub, dataset=MASKED, action="data.scan") == scans  # refused at plan time
    # a where no row group's statistics can match: a plan with nothing to fetch, still audited
    none = _plan(hub, MASKED, columns=["species"], where="island == 'Atlantis'")
    assert none["partitions"] == [] and audit_total(
        hub, dataset=MASKED, action="data.scan") == scans + 1
    empty = load_partitions(none)
    assert empty.num_rows == 0 and empty.column_names == ["species"]
    r = hub.call("analyst", "POST", f"/datasets/{MASKED}/scan", json={"limit": 3})
    assert_error(r, 400, "Unknown field(s): limit")


@pytest.mark.once  # the ticket's signature, checked before the database
def test_case52_altered_truncated_misplaced_and_missing_tickets_get_no_data(hub: Hub):
    """When a ticket is altered, cut short, sent to another partition's or another dataset's
    URL, sent as a token, or missing, Then 401/403 JSON and no data; the message never repeats
    the ticket."""
    _grant_masked(hub)
    grant_of(hub, "analyst", "sales")
    plan, other = _plan(hub, MASKED), _plan(hub, "sales")
    first, second = plan["partitions"][0], plan["partitions"][1]
    t = first["ticket"]
    payload = t.split(".")[1]
    altered = t.replace(payload, payload[:10] + ("x" if payload[10] != "x" else "y")
                        + payload[11:])
    refused = {
        "altered": (_fetch(first, altered), 403), "truncated": (_fetch(first, t[:-3]), 403),
        "another partition": (_fetch(first, url=second["url"]), 403),
        "another dataset": (_fetch(other["partitions"][0], url=first["url"]), 403),
        "as a token": (requests.get(first["url"], headers={"Authorization": f"token {t}"},
                                    timeout=30), 401),
        "none": (requests.get(first["url"], timeout=30), 401),
        "in the URL": (requests.get(first["url"], params={"ticket": t}, timeout=30), 401),
    }
    for what, (r, status) in refused.items():
        body = assert_error(r, status)
        assert t not in r.text and t not in body["message"], what
    assert _fetch(first).status_code == 200  # the intact ticket still works


def test_case52_an_expired_ticket_is_gone_and_a_revoked_grant_stops_the_next_fetch(hub: Hub):
    """When a ticket is past its expiry, Then 410; when the grant is revoked in the middle of a
    scan, Then the next fetch is 403 (an access.denied record), the tickets do not come back
    with a new grant, and no record holds a ticket."""
    grant = _grant_masked(hub)
    plan = _plan(hub, MASKED)
    parts = plan["partitions"]
    claims = tickets.verify(KEY, parts[0]["url"].rsplit("/", 1)[1],
                            f"ticket {parts[0]['ticket']}", time.time())
    stale = tickets.mint(KEY, tickets.Claims(**{**claims.__dict__, "expires": int(time.time())}))
    assert_error(_fetch(parts[0], stale), 410)
    assert _fetch(parts[0]).status_code == 200
    assert hub.call("steward", "DELETE", f"/grants/{grant['id']}").status_code == 200
    body = assert_error(_fetch(parts[1]), 403, extra={"dataset": MASKED})
    assert body["message"].startswith("The grant this ticket was given under is no longer")
    assert "da.request('penguins-masked'" in body["message"]
    _grant_masked(hub)  # a new grant does not revive the tickets of the revoked one
    assert_error(_fetch(parts[2]), 403, extra={"dataset": MASKED})
    denied = audit(hub, dataset=MASKED, action="access.denied")[0]
    assert denied["grant_id"] == grant["id"] and denied["detail"]["attempted"] == "data.read"
    records = hub.call("admin", "GET", "/audit", params={"dataset": MASKED, "limit": 200}).text
    assert all(p["ticket"] not in records for p in parts)


def test_a_plan_without_a_grant_is_refused_with_the_request_call(hub: Hub):
    """When a user without a grant asks for a plan, Then 403 naming the da.request call and no
    tickets."""
    body = assert_error(hub.call("nobody", "POST", "/datasets/salaries/scan", json={}), 403,
                        extra={"dataset": "salaries"})
    assert "da.request('salaries'" in body["message"]
    assert_error(hub.call("analyst", "POST", "/datasets/no-such-thing/scan", json={}), 404)


@pytest.mark.once  # log lines, the same on any database
def test_case52_no_ticket_appears_in_the_service_log(hub: Hub):
    """When plans were made and tickets fetched (and refused), Then no ticket is in the log."""
    grant_of(hub, "analyst", "sales")
    plan = _plan(hub, "sales")
    _fetch(plan["partitions"][0], plan["partitions"][0]["ticket"][:-4])
    assert _fetch(plan["partitions"][0]).status_code == 200
    with open(hub.log_path, errors="replace") as f:
        log = f.read()
    assert plan["partitions"][0]["url"].rsplit("/", 1)[1] in log  # the id is logged, not more
    assert all(s not in log for s in SECRETS if s.startswith("dat1."))


@pytest.mark.once  # the source is a SQLite file in every run (test_sql_partitions: both)
def test_a_sql_table_split_by_its_key_gives_a_ticket_per_range_that_serves_only_that_range(
        hub: Hub):
    """When the analyst plans a scan of a SQL table the catalogue splits by `id`, Then there are
    at least 4 partitions, each fetched with its own ticket holds only ids inside its range
    (the null ids in the first alone), together they are exactly the governed read (row filter,
    hash mask), one data.read each; a range's ticket at another range's URL gets 403, no data."""
    grant_of(hub, "analyst", "flights-sql")
    plan = _plan(hub, "flights-sql")
    parts = plan["partitions"]
    assert len(parts) >= 4
    specs = [tickets.verify(KEY, p["url"].rsplit("/", 1)[1], f"ticket {p['ticket']}",
                            time.time()).partition for p in parts]
    tables = [_table(_fetch(p)) for p in parts]
    for (kind, key, lo, hi, nulls), table in zip(specs, tables, strict=True):
        ids = table.column("id").to_pylist()
        assert kind == "key" and key == "id" and table.num_rows > 0
        assert all((lo is None or i >= lo) and (hi is None or i < hi) for i in ids if i is not None)
        assert (None in ids) == nulls == (specs.index((kind, key, lo, hi, nulls)) == 0)
    whole = hub.call("analyst", "GET", "/datasets/flights-sql/data", params={"format": "arrow"})
    expected = pa.ipc.open_stream(io.BytesIO(whole.content)).read_all()
    got = pa.concat_tables(tables)

    def rows(t: pa.Table) -> list:
        return sorted(map(repr, t.to_pylist()))

    assert got.num_rows == expected.num_rows > 0 and rows(got) == rows(expected)
    assert min(got.column("delay").to_pylist()) >= 0 and "N001" not in got.column("tail").to_pylist()
    reads = [a for a in audit(hub, dataset="flights-sql", action="data.read")
             if a["detail"].get("scan") == plan["audit_seq"]]
    assert sorted((tuple(a["detail"]["partition"]) for a in reads), key=repr) == sorted(
        specs, key=repr)
    body = assert_error(_fetch(parts[0], url=parts[1]["url"]), 403)
    assert "another partition" in body["message"]
