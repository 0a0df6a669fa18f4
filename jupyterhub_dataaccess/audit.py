"""The audit log: append-only, hash-chained and keyed. Append, verify, anchors, export.

Each record's hash covers its own fields and the previous record's hash, so changing, deleting or
reordering any record breaks the chain from that point on. Appends lock the single `audit_head`
row, so concurrent writers (threads, replicas) extend one chain and never fork it.

Someone who can write the database could recompute plain SHA-256 hashes, so records are keyed:
their hash is an HMAC-SHA256 with the audit key, which is kept outside the database (keys.py).
The first append with a key (and each change of key) first writes an `audit.keyed` record naming
the key's id, so the switch from plain records (written before the upgrade) is itself in the
chain. Deleting the last records and moving the head back still leaves a consistent chain, so the
head is also published outside the database as anchors (`anchor()`, published by the service):
`verify(..., anchors=...)` checks every published anchor against the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .keys import key_id
from .store import AuditHead, AuditRecord
from .times import iso
from .vocabulary import AUDIT_ACTIONS

GENESIS = "0" * 64
KEYED = "audit.keyed"  # written by this module only, when the chain's key changes
RECORDED = AUDIT_ACTIONS  # what the log may hold (openapi.yaml: AuditRecord.action)
ACTIONS = tuple(a for a in RECORDED if a != KEYED)  # what callers append


class AuditKeyMissing(RuntimeError):
    """The chain is keyed and this process holds no audit key: it must not append plain records."""


def _iso(at: datetime) -> str:
    return iso(at, "microseconds")  # the form each record's hash covers: never change it


def record_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, dataset: str,
                request_id: int | None, grant_id: int | None, detail: str,
                key: bytes | None = None) -> str:
    """SHA-256 of the record's fields (plain records), or their HMAC-SHA256 with `key`."""
    body = json.dumps(
        [prev_hash, seq, _iso(at), actor, action, dataset, request_id, grant_id, detail],
        separators=(",", ":"), ensure_ascii=True,
    ).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def append(session: Session, actor: str, action: str, *, dataset: str = "",
           request_id: int | None = None, grant_id: int | None = None,
           detail: dict[str, Any] | None = None, at: datetime | None = None) -> AuditRecord:
    """Add one record to the chain inside the caller's transaction (so it commits with it).

    The audit key is the session's `info["audit_key"]` (see store.Database). Three statements:
    lock and read the head, insert the record, move the head (Core, not the ORM's flush; what
    the session holds pending is flushed first, so a record never precedes its grant or
    request). The record returned is not attached to the session.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    at = at or datetime.now(timezone.utc)
    key = session.info.get("audit_key")
    session.flush()
    head = _locked_head(session)
    _switch_key(session, head, key, at)
    rec = _add(session, head, key, actor, action, dataset, request_id, grant_id, detail, at)
    _move_head(session, head)
    return rec


def ensure_keyed(session: Session, key: bytes, at: datetime | None = None) -> bool:
    """Record the switch to `key` now if the chain is not keyed with it yet (the service does
    this at start). Returns whether a record was written."""
    session.flush()
    head = _locked_head(session)
    switched = _switch_key(session, head, key, at or datetime.now(timezone.utc))
    if switched:
        _move_head(session, head)
    return switched


@dataclass
class _Head:
    """The head row as read under its lock, moved in memory as records are added."""

    seq: int
    hash: str
    key_id: str | None


_HEAD = AuditHead.__table__
_RECORDS = AuditRecord.__table__
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.key_id).where(_HEAD.c.id == 1) \
    .with_for_update()
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)


def _switch_key(session: Session, head: _Head, key: bytes | None, at: datetime) -> bool:
    if key is None:
        if head.key_id:
            raise AuditKeyMissing(
                f"the audit chain is keyed (key id {head.key_id}) and no audit key was given: "
                "set DATAACCESS_AUDIT_KEY (or DATAACCESS_AUDIT_KEY_FILE)")
        return False
    kid = key_id(key)
    if head.key_id == kid:
        return False
    _add(session, head, key, "system", KEYED, "", None, None,
         {"key_id": kid, "previous_key_id": head.key_id, "scheme": "hmac-sha256"}, at)
    head.key_id = kid
    return True


def _add(session: Session, head: _Head, key: bytes | None, actor: str, action: str,
         dataset: str, request_id: int | None, grant_id: int | None,
         detail: dict[str, Any] | None, at: datetime) -> AuditRecord:
    seq = head.seq + 1
    detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), default=str)
    digest = record_hash(head.hash, seq, at, actor, action, dataset, request_id, grant_id,
                         detail_text, key)
    row = {"seq": seq, "at": at, "actor": actor, "action": action, "dataset": dataset,
           "request_id": request_id, "grant_id": grant_id, "detail": detail_text,
           "prev_hash": head.hash, "hash": digest}
    session.execute(insert(_RECORDS), row)
    head.seq, head.hash = seq, digest
    return AuditRecord(**row)


def _move_head(session: Session, head: _Head) -> None:
    session.execute(_MOVE_HEAD, {"seq": head.seq, "hash": head.hash, "key_id": head.key_id})


def _locked_head(session: Session) -> _Head:
    """The head row, locked for this transaction; made on the first append.

    Concurrent first appends (PostgreSQL, READ COMMITTED) all find no head: each inserts it in a
    savepoint, the losers' unique violation rolls back only the savepoint, and they lock the
    winner's row instead of failing the request.
    """
    row = session.execute(_LOCK_HEAD).first()
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(_HEAD), {"id": 1, "seq": 0, "hash": GENESIS})
        except IntegrityError:
            pass
        row = session.execute(_LOCK_HEAD).one()
    return _Head(*row)


# -- anchors: the head, published outside the database ---------------------------------------

ANCHOR_EVENT = "dataaccess.audit.anchor"


def anchor(session: Session, key: bytes | None, at: datetime | None = None,
           source: str = "") -> dict[str, Any] | None:
    """The head as an anchor to publish: {event, seq, hash, key_id, at, source, mac}, the mac an
    HMAC with the audit key over the rest, so only the service can make one. None: no head."""
    head = session.get(AuditHead, 1)
    if head is None:
        return None
    out: dict[str, Any] = {"event": ANCHOR_EVENT, "seq": head.seq, "hash": head.hash,
                           "key_id": key_id(key) if key else None,
                           "at": _iso(at or datetime.now(timezone.utc)), "source": source}
    if key:
        out["mac"] = _anchor_mac(key, out)
    return out


def _anchor_mac(key: bytes, a: dict[str, Any]) -> str:
    body = json.dumps([a.get("seq"), a.get("hash"), a.get("at"), a.get("source")],
                      separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def read_anchors(lines: Iterable[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, anchor) for every anchor in a file: the anchors file, a webhook receiver's
    JSON lines, or the service's log (each anchor line holds the JSON object)."""
    out = []
    for number, line in enumerate(lines, start=1):
        start = line.find("{")
        if ANCHOR_EVENT not in line or start < 0:
            continue
        try:
            a = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(a, dict) and isinstance(a.get("object"), dict):
            a = a["object"]  # as the webhook sent it: {"event", "object", "at"}
        if isinstance(a, dict) and a.get("event") == ANCHOR_EVENT:
            out.append((number, a))
    return out


