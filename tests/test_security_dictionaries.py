"""Hashed columns leaving a ticket as Arrow dictionaries (X-Dataaccess-Dictionaries): a
dictionary carries the hashes of the values its rows hold, and nothing else (review of
36356dc / 09cd4c6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jupyterhub_dataaccess.catalog import Dataset, Source
from jupyterhub_dataaccess.sources import masks
from jupyterhub_dataaccess.sources.filters import parse_filter
from jupyterhub_dataaccess.sources.plan import execute_typed, plan_read
from jupyterhub_dataaccess.sources.readers import reader_for

KEY = b"k" * 32


def _dictionary_read(ds: Dataset, where: str | None = None) -> pa.Table:
    reader = reader_for(ds)
    spec = reader.partitions(1 << 40)[0].spec
    plan = dataclasses.replace(plan_read(ds, where=where, reader=reader), partition=spec,
                               dictionaries=True)
    schema, batches = execute_typed(plan, KEY)
    return pa.Table.from_batches(list(batches), schema)


def _dictionaries(column: pa.ChunkedArray) -> list[list[str]]:
    assert pa.types.is_dictionary(column.type)
    return [chunk.dictionary.to_pylist() for chunk in column.chunks]


def test_a_text_dictionary_holds_no_hash_of_a_row_the_row_filter_or_where_removed(tmp_path):
    """When a hashed text column is stored as one small dictionary per row group and the row
    filter (or the caller's where) removes every row of some values, Then the dictionary that
    leaves holds exactly the hashes of the rows sent: not how many or which values are hidden."""
    n = 40_000
    kind = np.array(["alpha", "beta", "hidden-1", "hidden-2"], dtype=object)[np.arange(n) % 4]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": np.arange(n), "kind": kind,
                             "visible": (~np.isin(kind, ["hidden-1", "hidden-2"])).astype(np.int8)}), path)
    dkey = masks.mask_key(KEY, "t")
    hidden = set(masks.mask_array(pa.array(["hidden-1", "hidden-2"]), "hash", dkey).to_pylist())
    ds = Dataset(id="t", title="t", source=Source(kind="file", uri=str(path), format="parquet"),
                 masks={"kind": "hash"}, row_filter=parse_filter("visible == 1"))
    for where in (None, "n >= 2"):
        table = _dictionary_read(ds, where)
        assert table.num_rows > 0
        sent = set(table.column("kind").cast(pa.string()).to_pylist())
        for dictionary in _dictionaries(table.column("kind")):
            assert set(dictionary) == sent and len(dictionary) == len(sent), where
            assert not hidden & set(dictionary), where


def test_a_hashed_integer_dictionary_tells_neither_the_raw_values_nor_the_unseen_ones(tmp_path):
    """When a hashed integer column of few values leaves as a dictionary, Then the dictionary
    holds only the hashes of values its rows hold (never every integer of min..max) and a row's
    index is not its raw value minus the minimum (the order of the dictionary is the order in
    which values first appear in the rows, as the plain hashes show anyway)."""
    n = 40_000
    raw = np.array([700, 3, 250, 3, 1000])[np.arange(n) % 5].astype(np.int32)
    path = tmp_path / "k.parquet"
    pq.write_table(pa.table({"key": raw, "n": np.arange(n)}), path)
    ds = Dataset(id="k", title="k", source=Source(kind="file", uri=str(path), format="parquet"),
                 masks={"key": "hash"}, row_filter=parse_filter("key != 1000"))
    dkey = masks.mask_key(KEY, "k")
    table = _dictionary_read(ds)
    column = table.column("key")
    assert column.cast(pa.string()).to_pylist() == masks.mask_array(
        pa.array(raw[raw != 1000]), "hash", dkey).to_pylist()
    for chunk, dictionary in zip(column.chunks, _dictionaries(column), strict=True):
        assert dictionary == masks.mask_array(pa.array([700, 3, 250], pa.int32()), "hash",
                                              dkey).to_pylist()
        assert chunk.indices.to_pylist()[:4] == [0, 1, 2, 1]  # not 697, 0, 247, 0


def test_a_dictionary_is_ordered_by_first_appearance_even_when_a_value_first_appears_late():
    """When a value first appears after the first rows (where its order is looked for first),
    or a dictionary holds values no row holds, Then the dictionary that leaves holds exactly
    the rows' values in the order they first appear; a dictionary already so is left as is."""
    from jupyterhub_dataaccess.sources.plan import FIRST_ROWS, _present

    words = pa.array(["w0", "w1", "w2", "w3", "unused"])
    n = 3 * FIRST_ROWS
    indices = np.where(np.arange(n) < 2 * FIRST_ROWS, np.arange(n) % 2 + 1, 3).astype(np.int32)
    indices[FIRST_ROWS + 7] = 0  # w0 first appears here, after w1 and w2, before w3
    arr = pa.DictionaryArray.from_arrays(pa.array(indices, mask=np.arange(n) % 101 == 5), words)
    got = _present(arr)
    assert got.dictionary.to_pylist() == ["w1", "w2", "w0", "w3"]
    assert got.cast(pa.string()).to_pylist() == arr.cast(pa.string()).to_pylist()
    assert got.null_count == arr.null_count
    ordered = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 2, 1], pa.int32()), words[:3])
    assert _present(ordered) is ordered
    only_nulls = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), words)
    assert len(_present(only_nulls).dictionary) == 0
