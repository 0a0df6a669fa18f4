"""The notebook client: `import jupyterhub_dataaccess as da`.

It finds the service from the environment the hub's spawn hook set (`DATAACCESS_URL`) and speaks
as the user's server (`JUPYTERHUB_API_TOKEN`). It decides nothing: the service checks the grant,
applies masks and filters, and audits, on every read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from .endpoint import Endpoint, NotConfigured, endpoint, error_of

__all__ = ["AccessDenied", "DataAccessError", "datasets", "duckdb", "grants", "info", "load",
           "open", "provenance", "request", "requests", "scan", "sql", "without_token"]

_FORMATS = ("arrow", "parquet", "csv")


class DataAccessError(RuntimeError):
    """The service refused or failed a call; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 0, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


class AccessDenied(DataAccessError, PermissionError):
    """No active grant for this dataset; the message says how to request it."""


def _endpoint() -> Endpoint:
    try:
        return endpoint()
    except NotConfigured as e:
        raise DataAccessError(
            f"Not inside a JupyterHub server with data access: {e}. "
            "Start your server from a JupyterHub configured with "
            "jupyterhub_dataaccess.hub.configure_hub, or set DATAACCESS_URL (the service URL, "
            "e.g. https://hub.example.org/services/dataaccess/) and JUPYTERHUB_API_TOKEN."
        ) from None


_session = None



def _http() -> Any:
    global _session
    if _session is None:
        import requests as _requests

        _session = _requests.Session()
        _session.trust_env = False  # never send the hub token through a proxy from the env
    return _session


def _call(method: str, path: str, *, params: dict[str, Any] | None = None,
          json: dict[str, Any] | None = None, stream: bool = False,
          headers: dict[str, str] | None = None) -> Any:
    import requests as _requests

    service = _endpoint()
    try:
        resp = _http().request(method, service.url(path), params=params, json=json,
                               stream=stream, timeout=(10, 300),
                               headers={**(headers or {}), **service.headers})
    except _requests.ConnectionError:
        raise DataAccessError(f"The data access service at {service.root} did not answer; "
                              "try again, or ask your JupyterHub operator.") from None
    if resp.status_code >= 400:
        raise _refusal(resp.status_code, resp.content, resp.reason)
    return resp


def _refusal(status: int, raw: bytes, reason: str) -> DataAccessError:
    """The error for a service's error answer: AccessDenied for a 403, with its message."""
    message, body = error_of(status, raw, reason)
    return (AccessDenied if status == 403 else DataAccessError)(message, status, body)


def datasets(q: str = "", *, classification: str = "", tag: str = "", status: str = "") -> Any:
    """The datasets I can see, with my access status, as a pandas DataFrame."""
    import pandas as pd

    rows, offset = [], 0
    while True:
        page = _call("GET", "datasets", params={
            "q": q, "classification": classification, "tag": tag, "status": status,
            "limit": 200, "offset": offset}).json()
        for d in page["items"]:
            rows.append({"id": d["id"], "title": d["title"], "classification": d["classification"],
                         "status": d["access"]["status"], "expires_at": d["access"]["expires_at"],
                         "tags": d["tags"], "description": d["description"]})
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            break
    return pd.DataFrame(rows, columns=["id", "title", "classification", "status", "expires_at",
                                       "tags", "description"])


def info(dataset: str) -> dict[str, Any]:
    """A dataset's metadata: description, stewards, schema (masks shown), row count, my access."""
    return _call("GET", f"datasets/{_quote(dataset)}").json()


def request(dataset: str, justification: str, days: float | None = None, *, wait: bool = False,
            timeout: float | None = None, poll: float = 2.0) -> dict[str, Any]:
    """Ask for access. Returns the request; `status` is 'approved' at once where policy allows.

    With wait=True, returns when the request is decided (or raises TimeoutError after timeout s).
    Asking again while a request is pending or a grant is active returns that one.
    """
    body: dict[str, Any] = {"dataset": dataset, "justification": justification}
    if days is not None:
        body["days"] = days
    try:
        req = _call("POST", "requests", json=body).json()
    except DataAccessError as e:
        if e.status != 409 or "request" not in e.body:
            raise
        req = e.body["request"]
    if wait:
        deadline = None if timeout is None else time.monotonic() + timeout
        while req["status"] == "pending":
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"request {req['id']} for {dataset!r} is still pending")
            time.sleep(poll)
            req = _call("GET", f"requests/{req['id']}").json()
    return req


