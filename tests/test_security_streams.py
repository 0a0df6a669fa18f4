"""SECURITY-CASES 44 on a real hub of its own: many stalled readers (open a data stream, read a few
bytes, stop) leave the service's memory and threads bounded; past the caps a 429; a reader that
stops for longer than the write timeout is cut off and its slot, thread and memory come back.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from hubutil import service_pid, status_mb
from policies import PUBLIC_ONE_DAY
from reliabilityutil import ConfiguredHub, report, write_config_files

PER_USER, TOTAL, WRITE_TIMEOUT = 3, 5, 4
ROWS = 2_000_000
PREFIX = "/services/dataaccess/api/v1"

CATALOG = """
datasets:
  - id: big
    title: Two million rows
    owner: steward
    stewards: {{users: [steward]}}
    classification: public
    source: {{kind: file, uri: {data}/big.parquet}}
"""


@pytest.fixture(scope="module")
def capped_hub(tmp_path_factory, request):
    from conftest import ON_POSTGRES
    from reliabilityutil import new_database

    tmp = str(tmp_path_factory.mktemp("streams"))
    rng = np.random.default_rng(44)
    pq.write_table(pa.table({"id": np.arange(ROWS), "x": rng.random(ROWS),
                             "s": pa.array(np.char.add("v", (np.arange(ROWS) % 977).astype(str)))}),
                   os.path.join(tmp, "big.parquet"), row_group_size=128 * 1024)
    catalog, policy = write_config_files(tmp, CATALOG.format(data=tmp), PUBLIC_ONE_DAY)
    pg = request.getfixturevalue("postgres") if ON_POSTGRES else None
    hub = ConfiguredHub(
        state=os.path.join(tmp, "hub"), catalog=catalog, policy=policy,
        db_url=new_database("", tmp, pg),
        service_env={"DATAACCESS_MAX_STREAMS_PER_USER": str(PER_USER),
                     "DATAACCESS_MAX_STREAMS": str(TOTAL),
                     "DATAACCESS_STREAM_WRITE_TIMEOUT": str(WRITE_TIMEOUT),
                     "DATAACCESS_RATE_LIMIT": "1000", "DATAACCESS_RATE_BURST": "20000"})
    os.makedirs(hub.state, exist_ok=True)
    hub.start()
    yield hub
    hub.stop()


def open_stream(hub: ConfiguredHub, user: str) -> tuple[socket.socket, int, bytes]:
    """A data stream straight to the service (no proxy buffering in between) whose reader takes
    the status line and headers and then stops reading: (socket, status, body so far)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", hub.service_port))
    s.sendall(f"GET {PREFIX}/datasets/big/data?format=arrow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              f"Authorization: token {hub.token(user)}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        body += s.recv(4096)
    return s, status, body


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_case44_stalled_readers_are_capped_bounded_and_cut_off(capped_hub: ConfiguredHub):
    """Given three users with a grant, When each opens data streams and stops reading after the
    headers (20 attempts in all), Then only PER_USER per user and TOTAL in all are served, the
    rest answered 429 with a clear JSON message and no audit record; the service's threads grow by
    at most one encoder per open stream and its memory stays bounded; after the write timeout
    the stalled streams are cut off, their threads end and a new read goes through whole."""
    hub = capped_hub
    users = ["analyst", "steward", "nobody"]
    for user in users:
        r = hub.call(user, "POST", "/requests", json={"dataset": "big", "justification": "44"})
        assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    pid = service_pid(hub)
    with ThreadPoolExecutor(TOTAL) as pool:  # warm: the worker pool grown as far as TOTAL reads need
        warm = list(pool.map(lambda u: hub.call(u, "GET", "/datasets/big/data?format=arrow"),
                             ["analyst", "analyst", "steward", "steward", "nobody"]))
    assert [r.status_code for r in warm] == [200] * TOTAL
    base_threads, base_rss = threads(pid), status_mb(pid, "VmRSS")

    opened, refused = [], []
    for attempt in range(20):
        user = users[0] if attempt < 6 else users[1 + attempt % 2]
        s, status, body = open_stream(hub, user)
        (opened if status == 200 else refused).append((user, s, status, body))
    assert len(opened) == TOTAL, [(u, st) for u, _, st, _ in opened]
    assert sum(1 for u, *_ in opened if u == "analyst") == PER_USER
    assert {st for _, _, st, _ in refused} == {429}
    messages = {json.loads(b)["message"] for _, _, _, b in refused}
    assert messages == {
        f"You already have {PER_USER} data streams open, the most allowed at once; finish or "
        "close one, then retry",
        f"The data access service is serving its maximum of {TOTAL} data streams; retry shortly"}
    assert all(set(json.loads(b)) == {"status", "message"} for _, _, _, b in refused)

    time.sleep(1.0)  # the stalled streams fill their buffers and wait
    held_threads, held_rss = threads(pid), status_mb(pid, "VmRSS")
    assert held_threads <= base_threads + TOTAL + 2, (base_threads, held_threads)
    assert held_rss - base_rss < TOTAL * 60, (base_rss, held_rss)
    records = hub.call("admin", "GET", "/audit", params={"dataset": "big", "limit": 200}).json()
    reads = [r for r in records["items"] if r["action"] == "data.read"]
    assert len(reads) == 2 * TOTAL  # the warm-up and the streams served; no record for a 429
    assert not [r for r in records["items"] if r["action"] == "access.denied"]

    deadline = time.monotonic() + WRITE_TIMEOUT + 20
    while time.monotonic() < deadline and threads(pid) > base_threads + 2:
        time.sleep(0.5)
    after_threads = threads(pid)
    assert after_threads <= base_threads + 2, (base_threads, after_threads)
    for _, s, _, _ in opened:  # the service closed them: what is left ends in EOF
        s.settimeout(10)
        while s.recv(1 << 20):
            pass
        s.close()
    assert "Closing a data stream" in hub.log_tail(400)
    again = requests.get(f"http://127.0.0.1:{hub.service_port}{PREFIX}/datasets/big/data",
                         params={"format": "arrow"}, timeout=120,
                         headers={"Authorization": f"token {hub.token('analyst')}"})
    assert again.status_code == 200
    assert pa.ipc.open_stream(again.content).read_all().num_rows == ROWS
    report(f"case 44: {len(opened)} stalled streams held, {len(refused)} answered 429; threads "
           f"{base_threads} -> {held_threads} -> {after_threads}; RSS {base_rss:.0f} -> "
           f"{held_rss:.0f} MB (peak {status_mb(pid, 'VmHWM'):.0f} MB)")
