"""Review of the governed byte ranges (`application/vnd.dataaccess.parquet-hybrid`, 9459986):
the bytes sent as they are must be those of the unmasked columns' chunks of the row groups sent,
never a byte of a masked column's chunk, of another row group, of the page index or of a bloom
filter, whatever writer made the file (parquet-mr's +100 bytes of dictionary-header slack,
applied to every parquet-mr file, reached into the next column chunk and, joined by `_merged`,
sent a small masked chunk lying between two unmasked ones whole)."""

from __future__ import annotations

import io
import itertools
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from conftest import written_by
from hubutil import Hub
from secutil import SECRETS, grant_of

from jupyterhub_dataaccess import client, tickets
from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.readers import reader_for

pytestmark = pytest.mark.once  # reading files, not the database

PARQUET_MR = "parquet-mr version 1.12.3 (build f8dced182c4c1fbdec6ccb3185537b5a01e6ed6b)"
OLD_PARQUET_MR = "parquet-mr version 1.2.8"  # (PARQUET-816: readers add 100 bytes to a chunk)


def _extents(meta: pq.FileMetaData, groups: list[int], names: set[str]
             ) -> list[tuple[int, int]]:
    """[start, end) of the column chunks of `names` in row groups `groups`, as their metadata
    says (the dictionary page first where there is one)."""
    out = []
    for g in groups:
        rg = meta.row_group(g)
        for i in range(rg.num_columns):
            c = rg.column(i)
            if c.path_in_schema in names:
                start = c.data_page_offset
                if c.has_dictionary_page and 0 < (c.dictionary_page_offset or 0) < start:
                    start = c.dictionary_page_offset
                out.append((start, start + c.total_compressed_size))
    return out


def _outside(spans: list[tuple[int, int]], allowed: list[tuple[int, int]]) -> list[int]:
    """The offsets of `spans` ((offset, length)) outside every [start, end) of `allowed`."""
    return [at for offset, length in spans for at in range(offset, offset + length)
            if not any(a <= at < b for a, b in allowed)]


