"""DuckDB in worker processes of its own, away from the process that holds credentials.

A worker is `python -m jupyterhub_dataaccess.query.worker`, started with an almost empty
environment (no source credential, no token, no service key), an address-space limit, and its
own private temporary directory. It answers one query at a time over its stdin/stdout: the
service sends the regenerated SQL and the governed relations, each either
- a view over local Parquet files read by DuckDB itself (query/native.py: the row filter as SQL,
  masks as expressions, hashes by sources/masks.py with that dataset's own key, sent for this
  query only), the worker allowed to open exactly those files; or
- an Arrow IPC stream the service governed (sources/plan.py), for every other source;
in a fresh DuckDB database (external access off but for those files, no extensions,
configuration locked, threads, memory and temp space limited), and sends back the result within
the row and byte bounds. The database of the next query is made while the worker waits for it.

The pool keeps a few workers warm (a start costs a second of imports), kills one at the timeout
and starts a replacement; a crash or out-of-memory in a worker is an error for that query only.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

_LEN = struct.Struct(">Q")


def _write(out: BinaryIO, payload: Any) -> None:
    out.write(_LEN.pack(len(memoryview(payload))))
    out.write(payload)


def _read(inp: BinaryIO) -> bytes:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("the other side closed the pipe")
    (n,) = _LEN.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        raise EOFError("the other side closed the pipe")
    return data


class QueryFailed(Exception):
    """kind: 'bind' (parse, binder, catalog: the engine's message is safe to show), 'runtime'
    (its text could echo data: not shown), 'limit' (a bound was reached), 'crash', 'mismatch'
    (a view's column read as another type; message: the view) and 'setup' (a view could not be
    defined; message: the error's type): the service then reads those datasets itself."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 30.0
    memory_mb: int = 1024
    max_rows: int = 1_000_000
    max_bytes: int = 256 << 20
    threads: int = 2


# -- the worker process ---------------------------------------------------------------------


def _connect(limits: dict[str, Any], temp: str) -> Any:
    """A fresh in-memory database with the query's resource limits. External access is still on
    (DuckDB takes `allowed_paths` only then): `_govern` turns it off before any SQL of a caller
    runs."""
    import duckdb

    return duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": int(limits["threads"]),
        "memory_limit": f"{int(limits['memory_mb'])}MB",
        "temp_directory": temp,
        "max_temp_directory_size": f"{2 * int(limits['memory_mb'])}MB",
    })


def _govern(con: Any, views: list[dict[str, Any]], tables: dict[str, Any]) -> None:
    """Lock `con` down, then define the governed relations: external access off except exactly
    the files of `views` (read by DuckDB's Parquet reader, query/native.py), `tables` (Arrow,
    governed by the service) registered, configuration locked."""
    import secrets

    from ..sources.masks import mask_array
    from .native import quote_text, view_sql

    files = sorted({f for v in views for f in v["files"]})
    lockdown = [*(["SET allowed_paths = [" + ", ".join(map(quote_text, files)) + "]"]
                  if files else []), "SET enable_external_access = false"]
    creates = []
    for view in views:
        functions = {}
        for name, mask in view["columns"]:
            if mask not in (None, "null", "redact"):
                fname = f"_dataaccess_hash_{secrets.token_hex(8)}"
                con.create_function(fname, _hasher(mask_array, mask, bytes.fromhex(view["key"])),
                                    [view["types"][name]], "VARCHAR", type="arrow",
                                    null_handling="special")
                functions[name] = fname
        create, probe = view_sql(view, functions)
        if view.get("check", True):
            if lockdown:
                con.execute("; ".join(lockdown))
                lockdown = []
            read = {row[0]: row[1] for row in con.execute(f"DESCRIBE {probe}").fetchall()}
            if read != view["types"]:  # DuckDB reads a column otherwise than the Arrow path
                raise QueryFailed("mismatch", view["name"])
        creates.append(create)
    for name, table in tables.items():
        con.register(name, table)
    # external access off before the views are made; configuration locked before the query
    con.execute("; ".join([*lockdown, *creates, "SET lock_configuration = true"]))


