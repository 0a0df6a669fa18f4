"""The dataaccess service: a hub-managed JupyterHub service, the only place that decides access.

A small traitlets Application wires configuration, the database, the Hub's authentication and the
tornado routes; the decisions themselves are in governance.py and policy.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from tornado import httpclient, ioloop, web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import Application
from traitlets.config import Config as TraitletsConfig

from .. import __version__, audit
from ..config_files import CatalogError, load_catalog, load_policy, missing_env
from ..events import BATCH, AuditDelivery
from ..governance import Config, Governance
from ..keys import DEFAULT_KEY_DIR, ENV, KEY_DIR_ENV, KeyConfigError, key_id, load_keys
from ..store import Database, SchemaError, Setting
from ..times import iso, utcnow
from .details import DetailsCache
from .handlers import Parts, routes
from .metrics import Metrics
from .streams import StreamSlots

SETTINGS_ENV = "DATAACCESS_SETTINGS"  # configure_hub(settings=...), as JSON


@dataclass
class ConfigState:
    config: Config
    error: str | None = None
    loaded_at: str | None = None
    mtimes: tuple = ()


class HubDirectory:
    """Users' hub groups, asked of the Hub with the service's own token, cached briefly."""

    def __init__(self, api_url: str, token: str, max_age: float, log: Any):
        self.api_url, self.token, self.max_age, self.log = api_url.rstrip("/"), token, max_age, log
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def groups(self, name: str) -> list[str]:
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit and now - hit[0] < self.max_age:
            return hit[1]
        client = httpclient.AsyncHTTPClient()
        from urllib.parse import quote

        try:
            resp = await client.fetch(
                f"{self.api_url}/users/{quote(name, safe='')}",
                headers={"Authorization": f"token {self.token}"}, request_timeout=10,
            )
            groups = sorted(json.loads(resp.body).get("groups") or [])
        except httpclient.HTTPClientError as e:
            if e.code == 404:
                groups = []
            else:
                self.log.warning("Hub did not answer a group look-up for %s: %s", name, e.code)
                raise web.HTTPError(503, "The Hub did not answer; try again shortly") from None
        except OSError:
            raise web.HTTPError(503, "The Hub did not answer; try again shortly") from None
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[name] = (now, groups)
        return groups


class RateLimiter:
    """Per-user token bucket: `rate` requests a second, bursts up to `burst`; 429 past it."""

    def __init__(self, rate: float, burst: int, on_refuse: Any = None):
        self.rate, self.burst, self.on_refuse = rate, burst, on_refuse
        self._buckets: dict[str, tuple[float, float]] = {}

    async def check(self, handler: Any, user: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(user, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            handler.set_header("Retry-After", str(max(1, int((1 - tokens) / self.rate))))
            if self.on_refuse:
                self.on_refuse()
            raise web.HTTPError(429, "Too many requests; slow down and retry shortly")
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[user] = (tokens - 1, now)


def _env(name: str, default: Any) -> Any:
    """`DATAACCESS_<name>` from the environment, as the type of `default` (a flag: 1, true or
    yes), else `default`: the variables configure_hub sets and the guides name, kept beside its
    `settings` and config files."""
    value = os.environ.get(f"DATAACCESS_{name}")
    if value is None:
        return default
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes")
    return type(default)(value)


class DataAccessService(Application):
    name = "jupyterhub-dataaccess-service"
    description = "The jupyterhub-dataaccess service: catalogue, policy, grants, audit, data."
    version = __version__

    catalog = Unicode(
        _env("CATALOG", ""), help="Path of the catalogue YAML file."
    ).tag(config=True)
    policy = Unicode(
        _env("POLICY", ""), help="Path of the policy YAML file."
    ).tag(config=True)
    db_url = Unicode(
        _env("DB_URL", "sqlite:///dataaccess.sqlite"),
        help="SQLAlchemy URL of the service's database (SQLite or PostgreSQL).",
    ).tag(config=True)
    service_url = Unicode(
        os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"),
        help="URL the service listens on (set by JupyterHub for managed services).",
    ).tag(config=True)
    service_prefix = Unicode(
        os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dataaccess/"),
        help="URL prefix of the service (set by JupyterHub).",
    ).tag(config=True)
    group_cache_seconds = Float(
        30.0, help="How long a user's hub groups are trusted before asking the Hub again."
    ).tag(config=True)
    reload_interval = Float(
        2.0, help="Seconds between checks of the catalogue and policy files for changes."
    ).tag(config=True)
    expire_interval = Float(
        _env("EXPIRE_INTERVAL", 30.0),
        help="Seconds between sweeps that record grant.expire for expired grants (reads check "
             "expires_at themselves; this only bounds when the expiry appears in the audit).",
    ).tag(config=True)
    db_busy_timeout = Float(
        _env("DB_BUSY_TIMEOUT", 30.0),
        help="SQLite: seconds a write waits for the database lock before the request is "
             "answered 503 (ignored on PostgreSQL).",
    ).tag(config=True)
    upgrade_db = Bool(
        _env("UPGRADE_DB", False),
        help="Upgrade an existing database's schema at start (under a database lock) instead of "
             "refusing to start until `jupyterhub-dataaccess db upgrade` is run. For "
             "single-replica installs and the demo; an empty database always gets the schema.",
    ).tag(config=True)
    threads = Integer(8, help="Worker threads for database and data work.").tag(config=True)
    rate_limit = Float(
        _env("RATE_LIMIT", 50.0),
        help="Requests per second allowed per user (0 disables the limit).",
    ).tag(config=True)
    rate_burst = Integer(
        _env("RATE_BURST", 200), help="Burst of requests allowed per user."
    ).tag(config=True)
    details_cache_seconds = Float(
        0.0,
        help="Seconds a dataset's details (schema, row count, version) are reused for everyone "
             "who opens its page. Files, Iceberg and Delta tables are cached per version anyway; "
             "this spares a SQL source its count query, at the cost of a count that much old.",
    ).tag(config=True)
    details_concurrency = Integer(
        2,
        help="Dataset details computed at once (each on a worker thread); more wait their turn, "
             "so browsing never takes all the threads reads and decisions need.",
    ).tag(config=True)
    max_streams_per_user = Integer(
        _env("MAX_STREAMS_PER_USER", 4),
        help="Data streams one user may have open at once (reads, queries, partitions); the "
             "next is answered 429. 0: no cap.",
    ).tag(config=True)
    max_streams = Integer(
        _env("MAX_STREAMS", 32),
        help="Data streams open at once in this process, all users together; each holds at most "
             "a few encoded chunks and one encoder thread, so this bounds memory and threads. "
             "0: no cap.",
    ).tag(config=True)
    stream_write_timeout = Float(
        _env("STREAM_WRITE_TIMEOUT", 60.0),
        help="Seconds a client may leave a chunk of a data stream unread before the service "
             "closes the connection and frees the stream's slot. 0: wait for ever.",
    ).tag(config=True)
    token_cache_seconds = Float(
        _env("TOKEN_CACHE_SECONDS", 5.0),
        help="Seconds the Hub's answer about a token is reused: a token the Hub deleted or "
        "expired, or whose user it deleted, is refused within this bound (grants are checked "
        "in the database on every request regardless). The default, 5, saves the Hub round "
        "trip on all but one request in five seconds per token; 0 asks the Hub every time. "
        "Whole seconds (a fraction rounds up).",
    ).tag(config=True)
    key_dir = Unicode(
        os.environ.get(KEY_DIR_ENV, DEFAULT_KEY_DIR),
        help="Directory of the key files generated for a single node (mode 0600) when a key is "
             "not given in the environment; see jupyterhub_dataaccess/keys.py and the operator "
             "guide. Several replicas must share their keys.",
    ).tag(config=True)
    audit_anchor_interval = Float(
        _env("AUDIT_ANCHOR_INTERVAL", 60.0),
        help="Seconds between publications of the audit head (an anchor) outside the database: "
             "a log line, the audit_anchor_file and the webhook. A truncation of the log after "
             "the last anchor goes unseen for at most this long. SIGUSR1 publishes one at once.",
    ).tag(config=True)
    audit_anchor_file = Unicode(
        _env("AUDIT_ANCHOR_FILE", ""),
        help="If set, each anchor is also appended to this file (one JSON line; keep it on "
             "append-only or remote storage): `jupyterhub-dataaccess audit verify --anchors`.",
    ).tag(config=True)
    frame_ancestors = List(
        Unicode(),
        help="Origins, besides the service's own, allowed to show its review and admin pages in "
             "a frame: with JupyterHub's subdomains, the origin(s) of users' JupyterLab "
             "(e.g. https://*.hub.example.org). Nothing else may frame them.",
    ).tag(config=True)
    ticket_seconds = Float(
        900.0,
        help="How long the tickets of a scan plan (POST /datasets/{id}/scan) stay valid. Each "
             "fetch also checks the grant, so a revocation bites sooner.",
    ).tag(config=True)
    query_timeout_seconds = Float(
        30.0, help="POST /query: a query still running after this long is stopped (its worker "
                   "process killed) and answered with a clear error.",
    ).tag(config=True)
    query_memory_mb = Integer(
        1024, help="POST /query: DuckDB's memory limit per query (MB); its worker process's "
                   "address space is capped at 4x this plus 2.5 GB (0.5 GB for the databases of "
                   "its last four setups it keeps), and it may spill twice this to a private "
                   "temporary directory.",
    ).tag(config=True)
    query_max_rows = Integer(
        1_000_000, help="POST /query: a result with more rows is refused (aggregate, or add a "
                        "LIMIT); it is produced whole before the first byte is sent.",
    ).tag(config=True)
    query_max_bytes = Integer(
        256 << 20, help="POST /query: a result larger than this (bytes, in Arrow) is refused.",
    ).tag(config=True)
    query_workers = Integer(
        2, help="POST /query: DuckDB worker processes kept warm; also how many queries run at "
                "once in this replica (more wait, then 429).",
    ).tag(config=True)
    query_per_user = Integer(
        1, help="POST /query: queries one user may run at once (429 past it).",
    ).tag(config=True)
    query_timings = Bool(
        False, help="POST /query answers with a Server-Timing header (where the service's time "
                    "went, per stage: for benchmarks and tuning). Off by default: the engine's "
                    "own time would sharpen the timing side channel about rows a row filter "
                    "hides (docs/security.md).",
    ).tag(config=True)
    scan_partition_mb = Float(
        64.0, help="Size a scan plan aims at per partition (MB at the source, e.g. compressed "
                   "Parquet): the source's units (files, row groups) are merged up to it.",
    ).tag(config=True)
    webhook_url = Unicode(
        _env("WEBHOOK_URL", ""),
        help="If set, a JSON POST is sent here for every request and decision, however it was "
             "made (API, pages, command line, expiry), read from the audit log: once across "
             "replicas, in order, retried with backoff while the receiver fails; and each "
             "audit anchor.",
    ).tag(config=True)
    webhook_interval = Float(
        1.0, help="Seconds between looks at the audit log for decisions to send to the webhook."
    ).tag(config=True)

    config_file = Unicode(
        _env("CONFIG_FILE", ""),
        help="A traitlets config file (Python, `c.DataAccessService.threads = 16`) read at start; "
             "its settings override configure_hub's `settings` and are overridden by the "
             "command line.",
    ).tag(config=True)

    aliases = {
        "catalog": "DataAccessService.catalog",
        "policy": "DataAccessService.policy",
        "db-url": "DataAccessService.db_url",
        "webhook-url": "DataAccessService.webhook_url",
        "config": "DataAccessService.config_file",
    }

    @default("log_level")
    def _log_level(self) -> int:
        return 20

    def load_settings(self, argv: list[str] | None = None) -> None:
        """Settings, lowest first: defaults (some read the environment), configure_hub's
        `settings` (DATAACCESS_SETTINGS, JSON), the config file, the command line."""
        self.parse_command_line(argv)
        command_line = deepcopy(self.config)
        given = os.environ.get(SETTINGS_ENV)
        if given:
            self.update_config(TraitletsConfig({"DataAccessService": json.loads(given)}))
        if self.config_file:
            self.load_config_file(self.config_file)
        self.update_config(command_line)

    def initialize(self, argv: list[str] | None = None) -> None:
        self.load_settings(argv)
        self.config_state = self._read_config()  # raises CatalogError on a bad file
        _freeze_heap()
        self.db = Database(self.db_url, busy_timeout=self.db_busy_timeout)
        self.db.prepare(allow_upgrade=self.upgrade_db)  # raises SchemaError when behind
        self.keys = load_keys(self.key_dir, legacy_mask=self._legacy_mask_key)
        for name, source in self.keys.sources.items():
            self.log.info("The %s key comes from %s", name, source)
            if source.startswith("generated") and not self.db.is_sqlite:
                self.log.warning("The %s key was generated for this node only: every replica "
                                 "needs the same one (%s)", name, ENV[name])
        self.db.audit_key = self.keys.audit
        with self.db.write() as s:
            if audit.ensure_keyed(s, self.keys.audit):
                self.log.info("The audit chain is keyed from now on (key id %s)",
                              key_id(self.keys.audit))
        self._last_anchor: tuple[int, str] | None = None
        self.governance = Governance(db=self.db, config=lambda: self.config_state.config)
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="dataaccess")
        hub_api = os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.hub_auth = HubOAuth(api_url=hub_api, api_token=token,
                                 cache_max_age=math.ceil(self.token_cache_seconds),
                                 allow_token_in_url=False)
        self.directory = HubDirectory(hub_api, token, self.group_cache_seconds, self.log)
        self.metrics = Metrics(self.db)
        self.limiter = RateLimiter(self.rate_limit, self.rate_burst, self.metrics.rate_limited)
        self.webhook = None
        if self.webhook_url:
            self.webhook = AuditDelivery(self.db, self._post_webhook, self.run,
                                         owner=f"{socket.gethostname()}:{os.getpid()}",
                                         log=self.log)
            self.webhook.start_at_head()
        self.details = DetailsCache(self.details_cache_seconds, self.details_concurrency,
                                    self.run)
        self.streams = StreamSlots(self.max_streams_per_user, self.max_streams,
                                   self.stream_write_timeout, self.log)
        from ..query.worker import Limits, WorkerPool, landlock_abi

        self.queries = WorkerPool(self.query_workers, Limits(
            timeout_seconds=self.query_timeout_seconds, memory_mb=self.query_memory_mb,
            max_rows=self.query_max_rows, max_bytes=self.query_max_bytes),
            per_user=self.query_per_user)
        self.queries.warm()
        if landlock_abi():
            self.log.info("Query workers may write only under their temporary directory "
                          "(Landlock)")
        else:
            self.log.warning("This kernel has no Landlock: query workers' writes are not "
                             "confined; the SQL check alone refuses COPY (docs/security.md)")
        prefix = self.service_prefix if self.service_prefix.endswith("/") else self.service_prefix + "/"
        parts = Parts(
            governance=self.governance, run=self.run, directory=self.directory,
            limiter=self.limiter, token_cache_seconds=self.token_cache_seconds, log=self.log,
            metrics=self.metrics, streams=self.streams, details=self.details, keys=self.keys,
            queries=self.queries, config_state=lambda: self.config_state,
            config_files=(self.catalog, self.policy), frame_ancestors=tuple(self.frame_ancestors),
            ticket_seconds=self.ticket_seconds, scan_partition_mb=self.scan_partition_mb,
            query_timings=self.query_timings)
        self.web_app = web.Application(
            [(pattern, handler, parts.for_route(handler)) for pattern, handler in routes(prefix)],
            hub_auth=self.hub_auth, prefix=prefix,
            cookie_secret=self.keys.cookie, xsrf_cookies=False, log_function=self._log_request,
        )

    def _log_request(self, handler: web.RequestHandler) -> None:
        self.metrics.observe_request(handler)
        # path only: never the query string (it may hold a token) nor any header
        status = handler.get_status()
        ms = 1000.0 * handler.request.request_time()
        log = self.log.warning if status >= 400 else self.log.debug
        if status >= 500:
            log = self.log.error
        log("%s %s %s %.1fms", status, handler.request.method, handler.request.path, ms)

    def _read_config(self) -> ConfigState:
        if not self.catalog or not self.policy:
            raise CatalogError("the service needs --catalog=FILE and --policy=FILE")
        catalog = load_catalog(self.catalog)
        for ds_id, name in missing_env(catalog):  # the name only, never a value
            self.log.warning("Dataset %s: the service's environment lacks %s; reads of it fail "
                             "until it is set", ds_id, name)
        policy = load_policy(self.policy)
        return ConfigState(Config(catalog, policy), None, iso(utcnow()), self._mtimes())

    def _mtimes(self) -> tuple:
        out = []
        for path in (self.catalog, self.policy):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    async def reload(self, force: bool = False) -> None:
        """Load changed files; a bad new file keeps the old configuration and is reported.

        Parsing runs in a worker thread, so requests go on while a large catalogue loads.
        """
        mtimes = self._mtimes()
        if not force and mtimes == self.config_state.mtimes:
            return
        try:
            state = await self.run(self._read_config)
        except CatalogError as e:
            self.log.error("Keeping the previous configuration: %s", e)
            self.config_state.error, self.config_state.mtimes = str(e), mtimes
            return
        self.config_state = state
        _freeze_heap()
        self.log.info("Loaded %d datasets and %d policy rules", len(state.config.catalog.datasets),
                      len(state.config.policy.rules))

    @property
    def mask_key(self) -> bytes:  # the name code written before keys.py uses
        return self.keys.mask

    def _legacy_mask_key(self) -> bytes | None:
        """The mask key an earlier release generated into the database, if any."""
        with self.db.read() as s:
            row = s.get(Setting, "mask_key")
            return bytes.fromhex(row.value) if row else None

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def _post_webhook(self, event: dict[str, Any]) -> None:
        await httpclient.AsyncHTTPClient().fetch(
            self.webhook_url, method="POST", body=json.dumps(event), request_timeout=5,
            headers={"Content-Type": "application/json"})

    async def _deliver(self) -> None:
        """Send the decisions the audit log holds past the webhook's cursor (events.py)."""
        try:
            while (await self.webhook.deliver()).sent == BATCH:
                pass
        except Exception as e:
            self.log.warning("Webhook delivery failed, will retry: %s", type(e).__name__)

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        """Send one webhook POST now (audit anchors), never delaying or failing the caller;
        decisions go through the audit log instead (_deliver)."""
        if not self.webhook_url:
            return
        body = json.dumps({"event": event, "object": payload, "at": iso(utcnow())})

        async def send() -> None:
            try:
                await httpclient.AsyncHTTPClient().fetch(
                    self.webhook_url, method="POST", body=body, request_timeout=5,
                    headers={"Content-Type": "application/json"})
            except Exception as e:  # a webhook failing must never block a decision
                self.log.warning("Webhook failed for %s: %s", event, type(e).__name__)

        ioloop.IOLoop.current().spawn_callback(send)

    def _anchor(self) -> dict[str, Any] | None:
        with self.db.read() as s:
            return audit.anchor(s, self.keys.audit, source=f"{socket.gethostname()}:{os.getpid()}")

    async def publish_anchor(self, force: bool = False) -> dict[str, Any] | None:
        """Publish the audit head outside the database: a log line, the anchor file, the webhook.

        Skipped when the head has not moved since this process last published it (unless forced).
        """
        try:
            anchor = await self.run(self._anchor)
        except Exception as e:
            self.log.warning("Could not read the audit head to anchor it: %s", type(e).__name__)
            return None
        if anchor is None or (not force and self._last_anchor == (anchor["seq"], anchor["hash"])):
            return anchor
        line = json.dumps(anchor, sort_keys=True)
        self.log.info("audit anchor %s", line)
        if self.audit_anchor_file:
            try:
                fd = os.open(self.audit_anchor_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as f:
                    f.write(line + "\n")
            except OSError as e:
                self.log.error("Could not append the audit anchor to %s: %s",
                               self.audit_anchor_file, e.strerror)
        self.notify("audit.anchor", anchor)
        self._last_anchor = (anchor["seq"], anchor["hash"])
        return anchor

    async def _expire(self) -> None:
        try:
            n = await self.run(self.governance.expire_sweep)
            if n:
                self.log.info("Recorded expiry of %d grants", n)
        except Exception as e:
            self.log.warning("Expiry sweep failed, will retry: %s", type(e).__name__)

    def start(self) -> None:
        url = urlparse(self.service_url)
        server = HTTPServer(self.web_app, xheaders=True, max_body_size=16 * 1024 * 1024)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info("dataaccess service on %s%s with %d datasets", self.service_url,
                      self.service_prefix, len(self.config_state.config.catalog.datasets))
        loop = ioloop.IOLoop.current()
        ioloop.PeriodicCallback(self.reload, self.reload_interval * 1000).start()
        ioloop.PeriodicCallback(self._expire, self.expire_interval * 1000).start()
        loop.add_callback(self._expire)
        if self.webhook is not None:
            ioloop.PeriodicCallback(self._deliver, self.webhook_interval * 1000).start()
        if self.audit_anchor_interval > 0:
            ioloop.PeriodicCallback(self.publish_anchor,
                                    self.audit_anchor_interval * 1000).start()
        loop.add_callback(self.publish_anchor)
        try:
            signal.signal(signal.SIGHUP, lambda *_: loop.add_callback_from_signal(
                self.reload, True))
            signal.signal(signal.SIGUSR1, lambda *_: loop.add_callback_from_signal(
                self.publish_anchor, True))
            for sig in (signal.SIGTERM, signal.SIGINT):  # JupyterHub stops services with these
                signal.signal(sig, lambda *_: loop.add_callback_from_signal(loop.stop))
        except ValueError:
            pass  # not the main thread (tests)
        loop.start()


def _freeze_heap() -> None:
    """Keep the (large, long-lived) catalogue out of the cyclic GC's walks during requests.

    The previous catalogue is unfrozen first so that it can be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    app = DataAccessService()
    try:
        app.initialize(argv)
    except (CatalogError, KeyConfigError, SchemaError) as e:
        app.log.critical("Refusing to start: %s", e)
        return 2
    try:
        app.start()
    except KeyboardInterrupt:
        pass
    except OSError as e:  # e.g. the port is taken
        app.log.critical("Cannot listen on %s: %s", app.service_url, e.strerror or e)
        return 1
    return 0
