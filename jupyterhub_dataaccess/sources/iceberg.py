"""Apache Iceberg tables through pyiceberg: any catalog it supports (sql, rest, glue, hive ...).

The catalogue entry's `catalog` holds pyiceberg catalog properties, credentials as ${ENV}
references; `table` is `namespace.name`. The service only reads: a SQL catalog never creates
its tables here. Reads are planned by pyiceberg (the row filter and the caller's `where` pushed
down as an Iceberg row filter, so files whose statistics rule them out are never opened; the
projection as selected fields) and stream a data file's batches at a time; the exact filter is
applied again to every batch, so the pushed-down part only ever has to keep a superset of rows.
Versions are snapshot ids, as strings (they pass 2^53).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ..catalog import Dataset
from ..times import iso
from .base import (
    WHOLE,
    Partition,
    PartitionChanged,
    Reader,
    SourceError,
    UnknownVersion,
    path_tag,
    plain_types,
    resolve_options,
    scrub,
)
from .filters import BoolOp, Column, Compare, InList, IsNull, Literal, RowFilter

_catalogs: dict[str, Any] = {}
_lock = threading.Lock()


def _catalog(ds: Dataset) -> Any:
    """The pyiceberg catalog of a dataset, one per distinct set of properties (kept: a SQL
    catalog holds a connection pool, a REST catalog its session and token)."""
    props = resolve_options(ds.id, dict(ds.source.catalog))
    name = str(props.pop("name", "") or ds.id)
    props["init_catalog_tables"] = "false"  # read only: never create tables in the catalog DB
    key = hashlib.sha256(json.dumps([name, props], sort_keys=True, default=str).encode()).hexdigest()
    with _lock:
        if key not in _catalogs:
            from pyiceberg.catalog import load_catalog

            try:
                _catalogs[key] = load_catalog(name, **{k: str(v) for k, v in props.items()})
            except Exception as e:
                raise SourceError(f"dataset {ds.id!r}: the Iceberg catalog {name!r} did not "
                                  f"answer: {scrub(ds, e)}",
                                  reason="its Iceberg catalog does not answer") from None
        return _catalogs[key]


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return iso(datetime.fromtimestamp(ms / 1000, timezone.utc), "milliseconds")


class IcebergReader(Reader):
    """One Iceberg table at one snapshot: the current one (when the reader first loads the
    table), or the one `version` names."""

    def __init__(self, ds: Dataset, version: str | None = None):
        super().__init__(ds, version)
        self._loaded: Any = None

    def _table(self) -> Any:
        if self._loaded is None:
            from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

            catalog = _catalog(self.ds)
            try:
                table = catalog.load_table(self.ds.source.table)
            except (NoSuchTableError, NoSuchNamespaceError):
                raise SourceError(f"dataset {self.ds.id!r}: the Iceberg catalog has no table "
                                  f"{self.ds.source.table!r}",
                                  reason="its table is not in its Iceberg catalog") from None
            except Exception as e:
                raise SourceError(f"dataset {self.ds.id!r}: the Iceberg catalog did not answer: "
                                  f"{scrub(self.ds, e)}",
                                  reason="its Iceberg catalog does not answer") from None
            if self.pinned is not None:
                snap = (table.metadata.snapshot_by_id(int(self.pinned))
                        if self.pinned.isdigit() else None)
                if snap is None:
                    raise UnknownVersion(self.ds.id, self.pinned)
            self._loaded = table
        return self._loaded

    def _snapshot(self) -> Any:
        table = self._table()
        if self.pinned is not None:
            return table.metadata.snapshot_by_id(int(self.pinned))
        return table.metadata.current_snapshot()

    def _scan(self, **kw: Any) -> Any:
        table = self._table()  # checks the version first
        return table.scan(snapshot_id=None if self.pinned is None else int(self.pinned), **kw)

    def version(self) -> str | None:
        snap = self._snapshot()
        return None if snap is None else str(snap.snapshot_id)

    def raw_schema(self) -> pa.Schema:
        return plain_types(self._scan().projection().as_arrow())

    def raw_batches(self, columns: list[str], where: RowFilter | None,
                    limit: int | None = None) -> Iterator[pa.RecordBatch]:
        return self._batches(columns, where)

    def _batches(self, columns: list[str], where: RowFilter | None,
                 only: str | None = None) -> Iterator[pa.RecordBatch]:
        """The scan's batches, of the data file `only` when given."""
        from pyiceberg.io.pyarrow import ArrowScan, _read_all_delete_files

        table = self._table()
        raw = self.raw_schema()
        tree = where.tree if where is not None else None
        filter_expr = where.to_arrow() if where is not None else None
        needed = list(dict.fromkeys([*columns, *sorted(where.columns if where else ())]))
        unknown = [n for n in needed if n not in raw.names]
        if unknown:
            raise SourceError(f"the filter names column(s) the source lacks: {unknown}")
        target = pa.schema([raw.field(n) for n in needed])
        scan = self._scan(row_filter=to_iceberg(tree, raw), selected_fields=tuple(needed))
        tasks = [t for t in scan.plan_files() if only is None or t.file.file_path == only]
        # pyiceberg's own batch reader reads every file of the scan at once in a thread pool,
        # each whole; here a file is read batch by batch, one file after the other.
        arrow_scan = ArrowScan(table.metadata, table.io, scan.projection(), scan.row_filter,
                               case_sensitive=True)
        deletes = _read_all_delete_files(table.io, tasks)
        for task in tasks:
            for batch in arrow_scan._record_batches_from_scan_tasks_and_deletes([task], deletes):
                batch = pa.Table.from_batches([batch]).select(needed).cast(target)
                if filter_expr is not None:
                    batch = batch.filter(filter_expr)
                yield from batch.select(columns).combine_chunks().to_batches()

    def _files(self) -> list[Any]:
        return sorted((t.file for t in self._scan().plan_files()), key=lambda f: f.file_path)

    def partitions(self, target_bytes: int, where: RowFilter | None = None,
                   spread: int = 1) -> list[Partition]:
        """A partition per data file of the snapshot read (a reader pinned to a version gives
        the same files every time)."""
        return [Partition(("ice", i, path_tag(f.file_path)), f.record_count,
                          f.file_size_in_bytes) for i, f in enumerate(self._files())
                ] or [Partition(WHOLE, 0, 0)]

    def partition_batches(self, spec: tuple, columns: list[str], where: RowFilter | None
                          ) -> Iterator[pa.RecordBatch]:
        if tuple(spec) == WHOLE:
            return self.raw_batches(columns, where)
        files = self._files()
        if (len(spec) != 3 or spec[0] != "ice" or not isinstance(spec[1], int)
                or not 0 <= spec[1] < len(files) or path_tag(files[spec[1]].file_path) != spec[2]):
            raise PartitionChanged("the table's data files changed since the plan")
        return self._batches(columns, where, only=files[spec[1]].file_path)

    def count(self, where: RowFilter | None) -> int | None:
        """Rows from the snapshot summary. With a filter, or delete files to apply, the count
        would need a scan: unknown (None) rather than a full read while browsing."""
        if where is not None:
            return None
        snap = self._snapshot()
        if snap is None:
            return 0
        summary = snap.summary.additional_properties if snap.summary else {}
        if int(summary.get("total-delete-files", 0) or 0) or "total-records" not in summary:
            return None
        return int(summary["total-records"])

    def updated_at(self) -> str | None:
        """The table's last change (a schema change included) or, for a past version, its
        snapshot's commit time."""
        if self.pinned is not None:
            return _iso_ms(self._snapshot().timestamp_ms)
        return _iso_ms(self._table().metadata.last_updated_ms)

    def cache_token(self) -> str:
        return self._table().metadata_location + "#" + str(self.version())


