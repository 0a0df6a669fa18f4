"""A partition whose rows nothing governs (no mask, no row filter) sent as the byte ranges of
its Parquet file that hold it (tickets.open_partition with `accept_ranges`), and made into a
table by the client (client.py `_from_ranges`): the caller's `where` then runs in the kernel,
and must give exactly the table the governed Arrow stream of that partition gives, for every
`where` of test_where.py (nulls, `in (.., null)`, `not in`, text order), with and without
columns, on a file and on a directory of files."""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_where import KEY, ROWS, WHERES, write_layout

from jupyterhub_dataaccess import client, tickets
from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.plan import execute, plan_read
from jupyterhub_dataaccess.sources.readers import reader_for, whole_file

pytestmark = pytest.mark.once  # reading files, not the database


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_layout(tmp_path_factory.mktemp("ranges"), pa.table(ROWS))


def _dataset(uri: str, **governance) -> Dataset:
    return Dataset(id="flights", title="flights",
                   source=Source(kind="file", uri=uri, format="parquet"), **governance)


def _claims(ds: Dataset, spec: tuple, columns, where, version) -> tickets.Claims:
    return tickets.Claims(id="t", user="analyst", grant=1, dataset=ds.id, version=version,
                          partition=spec, columns=columns, where=where,
                          expires=int(time.time()) + 60, scan=1)


def _sent(ds: Dataset, claims: tickets.Claims) -> tuple[bytes, tuple] | None:
    """The body the service sends for the partition as ranges (as service/handlers.py does)."""
    found = tickets._ranges(ds, reader_for(ds, claims.version), claims.partition,
                            claims.columns, claims.where)
    if found is None:
        return None
    ranges, head = found
    with open(ranges.path, "rb") as f:
        return tickets.ranges_prefix(head) + b"".join(
            os.pread(f.fileno(), n, offset) for offset, n in ranges.ranges), found


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("columns", [None, ["carrier", "delay"]], ids=["all", "columns"])
@pytest.mark.parametrize("where", [None, *WHERES])
def test_a_partition_sent_as_ranges_is_the_governed_partition_exactly(sources, kind, columns,
                                                                       where):
    """When each partition of a read is sent as byte ranges and filtered by the client, Then
    it equals that partition's governed Arrow stream (values, nulls, types, order), and the
    partitions together equal the governed read."""
    ds = _dataset(sources[kind])
    reader = reader_for(ds)
    plan = plan_read(ds, columns, where, reader=reader)
    parts = reader.partitions(1 << 20, plan.pushed, spread=4)
    got = []
    for part in parts:
        body, (ranges, _) = _sent(ds, _claims(ds, part.spec, columns, where, plan.version))
        table = client._from_ranges(io.BytesIO(body))
        expected = pa.Table.from_batches(
            list(execute(replace(plan, partition=part.spec), KEY)), schema=plan.schema)
        assert table.schema == expected.schema and table.equals(expected), (part.spec, where)
        assert ranges.rows >= table.num_rows
        got.append(table)
    whole = pa.Table.from_batches(list(execute(plan, KEY)), schema=plan.schema)
    assert pa.concat_tables([whole.schema.empty_table(), *got]).equals(whole)