def requests(status: str = "") -> list[dict[str, Any]]:
    """My requests, newest first."""
    return _call("GET", "requests", params={"scope": "mine", "status": status,
                                            "limit": 200}).json()["items"]


def grants(active: bool = True) -> list[dict[str, Any]]:
    """My grants (active ones by default)."""
    return _call("GET", "grants", params={"active": "true" if active else "false",
                                          "limit": 200}).json()["items"]


def _quote(dataset: str) -> str:
    from urllib.parse import quote

    if not isinstance(dataset, str) or not dataset:
        raise ValueError("dataset must be a dataset id such as 'penguins'")
    return quote(dataset, safe="")


class _Body(io.RawIOBase):
    """The body of a streamed response as a raw file, read in 1 MB chunks (far faster than
    urllib3's small reads); shows progress on stderr for reads over a second."""

    def __init__(self, resp: Any, label: str):
        length = resp.headers.get("Content-Length")
        self.label, self.total = label, int(length) if length else None
        self._chunks = resp.iter_content(1 << 20)
        self._chunk, self._pos = memoryview(b""), 0
        self.read_bytes, self.start, self.shown = 0, time.monotonic(), 0.0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        import requests as _requests

        try:
            for chunk in self._chunks:
                if chunk:
                    self._chunk, self._pos = memoryview(chunk), 0
                    self.read_bytes += len(chunk)
                    self._show()
                    return True
        except (_requests.exceptions.ChunkedEncodingError,
                _requests.exceptions.ConnectionError) as e:  # the service closed the stream
            raise DataAccessError(f"The read of {self.label!r} was cut short by the service "
                                  f"(the source failed mid-read); try again ({type(e).__name__})"
                                  ) from None
        return False

    def readinto(self, b: Any) -> int:
        if self._pos >= len(self._chunk) and not self._next_chunk():
            return 0
        n = min(len(b), len(self._chunk) - self._pos)
        b[:n] = self._chunk[self._pos:self._pos + n]
        self._pos += n
        return n

    def _show(self) -> None:
        now = time.monotonic()
        if now - self.start > 1.0 and now - self.shown > 0.25:
            self.shown = now
            done = self.read_bytes / 1e6
            total = f" of {self.total / 1e6:.1f}" if self.total else ""
            rate = done / (now - self.start)
            sys.stderr.write(f"\r{self.label}: {done:.1f}{total} MB ({rate:.0f} MB/s)")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write(f"\r{self.label}: {self.read_bytes / 1e6:.1f} MB done"
                             f"{' ' * 20}\n")


_TYPES = {"arrow": "application/vnd.apache.arrow.stream",
          "parquet": "application/vnd.apache.parquet", "csv": "text/csv"}


