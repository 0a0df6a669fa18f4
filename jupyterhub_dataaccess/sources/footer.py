"""A Parquet footer cut down to some row groups and columns, for byte ranges sent as they are.

A partition whose unmasked columns leave as the file's own bytes (tickets, governed ranges)
must not carry the file's own footer: it holds every column's statistics (the minimum and
maximum of a masked column are raw values) and every row group's (those the row filter hides).
`pruned_footer` rewrites the footer's Thrift FileMetaData (compact protocol) to name only the
row groups and columns sent, at their own offsets, so a reader given those bytes and this footer
reads them as a file of just that.

Only what is known to be needed is kept (an allow-list per structure): schema elements of the
kept columns, each kept column chunk's metadata and statistics, the row groups' sizes and rows,
`created_by` (readers work around old writers' bugs by it) and the column orders. Key-value
metadata, page-index and bloom-filter offsets, sorting columns and anything this module does not
know are dropped. Nested schemas, column chunks in other files and encrypted files are refused
(FooterError): the caller then sends the partition another way.
"""

from __future__ import annotations

import functools
from typing import Any

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_MAX_DEPTH = 16
_MAX_ITEMS = 1 << 24
CACHED_FOOTERS = 4  # footers kept parsed (each ~32x its bytes, at most readers.ALONE_FOOTER_BYTES)

# fields kept, per structure (parquet.thrift field ids)
_FILE_KEEP = {1, 2, 3, 4, 6, 7}  # version, schema, num_rows, row_groups, created_by, orders
_GROUP_KEEP = {1, 2, 3, 5, 6, 7}  # columns, total_byte_size, num_rows, file_offset, size, ordinal
_CHUNK_KEEP = {2, 3}  # file_offset, meta_data
# type, encodings, path, codec, num_values, sizes, page offsets, statistics, encoding stats,
# size statistics, geospatial statistics (not: key-value metadata 8, bloom filter 14, 15)
_COLUMN_KEEP = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16, 17}
_REFUSED = {8: "an encrypted file", 9: "an encrypted file"}  # FileMetaData; also ColumnChunk 8, 9


class FooterError(ValueError):
    """A footer this module cannot (or will not) rewrite."""


# A struct is a list of (field id, compact type, value); a list is (element type, [values]);
# a map is (key type, value type, [(k, v)]). Booleans in a struct keep their value in the type.
Struct = list[tuple[int, int, Any]]


