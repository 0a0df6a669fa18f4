"""Encode governed record batches as a byte stream: Arrow IPC stream, Parquet or CSV.

Each format is written batch by batch into a small in-memory sink that is drained after every
batch, so memory stays bounded by one batch whatever the size of the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

FORMATS = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
}


class _Sink:
    """A write-only file object whose contents are taken after each batch."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def encode(schema: pa.Schema, batches: Iterator[pa.RecordBatch], fmt: str) -> Iterator[bytes]:
    """Yield the encoded bytes, one chunk per record batch (and the header/footer)."""
    sink = _Sink()
    out = pa.PythonFile(sink, mode="w")
    if fmt == "arrow":
        writer = pa.ipc.new_stream(out, schema)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(out, schema, compression="snappy")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        writer = pacsv.CSVWriter(out, schema)
    else:
        raise ValueError(f"unsupported format {fmt!r}")
    for batch in batches:
        if fmt == "parquet":
            writer.write_batch(batch, row_group_size=batch.num_rows)
        else:
            writer.write_batch(batch)
        chunk = sink.take()
        if chunk:
            yield chunk
    writer.close()
    tail = sink.take()
    if tail:
        yield tail
