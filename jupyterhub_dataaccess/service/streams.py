"""Bounds on data streams: how many run at once (per user and in all), and how long a client may
leave a chunk unread. Every route that streams data takes a slot and writes through `send`:

    with service.streams.slot(who.name):
        ...
        await service.streams.send(handler, chunk)

A stream holds at most a few encoded chunks and one encoder thread (sources/stream.py), so the
caps bound the service's memory and threads however many clients stall; the write timeout frees
a stalled stream's slot, thread and memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NoReturn

from tornado import gen
from tornado.iostream import StreamClosedError

from ..errors import GovernanceError

SENDFILE_SEGMENT = 8 << 20  # a file body is sent in pieces of this size, each within write_timeout


class TooManyStreams(GovernanceError):
    status = 429


class StreamSlots:
    """Concurrent data streams: at most `per_user` for one user and `total` in all (0: no cap)."""

    def __init__(self, per_user: int, total: int, write_timeout: float, log: Any = None):
        self.per_user, self.total, self.write_timeout, self.log = (per_user, total, write_timeout,
                                                                   log)
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}
        self.open = 0

    @contextmanager
    def slot(self, user: str) -> Iterator[None]:
        """Hold a stream slot for the block; TooManyStreams (429) when none is free."""
        with self._lock:
            mine = self._by_user.get(user, 0)
            if self.per_user and mine >= self.per_user:
                raise TooManyStreams(
                    f"You already have {mine} data streams open, the most allowed at once; "
                    "finish or close one, then retry")
            if self.total and self.open >= self.total:
                raise TooManyStreams(
                    f"The data access service is serving its maximum of {self.total} data "
                    "streams; retry shortly")
            self._by_user[user] = mine + 1
            self.open += 1
        try:
            yield
        finally:
            with self._lock:
                self.open -= 1
                left = self._by_user[user] - 1
                if left:
                    self._by_user[user] = left
                else:
                    del self._by_user[user]

    async def send(self, handler: Any, chunk: bytes | memoryview, framed: bool = False,
                   raw: bool = False) -> None:
        """Write one chunk and wait until it is on its way; a client that leaves it unread for
        `write_timeout` seconds is disconnected (StreamClosedError, as if it had gone).

        `framed`: after the headers went out, the chunk is written to the connection as an
        HTTP/1.1 chunk frame of three pieces, the data (a view of the serialised batch) kept
        as it is; the web server's own framing would copy it twice on the event loop. `raw`:
        written to the connection as it is (inside a chunk frame the caller opened)."""
        if raw:
            flushed = handler.request.connection.stream.write(chunk)
        elif framed:
            if not len(chunk):
                return  # an empty frame would end the body
            stream = handler.request.connection.stream
            stream.write(b"%x\r\n" % len(chunk))
            stream.write(chunk)
            flushed = stream.write(b"\r\n")
        else:
            handler.write(chunk)
            flushed = handler.flush()
        if self.write_timeout <= 0:
            await flushed
            return
        try:
            await gen.with_timeout(timedelta(seconds=self.write_timeout), flushed,
                                   quiet_exceptions=(StreamClosedError,))
        except gen.TimeoutError:
            self._cut_off(handler)

    async def send_file(self, handler: Any, f: Any, size: int,
                        ranges: list[tuple[int, int]] | None = None) -> bool:
        """Send the whole of file `f` (`size` bytes), or its byte `ranges` ((offset, length)
        each, in order), as the rest of the body, with sendfile(2), on the event loop
        (asyncio's sock_sendfile): from the page cache to the socket, no byte through Python, no
        thread held by a slow reader. Whatever the handler wrote before goes first, with the
        headers. Sent in segments; a client that leaves one unread for `write_timeout` seconds
        is disconnected. False (nothing sent) where that cannot be done; the caller then writes
        the file itself."""
        conn = getattr(handler.request, "connection", None)
        sock = getattr(getattr(conn, "stream", None), "socket", None)
        if sock is None or size <= 0 or not hasattr(conn, "_expected_content_remaining"):
            return False
        await handler.flush()  # the headers (and what was written), nothing else, on their way
        loop = asyncio.get_running_loop()
        timeout = self.write_timeout if self.write_timeout > 0 else None
        sent = 0
        for offset, length in ranges if ranges is not None else [(0, size)]:
            done = 0
            while done < length:
                n = min(SENDFILE_SEGMENT, length - done)
                try:
                    await asyncio.wait_for(loop.sock_sendfile(sock, f, offset + done, n,
                                                              fallback=False), timeout)
                except asyncio.exceptions.SendfileNotAvailableError:
                    if sent:
                        raise
                    return False  # (nothing sent: the caller writes the file)
                except TimeoutError:
                    self._cut_off(handler)
                except OSError:
                    conn.close()
                    raise StreamClosedError() from None
                done, sent = done + n, sent + n
        # tornado counts the body it wrote itself against the Content-Length; this one it did not
        if conn._expected_content_remaining is not None:  # (None: a chunked body)
            conn._expected_content_remaining = max(0, conn._expected_content_remaining - sent)
        return True

    def _cut_off(self, handler: Any) -> NoReturn:
        """Disconnect a client that read nothing for `write_timeout` seconds."""
        if self.log:
            self.log.warning("Closing a data stream of %s to %s: nothing read for %.0f s",
                             handler.request.path, handler.request.remote_ip, self.write_timeout)
        handler.request.connection.close()
        raise StreamClosedError()
