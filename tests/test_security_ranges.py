"""Byte ranges of a Parquet file sent as they are (review of 3ca0bb0 / d608530), and a whole
Parquet file sent as it is: the bytes sent are those of the very file whose footer was read when
the send was planned, never of a file put in its place."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jupyterhub_dataaccess import tickets
from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.errors import SourceChanged
from jupyterhub_dataaccess.service.handlers import DataHandler
from jupyterhub_dataaccess.sources.base import PartitionChanged
from jupyterhub_dataaccess.sources.readers import reader_for


def _write(path: object, offset: int) -> None:
    pq.write_table(pa.table({"n": np.arange(offset, offset + 1000, dtype=np.int64)}), path,
                   compression=None)


SWAPS = ["rename", "symlink", "rewrite"]


def _dataset_and_other(tmp_path) -> tuple[Dataset, object, object]:
    """A one-file dataset and another file of the same size (the size check alone passes it)."""
    data, other = tmp_path / "d" / "t.parquet", tmp_path / "other.parquet"
    data.parent.mkdir()
    _write(data, 0)
    _write(other, 10**6)
    assert os.path.getsize(data) == os.path.getsize(other)
    return Dataset(id="t", title="t", source=Source(kind="file", uri=str(data),
                                                    format="parquet")), data, other


def _swap(data, other, how: str) -> None:
    """Put another file in the place of `data`: renamed or linked over it, or `data`
    rewritten in place with another modification time."""
    if how == "rename":
        os.replace(shutil.copy(other, data.parent.parent / "x.parquet"), data)
    elif how == "symlink":
        os.unlink(data)
        os.symlink(other, data)
    else:
        _write(data, 10**6)
        os.utime(data, ns=(0, 1))


def _refused(planned) -> None:
    """Opening the planned file to send it fails: PartitionChanged, which the service answers
    with a 503 and a message saying the file changed, before any byte is sent."""
    with pytest.raises(PartitionChanged):
        planned.open()
    with pytest.raises(SourceChanged) as e:
        DataHandler._open(planned)
    assert e.value.status == 503 and "changed" in e.value.message


@pytest.mark.parametrize("swap", SWAPS)
def test_a_file_put_in_the_place_of_the_planned_one_is_never_sent(tmp_path, swap):
    """When the dataset's file is replaced between the ranges being found and the file being
    opened to send them (another file renamed or linked over it, same size, or rewritten with
    another time), Then opening it for the ranges fails (PartitionChanged): the service answers
    503 rather than sending another file's bytes at the planned offsets."""
    ds, data, other = _dataset_and_other(tmp_path)
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    part = reader.partition_ranges(spec, ["n"], None)
    with part.open() as f:  # unchanged: the very file
        assert f.read(4) == b"PAR1"
    _swap(data, other, swap)
    _refused(part)


@pytest.mark.parametrize("swap", SWAPS)
def test_a_whole_file_replaced_between_plan_and_send_is_never_sent(tmp_path, swap):
    """When a partition that is the whole file goes out as it is (a ticket's fetch accepting
    Parquet, or a scan answered with the file: tickets._as_is), and the file is replaced
    between the plan reading its footer and the send, Then it is refused as byte ranges are
    (503, nothing sent); unchanged, it is the very file."""
    ds, data, other = _dataset_and_other(tmp_path)
    reader = reader_for(ds)
    [part] = reader.partitions(1 << 40)
    planned = tickets._as_is(ds, reader, part.spec, None, None)
    assert planned is not None and planned.path == str(data) and planned.rows == 1000
    with DataHandler._open(planned) as f:
        assert f.read() == data.read_bytes()
    _swap(data, other, swap)
    _refused(planned)


def test_the_header_sent_before_the_ranges_names_no_file_or_directory(tmp_path):
    """When a partition goes out as byte ranges, Then the JSON header before them says sizes,
    offsets, row groups and columns, never the file's name or any part of its path."""
    data = tmp_path / "secret-dir" / "hidden-name.parquet"
    data.parent.mkdir()
    _write(data, 0)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(data), format="parquet"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    for where in (None, "n >= 10"):
        part, head = tickets._ranges(ds, reader, spec, ["n"], where)
        prefix = tickets.ranges_prefix(head)
        assert part.path == str(data)
        assert b"secret-dir" not in prefix and b"hidden-name" not in prefix
        assert set(head) == {"size", "ranges", "row_groups", "every_row", "columns",
                             "dictionary", "where", "select"}


def test_a_scan_is_answered_with_ranges_only_within_the_cap_and_without_governance(tmp_path):
    """When a scan could be answered with byte ranges, Then only if its partitions hold at most
    the cap (RANGES_ANSWER_BYTES, 256 MB, at the source) in all, are row groups of one file, and
    the dataset has no mask and no row filter; else the plan and its tickets."""
    from jupyterhub_dataaccess.sources.filters import parse_filter
    from jupyterhub_dataaccess.sources.plan import plan_read

    assert tickets.RANGES_ANSWER_BYTES == 256 << 20
    data = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": np.arange(200_000, dtype=np.int64)}), data,
                   row_group_size=20_000, compression=None)
    plain = Dataset(id="t", title="t", source=Source(kind="file", uri=str(data),
                                                     format="parquet"))
    reader = reader_for(plain)
    parts = reader.partitions(100_000)
    total = sum(p.nbytes for p in parts)
    assert len(parts) > 1 and total > 0
    plan = plan_read(plain, reader=reader)
    assert tickets._one_file_ranges(plain, reader, parts, plan, total - 1) is None
    ranges, _ = tickets._one_file_ranges(plain, reader, parts, plan, total)
    assert ranges.rows == 200_000
    for governed in ({"masks": {"n": "hash"}}, {"row_filter": parse_filter("n >= 5")}):
        ds = Dataset(id="t", title="t", source=plain.source, **governed)
        assert tickets._one_file_ranges(ds, reader_for(ds), parts, plan_read(ds),
                                        total) is None
