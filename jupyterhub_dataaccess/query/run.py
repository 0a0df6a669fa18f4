"""One governed query: checked, its datasets' grants held, run in a worker over governed
relations, audited once (`data.query`) before the first byte of the answer leaves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import BadRequest, GovernanceError, Principal, SourceUnavailable
from ..governance import Governance
from ..sources.plan import execute, plan_read
from ..sources.readers import SourceError
from .check import QueryError, check_sql
from .worker import QueryFailed, WorkerPool


class QueryRefused(GovernanceError):
    status = 400


class QueryBusy(GovernanceError):
    status = 429


@dataclass(frozen=True)
class Answer:
    table: pa.Table
    datasets: dict[str, str | None]  # id -> version read
    audit_seq: int | None


def run_query(gov: Governance, pool: WorkerPool, who: Principal, sql: Any, mask_key: bytes
              ) -> Answer:
    """Check, authorize, read governed, run, audit. Errors are GovernanceErrors with a message
    a caller can act on; the engine's runtime error text never leaves (it could echo values a
    row filter hides)."""
    catalog = gov.config().catalog
    try:
        checked = check_sql(sql, frozenset(catalog.datasets))
    except QueryError as e:
        raise BadRequest(str(e)) from None
    gov.authorize_query(who, checked.datasets)  # 403 before anything is read
    tables, versions = {}, {}
    try:
        with pool.user_slot(who.name):
            for d in checked.datasets:
                tables[d], versions[d] = _governed(catalog.datasets[d], checked.columns[d],
                                                   mask_key)
            table = pool.run(checked.sql, tables)
    except QueryFailed as e:
        raise _refusal(e, pool) from None
    seq = gov.authorize_query(who, checked.datasets, {
        "sql": checked.sql, "datasets": checked.datasets, "versions": versions,
        "rows": table.num_rows, "bytes": table.nbytes})
    return Answer(table, versions, seq)


def _governed(ds: Any, wanted: set[str] | None, mask_key: bytes) -> tuple[pa.Table, str | None]:
    """The dataset as the query may see it (row filter, then masks: sources/plan.py), with only
    the columns the query names (DuckDB's names are case-insensitive)."""
    try:
        plan = plan_read(ds)
        if wanted is not None:
            names = [c for c in plan.columns if c.lower() in wanted] or plan.columns[:1]
            plan = plan_read(ds, names, reader=plan.reader)
        return pa.Table.from_batches(list(execute(plan, mask_key)), schema=plan.schema), \
            plan.version
    except SourceError as e:
        raise SourceUnavailable() from e


def _refusal(e: QueryFailed, pool: WorkerPool) -> GovernanceError:
    limits = pool.limits
    if e.kind == "bind":
        return QueryRefused(f"The query cannot run: {e.message}")
    if e.kind == "limit":
        return {
            "time": QueryRefused(f"The query ran longer than {limits.timeout_seconds:g} s and "
                                 "was stopped; narrow it (a WHERE, fewer joins) or aggregate"),
            "memory": QueryRefused(f"The query needed more than {limits.memory_mb} MB and was "
                                   "stopped; narrow it or aggregate"),
            "busy": QueryBusy("The service is running as many queries as it may; retry "
                              "shortly"),
            "user-busy": QueryBusy("You already have as many queries running as you may; wait "
                                   "for one to finish"),
        }.get(e.message, QueryRefused(f"The answer has {e.message}, more than a query may "
                                      "return; aggregate, or add a LIMIT"))
    if e.kind == "crash":
        return QueryRefused("The query engine stopped while running this query (out of memory, "
                            "probably); narrow it or aggregate")
    return QueryRefused(f"The query failed while running ({e.message}); the engine's message "
                        "is not shown, as it could echo values a row filter hides")
