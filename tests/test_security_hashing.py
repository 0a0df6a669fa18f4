"""hash-v2 of integers through a lookup by offset (review of bcd8e20): the range looked up is
never wider than the column is long, whatever its min and max, and values at the ends of each
integer type hash as their text does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from jupyterhub_dataaccess.sources import masks

KEY = bytes(range(32))
N = 50_000


def _one_by_one(arr: pa.Array) -> list[str | None]:
    """Each value hashed alone: the plain text path (a single value takes no shortcut)."""
    return [masks.hash_v2(arr.slice(i, 1), KEY)[0].as_py() for i in range(len(arr))]


@pytest.mark.parametrize("typ,low,high", [
    (pa.int64(), -2**63, 2**63 - 1), (pa.uint64(), 0, 2**64 - 1),
    (pa.int32(), -2**31, 2**31 - 1), (pa.int64(), 0, 1 << 40)])
def test_a_column_spanning_a_wide_range_is_never_looked_up_by_offset(typ, low, high):
    """When a long column of few distinct values holds its type's extremes (or any span wider
    than its length allows), Then no table of min..max is made (that would be billions of
    hashes): the values hash through a dictionary of the values present, as their text does."""
    values = np.array([low, high, 0, 7], dtype=object)[np.arange(N) % 4].tolist()
    arr = pa.array(values, typ)
    assert masks._small_range(arr) is None
    assert masks.hashed_dictionary(arr, "hash", KEY) is None
    got = masks.hash_v2(arr, KEY)
    assert got.slice(0, 4).to_pylist() == _one_by_one(arr.slice(0, 4))
    assert got.to_pylist()[4:8] == got.to_pylist()[:4]


@pytest.mark.parametrize("typ,low", [
    (pa.int64(), 2**63 - 1000), (pa.int64(), -2**63), (pa.uint64(), 2**64 - 1000),
    (pa.int8(), -128), (pa.uint32(), 2**32 - 1000)])
def test_a_narrow_range_at_the_ends_of_a_type_hashes_as_its_text(typ, low):
    """When a column spans few values at the very end of its type (where min..max as offsets
    could overflow), Then the lookup by offset gives each value the hash of its text."""
    span = 100 if typ != pa.int8() else 50
    arr = pa.array([None if i % 97 == 3 else low + i % span for i in range(N)], typ)
    small = masks._small_range(arr)
    assert small is not None and small[1] - small[0] < span
    got = masks.hash_v2(arr, KEY)
    assert got.slice(0, 200).to_pylist() == _one_by_one(arr.slice(0, 200))
    assert got.null_count == arr.null_count
    dictionary = masks.hashed_dictionary(arr, "hash", KEY)
    assert dictionary.cast(pa.string()).equals(got)
