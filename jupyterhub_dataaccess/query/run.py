"""One governed query: checked, its datasets' grants held, run in a worker over governed
relations (views over local Parquet, query/native.py, or Arrow the service governed), audited
once (`data.query`) before the first byte of the answer leaves."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from ..errors import BadRequest, GovernanceError, Principal
from ..governance import Governance, read_errors
from ..sources.masks import mask_key
from ..sources.plan import ReadPlan, execute, plan_read
from ..sources.readers import SourceError
from .check import Checked, QueryError, check_sql
from .native import native_view
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
    arrow: bytes  # the table as an Arrow IPC stream, as the worker sent it
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (Server-Timing)


class Stopwatch:
    """Where a query's time goes: `lap(stage)` adds the time since the last lap to `stage`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now


def run_query(gov: Governance, pool: WorkerPool, who: Principal, sql: Any, mask_key: bytes
              ) -> Answer:
    """Check, authorize, read governed, run, audit. Errors are GovernanceErrors with a message
    a caller can act on; the engine's runtime error text never leaves (it could echo values a
    row filter hides)."""
    lap = Stopwatch()
    catalog = gov.config().catalog
    try:
        checked = _check(sql, catalog)
    except QueryError as e:
        raise BadRequest(str(e)) from None
    lap("check")
    gov.authorize_query(who, checked.datasets)  # 403 before anything is read
    lap("grants")
    try:
        with pool.user_slot(who.name):
            plans = {d: _plan(catalog.datasets[d], checked.columns[d]) for d in checked.datasets}
            lap("plan")
            table, arrow = _run(pool, checked.sql, plans, mask_key, lap)
    except QueryFailed as e:
        raise _refusal(e, pool) from None
    versions = {d: p.version for d, (p, _) in plans.items()}
    seq = gov.authorize_query(who, checked.datasets, {
        "sql": checked.sql, "datasets": checked.datasets, "versions": versions,
        "rows": table.num_rows, "bytes": table.nbytes})
    lap("audit")
    return Answer(table, versions, seq, arrow, lap.timings)


_checks: dict[str, Checked] = {}  # sql -> its check against _checks_of
_checks_of: list[Any] = [None]  # the catalogue those checks were made against
_checks_lock = threading.Lock()


def _check(sql: Any, catalog: Any) -> Checked:
    """check_sql against the catalogue's ids, remembered for the same text and catalogue (a
    notebook or dashboard asks the same question again; the answer depends on nothing else)."""
    if not isinstance(sql, str):
        return check_sql(sql, catalog.datasets)
    with _checks_lock:
        if _checks_of[0] is not catalog:
            _checks.clear()
            _checks_of[0] = catalog
        known = _checks.get(sql)
    if known is not None:
        return known
    checked = check_sql(sql, catalog.datasets)
    with _checks_lock:
        if _checks_of[0] is catalog:
            if len(_checks) >= 512:
                _checks.pop(next(iter(_checks)))
            _checks[sql] = checked
    return checked


def _plan(ds: Any, wanted: set[str] | None) -> tuple[ReadPlan, list[str]]:
    """The governed read of `ds`, checked (sources/plan.py: fail closed on a catalogue
    mismatch), and the columns of it the query names (DuckDB's names are case-insensitive)."""
    with read_errors():
        plan = plan_read(ds)
    if wanted is None:
        return plan, plan.columns
    return plan, [c for c in plan.columns if c.lower() in wanted] or plan.columns[:1]


# (dataset, version) that DuckDB's Parquet reader reads otherwise than the Arrow path would
_arrow_only: set[tuple[str, str | None]] = set()
# views (View.checked()) a worker found read with the expected types: not checked again
_types_checked: set[tuple] = set()


def _remember(known: set[Any], item: Any, most: int = 4096) -> None:
    """Add `item` to one of the sets above, which start again once they hold `most`."""
    if len(known) >= most:
        known.clear()
    known.add(item)


def _run(pool: WorkerPool, sql: str, plans: dict[str, tuple[ReadPlan, list[str]]], key: bytes,
         lap: Stopwatch) -> tuple[pa.Table, bytes]:
    """The answer, each dataset a view over its Parquet files where query/native.py can map it
    exactly, else governed here and shipped as Arrow. A runtime error over a view with a row
    filter is answered as the Arrow path answers it (DuckDB may evaluate a caller's predicate
    on rows the row filter then drops: whether it fails must not tell of them)."""
    views = {}
    for d, (plan, names) in plans.items():
        if (d, plan.version) not in _arrow_only:
            try:  # every column where it can (one database serves every question), else
                # the query's (a column DuckDB cannot read as the Arrow path does, unasked)
                views[d] = (native_view(plan.dataset, plan, mask_key(key, d))
                            or native_view(plan.dataset, plan, mask_key(key, d), names))
            except (SourceError, OSError, pa.ArrowException):
                views[d] = None
            if views[d] is not None and views[d].checked() in _types_checked:
                views[d] = replace(views[d], check=False)
    while True:
        native = [v.to_json() for v in views.values() if v is not None]
        lap("plan")
        try:
            tables = {d: _governed(*p, key) for d, p in plans.items() if views.get(d) is None}
            lap("read")  # (the Arrow path only)
            inside: dict[str, float] = {}
            answer = pool.run_ipc(sql, tables, native, inside)
            lap("engine")
            for stage, seconds in inside.items():
                lap.timings[f"engine.{stage}"] = seconds
            for v in views.values():
                if v is not None:
                    _remember(_types_checked, v.checked())
            return answer
        except QueryFailed as e:
            if e.kind == "mismatch" and e.message in plans:
                _remember(_arrow_only, (e.message, plans[e.message][0].version))
                views[e.message] = None
            elif e.kind == "runtime" and any(v is not None and v.where for v in views.values()):
                views = {}
            elif e.kind == "setup" and any(v is not None for v in views.values()):
                views = {}  # a view DuckDB could not define (its files changed?): Arrow for all
            else:
                raise


def _governed(plan: ReadPlan, names: list[str], key: bytes) -> pa.Table:
    """The columns `names` of the dataset as the query may see it (row filter, then masks:
    sources/plan.py)."""
    with read_errors():
        if names != plan.columns:
            plan = plan_read(plan.dataset, names, reader=plan.reader)
        return pa.Table.from_batches(list(execute(plan, key)), schema=plan.schema)


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
