"""Read plans: what one governed read will do, decided and checked before any data flows.

The order is fixed on every path: the dataset's row filter, then its masks, then the caller's
`where`, projection and `limit`. So a caller's predicate sees masked values, never raw ones. The
parts of `where` that touch only unmasked columns mean the same on raw values, so they go to the
source with the row filter (Parquet row-group statistics, a SQL WHERE); the parts that touch a
masked column are evaluated here, on the masked values.

`plan_read` opens the source's schema and checks everything a read could trip on (unknown
columns, a filter the column types cannot run, masks or a row filter naming columns the source
lacks); `execute` then only streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import Dataset
from .base import Reader, SourceError, UnknownVersion
from .filters import FilterError, RowFilter, and_filters, bind, parse_filter
from .masks import hashed_dictionary, mask_array, mask_key
from .readers import (
    CatalogMismatch,
    ColumnError,
    check_catalog_columns,
    check_columns,
    filter_batch,
    governed_schema,
    reader_for,
    whole_file,
)


@dataclass(frozen=True)
class ReadPlan:
    """One governed read. `columns`/`schema` are what leaves; the rest is how it is read."""

    dataset: Dataset
    columns: list[str]
    schema: pa.Schema
    columns_asked: list[str] | None = None  # as the caller named them (None: all)
    where: RowFilter | None = None  # the caller's, checked against the governed schema
    limit: int | None = None
    format: str | None = None
    version: str | None = None  # the source version read, where the reader keeps versions
    pushed: RowFilter | None = None  # row filter and `where`'s unmasked parts, on raw values
    row_filter: RowFilter | None = None  # the dataset's row filter alone, bound to the source
    post: RowFilter | None = None  # `where`'s parts on masked columns, on masked values
    read_schema: pa.Schema | None = None  # the columns read from the source, governed types
    whole_file: str | None = None  # the source file, when it can be sent as it is
    partition: tuple | None = None  # one partition of a scan plan (reader.partitions()), or all
    reader: Reader | None = field(default=None, repr=False, compare=False)
    audit_seq: int | None = None  # the audit record of this read, once authorized
    dictionaries: bool = False  # hashed text read as a dictionary may leave as one (execute_typed)

    def provenance(self) -> dict[str, Any]:
        """What a result of this read carries: the dataset, the version read (a string, or
        None where the source has none) and the audit record that names both."""
        return {"dataset": self.dataset.id, "version": self.version,
                "audit_seq": self.audit_seq}

    def audit_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"format": self.format, "columns": self.columns_asked}
        if self.where is not None:
            detail["where"] = self.where.text
        if self.limit is not None:
            detail["limit"] = self.limit
        if self.version is not None:
            detail["version"] = self.version
        return detail


def plan_read(ds: Dataset, columns: list[str] | None = None, where: str | RowFilter | None = None,
              limit: int | None = None, format: str | None = None,  # noqa: A002
              version: str | None = None, reader: Reader | None = None) -> ReadPlan:
    """Check a read of `ds` (at `version`, or by `reader`) against its source's schema and
    decide how it runs.

    Raises ColumnError (unknown columns), FilterError (a `where` that does not parse or cannot
    run, naming the column), UnknownVersion, CatalogMismatch (masks or row filter do not fit
    the source: fail closed) or SourceError (the source cannot be opened).
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    reader = reader or reader_for(ds, version)
    try:
        version = reader.version()  # UnknownVersion before any data
        raw = reader.raw_schema()
    except (SourceError, UnknownVersion):
        raise
    except Exception as e:
        raise SourceError(str(e)) from e
    check_catalog_columns(ds, raw)  # fail closed on a mask or filter of a missing column
    row_filter = None
    if ds.row_filter is not None:
        try:
            row_filter = bind(ds.row_filter, raw, what="the row filter")
        except FilterError as e:  # e.g. a number compared with a text column
            raise CatalogMismatch(ds.id, [str(e)]) from None
    names = check_columns(raw, columns)
    visible = governed_schema(ds, raw)
    caller = None
    if where is not None and not (isinstance(where, str) and not where.strip()):
        caller = bind(parse_filter(where) if isinstance(where, str) else where, visible,
                      ds.masks)
    unmasked = [p for p in (caller.conjuncts if caller else []) if not p.columns & set(ds.masks)]
    masked = [p for p in (caller.conjuncts if caller else []) if p.columns & set(ds.masks)]
    post = and_filters(*masked)
    read = tuple(dict.fromkeys([*names, *sorted(post.columns if post else ())]))
    return ReadPlan(
        dataset=ds, columns=names, schema=governed_schema(ds, raw, names), where=caller,
        columns_asked=list(columns) if columns else None, limit=limit, format=format,
        version=version,
        pushed=and_filters(row_filter, *unmasked), row_filter=row_filter, post=post,
        read_schema=governed_schema(ds, raw, list(read)), reader=reader,
        whole_file=whole_file(ds) if not columns and caller is None and limit is None
        and reader.pinned is None else None)


