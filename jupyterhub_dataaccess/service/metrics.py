"""Prometheus metrics of the service, served at `GET /api/v1/metrics` to a token holding
`custom:dataaccess:metrics` (a scraper's service token).

Per process: request latency by route pattern (never the raw path), data bytes and rows served,
queries and their durations, rate-limit refusals. From the database, the same on every replica
(take `max` across replicas, not `sum`): active grants, pending requests, audit appends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from ..errors import METRICS_SCOPE
from ..store import AuditHead, Database, Grant, Request

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ID_GROUP = re.compile(r"\(\[\^/\]\{1,200\}\)")


class Metrics:
    """The service's metrics in a registry of their own."""

    def __init__(self, db: Database | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Histogram(
            "dataaccess_request_duration_seconds", "Time to answer a request, by route pattern",
            ["method", "route", "status"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.data_bytes = Counter("dataaccess_data_bytes", "Bytes of data sent", ["route"],
                                  registry=r)
        self.data_rows = Counter("dataaccess_data_rows", "Rows of data sent", ["route"],
                                 registry=r)
        self.queries = Histogram(
            "dataaccess_query_duration_seconds", "Time to run a SQL query, by outcome",
            ["outcome"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.rate_limited_total = Counter("dataaccess_rate_limited",
                                          "Requests refused by the per-user rate limit",
                                          registry=r)
        if db is not None:
            r.register(_DatabaseCollector(db))
        self._labels: dict[type, str] = {}

    def observe_request(self, handler: Any) -> None:
        """Called once per request by the application's log function."""
        self.requests.labels(handler.request.method, self.route(handler),
                             str(handler.get_status())).observe(handler.request.request_time())

    def route(self, handler: Any) -> str:
        """The route pattern that matched (`/datasets/{id}/data`), never the path asked for."""
        cls = type(handler)
        if cls not in self._labels:
            label = cls.__name__
            for rule in handler.application.wildcard_router.rules:
                if rule.target is cls:
                    pattern = rule.matcher.regex.pattern.rstrip("$")
                    label = _ID_GROUP.sub("{id}", pattern.split("/api/v1", 1)[-1])
                    break
            self._labels[cls] = label
        return self._labels[cls]

    def served(self, route: str, nbytes: int = 0, rows: int = 0) -> None:
        if nbytes:
            self.data_bytes.labels(route).inc(nbytes)
        if rows:
            self.data_rows.labels(route).inc(rows)

    def counting_rows(self, route: str, batches: Iterable[Any]) -> Iterator[Any]:
        """The same record batches, their rows counted as they go."""
        for batch in batches:
            self.data_rows.labels(route).inc(batch.num_rows)
            yield batch

    def observe_query(self, seconds: float, rows: int = 0, nbytes: int = 0,
                      outcome: str = "ok") -> None:
        """One SQL query: how long it took, how it ended (ok, error, timeout, ...), and what
        it sent (for the query path to call)."""
        self.queries.labels(outcome).observe(seconds)
        self.served("/query", nbytes, rows)

    def rate_limited(self) -> None:
        self.rate_limited_total.inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes (runs the database queries: call off the loop)."""
        return generate_latest(self.registry)


class _DatabaseCollector:
    """Figures kept in the database, read at each scrape: three small indexed queries."""

    def __init__(self, db: Database):
        self.db = db

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        now = datetime.now(timezone.utc)
        with self.db.read() as s:
            grants = s.execute(select(func.count()).select_from(Grant).where(
                Grant.revoked_at.is_(None), Grant.expires_at > now)).scalar_one()
            pending = s.execute(select(func.count()).select_from(Request).where(
                Request.status == "pending")).scalar_one()
            head = s.get(AuditHead, 1)
        yield GaugeMetricFamily("dataaccess_active_grants", "Grants active now", value=grants)
        yield GaugeMetricFamily("dataaccess_pending_requests", "Requests waiting for a decision",
                                value=pending)
        yield CounterMetricFamily("dataaccess_audit_appends",
                                  "Records appended to the audit log (all replicas)",
                                  value=head.seq if head else 0)


__all__ = ["CONTENT_TYPE", "METRICS_SCOPE", "Metrics"]
