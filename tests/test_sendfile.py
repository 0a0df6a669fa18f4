"""A Parquet file sent as it is goes out with sendfile(2) (service/streams.py `send_file`): the
body is the file byte for byte with its Content-Length, the kept-alive connection serves the next
request, and a reader that stops is cut off after the write timeout (SECURITY-CASES 44)."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import time

import pytest
from hubutil import loopback_app
from tornado import web
from tornado.iostream import StreamClosedError

from jupyterhub_dataaccess.service.streams import StreamSlots

SIZE = 24 << 20  # larger than the socket buffers, so a reader that stops holds the sender


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "file.parquet"
    path.write_bytes(os.urandom(SIZE))
    slots = StreamSlots(0, 0, write_timeout=1.0, log=logging.getLogger("test-sendfile"))
    outcome: list[str] = []

    class FileHandler(web.RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Length", str(SIZE))
            with open(path, "rb") as f:
                try:
                    outcome.append("sendfile" if await slots.send_file(self, f, SIZE)
                                   else "fallback")
                except StreamClosedError:
                    outcome.append("cut off")
                    return
            self.finish()

    with loopback_app(web.Application([("/f", FileHandler)])) as port:
        yield port, path.read_bytes(), outcome


def test_a_file_body_is_the_file_and_the_connection_serves_the_next_request(server):
    port, data, outcome = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(2):  # the same kept-alive connection, twice
        conn.request("GET", "/f")
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.getheader("Content-Length")) == SIZE
        assert resp.read() == data
    deadline = time.monotonic() + 10  # (the handler notes its outcome after the last byte)
    while time.monotonic() < deadline and len(outcome) < 2:
        time.sleep(0.01)
    assert outcome == ["sendfile", "sendfile"]


def test_a_reader_that_stops_is_cut_off_after_the_write_timeout(server, caplog):
    port, _, outcome = server
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(1024)  # the headers, then nothing more is read
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not outcome:
        time.sleep(0.1)
    assert outcome == ["cut off"]
    s.settimeout(10)
    received = 0
    while chunk := s.recv(1 << 20):  # what was in flight, then the end: the service closed it
        received += len(chunk)
    assert received < SIZE
    s.close()