def test_only_the_needed_column_chunks_and_row_groups_are_sent(sources):
    """When a read names one column and a where on another, Then the ranges hold those two
    columns' chunks of the row groups whose statistics may match, the footer and the first
    bytes, nothing else; the rows counted are those row groups' rows."""
    ds = _dataset(sources["file"])
    reader = reader_for(ds)
    plan = plan_read(ds, ["delay"], "month == 3", reader=reader)
    [part] = reader.partitions(1 << 20, plan.pushed)
    body, (ranges, head) = _sent(ds, _claims(ds, part.spec, ["delay"], "month == 3",
                                             plan.version))
    meta = pq.read_metadata(sources["file"])
    months = [g for g in range(meta.num_row_groups)
              if meta.row_group(g).column(1).statistics.min <= 3
              <= meta.row_group(g).column(1).statistics.max]
    assert ranges.groups == head["row_groups"] == months and head["columns"] == ["delay", "month"]
    assert ranges.rows == sum(meta.row_group(g).num_rows for g in months)
    chunks = {(meta.row_group(g).column(c).data_page_offset) for g in months for c in (1, 3)}
    others = {meta.row_group(g).column(c).data_page_offset for g in range(meta.num_row_groups)
              for c in range(meta.num_columns)} - chunks
    inside = [any(o <= off < o + n for o, n in ranges.ranges) for off in others]
    assert not any(inside) and all(any(o <= off < o + n for o, n in ranges.ranges)
                                   for off in chunks)
    footer = os.path.getsize(sources["file"]) - ranges.ranges[-1][0]
    assert sum(n for _, n in ranges.ranges) == 4 + footer + sum(
        meta.row_group(g).column(c).total_compressed_size for g in months for c in (1, 3))
    assert len(body) < sum(n for _, n in ranges.ranges) + 300  # and a short header


def test_a_dataset_with_a_mask_or_a_row_filter_is_never_sent_as_ranges(sources):
    """When the dataset has a mask (even on a column not read) or a row filter, Then no
    partition is sent as ranges: the governed path runs."""
    for governance in ({"masks": {"tail": "hash"}},
                       {"row_filter": parse_filter("carrier != 'WN'")}):
        ds = _dataset(sources["file"], **governance)
        reader = reader_for(ds)
        plan = plan_read(ds, ["delay"], "month == 3", reader=reader)
        for part in reader.partitions(1 << 20, plan.pushed):
            assert _sent(ds, _claims(ds, part.spec, ["delay"], "month == 3",
                                     plan.version)) is None


def test_whether_anything_governs_a_file_is_decided_in_one_place(sources):
    """The ways a file's own bytes go out follow Dataset.ungoverned alone. When the dataset has
    no mask and no row filter, Then it may go as the whole file and as ranges, never as a
    hybrid; when it has a mask or a row filter (one that keeps every row), the reverse."""
    for governance, ungoverned in [({}, True), ({"masks": {"tail": "hash"}}, False),
                                   ({"row_filter": parse_filter("month >= 1")}, False)]:
        ds = _dataset(sources["file"], **governance)
        assert ds.ungoverned is ungoverned
        reader = reader_for(ds)
        (part,) = reader.partitions(1 << 40)
        sent = {"file": whole_file(ds) is not None,
                "as is": tickets._as_is(ds, reader, part.spec, None, None) is not None,
                "ranges": tickets._ranges(ds, reader, part.spec, None, None) is not None,
                "hybrid": tickets._hybrid(ds, reader, part.spec, None, None) is not None}
        assert sent == {"file": ungoverned, "as is": ungoverned, "ranges": ungoverned,
                        "hybrid": not ungoverned}, governance


def test_a_scan_answered_with_ranges_reads_the_schema_once(sources):
    """When a scan is answered with byte ranges (tickets._one_file_ranges, given the scan's
    plan), Then the ranges come from that plan: the source's schema is not read again, and the
    header equals the one a ticket's fetch builds from a plan of its own."""
    ds = _dataset(sources["file"])
    reader = reader_for(ds)
    plan = plan_read(ds, ["delay"], "month == 3", reader=reader)
    parts = reader.partitions(1 << 20, plan.pushed, spread=4)
    reads = []
    reader.raw_schema = lambda: reads.append(1)  # a second schema read would show here
    ranges, head = tickets._one_file_ranges(ds, reader, parts, plan, tickets.RANGES_ANSWER_BYTES)
    assert reads == []
    spec = (*parts[0].spec[:3], min(p.spec[3] for p in parts), max(p.spec[4] for p in parts))
    again = tickets._ranges(ds, reader_for(ds), spec, ["delay"], "month == 3")
    assert again is not None and (ranges, head) == again