def execute(plan: ReadPlan, key: bytes) -> Iterator[pa.RecordBatch]:
    """The governed batches of a plan: raw rows (filtered and projected at the source), masks,
    then the caller's filter on masked columns, projection and limit.

    With `plan.dictionaries`, a hashed text column the reader gives as a dictionary (no filter
    reads it) stays one: its few distinct values hashed, its indices as they are; a hashed
    integer column of few distinct values becomes one (masks.hashed_dictionary). The batches'
    schema may then differ from `plan.schema` in those columns' types alone (execute_typed)."""
    ds = plan.dataset
    reader = plan.reader or reader_for(ds)
    left = plan.limit
    if left == 0:
        return
    dkey = mask_key(key, ds.id)
    read_schema = plan.read_schema or plan.schema
    read = read_schema.names
    post = plan.post.to_arrow() if plan.post is not None else None
    keep = frozenset(n for n in read if ds.masks.get(n) in ("hash", "hash-v2")
                     and n not in (plan.post.columns if plan.post else ())
                     ) if plan.dictionaries else frozenset()
    hashed: dict[str, tuple[pa.Array, pa.Array]] = {}  # per column: a dictionary, its hashes
    try:
        raw = (reader.raw_batches(read, plan.pushed, left if post is None else None)
               if plan.partition is None
               else reader.partition_batches(plan.partition, read, plan.pushed))
        for batch in raw:
            if batch.num_rows == 0:
                continue
            arrays = [_masked(batch.column(i), ds.masks[n], dkey, hashed if n in keep else None,
                              n) if n in ds.masks
                      else batch.column(i) for i, n in enumerate(read)]
            schema = read_schema if not keep else pa.schema(
                [f.with_type(a.type) for f, a in zip(read_schema, arrays, strict=True)],
                metadata=read_schema.metadata)
            batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
            if post is not None:
                batch = filter_batch(batch, post, plan.post.columns)
            if read != plan.columns:
                batch = batch.select(plan.columns)
            if left is not None:
                batch = batch.slice(0, left)
                left -= batch.num_rows
            if keep and batch.num_rows:
                batch = _only_present(batch)
            if batch.num_rows:
                yield batch
            if left is not None and left <= 0:
                return
    except SourceError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise SourceError(str(e)) from e


def _masked(arr: pa.Array, how: str, key: bytes,
            hashed: dict[str, tuple[pa.Array, pa.Array]] | None, name: str) -> pa.Array:
    """The masked column; with `hashed` (a column that may stay a dictionary), a dictionary's
    hashes, kept there by column `name`, are made once for the batches of a row group that
    share it (a hash call costs ~3 ms whatever the few values it hashes)."""
    if hashed is not None and pa.types.is_dictionary(arr.type):
        last = hashed.get(name)
        if last is None or not (last[0] is arr.dictionary or last[0].equals(arr.dictionary)):
            last = hashed[name] = (arr.dictionary, mask_array(arr.dictionary, how, key))
        return pa.DictionaryArray.from_arrays(arr.indices, last[1])
    if hashed is not None:  # an integer column of few values: its hashes as a dictionary
        hashed = hashed_dictionary(arr, how, key)
        if hashed is not None:
            return hashed
    return mask_array(arr, how, key)


