"""Governed views over local Parquet, for DuckDB's own reader in the query worker.

A dataset whose source is local Parquet (a file, or a directory of Parquet files) need not be read
by the service and shipped to the worker: the worker can define its governed relation as a view
over `read_parquet([...the exact files...])`, with the row filter as a SQL WHERE and the masks as
SQL expressions (null: a typed NULL; redact: the REDACTED constant; hash: a function the worker
defines over sources/masks.py with the dataset's own key). DuckDB then prunes columns and row
groups itself, and the service never holds the rows.

This module decides, in the service, whether a dataset can go that way with exactly the meaning
of the Arrow path (sources/plan.py), and describes the view. Anything it cannot map exactly
(another source kind, a column type whose DuckDB reading could differ, a file name DuckDB would
expand as a glob pattern, a row filter comparing floating-point values, whose NaN DuckDB orders
differently) keeps the Arrow path. The worker checks again that DuckDB reads each column with
the type expected (else the service falls back).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from ..catalog import Dataset
from ..sources.base import resolve_env
from ..sources.filters import BoolOp, Column, Compare, InList, IsNull, Literal, Not, RowFilter
from ..sources.masks import REDACTED

# Arrow types whose DuckDB reading of the Parquet file is the same type, and DuckDB's name for it.
DUCK_TYPES = {
    pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT", pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR", pa.large_string(): "VARCHAR",
    pa.date32(): "DATE", pa.timestamp("us"): "TIMESTAMP",
}


@dataclass(frozen=True)
class View:
    """What the worker needs to define one governed view: its name (the dataset id), the files,
    its columns (name, mask or None), the row filter as SQL, the DuckDB type expected of every
    column read (the view's and the row filter's: checked by the worker unless `check` is off,
    once a worker found them so in this version of the files) and the hashing key of this
    dataset (masks.mask_key), hex, when a column is hashed."""

    name: str
    files: list[str]
    columns: list[tuple[str, str | None]]
    where: str | None
    types: dict[str, str]
    key: str | None = field(repr=False)  # never in a log line or an assertion's text
    version: str | None = None  # of the files (sources' version: paths, sizes, times)
    check: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "files": self.files, "columns": self.columns,
                "where": self.where, "types": self.types, "key": self.key,
                "version": self.version, "check": self.check}

    def checked(self) -> tuple:
        """What a worker's type check of this view vouches for."""
        return (self.name, self.version, tuple(self.files), tuple(sorted(self.types.items())))


def local_parquet_path(ds: Dataset) -> str | None:
    """The absolute local path of a file source in Parquet (None for any other source)."""
    src = ds.source
    if src.kind != "file" or src.format != "parquet" or not src.uri:
        return None
    uri = resolve_env(src.uri)
    if "://" in uri and not uri.startswith("file://"):
        return None
    return os.path.abspath(uri.removeprefix("file://"))


_same_schema: dict[tuple[str, str | None], bool] = {}
GLOB_CHARS = "*?[{"  # read_parquet takes a name holding one of these as a glob pattern
_lock = threading.Lock()


def parquet_files(path: str, version: str | None, schema: pa.Schema) -> list[str] | None:
    """The files the Arrow path reads for `path` (pyarrow's discovery: no partition columns,
    hidden files skipped), when each has exactly `schema` (else None: the Arrow path casts
    files to the first one's types, which DuckDB might do differently). Checked once a version."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    if any(c in path for c in GLOB_CHARS):
        return None  # DuckDB's reader takes such a name as a pattern: other files, or twice
    if os.path.isfile(path):
        return [path]
    try:
        files = sorted(pads.dataset(path, format="parquet").files)
    except (OSError, pa.ArrowException):
        return None
    if any(c in f for f in files for c in GLOB_CHARS):
        return None
    cache = (path, version)
    with _lock:
        same = _same_schema.get(cache)
    if same is None:
        try:
            same = all(pq.read_schema(f).equals(schema) for f in files)
        except (OSError, pa.ArrowException):
            return None
        with _lock:
            if len(_same_schema) > 4096:
                _same_schema.clear()
            _same_schema[cache] = same
    return files if same and files else None


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL in a SQL string")
    return "'" + value.replace("'", "''") + "'"


def _literal(value: Any) -> str | None:
    """A filter literal as DuckDB SQL with the value the Arrow path compares (None: none)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float):
        return None if not math.isfinite(value) else f"CAST({value!r} AS DOUBLE)"
    if isinstance(value, datetime):
        return None if value.tzinfo else f"TIMESTAMP {quote_text(value.isoformat(sep=' '))}"
    if isinstance(value, date):
        return f"DATE {quote_text(value.isoformat())}"
    if isinstance(value, str) and "\x00" not in value:
        return quote_text(value)
    return None


class _Untranslatable(Exception):
    pass