def _hasher(mask_array: Any, how: str, key: bytes) -> Any:
    """masks.mask_array(values, how, key) as a function of the values alone (DuckDB counts a
    function's parameters, defaults included)."""
    def hashed(values: Any) -> Any:
        return mask_array(values, how, key)

    return hashed


class _Databases:
    """Fresh in-memory databases, made ahead in a thread of their own (making one costs tens of
    milliseconds): a query takes one no query has used, and gives it back to be closed there.
    The thread works only between a query's end and the next one's start (`take` waits for it):
    DuckDB's Python client crashed here when a database was made while another was in use."""

    def __init__(self, root: str):
        self.root = root
        self._ready: queue.Queue = queue.Queue(maxsize=1)
        self._used: queue.Queue = queue.Queue()
        self._started = False

    def _make(self) -> None:
        while True:
            limits, used = self._used.get()
            if used is not None:
                used[0].close()
                shutil.rmtree(used[1], ignore_errors=True)
            temp = tempfile.mkdtemp(dir=self.root)
            try:
                self._ready.put((limits, _connect(limits, temp), temp))
            except Exception as e:  # given to the query that takes it
                self._ready.put((limits, e, temp))

    def take(self, limits: dict[str, Any]) -> tuple[Any, str]:
        if not self._started:
            self._started = True
            threading.Thread(target=self._make, daemon=True, name="databases").start()
            self._used.put((limits, None))
        made_with, con, temp = self._ready.get()
        if made_with != limits:  # (a pool's limits never change)
            self._used.put((limits, (con, temp) if not isinstance(con, Exception) else None))
            made_with, con, temp = self._ready.get()
        if isinstance(con, Exception):
            self._used.put((limits, None))
            raise con
        return con, temp

    def give_back(self, limits: dict[str, Any], con: Any, temp: str) -> None:
        self._used.put((limits, (con, temp)))


def _serve(inp: BinaryIO, out: BinaryIO, root: str) -> None:
    import duckdb
    import pyarrow as pa

    databases = _Databases(root)
    while True:
        try:
            header = json.loads(_read(inp))
        except EOFError:
            return
        tables = {name: pa.ipc.open_stream(_read(inp)).read_all() for name in header["tables"]}
        limits = header["limits"]
        con = None
        try:
            started = time.perf_counter()
            con, temp = databases.take({k: limits[k] for k in ("threads", "memory_mb")})
            taken = time.perf_counter()
            try:
                _govern(con, header.get("views", []), tables)
            except (QueryFailed, duckdb.OutOfMemoryException):
                raise
            except Exception as e:  # no engine text: it names files and columns of the source
                raise QueryFailed("setup", type(e).__name__) from None
            governed = time.perf_counter()
            result = _bounded(con, header["sql"], limits)
            ran = time.perf_counter()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, result.schema) as writer:
                writer.write_table(result)
            body = sink.getvalue()
            _write(out, json.dumps({"ok": True, "rows": result.num_rows, "bytes": body.size,
                                    "timings": {"wait": taken - started,
                                                "setup": governed - taken,
                                                "execute": ran - governed}}).encode())
            _write(out, body)
        except QueryFailed as e:
            _write(out, json.dumps({"ok": False, "kind": e.kind, "message": e.message}).encode())
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as e:
            _write(out, json.dumps({"ok": False, "kind": "bind",
                                    "message": str(e).splitlines()[0][:500]}).encode())
        except duckdb.OutOfMemoryException:
            _write(out, json.dumps({"ok": False, "kind": "limit",
                                    "message": "memory"}).encode())
        except Exception as e:  # runtime errors: their text stays here
            _write(out, json.dumps({"ok": False, "kind": "runtime",
                                    "message": type(e).__name__}).encode())
        out.flush()
        tables.clear()
        if con is not None:  # closed, and the next one made, while this worker waits
            databases.give_back({k: limits[k] for k in ("threads", "memory_mb")}, con, temp)


