"""Decisions, delivered from the audit log: every request, decision, grant, revocation and expiry
reaches the webhook however it happened (the service's API and pages, the command line, the
expiry sweep), once across replicas, retried with backoff.

The audit log is already the one committed record of every decision, written in the same
transaction as the decision itself; delivery reads it after a cursor kept in the database
(`deliveries` row "webhook"). A replica takes a short lease on that row to deliver a batch, so
replicas never deliver the same record twice at once; a receiver may still see a record again if
a replica died between its POST and moving the cursor: the `seq` in each event is its id.
Notifications (GET /notifications) are read from the same log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from . import audit
from .governance import grant_dict, request_dict
from .store import AuditRecord, Database, Delivery, Grant, Request
from .times import utcnow

DECISIONS = ("request.create", "request.approve", "request.deny", "request.withdraw",
             "grant.create", "grant.revoke", "grant.expire")
WEBHOOK = "webhook"
BATCH = 20
LEASE = timedelta(seconds=120)  # longer than a batch of timed-out POSTs takes
MAX_BACKOFF = 300.0

Send = Callable[[dict[str, Any]], Awaitable[None]]  # raises when the receiver did not take it
Run = Callable[..., Awaitable[Any]]  # runs blocking database work off the event loop


@dataclass
class Delivered:
    sent: int = 0
    failed: str | None = None  # the action whose delivery failed, if one did


class AuditDelivery:
    """Delivers decision records after the database's cursor to `send`, in sequence order."""

    def __init__(self, db: Database, send: Send, run: Run, owner: str,
                 clock: Callable[[], datetime] = utcnow, name: str = WEBHOOK,
                 log: logging.Logger | None = None):
        self.db, self.send, self.run, self.owner = db, send, run, owner
        self.clock, self.name = clock, name
        self.log = log or logging.getLogger("jupyterhub_dataaccess.events")

    def start_at_head(self) -> None:
        """Make the cursor if there is none, at the log's end: a webhook configured today hears
        what happens from now on, not the history before it."""
        with self.db.write() as s:
            if s.get(Delivery, self.name) is None:
                head = s.execute(select(func.max(AuditRecord.seq))).scalar() or 0
                s.add(Delivery(name=self.name, cursor=head, failures=0))

    async def deliver(self) -> Delivered:
        """One batch: claim it, send each event in order, then move the cursor past what was
        sent (and past records that are not decisions). A failure keeps the cursor on the
        failed record and backs off: 1, 2, 4 ... up to 300 seconds."""
        claimed = await self.run(self._claim)
        if claimed is None:
            return Delivered()
        events, scanned_to = claimed
        done = Delivered()
        cursor = scanned_to
        for event in events:
            try:
                await self.send(event)
            except Exception as e:  # the receiver's failure must never stop the service
                self.log.warning("Webhook failed for %s (audit record %d), will retry: %s",
                                 event["event"], event["seq"], type(e).__name__)
                done.failed, cursor = event["event"], event["seq"] - 1
                break
            done.sent += 1
        await self.run(self._release, cursor, done.failed is not None)
        return done

    def _claim(self) -> tuple[list[dict[str, Any]], int] | None:
        now = self.clock()
        with self.db.write() as s:
            row = s.execute(select(Delivery).where(Delivery.name == self.name)
                            .with_for_update()).scalar()
            if row is None:
                return None
            if row.lease_until and row.lease_until > now and row.lease_owner != self.owner:
                return None
            if row.retry_at and row.retry_at > now:
                return None
            # seq is given out under the audit head's lock, so what is visible is a gap-free
            # prefix: nothing can commit later below the highest visible seq
            last = s.execute(select(func.max(AuditRecord.seq))).scalar() or 0
            if last <= row.cursor:
                return None
            records = s.execute(
                select(AuditRecord).where(AuditRecord.seq > row.cursor,
                                          AuditRecord.action.in_(DECISIONS))
                .order_by(AuditRecord.seq).limit(BATCH)).scalars().all()
            scanned_to = records[-1].seq if len(records) == BATCH else last
            row.lease_owner, row.lease_until = self.owner, now + LEASE
            return [self._event(s, r) for r in records], scanned_to

    def _release(self, cursor: int, failed: bool) -> None:
        now = self.clock()
        with self.db.write() as s:
            row = s.execute(select(Delivery).where(Delivery.name == self.name)
                            .with_for_update()).scalar_one()
            if row.lease_owner != self.owner:
                return  # our lease ran out and another replica took over
            row.cursor = max(row.cursor, cursor)
            row.lease_owner, row.lease_until = None, None
            if failed:
                row.failures += 1
                row.retry_at = now + timedelta(seconds=min(MAX_BACKOFF,
                                                           2.0 ** (row.failures - 1)))
            else:
                row.failures, row.retry_at = 0, None

    def _event(self, s: Any, r: AuditRecord) -> dict[str, Any]:
        """The webhook's JSON: the action, its audit record's seq, time, actor and dataset, and
        the request or grant as it is now."""
        obj: dict[str, Any] | None = None
        if r.action.startswith("grant.") and r.grant_id is not None:
            g = s.get(Grant, r.grant_id)
            obj = grant_dict(g, self.clock()) if g else None
        elif r.request_id is not None:
            req = s.get(Request, r.request_id)
            obj = request_dict(req) if req else None
        return {"event": r.action, "seq": r.seq, "at": audit.to_dict(r)["at"], "actor": r.actor,
                "dataset": r.dataset, "detail": json.loads(r.detail or "{}"), "object": obj}


__all__ = ["DECISIONS", "AuditDelivery", "Delivered"]
