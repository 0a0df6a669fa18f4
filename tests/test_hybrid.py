"""A governed partition (masks, a row filter) sent as the byte ranges of its unmasked columns, a
replacement footer and its masked columns computed by the service (tickets._hybrid, the
`application/vnd.dataaccess.parquet-hybrid` body), made into a table by the client
(client._from_hybrid): it must give exactly the table the governed Arrow stream of that
partition gives (rows, order, values, types), for each mask, column subsets, a caller's `where`
on unmasked columns, nulls, several row groups and files, dictionaries accepted or not; and be
refused (the governed path runs) wherever the statistics do not prove the row filter, or the
caller's `where` reads a masked column."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_where import KEY, ROWS, WHERES, N, write_layout

from jupyterhub_dataaccess import client, tickets
from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.plan import execute_typed, plan_read
from jupyterhub_dataaccess.sources.readers import reader_for

pytestmark = pytest.mark.once  # reading files, not the database

SECRET = "zebra-secret-"  # a distinctive prefix of every value of the masked text column


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    rows = dict(ROWS, tail=[None if i % 13 == 0 else f"{SECRET}{i % 23:03d}" for i in range(N)])
    return write_layout(tmp_path_factory.mktemp("hybrid"), pa.table(rows))


def _dataset(uri: str, masks: dict[str, str], row_filter: str | None = "id >= 0") -> Dataset:
    return Dataset(id="flights", title="flights",
                   source=Source(kind="file", uri=uri, format="parquet"), masks=masks,
                   row_filter=parse_filter(row_filter) if row_filter else None)


def _claims(ds: Dataset, spec: tuple, columns, where, version) -> tickets.Claims:
    return tickets.Claims(id="t", user="analyst", grant=1, dataset=ds.id, version=version,
                          partition=spec, columns=columns, where=where,
                          expires=int(time.time()) + 60, scan=1)


def sent(ds: Dataset, spec: tuple, columns, where, dictionaries: bool = True
         ) -> tuple[bytes, tuple] | None:
    """The body the service sends for a partition as a hybrid (as service/handlers.py does)."""
    reader = reader_for(ds)
    found = tickets._hybrid(ds, reader, spec, columns, where)
    if found is None:
        return None
    tail = found[2] + (tickets.hybrid_masked(ds, reader, KEY, spec, found, dictionaries)
                       if found[3] else b"")
    ranges, head = found[0], found[1]
    with open(ranges.path, "rb") as f:
        body = tickets.ranges_prefix(head) + b"".join(
            os.pread(f.fileno(), n, offset) for offset, n in ranges.chunks) + tail
    return body, found


def governed(ds: Dataset, spec: tuple | None, columns, where, dictionaries: bool = False
             ) -> pa.Table:
    plan = replace(plan_read(ds, columns, where), partition=spec, dictionaries=dictionaries)
    schema, batches = execute_typed(plan, KEY)
    return pa.Table.from_batches(list(batches), schema=schema).cast(plan.schema)


MASKS = [{"tail": "hash"}, {"tail": "hash-v1"}, {"tail": "null"}, {"tail": "redact"},
         {"tail": "hash", "region": "redact", "month": "hash"}]


@pytest.mark.parametrize("masks", MASKS, ids=lambda m: "+".join(f"{k}:{v}" for k, v in m.items()))
@pytest.mark.parametrize("columns", [None, ["tail"], ["delay", "id"], ["delay", "tail", "carrier"],
                                     ["tail", "month", "region"]],
                         ids=["all", "masked", "unmasked", "mixed", "masked-first"])
@pytest.mark.parametrize("dictionaries", [True, False], ids=["dict", "plain"])
def test_a_hybrid_partition_is_the_governed_partition_exactly(sources, masks, columns,
                                                               dictionaries):
    """When each partition of a governed read whose row filter the statistics prove is sent as
    a hybrid, Then it equals that partition's governed Arrow stream, and together the read."""
    ds = _dataset(sources["file"], masks)
    reader = reader_for(ds)
    plan = plan_read(ds, columns, None, reader=reader)
    parts = reader.partitions(1 << 20, plan.pushed, spread=4)
    assert len(parts) > 1
    got = []
    for part in parts:
        found = sent(ds, part.spec, columns, None, dictionaries)
        if all(n in masks for n in plan.columns):  # nothing unmasked to send: governed path
            assert found is None
            return
        body, (ranges, head, _, masked) = found
        assert masked == [n for n in plan.columns if n in masks]
        table = client._from_hybrid(io.BytesIO(body))
        expected = governed(ds, part.spec, columns, None, dictionaries)
        assert table.schema == expected.schema and table.equals(expected), part.spec
        assert ranges.rows == table.num_rows
        got.append(table)
    assert pa.concat_tables(got).equals(governed(ds, None, columns, None))


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("where", [w for w in WHERES if "tail" not in w and "region" not in w])
def test_a_where_on_unmasked_columns_is_applied_by_the_client_exactly(sources, kind, where):
    """When the caller's `where` reads unmasked columns only, Then the hybrid of each partition
    (several row groups, several files) filtered by the client equals the governed partition."""
    ds = _dataset(sources[kind], {"tail": "hash", "region": "redact"})
    reader = reader_for(ds)
    columns = ["tail", "delay", "region"]
    plan = plan_read(ds, columns, where, reader=reader)
    parts = reader.partitions(1 << 20, plan.pushed, spread=4)
    got = []
    for part in parts:
        body, _ = sent(ds, part.spec, columns, where)
        table = client._from_hybrid(io.BytesIO(body))
        expected = governed(ds, part.spec, columns, where)
        assert table.equals(expected), (part.spec, where)
        got.append(table)
    whole = governed(ds, None, columns, where)
    assert pa.concat_tables([whole.schema.empty_table(), *got]).equals(whole)


