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

from typing import Any

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_MAX_DEPTH = 16
_MAX_ITEMS = 1 << 24

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


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FooterError("the footer ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        out = shift = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7
            if shift > 63:
                raise FooterError("a malformed number in the footer")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FooterError("the footer ends early")
        self.pos += n
        return bytes(self.data[self.pos - n:self.pos])

    def value(self, kind: int, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise FooterError("the footer nests too deep")
        if kind in (_TRUE, _FALSE):  # (in a list: one byte)
            return self.byte()
        if kind == _BYTE:
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            return self.take(8)
        if kind == _BINARY:
            return self.take(self.varint())
        if kind in (_LIST, _SET):
            head = self.byte()
            size, element = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            if size > _MAX_ITEMS:
                raise FooterError("a list in the footer is too long")
            return element, [self.value(element, depth + 1) for _ in range(size)]
        if kind == _MAP:
            size = self.varint()
            if size > _MAX_ITEMS:
                raise FooterError("a map in the footer is too long")
            types = self.byte() if size else 0
            return (types >> 4, types & 0x0F,
                    [(self.value(types >> 4, depth + 1), self.value(types & 0x0F, depth + 1))
                     for _ in range(size)])
        if kind == _STRUCT:
            return self.struct(depth + 1)
        raise FooterError(f"an unknown type {kind} in the footer")

    def struct(self, depth: int = 0) -> Struct:
        fields: Struct = []
        last, seen = 0, set()
        while True:
            head = self.byte()
            if head == 0:
                return fields
            kind, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            if fid in seen:  # (Thrift readers keep the last: pyarrow's view and ours would differ)
                raise FooterError("a field twice in one structure of the footer")
            seen.add(fid)
            fields.append((fid, kind, None if kind in (_TRUE, _FALSE) else self.value(kind, depth)))
            last = fid


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


def _pruned(footer: bytes, row_groups: list[int], columns: list[int]) -> bytes:
    reader = _Reader(footer)
    meta = reader.struct()
    if reader.pos != len(footer):
        raise FooterError("bytes after the footer's metadata")
    for fid, why in _REFUSED.items():
        if _get(meta, fid) is not None:
            raise FooterError(why)
    schema = (_get(meta, 2) or (_STRUCT, []))[1]
    if not schema:
        raise FooterError("a footer without a schema")
    width = _get(schema[0], 5) or 0
    if len(schema) != width + 1 or any(_get(e, 5) for e in schema[1:]):
        raise FooterError("a nested schema")
    groups = (_get(meta, 4) or (_STRUCT, []))[1]
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


__all__ = ["FooterError", "pruned_footer"]