def _require(package: str, why: str) -> None:
    """Fail before any request (and so before any read is audited) when `package` is missing."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise DataAccessError(f"{why} needs the {package} package, which this kernel lacks: "
                              f"run `%pip install {package}` and try again.")


def _read_params(columns: list[str] | None, where: str | None, limit: int | None,
                 version: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if version is not None:
        if not isinstance(version, str) or not version:
            raise ValueError("version must be a version string, as in "
                             "df.attrs['dataaccess']['version'] or da.info(id)['version']")
        params["version"] = version
    if columns:
        if isinstance(columns, str):
            raise ValueError("columns must be a list of column names, e.g. ['species']")
        params["columns"] = ",".join(columns)
    if where is not None:
        if not isinstance(where, str):
            raise ValueError("where must be a string, e.g. \"month == 3 and carrier in ('UA')\"")
        params["where"] = where
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be a whole number, not negative")
        params["limit"] = str(limit)
    return params


def _stream(dataset: str, fmt: str | None, columns: list[str] | None,
            where: str | None = None, limit: int | None = None, version: str | None = None
            ) -> Any:
    """GET the data; with no `fmt`, the service picks Parquet (its file as it is, when no mask,
    filter or projection applies) or else an Arrow stream, and says which in Content-Type."""
    params: dict[str, Any] = {"format": fmt} if fmt else {}
    params.update(_read_params(columns, where, limit, version))
    resp = _call("GET", f"datasets/{_quote(dataset)}/data", params=params, stream=True,
                 headers={"Accept": f"{_TYPES['parquet']}, {_TYPES['arrow']};q=0.9"})
    return resp, _Body(resp, dataset)


def _load_stream(dataset: str, columns: list[str] | None, where: str | None, limit: int,
                 version: str | None) -> tuple[Any, dict[str, Any]]:
    """One governed stream of at most `limit` rows (an Arrow stream: a limit never sends a file
    as it is)."""
    import pyarrow as pa

    resp, body = _stream(dataset, "arrow", columns, where, limit, version)
    try:
        with pa.ipc.open_stream(io.BufferedReader(body, buffer_size=1 << 20)) as reader:
            return reader.read_all(), _origin(dataset, resp)
    except pa.ArrowInvalid as e:
        raise DataAccessError(f"The read of {dataset!r} was cut short; try again ({e})") from None
    finally:
        body.finish()
        resp.close()


def load(dataset: str, columns: list[str] | None = None, as_: str = "pandas", *,
         where: str | None = None, limit: int | None = None, version: str | None = None
         ) -> Any:
    """Read a granted dataset, masks and row filters applied: pandas, arrow, polars or dask.

    `where` keeps the rows it holds for, in the row-filter language (``"month == 3 and
    carrier in ('UA', 'AA')"``), and `limit` caps the rows; both run in the service, after the
    dataset's row filter and masks (a predicate on a masked column compares masked values), and
    are pushed down to the source where that is safe, so only the answer travels.

    Without `limit` the read is a scan plan (`da.scan`) whose partitions are fetched several at
    once over kept-alive connections; with it, one stream that stops at the limit.
    as_="dask" gives a Dask DataFrame with a partition per ticket of the plan: its tasks fetch
    with their ticket alone, so the workers need no token.

    `version` reads that version of the dataset (an Iceberg snapshot id, a Delta version; for
    files only the current one), a DataAccessError (404) naming it if the dataset has no such
    version. What comes back says what was read: ``{"dataset", "version", "audit_seq"}`` in
    ``df.attrs["dataaccess"]`` (pandas), the Arrow schema's metadata (``b"dataaccess"``, JSON),
    and ``da.provenance(result)`` for any of the three (polars keeps no metadata of its own).

    Raises AccessDenied (with the exact `da.request(...)` to make) without an active grant, and
    DataAccessError with the service's message for a bad `where`, before any data flows.
    """
    if as_ not in ("pandas", "arrow", "polars", "dask"):
        raise ValueError("as_ must be 'pandas', 'arrow', 'polars' or 'dask'")
    if as_ != "arrow":
        _require(as_, f"as_={as_!r}")
    if limit is None:
        if as_ == "dask":
            return _dask_frame(scan(dataset, columns, where, version))
        plan, table, origin = _scan_or_file(dataset, columns, where, version)
        if plan is not None:
            table = load_partitions(plan)
            origin = {k: plan[k] for k in ("dataset", "version", "audit_seq")}  # its data.scan
    elif as_ == "dask":
        raise ValueError("limit is not taken with as_='dask' (use .head() on the frame)")
    else:
        table, origin = _load_stream(dataset, columns, where, limit, version)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"dataaccess": json.dumps(origin).encode()})
    if as_ == "arrow":
        return _remember(table, origin)
    if as_ == "polars":
        import polars as pl

        return _remember(pl.from_arrow(table), origin)
    frame = table.to_pandas()
    frame.attrs["dataaccess"] = origin
    return _remember(frame, origin)


def _origin(dataset: str, resp: Any) -> dict[str, Any]:
    """What a read says about itself: the dataset, the version read (None where the source
    keeps none) and the sequence number of its audit record."""
    seq = resp.headers.get("X-Dataaccess-Audit-Seq")
    return {"dataset": dataset, "version": resp.headers.get("X-Dataaccess-Version"),
            "audit_seq": int(seq) if seq and seq.isdigit() else None}


_origins: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(result) -> (weak ref, origin)


def _remember(result: Any, origin: dict[str, Any]) -> Any:
    import weakref

    key = id(result)
    _origins[key] = (weakref.ref(result, lambda _ref: _origins.pop(key, None)), origin)
    return result


def provenance(result: Any) -> dict[str, Any]:
    """``{"dataset", "version", "audit_seq"}`` of a result `da.load` returned (pandas, Arrow or
    polars): which version of which dataset it holds, and the audit record of that read. Cite
    the dataset and version; `da.load(dataset, version=...)` reads it again."""
    found = _origins.get(id(result))
    if found is not None and found[0]() is result:
        return dict(found[1])
    attrs = getattr(result, "attrs", None)
    if isinstance(attrs, dict) and "dataaccess" in attrs:
        return dict(attrs["dataaccess"])
    meta = getattr(getattr(result, "schema", None), "metadata", None) or {}
    if b"dataaccess" in meta:
        return json.loads(meta[b"dataaccess"])
    raise ValueError("not a result of da.load (or one made from it that lost its metadata)")


def sql(query: str, as_: str = "pandas") -> Any:
    """Run one SELECT in the service, next to the data, and get the answer (pandas, arrow or
    polars). Its tables are dataset ids (quote ids that are not plain names: "nyc-taxi");
    each is seen governed (row filter, then masks), and each needs an active grant::

        da.sql("select carrier, avg(dep_delay), count(*) from flights "
               "where month = 3 group by carrier")

    Raises AccessDenied naming a dataset without a grant (and the `da.request(...)` to make),
    DataAccessError with the service's message for anything else it refuses.
    """
    if as_ not in ("pandas", "arrow", "polars"):
        raise ValueError("as_ must be 'pandas', 'arrow' or 'polars'")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("sql takes one SELECT statement, as text")
    if as_ != "arrow":
        _require(as_, f"as_={as_!r}")
    import pyarrow as pa

    resp = _call("POST", "query", json={"sql": query, "format": "arrow"})
    table = pa.ipc.open_stream(resp.content).read_all()
    import json as _json

    meta = {"datasets": _json.loads(resp.headers.get("X-Dataaccess-Datasets") or "{}"),
            "audit_seq": int(resp.headers.get("X-Dataaccess-Audit-Seq") or 0) or None}
    if as_ == "arrow":
        return table.replace_schema_metadata({b"dataaccess": _json.dumps(meta).encode()})
    if as_ == "polars":
        import polars as pl

        return pl.from_arrow(table)
    df = table.to_pandas()
    df.attrs["dataaccess"] = meta
    return df


def open(dataset: str, format: str = "parquet", columns: list[str] | None = None, *,  # noqa: A001
         where: str | None = None, limit: int | None = None, version: str | None = None) -> Any:
    """A binary file-like object holding the governed dataset in `format` (arrow, parquet, csv);
    `where`, `limit` and `version` as for `load`.

    CSV and Arrow stream as you read (close the object when done). Parquet keeps its footer at
    the end, so readers need to seek: it is spooled first, in memory up to 64 MB, then to a
    temporary file. For example `pd.read_csv(da.open("penguins", "csv"))` or
    `pq.read_table(da.open("penguins"))`.
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(_FORMATS)}")
    resp, progress = _stream(dataset, format, columns, where, limit, version)
    if format != "parquet":
        return _Response(progress, resp)
    import shutil
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    try:
        shutil.copyfileobj(io.BufferedReader(progress, buffer_size=1 << 20), spool, 1 << 20)
    except BaseException:
        spool.close()
        raise
    finally:
        progress.finish()
        resp.close()
    spool.seek(0)
    return spool


