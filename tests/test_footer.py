"""sources/footer.py: a Parquet footer cut down to some row groups and columns.

Each file is written by pyarrow; the bytes of the kept column chunks alone (everything else
zeroed) with the pruned footer must read as exactly those row groups and columns, and the pruned
footer must name nothing else: no other column, row group, statistics of either, key-value
metadata or page-index offsets."""

from __future__ import annotations

import datetime
import decimal
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess.sources.footer import FooterError, pruned_footer


def _file(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **{"row_group_size": 1000, **options})
    return sink.getvalue()


def _parts(data: bytes) -> tuple[bytes, int]:
    """(footer, where it starts) of a Parquet file's bytes."""
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    return data[start:len(data) - 8], start


def _chunk_spans(meta: pq.FileMetaData, groups: list[int], columns: list[int]
                 ) -> list[tuple[int, int]]:
    spans = []
    for g in groups:
        for c in columns:
            chunk = meta.row_group(g).column(c)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < (chunk.dictionary_page_offset or 0) < start:
                start = chunk.dictionary_page_offset
            spans.append((start, chunk.total_compressed_size))
    return spans


def _sent(data: bytes, groups: list[int], columns: list[int]) -> tuple[bytes, bytes]:
    """(the file a client would build: kept chunks only, everything else zero, the pruned
    footer at the end; the pruned footer)."""
    footer, start = _parts(data)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    new = pruned_footer(footer, groups, columns)
    body = bytearray(start)
    body[:4] = b"PAR1"
    for offset, length in _chunk_spans(meta, groups, columns):
        body[offset:offset + length] = data[offset:offset + length]
    return bytes(body) + new + len(new).to_bytes(4, "little") + b"PAR1", new


def _table(n: int = 3500) -> pa.Table:
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "secret": pa.array([f"raw-secret-{i % 7}" for i in range(n)]),
        "x": pa.array([i / 3 if i % 11 else None for i in range(n)], pa.float64()),
        "label": pa.array([f"row-{i}" for i in range(n)]),
        "day": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=i % 400)
                         for i in range(n)]),
        "at": pa.array([datetime.datetime(2021, 5, 1) + datetime.timedelta(seconds=i)
                        for i in range(n)], pa.timestamp("us", tz="UTC")),
        "price": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "flag": pa.array([i % 3 == 0 for i in range(n)]),
        "blob": pa.array([bytes([i % 256]) * 3 for i in range(n)], pa.binary()),
    })


@pytest.mark.parametrize("groups,columns", [
    ([0], [0]), ([1, 2], [0, 2, 3]), ([0, 1, 2, 3], list(range(9))), ([3], [8, 7, 6, 5, 4]),
    ([2, 0], [3, 0]),
])
@pytest.mark.parametrize("options", [
    {}, {"compression": "zstd", "use_dictionary": False},
    {"write_page_index": True, "data_page_size": 512},
    {"write_statistics": False}, {"version": "1.0", "compression": "none"},
])
def test_the_kept_chunks_with_the_pruned_footer_read_as_those_row_groups_and_columns(
        groups, columns, options):
    table = _table()
    data = _file(table, **options)
    built, _ = _sent(data, groups, columns)
    got = pq.read_table(io.BytesIO(built))
    original = pq.ParquetFile(io.BytesIO(data))
    want = original.read_row_groups(groups, columns=[table.column_names[c] for c in columns])
    assert got.column_names == want.column_names
    for name in got.column_names:  # (types: the Arrow schema was metadata, and is gone)
        assert got.column(name).cast(want.column(name).type).equals(want.column(name)), name
    assert got.num_rows == sum(original.metadata.row_group(g).num_rows for g in groups)