def _body(part: dict, accept: str) -> requests.Response:
    r = requests.get(part["url"], headers={"Authorization": f"ticket {part['ticket']}",
                                           "Accept": accept}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return r


def test_a_parquet_mr_files_masked_chunks_and_page_index_never_leave(hub: Hub, config_files):
    """When a governed dataset's file was written by parquet-mr (as Spark writes), its masked
    column's chunks are a few dozen bytes between two unmasked columns' and it has a page index,
    Then a fetch or a scan accepting the hybrid type sends no byte outside the unmasked columns'
    chunks of its row groups: no raw value of the masked column (neither its chunks nor the page
    index's minimum and maximum), and the client still makes the governed partition of it."""
    dataset = "hybrid-parquet-mr"
    path = os.path.join(config_files["data"], "hybrid-mr", "a.parquet")
    meta = pq.read_metadata(path)
    assert meta.created_by.startswith("parquet-mr")
    grant_of(hub, "analyst", dataset)
    r = hub.call("analyst", "POST", f"/datasets/{dataset}/scan", json={})
    assert r.status_code == 200, r.text
    plan = r.json()
    SECRETS.update(p["ticket"] for p in plan["partitions"])
    schema = client.plan_schema(plan)
    for part in plan["partitions"]:
        body = _body(part, client.HYBRID)
        assert body.headers["Content-Type"] == client.HYBRID
        assert b"zebra" not in body.content
        n = int.from_bytes(body.content[:4], "big")
        head = json.loads(body.content[4:4 + n])
        allowed = _extents(meta, list(range(meta.num_row_groups)), {"id", "label"})
        assert not _outside(head["ranges"], allowed), head["ranges"]
        got = client._from_hybrid(io.BytesIO(body.content))
        arrow = _body(part, "application/vnd.apache.arrow.stream")
        assert got.equals(pa.ipc.open_stream(io.BytesIO(arrow.content)).read_all().cast(schema))
    r = hub.call("analyst", "POST", f"/datasets/{dataset}/scan", json={},
                 headers={"Accept": f"application/json, {client.HYBRID}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == client.HYBRID
    assert b"zebra" not in r.content


def _file(path: str, order: list[str], created_by: str | None, rows: int = 300) -> None:
    columns = {"id": pa.array(range(rows), pa.int64()),
               "secret": [f"zebra-{i % 3}" for i in range(rows)],
               "label": [f"visible-{i % 5}" for i in range(rows)],
               "value": pa.array([i * 7 for i in range(rows)], pa.int64())}
    pq.write_table(pa.table({n: columns[n] for n in order}), path, row_group_size=100,
                   write_page_index=True)
    if created_by:
        written_by(path, created_by)


@pytest.mark.parametrize("created_by", [None, PARQUET_MR, OLD_PARQUET_MR],
                         ids=["pyarrow", "parquet-mr", "old-parquet-mr"])
def test_the_ranges_hold_only_the_unmasked_chunks_of_the_row_groups_sent(tmp_path, created_by):
    """When a hybrid partition is planned for files whose masked column lies first, between or
    last, written by pyarrow, by parquet-mr or by a parquet-mr whose chunk sizes leave out the
    dictionary page's header (readers add up to 100 bytes, which may be the next chunk's),
    Then every byte of its ranges lies in an unmasked column's chunk of a row group sent (the
    old parquet-mr file, whose chunks' ends are not known, goes the governed way)."""
    for i, order in enumerate(itertools.permutations(["id", "secret", "label", "value"])):
        path = str(tmp_path / f"{i}.parquet")
        _file(path, list(order), created_by)
        ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                     masks={"secret": "hash"}, row_filter=parse_filter("id >= 0"))
        reader = reader_for(ds)
        meta = pq.read_metadata(path)
        for spec, columns, where in [((*reader.partitions(1 << 40)[0].spec[:3], 0, 3), None,
                                      None), ((*reader.partitions(1 << 40)[0].spec[:3], 1, 3),
                                              ["label", "secret"], "value > 1000")]:
            found = tickets._hybrid(ds, reader, spec, columns, where)
            if created_by == OLD_PARQUET_MR:
                assert found is None
                continue
            ranges = found[0]
            allowed = _extents(meta, ranges.groups, set(ranges.columns) - {"secret"})
            assert not _outside(ranges.chunks, allowed), (order, spec, ranges.chunks)
            with open(path, "rb") as f:
                sent = b"".join(os.pread(f.fileno(), n, at) for at, n in ranges.chunks)
            assert b"zebra" not in sent


def _swapped_while_the_footer_is_read(monkeypatch: pytest.MonkeyPatch, path: str, other: str,
                                      back: bool = True) -> None:
    """While a partition's footer and row groups are read, `other` is at `path`; right after,
    the planned file is back (`back`: the same inode, size and time, a writer renaming files
    about caught between the two), or `other` is put there only then (not `back`: a writer
    replacing the file as it is read). FileReader._row_groups is wrapped, not replaced."""
    from jupyterhub_dataaccess.sources import readers

    original = readers.FileReader._row_groups
    kept = path + ".kept"

    def put(what: str) -> None:
        os.link(what, path + ".new")
        os.replace(path + ".new", path)

    def swapping(*args, **kwargs):
        if not back:
            try:
                return original(*args, **kwargs)
            finally:
                put(other)
        os.link(path, kept)
        put(other)
        try:
            return original(*args, **kwargs)
        finally:
            os.replace(kept, path)

    monkeypatch.setattr(readers.FileReader, "_row_groups", staticmethod(swapping))


def _same_size_files(tmp_path) -> tuple[str, str]:
    """The planned file (id, secret, label) and a file of the same columns in another order
    (id, label, secret), each column chunk of the same size in both."""
    rows = 300
    columns = {"id": pa.array(range(rows), pa.int64()),
               "secret": [f"zebra-{i:04d}" for i in range(rows)],
               "label": [f"label-{i:04d}" for i in range(rows)]}
    path, other = str(tmp_path / "t.parquet"), str(tmp_path / "other.parquet")
    for where, order in ((path, ["id", "secret", "label"]), (other, ["id", "label", "secret"])):
        pq.write_table(pa.table({n: columns[n] for n in order}), where, row_group_size=100,
                       compression="none", use_dictionary=False, write_statistics=["id"])
    return path, other


def test_a_footer_read_from_another_file_than_the_one_sent_never_places_the_ranges(
        tmp_path, monkeypatch):
    """When another file (the same columns in another order) is at the path while the footer
    is read, and the planned file is back when the ranges are opened, Then the ranges sent are
    those of the planned file's own footer: the unmasked column's chunks, no raw masked value
    (the footer used to be read by path and the identity checked on another descriptor)."""
    path, other = _same_size_files(tmp_path)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"secret": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    _swapped_while_the_footer_is_read(monkeypatch, path, other)
    found = tickets._hybrid(ds, reader, spec, ["label"], None)
    with open(path, "rb") as f:
        sent = b"".join(os.pread(f.fileno(), n, at) for at, n in found[0].chunks)
    assert b"label-" in sent and b"zebra" not in sent


def test_a_governed_read_decodes_the_file_whose_footer_it_read(tmp_path, monkeypatch):
    """When another file (the same columns in another order) is put in the place of a governed
    partition's file just after its footer is read, Then the unmasked column is decoded from the
    chunks named by the footer of the file whose pages are read: the masked column's raw values
    never come out as the unmasked one (the footer used to be read by path, the pages from the
    file opened after it)."""
    from jupyterhub_dataaccess.sources.plan import execute

    path, other = _same_size_files(tmp_path)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"secret": "hash"})
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    _swapped_while_the_footer_is_read(monkeypatch, path, other, back=False)
    from dataclasses import replace

    from jupyterhub_dataaccess.sources.plan import plan_read

    plan = replace(plan_read(ds, ["label"], None, reader=reader), partition=spec)
    try:
        labels = [v for b in execute(plan, b"k" * 32) for v in b.column(0).to_pylist()]
    except Exception as e:  # noqa: BLE001 (refusing is fine; raw values are not)
        labels = [repr(e)]
    assert not any("zebra" in str(v) for v in labels), labels[:3]


