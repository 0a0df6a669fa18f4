"""Delta Lake tables through the `deltalake` package (delta-rs), on local disk or object storage.

`uri` is the table's root (a path, s3://, gs://, az://); `options` are delta-rs storage options
(e.g. AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL), credentials as ${ENV} references. The table at one
version becomes a pyarrow dataset of its data files, scanned as the file reader scans Parquet:
the filter pushed down (partition values and row-group statistics prune), the projection read,
batch by batch. Versions are the table's commit versions, as strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ..catalog import Dataset
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
    path_tag,
    plain_types,
    resolve_env,
    resolve_options,
    scrub,
)
from .filters import BoolOp, Compare, InList, IsNull, RowFilter, _columns, _to_arrow


class DeltaReader(Reader):
    """One Delta table at one version: the latest (when the reader first opens the table) or
    the one `version` names."""

    def __init__(self, ds: Dataset, version: str | None = None):
        super().__init__(ds, version)
        self._loaded: Any = None

    def _table(self) -> Any:
        if self._loaded is not None:
            return self._loaded
        from deltalake import DeltaTable

        options = {k: str(v) for k, v in resolve_options(self.ds.id,
                                                          dict(self.ds.source.options)).items()}
        uri = resolve_env(self.ds.source.uri)
        try:
            table = DeltaTable(uri, storage_options=options or None)
        except Exception as e:  # TableNotFoundError, an unreachable store, bad options
            raise SourceError(f"dataset {self.ds.id!r}: cannot open the Delta table: "
                              f"{scrub(self.ds, e)}",
                              reason="its Delta table cannot be opened") from None
        if self.pinned is not None:
            wanted = int(self.pinned) if self.pinned.isdigit() else -1
            if not 0 <= wanted <= table.version():
                raise UnknownVersion(self.ds.id, self.pinned)
            try:
                table.load_as_version(wanted)
            except Exception:  # its log was cleaned up (vacuum, log retention)
                raise UnknownVersion(self.ds.id, self.pinned) from None
        self._loaded = table
        return table

    def version(self) -> str | None:
        return str(self._table().version())

    def _dataset(self) -> Any:
        try:
            return self._table().to_pyarrow_dataset()
        except SourceError:
            raise
        except Exception as e:  # a reader feature pyarrow cannot honour (deletion vectors ...)
            raise SourceError(f"dataset {self.ds.id!r}: cannot read the Delta table: "
                              f"{scrub(self.ds, e)}",
                              reason="its Delta table uses a feature the service cannot "
                                     "read") from None

    def raw_schema(self) -> pa.Schema:
        return plain_types(pa.schema(self._table().schema().to_arrow()))

    def raw_batches(self, columns: list[str], where: RowFilter | None,
                    limit: int | None = None) -> Iterator[pa.RecordBatch]:
        return self._batches(self._dataset(), columns, where)

    def _batches(self, dataset: Any, columns: list[str], where: RowFilter | None
                 ) -> Iterator[pa.RecordBatch]:
        target = self.raw_schema()
        # pyarrow takes a column that an older data file lacks (added since) as matching no
        # predicate, not as null: only predicates that reject nulls anyway are pushed down,
        # and the exact filter runs on the batches read.
        tree = where.tree if where is not None else None
        filter_expr = where.to_arrow() if where is not None else None
        needed = list(dict.fromkeys([*columns, *(_columns(tree) if tree is not None else [])]))
        scanner = dataset.scanner(columns=needed, filter=_null_rejecting(tree),
                                  batch_size=BATCH_ROWS, use_threads=True,
                                  batch_readahead=BATCH_READAHEAD,
                                  fragment_readahead=FRAGMENT_READAHEAD)
        want = pa.schema([target.field(n) for n in needed])
        for batch in scanner.to_batches():
            if batch.schema != want:
                batch = batch.cast(want)
            if filter_expr is not None:
                batch = pa.Table.from_batches([batch]).filter(filter_expr)
                yield from batch.select(columns).combine_chunks().to_batches()
            else:
                yield batch.select(columns)

    def _fragments(self) -> tuple[Any, list[Any]]:
        dataset = self._dataset()
        return dataset, sorted(dataset.get_fragments(), key=lambda f: f.path)

    def partitions(self, target_bytes: int, where: RowFilter | None = None,
                   spread: int = 1) -> list[Partition]:
        """A partition per data file of the version read."""
        _, fragments = self._fragments()
        return [Partition(("delta", i, path_tag(f.path))) for i, f in enumerate(fragments)
                ] or [Partition(WHOLE, 0, 0)]

    def partition_batches(self, spec: tuple, columns: list[str], where: RowFilter | None
                          ) -> Iterator[pa.RecordBatch]:
        if tuple(spec) == WHOLE:
            return self.raw_batches(columns, where)
        import pyarrow.dataset as pads

        dataset, fragments = self._fragments()
        if (len(spec) != 3 or spec[0] != "delta" or not isinstance(spec[1], int)
                or not 0 <= spec[1] < len(fragments)
                or path_tag(fragments[spec[1]].path) != spec[2]):
            raise PartitionChanged("the table's data files changed since the plan")
        one = pads.FileSystemDataset([fragments[spec[1]]], dataset.schema, dataset.format,
                                     dataset.filesystem)
        return self._batches(one, columns, where)

    def count(self, where: RowFilter | None) -> int | None:
        """Rows from the log's file statistics; unknown (None) with a filter or where a file
        has no statistics, rather than a full read while browsing."""
        if where is not None:
            return None
        rows = self._table().get_add_actions().column("num_records").to_pylist()
        return None if any(r is None for r in rows) else int(sum(rows))

    def updated_at(self) -> str | None:
        """When the newest data file of the version read was written (from the log's add
        actions; the commit history would need a listing of the whole log)."""
        times = self._table().get_add_actions().column("modification_time").to_pylist()
        times = [t for t in times if t is not None]
        if not times:
            return None
        newest = max(times)
        if isinstance(newest, datetime):
            when = newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)
        else:
            when = datetime.fromtimestamp(newest / 1000, timezone.utc)
        return iso(when, "milliseconds")

    def cache_token(self) -> str | None:
        return self.version()


def _null_rejecting(tree: Any) -> Any:
    """A pyarrow filter keeping at least the rows `tree` keeps, made only of predicates that
    are never true on a null (the parts that could be become `true`); None to keep all."""
    if tree is None:
        return None
    if isinstance(tree, BoolOp):
        parts = [_null_rejecting(p) for p in tree.parts]
        if tree.op == "or" and any(p is None for p in parts):
            return None
        kept = [p for p in parts if p is not None]
        if not kept:
            return None
        out = kept[0]
        for p in kept[1:]:
            out = (out & p) if tree.op == "and" else (out | p)
        return out
    if isinstance(tree, Compare) or (isinstance(tree, InList) and None not in tree.values):
        return _to_arrow(tree)
    if isinstance(tree, IsNull) and tree.negate:
        return _to_arrow(tree)
    return None  # is null, in (.., null), not (..): true on nulls, left to the exact filter
