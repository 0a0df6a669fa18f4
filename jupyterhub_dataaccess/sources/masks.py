"""Column masks: one implementation for every path that serves data (reads, previews, SQL, ticket
partitions).

`mask_array(values, how, key)` is what leaves the service in place of a masked column; the SQL path
uses the same function, so a hashed value is the same whichever way it was read.

Hashes are versioned, so that values stored from one version are never silently compared with
another's (docs/operator-guide.md, "Hashed columns"):

- `hash-v2` (what `hash` means): keyed SipHash-2-4 with a 128-bit output, computed on whole Arrow
  arrays with numpy (about 0.5 s of CPU per 2 million distinct short values, where HMAC in
  Python took 3.5 s), of each value's UTF-8 text (Arrow's text form for numbers and times;
  binary as its bytes), as 32 lowercase hex digits.
- `hash-v1` (the only hash before): HMAC-SHA256 of Python's `str(value)`, its first 32 hex digits;
  slow on columns with many distinct values. Keep it where hashes stored earlier must still match.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REDACTED = "REDACTED"
HASHES = ("hash", "hash-v1", "hash-v2")
HASH = "hash-v2"  # what `hash` means
CHUNK_ROWS = 1 << 16  # values hashed at once: bounds the scratch memory to a few MB


def mask_key(service_key: bytes, dataset_id: str) -> bytes:
    """The hashing key of one dataset: stable within it, different across datasets."""
    return hmac.new(service_key, dataset_id.encode(), hashlib.sha256).digest()


def hash_v1(arr: pa.Array, key: bytes) -> pa.Array:
    enc = arr.dictionary_encode()
    hashed = [
        None if v is None else hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:32]
        for v in enc.dictionary.to_pylist()
    ]
    return pc.take(pa.array(hashed, pa.string()), enc.indices)


# -- SipHash-2-4-128 over whole arrays (https://github.com/veorq/SipHash, the reference) ----------

_U = np.uint64
_INIT = (_U(0x736F6D6570736575), _U(0x646F72616E646F6D), _U(0x6C7967656E657261),
         _U(0x7465646279746573))


def _rotl(x: np.ndarray, b: int, tmp: np.ndarray) -> None:
    np.left_shift(x, _U(b), out=tmp)
    np.right_shift(x, _U(64 - b), out=x)
    x |= tmp


def _rounds(v: list[np.ndarray], n: int, tmp: np.ndarray) -> None:
    v0, v1, v2, v3 = v
    for _ in range(n):
        v0 += v1
        _rotl(v1, 13, tmp)
        v1 ^= v0
        _rotl(v0, 32, tmp)
        v2 += v3
        _rotl(v3, 16, tmp)
        v3 ^= v2
        v0 += v3
        _rotl(v3, 21, tmp)
        v3 ^= v0
        v2 += v1
        _rotl(v1, 17, tmp)
        v1 ^= v2
        _rotl(v2, 32, tmp)


def siphash(words: np.ndarray, key: bytes, bits: int = 128) -> np.ndarray:
    """SipHash-2-4 of many messages at once: `words` is (messages, blocks) little-endian uint64,
    each message already padded with its length byte as the reference does. Returns
    (messages, bits // 64) uint64."""
    k0, k1 = (_U(int.from_bytes(key[i:i + 8], "little")) for i in (0, 8))
    n = words.shape[0]
    v = [np.full(n, k ^ c, np.uint64) for k, c in zip((k0, k1, k0, k1), _INIT, strict=True)]
    if bits == 128:
        v[1] ^= _U(0xEE)
    tmp = np.empty(n, np.uint64)
    for j in range(words.shape[1]):
        m = words[:, j]
        v[3] ^= m
        _rounds(v, 2, tmp)
        v[0] ^= m
    v[2] ^= _U(0xEE if bits == 128 else 0xFF)
    _rounds(v, 4, tmp)
    out = [v[0] ^ v[1] ^ v[2] ^ v[3]]
    if bits == 128:
        v[1] ^= _U(0xDD)
        _rounds(v, 4, tmp)
        out.append(v[0] ^ v[1] ^ v[2] ^ v[3])
    return np.stack(out, axis=1)


_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], np.uint64)


def _words(starts: np.ndarray, lengths: np.ndarray, nblocks: int, views: list[np.ndarray]
           ) -> np.ndarray:
    """Messages of `nblocks` little-endian words each, as the reference pads them: the bytes,
    zeros, and the length's low byte in the top byte of the last word. `views[r]` is the data
    as uint64 starting at byte r, so each word is one gather, whatever its alignment."""
    out = np.empty((len(starts), nblocks), np.uint64)
    residue = starts % 8
    for r in range(8):
        sel = np.flatnonzero(residue == r)
        if len(sel):
            base = (starts[sel] - r) // 8
            for j in range(nblocks):
                out[sel, j] = views[r][base + j]
    for j in range(nblocks):
        out[:, j] &= _LOW_BYTES[np.clip(lengths - 8 * j, 0, 8)]
    out[:, nblocks - 1] |= (lengths & 0xFF).astype(np.uint64) << _U(56)
    return out


# the two lowercase hex characters of each byte value, as one 16-bit word each
_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint16)


def _hex(digests: np.ndarray, out: np.ndarray) -> None:
    """Lowercase hex of each row of bytes, into `out` (two characters per byte): one lookup
    of each byte's pair of characters (a quarter of the CPU of computing them nibble by
    nibble, which took half of hash-v2's time on all-distinct values)."""
    np.take(_HEX_PAIRS, digests.view(np.uint8), out=out.view(np.uint16))