_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _fits(arrow_type: pa.DataType, value: Any) -> bool:
    """Whether a literal compares with a column the same way in Iceberg and in Arrow."""
    if isinstance(value, bool):
        return pa.types.is_boolean(arrow_type)
    if isinstance(value, int):  # not float32: Iceberg rounds the literal to it, Arrow does not
        return (pa.types.is_integer(arrow_type) or pa.types.is_float64(arrow_type)
                or pa.types.is_decimal(arrow_type))
    if isinstance(value, float):
        return pa.types.is_float64(arrow_type)
    if isinstance(value, str):
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    return False


def to_iceberg(tree: Any, schema: pa.Schema) -> Any:
    """A pyiceberg row filter that keeps at least every row `tree` keeps (exact where it can
    be; `AlwaysTrue` for any part it cannot express as exactly or more loosely)."""
    from pyiceberg import expressions as ice

    true = ice.AlwaysTrue()
    if tree is None:
        return true
    if isinstance(tree, BoolOp):
        parts = [to_iceberg(p, schema) for p in tree.parts]
        if tree.op == "and":
            out = true
            for p in parts:
                out = ice.And(out, p)
            return out
        if any(p == true for p in parts):
            return true
        out = parts[0]
        for p in parts[1:]:
            out = ice.Or(out, p)
        return out
    if isinstance(tree, IsNull):
        if tree.column.name not in schema.names:
            return true
        return (ice.NotNull if tree.negate else ice.IsNull)(tree.column.name)
    if isinstance(tree, InList):
        name = tree.column.name
        values = [v for v in tree.values if v is not None]
        if name not in schema.names or not values or not all(
                _fits(schema.field(name).type, v) for v in values):
            return true
        if not tree.negate:
            found = ice.In(name, values)
            return ice.Or(found, ice.IsNull(name)) if None in tree.values else found
        # NOT IN keeps no null row here; pyiceberg's NotIn keeps them (a superset) unless told
        return ice.And(ice.NotIn(name, values), ice.NotNull(name))
    if isinstance(tree, Compare):
        op, left, right = tree.op, tree.left, tree.right
        if isinstance(left, Literal) and isinstance(right, Column):
            op, left, right = _FLIP[op], right, left
        if not (isinstance(left, Column) and isinstance(right, Literal)):
            return true
        if left.name not in schema.names or not _fits(schema.field(left.name).type, right.value):
            return true
        make = {"==": ice.EqualTo, "!=": ice.NotEqualTo, "<": ice.LessThan,
                "<=": ice.LessThanOrEqual, ">": ice.GreaterThan, ">=": ice.GreaterThanOrEqual}[op]
        return make(left.name, right.value)
    return true  # Not and anything else: no pruning, the exact filter still applies
