"""Column masks: one implementation for every path that serves data (reads, previews, SQL).

`mask_array(values, how, key)` is what leaves the service in place of a masked column; the SQL path
uses the same function, so a hashed value is the same whichever way it was read.
"""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pyarrow.compute as pc

REDACTED = "REDACTED"


def mask_key(service_key: bytes, dataset_id: str) -> bytes:
    """The hashing key of one dataset: stable within it, different across datasets."""
    return hmac.new(service_key, dataset_id.encode(), hashlib.sha256).digest()


def hash_array(arr: pa.Array, key: bytes) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = arr.dictionary_encode()
    hashed = [
        None if v is None else hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:32]
        for v in enc.dictionary.to_pylist()
    ]
    return pc.take(pa.array(hashed, pa.string()), enc.indices)


def mask_array(arr: pa.Array, how: str, key: bytes) -> pa.Array:
    if how == "null":
        return pa.nulls(len(arr), arr.type)
    if how == "hash":
        return hash_array(arr, key)
    return pa.array([REDACTED] * len(arr), pa.string())


def masked_type(t: pa.DataType, how: str) -> pa.DataType:
    return t if how == "null" else pa.string()