def _only_present(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with each dictionary column's dictionary cut to the values its rows hold, in the
    order they first appear: a reader's dictionary also holds the values of rows the row filter
    (or `where`) removed, and a hashed integer range holds every integer of min..max in order
    (its indices would be raw value - min); either would tell what the mask or filter hides."""
    return pa.RecordBatch.from_arrays([_present(a) if pa.types.is_dictionary(a.type) else a
                                       for a in batch.columns], schema=batch.schema)


FIRST_ROWS = 4096  # rows where the order in which values first appear is looked for first


def _present(arr: pa.DictionaryArray) -> pa.DictionaryArray:
    """`arr` with its dictionary cut to the values its rows hold, in the order they first
    appear (unchanged when it already is that). Which values the rows hold is counted; their
    order is taken from the first rows when every one of them appears there (it usually does),
    else from all the rows."""
    indices = pc.drop_null(arr.indices) if arr.null_count else arr.indices
    size = len(arr.dictionary)
    used = None
    if pa.types.is_signed_integer(indices.type):
        held = np.count_nonzero(np.bincount(indices.to_numpy(), minlength=size))
        used = pc.unique(indices.slice(0, FIRST_ROWS))
        used = used if len(used) == held else None
    used = pc.unique(indices) if used is None else used
    order, held = used.to_numpy(), len(used)
    if held == size and np.array_equal(order, np.arange(size)):
        return arr
    position = np.zeros(size, arr.type.index_type.to_pandas_dtype())
    position[order] = np.arange(held)
    return pa.DictionaryArray.from_arrays(pc.take(pa.array(position), arr.indices),
                                          arr.dictionary.take(used))


def execute_typed(plan: ReadPlan, key: bytes,
                  batches: Iterator[pa.RecordBatch] | None = None
                  ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, batches) of execute (or of `batches`, execute's of this plan on several
    partitions): `plan.schema`, or with `plan.dictionaries` its first batch's (a hashed column
    may be a dictionary of the plan's type), every later batch made to fit it. The first batch
    is read now."""
    batches = execute(plan, key) if batches is None else batches
    if not plan.dictionaries:
        return plan.schema, batches
    first = next(batches, None)
    if first is None:
        return plan.schema, iter(())
    schema = first.schema

    def fitted() -> Iterator[pa.RecordBatch]:
        try:
            yield first
            for batch in batches:
                if batch.schema != schema:  # a row group read otherwise: one type per stream
                    batch = pa.RecordBatch.from_arrays(
                        [_fit(batch.column(i), f.type) for i, f in enumerate(schema)],
                        schema=schema)
                yield batch
        finally:
            batches.close()

    return schema, fitted()


def _fit(arr: pa.Array, to: pa.DataType) -> pa.Array:
    if arr.type == to:
        return arr
    if pa.types.is_dictionary(to):
        return arr.dictionary_encode().cast(to)
    return arr.cast(to)


def governed_batches(ds: Dataset, key: bytes, columns: list[str] | None = None,
                     limit: int | None = None, where: str | None = None,
                     reader: Reader | None = None
                     ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, batches) of a governed read of `ds` (plan_read, then execute); read by `reader`
    when given (a reader pinned to a version)."""
    plan = plan_read(ds, columns, where, limit, reader=reader)
    return plan.schema, execute(plan, key)


def source_problems(ds: Dataset) -> list[str]:
    """What would stop the service serving `ds`, found by opening its source as the service does
    and governing a first batch (`catalog validate --check-sources`); [] when nothing would."""
    try:
        _, batches = governed_batches(ds, b"check-sources", limit=1)
        try:
            next(batches, None)  # the row filter and the masks run on real rows
        finally:
            batches.close()
    except CatalogMismatch as e:
        return list(e.problems)
    except (SourceError, UnknownVersion, ColumnError, FilterError) as e:
        cause = e.__cause__ if not isinstance(e.__cause__, SourceError) else None
        return [f"the source cannot be read: {type(cause).__name__ + ': ' if cause else ''}{e}"]
    except Exception as e:  # whatever a driver raises: the operator needs its words
        return [f"the source cannot be read: {type(e).__name__}: {e}"]
    return []


__all__ = ["CatalogMismatch", "ColumnError", "FilterError", "ReadPlan", "SourceError",
           "UnknownVersion", "execute", "execute_typed", "governed_batches", "plan_read",
           "source_problems"]