class _Response(io.BufferedReader):
    """A buffered reader of a streamed response that closes the connection when closed."""

    def __init__(self, progress: _Body, resp: Any):
        super().__init__(progress, buffer_size=1 << 20)
        self._progress, self._resp = progress, resp

    def close(self) -> None:
        if not self.closed:
            self._progress.finish()
            self._resp.close()
        super().close()


def duckdb(dataset: str, columns: list[str] | None = None, *, where: str | None = None,
           limit: int | None = None, connection: Any = None) -> Any:
    """The governed dataset as a DuckDB relation, also registered as a view named `dataset`;
    `where` and `limit` as for `load` (they run in the service, so only those rows travel).

    Run SQL on it with the relation or, through the view, on the connection (DuckDB's default
    connection unless one is given); quote ids that are not plain names, e.g. "penguins-masked"::

        rel = da.duckdb("penguins")
        rel.filter("bill_length_mm > 40").aggregate("species, count(*)")
        duckdb.sql("select species, count(*) from penguins group by 1")

    The rows are read once (masks and row filters applied by the service, the read audited) and
    held in memory as Arrow; DuckDB queries them without copying.
    """
    _require("duckdb", "da.duckdb")
    import duckdb as _duckdb

    table = load(dataset, columns=columns, as_="arrow", where=where, limit=limit)
    con = connection if connection is not None else _duckdb.default_connection()
    con.register(dataset, table)
    return con.view(dataset)


# -- scan plans and tickets: parallel and distributed reads -------------------------------------