def test_the_pruned_footer_names_nothing_but_the_kept_row_groups_and_columns():
    table = _table()
    data = _file(table, write_page_index=True, sorting_columns=[pq.SortingColumn(0)])
    _, new = _sent(data, [2], [0, 3])
    meta = pq.read_metadata(io.BytesIO(b"PAR1" + new + len(new).to_bytes(4, "little")
                                       + b"PAR1"))
    assert meta.num_row_groups == 1 and meta.num_columns == 2
    assert meta.schema.names == ["id", "label"]
    assert meta.num_rows == 1000 and meta.metadata is None  # no key-value metadata at all
    rg = meta.row_group(0)
    assert rg.column(0).statistics.min == 2000 and rg.column(0).statistics.max == 2999
    assert rg.column(1).statistics.min == "row-2000"
    assert not rg.column(0).has_offset_index and not rg.column(0).has_column_index
    assert rg.sorting_columns == ()
    assert rg.total_byte_size == sum(rg.column(i).total_uncompressed_size for i in range(2))
    # nothing of the other columns (not even their names) nor of the other row groups
    assert b"secret" not in new and b"raw-secret" not in new
    assert b"row-0" not in new and b"row-3499" not in new and b"ARROW:schema" not in new


def test_created_by_is_kept_for_the_reader_workarounds_it_selects():
    data = _file(_table())
    _, new = _sent(data, [0], [0])
    created = pq.ParquetFile(io.BytesIO(data)).metadata.created_by
    meta = pq.read_metadata(io.BytesIO(b"PAR1" + new + len(new).to_bytes(4, "little")
                                       + b"PAR1"))
    assert meta.created_by == created


def test_a_nested_schema_is_refused():
    table = pa.table({"id": [1, 2], "tags": [["a"], ["b", "c"]]})
    footer, _ = _parts(_file(table))
    with pytest.raises(FooterError, match="nested"):
        pruned_footer(footer, [0], [0])


@pytest.mark.parametrize("groups,columns", [([4], [0]), ([0], [9]), ([-1], [0]), ([0, 0], [0]),
                                            ([0], [1, 1])])
def test_row_groups_or_columns_the_file_lacks_are_refused(groups, columns):
    footer, _ = _parts(_file(_table()))
    with pytest.raises(FooterError):
        pruned_footer(footer, groups, columns)


def test_malformed_bytes_are_a_footer_error_never_another_exception():
    footer, _ = _parts(_file(_table()))
    for cut in (0, 1, 7, len(footer) // 2, len(footer) - 1):
        with pytest.raises(FooterError):
            pruned_footer(footer[:cut], [0], [0])
    with pytest.raises(FooterError):
        pruned_footer(footer + b"\x00", [0], [0])
    rng = __import__("random").Random(7)
    for _ in range(300):  # random damage: a FooterError or a footer, nothing else
        broken = bytearray(footer)
        for _ in range(rng.randint(1, 8)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        try:
            pruned_footer(bytes(broken), [0], [0])
        except FooterError:
            pass


def test_a_file_with_many_row_groups_keeps_its_offsets(tmp_path):
    path = os.path.join(tmp_path, "many.parquet")
    pq.write_table(_table(20_000), path, row_group_size=700)
    data = open(path, "rb").read()  # noqa: SIM115
    groups = [5, 17, 28]
    built, _ = _sent(data, groups, [1, 3])
    got = pq.read_table(io.BytesIO(built), read_dictionary=["secret"])
    want = pq.ParquetFile(path).read_row_groups(groups, columns=["secret", "label"])
    assert got.column("label").equals(want.column("label"))
    assert got.column("secret").cast(pa.string()).equals(want.column("secret"))


def test_a_footer_is_parsed_once_for_the_fetches_of_its_partitions_which_each_get_their_own():
    """The partitions of one file share its parsed footer (the parse is the cost: ~0.6 ms a KB);
    what each fetch gets is the same as from a fresh parse, whatever was pruned before."""
    from jupyterhub_dataaccess.sources import footer as thrift

    data = _file(_table(20_000), row_group_size=700)
    footer, _ = _parts(data)
    asks = [([0], [0, 1]), ([5, 6], [3]), ([0], [0, 1]), ([28], list(range(9)))]
    thrift._file_meta.cache_clear()
    fresh = []
    for groups, columns in asks:
        fresh.append(pruned_footer(footer, groups, columns))
        thrift._file_meta.cache_clear()
    cached = [pruned_footer(footer, groups, columns) for groups, columns in asks]
    assert cached == fresh
    info = thrift._file_meta.cache_info()
    assert info.misses == 1 and info.hits == len(asks) - 1