@dataclass
class VerifyResult:
    ok: bool
    records: int
    problems: list[str]
    anchors: int = 0
    keyed_from: int | None = None  # the first keyed record (the switch), if any


def verify(session: Session, batch: int = 5000, keys: Sequence[bytes] = (),
           anchors: Sequence[tuple[int, dict[str, Any]]] = ()) -> VerifyResult:
    """Walk the chain in sequence order; report every record that does not hold.

    `keys`: the audit keys (current and older); records after an `audit.keyed` record are
    checked with the key it names. Given keys, a chain with no keyed record fails (it was never
    keyed, or someone rewrote its keyed records as plain ones). `anchors`: from read_anchors;
    each must match the record at its sequence number, and none may lie beyond the end.
    """
    by_id = {key_id(k): k for k in keys}
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    last_seq = 0
    key: bytes | None = None
    keyed_from: int | None = None
    unverifiable = False
    wanted = {}
    for line, a in anchors:
        if isinstance(a.get("seq"), int) and isinstance(a.get("hash"), str):
            wanted.setdefault(a["seq"], []).append((line, a))
        else:
            problems.append(f"anchor on line {line} has no sequence number and hash")
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
            if r.action == KEYED:
                kid = _detail(r).get("key_id")
                key = by_id.get(kid)
                keyed_from = keyed_from or r.seq
                unverifiable = key is None
                if unverifiable:
                    problems.append(f"record {r.seq} onward are keyed with audit key {kid}, "
                                    "which was not given: cannot verify them")
            if not unverifiable:
                digest = record_hash(r.prev_hash, r.seq, r.at, r.actor, r.action, r.dataset,
                                     r.request_id, r.grant_id, r.detail, key)
                if not hmac.compare_digest(digest, r.hash):
                    problems.append(f"record {r.seq}: contents do not match its hash")
            for line, a in wanted.pop(r.seq, []):
                if a["hash"] != r.hash:
                    problems.append(f"record {r.seq} does not match the anchor published at "
                                    f"{a.get('at')} (line {line})")
            prev, expected_seq, last_seq = r.hash, r.seq + 1, r.seq
    head = session.get(AuditHead, 1)
    if head is None:
        problems.append("the audit head is missing")
    elif head.seq != last_seq or head.hash != prev:
        problems.append(f"the log ends at record {last_seq} but {head.seq} were written")
    for seq, published in sorted(wanted.items()):
        line, a = published[0]
        if seq == 0 and a["hash"] == GENESIS:
            continue
        problems.append(f"records {last_seq + 1} to {seq} are missing: an anchor published at "
                        f"{a.get('at')} (line {line}) names record {seq}, the log ends at "
                        f"{last_seq}")
    for line, a in anchors:
        kid = a.get("key_id")
        if kid and kid in by_id and not hmac.compare_digest(
                str(a.get("mac", "")), _anchor_mac(by_id[kid], a)):
            problems.append(f"anchor on line {line} is not signed by the audit key it names")
    if keys and count and keyed_from is None:
        problems.append("no record is keyed although an audit key was given: the chain was "
                        "never keyed, or its keyed records were rewritten as plain ones")
    return VerifyResult(ok=not problems, records=count, problems=problems,
                        anchors=len(anchors), keyed_from=keyed_from)


def _detail(r: AuditRecord) -> dict[str, Any]:
    try:
        value = json.loads(r.detail or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
