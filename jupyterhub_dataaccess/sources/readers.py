"""Readers for the sources of the catalogue: each reads its source's raw rows, pushing down what
it can (columns, and a filter given as the tree of sources/filters.py, translated for the source:
pyarrow.dataset filters with row-group statistics, a SQL WHERE built by SQLAlchemy).

Governance (row filter, masks, the caller's where, limit, in that order) is applied in
sources/plan.py, the one way data leaves the service.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.dataset as pads

from ..catalog import Dataset
from ..errors import GovernanceError
from ..times import iso
from .base import (
    BATCH_READAHEAD,
    BATCH_ROWS,
    FRAGMENT_READAHEAD,
    WHOLE,
    Partition,
    PartitionChanged,
    Reader,
    SourceError,
    UnknownVersion,
    merge_row_groups,
    path_tag,
    resolve_env,
    resolve_options,
)
from .filters import BoolOp, Column, Compare, InList, IsNull, Literal, Not, RowFilter
from .masks import masked_type, small_range

CSV_BLOCK_BYTES = 4 << 20
PARQUET_BUFFER_BYTES = 1 << 20
PREBUFFER_MAX_BYTES = 64 << 20  # compressed size of a row group read ahead whole


class ColumnError(ValueError):
    """Columns asked for that the dataset does not have."""


class CatalogMismatch(GovernanceError):
    """The catalogue governs a column the source does not have (a case difference, an upstream
    rename): nothing of the dataset may be served until an operator fixes one or the other.
    A 502: the service's fault, not the caller's, and not one that trying again mends."""

    status = 502

    def __init__(self, dataset: str, problems: list[str]):
        self.dataset, self.problems = dataset, problems
        super().__init__(f"dataset {dataset!r} cannot be served: " + "; ".join(problems)
                         + ". Nothing was read; an operator must fix the catalogue or the source")


@dataclass(frozen=True)
class Info:
    columns: list[dict[str, Any]]
    rows: int | None
    updated_at: str | None
    version: str | None = None


def _file_format(fmt: str) -> Any:
    if fmt == "csv":  # an empty or NA text field is missing (null), as in Parquet and pandas
        import pyarrow.csv as pacsv

        return pads.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
    if fmt == "jsonl":
        return pads.JsonFileFormat()
    # Column chunks are read as they are decoded, not a whole row group ahead of time, so a
    # file with huge row groups still streams in bounded memory.
    return pads.ParquetFileFormat(default_fragment_scan_options=pads.ParquetFragmentScanOptions(
        pre_buffer=False, buffer_size=PARQUET_BUFFER_BYTES))


def _filesystem(ds: Dataset) -> tuple[Any, str]:
    """(filesystem, path) for a file or s3 source; credentials come from the service's env.

    Remote sources go through fsspec (s3fs for s3): `options` are its storage options, e.g.
    `{key: "${S3_KEY}", secret: "${S3_SECRET}", endpoint_url: "http://minio:9000"}`.
    """
    uri = resolve_env(ds.source.uri)
    if ds.source.kind == "s3" and "://" not in uri:
        uri = "s3://" + uri.lstrip("/")
    if ds.source.kind == "s3" or ("://" in uri and not uri.startswith("file://")):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        options = resolve_options(ds.id, dict(ds.source.options))
        try:
            fs, path = fsspec.core.url_to_fs(uri, **options)
        except (ImportError, ValueError, TypeError) as e:
            raise SourceError(f"dataset {ds.id!r}: cannot open {uri.split('://')[0]} "
                              f"storage: {e}") from e
        return PyFileSystem(FSSpecHandler(fs)), path
    return None, uri.removeprefix("file://")


def _plain(batch: pa.RecordBatch, names: list[str], target: pa.Schema) -> pa.RecordBatch:
    """`batch` with its dictionary columns among `names` decoded to their `target` types."""
    for n in names:
        i = batch.schema.get_field_index(n)
        if i >= 0 and batch.schema.field(i).type != target.field(n).type:
            column = batch.column(i)
            batch = batch.set_column(i, target.field(n), column.dictionary.take(
                column.indices).cast(target.field(n).type))
    return batch


def filter_batch(batch: pa.RecordBatch, expr: Any, columns: set[str] | frozenset[str]
                 ) -> pa.RecordBatch:
    """The rows of `batch` for which the filter expression `expr` (reading `columns`) is true
    (null: dropped), as `batch.filter(expr)` gives them: the expression is evaluated on its
    columns alone (Acero's projection), then every column is filtered once by that mask. (An
    expression given to filter runs Acero's filter node over every column, then joins its
    pieces: the rows copied twice, ~1.6x the CPU.)"""
    if not columns or batch.num_rows == 0:
        return batch.filter(expr)
    import pyarrow.acero as acero

    source = pa.Table.from_batches([batch.select(sorted(columns))])
    mask = acero.Declaration.from_sequence([
        acero.Declaration("table_source", acero.TableSourceNodeOptions(source)),
        acero.Declaration("project", acero.ProjectNodeOptions([expr])),
    ]).to_table(use_threads=False).column(0)  # (one thread: the mask in row order)
    return batch.filter(mask.combine_chunks())


@dataclass(frozen=True)
class ParquetRanges:
    """Part of a local Parquet file, as it is: the byte `ranges` ((offset, length), in order)
    that hold row groups `groups`' column chunks of `columns`, its footer and its first bytes.
    A reader given these ranges at their offsets in a buffer of `size` bytes reads those row
    groups and columns as from the file. `rows`: the row groups' rows."""

    path: str
    size: int
    ranges: list[tuple[int, int]]
    groups: list[int]
    columns: list[str]
    rows: int
    every: list[bool]  # per row group: its statistics prove `where` keeps every row
    dictionary: list[str]  # text columns stored as small dictionaries in every row group
    identity: tuple[int, ...] = ()  # the file's (device, inode, size, mtime) when planned
    leaves: list[int] = field(default_factory=list)  # the columns' indices in the file
    chunks: list[tuple[int, int]] = field(default_factory=list)  # `ranges` but the footer's
    footer: tuple[int, int] = (0, 0)  # (offset, length) of the file's FileMetaData
    # with `alone`: that footer as pyarrow parsed it (FileMetaData), read from the file of
    # `identity`, for masked_bytes (None otherwise)
    meta: Any = field(default=None, repr=False, compare=False)

    def open(self) -> BinaryIO:
        """The file, open, checked to be the very file whose footer gave the ranges (same
        device, inode, size and modification time): a file renamed or linked in its place
        since is PartitionChanged, never sent."""
        return _open_same(self.path, self.identity)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open_same(path: str, identity: tuple[int, ...]) -> BinaryIO:
    f = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    if _identity(os.fstat(f.fileno())) != identity:
        f.close()
        raise PartitionChanged("the file changed since it was planned")
    return f