@pytest.mark.parametrize("how", ["not-parquet", "gone"])
def test_a_file_broken_or_gone_as_its_ranges_are_found_is_a_source_error(tmp_path, monkeypatch,
                                                                         how):
    """When the partition's file is overwritten with bytes that are not Parquet, or removed,
    just after the partition is found in the dataset, Then finding its byte ranges (plain or
    hybrid) raises SourceError (the service answers 502 or, for a changed partition, 410 with a
    JSON message), never an OSError or an Arrow error (a 500)."""
    from jupyterhub_dataaccess.sources import readers
    from jupyterhub_dataaccess.sources.base import SourceError

    path = str(tmp_path / "t.parquet")
    _file(path, ["id", "secret", "label", "value"], None)
    original = readers.FileReader.partition_file

    def breaking(*args, **kwargs):
        found = original(*args, **kwargs)
        if how == "gone":
            os.unlink(found)
        else:
            with open(found, "wb") as f:
                f.write(b"this is not a parquet file at all" * 10)
        return found

    for masks, row_filter in (({"secret": "hash"}, "id >= 0"), ({}, None)):
        _file(path, ["id", "secret", "label", "value"], None)
        ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                     masks=masks, row_filter=parse_filter(row_filter) if row_filter else None)
        reader = reader_for(ds)
        spec = reader.partitions(1 << 40)[0].spec
        with monkeypatch.context() as m:
            m.setattr(readers.FileReader, "partition_file", staticmethod(breaking))
            with pytest.raises(SourceError):
                (tickets._hybrid if masks else tickets._ranges)(ds, reader, spec, None, None)


def _footer_of(table: pa.Table) -> tuple[bytes, bytes]:
    """(the bytes before the footer, the footer) of `table` written as Parquet."""
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=100)
    data = sink.getvalue()
    n = int.from_bytes(data[-8:-4], "little")
    return data[:-8 - n], data[-8 - n:-8]


def test_a_footer_pyarrow_reads_is_pruned_or_refused_never_an_error(tmp_path):
    """When footers altered a few bytes at a time are given to pruned_footer, Then each that
    pyarrow still reads (so a partition could be planned on it) is pruned or refused with a
    FooterError (the partition then goes the governed way), never another error (a 500)."""
    from jupyterhub_dataaccess.sources.footer import FooterError, pruned_footer

    head, footer = _footer_of(pa.table({
        "id": pa.array(range(300), pa.int64()), "secret": [f"zebra-{i % 7}" for i in range(300)],
        "label": [f"visible-{i}" for i in range(300)]}))
    rnd = __import__("random").Random(1)
    tried = 0
    for _ in range(20000):
        altered = bytearray(footer)
        for _ in range(rnd.randint(1, 3)):
            altered[rnd.randrange(len(altered))] = rnd.randrange(256)
        altered = bytes(altered)
        try:
            pq.read_metadata(io.BytesIO(head + altered + len(altered).to_bytes(4, "little")
                                        + b"PAR1"))
        except Exception:  # noqa: BLE001 (a footer no reader takes: no partition planned)
            continue
        tried += 1
        try:
            pruned_footer(altered, [0, 2], [0, 2])
        except FooterError:
            pass
    assert tried > 1000