def _parse(data: bytes, whole: bool = True) -> Struct:
    """The Thrift compact struct that is all of `data` (one pass, no objects but the values);
    not `whole`: the one `data` begins with."""
    n = len(data)

    def varint(p: int) -> tuple[int, int]:
        out = shift = 0
        while True:
            if p >= n:
                raise FooterError("the footer ends early")
            b = data[p]
            p += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out, p
            shift += 7
            if shift > 63:
                raise FooterError("a malformed number in the footer")

    def value(kind: int, p: int, depth: int) -> tuple[Any, int]:
        if kind == _I32 or kind == _I64 or kind == _I16:
            v, p = varint(p)
            return (v >> 1) ^ -(v & 1), p
        if kind == _BINARY or kind == _DOUBLE:
            if kind == _BINARY:
                size, p = varint(p)
            else:
                size = 8
            if p + size > n:
                raise FooterError("the footer ends early")
            return data[p:p + size], p + size
        if kind == _STRUCT:
            return struct(p, depth + 1)
        if depth >= _MAX_DEPTH:
            raise FooterError("the footer nests too deep")
        if kind == _LIST or kind == _SET:
            if p >= n:
                raise FooterError("the footer ends early")
            size, element = data[p] >> 4, data[p] & 0x0F
            p += 1
            if size == 15:
                size, p = varint(p)
            if size > _MAX_ITEMS or size > n - p:  # (each item takes a byte at least)
                raise FooterError("a list in the footer is too long")
            items = []
            for _ in range(size):
                v, p = value(element, p, depth + 1)
                items.append(v)
            return (element, items), p
        if kind == _TRUE or kind == _FALSE or kind == _BYTE:  # (in a list: one byte)
            if p >= n:
                raise FooterError("the footer ends early")
            return data[p], p + 1
        if kind == _MAP:
            size, p = varint(p)
            if size > _MAX_ITEMS or size > n - p:
                raise FooterError("a map in the footer is too long")
            types = 0
            if size:
                if p >= n:
                    raise FooterError("the footer ends early")
                types, p = data[p], p + 1
            pairs = []
            for _ in range(size):
                k, p = value(types >> 4, p, depth + 1)
                v, p = value(types & 0x0F, p, depth + 1)
                pairs.append((k, v))
            return (types >> 4, types & 0x0F, pairs), p
        raise FooterError(f"an unknown type {kind} in the footer")

    def struct(p: int, depth: int) -> tuple[Struct, int]:
        if depth > _MAX_DEPTH:
            raise FooterError("the footer nests too deep")
        fields: Struct = []
        last, seen = 0, set()
        while True:
            if p >= n:
                raise FooterError("the footer ends early")
            head = data[p]
            p += 1
            if head == 0:
                return fields, p
            kind, delta = head & 0x0F, head >> 4
            if delta:
                fid = last + delta
            else:
                v, p = varint(p)
                fid = (v >> 1) ^ -(v & 1)
            if fid in seen:  # (Thrift readers keep the last: pyarrow's view and ours would differ)
                raise FooterError("a field twice in one structure of the footer")
            seen.add(fid)
            if kind == _TRUE or kind == _FALSE:
                fields.append((fid, kind, None))
            else:
                v, p = value(kind, p, depth)
                fields.append((fid, kind, v))
            last = fid

    meta, end = struct(0, 0)
    if whole and end != n:
        raise FooterError("bytes after the footer's metadata")
    return meta


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, v: Any) -> None:
        if kind in (_TRUE, _FALSE, _BYTE):
            self.out.append(v)
        elif kind in (_I16, _I32, _I64):
            self.zigzag(v)
        elif kind == _DOUBLE:
            self.out += v
        elif kind == _BINARY:
            self.varint(len(v))
            self.out += v
        elif kind in (_LIST, _SET):
            element, items = v
            if len(items) < 15:
                self.out.append(len(items) << 4 | element)
            else:
                self.out.append(0xF0 | element)
                self.varint(len(items))
            for item in items:
                self.value(element, item)
        elif kind == _MAP:
            kt, vt, items = v
            self.varint(len(items))
            if items:
                self.out.append(kt << 4 | vt)
            for k, item in items:
                self.value(kt, k)
                self.value(vt, item)
        else:  # struct
            self.struct(v)

    def struct(self, fields: Struct) -> None:
        last = 0
        for fid, kind, v in sorted(fields, key=lambda f: f[0]):
            if 0 < fid - last <= 15:
                self.out.append((fid - last) << 4 | kind)
            else:
                self.out.append(kind)
                self.zigzag(fid)
            if kind not in (_TRUE, _FALSE):
                self.value(kind, v)
            last = fid
        self.out.append(0)


def _get(fields: Struct, fid: int) -> Any:
    return next((v for f, _, v in fields if f == fid), None)


def _set(fields: Struct, fid: int, kind: int, value: Any) -> Struct:
    return [*(f for f in fields if f[0] != fid), (fid, kind, value)]


def _only(fields: Struct, keep: set[int]) -> Struct:
    return [f for f in fields if f[0] in keep]


def _chunk(chunk: Struct) -> Struct:
    if any(f[0] in (1, 8, 9) for f in chunk):
        raise FooterError("a column chunk in another file, or encrypted")
    meta = _get(chunk, 3)
    if meta is None:
        raise FooterError("a column chunk without its metadata")
    return _set(_only(chunk, _CHUNK_KEEP), 3, _STRUCT, _only(meta, _COLUMN_KEEP))