def scan(dataset: str, columns: list[str] | None = None, where: str | None = None,
         version: str | None = None) -> dict[str, Any]:
    """The scan plan of a governed read, for engines that read in parallel (Ray, Spark, your own):
    `{"dataset", "version", "expires_at", "audit_seq", "columns", "schema", "partitions":
    [{"url", "ticket", "rows"}]}`. Fetch a partition with `GET url` and the header
    `Authorization: ticket <ticket>` (no other credential); the answer is an Arrow IPC stream.
    Tickets are secrets that expire (15 minutes by default): keep them out of logs.
    """
    return _call("POST", f"datasets/{_quote(dataset)}/scan",
                 json=_scan_body(columns, where, version)).json()


def _scan_body(columns: list[str] | None, where: str | None, version: str | None
               ) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if columns is not None:
        if isinstance(columns, str):
            raise ValueError("columns must be a list of column names, e.g. ['species']")
        body["columns"] = list(columns)
    if where is not None:
        body["where"] = where
    if version is not None:
        body["version"] = version
    return body


def _scan_or_file(dataset: str, columns: list[str] | None, where: str | None,
                  version: str | None) -> tuple[dict[str, Any] | None, Any, dict[str, Any]]:
    """(plan, None, {}) of a scan; or, where the plan would be one whole Parquet file with
    nothing to govern, (None, its table, its origin): the service answers a scan that accepts
    Parquet with the file itself, saving the round trip of fetching its one ticket; likewise
    with the byte ranges its tickets would fetch, where they are row groups of one Parquet file
    with no mask or row filter (`_from_ranges`)."""
    service = _endpoint()
    headers = {**service.headers, "Content-Type": "application/json",
               "Accept": f"application/json, {_TYPES['parquet']}, {RANGES}, {HYBRID}",
               "X-Dataaccess-Dictionaries": "accept"}  # (_from_hybrid casts to the schema)
    conn, resp = _request(service.url(f"datasets/{_quote(dataset)}/scan"), "DATAACCESS_URL",
                          "POST", headers, json.dumps(_scan_body(columns, where, version)).encode())
    with _cut_short(conn, dataset):
        table = _file_table(resp)
        if table is None:
            return json.loads(resp.read()), None, {}
        return None, table, _origin(dataset, resp)