def test_a_footer_naming_a_field_twice_is_refused():
    """When a structure of the footer holds a field twice (Thrift readers keep the last, so the
    row groups the service read and those a pruned footer would name could differ), Then
    pruned_footer refuses it."""
    from jupyterhub_dataaccess.sources import footer as thrift

    _, footer = _footer_of(pa.table({"id": pa.array(range(300), pa.int64()),
                                     "secret": [f"zebra-{i}" for i in range(300)]}))
    meta = thrift._parse(footer)
    groups = thrift._get(meta, 4)
    writer = thrift._Writer()
    writer.struct([*meta, (4, thrift._LIST, (groups[0], list(reversed(groups[1]))))])
    with pytest.raises(thrift.FooterError):
        thrift.pruned_footer(bytes(writer.out), [0], [0])


@pytest.mark.parametrize("other", ["not-parquet", "text-ids"])
def test_a_plan_over_a_broken_or_mistyped_file_is_a_source_error(tmp_path, other):
    """When one file of a Parquet directory is not Parquet, or holds the row filter's integer
    column as text, Then planning a scan's partitions with the row filter raises SourceError
    (the service answers 502 with a JSON message), never an Arrow error (a 500)."""
    from jupyterhub_dataaccess.sources.base import SourceError
    from jupyterhub_dataaccess.sources.plan import plan_read

    d = tmp_path / "d"
    d.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]}),
                   d / "a.parquet")
    if other == "not-parquet":
        (d / "b.parquet").write_bytes(b"PAR1 but nothing else of a parquet file at all PAR1")
    else:
        pq.write_table(pa.table({"id": ["5", "-7", "9"], "s": ["zebra1", "zebra2", "zebra3"]}),
                       d / "b.parquet")
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(d), format="parquet"),
                 masks={"s": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    with pytest.raises(SourceError):
        reader.partitions(1 << 20, plan_read(ds, reader=reader).pushed, spread=4)


def test_a_wide_files_footer_costs_a_fetch_bounded_cpu(tmp_path):
    """When a governed file has a big footer (100 row groups of 200 columns: 2 MB of Thrift,
    which pruned_footer parses in Python, seconds of CPU each fetch), Then planning a hybrid of
    two of its row groups takes well under a second of CPU: such a partition goes the governed
    way (bounded time per fetch: SECURITY-CASES 40), and so does a partition of a file whose
    footer is big enough to cost more than the governed read saves."""
    import time

    import numpy as np

    path = str(tmp_path / "wide.parquet")
    rows = 100 * 200
    pq.write_table(pa.table({"id": pa.array(np.arange(rows)),
                             **{f"c{i}": pa.array(np.arange(rows) + i) for i in range(199)}}),
                   path, row_group_size=200)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"c1": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    spec = (*reader.partitions(1 << 40)[0].spec[:3], 3, 5)
    started = time.process_time()
    found = tickets._hybrid(ds, reader, spec, None, None)
    assert time.process_time() - started < 1.0
    assert found is None


def test_chunks_the_footer_places_outside_the_data_go_governed(tmp_path):
    """When the footer places the unmasked column's chunks past the data (in or after the
    footer: a damaged file pyarrow still reads the metadata of), Then no hybrid is planned (the
    governed path runs, and fails cleanly on such a file), never an IndexError (a 500)."""
    from jupyterhub_dataaccess.sources import footer as thrift

    path = str(tmp_path / "t.parquet")
    _file(path, ["id", "secret", "label"], None)
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[-8:-4], "little")
    meta = thrift._parse(data[-8 - n:-8])
    for group in thrift._get(meta, 4)[1]:
        label = thrift._get(group, 1)[1][2]
        column = thrift._get(label, 3)
        column[:] = [f for f in column if f[0] != 11]  # (no dictionary page offset)
        column[:] = thrift._set(column, 9, thrift._I64, len(data) + 10)
    writer = thrift._Writer()
    writer.struct(meta)
    with open(path, "wb") as f:
        f.write(data[:-8 - n] + bytes(writer.out) + len(writer.out).to_bytes(4, "little")
                + b"PAR1")
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"secret": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    assert tickets._hybrid(ds, reader, spec, ["label"], None) is None


