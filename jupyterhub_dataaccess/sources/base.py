"""What every reader shares: the Reader interface, its errors, and ${ENV} source settings.

The readers of each kind live in readers.py (files, SQL), iceberg.py and delta.py; readers.py
registers them (reader_for) and applies governance to what they give.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..catalog import Dataset
from .filters import RowFilter

BATCH_ROWS = 128 * 1024
# Batches decoded ahead of the one being sent: enough to keep both cores busy, few enough to
# bound memory (pyarrow's defaults, 16 batches and 4 files, hold far more).
BATCH_READAHEAD = 2
FRAGMENT_READAHEAD = 1


class SourceError(Exception):
    """The source could not be read. The message (the details) goes to the service log;
    `reason`, when given, is a short cause any user who may browse the dataset may see (never
    a location, a name from the source's settings or a secret)."""

    def __init__(self, message: str = "", reason: str = ""):
        super().__init__(message)
        self.reason = reason


class UnknownVersion(LookupError):
    """A version the source does not have (or, for sources without history, not the current
    one): the message names it."""

    def __init__(self, dataset: str, version: str):
        shown = version if len(version) <= 80 else version[:80] + "..."
        super().__init__(f"dataset {dataset!r} has no version {shown!r}")
        self.dataset, self.version = dataset, version



class PartitionChanged(SourceError):
    """The partition a plan named is no longer in the source (its files changed)."""


@dataclass(frozen=True)
class Partition:
    """One unit of a partitioned read (a file, a run of Parquet row groups, the whole source).

    `spec` names it to the reader that made it (plain JSON values, no source path: it travels in
    tickets); `rows` and `nbytes` are its size at the source, before any filter (None: unknown).
    """

    spec: tuple
    rows: int | None = None
    nbytes: int | None = None


WHOLE = ("all",)


def path_tag(path: str) -> str:
    """A short digest of a file's path: a partition names its file by position and this tag, so
    a file added or removed since the plan is noticed and the path itself never leaves."""
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def merge_row_groups(sizes: list[tuple[int, int]], target_bytes: int
                     ) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive row groups, each near `target_bytes` (a group bigger than it stands
    alone): [(first, stop, rows, bytes)] from [(rows, compressed bytes)] per group."""
    out: list[tuple[int, int, int, int]] = []
    first, rows, size = 0, 0, 0
    for i, (n, b) in enumerate(sizes):
        if i > first and size + b > target_bytes:
            out.append((first, i, rows, size))
            first, rows, size = i, 0, 0
        rows, size = rows + n, size + b
    if sizes:
        out.append((first, len(sizes), rows, size))
    return out


ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${NAME} in a source setting


def resolve_env(value: str) -> str:
    """Replace each ${NAME} in a source setting with the service's environment variable NAME
    (source credentials live there only)."""
    return ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)


def resolve_options(ds_id: str, value: Any) -> Any:
    """Storage options with ${ENV} references taken from the service's environment.

    A reference to a variable the service does not have is an error naming the variable (never
    its value): an empty key would silently fall back to anonymous or ambient credentials.
    """
    if isinstance(value, dict):
        return {k: resolve_options(ds_id, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_options(ds_id, v) for v in value]
    if isinstance(value, str):
        missing = [n for n in ENV_REF.findall(value) if n not in os.environ]
        if missing:
            raise SourceError(f"dataset {ds_id!r}: the service environment lacks "
                              + ", ".join(missing),
                              reason="a credential the service needs for it is not set")
        return resolve_env(value)
    return value


class Reader:
    """Reads one dataset, at its current version or at the one `version` names (raising
    UnknownVersion when the source has no such version); build with `reader_for(ds, version)`.
    A reader is for one request: what it loaded first (a table's snapshot) it keeps.

    `raw_batches(columns, where, limit)` yields the raw (unmasked) rows of `columns` for which
    `where` holds. `where` (a filters.RowFilter, or None) is a filter on raw values: the row
    filter and the caller's predicates on unmasked columns, already checked against the schema
    (filters.bind). `where.tree` is the tree to translate for the source, `where.to_arrow()` the
    exact filter as a pyarrow expression, `where.columns` the columns it reads. `limit` is a hint:
    a reader may stop after that many rows (the plan enforces it anyway).
    """

    def __init__(self, ds: Dataset, version: str | None = None):
        self.ds = ds
        self.pinned = version

    def version(self) -> str | None:
        """The version this reader reads, always a string (None: the source has none)."""
        if self.pinned is not None:
            raise UnknownVersion(self.ds.id, self.pinned)
        return None

    def cache_token(self) -> str | None:
        """Changes whenever what dataset_info shows may have changed (None: never cache)."""
        return self.updated_at()

    def raw_schema(self) -> pa.Schema:
        raise NotImplementedError

    def raw_batches(self, columns: list[str], where: RowFilter | None,
                    limit: int | None = None) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def count(self, where: RowFilter | None) -> int | None:
        return None

    def updated_at(self) -> str | None:
        return None

    def partitions(self, target_bytes: int, where: RowFilter | None = None,
                   spread: int = 1) -> list[Partition]:
        """The source's own units of reading, merged to about `target_bytes` each; a reader
        may leave out units that cannot hold a row matching `where` (a filter on raw values)
        and make units smaller to give at least `spread` of them."""
        return [Partition(WHOLE)]

    def partition_batches(self, spec: tuple, columns: list[str], where: RowFilter | None
                          ) -> Iterator[pa.RecordBatch]:
        """The raw batches of one partition that `partitions` named (checked at once to be
        still the one planned: PartitionChanged), `where` as for raw_batches."""
        if tuple(spec) != WHOLE:
            raise PartitionChanged("the source is no longer partitioned as planned")
        return self.raw_batches(columns, where)


def plain_types(schema: pa.Schema) -> pa.Schema:
    """Arrow's large string and binary types as the plain ones, which every other reader gives
    (a dataset's column types do not depend on the library that read it)."""
    plain = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    return pa.schema([f.with_type(plain.get(f.type, f.type)) for f in schema],
                     metadata=schema.metadata)


def scrub(ds: Dataset, error: BaseException) -> str:
    """An error's text for the log, with every value a ${NAME} of the source resolved to
    blanked out (drivers may echo a URL or a header)."""
    text = f"{type(error).__name__}: {error}"[:500]
    names = set(ENV_REF.findall(repr(ds.source)))
    for name in names:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