def _bounded(con: Any, sql: str, limits: dict[str, Any]) -> Any:
    """The whole result, or QueryFailed('limit') past max_rows or max_bytes."""
    import pyarrow as pa

    reader = con.sql(sql).to_arrow_reader(64 * 1024)
    batches, rows, size = [], 0, 0
    for batch in reader:
        rows += batch.num_rows
        size += batch.nbytes
        if rows > limits["max_rows"]:
            raise QueryFailed("limit", f"more than {limits['max_rows']} rows")
        if size > limits["max_bytes"]:
            raise QueryFailed("limit", f"more than {limits['max_bytes']} bytes")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def main() -> None:
    import resource

    limit = int(os.environ.get("DATAACCESS_QUERY_AS_BYTES", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = tempfile.mkdtemp(prefix="dataaccess-query-")
    # before any thread exists: Landlock binds the calling thread and the threads it starts
    write_only_under(root)
    _serve(sys.stdin.buffer, sys.stdout.buffer, root)


# Landlock (Linux >= 5.13): the rights a process can drop for good over the file system
_LANDLOCK_WRITES = (1 << 1) | sum(1 << b for b in range(4, 13))  # write, remove, make
_LANDLOCK_REFER, _LANDLOCK_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none, or not Linux)."""
    import ctypes

    try:
        return max(int(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)), 0)
    except (OSError, AttributeError):
        return 0


def write_only_under(root: str) -> bool:
    """From now on this process writes, creates, removes and truncates files only under `root`
    (its temporary directory), whatever DuckDB is told: a dataset's file it may read, for a view,
    it can never overwrite (`COPY ... TO` its path). Landlock, where the kernel has it; returns
    whether it is in force."""
    import ctypes
    import struct as _struct

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = landlock_abi()
        if abi < 1:
            return False
        handled = (_LANDLOCK_WRITES | (_LANDLOCK_REFER if abi >= 2 else 0)
                   | (_LANDLOCK_TRUNCATE if abi >= 3 else 0))
        attr = ctypes.create_string_buffer(_struct.pack("=Q", handled))
        ruleset = libc.syscall(444, attr, ctypes.sizeof(attr) - 1, 0)
        if ruleset < 0:
            return False
        try:
            fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
            try:  # struct landlock_path_beneath_attr (packed): allowed_access, parent_fd
                rule = ctypes.create_string_buffer(_struct.pack("=Qi", handled, fd))
                if libc.syscall(445, ruleset, 1, rule, 0) != 0:
                    return False
            finally:
                os.close(fd)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, as Landlock requires
                return False
            return libc.syscall(446, ruleset, 0) == 0  # landlock_restrict_self
        finally:
            os.close(ruleset)  # the restriction stays; the process keeps no handle on it
    except (OSError, AttributeError):
        return False


# -- the pool, in the service -------------------------------------------------------------


class _Worker:
    def __init__(self, memory_mb: int):
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": package_root, "LANG": "C.UTF-8",
               "HOME": tempfile.gettempdir(), "PYTHONDONTWRITEBYTECODE": "1",
               # the address space: DuckDB's own limit plus room for Python, Arrow and threads
               "DATAACCESS_QUERY_AS_BYTES": str((4 * memory_mb + 2048) << 20)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub_dataaccess.query.worker"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(), start_new_session=True)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


class WorkerPool:
    """`size` warm workers; `run` takes one (waiting for a free one), and gives it back unless
    it had to be killed, in which case a new one takes its place."""

    def __init__(self, size: int, limits: Limits, per_user: int = 1):
        self.limits, self.size, self.per_user = limits, size, per_user
        self._users: dict[str, int] = {}
        self._idle: list[_Worker] = []
        self._lock = threading.Condition()
        self._busy = 0
        self._closed = False

    def _take(self, wait: float) -> _Worker:
        deadline = time.monotonic() + wait
        with self._lock:
            while not self._idle and self._busy >= self.size:
                left = deadline - time.monotonic()
                if left <= 0 or not self._lock.wait(left):
                    raise QueryFailed("limit", "busy")
            self._busy += 1
            # the longest idle: it has had the most time to make its next database
            worker = self._idle.pop(0) if self._idle else None
        if worker is None or not worker.alive():
            worker = _Worker(self.limits.memory_mb)
        return worker

    def _give(self, worker: _Worker | None) -> None:
        with self._lock:
            self._busy -= 1
            if worker is not None and not self._closed:
                self._idle.append(worker)
            self._lock.notify()
        if worker is None and not self._closed:
            self.warm(1)

    def warm(self, n: int | None = None) -> None:
        """Start workers ahead of queries (in the background), up to the pool's size."""
        def start() -> None:
            w = _Worker(self.limits.memory_mb)
            with self._lock:
                if self._closed or len(self._idle) + self._busy >= self.size:
                    w.kill()
                    return
                self._idle.append(w)
                self._lock.notify()

        for _ in range(self.size if n is None else n):
            threading.Thread(target=start, daemon=True, name="dataaccess-query-warm").start()

    def user_slot(self, user: str) -> Any:
        """A context holding one of `user`'s `per_user` query slots (QueryFailed 'busy' past)."""
        import contextlib

        @contextlib.contextmanager
        def slot() -> Iterator[None]:
            with self._lock:
                if self._users.get(user, 0) >= self.per_user:
                    raise QueryFailed("limit", "user-busy")
                self._users[user] = self._users.get(user, 0) + 1
            try:
                yield
            finally:
                with self._lock:
                    self._users[user] -= 1
                    if not self._users[user]:
                        del self._users[user]

        return slot()

    def run(self, sql: str, tables: dict[str, Any], views: list[dict[str, Any]] = (),
            timings: dict[str, float] | None = None) -> Any:
        """The result of `sql` over `tables` (name -> pyarrow Table, governed by the service)
        and `views` (query/native.py View.to_json(): governed views over local Parquet files),
        as a pyarrow Table. `timings`, when given, gets the worker's own (seconds): setup (the
        database locked down, the views defined) and execute."""
        return self.run_ipc(sql, tables, views, timings)[0]

    def run_ipc(self, sql: str, tables: dict[str, Any], views: list[dict[str, Any]] = (),
                timings: dict[str, float] | None = None) -> tuple[Any, bytes]:
        """As `run`, with the Arrow IPC stream the worker sent (the table's buffers are in it):
        an answer in Arrow can go out as it is."""
        import pyarrow as pa

        started = time.monotonic()
        worker = self._take(self.limits.timeout_seconds)
        limits = {"memory_mb": self.limits.memory_mb, "threads": self.limits.threads,
                  "max_rows": self.limits.max_rows, "max_bytes": self.limits.max_bytes}
        done = threading.Event()
        killed = threading.Event()

        def watchdog() -> None:
            left = self.limits.timeout_seconds - (time.monotonic() - started)
            if not done.wait(max(left, 0)):
                killed.set()
                worker.kill()

        threading.Thread(target=watchdog, daemon=True, name="dataaccess-query-timer").start()
        keep: _Worker | None = None
        try:
            try:
                _write(worker.proc.stdin, json.dumps({
                    "sql": sql, "tables": list(tables), "views": list(views),
                    "limits": limits}).encode())
                for table in tables.values():
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, table.schema) as writer:
                        writer.write_table(table)
                    _write(worker.proc.stdin, sink.getvalue())
                worker.proc.stdin.flush()
                header = json.loads(_read(worker.proc.stdout))
                body = _read(worker.proc.stdout) if header["ok"] else None
            except (OSError, EOFError, ValueError):
                worker.kill()
                if killed.is_set():
                    raise QueryFailed("limit", "time") from None
                raise QueryFailed("crash", "the query engine stopped") from None
            keep = worker
        finally:
            done.set()
            self._give(keep)
        if not header["ok"]:
            raise QueryFailed(header["kind"], header["message"])
        if timings is not None:
            timings.update(header.get("timings", {}))
        return pa.ipc.open_stream(body).read_all(), body

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()




if __name__ == "__main__":
    main()