@dataclass(frozen=True)
class WholeFile:
    """A local Parquet file to send as it is: its identity (device, inode, size, mtime) and
    its footer's row groups and rows, both of the one descriptor that read them (`at`)."""

    path: str
    identity: tuple[int, ...]
    row_groups: int
    rows: int

    @classmethod
    def at(cls, path: str) -> WholeFile:
        import pyarrow.parquet as pq

        try:
            with open(path, "rb") as f:
                meta = pq.read_metadata(f)
                return cls(path, _identity(os.fstat(f.fileno())), meta.num_row_groups,
                           meta.num_rows)
        except (OSError, pa.ArrowException) as e:
            raise SourceError(str(e)) from e

    def open(self) -> BinaryIO:
        """The file, open, checked to be the very file whose footer was read (as
        ParquetRanges.open): one renamed, linked or rewritten in its place is PartitionChanged."""
        return _open_same(self.path, self.identity)


def _small_dictionaries(rg: Any, names: list[str], target: pa.Schema) -> list[str]:
    """The text columns of `names` that a Parquet row group stores as a small dictionary (at
    most 4 bytes a value: indices, not plain values): cheaper read as Arrow dictionaries."""
    chunks = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
    return [n for n in names if n in chunks and chunks[n].has_dictionary_page
            and chunks[n].total_uncompressed_size <= 4 * max(rg.num_rows, 1)
            and (pa.types.is_string(target.field(n).type)
                 or pa.types.is_binary(target.field(n).type))]


@contextlib.contextmanager
def _source_errors() -> Iterator[None]:
    """A file that cannot be opened or read (gone, not Parquet after all) is a SourceError: the
    caller answers with a clean 502 (or, for a changed partition, 410), never a 500."""
    try:
        yield
    except (OSError, pa.ArrowException) as e:
        raise SourceError(str(e)) from e


def _extent(chunk: Any) -> tuple[int, int]:
    """(offset, length) of a Parquet column chunk as its metadata says: from its dictionary
    page where it has one before its data pages."""
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and 0 < (chunk.dictionary_page_offset or 0) < start:
        start = chunk.dictionary_page_offset
    return start, chunk.total_compressed_size


def _sizes_known(created_by: str | None) -> bool:
    """Whether a parquet-mr file's chunk sizes count their dictionary page's header: from
    1.2.9 on (PARQUET-816; readers add up to 100 bytes to a chunk of an older file)."""
    words = (created_by or "").split()
    if len(words) < 3 or words[1] != "version":
        return False
    try:
        return tuple(int(x) for x in words[2].split("-")[0].split(".")[:3]) >= (1, 2, 9)
    except ValueError:
        return False


def _others(meta: Any, groups: set[int], columns: set[int]) -> list[tuple[int, int]]:
    """(offset, length) of every column chunk and bloom filter of a Parquet file but the
    chunks of `columns` in `groups`."""
    out = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            chunk = rg.column(c)
            if g not in groups or c not in columns:
                out.append(_extent(chunk))
            if (chunk.bloom_filter_offset or 0) > 0:
                out.append((chunk.bloom_filter_offset, max(chunk.bloom_filter_length or 1, 1)))
    return out


def _overlaps(spans: list[tuple[int, int]], others: list[tuple[int, int]]) -> bool:
    """Whether any (offset, length) of `spans` shares a byte with any of `others`."""
    others = sorted((a, a + n) for a, n in others if n > 0)
    starts = [a for a, _ in others]
    reach = list(itertools.accumulate((b for _, b in others), max))  # furthest end so far
    for a, n in spans:
        i = bisect.bisect_left(starts, a + n)  # the others starting before this span ends
        if n > 0 and i and reach[i - 1] > a:
            return True
    return False


# A footer cut down for ranges sent `alone` is parsed in Python (footer.pruned_footer: ~0.6 s
# of CPU a MB, once per footer, kept for the file's next fetches); past this, the governed path
# runs, its time per fetch bounded.
ALONE_FOOTER_BYTES = 256 << 10


# The masked columns of a hybrid are computed whole, in memory, before they are sent (about
# three times their size at the peak); a partition whose masked columns would take more (by
# masked_bytes) goes the governed way, streamed batch by batch in a few MB.
HYBRID_MASKED_BYTES = 32 << 20
_ROW_BYTES = {"null": 8, "redact": 12}  # an Arrow value and its offset; a hash: 32 + 4


