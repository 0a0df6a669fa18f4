"""The notebook client outside a hub, and its progress display on a slow read.

The slow read is served by a small HTTP server on loopback speaking the service's data route (an
Arrow IPC stream, dribbled out over ~2 seconds): the client's own code path, end to end.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

import jupyterhub_dataaccess as da
from jupyterhub_dataaccess import client


@pytest.fixture(autouse=True)
def fresh_session():
    client._session = None
    yield
    client._session = None


def test_outside_a_hub_the_error_names_what_is_missing_and_how_to_fix_it(monkeypatch):
    """When no hub set the environment, Then da.load says which variables are missing and how
    to get them, and nothing is sent anywhere."""
    for name in ("DATAACCESS_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(da.DataAccessError) as e:
        da.load("penguins")
    message = str(e.value)
    assert "Not inside a JupyterHub server with data access" in message
    assert "DATAACCESS_URL and JUPYTERHUB_API_TOKEN is not set" in message
    assert "configure_hub" in message
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    with pytest.raises(da.DataAccessError, match=r": DATAACCESS_URL is not set"):
        da.datasets()


def test_an_unreachable_service_is_a_clear_error(monkeypatch):
    from hubutil import free_port

    monkeypatch.setenv("DATAACCESS_URL", f"http://127.0.0.1:{free_port()}/services/dataaccess")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    with pytest.raises(da.DataAccessError, match="did not answer; try again"):
        da.load("penguins")


def test_bad_arguments_are_refused_before_any_call(monkeypatch):
    monkeypatch.delenv("DATAACCESS_URL", raising=False)
    with pytest.raises(ValueError, match="as_ must be"):
        da.load("penguins", as_="excel")
    with pytest.raises(ValueError, match="format must be one of arrow, parquet, csv"):
        da.open("penguins", format="xlsx")


class _SlowData(BaseHTTPRequestHandler):
    """GET .../data: an Arrow stream of 200,000 rows sent in 20 pieces over ~2 s."""

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("Authorization") != "token secret-token":
            self.send_response(401)
            self.end_headers()
            return
        sink = pa.BufferOutputStream()
        table = pa.table({"n": pa.array(range(200_000))})
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=10_000)
        body = sink.getvalue().to_pybytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apache.arrow.stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = len(body) // 20 + 1
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args: object) -> None:
        pass


def test_a_read_longer_than_a_second_shows_progress_on_stderr(monkeypatch, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowData)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DATAACCESS_URL",
                           f"http://127.0.0.1:{server.server_port}/services/dataaccess/")
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-token")
        t = time.monotonic()
        with da.open("slow", "arrow") as f:  # da.load shows partitions done instead
            table = pa.ipc.open_stream(f).read_all()
        assert time.monotonic() - t > 1.5
    finally:
        server.shutdown()
    assert table.column("n").to_pylist() == list(range(200_000))
    err = capsys.readouterr().err
    assert "\rslow: " in err and " MB/s)" in err and " of 1.6 MB" in err
    assert err.endswith("slow: 1.6 MB done" + " " * 20 + "\n")
    assert "secret-token" not in err


def test_a_quick_read_shows_no_progress(monkeypatch, capsys):
    class Quick(_SlowData):
        def do_GET(self) -> None:  # noqa: N802
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, pa.schema([("n", pa.int64())])) as w:
                w.write_table(pa.table({"n": [1, 2]}))
            body = sink.getvalue().to_pybytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quick)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DATAACCESS_URL", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
        with da.open("quick", "arrow") as f:
            assert pa.ipc.open_stream(f).read_all()["n"].to_pylist() == [1, 2]
    finally:
        server.shutdown()
    assert capsys.readouterr().err == ""


class _ChunkedPartition(BaseHTTPRequestHandler):
    """GET /tickets/whole or /tickets/cut: a partition as a chunked Arrow stream in pieces that
    split its messages; `cut` stops halfway without the chunked body's end."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        sink = pa.BufferOutputStream()
        table = pa.table({"n": pa.array(range(300_000)), "s": pa.array(["x"] * 300_000)})
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=70_000)
        body = sink.getvalue().to_pybytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apache.arrow.stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        end = len(body) // 2 if self.path.endswith("/cut") else len(body)
        for i in range(0, end, 100_003):
            piece = body[i:min(i + 100_003, end)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        if end == len(body):
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def test_a_partition_stream_is_read_whole_across_chunks_and_one_cut_short_is_an_error():
    """When a ticket's Arrow stream arrives in chunks that split its messages, Then the
    partition reads whole (received straight into Arrow buffers); when the stream stops
    halfway, Then DataAccessError, never a short table."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedPartition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/tickets/"
    try:
        got = client._fetch_once(client.Partition(base + "whole", "t"))
        assert got.num_rows == 300_000 and got.column("n").to_pylist() == list(range(300_000))
        with pytest.raises(da.DataAccessError, match="cut short"):
            client._fetch_once(client.Partition(base + "cut", "t"))
    finally:
        server.shutdown()


class _Refusing(BaseHTTPRequestHandler):
    """POST .../datasets/<name>/scan and GET /tickets/<id>, as the service answers them: `busy`
    is a 429 with Retry-After; anything else is a Parquet body cut off halfway."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if "busy" in self.path:
            body = b'{"status": 429, "message": "Too many reads at once"}'
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "3")
        else:
            body = b"PAR1" + bytes(1000)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apache.parquet")
            self.close_connection = True
        self.send_header("Content-Length", str(len(body) * (1 if "busy" in self.path else 2)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


def test_a_scan_answer_and_a_ticket_fetch_fail_alike_when_refused_or_cut_short(monkeypatch):
    """When the service refuses with a 429 or a body stops halfway, Then a scan answered with
    a file (client._scan_or_file) and a ticket's fetch (client._fetch_once) fail the same way
    (client._request, client._cut_short): DataAccessError with the status and Retry-After, or
    saying the read was cut short, naming the dataset or the ticket's id."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    monkeypatch.setenv("DATAACCESS_URL", base)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    try:
        for read in (lambda name: client._scan_or_file(name, None, None, None),
                     lambda name: client._fetch_once(client.Partition(base + "tickets/" + name,
                                                                      "t"))):
            with pytest.raises(da.DataAccessError) as e:
                read("busy")
            assert e.value.status == 429 and e.value.body["retry_after"] == 3
            with pytest.raises(da.DataAccessError, match="The read of 'cut' was cut short"):
                read("cut")
    finally:
        server.shutdown()


class _Dictionary(BaseHTTPRequestHandler):
    """GET /tickets/<id>: a hashed column as the service sends it to a client that accepts
    dictionaries (X-Dataaccess-Dictionaries: accept), else as plain text."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        hashes = pa.array(["a" * 32, "b" * 32, "a" * 32])
        if self.headers.get("X-Dataaccess-Dictionaries") == "accept":
            hashes = hashes.dictionary_encode()
        table = pa.table({"n": [1, 2, 3], "h": hashes})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        body = sink.getvalue().to_pybytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apache.arrow.stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_partition_fetched_with_the_plans_schema_takes_dictionaries_and_casts_them_back():
    """When a partition is fetched with the plan's schema (da.load, a Dask task), Then it asks
    for hashed columns as dictionaries and returns the plan's types and values; without it, it
    asks for none."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Dictionary)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    part = client.Partition(f"http://127.0.0.1:{server.server_port}/tickets/x", "t")
    schema = pa.schema([("n", pa.int64()), ("h", pa.string())])
    try:
        assert pa.types.is_dictionary(client._fetch_once(part, True).schema.field("h").type)
        cast = client.fetch_partition(part, schema)
        plain = client.fetch_partition(part)
    finally:
        server.shutdown()
    assert cast.schema == schema and cast.equals(plain)
    assert cast.column("h").to_pylist() == ["a" * 32, "b" * 32, "a" * 32]