def _request(url: str, what: str, method: str, headers: dict[str, str],
             body: bytes | None = None) -> tuple[Any, Any]:
    """(connection, response) of one request to the service at `url` (named `what` in an
    error) on this thread's kept-alive connection; a refusal (>= 400) raises DataAccessError,
    with the service's Retry-After as `body["retry_after"]`."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DataAccessError(f"{what} must be http(s)://...")
    conn = _connection(parts.scheme, parts.netloc)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    resp = _send(conn, parts.netloc, method, path, headers, body)
    if resp.status >= 400:
        refusal = _refusal(resp.status, resp.read(), resp.reason)
        retry = resp.getheader("Retry-After")
        if retry and retry.isdigit():
            refusal.body["retry_after"] = int(retry)
        raise refusal
    return conn, resp


@contextlib.contextmanager
def _cut_short(conn: Any, name: str) -> Iterator[None]:
    """A body that ends early or is not what its type says: the connection is dropped (where
    it stands is unknown) and DataAccessError says the read of `name` was cut short."""
    import http.client

    try:
        yield
    except (ValueError, KeyError, TypeError, OSError, http.client.HTTPException) as e:
        conn.close()
        raise DataAccessError(f"The read of {name!r} was cut short; try again "
                              f"({type(e).__name__})") from None


def _send(conn: Any, netloc: str, method: str, path: str, headers: dict[str, str],
          body: bytes | None = None) -> Any:
    """The response of one request on a kept-alive connection (a new one if the service had
    closed it)."""
    import http.client

    for fresh in (False, True):  # a kept-alive connection the server closed: one new try
        try:
            if fresh:
                conn.close()
            conn.request(method, path, body=body, headers=headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if fresh:
                raise DataAccessError(f"The data access service at {netloc} closed the "
                                      "connection; try again") from None
        except OSError:
            conn.close()
            raise DataAccessError(f"The data access service at {netloc} did not answer; "
                                  "try again") from None
    raise AssertionError("unreachable")


class Partition:
    """One partition of a plan: its URL, its ticket (a secret, never shown) and its rows."""

    def __init__(self, url: str, ticket: str, rows: int | None = None):
        self.url, self.ticket, self.rows = url, ticket, rows

    def __repr__(self) -> str:  # Dask prints task arguments in its logs: never the ticket
        return f"Partition(url={self.url!r}, rows={self.rows})"

    def __dask_tokenize__(self) -> str:
        return self.url


def partitions(plan: dict[str, Any]) -> list[Partition]:
    return [Partition(p["url"], p["ticket"], p.get("rows")) for p in plan["partitions"]]


def plan_schema(plan: dict[str, Any]) -> Any:
    """The governed Arrow schema of a plan."""
    import base64

    import pyarrow as pa

    raw = base64.urlsafe_b64decode(plan["schema"] + "=" * (-len(plan["schema"]) % 4))
    return pa.ipc.read_schema(pa.py_buffer(raw))


RETRY_STATUSES = (429, 503)
MAX_TRIES = 8


def fetch_partition(part: Partition, schema: Any = None) -> Any:
    """One partition as an Arrow table. A 429 (too many reads at once) or 503 is retried with
    backoff (Retry-After when the service gives one); other errors raise DataAccessError.

    Given the plan's `schema`, a hashed column may come as an Arrow dictionary of its type (far
    fewer bytes), cast back to it here (in the fetching thread, while others still arrive)."""
    import random

    delay = 0.2
    for attempt in range(MAX_TRIES):
        try:
            table = _fetch_once(part, schema is not None)
            return table if schema is None or table.schema == schema else table.cast(schema)
        except DataAccessError as e:
            if e.status not in RETRY_STATUSES or attempt == MAX_TRIES - 1:
                raise
            wait = e.body.get("retry_after") or delay
            time.sleep(float(wait) * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


_local = None


def _connection(scheme: str, netloc: str) -> Any:
    """A keep-alive connection of this thread to the service (one per thread and host)."""
    import http.client
    import threading

    global _local
    if _local is None:
        _local = threading.local()
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    key = (scheme, netloc)
    if key not in pool:
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        pool[key] = cls(netloc, timeout=300)
    return pool[key]


def _fetch_once(part: Partition, dictionaries: bool = False) -> Any:
    from urllib.parse import urlsplit

    import pyarrow as pa

    headers = {"Authorization": f"ticket {part.ticket}",
               "Accept": f"{_TYPES['parquet']}, {RANGES}, {HYBRID}, {_TYPES['arrow']};q=0.9"}
    if dictionaries:
        headers["X-Dataaccess-Dictionaries"] = "accept"
    conn, resp = _request(part.url, "A partition URL", "GET", headers)
    with _cut_short(conn, urlsplit(part.url).path.rsplit("/", 1)[-1]):
        table = _file_table(resp)
        if table is not None:
            return table
        with pa.ipc.open_stream(_Into(resp)) as reader:  # decoded batch by batch as it arrives
            table = reader.read_all()
        if resp.read(1):
            raise pa.ArrowInvalid("data after the end of the stream")
        return table


RANGES = "application/vnd.dataaccess.parquet-ranges"
HYBRID = "application/vnd.dataaccess.parquet-hybrid"  # (ranges of unmasked columns + masked)


def _file_table(resp: Any) -> Any:
    """The table of a body that is a Parquet file as it is, or byte ranges of one
    (`_from_ranges`); None for a body of any other type."""
    kind = resp.getheader("Content-Type", "")
    if kind.startswith(RANGES):
        return _from_ranges(resp)
    if kind.startswith(HYBRID):
        return _from_hybrid(resp)
    if kind.startswith(_TYPES["parquet"]):
        import pyarrow.parquet as pq

        return pq.read_table(_receive(resp, int(resp.getheader("Content-Length"))))
    return None


def _from_ranges(resp: Any) -> Any:
    """A partition the service sent as the byte ranges of its Parquet file that hold it, which
    it does only where nothing governs the rows (no mask, no row filter): a header (4 bytes of
    length, then JSON: the file's size, the ranges, the row groups, the columns to read, the
    caller's own `where` and the columns to keep), then each range. Each lands at its offset in
    a buffer of the file's size (pages never written are never resident), from which pyarrow
    reads the row groups; the `where` is then applied here (`_where_kept`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    head = _head(resp)
    buf = pa.allocate_buffer(head["size"])
    view = memoryview(buf)
    for offset, length in head["ranges"]:
        _receive_into(resp, view[offset:offset + length])
    if resp.read(1):
        raise pa.ArrowInvalid("data after the last range")
    parquet = pq.ParquetFile(pa.BufferReader(buf), read_dictionary=head["dictionary"] or None)
    groups, columns = head["row_groups"], head["columns"]
    stored = parquet.metadata.schema.to_arrow_schema()  # (not read as dictionaries)
    plain = pa.schema([pa.field(n, stored.field(n).type) for n in columns])
    table = (parquet.read_row_groups(groups, columns=columns) if groups
             else plain.empty_table())
    table = _where_kept(table, [parquet.metadata.row_group(g).num_rows for g in groups],
                        head, plain)
    table = _plain_text(table.select(head["select"]), head["dictionary"], plain)
    return pa.Table.from_arrays(table.columns, schema=pa.schema(
        [pa.field(n, plain.field(n).type) for n in head["select"]]))  # as a governed read types it


def _head(resp: Any) -> dict[str, Any]:
    """The JSON header before the ranges of a body (4 bytes of length, big-endian, then it)."""
    return json.loads(_receive(resp, int.from_bytes(_receive(resp, 4).to_pybytes(), "big"))
                      .to_pybytes())


def _where_kept(table: Any, rows: list[int], head: dict[str, Any], plain: Any) -> Any:
    """The rows of `table` (row groups of `rows` rows each, in order) that the caller's
    `where` of `head` keeps, applied exactly as the service would: not on a row group whose
    statistics prove it keeps every row (`every_row`), and on plain text (text stored as a
    small dictionary is read as one and made plain text when the filter needs it)."""
    import pyarrow as pa

    from .sources.filters import FilterError, bind, parse_filter

    if not head["where"]:
        return table
    try:
        where = bind(parse_filter(head["where"]), plain)
        expr = where.to_arrow()
    except FilterError as e:  # a service whose filter language this client does not know
        raise DataAccessError(f"This client cannot apply the filter {head['where']!r} "
                              f"({e}); update jupyterhub-dataaccess in this kernel") from None
    table = _plain_text(table, [n for n in head["dictionary"] if n in where.columns], plain)
    kept, start = [], 0
    for n, every in zip(rows, head["every_row"], strict=True):
        part = table.slice(start, n)
        kept.append(part if every else part.filter(expr))
        start += n
    return pa.concat_tables(kept) if kept else table


def _from_hybrid(resp: Any) -> Any:
    """A partition of a dataset with masks or a row filter, whose row groups' statistics
    proved the row filter keeps every row (the service decides): a header (as `_from_ranges`;
    the data's end `size`, the replacement footer's length `footer`, the `masked` columns, the
    governed `schema`), the ranges of the unmasked columns' chunks, the footer (naming only
    those row groups and columns), then, with masked columns, their values for every row of
    those row groups as an Arrow IPC stream, which ends the body. The file is rebuilt in a
    buffer (b"PAR1", each range at its offset, the footer, its length, b"PAR1") and read while
    the service still masks, joined with the masked columns, the caller's `where` applied as
    `_from_ranges` does, and cast to the schema."""
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    head = _head(resp)
    size, footer = head["size"], head["footer"]
    buf = pa.allocate_buffer(size + footer + 8)
    view = memoryview(buf).cast("B")
    view[:4] = b"PAR1"
    for offset, length in head["ranges"]:
        if offset < 4 or offset + length > size:
            raise ValueError("a range outside the data")
        _receive_into(resp, view[offset:offset + length])
    _receive_into(resp, view[size:size + footer])
    view[size + footer:] = footer.to_bytes(4, "little") + b"PAR1"
    parquet = pq.ParquetFile(pa.BufferReader(buf), read_dictionary=head["dictionary"] or None)
    columns, meta = head["columns"], parquet.metadata
    stored = meta.schema.to_arrow_schema()  # (not read as dictionaries)
    plain = pa.schema([pa.field(n, stored.field(n).type) for n in columns])
    table = parquet.read(columns=columns)
    masked = None
    if head["masked"]:  # decoded batch by batch as it arrives
        with pa.ipc.open_stream(_Into(resp)) as reader:
            masked = reader.read_all()
        if masked.column_names != head["masked"]:
            raise pa.ArrowInvalid("the masked columns are not those of the header")
    if resp.read(1):
        raise pa.ArrowInvalid("data after the masked columns")
    if masked is not None:
        if masked.num_rows != table.num_rows:
            raise pa.ArrowInvalid("the masked columns do not line up with the rows")
        for field, column in zip(masked.schema, masked.columns, strict=True):
            table = table.append_column(field, column)
    table = _where_kept(table, [meta.row_group(g).num_rows for g in range(meta.num_row_groups)],
                        head, plain).select(head["select"])
    schema = pa.ipc.read_schema(pa.py_buffer(base64.urlsafe_b64decode(
        head["schema"] + "=" * (-len(head["schema"]) % 4))))
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema],
                                schema=schema)