def _exact(t: pa.DataType) -> bool:
    """A type whose equal values (as a dictionary sees them) have one text form."""
    return any(f(t) for f in (pa.types.is_integer, pa.types.is_date, pa.types.is_timestamp,
                              pa.types.is_time, pa.types.is_boolean, pa.types.is_string,
                              pa.types.is_binary))


def _few_distinct(arr: pa.Array) -> bool:
    """Worth hashing through a dictionary: many rows, few distinct values among the first."""
    return len(arr) > 8192 and pc.count_distinct(arr.slice(0, 4096)).as_py() < 1024


def small_range(rows: int, span: int) -> bool:
    """Whether `rows` integers spanning `span` (max - min) are hashed as a dictionary of each
    integer of their range (few for their count)."""
    return rows > 8192 and span < min(1 << 16, rows // 16)


def _small_range(arr: pa.Array) -> tuple[int, int] | None:
    """(min, max) of an integer column whose values span few integers for its length."""
    if not pa.types.is_integer(arr.type) or len(arr) <= 8192:
        return None
    bounds = pc.min_max(arr)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or not small_range(len(arr), high - low):
        return None
    return low, high


def _hashed_range(arr: pa.Array, key: bytes) -> pa.DictionaryArray | None:
    """hash-v2 of an integer column spanning few values, as a dictionary: every integer of
    min..max hashed once, each row's index its offset from min (None: not such a column)."""
    small = _small_range(arr)
    if small is None:
        return None
    low, high = small
    hashed = hash_v2(pa.array(range(low, high + 1), arr.type), key)
    wide = pa.uint64() if pa.types.is_unsigned_integer(arr.type) else pa.int64()
    offsets = pc.subtract(arr.cast(wide), pa.scalar(low, wide))  # 0 .. high - low
    return pa.DictionaryArray.from_arrays(offsets.cast(pa.int32()), hashed)


def hashed_dictionary(arr: pa.Array, how: str, key: bytes) -> pa.DictionaryArray | None:
    """mask_array(arr, how, key) as an Arrow dictionary where that is cheap to make and to send
    (an integer column of few distinct values under hash-v2: each distinct hash once, not 32
    characters a row); None otherwise. Cast to text, it is exactly mask_array's."""
    return _hashed_range(arr, key) if how in ("hash", "hash-v2") else None


def hash_v2(arr: pa.Array, key: bytes) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return pc.take(hash_v2(arr.dictionary, key), arr.indices)
    # few distinct values: hash each once, and never make text of each row. An integer column
    # spanning few values: each integer of its range (a column of 1,000 keys: 85 -> ~20 ms per
    # 1 M rows); other types whose equal values have one text form: a dictionary before text;
    # floats (0.0 and -0.0): after it. Each value's hash is that of its text all the same.
    ranged = _hashed_range(arr, key)
    if ranged is not None:
        return pc.take(ranged.dictionary, ranged.indices)
    if _exact(arr.type) and _few_distinct(arr):
        enc = arr.dictionary_encode()
        return pc.take(hash_v2(enc.dictionary, key), enc.indices)
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.binary() if pa.types.is_large_binary(arr.type) else pa.string())
    elif not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        arr = pc.cast(arr, pa.string())
    if _few_distinct(arr):
        enc = arr.dictionary_encode()
        return pc.take(hash_v2(enc.dictionary, key), enc.indices)
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2] or b"", np.uint8)
    # Arrow's memory pool reuses pages (fresh ones cost a page fault each on some machines)
    padded = np.frombuffer(pa.allocate_buffer(len(data) + 24), np.uint8)
    padded[:len(data)] = data  # a word read past the end stays inside
    padded[len(data):] = 0
    views = [padded[r:r + 8 * ((len(padded) - r) // 8)].view("<u8") for r in range(8)]
    text = pa.allocate_buffer(32 * n)
    out = np.frombuffer(text, np.uint8).reshape(n, 32)
    for lo in range(0, n, CHUNK_ROWS):  # in slices small enough to stay in the CPU's caches
        starts = offsets[lo:lo + CHUNK_ROWS + 1].astype(np.int64)
        lengths = starts[1:] - starts[:-1]
        starts = starts[:-1]
        nblocks = lengths // 8 + 1
        digests = np.empty((len(starts), 2), np.uint64)
        classes = np.flatnonzero(np.bincount(nblocks))  # (a count: a sort cost ~15% more)
        for count in classes:  # messages of one length class at a time
            if len(classes) == 1:  # all of them: no rows picked out and put back
                digests[:] = siphash(_words(starts, lengths, int(count), views), key[:16])
                break
            rows = np.flatnonzero(nblocks == count)
            digests[rows] = siphash(_words(starts[rows], lengths[rows], int(count), views),
                                    key[:16])
        _hex(digests, out[lo:lo + len(starts)])
    hexed = pa.StringArray.from_buffers(
        n, pa.py_buffer(np.arange(0, 32 * n + 1, 32, dtype=np.int32)), text)
    if arr.null_count:
        return pc.if_else(arr.is_valid(), hexed, pa.scalar(None, pa.string()))
    return hexed


def hash_array(arr: pa.Array, key: bytes, version: str = HASH) -> pa.Array:
    """The keyed hash of every value (nulls stay null), as 32 hex digits."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return hash_v1(arr, key) if version == "hash-v1" else hash_v2(arr, key)


def mask_array(arr: pa.Array, how: str, key: bytes) -> pa.Array:
    if how == "null":
        return pa.nulls(len(arr), arr.type)
    if how in HASHES:
        return hash_array(arr, key, HASH if how == "hash" else how)
    return pa.array([REDACTED] * len(arr), pa.string())


def masked_type(t: pa.DataType, how: str) -> pa.DataType:
    return t if how == "null" else pa.string()
