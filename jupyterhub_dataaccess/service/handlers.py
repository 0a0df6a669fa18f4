"""Tornado handlers of the service: thin, authenticated, JSON errors; the work is in governance."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from logging import Logger
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tornado import web
from tornado.iostream import StreamClosedError

from .. import tickets
from ..errors import (
    SPAWN_SCOPE,
    BadRequest,
    GovernanceError,
    NoGrant,
    Principal,
    SourceChanged,
    SourceUnavailable,
    parse_id,
)
from ..governance import read_errors
from ..messages import how_to_ask, notification
from ..sources.filters import MAX_FILTER_LENGTH
from ..sources.plan import ReadPlan, execute
from ..sources.readers import (
    CatalogMismatch,
    ParquetRanges,
    PartitionChanged,
    SourceError,
    WholeFile,
    dataset_info,
    described_columns,
)
from ..sources.stream import FORMATS, PARQUET_HYBRID, PARQUET_RANGES, encode
from ..times import parse_iso
from .metrics import CONTENT_TYPE, METRICS_SCOPE
from .pages import PAGES, render_page
from .streams import TooManyStreams

if TYPE_CHECKING:
    from ..governance import Governance
    from ..keys import Keys
    from ..query.worker import WorkerPool
    from .details import DetailsCache
    from .metrics import Metrics
    from .streams import StreamSlots

MAX_JSON_BODY = 64 * 1024
PREVIEW_MAX = 100
PREVIEW_DEFAULT = 20
DICTIONARIES_HEADER = "X-Dataaccess-Dictionaries"  # "accept": see TicketHandler
PIECE = 4 << 20  # bytes written at a time where a body is not sent by sendfile


@dataclass(frozen=True)
class Parts:
    """What the service's handlers work with, built once by the application. Each route is given
    (tornado's `initialize`) the parts every handler uses (`COMMON`) and those its class names
    in `needs`, never the application itself."""

    governance: Governance
    run: Callable[..., Awaitable[Any]]  # fn(*args) on the worker thread pool
    directory: Any  # app.HubDirectory: a user's groups (app.py imports this module)
    limiter: Any  # app.RateLimiter: per-user requests
    token_cache_seconds: float
    log: Logger
    metrics: Metrics
    streams: StreamSlots  # per-user and total streams
    details: DetailsCache  # a dataset's schema and size
    keys: Keys  # mask and ticket keys
    queries: WorkerPool  # the SQL queries' worker processes
    config_state: Callable[[], Any]  # the app.ConfigState loaded now (reloads replace it)
    config_files: tuple[str, ...]  # catalogue and policy paths (only their names are shown)
    frame_ancestors: tuple[str, ...]
    ticket_seconds: float
    scan_partition_mb: float
    query_timings: bool  # POST /query sends Server-Timing

    COMMON = ("governance", "run", "directory", "limiter", "token_cache_seconds", "log")

    def for_route(self, handler: type[web.RequestHandler]) -> dict[str, Any]:
        """The keyword arguments of `handler`'s initialize: the parts it uses (none for the
        OAuth callback, which is JupyterHub's)."""
        if not issubclass(handler, BaseHandler):
            return {}
        return {name: getattr(self, name) for name in (*self.COMMON, *handler.needs)}


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Every route: Hub authentication (token or OAuth cookie), JSON in and out, no tracebacks."""

    public = False  # only /health says True
    callers = ("user",)  # the kinds of Hub identity a route answers (/spawn, /metrics: services)
    wrong_caller = "Only hub users may use the data access service"
    needs: tuple[str, ...] = ()  # the Parts this route uses beyond Parts.COMMON

    governance: Governance
    directory: Any
    limiter: Any
    token_cache_seconds: float
    log: Logger
    _run: Callable[..., Awaitable[Any]]

    def initialize(self, run: Callable[..., Awaitable[Any]], **parts: Any) -> None:
        """The parts of Parts.for_route(type(self)), as attributes of the same names."""
        self._run = run
        self.__dict__.update(parts)

    @property
    def hub_auth(self) -> Any:
        return self.settings["hub_auth"]

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    async def prepare(self) -> None:
        if self.request.method not in ("GET", "POST", "DELETE", "HEAD", "OPTIONS"):
            raise web.HTTPError(405)
        if "token" in self.request.query_arguments:
            raise web.HTTPError(400, "Tokens in URLs are refused; send an Authorization header")
        if self.public:
            return
        model = await self._hub_user()
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise web.HTTPError(403, "Not allowed to use the data access service") from None
        if not model:
            if self._is_browser_navigation():
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(401, "Authentication required: log in to JupyterHub")
        if model.get("kind", "user") not in self.callers:
            raise web.HTTPError(403, self.wrong_caller)
        self.current_user = model
        length = int(self.request.headers.get("Content-Length") or 0)
        if length > MAX_JSON_BODY:
            raise web.HTTPError(413, f"Request body larger than {MAX_JSON_BODY} bytes")
        if model.get("kind", "user") != "user":
            return  # services (the hub's spawn hook, a metrics scraper) are not rate limited
        try:
            await self.limiter.check(self, model["name"])
        except web.HTTPError:
            self._retry_after = self._headers.get("Retry-After")  # send_error clears headers
            raise

    async def _hub_user(self) -> dict[str, Any] | None:
        """The caller, as the Hub says now: the Authorization header's token, else the OAuth cookie.

        The Hub's answer is reused for `token_cache_seconds` (5 by default, 0: ask every time),
        so a token the Hub has revoked or expired, or whose user it deleted, stops within it.
        A cookie is accepted on POST and DELETE only with its `_xsrf` token (403 otherwise).
        """
        auth = self.hub_auth
        token = auth.get_token(self, in_cookie=False)
        if token:
            self._token_authenticated = True  # no XSRF check for header tokens
        else:
            token = auth.get_token(self)  # the cookie set at /oauth_callback
            if not token:
                return None
            try:
                self.check_xsrf_cookie()
            except web.HTTPError:
                raise web.HTTPError(
                    403, "XSRF check failed: send the _xsrf cookie's value in an X-XSRFToken header"
                ) from None
        return await auth.user_for_token(token, use_cache=self.token_cache_seconds > 0,
                                         session_id=auth.get_session_id(self), sync=False)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        try:
            return super().decode_argument(value, name)
        except web.HTTPError:  # tornado's message would echo the bytes
            raise web.HTTPError(400, "The URL is not valid UTF-8") from None

    def _is_browser_navigation(self) -> bool:
        return (self.request.method == "GET"
                and self.request.headers.get("Sec-Fetch-Mode") == "navigate"
                and bool(self.hub_auth.login_url))

    async def principal(self) -> Principal:
        model = self.current_user
        groups = await self.directory.groups(model["name"])
        return Principal.from_scopes(model["name"], groups, list(model.get("scopes", [])))

    def json_body(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The JSON object sent; given `fields`, with only those in it (an unknown field is a
        400: mass assignment of status, user, ...)."""
        body = self._json_object()
        if fields is not None:
            no_unknown(body, set(fields))
        return body

    def _json_object(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_JSON_BODY:
            raise web.HTTPError(413, f"Request body larger than {MAX_JSON_BODY} bytes")
        if not self.request.body.strip():
            return {}
        try:
            body = json.loads(self.request.body.decode("utf-8"), object_pairs_hook=_unique_fields)
            # a lone surrogate ("\ud800") parses but is not text and cannot be stored
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except _RepeatedField:
            raise BadRequest("The request body repeats a field") from None
        except (UnicodeError, ValueError, RecursionError):
            raise BadRequest("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        return body

    def arg(self, name: str, default: str = "", max_len: int = 1000) -> str:
        value = self.get_query_argument(name, default)
        if len(value) > max_len:
            raise BadRequest(f"{name} is too long")
        return value

    def paging(self, default: int = 50) -> tuple[int, int]:
        """`limit` and `offset` as numbers (as JupyterHub's get_api_pagination): limit capped
        at 200 by governance; not whole numbers, or negative: a 400."""
        return parse_paging(self.arg("limit"), self.arg("offset"), default)

    def flag(self, name: str) -> bool | None:
        """A true/false query argument (true, 1, false, 0; absent: None)."""
        value = self.arg(name)
        if value in ("", None):
            return None
        if value not in ("true", "1", "false", "0"):
            raise BadRequest(f"{name} must be true or false")
        return value in ("true", "1")

    def time_arg(self, name: str) -> datetime | None:
        value = self.arg(name)
        try:
            return parse_iso(value) if value else None
        except ValueError:
            raise BadRequest(f"{name} must be an ISO 8601 time") from None

    def read_args(self) -> dict[str, Any]:
        """`columns`, `where`, `limit` and `version` of a read, as typed values."""
        limit = self.arg("limit")
        if limit and not (limit.isascii() and limit.isdigit() and len(limit) <= 12):
            raise BadRequest("limit must be a whole number")
        return {"columns": _columns_arg(self.arg("columns")),
                "where": self.arg("where", max_len=MAX_FILTER_LENGTH) or None,
                "limit": int(limit) if limit else None,
                "version": self.arg("version", max_len=200) or None}

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._run(fn, *args, **kwargs)

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, CatalogMismatch):  # any path that serves data: the operator must know
            self.log.error("Refused to serve %s: %s", e.dataset, e)
        if isinstance(e, GovernanceError):
            if isinstance(e, SourceUnavailable) and e.__cause__ is not None:
                self.log.warning("Cannot open %s: %s",
                                 self.path_args[0] if self.path_args else self.request.path,
                                 e.__cause__)
            if self._finished:
                return
            message = e.message
            if isinstance(e, NoGrant):  # what to do about it: the panel's wording
                message = f"{message} {how_to_ask(e.dataset)}"
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps(dict(e.extra, status=e.status, message=message)))
            return
        if isinstance(e, (DBAPIError, PoolTimeout)):  # down, locked, read-only: a clean 503
            self.log.warning("Database unavailable on %s %s: %s", self.request.method,
                             self.request.path, type(getattr(e, "orig", None) or e).__name__)
            try:
                raise web.HTTPError(503, "The data access database is not available right now; "
                                         "try again shortly") from None
            except web.HTTPError as unavailable:
                super()._handle_request_exception(unavailable)
            return
        super()._handle_request_exception(e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 429 and getattr(self, "_retry_after", None):
            self.set_header("Retry-After", self._retry_after)
        _json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1])

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (web.HTTPError, GovernanceError)):
            return
        self.log.error("Uncaught error on %s %s", self.request.method, self.request.path,
                       exc_info=(typ, value, tb))