def filter_sql(f: RowFilter, types: dict[str, pa.DataType]) -> str | None:
    """The row filter (bound: literals of the columns' types) as a DuckDB SQL condition with the
    meaning of its Arrow form (filters.py), or None where that cannot be promised: comparisons
    of floating-point columns (DuckDB orders NaN above every number and equal to itself, Arrow
    compares it false) and literals without an exact SQL form."""

    def lit(value: Any) -> str:
        out = _literal(value)
        if out is None:
            raise _Untranslatable
        return out

    def col(c: Column) -> str:
        if c.name not in types:
            raise _Untranslatable
        return quote_name(c.name)

    def walk(tree: Any) -> str:
        if isinstance(tree, Compare):
            sides = (tree.left, tree.right)
            if any(isinstance(n, Column) and pa.types.is_floating(types.get(n.name, pa.null()))
                   for n in sides):
                raise _Untranslatable
            if any(isinstance(n, Literal) and n.value is None for n in sides):
                return "CAST(NULL AS BOOLEAN)"  # a comparison with null keeps no row
            op = "=" if tree.op == "==" else tree.op
            parts = [col(n) if isinstance(n, Column) else lit(n.value) for n in sides]
            return f"({parts[0]} {op} {parts[1]})"
        if isinstance(tree, InList):
            name = col(tree.column)
            values = [lit(v) for v in tree.values if v is not None]
            expr = f"({name} IN ({', '.join(values)}))" if values else "FALSE"
            if None in tree.values:  # `in (..., null)` also matches nulls, as in Arrow
                expr = f"({expr} OR {name} IS NULL)"
            return f"(NOT {expr})" if tree.negate else expr
        if isinstance(tree, IsNull):
            return f"({col(tree.column)} IS {'NOT ' if tree.negate else ''}NULL)"
        if isinstance(tree, Not):
            return f"(NOT {walk(tree.part)})"
        if isinstance(tree, BoolOp):
            return "(" + f" {tree.op.upper()} ".join(walk(p) for p in tree.parts) + ")"
        raise _Untranslatable

    try:
        return walk(f.tree)
    except _Untranslatable:
        return None


def native_view(ds: Dataset, plan: Any, dataset_key: bytes, columns: list[str] | None = None
                ) -> View | None:
    """The governed view of `columns` (default: the plan's) of a read plan of `ds`
    (sources.plan.plan_read, no `where`) over DuckDB's Parquet reader, or None when the Arrow
    path must serve it."""
    path = local_parquet_path(ds)
    if path is None or plan.reader is None or plan.reader.pinned is not None:
        return None
    columns = plan.columns if columns is None else columns
    read = list(dict.fromkeys([*columns, *sorted(plan.pushed.columns if plan.pushed else ())]))
    # the source's schema: the plan's of a whole read where nothing is masked
    raw = (plan.read_schema if plan.read_schema is not None and plan.columns_asked is None
           and not ds.masks else plan.reader.raw_schema())
    types = {f.name: f.type for f in raw}
    duck = {name: DUCK_TYPES.get(types.get(name)) for name in read}
    if None in duck.values():
        return None
    where = None
    if plan.pushed is not None:  # the row filter, bound to the source's types
        where = filter_sql(plan.pushed, types)
        if where is None:
            return None
    files = parquet_files(path, plan.version, raw)
    if files is None:
        return None
    shown = [(name, ds.masks.get(name)) for name in columns]
    hashed = any(m is not None and m not in ("null", "redact") for _, m in shown)
    return View(name=ds.id, files=files, columns=shown, where=where, types=duck,
                key=dataset_key.hex() if hashed else None, version=plan.version)


def view_sql(view: dict[str, Any], hash_function: dict[str, str]) -> tuple[str, str]:
    """(the CREATE VIEW statement, the SELECT of the raw columns whose DuckDB types are checked)
    for a view described by View.to_json(); `hash_function[column]` names the worker's function
    hashing each hashed column."""
    source = ("read_parquet([" + ", ".join(quote_text(f) for f in view["files"])
              + "], hive_partitioning = false, union_by_name = false)")
    exprs = []
    for name, mask in view["columns"]:
        q, duck = quote_name(name), view["types"][name]
        if mask is None:
            exprs.append(q)
        elif mask == "null":
            exprs.append(f"CAST(NULL AS {duck}) AS {q}")
        elif mask == "redact":
            exprs.append(f"{quote_text(REDACTED)} AS {q}")
        else:
            # by its qualified name: a temporary macro of the same name shadows a bare one
            exprs.append(f"system.main.{hash_function[name]}({q}) AS {q}")
    where = f" WHERE {view['where']}" if view["where"] else ""
    create = (f"CREATE VIEW {quote_name(view['name'])} AS SELECT {', '.join(exprs)} "
              f"FROM {source}{where}")
    probe = f"SELECT {', '.join(map(quote_name, view['types']))} FROM {source}"
    return create, probe