def _group(group: Struct, columns: list[int], width: int) -> Struct:
    chunks = (_get(group, 1) or (_STRUCT, []))[1]
    if len(chunks) != width:
        raise FooterError("a row group whose columns do not match the schema")
    kept = [_chunk(chunks[i]) for i in columns]
    metas = [_get(c, 3) for c in kept]
    starts = [min(o for o in (_get(m, 11), _get(m, 9)) if o is not None and o > 0)
              for m in metas if _get(m, 9) is not None]
    out = _only(group, _GROUP_KEEP)
    out = _set(out, 1, _LIST, (_STRUCT, kept))
    out = _set(out, 2, _I64, sum(_get(m, 6) or 0 for m in metas))
    out = _set(out, 6, _I64, sum(_get(m, 7) or 0 for m in metas))
    return _set(out, 5, _I64, min(starts)) if starts else [f for f in out if f[0] != 5]


def pruned_footer(footer: bytes, row_groups: list[int], columns: list[int]) -> bytes:
    """The Thrift FileMetaData `footer` (the bytes before a Parquet file's last 8) cut down to
    the row groups `row_groups` (indices, in that order) and the leaf columns `columns`
    (indices in the flat schema, in that order): a footer naming nothing else, whose column
    chunks point at the same offsets. Raises FooterError for a nested schema, column chunks
    in other files, an encrypted file, bad indices or malformed bytes."""
    try:
        return _pruned(footer, row_groups, columns)
    except FooterError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:  # (a field of
        raise FooterError(f"a malformed footer ({type(e).__name__})") from e  # another type)


def dictionary_values(header: bytes) -> int | None:
    """The number of values of the dictionary page whose Thrift PageHeader `header` begins
    with (None: not one, or cut short)."""
    try:
        page = _parse(header, whole=False)
    except FooterError:
        return None
    dictionary = _get(page, 7)  # PageHeader.dictionary_page_header, of a DICTIONARY_PAGE (2)
    count = _get(dictionary, 1) if _get(page, 1) == 2 and isinstance(dictionary, list) else None
    return count if isinstance(count, int) and count >= 0 else None


@functools.lru_cache(maxsize=CACHED_FOOTERS)
def _file_meta(footer: bytes) -> tuple[Struct, Struct, int, list[Struct]]:
    """(FileMetaData, schema, leaf columns, row groups) of a footer, checked: parsed once per
    footer's bytes (the fetches of one file's partitions share it). Never changed by callers."""
    meta = _parse(footer)
    for fid, why in _REFUSED.items():
        if _get(meta, fid) is not None:
            raise FooterError(why)
    schema = (_get(meta, 2) or (_STRUCT, []))[1]
    if not schema:
        raise FooterError("a footer without a schema")
    width = _get(schema[0], 5) or 0
    if len(schema) != width + 1 or any(_get(e, 5) for e in schema[1:]):
        raise FooterError("a nested schema")
    return meta, schema, width, (_get(meta, 4) or (_STRUCT, []))[1]


def _pruned(footer: bytes, row_groups: list[int], columns: list[int]) -> bytes:
    meta, schema, width, groups = _file_meta(bytes(footer))
    if (not all(isinstance(g, int) and 0 <= g < len(groups) for g in row_groups)
            or not all(isinstance(c, int) and 0 <= c < width for c in columns)
            or len(set(row_groups)) != len(row_groups) or len(set(columns)) != len(columns)):
        raise FooterError("row groups or columns the file does not have")
    root = _set(schema[0], 5, _I32, len(columns))
    kept = [_group(groups[g], columns, width) for g in row_groups]
    out = _only(meta, _FILE_KEEP)
    out = _set(out, 2, _LIST, (_STRUCT, [root, *(schema[1 + c] for c in columns)]))
    out = _set(out, 3, _I64, sum(_get(g, 3) or 0 for g in kept))
    out = _set(out, 4, _LIST, (_STRUCT, kept))
    orders = _get(meta, 7)
    if orders is not None:
        if len(orders[1]) != width:
            raise FooterError("column orders that do not match the schema")
        out = _set(out, 7, _LIST, (orders[0], [orders[1][c] for c in columns]))
    writer = _Writer()
    writer.struct(out)
    return bytes(writer.out)


__all__ = ["FooterError", "dictionary_values", "pruned_footer"]