def no_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    """Refuse fields we do not take (mass assignment: status, user, ...)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        # named, but never echoed at length: a field name is the caller's input
        shown = [n if len(n) <= 40 else n[:40] + "..." for n in map(str, unknown[:5])]
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise BadRequest(f"unknown field(s): {', '.join(shown)}{more}")


def parse_paging(limit: str, offset: str, default: int = 50) -> tuple[int, int]:
    """Whole, non-negative `limit` and `offset` from query text ("" takes the default)."""
    try:
        lim = default if limit in (None, "") else int(limit)
        off = 0 if offset in (None, "") else int(offset)
    except (TypeError, ValueError):
        raise BadRequest("limit and offset must be whole numbers") from None
    if lim < 0 or off < 0:
        raise BadRequest("limit and offset must not be negative")
    return lim, off


class _RepeatedField(ValueError):
    pass


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose fields are all distinct: `{"dataset": "a", "dataset": "b"}` is refused,
    since parsers disagree on which one counts."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _RepeatedField()
    return out


def _json_error(handler: web.RequestHandler, status_code: int, exc: BaseException | None) -> None:
    message = handler._reason
    if isinstance(exc, web.HTTPError) and exc.log_message:
        message = exc.log_message % exc.args if exc.args else exc.log_message
    elif status_code >= 500:
        message = "Internal error in the data access service; the details are in its log"
    handler.set_header("Content-Type", "application/json; charset=utf-8")
    handler.finish(json.dumps({"status": status_code, "message": message}))


class HealthHandler(BaseHandler):
    public = True
    needs = ("config_state", "config_files")

    def get(self) -> None:
        cfg = self.config_state()
        error = cfg.error
        for path in filter(None, self.config_files):
            if error:  # anyone may ask: the file's name, not where it lives (the log has that)
                error = error.replace(path, os.path.basename(path))
        self.send({"status": "ok" if not cfg.error else "degraded",
                   "datasets": len(cfg.config.catalog.datasets), "config_error": error,
                   "config_loaded_at": cfg.loaded_at})


class MeHandler(BaseHandler):
    """Who I am; any credential may read it (the server's token included: the panel learns from
    it whether to offer the Approvals and Admin pages, which then need the person's login)."""

    async def get(self) -> None:
        out = await self.run(self.governance.me, await self.principal())
        prefix = self.settings["prefix"]
        out["pages"] = {name: f"{prefix}pages/{name}" for name in PAGES}
        self.send(out)


class InboxHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        limit, offset = self.paging()
        self.send(await self.run(self.governance.inbox, who, limit=limit,
                                 offset=offset))


class DatasetsHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        limit, offset = self.paging()
        self.send(await self.run(
            self.governance.list_datasets, who, q=self.arg("q"), tag=self.arg("tag"),
            classification=self.arg("classification"), status=self.arg("status"),
            limit=limit, offset=offset))


class DatasetHandler(BaseHandler):
    needs = ("details",)

    async def get(self, dataset_id: str) -> None:
        who = await self.principal()
        gov = self.governance
        ds, access = await self.run(gov.dataset_for, who, dataset_id)
        out = dict(ds.public_dict(), access=access,
                   request_policy=await self.run(gov.request_preview, who, ds))
        try:
            info = await self.details.get(ds, dataset_info)
            out.update(columns=info.columns, rows=info.rows, updated_at=info.updated_at,
                       version=info.version)
        except SourceError as e:
            self.log.warning("Cannot read schema of %s: %s", ds.id, e)
            out.update(columns=[], rows=None, updated_at=None, version=None,
                       source_error=SourceUnavailable.because(e.reason).message)
        except CatalogMismatch as e:
            out.update(columns=[], rows=None, updated_at=None, source_error=str(e))
        self.send(out)


def _columns_arg(value: str) -> list[str] | None:
    if not value:
        return None
    cols = [c.strip() for c in value.split(",") if c.strip()]
    if len(cols) > 2000:
        raise BadRequest("too many columns")
    return cols


class PreviewHandler(BaseHandler):
    needs = ("keys", "metrics")

    async def get(self, dataset_id: str) -> None:
        who = await self.principal()
        args = self.read_args()
        args["limit"] = min(PREVIEW_DEFAULT if args["limit"] is None else args["limit"],
                            PREVIEW_MAX)
        plan = await self.run(self.governance.plan_read, who, dataset_id,
                              "data.preview", **args)
        rows = await self.run(self._preview, plan)
        self.metrics.served(self.metrics.route(self), rows=len(rows["rows"]))
        self.send(rows)

    def _preview(self, plan: ReadPlan) -> dict[str, Any]:
        with read_errors():
            table = pa.Table.from_batches(list(execute(plan, self.keys.mask)),
                                          schema=plan.schema)
        return {
            **plan.provenance(),
            "columns": described_columns(plan.dataset, plan.schema),
            "rows": json.loads(json.dumps([list(r.values()) for r in table.to_pylist()],
                                          default=str)),
        }


class DataHandler(BaseHandler):
    """Streams what `Governance.plan_read` decided. Everything that can fail before data flows
    fails there, as a JSON error; the first chunk is produced before the headers go out, so a
    source that fails at once is a clean 502 too. Each stream holds a slot of the stream slots
    (429 past the caps) until it ends."""

    needs = ("keys", "metrics", "streams")

    async def get(self, dataset_id: str) -> None:
        who = await self.principal()
        with self.streams.slot(who.name):
            await self._stream(who, dataset_id)

    async def _stream(self, who: Principal, dataset_id: str) -> None:
        fmt = self.arg("format")
        if fmt and fmt not in FORMATS:
            raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
        accept = FORMATS["parquet"] in self.request.headers.get("Accept", "")
        plan = await self.run(self.governance.plan_read, who, dataset_id, "data.read",
                              format=fmt or None, accept_parquet=accept, **self.read_args())
        self._provenance_headers(plan.version, plan.audit_seq)
        if plan.format == "parquet" and plan.whole_file:
            with read_errors():
                file = await self.run(WholeFile.at, plan.whole_file)
            await self._send_file(plan.dataset.id, file)
            return
        await self._send_batches(plan.dataset.id, plan.schema,
                                 execute(plan, self.keys.mask), plan.format)

    async def _send_batches(self, dataset: str, schema: pa.Schema, batches: Any, fmt: str
                            ) -> None:
        """The first chunk is made before the headers go out: a source failing at once is a
        clean 502."""
        metrics, route = self.metrics, self.metrics.route(self)
        framed = self.request.version == "HTTP/1.1"  # chunk frames written by streams.send
        chunks = encode(schema, metrics.counting_rows(route, batches), fmt, views=framed)
        try:
            with read_errors():
                first = await self.run(self._next, chunks)
            self._file_headers(dataset, fmt)
            if framed:  # the headers (tornado then ends the chunked body at finish)
                await self.flush()
            while first is not None:
                await self.streams.send(self, first, framed=framed)
                metrics.served(route, len(first))
                first = await self.run(self._next, chunks)
        except StreamClosedError:
            return
        except SourceError as e:
            self.log.warning("Read of %s failed mid-stream: %s", dataset, e)
            self.request.connection.close()  # a truncated stream must not look complete
            return
        finally:
            chunks.close()  # stops the encoder thread at once, however the stream ended
        self.finish()

    def _provenance_headers(self, version: str | None, audit_seq: int | None) -> None:
        """Which version was read and the audit record saying so, for the client to attach to
        what it returns (da.load: df.attrs["dataaccess"])."""
        if version is not None:
            self.set_header("X-Dataaccess-Version", version)
        if audit_seq is not None:
            self.set_header("X-Dataaccess-Audit-Seq", str(audit_seq))

    def _file_headers(self, dataset: str, fmt: str) -> None:
        self.set_header("Content-Type", FORMATS[fmt])
        ext = {"arrow": "arrows", "parquet": "parquet", "csv": "csv"}[fmt]
        self.set_header("Content-Disposition", f'attachment; filename="{dataset}.{ext}"')

    async def _send_file(self, dataset: str, file: WholeFile) -> None:
        """The Parquet file as it is, with its length (no chunked framing)."""
        with self._open(file) as f:
            size = os.fstat(f.fileno()).st_size
            self._file_headers(dataset, "parquet")
            self.set_header("Content-Length", str(size))
            metrics, route = self.metrics, self.metrics.route(self)
            metrics.served(route, rows=file.rows)
            try:
                await self._send_spans(f, [(0, size)], route)
            except StreamClosedError:
                return
        self.finish()

    @staticmethod
    def _open(what: WholeFile | ParquetRanges) -> Any:
        """The file to send, open: the very file planned (its footer read then), else a 503
        and nothing sent."""
        try:
            return what.open()
        except PartitionChanged as e:
            raise SourceChanged() from e
        except OSError as e:
            raise SourceUnavailable() from e

    async def _send_spans(self, f: Any, spans: list[tuple[int, int]], route: str,
                          framed: bool = False) -> None:
        """The byte `spans` ((offset, length), in order) of file `f` as the rest of the body
        (`framed`: as one chunk of a chunked body, whose headers went out): by sendfile where
        the connection allows, else read and written 4 MB at a time. StreamClosedError when
        the client left."""
        total = sum(n for _, n in spans)
        if framed and total:
            await self.request.connection.stream.write(b"%x\r\n" % total)
        if await self.streams.send_file(self, f, total, spans):
            self.metrics.served(route, total)
        else:
            for offset, length in spans:
                for at in range(offset, offset + length, PIECE):
                    chunk = await self.run(os.pread, f.fileno(),
                                           min(PIECE, offset + length - at), at)
                    await self.streams.send(self, chunk, raw=framed)
                    self.metrics.served(route, len(chunk))
        if framed and total:
            await self.streams.send(self, b"\r\n", raw=True)

    async def _send_bytes(self, data: Any, route: str, framed: bool = False) -> None:
        """`data` (bytes in memory) as the rest of the body, PIECE bytes at a time (`framed`:
        as chunks of a chunked body, whose headers went out). StreamClosedError when the
        client left."""
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            chunk = view[start:start + PIECE]
            await self.streams.send(self, chunk if framed else bytes(chunk), framed=framed)
            self.metrics.served(route, len(chunk))

    async def _send_ranges(self, part: ParquetRanges, head: dict[str, Any],
                           tail: bytes | None = None,
                           masked: Callable[[], bytes] | None = None) -> None:
        """Byte ranges of a Parquet file as they are (sendfile), after a header saying what
        they are (tickets.ranges_prefix); with a `tail` (a hybrid: tickets._hybrid), the ranges
        of the column chunks alone, the tail (a replacement footer), then the `masked` columns,
        computed in a thread while the ranges go out (HTTP/1.1: a chunked body; else first,
        for the Content-Length). Masked columns that fail once the headers are out cut the
        body short: a truncated body never looks complete."""
        prefix = tickets.ranges_prefix(head)
        spans = part.ranges if tail is None else part.chunks
        metrics, route = self.metrics, self.metrics.route(self)
        with self._open(part) as f:
            pending = asyncio.ensure_future(self.run(masked)) if masked else None
            try:
                chunked = pending is not None and self.request.version == "HTTP/1.1"
                late = b"" if pending is None or chunked else await self._masked(pending)
                self.set_header("Content-Type",
                                PARQUET_RANGES if tail is None else PARQUET_HYBRID)
                if not chunked:
                    self.set_header("Content-Length", str(len(prefix) + sum(
                        n for _, n in spans) + len(tail or b"") + len(late)))
                metrics.served(route, rows=part.rows)
                self.write(prefix)
                metrics.served(route, len(prefix))
                if chunked:
                    await self.flush()  # the headers and the header, as the first chunk
                await self._send_spans(f, spans, route, framed=chunked)
                if chunked:
                    await self._send_bytes(tail, route, framed=True)
                    try:
                        late = await self._masked(pending)
                    except (SourceUnavailable, SourceChanged) as e:
                        self.log.warning("Masked columns of a hybrid read failed mid-stream: "
                                         "%s", e.__cause__ or e)
                        self.request.connection.close()
                        return
                await self._send_bytes(b"" if chunked else tail or b"", route)
                await self._send_bytes(late, route, framed=chunked)
            except StreamClosedError:
                return
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()  # (the thread finishes; its result is dropped)
                elif pending is not None and not pending.cancelled():
                    pending.exception()  # (seen: a failure was answered or logged above)
        self.finish()

    @staticmethod
    async def _masked(pending: Any) -> bytes:
        """The masked columns of a hybrid, once computed; a 503 (SourceChanged: the file is
        not the one planned) or a 502 when they cannot be."""
        try:
            return await pending
        except PartitionChanged as e:
            raise SourceChanged() from e
        except (SourceError, OSError, pa.ArrowException) as e:
            raise SourceUnavailable() from e

    def _next(self, chunks: Any) -> bytes | None:
        try:
            return next(chunks)
        except StopIteration:
            return None
        except SourceError:
            raise
        except (OSError, pa.ArrowException) as e:
            raise SourceError(str(e)) from e


class ScanHandler(DataHandler):
    """A scan plan: the governed read split into partitions, a ticket for each (tickets.py).
    A caller whose Accept names Parquet gets a plan of one whole file with nothing to govern as
    that file instead (the fetch of its ticket, audited as one), when a stream slot is free."""

    SUPPORTED_METHODS = ("POST",)  # (it reuses DataHandler's file sending, not its GET)
    needs = (*DataHandler.needs, "ticket_seconds", "scan_partition_mb")

    async def post(self, dataset_id: str) -> None:
        who = await self.principal()
        req = tickets.ScanRequest.from_body(self.json_body())
        base = (f"{self.request.protocol}://{self.request.host}{self.settings['prefix']}"
                "api/v1/tickets/")
        with contextlib.ExitStack() as held:
            accept = self.request.headers.get("Accept", "")
            file_ok, ranges_ok = FORMATS["parquet"] in accept, PARQUET_RANGES in accept
            hybrid_ok = PARQUET_HYBRID in accept
            if file_ok or ranges_ok or hybrid_ok:
                try:
                    held.enter_context(self.streams.slot(who.name))
                except TooManyStreams:  # the plan, then, whose tickets wait for a slot
                    file_ok = ranges_ok = hybrid_ok = False
            out = await self.run(
                tickets.plan_scan, self.governance, who, dataset_id, req,
                ticket_key=self.keys.ticket, ttl=self.ticket_seconds,
                target_bytes=int(self.scan_partition_mb * (1 << 20)), url_for=base.__add__,
                file_ok=file_ok, ranges_ok=ranges_ok, hybrid_ok=hybrid_ok,
                mask_key=self.keys.mask,
                dictionaries=self.request.headers.get(DICTIONARIES_HEADER, "") == "accept")
            if isinstance(out, tickets.PlannedFile):
                self._provenance_headers(out.version, out.audit_seq)
                if out.ranges:
                    await self._send_ranges(out.ranges, out.head, out.tail, out.masked)
                else:
                    await self._send_file(out.dataset, out.file)
                return
        self.send(out)


class TicketHandler(DataHandler):
    """One partition of a scan plan for whoever holds its ticket, which is the only credential:
    `Authorization: ticket <ticket>`. The URL holds the ticket's id, never the ticket."""

    async def prepare(self) -> None:
        if self.request.method != "GET":
            raise web.HTTPError(405)
        if "token" in self.request.query_arguments:
            raise web.HTTPError(400, "Tokens in URLs are refused; send an Authorization header")

    async def get(self, ticket_id: str) -> None:
        claims = tickets.verify(self.keys.ticket, ticket_id,
                                self.request.headers.get("Authorization", ""), time.time())
        try:
            await self.limiter.check(self, claims.user)
        except web.HTTPError:
            self._retry_after = self._headers.get("Retry-After")
            raise
        accept = self.request.headers.get("Accept", "")
        # a client that turns dictionaries back into the plan's types takes hashed text as one
        dictionaries = self.request.headers.get(DICTIONARIES_HEADER, "") == "accept"
        with self.streams.slot(claims.user):  # the same per-user cap as every stream
            part = await self.run(tickets.open_partition, self.governance, claims,
                                  self.keys.mask, FORMATS["parquet"] in accept, dictionaries,
                                  PARQUET_RANGES in accept, PARQUET_HYBRID in accept)
            if part.file:
                await self._send_file(claims.dataset, part.file)
            elif part.ranges:
                await self._send_ranges(part.ranges, part.head, part.tail, part.masked)
            else:
                await self._send_batches(claims.dataset, part.schema, part.batches, "arrow")


class QueryHandler(DataHandler):
    """POST /query {sql, format}: one checked SELECT over governed relations (query/), its
    answer produced whole, within bounds, and audited before the first byte is sent."""

    SUPPORTED_METHODS = ("POST",)  # (it reuses DataHandler's streaming, not its GET)
    needs = (*DataHandler.needs, "queries", "query_timings")

    async def post(self) -> None:
        from ..query.run import run_query

        who = await self.principal()
        authenticated = self.request.request_time()  # the token check, rate limit, groups
        body = self.json_body()
        unknown = sorted(set(body) - {"sql", "format"})
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
        fmt = body.get("format") or "arrow"
        if fmt not in FORMATS:
            raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
        started = time.monotonic()
        try:
            answer = await self.run(run_query, self.governance, self.queries,
                                    who, body.get("sql"), self.keys.mask)
        except GovernanceError as e:
            self.metrics.observe_query(time.monotonic() - started,
                                               outcome="refused" if e.status < 500 else "error")
            raise
        self.metrics.observe_query(time.monotonic() - started)
        if self.query_timings:  # where the time went, for benchmarks (a setting: off)
            self.set_header("Server-Timing", ", ".join(
                f"{stage};dur={seconds * 1000:.1f}"
                for stage, seconds in {"auth": authenticated, **answer.timings,
                                       "total": self.request.request_time()}.items()))
        self._provenance_headers(None, answer.audit_seq)
        self.set_header("X-Dataaccess-Datasets", json.dumps(answer.datasets))
        if fmt != "arrow":
            await self._send_batches("query", answer.table.schema,
                                     iter(answer.table.to_batches()), fmt)
            return
        # the worker's Arrow stream goes out as it is (made whole within bounds already)
        self._file_headers("query", "arrow")
        self.set_header("Content-Length", str(len(answer.arrow)))
        route = self.metrics.route(self)
        self.metrics.served(route, rows=answer.table.num_rows)
        try:
            await self._send_bytes(answer.arrow, route)
        except StreamClosedError:
            return
        self.finish()


class RequestsHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        limit, offset = self.paging()
        self.send(await self.run(
            self.governance.list_requests, who, scope=self.arg("scope", "mine"),
            status=self.arg("status"), dataset=self.arg("dataset"), limit=limit, offset=offset))

    async def post(self) -> None:
        who = await self.principal()
        body = self.json_body(("dataset", "justification", "days"))
        req = await self.run(self.governance.create_request, who, body.get("dataset"),
                             body.get("justification"), body.get("days"))
        self.send(req, 201)


class RequestHandler(BaseHandler):
    async def get(self, request_id: str) -> None:
        who = await self.principal()
        self.send(await self.run(self.governance.get_request, who,
                                 parse_id(request_id, "request")))


class RequestActionHandler(BaseHandler):
    async def post(self, request_id: str, action: str) -> None:
        rid = parse_id(request_id, "request")
        who = await self.principal()
        gov = self.governance
        if action == "withdraw":
            if self.json_body():
                raise BadRequest("withdraw takes no body")
            req = await self.run(gov.withdraw, who, rid)
        elif action == "renew":
            body = self.json_body(("justification", "days"))
            req = await self.run(gov.renew, who, rid, body.get("justification"),
                                 body.get("days"))
            self.send(req, 201)
            return
        else:
            body = self.json_body(("comment",))
            req = await self.run(gov.decide, who, rid,
                                 "approve" if action == "approve" else "deny", body.get("comment"))
        self.send(req)


class GrantsHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        limit, offset = self.paging()
        self.send(await self.run(
            self.governance.list_grants, who, user=self.arg("user"),
            dataset=self.arg("dataset"), active=self.flag("active"), limit=limit, offset=offset,
            sort=self.arg("sort")))


class GrantHandler(BaseHandler):
    async def delete(self, grant_id: str) -> None:
        who = await self.principal()
        grant = await self.run(self.governance.revoke, who, parse_id(grant_id, "grant"))
        self.send(grant)


class NotificationsHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        since = self.arg("since")
        if since and not (since.isascii() and since.isdigit()):
            raise BadRequest("since must be an audit sequence number")
        limit, _ = self.paging()
        out = await self.run(self.governance.notifications, who, since=int(since or 0),
                             limit=limit)
        for n in out["items"]:
            n["message"] = notification(n["action"], n["actor"], n["user"], n["dataset"])
        self.send(out)


class AuditHandler(BaseHandler):
    async def get(self) -> None:
        who = await self.principal()
        limit, offset = self.paging(default=100)
        self.send(await self.run(
            self.governance.audit_records, who, user=self.arg("user"),
            dataset=self.arg("dataset"), action=self.arg("action"), since=self.time_arg("since"),
            limit=limit, offset=offset, sort=self.arg("sort")))


class PoliciesHandler(BaseHandler):
    async def get(self) -> None:
        self.send(self.governance.policy(await self.principal()))


class SpawnHandler(BaseHandler):
    """What a user's server gets at spawn: their active grants and read-only mounts.

    The hub's alone: its pre_spawn_hook asks as the `dataaccess-spawn` service (a token only the
    hub holds, with the custom:dataaccess:spawn scope), naming the user. A user's token — their
    server's included — is refused before anything is read or audited.
    """

    callers = ("service",)
    wrong_caller = "GET /spawn answers the hub's spawn hook only"

    async def get(self) -> None:
        if SPAWN_SCOPE not in self.current_user.get("scopes", []):
            raise web.HTTPError(403, self.wrong_caller)
        user = self.arg("user")
        if not user:
            raise BadRequest("user is required: the user whose server is starting")
        self.send(await self.run(self.governance.spawn_plan, user,
                                 f"hub:{self.current_user['name']}"))


class MetricsHandler(BaseHandler):
    """Prometheus metrics, for a token (a scraper service's, typically) with the metrics scope."""

    callers = ("user", "service")
    needs = ("metrics",)

    async def get(self) -> None:
        if METRICS_SCOPE not in self.current_user.get("scopes", []):
            raise web.HTTPError(403, f"Metrics need the {METRICS_SCOPE} scope")
        body = await self.run(self.metrics.exposition)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)