def masked_bytes(f: BinaryIO, meta: Any, groups: list[int], masks: dict[str, str],
                 dictionaries: bool) -> int:
    """What the columns `masks` ({name: mask}) of row groups `groups` of the Parquet file open
    as `f` take as masked Arrow batches, from its footer `meta` (FileMetaData, as
    partition_ranges parsed it from the file of f's identity: ParquetRanges.meta): a hashed
    text column read as a dictionary (`dictionaries`, _small_dictionaries) 4 bytes a row and
    each batch's share of its dictionary (its count of values from the dictionary page's
    header, read from `f`), a hashed integer column whose statistics span few values for a
    batch's rows likewise (masks._small_range: each batch hashed as a dictionary of at most
    that span), any other hash 36 bytes a row (40 with `dictionaries`), a redaction 12, nulls
    8, and each batch's validity bitmaps and Arrow messages."""
    from .footer import dictionary_values

    target = meta.schema.to_arrow_schema()
    total = 0
    for g in groups:
        rg = meta.row_group(g)
        rows = rg.num_rows
        chunks = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
        small = set(_small_dictionaries(rg, list(masks), target)) if dictionaries else set()
        batches = -(-rows // BATCH_ROWS)
        total += 1024 * batches * (1 + len(masks))  # (each batch's messages and padding)
        for name, how in masks.items():
            total += rows // 8 + 64 * batches  # (each batch's validity bitmap, padded)
            # (a batch read otherwise is fitted to the first batch's type: a dictionary of its
            # own values, 4 bytes a row more: plan.execute_typed)
            per_row = _ROW_BYTES.get(how, 40 if dictionaries else 36)
            values = None
            if name in small and how in ("hash", "hash-v2"):  # (as FileReader._hashed)
                chunk = chunks[name]
                start = chunk.dictionary_page_offset or 0
                values = dictionary_values(os.pread(f.fileno(), 256, start)) if start > 0 \
                    else None
            span = _integer_span(chunks[name], target.field(name).type) \
                if dictionaries and how in ("hash", "hash-v2") and values is None else None
            if span is not None:  # batch by batch, as the rows are read (BATCH_ROWS each)
                for n in [BATCH_ROWS] * (batches - 1) + [rows - BATCH_ROWS * (batches - 1)]:
                    total += 4 * n + 36 * min(n, span + 1) if small_range(n, span) \
                        else per_row * n
            elif values is None:
                total += per_row * rows
            else:  # each batch's dictionary is cut to its values (plan._present)
                total += 4 * rows + 36 * min(rows, batches * values)
    return total


def _integer_span(chunk: Any, kind: pa.DataType) -> int | None:
    """max - min of an integer column chunk by its statistics (None: not an integer column,
    or no statistics)."""
    stats = chunk.statistics
    if not pa.types.is_integer(kind) or stats is None or not stats.has_min_max:
        return None
    low, high = stats.min, stats.max
    return high - low if isinstance(low, int) and isinstance(high, int) else None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) spans sorted, with overlapping or touching ones joined."""
    out: list[list[int]] = []
    for start, length in sorted(spans):
        if out and start <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], start + length - out[-1][0])
        else:
            out.append([start, length])
    return [(a, n) for a, n in out if n > 0]


class FileReader(Reader):
    _found: pads.Dataset | None = None

    def _dataset(self) -> pads.Dataset:
        """The source's files, found once per reader (one request: its version, schema and
        rows are of the same files)."""
        if self._found is None:
            fs, path = _filesystem(self.ds)
            try:
                self._found = pads.dataset(path, format=_file_format(self.ds.source.format),
                                           filesystem=fs)
            except (OSError, pa.ArrowInvalid, FileNotFoundError) as e:
                raise SourceError(str(e)) from e
        return self._found

    def raw_schema(self) -> pa.Schema:
        return self._dataset().schema

    def raw_batches(self, columns: list[str], where: RowFilter | None,
                    limit: int | None = None) -> Iterator[pa.RecordBatch]:
        dataset = self._dataset()
        if self.ds.source.format == "parquet":
            yield from self._parquet_batches(dataset, columns, where)
            return
        filter_expr = where.to_arrow() if where is not None else None
        scanner = dataset.scanner(columns=columns, filter=filter_expr, batch_size=BATCH_ROWS,
                                  use_threads=True, batch_readahead=BATCH_READAHEAD,
                                  fragment_readahead=FRAGMENT_READAHEAD)
        yield from scanner.to_batches()

    def _parquet_batches(self, dataset: pads.FileSystemDataset, columns: list[str],
                         where: RowFilter | None) -> Iterator[pa.RecordBatch]:
        """Parquet file by file and row group by row group, a batch decoded at a time: memory
        stays near one row group's compressed bytes plus a batch of the needed columns. Only the
        row groups whose statistics may match the filter are read."""
        needed = list(dict.fromkeys([*columns, *sorted(where.columns if where else ())]))
        target = pa.schema([dataset.schema.field(n) for n in needed])
        filter_expr = where.to_arrow() if where is not None else None
        for fragment in dataset.get_fragments(filter=filter_expr):
            with fragment.filesystem.open_input_file(fragment.path) as f:
                # the footer of the file whose pages are read (one renamed into its place
                # after its footer was read by path would be decoded at another's offsets)
                own = pads.ParquetFileFormat().make_fragment(f)
                meta = own.metadata
                groups = (range(meta.num_row_groups) if filter_expr is None  # (statistics)
                          else [rg.id for rg in own.subset(filter=filter_expr).row_groups])
                for group in groups:
                    yield from self._row_group(f, meta, group, columns, needed, target,
                                               where, self._hashed(where))

    @_source_errors()
    def partitions(self, target_bytes: int, where: RowFilter | None = None,
                   spread: int = 1) -> list[Partition]:
        """A partition per file; Parquet files by runs of row groups of about `target_bytes`.

        With `where` (a filter on raw values), only the row groups whose statistics may match
        it are planned, so a read that prunes to a few row groups gets few partitions (none when
        nothing can match). With `spread`, runs are made smaller, down to single row groups, so
        that there are at least that many partitions to fetch at once where the row groups allow.
        """
        import pyarrow.parquet as pq

        dataset = self._dataset()
        filter_expr = where.to_arrow() if where is not None else None
        files: list[tuple[int, str, list[tuple[int, int, int]]]] = []  # (i, path, kept groups)
        out = []
        for i, path in enumerate(sorted(dataset.files)):
            if self.ds.source.format != "parquet":
                out.append(Partition(("file", i, path_tag(path))))
                continue
            if filter_expr is None:
                with dataset.filesystem.open_input_file(path) as f:
                    meta = pq.read_metadata(f)
                kept = range(meta.num_row_groups)
            else:  # row-group statistics (min, max, nulls) against it, from the one footer read
                fragment = pads.ParquetFileFormat().make_fragment(
                    path, filesystem=dataset.filesystem)
                meta = fragment.metadata
                kept = [rg.id for rg in fragment.subset(filter=filter_expr,
                                                        schema=dataset.schema).row_groups]
            files.append((i, path, [(g, meta.row_group(g).num_rows, sum(
                meta.row_group(g).column(c).total_compressed_size
                for c in range(meta.num_columns))) for g in kept]))
        if spread > 1:  # smaller runs where the row groups allow, for parallel fetches
            sizes = [size for _, _, groups in files for _, _, size in groups]
            # a share of the total, plus half a group's slack so near-equal groups split evenly
            share = sum(sizes) // spread + sum(sizes) // (2 * max(len(sizes), 1))
            target_bytes = max(1, min(target_bytes, share))
        for i, path, groups in files:
            run: list[tuple[int, int, int]] = []
            for group in [*groups, None]:  # runs of consecutive row groups, each merged
                if run and (group is None or group[0] != run[-1][0] + 1):
                    first = run[0][0]
                    out += [Partition(("rg", i, path_tag(path), first + a, first + b), rows, size)
                            for a, b, rows, size in merge_row_groups(
                                [(rows, size) for _, rows, size in run], target_bytes)]
                    run = []
                if group is not None:
                    run.append(group)
        if not out and filter_expr is not None and dataset.files:
            return []  # nothing can match: nothing to fetch
        return out or [Partition(WHOLE, 0, 0)]

    def partition_batches(self, spec: tuple, columns: list[str], where: RowFilter | None
                          ) -> Iterator[pa.RecordBatch]:
        """Checks at once that the partition is still the one planned (PartitionChanged)."""
        if tuple(spec) == WHOLE:
            return self.raw_batches(columns, where)
        dataset = self._dataset()
        filter_expr = where.to_arrow() if where is not None else None
        path = self.partition_file(dataset, spec)
        if spec[0] == "file":
            one = pads.dataset([path], format=_file_format(self.ds.source.format),
                               filesystem=dataset.filesystem)
            return one.scanner(columns=columns, filter=filter_expr, batch_size=BATCH_ROWS,
                               use_threads=True, batch_readahead=BATCH_READAHEAD).to_batches()
        f = dataset.filesystem.open_input_file(path)  # its footer and pages, of one file
        try:
            meta, wanted = self._row_groups(dataset, f, spec, where)
        except BaseException:
            f.close()
            raise
        needed = list(dict.fromkeys([*columns, *sorted(where.columns if where else ())]))
        target = pa.schema([dataset.schema.field(n) for n in needed])

        def groups() -> Iterator[pa.RecordBatch]:
            with f:
                for group in wanted:
                    yield from self._row_group(f, meta, group, columns, needed, target,
                                               where, self._hashed(where))

        return groups()

    @_source_errors()
    def partition_ranges(self, spec: tuple, columns: list[str], where: RowFilter | None,
                         groups_by: RowFilter | None = None, proven: RowFilter | None = None,
                         alone: bool = False) -> ParquetRanges | None:
        """A partition of row groups as the byte ranges of its local Parquet file that hold
        them: the row groups whose statistics may match `where` (a filter on raw values; or
        `groups_by` when given), the column chunks of `columns` and of the filter's columns,
        and the footer; or None where the file cannot be read like this (not local, nested
        columns, a file whose types differ from the dataset's), or where `proven` is given and
        the statistics of a row group do not prove that it keeps every row of it (the row
        filter: keeps_every_row). With `alone` (the file's other columns and row groups are not
        the caller's to see), the chunks' own bytes only: None for a file whose chunks' ends
        are not known (old parquet-mr: readers add 100 bytes, which may be the next chunk's)
        or whose chunks to send lie outside its data or overlap any other chunk or bloom
        filter of the file, or whose footer is over ALONE_FOOTER_BYTES. Checks that the
        partition is still the one planned."""
        dataset = self._dataset()
        from pyarrow.fs import LocalFileSystem

        if spec[0] != "rg" or not isinstance(dataset.filesystem, LocalFileSystem):
            return None
        path = self.partition_file(dataset, spec)
        with open(path, "rb") as f:  # the identity of the file whose footer is read
            identity = _identity(os.fstat(f.fileno()))
            meta, groups = self._row_groups(dataset, pa.PythonFile(f, mode="r"), spec,
                                            where if groups_by is None else groups_by)
        read = list(dict.fromkeys([*columns, *sorted(where.columns if where else ())]))
        stored = meta.schema.to_arrow_schema()
        if meta.num_columns != len(stored) or not all(  # one column chunk per column
                n in stored.names and stored.field(n).equals(dataset.schema.field(n))
                for n in [*read, *sorted(proven.columns if proven else ())]):
            return None
        if proven is not None and not all(keeps_every_row(proven.tree, meta.row_group(g),
                                                          stored) for g in groups):
            return None
        with _open_same(path, identity) as f:
            size = os.fstat(f.fileno()).st_size
            tail = os.pread(f.fileno(), 8, size - 8)
        footer = int.from_bytes(tail[:4], "little") + 8
        if tail[4:] != b"PAR1" or footer > size - 4:
            return None  # (an encrypted footer, or not Parquet after all)
        if alone and footer > ALONE_FOOTER_BYTES:
            return None
        wanted = [stored.get_field_index(n) for n in read]
        spans = []
        every, dictionary = [], set(read)
        # old parquet-mr left a dictionary page's header out of a chunk's size: readers then
        # read up to 100 bytes more, as Arrow does
        slack = 100 if (meta.created_by or "").startswith("parquet-mr") else 0
        if alone and slack and not _sizes_known(meta.created_by):
            return None
        slack = 0 if alone else slack
        target = pa.schema([stored.field(n) for n in read])
        for g in groups:
            rg = meta.row_group(g)
            every.append(where is None or keeps_every_row(where.tree, rg, target))
            dictionary &= set(_small_dictionaries(rg, read, target))
            for c in wanted:
                start, length = _extent(rg.column(c))
                spans.append((start, min(length + slack, size - footer - start)))
        if alone and (any(a < 4 or n <= 0 for a, n in spans)  # (n: cut at the footer)
                      or _overlaps(spans, _others(meta, set(groups), set(wanted)))):
            return None  # (a chunk outside the data, or sharing bytes with another)
        return ParquetRanges(path, size, _merged([(0, 4), (size - footer, footer), *spans]),
                             groups, read, sum(meta.row_group(g).num_rows for g in groups),
                             every, [n for n in read if n in dictionary], identity, wanted,
                             _merged(spans), (size - footer, footer - 8),
                             meta if alone else None)

    @staticmethod
    def _row_groups(dataset: pads.FileSystemDataset, f: Any, spec: tuple,
                    where: RowFilter | None) -> tuple[Any, list[int]]:
        """(footer, row groups) of a partition of row groups of the open file `f`: those of the
        run whose statistics may match `where`. PartitionChanged when the file no longer has
        the run planned. (Read from the file whose pages are read: a footer read by path may
        be another file's, renamed into its place meanwhile, whose offsets would then decode
        another column's bytes.)"""
        fragment = pads.ParquetFileFormat().make_fragment(f)
        meta = fragment.metadata  # the footer, read once for the checks and the statistics
        if not (len(spec) == 5 and all(isinstance(x, int) for x in spec[3:])
                and 0 <= spec[3] < spec[4] <= meta.num_row_groups):
            raise PartitionChanged("the file's row groups changed since the plan")
        run = range(spec[3], spec[4])
        if where is None:
            return meta, list(run)
        return meta, [rg.id for rg in fragment.subset(filter=where.to_arrow(),
                                                      schema=dataset.schema).row_groups
                      if rg.id in run]

    @staticmethod
    def partition_file(dataset: pads.FileSystemDataset, spec: tuple) -> str:
        """The path of the file a partition names, checked to be the very file planned."""
        files = sorted(dataset.files)
        if (len(spec) < 3 or spec[0] not in ("file", "rg") or not isinstance(spec[1], int)
                or not 0 <= spec[1] < len(files) or path_tag(files[spec[1]]) != spec[2]):
            raise PartitionChanged("the dataset's files changed since the plan")
        return files[spec[1]]

    def _hashed(self, where: RowFilter | None) -> frozenset[str]:
        """The columns masked with the vectorised hash that no filter reads: these may be read
        as Arrow dictionaries, so each distinct value is decoded and hashed once."""
        return frozenset(n for n, how in self.ds.masks.items() if how in ("hash", "hash-v2")
                         and n not in (where.columns if where else ()))

    @staticmethod
    def _row_group(f: Any, meta: Any, group: int, columns: list[str], needed: list[str],
                   target: pa.Schema, where: RowFilter | None,
                   hashed: frozenset[str] = frozenset()) -> Iterator[pa.RecordBatch]:
        """One row group, batch by batch. Its column chunks are fetched in one go when they are
        small enough to hold (a reader pre-buffers every row group it is given, and keeps them:
        so each row group gets a reader of its own); a huge one is read through a small buffer.

        A text column stored as a small dictionary (at most 4 bytes a value: dictionary
        indices, not plain values) is read as an Arrow dictionary: Parquet decodes each
        distinct value once. A `hashed` one stays a dictionary, which masks.hash_v2 hashes once
        per distinct value; any other is made plain text again by a take (before the filter if
        the filter reads it, else after it, of the kept rows only), so the filter and what
        follows see the types they always did. A filter the row group's statistics prove true
        for every row is not evaluated."""
        import pyarrow.parquet as pq

        rg = meta.row_group(group)
        filter_expr = None
        if where is not None and not keeps_every_row(where.tree, rg, target):
            filter_expr = where.to_arrow()
        size = sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))
        filtered = where.columns if where is not None else ()
        dictionary = _small_dictionaries(rg, needed, target)
        expected = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type))
                              if f.name in dictionary else f for f in target])
        pf = pq.ParquetFile(f, metadata=meta, pre_buffer=size <= PREBUFFER_MAX_BYTES,
                            buffer_size=PARQUET_BUFFER_BYTES, read_dictionary=dictionary or None)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=needed,
                                     use_threads=True):
            if batch.schema != expected:  # files of one dataset may differ in types
                batch = pa.Table.from_batches([batch]).select(needed).cast(
                    target).combine_chunks().to_batches()[0]
            if filter_expr is not None:  # the filter sees plain text, as it always did
                batch = _plain(batch, [n for n in dictionary if n in filtered], target)
                batch = filter_batch(batch, filter_expr, filtered)
            yield _plain(batch.select(columns), [n for n in dictionary if n not in hashed],
                         target)

    def count(self, where: RowFilter | None) -> int | None:
        return self._dataset().count_rows(filter=where.to_arrow() if where else None)

    def version(self) -> str | None:
        """A digest of each file's path, size and modification time (ETag on object stores).
        Files keep no history: a version other than the current one is unknown."""
        dataset = self._dataset()
        fs = dataset.filesystem
        digest = hashlib.sha256()
        for path in sorted(dataset.files):
            if hasattr(fs, "handler"):  # fsspec (s3fs): its own info knows ETag and LastModified
                info = fs.handler.fs.info(path)
                stamp = info.get("ETag") or info.get("LastModified") or info.get("mtime")
                digest.update(f"{path}\0{info.get('size')}\0{stamp}\n".encode())
            else:
                info = fs.get_file_info(path)
                digest.update(f"{path}\0{info.size}\0{info.mtime_ns}\n".encode())
        current = digest.hexdigest()[:16]
        if self.pinned is not None and self.pinned != current:
            raise UnknownVersion(self.ds.id, self.pinned)
        return current

    def cache_token(self) -> str | None:
        return self.version()

    def updated_at(self) -> str | None:
        fs, path = _filesystem(self.ds)
        try:
            if fs is None:
                when = datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
            else:  # fsspec: s3fs knows LastModified as modified(), not as an mtime
                when = fs.handler.fs.modified(path)
        except (OSError, pa.ArrowException, NotImplementedError, ValueError, KeyError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return iso(when)


class SQLReader(Reader):
    _engines: dict[str, Any] = {}
    _lock = threading.Lock()

    def _engine(self) -> Any:
        from sqlalchemy import create_engine

        url = resolve_env(self.ds.source.url)
        with self._lock:
            if url not in self._engines:
                engine = create_engine(url, pool_pre_ping=True)
                if engine.dialect.name == "sqlite":
                    path = engine.url.database or ""
                    if path not in ("", ":memory:") and not os.path.isfile(path):
                        raise SourceError(f"no SQLite file at {path}")  # never create one
                    _sqlite_read_only(engine)
                self._engines[url] = engine
            return self._engines[url]

    @contextlib.contextmanager
    def _read_only(self) -> Iterator[Any]:
        """A connection to the source in a transaction that is never committed (read-only
        intent: PostgreSQL's READ ONLY; SQLite connections refuse writes). Any driver error is
        a SourceError: the user gets a clean 502."""
        try:
            with self._engine().connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield conn
                conn.rollback()
        except SourceError:
            raise
        except Exception as e:  # any driver error
            raise SourceError(str(e)) from e

    def _table(self, conn: Any) -> Any:
        """The catalogue's table (`name` or `schema.name`), its columns as the database has them."""
        from sqlalchemy import MetaData, Table

        schema, _, name = self.ds.source.table.rpartition(".")
        return Table(name, MetaData(), schema=schema or None, autoload_with=conn)

    def _arrow_batches(self, columns: list[str] | None = None, where: RowFilter | None = None,
                       limit: int | None = None, key_range: tuple | None = None
                       ) -> Iterator[pa.RecordBatch]:
        """Rows in batches, in a transaction that is never committed (`_read_only`). The
        projection, filter and limit go into the statement SQLAlchemy builds (values as bound
        parameters), so the database does the filtering. `key_range` is a partition's
        (lo, hi, nulls) of the catalogue's `partition_by` column (see partitions)."""
        from sqlalchemy import column, select, text

        with self._read_only() as conn:
            declared: dict[str, pa.DataType | None] = {}
            if self.ds.source.table:
                src = self._table(conn)
                declared = {c.name: _arrow_type(c.type) for c in src.columns}
                cols = src.c
            elif columns is None and where is None and limit is None:
                src = cols = None
            else:  # the catalogue's query as a subquery; only the named columns are used
                used = dict.fromkeys([*(columns or ()), *sorted(where.columns if where else ())])
                src = text(self.ds.source.query).columns(*map(column, used)).subquery("source")
                cols = src.c
            if src is None:
                stmt = text(self.ds.source.query)
            else:
                stmt = select(*([cols[n] for n in columns] if columns else [src]))
                if where is not None:
                    stmt = stmt.where(_sql_where(where.tree, cols, conn.dialect.name))
                if key_range is not None:
                    stmt = stmt.where(_key_range(cols, self.ds.source.partition_by,
                                                 *key_range))
                if limit is not None:
                    stmt = stmt.limit(limit)
            result = conn.execution_options(stream_results=True).execute(stmt)
            names = list(result.keys())
            fixed: pa.Schema | None = None  # every batch has the types of the first
            while True:
                rows = result.fetchmany(BATCH_ROWS // 4)
                if not rows and fixed is not None:
                    break
                batch = pa.Table.from_pydict(
                    {n: [r[i] for r in rows] for i, n in enumerate(names)})
                if fixed is None:
                    fixed = pa.schema([
                        pa.field(n, declared.get(n) or _not_null(batch.schema, n))
                        for n in names])
                yield from (batch.cast(fixed).to_batches()
                            or [pa.RecordBatch.from_pylist([], schema=fixed)])
                if not rows:  # an empty source still has its columns
                    break

    def partitions(self, target_bytes: int, where: RowFilter | None = None,
                   spread: int = 1) -> list[Partition]:
        """One partition, or with the catalogue's `partition_by` key, ranges of that key:
        `("key", column, lo, hi, nulls)` holds the rows with lo <= key < hi (a None bound is
        open), and the first range also the rows whose key is null, so every row is in exactly
        one range whatever was written since the plan. The ranges split min..max of the rows
        `where` keeps into equal widths, as many as the rows' estimated size over
        `target_bytes` asks (8 bytes a value), at least `spread` (and 4) where the rows and
        the key's distinct values allow, at most MAX_KEY_PARTITIONS."""
        key = self.ds.source.partition_by
        if not key:
            return [Partition(WHOLE)]
        from sqlalchemy import func, select

        with self._read_only() as conn:
            src = self._table(conn)
            if key not in src.c:
                raise SourceError(f"the partition key {key!r} is not a column of the table")
            col = src.c[key]
            stmt = select(func.min(col), func.max(col), func.count()).select_from(src)
            if where is not None:
                stmt = stmt.where(_sql_where(where.tree, src.c, conn.dialect.name))
            low, high, rows = conn.execute(stmt).one()
        if low is None or high is None:
            return [Partition(WHOLE, rows)]
        kind = _key_kind(low)
        if kind is None or _key_kind(high) is not kind:
            raise SourceError(f"the partition key {key!r} holds {type(low).__name__} values, "
                              "not integers, dates or timestamps")
        start, stop = _key_number(low), _key_number(high) + 1
        wanted = -(-rows * len(src.c) * 8 // max(target_bytes, 1))
        n = max(1, min(MAX_KEY_PARTITIONS, rows, stop - start, max(wanted, spread, 4)))
        bounds = [None, *(_key_json(_key_value(kind, start + (stop - start) * i // n, low))
                          for i in range(1, n)), None]
        return [Partition(("key", key, bounds[i], bounds[i + 1], i == 0)) for i in range(n)]

    def partition_batches(self, spec: tuple, columns: list[str], where: RowFilter | None
                          ) -> Iterator[pa.RecordBatch]:
        """A range of the partition key: checked to name the catalogue's key (PartitionChanged
        if the catalogue changed since the plan); its bounds bound as parameters."""
        if tuple(spec) == WHOLE:
            return self.raw_batches(columns, where)
        key = self.ds.source.partition_by
        if not (len(spec) == 5 and spec[0] == "key" and key and spec[1] == key
                and all(b is None or type(b) in (int, str) for b in spec[2:4])
                and isinstance(spec[4], bool)):
            raise PartitionChanged("the source is no longer partitioned as planned")
        return self._arrow_batches(columns, where, key_range=tuple(spec[2:]))

    def raw_schema(self) -> pa.Schema:
        for batch in self._arrow_batches():
            return batch.schema
        return pa.schema([])

    def raw_batches(self, columns: list[str], where: RowFilter | None,
                    limit: int | None = None) -> Iterator[pa.RecordBatch]:
        yield from self._arrow_batches(columns, where, limit)


MAX_KEY_PARTITIONS = 64
_EPOCH = datetime(1970, 1, 1)


def _key_kind(value: Any) -> type | None:
    """int, date or datetime: the kinds of value a partition key may hold (None: another)."""
    kind = type(value)
    return kind if kind in (int, date, datetime) else None


def _key_number(value: Any) -> int:
    """A key value as an integer of the same order: days for dates, microseconds for times."""
    if isinstance(value, datetime):
        delta = value - _EPOCH.replace(tzinfo=value.tzinfo)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value.toordinal() if isinstance(value, date) else value


def _key_value(kind: type, number: int, like: Any) -> Any:
    """The key value of `number` (as _key_number made it), of the kind (and zone) of `like`."""
    from datetime import timedelta

    if kind is datetime:
        return _EPOCH.replace(tzinfo=like.tzinfo) + timedelta(microseconds=number)
    return date.fromordinal(number) if kind is date else number


def _key_json(value: Any) -> int | str:
    """A range bound as it travels in a ticket: an integer, or ISO text for dates and times."""
    return value if isinstance(value, int) else value.isoformat()


def _key_range(cols: Any, key: str, lo: Any, hi: Any, nulls: bool) -> Any:
    """lo <= key < hi (None: open), or key is null when `nulls`: bounds as bound parameters of
    the key column's type. A bound that does not fit that type: PartitionChanged."""
    from sqlalchemy import and_, or_, true

    col = cols[key]
    try:
        kind = col.type.python_type
    except NotImplementedError:
        kind = None
    parts = []
    for bound, op in ((lo, col.__ge__), (hi, col.__lt__)):
        if bound is None:
            continue
        try:
            if kind is int and type(bound) is int:
                value = bound
            elif kind is date and isinstance(bound, str):
                value = date.fromisoformat(bound)
            elif kind is datetime and isinstance(bound, str):
                value = datetime.fromisoformat(bound)
            else:
                raise ValueError(bound)
        except ValueError:
            raise PartitionChanged("the partition key's type changed since the plan") from None
        parts.append(op(value))
    inside = and_(*parts) if parts else true()
    return or_(inside, col.is_(None)) if nulls else inside


def _sql_where(tree: Any, cols: Any, dialect: str) -> Any:
    """A filter tree as a SQLAlchemy expression with the same meaning as its Arrow form: values
    are bound parameters; null compares to null (a comparison with null keeps no row, even
    negated); `in (..., null)` also matches nulls; text orders by code point, as Arrow does."""
    from sqlalchemy import Boolean, and_, cast, false, literal, not_, null, or_

    def operand(node: Column | Literal) -> Any:
        return cols[node.name] if isinstance(node, Column) else literal(node.value)

    if isinstance(tree, Compare):
        if any(isinstance(n, Literal) and n.value is None for n in (tree.left, tree.right)):
            return cast(null(), Boolean)
        left, right = operand(tree.left), operand(tree.right)
        if tree.op in ("<", "<=", ">", ">=") and dialect == "postgresql" and any(
                isinstance(n, Literal) and isinstance(n.value, str)
                for n in (tree.left, tree.right)):
            left = left.collate("C")
        return {"==": left == right, "!=": left != right, "<": left < right,
                "<=": left <= right, ">": left > right, ">=": left >= right}[tree.op]
    if isinstance(tree, InList):
        col = cols[tree.column.name]
        values = [v for v in tree.values if v is not None]
        expr = col.in_(values) if values else false()
        if None in tree.values:
            expr = or_(expr, col.is_(None))
        return not_(expr) if tree.negate else expr
    if isinstance(tree, IsNull):
        col = cols[tree.column.name]
        return col.is_not(None) if tree.negate else col.is_(None)
    if isinstance(tree, Not):
        return not_(_sql_where(tree.part, cols, dialect))
    parts = [_sql_where(p, cols, dialect) for p in tree.parts]
    return and_(*parts) if tree.op == "and" else or_(*parts)


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def keeps_every_row(tree: Any, rg: Any, schema: pa.Schema) -> bool:
    """True only when a Parquet row group's statistics prove that the filter `tree` keeps every
    one of its rows, so it need not be evaluated: comparisons of an integer column without
    nulls with an integer, `is not null`, and `and`/`or` of these. Anything else: False."""
    if isinstance(tree, BoolOp):
        parts = [keeps_every_row(p, rg, schema) for p in tree.parts]
        return all(parts) if tree.op == "and" else any(parts)
    if isinstance(tree, IsNull):
        stats = _stats(tree.column.name, rg, schema, integer=False)
        return tree.negate and stats is not None
    if not isinstance(tree, Compare):
        return False
    col, lit, op = tree.left, tree.right, tree.op
    if isinstance(col, Literal):
        col, lit, op = lit, col, _FLIPPED[op]
    if not (isinstance(col, Column) and isinstance(lit, Literal) and type(lit.value) is int):
        return False
    stats = _stats(col.name, rg, schema, integer=True)
    if stats is None or not stats.has_min_max:
        return False
    low, high, v = stats.min, stats.max, lit.value
    return {"<": high < v, "<=": high <= v, ">": low > v, ">=": low >= v,
            "==": low == high == v, "!=": v < low or v > high}[op]


def _stats(name: str, rg: Any, schema: pa.Schema, integer: bool) -> Any:
    """The statistics of column `name` in a row group when it holds no null (None otherwise,
    or when `integer` and the column is not an integer column)."""
    if name not in schema.names or (integer and not pa.types.is_integer(schema.field(name).type)):
        return None
    for i in range(rg.num_columns):
        chunk = rg.column(i)
        if chunk.path_in_schema == name:
            stats = chunk.statistics
            ok = (stats is not None and stats.has_null_count and stats.null_count == 0
                  and chunk.num_values == rg.num_rows)
            return stats if ok else None
    return None


def _sqlite_read_only(engine: Any) -> None:
    """Every connection to a SQLite source refuses writes (PostgreSQL: a read-only transaction)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _query_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")


_PYTHON_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary(),
                 bool: pa.bool_(), datetime: pa.timestamp("us"), date: pa.date32()}


def _arrow_type(sql_type: Any) -> pa.DataType | None:
    """The Arrow type of a reflected SQL column type, None to infer it from the values."""
    try:
        return _PYTHON_TYPES.get(sql_type.python_type)
    except NotImplementedError:
        return None


def _not_null(inferred: pa.Schema, name: str) -> pa.DataType:
    """The inferred type, or text where the first batch held only nulls (later ones may not)."""
    t = inferred.field(name).type
    return pa.string() if pa.types.is_null(t) else t


def whole_file(ds: Dataset) -> str | None:
    """The source's own Parquet file when governance changes nothing in it (no mask, no row
    filter, one local file): then a read of all of it can be sent as it is."""
    src = ds.source
    if src.kind != "file" or src.format != "parquet" or not ds.ungoverned:
        return None
    fs, path = _filesystem(ds)
    return path if fs is None and os.path.isfile(path) else None


def _iceberg() -> type[Reader]:
    from .iceberg import IcebergReader

    return IcebergReader


def _delta() -> type[Reader]:
    from .delta import DeltaReader

    return DeltaReader


# Every source kind and its reader, in one place (lakehouse readers import their library late).
READERS = {"file": lambda: FileReader, "s3": lambda: FileReader, "sql": lambda: SQLReader,
           "iceberg": _iceberg, "delta": _delta}


def reader_for(ds: Dataset, version: str | None = None) -> Reader:
    """The reader of a dataset, at `version` when given (checked when the reader first reads:
    UnknownVersion if the source has no such version)."""
    return READERS[ds.source.kind]()(ds, version)


def described_columns(ds: Dataset, schema: pa.Schema) -> list[dict[str, Any]]:
    """The governed `schema`'s columns as the API names them: name, type and mask (or None)."""
    return [{"name": f.name, "type": str(f.type), "mask": ds.masks.get(f.name)} for f in schema]


def governed_schema(ds: Dataset, raw: pa.Schema, columns: list[str] | None = None) -> pa.Schema:
    names = columns or raw.names
    return pa.schema([
        pa.field(n, masked_type(raw.field(n).type, ds.masks[n]) if n in ds.masks
                 else raw.field(n).type) for n in names
    ])


def check_columns(raw: pa.Schema, columns: list[str] | None) -> list[str]:
    if not columns:
        return list(raw.names)
    unknown = [c for c in columns if c not in raw.names]
    if unknown:
        raise ColumnError("unknown column(s): " + ", ".join(unknown))
    return list(dict.fromkeys(columns))


def catalog_mismatches(ds: Dataset, raw: pa.Schema) -> list[str]:
    """Each mask or row-filter column of `ds` that the source's schema lacks, as a sentence
    naming it (and the source's column it probably meant)."""
    names = raw.names
    problems = []
    for col in sorted(ds.masks):
        if col not in names:
            problems.append(f"the catalogue masks column {col!r}, which the source lacks"
                            + _did_you_mean(col, names))
    for col in sorted(ds.row_filter.columns if ds.row_filter else ()):
        if col not in names:
            problems.append(f"the row filter names column {col!r}, which the source lacks"
                            + _did_you_mean(col, names))
    key = ds.source.partition_by
    if key and key not in names:
        problems.append(f"the catalogue splits by column {key!r} (partition_by), which the "
                        "source lacks" + _did_you_mean(key, names))
    elif key and not (pa.types.is_integer(t := raw.field(key).type) or pa.types.is_date(t)
                      or pa.types.is_timestamp(t)):
        problems.append(f"the catalogue splits by column {key!r} (partition_by), of type "
                        f"{t}: it must be an integer, date or timestamp column")
    return problems


def check_catalog_columns(ds: Dataset, raw: pa.Schema) -> None:
    """Fail closed: raise CatalogMismatch when a mask or the row filter names a missing column.
    Every path that serves data calls this before the first row leaves."""
    problems = catalog_mismatches(ds, raw)
    if problems:
        raise CatalogMismatch(ds.id, problems)


def _did_you_mean(name: str, names: list[str]) -> str:
    import difflib

    same = [n for n in names if n.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_info_cache: dict[tuple, Info] = {}


def dataset_info(ds: Dataset, reader: Reader | None = None) -> Info:
    """Governed schema, row count (after the row filter), update time and version; cached per
    version of the source (a file's size and mtime, a table's metadata)."""
    reader = reader or reader_for(ds)
    try:
        token = reader.cache_token()
    except (SourceError, UnknownVersion):
        raise
    except Exception as e:
        raise SourceError(str(e)) from e
    cache_key = (ds.id, repr(ds.source), ds.row_filter.text if ds.row_filter else "",
                 tuple(sorted(ds.masks.items())), token)
    if token is not None and cache_key in _info_cache:
        return _info_cache[cache_key]
    try:
        updated = reader.updated_at()
        version = reader.version()
        raw = reader.raw_schema()
        check_catalog_columns(ds, raw)
        rows = reader.count(ds.row_filter)
    except (SourceError, UnknownVersion, CatalogMismatch):
        raise
    except Exception as e:
        raise SourceError(str(e)) from e
    schema = governed_schema(ds, raw)
    info = Info(
        columns=described_columns(ds, schema), rows=rows, updated_at=updated, version=version,
    )
    if token is not None:
        if len(_info_cache) > 10_000:
            _info_cache.clear()
        _info_cache[cache_key] = info
    return info