def _plain_text(table: Any, names: list[str], plain: Any) -> Any:
    """`table` with its dictionary columns among `names` made plain (their `plain` types)."""
    import pyarrow as pa

    for n in names:
        i = table.schema.get_field_index(n)
        if i >= 0 and pa.types.is_dictionary(table.schema.field(i).type):
            column = pa.chunked_array([c.dictionary.take(c.indices)
                                       for c in table.column(i).chunks]).cast(plain.field(n).type)
            table = table.set_column(i, plain.field(n), column)
    return table


class _Into:
    """A response as a file whose reads land straight in Arrow buffers, which the Arrow stream
    reader then uses as they are (http.client's own read(n) of a chunked body receives each
    piece and joins them: a copy of every byte more)."""

    closed = False

    def __init__(self, resp: Any):
        self.resp = resp

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> Any:
        if n is None or n < 0:
            return self.resp.read()
        return _receive(self.resp, n, exact=False)

    def close(self) -> None:
        pass


def _receive(resp: Any, length: int, exact: bool = True) -> Any:
    """A body of known length (or, not `exact`, at most that much), received straight into one
    Arrow buffer (no copies on the way; Arrow's memory pool reuses its pages from one read to
    the next)."""
    import pyarrow as pa

    buf = pa.allocate_buffer(length)
    got = _receive_into(resp, memoryview(buf), exact)
    return buf if got == length else buf.slice(0, got)  # the stream reader says what was cut


