"""Encode governed record batches as a byte stream: Arrow IPC stream, Parquet or CSV.

Each format is written batch by batch into a small in-memory sink that is drained after every
batch, so memory stays bounded by a few batches whatever the size of the dataset. Reading and
encoding run in a thread of their own, at most PREFETCH chunks ahead of the sender, so the source
is read while the previous chunk is on the wire.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pyarrow as pa

PREFETCH = 2
# Bytes per chunk handed to the web server: small enough that each copy on the way (HTTP
# chunk framing, socket buffers) stays in the CPU cache.
CHUNK_BYTES = 1 << 20

FORMATS = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
}
# byte ranges of a Parquet file as they are, with a header (tickets.open_partition)
PARQUET_RANGES = "application/vnd.dataaccess.parquet-ranges"
# byte ranges of a Parquet file's unmasked columns, a replacement footer and the masked columns
# (tickets._hybrid): a type of its own, which no client that does not ask for it gets
PARQUET_HYBRID = "application/vnd.dataaccess.parquet-hybrid"


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


def encode(schema: pa.Schema, batches: Iterator[pa.RecordBatch], fmt: str,
           prefetch: int = PREFETCH, views: bool = False) -> Iterator[bytes | memoryview]:
    """Yield the encoded bytes, one chunk per record batch (and the header/footer).

    With prefetch > 0 the batches are read and encoded in a background thread, that many
    chunks ahead; errors of the source are raised here, in the consumer, in order.

    With `views`, an Arrow chunk may be a memoryview of the serialised batch (no copy made for
    it here), for a sender that writes views as they are (service/streams.py, framed).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt!r}")
    chunks = _encode(schema, batches, fmt)
    if not views:
        chunks = _plain(chunks)
    return _ahead(chunks, prefetch) if prefetch > 0 else chunks


def _plain(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield chunk if isinstance(chunk, bytes) else bytes(chunk)
    finally:
        chunks.close()  # type: ignore[attr-defined]


_DONE = object()


def _ahead(chunks: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """Run `chunks` in a thread, at most `depth` items ahead; stop it when the consumer stops."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put((chunk, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: tuple = (_DONE, None)
        except BaseException as e:  # handed to the consumer, raised there
            item = (None, e)
        finally:
            if stop.is_set():
                chunks.close()  # type: ignore[attr-defined]
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def consume() -> Iterator[bytes]:
        thread = threading.Thread(target=produce, name="dataaccess-encode", daemon=True)
        thread.start()
        try:
            while True:
                chunk, error = q.get()
                if error is not None:
                    raise error
                if chunk is _DONE:
                    return
                yield chunk
        finally:
            stop.set()

    return consume()


_IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _arrow_messages(schema: pa.Schema, batches: Iterator[pa.RecordBatch]
                    ) -> Iterator[bytes | memoryview]:
    """The Arrow IPC stream, one encapsulated message per batch: byte for byte what the stream
    writer produces, each batch serialised once and handed on in views of CHUNK_BYTES. A schema
    with dictionaries sends each batch's dictionaries before it (a stream may replace them)."""
    head = schema.serialize()
    yield head.to_pybytes()
    dictionaries = any(pa.types.is_dictionary(f.type) for f in schema)
    for batch in batches:
        if dictionaries:  # its dictionaries (each replacing the last), then the batch
            whole = _one_batch_stream(schema, batch)  # its schema, messages, end
            message = memoryview(whole)[head.size:whole.size - len(_IPC_EOS)]
        else:
            message = memoryview(batch.serialize())
        for start in range(0, len(message), CHUNK_BYTES):
            yield message[start:start + CHUNK_BYTES]
    yield _IPC_EOS


def _one_batch_stream(schema: pa.Schema, batch: pa.RecordBatch) -> pa.Buffer:
    """The IPC stream of one batch, written once into a buffer of its exact size (measured by a
    pass that copies nothing): a growing buffer would copy and fault its pages again as it grows."""
    size = pa.MockOutputStream()
    with pa.ipc.new_stream(size, schema) as writer:
        writer.write_batch(batch)
    out = pa.allocate_buffer(size.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(out), schema) as writer:
        writer.write_batch(batch)
    return out


def _encode(schema: pa.Schema, batches: Iterator[pa.RecordBatch], fmt: str
            ) -> Iterator[bytes | memoryview]:
    if fmt == "arrow":
        yield from _arrow_messages(schema, batches)
        return
    sink = _Sink()
    out = pa.PythonFile(sink, mode="w")
    if fmt == "arrow":
        writer = pa.ipc.new_stream(out, schema)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(out, schema, compression="snappy")
    else:  # csv (encode() refused any other format)
        import pyarrow.csv as pacsv

        writer = pacsv.CSVWriter(out, schema)
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
