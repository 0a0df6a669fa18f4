"""The keyed hash of the `hash` mask (sources/masks.py): versioned, vectorised, the reference's
SipHash-2-4, equal for equal values whatever the array's layout."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
from pandas._libs.hashing import hash_object_array

from jupyterhub_dataaccess.sources import masks

KEY = bytes(range(32))


def test_hash_v2_is_siphash_2_4_128_of_the_reference():
    """When the empty message is hashed with the reference's key 00..0f, Then the digest is the
    reference's first 128-bit test vector."""
    assert masks.hash_v2(pa.array([""]), bytes(range(16)) + b"x" * 16).to_pylist() == [
        "a3817f04ba25a8e66df67214c7550293"]


def test_the_vectorised_rounds_agree_with_an_independent_siphash_2_4():
    """When messages of every length class are hashed with 64-bit output, Then they equal pandas'
    own (C) SipHash-2-4 of the same bytes and key: padding, length byte and rounds are right."""
    values = ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "héllo wörld, more than two words",
              "x" * 100]
    arr = pa.array(values)
    offsets = np.frombuffer(arr.buffers()[1], np.int32).astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], np.uint8)
    padded = np.concatenate([data, np.zeros(24, np.uint8)])
    views = [padded[r:r + 8 * ((len(padded) - r) // 8)].view("<u8") for r in range(8)]
    key = "0123456789abcdef"
    ours = [int(masks.siphash(masks._words(offsets[i:i + 1], offsets[i + 1:i + 2] - offsets[i:i + 1],
                                           int((offsets[i + 1] - offsets[i]) // 8 + 1), views),
                              key.encode(), bits=64)[0, 0]) for i in range(len(values))]
    assert ours == [int(h) for h in hash_object_array(np.array(values, object), key)]


def test_equal_values_hash_equal_whatever_the_layout_and_nulls_stay_null():
    """When the same values come distinct, repeated (dictionary path), sliced, chunked, as large
    strings or dictionary-encoded, Then each value's hash is the same; nulls stay null."""
    distinct = pa.array([f"user-{i}@example.org" for i in range(20_000)] + [None])
    whole = masks.hash_array(distinct, KEY)
    assert whole[20_000].as_py() is None and len(set(whole[:20_000].to_pylist())) == 20_000
    one = {v: masks.hash_array(pa.array([v]), KEY)[0].as_py() for v in distinct[:5].to_pylist()}
    repeated = pa.array([distinct[i % 5].as_py() for i in range(30_000)])
    for arr in (repeated, repeated.cast(pa.large_string()), repeated.dictionary_encode(),
                pa.chunked_array([repeated[:7], repeated[7:]]), repeated.slice(3)):
        got = masks.hash_array(arr, KEY).to_pylist()
        assert got == [one[v] for v in (arr.to_pylist() if not isinstance(arr, pa.ChunkedArray)
                                        else arr.to_pylist())]
    assert masks.hash_array(distinct.slice(19_990), KEY).to_pylist() == whole[19_990:].to_pylist()
    assert masks.hash_array(pa.array([1, None, 3]), KEY).to_pylist()[1] is None


def test_hash_v1_keeps_the_values_of_the_earlier_release():
    """When `hash-v1` is asked for, Then each value is HMAC-SHA256 of its text, as before; `hash`
    means v2, and the two differ (so stored values are never silently compared)."""
    arr = pa.array(["Adelie", "Gentoo", None, "Adelie"])
    expected = [hmac.new(KEY, b"Adelie", hashlib.sha256).hexdigest()[:32],
                hmac.new(KEY, b"Gentoo", hashlib.sha256).hexdigest()[:32], None,
                hmac.new(KEY, b"Adelie", hashlib.sha256).hexdigest()[:32]]
    assert masks.mask_array(arr, "hash-v1", KEY).to_pylist() == expected
    v2 = masks.mask_array(arr, "hash", KEY).to_pylist()
    assert v2 == masks.mask_array(arr, "hash-v2", KEY).to_pylist()
    assert v2[0] != expected[0] and len(v2[0]) == 32 and int(v2[0], 16) >= 0


def test_a_hashed_text_column_read_as_a_dictionary_hashes_as_the_plain_values_do(tmp_path):
    """When a Parquet file holds a hashed text column stored as a small dictionary (read as an
    Arrow dictionary, each distinct value hashed once) and an all-distinct one (read plainly),
    Then the governed rows equal the keyed hash of the raw values, nulls stay null, and a row
    filter on the same file still applies."""
    import pyarrow.parquet as pq

    from jupyterhub_dataaccess.catalog import Dataset, Source
    from jupyterhub_dataaccess.sources.filters import parse_filter
    from jupyterhub_dataaccess.sources.plan import governed_batches

    n = 300_000
    raw = pa.table({"n": np.arange(n), "kind": pa.array(
        np.array(["alpha", "beta", None, "delta"], dtype=object)[np.arange(n) % 4]),
        "name": pa.array([f"person-{i}" for i in range(n)])})
    path = tmp_path / "t.parquet"
    pq.write_table(raw, path, row_group_size=100_000)
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(path), format="parquet"),
                 masks={"kind": "hash", "name": "hash"}, row_filter=parse_filter("n >= 10"))
    key = b"k" * 32
    schema, batches = governed_batches(ds, key)
    got = pa.Table.from_batches(list(batches), schema)
    kept = raw.slice(10)
    dkey = masks.mask_key(key, "t")
    assert got.schema.field("kind").type == pa.string() and got.num_rows == n - 10
    assert got.column("kind").equals(
        pa.chunked_array([masks.hash_array(kept.column("kind"), dkey)]))
    assert got.column("name").equals(
        pa.chunked_array([masks.hash_array(kept.column("name"), dkey)]))
    assert got.column("kind").null_count == kept.column("kind").null_count > 0


def test_hashed_text_may_leave_a_partition_as_a_dictionary_that_casts_to_the_same_rows(tmp_path):
    """When a ticket's reader accepts dictionaries (da.load does, then casts to the plan's
    schema), Then a hashed text column stored as a small dictionary leaves as an Arrow
    dictionary, a row group stored otherwise in the same partition is made to fit the stream's
    first type (either way round), and the Arrow stream, cast to the plan's schema, holds exactly
    the rows of the plain read; a filter on the hashed column keeps it plain text."""
    import dataclasses
    import io

    import pyarrow.parquet as pq

    from jupyterhub_dataaccess.catalog import Dataset, Source
    from jupyterhub_dataaccess.sources.filters import parse_filter
    from jupyterhub_dataaccess.sources.plan import execute, execute_typed, plan_read
    from jupyterhub_dataaccess.sources.readers import reader_for
    from jupyterhub_dataaccess.sources.stream import encode

    n = 50_000
    kinds = np.array(["alpha", "beta", None, "delta"], dtype=object)[np.arange(n) % 4]
    distinct = np.array([f"kind-{i:08d}-{'x' * 20}" for i in range(n)], dtype=object)
    path = tmp_path / "t.parquet"
    with pq.ParquetWriter(path, pa.schema([("n", pa.int64()), ("kind", pa.string())])) as w:
        for i, values in enumerate([kinds, distinct, kinds]):  # small dictionary, not, small
            w.write_table(pa.table({"n": np.arange(i * n, (i + 1) * n), "kind": values}))
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(path), format="parquet"),
                 masks={"kind": "hash"}, row_filter=parse_filter("n >= 10"))
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    assert spec[3:] == (0, 3)
    key = b"k" * 32
    for where, first, dictionary in ((None, 0, True), (None, 1, False),
                                     ("kind != 'x'", 0, False)):
        plan = dataclasses.replace(plan_read(ds, where=where, reader=reader),
                                   partition=(*spec[:3], first, 3))
        expected = pa.Table.from_batches(list(execute(plan, key)), plan.schema)
        schema, batches = execute_typed(dataclasses.replace(plan, dictionaries=True), key)
        assert pa.types.is_dictionary(schema.field("kind").type) is dictionary
        stream = b"".join(encode(schema, batches, "arrow"))
        got = pa.ipc.open_stream(io.BytesIO(stream)).read_all()
        assert got.schema == schema and got.num_rows == expected.num_rows > 0
        assert got.cast(plan.schema).equals(expected)
        assert got.column("kind").null_count == expected.column("kind").null_count
        assert (expected.column("kind").null_count > 0) is (where is None)  # != drops nulls


def _typed_columns() -> dict[str, pa.Array]:
    import datetime as dt

    n = 20_000
    day, start = dt.date(2024, 1, 1), dt.datetime(2024, 1, 1)
    return {
        "int32 few": pa.array([None if i % 97 == 5 else i % 7 - 3 for i in range(n)], pa.int32()),
        "int64 distinct": pa.array([None if i % 101 == 9 else (i - n // 2) * 1_000_003
                                    for i in range(n)] + [2**63 - 1, -2**63], pa.int64()),
        "uint64": pa.array([2**64 - 1, 0, 7] * 5000, pa.uint64()),
        "int8 few": pa.array([i % 256 - 128 for i in range(n)], pa.int8()),
        "date32": pa.array([day + dt.timedelta(days=i % 400) for i in range(n)]),
        "timestamp": pa.array([start + dt.timedelta(seconds=i * 37, microseconds=i)
                               for i in range(n)], pa.timestamp("us")),
        "timestamp few": pa.array([dt.datetime(2024, 1, 1 + i % 5) for i in range(n)],
                                  pa.timestamp("us")),
        "bool": pa.array([True, False, None] * 7000),
    }


# sha256 of the newline-joined hash-v2 values with KEY, and the first two: taken from the release
# before integer, date and time columns were dictionary-encoded before becoming text
HASH_V2_VECTORS = {
    "int32 few": ("98bd8e665d000cb19b128f7950c07fb3259544c0fa483da31e9cdeccebf84487",
                  ["633a52089c7174c0804b984e285b7927", "e0715b82ebe9856556a7f123729f8ec7"]),
    "int64 distinct": ("efa78df0c27536d1d30d9aa01d307bdba7d7f81bd1a672ccd26ab8f6f808bb39",
                       ["c4eeaeeb1d9ecabdb4ad69791d47d599", "4d27bd190c44589800eea94cec5fc2c3"]),
    "uint64": ("eac97c51a70c9fd8c16eb0e510ff9f8b8c7c4768ba09333f7095891bb4f0376d",
               ["af89135b31d15ede4510241980d8643c", "586368e04687b7a5fac71ca4a4e89ae4"]),
    "int8 few": ("1ec49f7cc915397407a0efff2b3c3b62d73f79f65128c1f5cfef2e26cd134efd",
                 ["fe9876e144d98473ad20f4d9c1a525ab", "c91ae8967c57aeaf3cf1326a12cee921"]),
    "date32": ("ecf02dce4a691cbd96be0e41ca07290006b00f7b1e262e5682d04fe7b2163e86",
               ["c68d2e95e8f854804301caf924e75c3e", "8b2ac0b67204e423643e4feecab98089"]),
    "timestamp": ("8ae3baae75b3d5edf882da961aed700afbed9df278ec81b04e0e2c7cb7e895c0",
                  ["688c393807c14b7c8f99e5fc3d74497e", "f6a620b782f38cc529a34b187577e850"]),
    "timestamp few": ("688155b9e7d3b57c7cd73ae5740613482298bf1b3c09a60dd9c20ed9d8be75f1",
                      ["688c393807c14b7c8f99e5fc3d74497e", "7a3b39d55f0f72eea9efcee76f7224ee"]),
    "bool": ("bf0f0d3df3a9804eeba6636ee9312cb5679f6421a9b7b01319ad8d00badf8410",
             ["5f62b951d2ccc0961ef1ade5774e7370", "37a8c548cef9a6155d88a300b3e2dac6"]),
}


def test_hash_v2_values_of_numbers_dates_and_times_are_those_stored_before():
    """When integer (few and many distinct values, extremes), date, timestamp and boolean
    columns are hashed with hash-v2, Then every value is byte-identical to what the earlier
    release stored (fixed vectors), whichever path (dictionary or not) hashes them; and a
    column's values hash as each value alone does."""
    columns = _typed_columns()
    assert set(columns) == set(HASH_V2_VECTORS)
    for name, arr in columns.items():
        out = masks.mask_array(arr, "hash-v2", KEY).to_pylist()
        digest = hashlib.sha256("\n".join(map(str, out)).encode()).hexdigest()
        assert (digest, out[:2]) == HASH_V2_VECTORS[name], name
        assert masks.mask_array(arr, "hash", KEY).to_pylist() == out
        assert [masks.hash_array(arr.slice(i, 1), KEY)[0].as_py() for i in (0, 1, 7)] == [
            out[0], out[1], out[7]], name


def test_a_hashed_integer_column_of_few_values_may_leave_as_a_dictionary_of_the_same_hashes(
        tmp_path):
    """When a ticket's reader accepts dictionaries and a hashed integer column spans few values,
    Then it leaves as an Arrow dictionary (each distinct hash once) whose cast to text is
    exactly the plain read's, a later row group of many values is made to fit the stream's
    type, nulls stay null; without dictionaries, or under hash-v1, it is plain text."""
    import dataclasses
    import io

    import pyarrow.parquet as pq

    from jupyterhub_dataaccess.catalog import Dataset, Source
    from jupyterhub_dataaccess.sources.plan import execute, execute_typed, plan_read
    from jupyterhub_dataaccess.sources.readers import reader_for
    from jupyterhub_dataaccess.sources.stream import encode

    n = 40_000
    few = pa.array([None if i % 333 == 1 else i % 1000 - 500 for i in range(n)], pa.int32())
    many = pa.array(np.arange(n, dtype=np.int32) * 7919, pa.int32())
    path = tmp_path / "k.parquet"
    with pq.ParquetWriter(path, pa.schema([("key", pa.int32()), ("v", pa.float64())])) as w:
        for keys in (few, many, few):
            w.write_table(pa.table({"key": keys, "v": np.arange(n, dtype=np.float64)}))
    key = b"k" * 32
    got = masks.hashed_dictionary(few, "hash", key)
    assert got.type == pa.dictionary(pa.int32(), pa.string())
    assert got.cast(pa.string()).equals(masks.mask_array(few, "hash-v2", key))
    assert masks.hashed_dictionary(few, "hash-v1", key) is None
    assert masks.hashed_dictionary(many, "hash", key) is None
    for how, dictionary in (("hash", True), ("hash-v1", False)):
        ds = Dataset(id="k", title="k", source=Source(kind="file", uri=str(path),
                                                      format="parquet"), masks={"key": how})
        reader = reader_for(ds)
        spec = reader.partitions(1 << 40)[0].spec
        plan = dataclasses.replace(plan_read(ds, reader=reader), partition=spec)
        expected = pa.Table.from_batches(list(execute(plan, key)), plan.schema)
        schema, batches = execute_typed(dataclasses.replace(plan, dictionaries=True), key)
        assert pa.types.is_dictionary(schema.field("key").type) is dictionary
        stream = b"".join(encode(schema, batches, "arrow"))
        table = pa.ipc.open_stream(io.BytesIO(stream)).read_all()
        assert table.num_rows == expected.num_rows == 3 * n
        assert table.cast(plan.schema).equals(expected)
        assert expected.column("key").null_count == 2 * few.null_count > 0


def test_hex_writes_every_byte_value_as_python_does():
    """When digests hold every byte value, Then their hex text is Python's bytes.hex()."""
    digests = np.arange(256, dtype=np.uint8).reshape(16, 16).view(np.uint64)
    out = np.empty((16, 32), np.uint8)
    masks._hex(digests, out)
    assert [bytes(row).decode() for row in out] == [digests[i].tobytes().hex() for i in range(16)]