class PageHandler(BaseHandler):
    """The approvals inbox and the admin workspace: the service's own pages, for the person
    logged in to the service (a server's token cannot open them). Their script talks to the
    API with the same login cookie and the page's XSRF token."""

    needs = ("frame_ancestors",)

    async def get(self, name: str) -> None:
        self.governance.require(await self.principal(), PAGES[name])
        who = self.current_user
        theme = self.arg("theme", "light")
        if theme not in ("light", "dark"):
            raise BadRequest("theme must be light or dark")
        nonce = base64.b64encode(os.urandom(18)).decode()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", "; ".join([
            "default-src 'none'", f"script-src 'nonce-{nonce}'", f"style-src 'nonce-{nonce}'",
            "connect-src 'self'", "img-src 'self' data:", "base-uri 'none'", "form-action 'none'",
            " ".join(["frame-ancestors 'self'", *self.frame_ancestors])]))
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(render_page(name, theme=theme, nonce=nonce, user=who["name"],
                                api=self.settings["prefix"] + "api/v1",
                                xsrf=self.xsrf_token.decode()))


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        raise web.HTTPError(404, "Not found")


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The end of the OAuth login; it redirects only to the URL kept in its own state."""

    @property
    def hub_auth(self) -> Any:
        return self.settings["hub_auth"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        _json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1])


ID = r"([^/]{1,200})"


def routes(prefix: str) -> list[tuple]:
    api = prefix + "api/v1"
    return [
        (api + r"/health", HealthHandler),
        (api + r"/me", MeHandler),
        (api + r"/inbox", InboxHandler),
        (api + r"/datasets", DatasetsHandler),
        (api + rf"/datasets/{ID}", DatasetHandler),
        (api + rf"/datasets/{ID}/preview", PreviewHandler),
        (api + rf"/datasets/{ID}/data", DataHandler),
        (api + rf"/datasets/{ID}/scan", ScanHandler),
        (api + rf"/tickets/{ID}", TicketHandler),
        (api + r"/query", QueryHandler),
        (api + r"/requests", RequestsHandler),
        (api + rf"/requests/{ID}", RequestHandler),
        (api + rf"/requests/{ID}/(approve|deny|withdraw|renew)", RequestActionHandler),
        (api + r"/grants", GrantsHandler),
        (api + rf"/grants/{ID}", GrantHandler),
        (api + r"/audit", AuditHandler),
        (api + r"/notifications", NotificationsHandler),
        (api + r"/policies", PoliciesHandler),
        (api + r"/spawn", SpawnHandler),
        (api + r"/metrics", MetricsHandler),
        (prefix + r"pages/(approvals|admin)", PageHandler),
        (prefix + r"oauth_callback", OAuthCallbackHandler),
        (re.escape(prefix) + r".*", NotFoundHandler),
    ]