def _receive_into(resp: Any, view: memoryview, exact: bool = True) -> int:
    """Fill `view` from the body (or, not `exact`, as much as is left of it); bytes received."""
    got = 0
    while got < len(view):
        n = resp.readinto(view[got:])
        if not n:
            if exact:
                raise OSError("the body ended early")
            break
        got += n
    return got


def load_partitions(plan: dict[str, Any], parallel: int = 4) -> Any:
    """Every partition of a plan, fetched `parallel` at a time, as one Arrow table (in order)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    parts = partitions(plan)
    schema = plan_schema(plan)
    tables, start = [], time.monotonic()
    with ThreadPoolExecutor(max(1, min(parallel, len(parts))),
                            thread_name_prefix="dataaccess-fetch") as pool:
        for table in pool.map(fetch_partition, parts, [schema] * len(parts)):
            tables.append(table)
            if time.monotonic() - start > 1.0:  # long reads show progress
                sys.stderr.write(f"\r{plan['dataset']}: {len(tables)} of {len(parts)} "
                                 f"partitions{chr(10) if len(tables) == len(parts) else ''}")
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


@contextlib.contextmanager
def without_token() -> Iterator[None]:
    """Hide the server's token from processes started inside the block, such as the workers
    of a Dask LocalCluster, which otherwise inherit it with the kernel's environment::

        with da.without_token():
            cluster = LocalCluster(n_workers=2)
        ddf = da.load("flights", as_="dask")   # the tasks carry tickets, never the token

    Every variable holding the token (JUPYTERHUB_API_TOKEN, JPY_API_TOKEN...) is put back after.
    """
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    hidden = {k: v for k, v in os.environ.items()
              if k in TOKEN_VARIABLES or (token and v == token)}
    for k in hidden:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(hidden)


def _partition_frame(part: Partition, schema: Any = None) -> Any:
    """A Dask task: one partition as pandas, fetched with its ticket alone (no token needed);
    a hashed column that came as a dictionary is cast back to the plan's `schema`."""
    return fetch_partition(part, schema).to_pandas()


def _dask_frame(plan: dict[str, Any]) -> Any:
    """A Dask DataFrame of a plan: a partition per ticket, the governed schema as meta."""
    import dask.dataframe as dd

    schema = plan_schema(plan)
    meta = schema.empty_table().to_pandas()
    parts = partitions(plan)
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(_partition_frame, parts, meta=meta, enforce_metadata=False,
                       label=f"dataaccess-{plan['dataset']}", schema=schema)
