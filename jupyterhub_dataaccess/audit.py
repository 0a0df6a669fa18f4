"""The audit log: append-only and hash-chained. Append, verify, export.

Each record's hash covers its own fields and the previous record's hash, so changing, deleting or
reordering any record breaks the chain from that point on. Appends lock the single `audit_head`
row, so concurrent writers (threads, replicas) extend one chain and never fork it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .store import AuditHead, AuditRecord

GENESIS = "0" * 64
ACTIONS = (
    "request.create", "request.approve", "request.deny", "request.withdraw",
    "grant.create", "grant.revoke", "grant.expire", "data.read", "data.preview",
    "access.denied", "spawn.mounts",
)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, dataset: str,
                request_id: int | None, grant_id: int | None, detail: str) -> str:
    body = json.dumps(
        [prev_hash, seq, _iso(at), actor, action, dataset, request_id, grant_id, detail],
        separators=(",", ":"), ensure_ascii=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def append(session: Session, actor: str, action: str, *, dataset: str = "",
           request_id: int | None = None, grant_id: int | None = None,
           detail: dict[str, Any] | None = None, at: datetime | None = None) -> AuditRecord:
    """Add one record to the chain inside the caller's transaction (so it commits with it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    at = at or datetime.now(timezone.utc)
    head = _locked_head(session)
    seq = head.seq + 1
    detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), default=str)
    digest = record_hash(head.hash, seq, at, actor, action, dataset, request_id, grant_id,
                         detail_text)
    rec = AuditRecord(seq=seq, at=at, actor=actor, action=action, dataset=dataset,
                      request_id=request_id, grant_id=grant_id, detail=detail_text,
                      prev_hash=head.hash, hash=digest)
    session.add(rec)
    head.seq, head.hash = seq, digest
    session.flush()
    return rec


def _locked_head(session: Session) -> AuditHead:
    """The head row, locked for this transaction; made on the first append.

    Concurrent first appends (PostgreSQL, READ COMMITTED) all find no head: each inserts it in a
    savepoint, the losers' unique violation rolls back only the savepoint, and they lock the
    winner's row instead of failing the request.
    """
    stmt = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    head = session.execute(stmt).scalar()
    if head is not None:
        return head
    try:
        with session.begin_nested():
            session.add(AuditHead(id=1, seq=0, hash=GENESIS))
    except IntegrityError:
        pass
    return session.execute(stmt.execution_options(populate_existing=True)).scalar_one()


@dataclass
class VerifyResult:
    ok: bool
    records: int
    problems: list[str]


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain in sequence order; report every record that does not hold."""
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    last_seq = 0
    while True:
        rows = session.execute(
            select(AuditRecord).where(AuditRecord.seq > last_seq).order_by(AuditRecord.seq)
            .limit(batch)
        ).scalars().all()
        if not rows:
            break
        for r in rows:
            count += 1
            if r.seq != expected_seq:
                problems.append(f"record {expected_seq} is missing (next is {r.seq})")
            if r.prev_hash != prev:
                problems.append(f"record {r.seq}: previous hash does not match record {r.seq - 1}")
            digest = record_hash(r.prev_hash, r.seq, r.at, r.actor, r.action, r.dataset,
                                 r.request_id, r.grant_id, r.detail)
            if digest != r.hash:
                problems.append(f"record {r.seq}: contents do not match its hash")
            prev, expected_seq, last_seq = r.hash, r.seq + 1, r.seq
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != last_seq or head.hash != prev):
        problems.append(f"the log ends at record {last_seq} but {head.seq} were written")
    if head is None and count:
        problems.append("the audit head is missing")
    return VerifyResult(ok=not problems, records=count, problems=problems)


def to_dict(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq, "at": _iso(r.at), "actor": r.actor, "action": r.action,
        "dataset": r.dataset, "request_id": r.request_id, "grant_id": r.grant_id,
        "detail": json.loads(r.detail or "{}"), "prev_hash": r.prev_hash, "hash": r.hash,
    }


def export(session: Session, batch: int = 5000) -> Iterator[str]:
    """Every record as one JSON line, in sequence order."""
    last = 0
    while True:
        rows = session.execute(
            select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        for r in rows:
            yield json.dumps(to_dict(r), sort_keys=True)
        last = rows[-1].seq