def test_a_hybrids_masked_columns_are_held_in_bounded_memory(tmp_path):
    """When a partition's masked columns, which a hybrid computes whole in memory before it
    sends them, would take more than HYBRID_MASKED_BYTES (an all-distinct hashed text column:
    36 bytes a row; a 256 MB scan answer's took ~1 GB, ~3x that at the peak), Then it goes the
    governed way (streamed in bounded memory), dictionaries or not; a hashed column of few
    values sent as a dictionary still goes as a hybrid; and the estimate is never below what
    the masked columns take."""
    from jupyterhub_dataaccess.sources.readers import HYBRID_MASKED_BYTES, masked_bytes

    n = HYBRID_MASKED_BYTES // 36 + 1000
    path = str(tmp_path / "wide.parquet")
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "label": pa.array([f"u{i:011d}" for i in range(n)]),
                             "kind": pa.array(["a", "b", "c", "d"] * (n // 4) + ["a"] * (n % 4))
                             }), path)
    for masks in ({"label": "hash"}, {"label": "hash-v1"}, {"label": "hash", "kind": "hash"}):
        ds = Dataset(id="d", title="d", source=Source(kind="file", uri=path, format="parquet"),
                     masks=masks, row_filter=parse_filter("id >= 0"))
        reader = reader_for(ds)
        spec = reader.partitions(1 << 40)[0].spec
        for dictionaries in (True, False):
            assert tickets._hybrid(ds, reader, spec, None, None,
                                   dictionaries=dictionaries) is None, (masks, dictionaries)
        assert tickets._hybrid(ds, reader, spec, ["id", "kind"], None, dictionaries=True)
    ds = Dataset(id="d", title="d", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"kind": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    assert tickets._hybrid(ds, reader, spec, None, None, dictionaries=True) is not None
    assert tickets._hybrid(ds, reader, spec, None, None, dictionaries=False) is None

    small = str(tmp_path / "small.parquet")
    pq.write_table(pq.read_table(path).slice(0, 300_000), small, row_group_size=100_000)
    for how, dictionaries in itertools.product(["hash", "hash-v1", "redact", "null"],
                                               [True, False]):
        masks = {"label": how, "kind": how}
        ds = Dataset(id="d", title="d", source=Source(kind="file", uri=small, format="parquet"),
                     masks=masks, row_filter=parse_filter("id >= 0"))
        reader = reader_for(ds)
        spec = reader.partitions(1 << 40)[0].spec
        found = tickets._hybrid(ds, reader, spec, None, None, dictionaries=dictionaries)
        tail = tickets.hybrid_masked(ds, reader, b"k" * 32, spec, found, dictionaries)
        with found[0].open() as f:
            estimate = masked_bytes(f, pq.ParquetFile(f).metadata, found[0].groups, masks,
                                    dictionaries)
        assert len(tail) <= estimate, (how, dictionaries, len(tail), estimate)


@pytest.mark.parametrize("span", [0, 999, 8191, 70_000])
def test_a_hashed_integer_column_of_few_values_is_estimated_as_the_dictionary_it_becomes(
        tmp_path, span):
    """When a hashed integer column's statistics span few values for a batch's rows (each batch
    then leaves as a dictionary: masks.small_range), Then masked_bytes counts 4 bytes a row and
    the dictionary, not 36 bytes a row, so a partition of more rows than HYBRID_MASKED_BYTES
    holds at 36 bytes a row still goes as a hybrid (a Dask partition of millions of rows of a
    key of 1,000 values); and the estimate is never below what the masked column takes (nulls,
    a short last batch, a span too wide for a dictionary)."""
    import numpy as np

    from jupyterhub_dataaccess.sources.readers import HYBRID_MASKED_BYTES, masked_bytes

    n = HYBRID_MASKED_BYTES // 36 + 1000
    path = str(tmp_path / "keys.parquet")
    keys = (np.arange(n, dtype=np.int64) * 7919) % (span + 1) + 5
    pq.write_table(pa.table({"id": pa.array(np.arange(n)),
                             "key": pa.array(keys, pa.int32(), mask=np.arange(n) % 97 == 0)}),
                   path, row_group_size=400_000)
    ds = Dataset(id="d", title="d", source=Source(kind="file", uri=path, format="parquet"),
                 masks={"key": "hash"}, row_filter=parse_filter("id >= 0"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    whole = tickets._hybrid(ds, reader, spec, None, None, dictionaries=True)
    assert (whole is not None) == (span < 8192)  # (a dictionary: ~4 bytes a row, not 36)
    assert tickets._hybrid(ds, reader, spec, None, None, dictionaries=False) is None
    one = (*spec[:3], 0, 1)  # (one row group of 400,000 rows: under the cap at any span)
    for part in ([spec] if whole else []) + [one]:
        found = tickets._hybrid(ds, reader, part, None, None, dictionaries=True)
        tail = tickets.hybrid_masked(ds, reader, b"k" * 32, part, found, True)
        with found[0].open() as f:
            estimate = masked_bytes(f, pq.ParquetFile(f).metadata, found[0].groups,
                                    {"key": "hash"}, True)
        assert len(tail) <= estimate, (part, len(tail), estimate)
