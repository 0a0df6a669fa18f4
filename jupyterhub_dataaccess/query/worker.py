"""DuckDB in worker processes of its own, away from the process that holds credentials.

A worker is `python -m jupyterhub_dataaccess.query.worker`, started with an almost empty
environment (no source credential, no token, no service key), an address-space limit, and its
own private temporary directory. It answers one query at a time over its stdin/stdout: the
service sends the regenerated SQL and the governed relations, each either
- a view over local Parquet files read by DuckDB itself (query/native.py: the row filter as SQL,
  masks as expressions, hashes by sources/masks.py with that dataset's own key), the worker
  allowed to open exactly those files; or
- an Arrow IPC stream the service governed (sources/plan.py), for every other source;
on a fresh connection to a locked DuckDB database made for exactly those views (external access
off but for their files, no extensions, configuration locked, threads, memory and temp space
limited), and sends back the result within the row and byte bounds. A worker keeps the databases
of its last few setups (`_Setups`): the next query over the same views, files and version gets a
new connection to the same database, whose Parquet reader and threads are warm.

The pool keeps a few workers warm (a start costs a second of imports), kills one at the timeout
and starts a replacement; a crash or out-of-memory in a worker is an error for that query only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

_LEN = struct.Struct(">Q")
KEPT = 4  # databases a worker keeps (its last setups'); each holds ~9 idle threads, ~100 MB of
# address space and a few MB of memory (measured: DuckDB 2.0.1, 20M-row file)


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


def _connect(limits: dict[str, Any], temp: str, path: str, read_only: bool = False) -> Any:
    """A database in the file `path` (under `temp`) with the query's resource limits. External
    access is still on (DuckDB takes `allowed_paths` only then): `_lock` turns it off before any
    SQL of a caller runs."""
    import duckdb

    return duckdb.connect(path, read_only=read_only, config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": int(limits["threads"]),
        "memory_limit": f"{int(limits['memory_mb'])}MB",
        "temp_directory": temp,
        "max_temp_directory_size": f"{2 * int(limits['memory_mb'])}MB",
    })


def _lock(con: Any, views: list[dict[str, Any]]) -> None:
    """External access off except exactly the files of `views` (read by DuckDB's Parquet
    reader, query/native.py), configuration locked."""
    from .native import quote_text

    files = sorted({f for v in views for f in v["files"]})
    con.execute("; ".join([
        *(["SET allowed_paths = [" + ", ".join(map(quote_text, files)) + "]"] if files else []),
        "SET enable_external_access = false", "SET lock_configuration = true"]))


def _define(con: Any, views: list[dict[str, Any]]) -> list[tuple[str, Any, str]]:
    """Define the governed views in `con`'s database, locked down first (`_lock`), each view's
    column types checked unless the service says they were; returns the hash functions the
    views call, (name, function, DuckDB type of its values), for the database that reads them."""
    import secrets

    from ..sources.masks import mask_array
    from .native import view_sql

    functions, creates = [], []
    for view in views:
        names = {}
        for name, mask in view["columns"]:
            if mask not in (None, "null", "redact"):
                names[name] = f"_dataaccess_hash_{secrets.token_hex(8)}"
                functions.append((names[name], _hasher(mask_array, mask,
                                                       bytes.fromhex(view["key"])),
                                  view["types"][name]))
        creates.append(view_sql(view, names))
    _register(con, functions)
    _lock(con, views)
    for view, (_, probe) in zip(views, creates, strict=True):
        if view.get("check", True):
            read = {row[0]: row[1] for row in con.execute(f"DESCRIBE {probe}").fetchall()}
            if read != view["types"]:  # DuckDB reads a column otherwise than the Arrow path
                raise QueryFailed("mismatch", view["name"])
    if creates:
        con.execute("; ".join(create for create, _ in creates))
    return functions


def _register(con: Any, functions: list[tuple[str, Any, str]]) -> None:
    for name, function, duck in functions:
        con.create_function(name, function, [duck], "VARCHAR", type="arrow",
                            null_handling="special")


def _hasher(mask_array: Any, how: str, key: bytes) -> Any:
    """masks.mask_array(values, how, key) as a function of the values alone (DuckDB counts a
    function's parameters, defaults included)."""
    def hashed(values: Any) -> Any:
        return mask_array(values, how, key)

    return hashed


def setup_key(views: list[dict[str, Any]] | tuple, limits: dict[str, Any]) -> str:
    """What a locked database is made of, as a digest: each view's name, files and their version,
    columns and masks, row filter, types and hashing key, and the database's limits. Two
    queries share a database only when this is equal (the key itself never leaves as is)."""
    import hashlib

    made_of = [{k: v for k, v in view.items() if k != "check"}
               for view in sorted(views, key=lambda v: v["name"])]
    return hashlib.sha256(json.dumps(
        [made_of, {k: limits[k] for k in ("threads", "memory_mb")}], sort_keys=True
    ).encode()).hexdigest()


# The databases a new connection sees: its setup's catalogue is read-only, so the one thing a
# statement could still add for every connection is another database (ATTACH, refused by a
# read-only database and by external access being off). Listing functions or views costs ms.
_CATALOGUE = ("SELECT list((database_name, path, type, readonly) ORDER BY database_name) "
              "FROM duckdb_databases()")


def _catalogue(db: Any) -> Any:
    """The catalogue of `db` as a new connection sees it (see _CATALOGUE)."""
    con = db.cursor()
    try:
        return con.execute(_CATALOGUE).fetchall()
    finally:
        con.close()


class _Setups:
    """This worker's locked databases, one per setup (`setup_key`), the `most` most recently used
    kept: a query runs on a fresh connection (`cursor()`) of its setup's database, so DuckDB's
    threads and readers stay warm and the setup is made once. Everything a connection makes
    (temporary tables, views and macros, variables, prepared statements, registered Arrow) goes
    with it; the database-wide configuration is locked. A database is dropped on any doubt: the
    query was not one SELECT to DuckDB's own parser, it failed otherwise than in binding or at a
    row or byte bound, or its catalogue is not what the setup left. Everything here runs in the
    worker's one thread (DuckDB's Python client crashed when a database was made while another
    was in use)."""

    def __init__(self, root: str, most: int = KEPT):
        self.root, self.most = root, most
        self._dbs: OrderedDict[str, tuple[Any, str, Any]] = OrderedDict()  # db, temp, catalogue

    def keys(self) -> list[str]:
        """The setups kept, least recently used first (as `settle` will leave them)."""
        return list(self._dbs)[-self.most:]

    def take(self, key: str, limits: dict[str, Any], views: list[dict[str, Any]]) -> Any:
        """The database of `key`, made on first use: the views are defined in a database file,
        which is then opened read-only and locked down, so no statement can add to, drop or
        replace anything in its catalogue."""
        import duckdb

        if key in self._dbs:
            self._dbs.move_to_end(key)
            return self._dbs[key][0]
        temp = tempfile.mkdtemp(dir=self.root)
        path = os.path.join(temp, "views.duckdb")
        db = None
        try:
            made = _connect(limits, temp, path)
            try:
                functions = _define(made, views)
            finally:
                made.close()
            db = _connect(limits, temp, path, read_only=True)
            _register(db, functions)
            _lock(db, views)
            self._dbs[key] = (db, temp, _catalogue(db))
            return db
        except BaseException as e:
            if db is not None:
                db.close()
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(e, (QueryFailed, duckdb.OutOfMemoryException)):
                raise
            if isinstance(e, Exception):  # no engine text: it names files and columns
                raise QueryFailed("setup", type(e).__name__) from None
            raise

    def settle(self, key: str, doubt: bool) -> None:
        """After a query on `key`'s database, between queries: drop it on doubt or if its
        catalogue changed, and close the least recently used past `most`."""
        entry = self._dbs.get(key)
        if entry is not None:
            try:
                changed = doubt or _catalogue(entry[0]) != entry[2]
            except Exception:
                changed = True
            if changed:
                self.drop(key)
        while len(self._dbs) > self.most:
            self.drop(next(iter(self._dbs)))

    def drop(self, key: str) -> None:
        db, temp, _ = self._dbs.pop(key)
        try:
            db.close()
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def clear(self) -> None:
        for key in list(self._dbs):
            self.drop(key)


def _one_select(con: Any, sql: str) -> bool:
    """Whether DuckDB's own parser reads `sql` as exactly one SELECT (the check made it so)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        return False
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


def _serve(inp: BinaryIO, out: BinaryIO, root: str) -> None:
    import duckdb
    import pyarrow as pa

    setups = _Setups(root)
    while True:
        try:
            header = json.loads(_read(inp))
        except EOFError:
            return
        tables = {name: pa.ipc.open_stream(_read(inp)).read_all() for name in header["tables"]}
        limits = header["limits"]
        views = header.get("views", [])
        key = setup_key(views, limits)
        doubt = True
        try:
            started = time.perf_counter()
            db = setups.take(key, limits, views)
            governed = time.perf_counter()
            con = db.cursor()  # a fresh connection: this query's alone
            try:
                doubt = not _one_select(con, header["sql"])
                for name, table in tables.items():
                    con.register(name, table)
                result = _bounded(con, header["sql"], limits)
            finally:
                con.close()
            ran = time.perf_counter()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, result.schema) as writer:
                writer.write_table(result)
            body = sink.getvalue()
            _write(out, json.dumps({"ok": True, "rows": result.num_rows, "bytes": body.size,
                                    "setups": setups.keys(),
                                    "timings": {"setup": governed - started,
                                                "execute": ran - governed}}).encode())
            _write(out, body)
        except QueryFailed as e:
            doubt = doubt or e.kind != "limit"
            _write(out, json.dumps({"ok": False, "kind": e.kind, "message": e.message}).encode())
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as e:
            _write(out, json.dumps({"ok": False, "kind": "bind",
                                    "message": str(e).splitlines()[0][:500]}).encode())
        except duckdb.OutOfMemoryException:
            setups.clear()
            _write(out, json.dumps({"ok": False, "kind": "limit",
                                    "message": "memory"}).encode())
        except Exception as e:  # runtime errors: their text stays here
            doubt = True
            _write(out, json.dumps({"ok": False, "kind": "runtime",
                                    "message": type(e).__name__}).encode())
        out.flush()
        tables.clear()
        setups.settle(key, doubt)  # between queries: the next one waits in the pipe


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
               # the address space: DuckDB's own limit plus room for Python, Arrow, threads
               # and the databases kept
               "DATAACCESS_QUERY_AS_BYTES": str((4 * memory_mb + 2048 + 128 * KEPT) << 20)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub_dataaccess.query.worker"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(), start_new_session=True)
        self.setups: list[str] = []  # the setup_keys of the databases it keeps, as it last said

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

    def _take(self, wait: float, setup: str) -> _Worker:
        deadline = time.monotonic() + wait
        with self._lock:
            while not self._idle and self._busy >= self.size:
                left = deadline - time.monotonic()
                if left <= 0 or not self._lock.wait(left):
                    raise QueryFailed("limit", "busy")
            self._busy += 1
            # one that keeps this setup's database, else the longest idle
            worker = next((w for w in self._idle if setup in w.setups),
                          self._idle[0] if self._idle else None)
            if worker is not None:
                self._idle.remove(worker)
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
        limits = {"memory_mb": self.limits.memory_mb, "threads": self.limits.threads,
                  "max_rows": self.limits.max_rows, "max_bytes": self.limits.max_bytes}
        worker = self._take(self.limits.timeout_seconds, setup_key(views, limits))
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
            worker.setups = header.get("setups", worker.setups)
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