def test_what_the_statistics_do_not_prove_or_a_where_on_a_masked_column_goes_governed(sources):
    """When the row filter is not proven by a row group's statistics (text, floats with nulls,
    a bound inside a row group), or the caller's `where` reads a masked column, Then no hybrid:
    the governed path runs for the whole partition."""
    for row_filter in ("carrier != 'WN'", "delay > -100", "id >= 10"):
        ds = _dataset(sources["file"], {"tail": "hash"}, row_filter)
        reader = reader_for(ds)
        spec = reader.partitions(1 << 40)[0].spec
        assert sent(ds, spec, None, None) is None, row_filter
    ds = _dataset(sources["file"], {"tail": "hash"})
    spec = reader_for(ds).partitions(1 << 40)[0].spec
    assert sent(ds, spec, ["delay"], "tail != 'x'") is None
    assert sent(ds, spec, ["delay"], "delay > 1") is not None
    # no row filter at all: proven; and a row filter proven on some row groups only
    assert sent(_dataset(sources["file"], {"tail": "hash"}, None), spec, None, None) is not None
    ds = _dataset(sources["file"], {"tail": "hash"}, "id >= 100")
    reader = reader_for(ds)
    parts = reader.partitions(1, plan_read(ds).pushed)
    proven = [p for p in parts if sent(ds, p.spec, None, None) is not None]
    assert proven and len(proven) < len(parts)  # the row group holding id 100 is not


def test_a_file_put_in_the_place_of_the_planned_one_sends_no_bytes(tmp_path):
    """When the file is replaced after its hybrid ranges and footer were found (same size,
    another time), Then opening it to send them fails (PartitionChanged: the service answers
    503), never another file's bytes at the planned offsets."""
    from jupyterhub_dataaccess.sources.base import PartitionChanged

    data = tmp_path / "t.parquet"
    rows = {"n": pa.array(range(1000), pa.int64()), "s": [f"{SECRET}{i}" for i in range(1000)]}
    pq.write_table(pa.table(rows), data, compression=None)
    ds = _dataset(str(data), {"s": "hash"}, "n >= 0")
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    found = tickets._hybrid(ds, reader, spec, None, None)
    assert found is not None
    with found[0].open() as f:
        assert f.read(4) == b"PAR1"
    pq.write_table(pa.table(dict(rows, n=pa.array(range(1, 1001), pa.int64()))), data,
                   compression=None)
    os.utime(data, ns=(0, 1))
    with pytest.raises(PartitionChanged):
        found[0].open()


@contextmanager
def _serve(tmp_path, fail: bool, sendfile: bool) -> Iterator[tuple[int, pa.Table]]:
    """A tornado server whose one route sends a hybrid partition with the service's own
    DataHandler._send_ranges (masked columns failing when `fail`; sendfile refused unless
    `sendfile`). Yields (port, the partition's governed table)."""
    import asyncio
    import logging

    from hubutil import loopback_app
    from tornado import web

    from jupyterhub_dataaccess.service.handlers import DataHandler
    from jupyterhub_dataaccess.service.metrics import Metrics
    from jupyterhub_dataaccess.service.streams import StreamSlots
    from jupyterhub_dataaccess.sources.base import SourceError

    data = tmp_path / "t.parquet"
    rows = {"n": pa.array(range(50_000), pa.int64()),
            "s": [f"{SECRET}{i % 97}" for i in range(50_000)], "x": [i / 3 for i in range(50_000)]}
    pq.write_table(pa.table(rows), data, row_group_size=20_000)
    ds = _dataset(str(data), {"s": "hash"}, "n >= 0")
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    found = tickets._hybrid(ds, reader, spec, None, None)

    def masked() -> bytes:
        if fail:
            raise SourceError("the source failed")
        return tickets.hybrid_masked(ds, reader, KEY, spec, found, False)

    slots = StreamSlots(0, 0, write_timeout=10.0, log=logging.getLogger("test-hybrid"))
    if not sendfile:
        async def refused(*_args) -> bool:
            return False
        slots.send_file = refused

    class Handler(DataHandler):
        async def prepare(self) -> None:  # (no hub here: the route sends, nothing else)
            pass

        async def get(self) -> None:
            await self._send_ranges(found[0], found[1], found[2], masked)

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    app = web.Application([("/p", Handler, {"run": run, "streams": slots, "metrics": Metrics()})])
    with loopback_app(app) as port:
        yield port, governed(ds, spec, None, None)


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "reads"])
def test_the_service_sends_a_hybrid_as_a_chunked_body_the_client_reads(tmp_path, sendfile):
    """When DataHandler._send_ranges sends a hybrid over HTTP/1.1 (masked columns computed
    while the ranges go out), by sendfile or by reads inside the chunk, Then the body is chunked,
    the client makes it the governed partition, and the kept-alive connection serves the next
    request; masked columns that fail after the headers cut the body short (never complete)."""
    import http.client

    with _serve(tmp_path, fail=False, sendfile=sendfile) as (port, expected):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(2):
            conn.request("GET", "/p")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
            assert client._from_hybrid(resp).equals(expected)
    (tmp_path / "failing").mkdir()
    with _serve(tmp_path / "failing", fail=True, sendfile=sendfile) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/p")
        resp = conn.getresponse()
        assert resp.status == 200  # (the headers went out before the masked columns failed)
        with pytest.raises((http.client.IncompleteRead, OSError, ValueError)):
            client._from_hybrid(resp)
