"""Use cases: request, approve, deny, withdraw, revoke, expire, check access, search, audit.

Everything here works on a `Principal` (who is asking, as the Hub told the service) and the
database; nothing here knows HTTP. Every state change and its audit record commit together.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit
from .catalog import Catalog, Dataset
from .errors import (
    MAX_ID,
    SCOPE_PREFIX,
    BadRequest,
    Conflict,
    Forbidden,
    GovernanceError,
    NoGrant,
    NotFound,
    Principal,
    SourceUnavailable,
)
from .policy import Policy, approvals_met, decide, may_decide
from .store import AuditRecord, Database, Decision, Grant, Request
from .times import iso, utcnow
from .vocabulary import CLASSIFICATIONS, REQUEST_STATUSES

if TYPE_CHECKING:
    from .sources.plan import ReadPlan

MAX_PAGE = 200
MAX_JUSTIFICATION = 4000
MAX_COMMENT = 4000
PERSON_NEEDED = ("A server's token may only browse and request: deciding, revoking and the audit "
                 "need you, through the Approvals or Admin page (your own login) or a token you "
                 "made on the hub's token page")
GRANT_SORT = {"id": Grant.id, "user": Grant.user, "dataset": Grant.dataset,
              "created_at": Grant.created_at, "expires_at": Grant.expires_at}
AUDIT_SORT = {"seq": AuditRecord.seq, "at": AuditRecord.at, "actor": AuditRecord.actor,
              "action": AuditRecord.action, "dataset": AuditRecord.dataset}


def grant_status(g: Grant, now: datetime) -> str:
    if g.revoked_at is not None:
        return "revoked"
    return "expired" if g.expires_at <= now else "active"


def request_dict(r: Request) -> dict[str, Any]:
    return {
        "id": r.id, "dataset": r.dataset, "user": r.user, "justification": r.justification,
        "days": r.days, "asked_days": r.asked_days, "max_days": r.max_days, "status": r.status,
        "reason": r.reason,
        "approvals_required": r.approvals_required,
        "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
        "decisions": [{"by": d.by, "decision": d.decision, "comment": d.comment, "at": iso(d.at)}
                      for d in r.decisions],
    }


def grant_dict(g: Grant, now: datetime) -> dict[str, Any]:
    return {
        "id": g.id, "dataset": g.dataset, "user": g.user, "request_id": g.request_id,
        "created_at": iso(g.created_at), "expires_at": iso(g.expires_at),
        "revoked_at": iso(g.revoked_at), "revoked_by": g.revoked_by,
        "status": grant_status(g, now),
    }


@contextmanager
def read_errors(changed: GovernanceError | None = None) -> Iterator[None]:
    """How every path that reads a dataset (a read, a preview, a scan, a ticket's fetch, a
    query) answers what the data plane raises: columns or a `where` the dataset cannot take, a
    400 saying why; a version it does not have, a 404; a source that cannot be read, a 502
    saying the cause a caller may see (SourceError.reason), the details left to the service log
    (the handlers log the error's cause). `changed`, when given, is the answer to a source no
    longer as a plan saw it (PartitionChanged, UnknownVersion: a ticket's fetch, 410)."""
    from .sources.base import PartitionChanged
    from .sources.plan import ColumnError, FilterError, SourceError, UnknownVersion

    try:
        yield
    except (ColumnError, FilterError) as e:
        raise BadRequest(str(e)) from None
    except (PartitionChanged, UnknownVersion) as e:
        if changed is not None:
            raise changed from None
        if isinstance(e, UnknownVersion):
            raise NotFound(str(e)) from None
        raise SourceUnavailable.because(e.reason) from e
    except SourceError as e:
        raise SourceUnavailable.because(e.reason) from e


def page(limit: int, offset: int) -> tuple[int, int]:
    """(limit, offset) within bounds: limit capped at MAX_PAGE (handlers refuse bad numbers)."""
    return min(max(limit, 0), MAX_PAGE), min(max(offset, 0), MAX_ID)


def ordered(stmt: Any, sort: str, columns: dict[str, Any], default: str) -> Any:
    """`stmt` ordered by `sort` ("field" ascending, "-field" descending), a field on the allow
    list `columns` only (a 400 naming the choices otherwise); ties broken by the first column."""
    sort = sort or default
    field_name = sort.removeprefix("-")
    if field_name not in columns:
        raise BadRequest(f"sort must be one of {', '.join(columns)} (with - for descending)")
    column, first = columns[field_name], next(iter(columns.values()))
    desc = sort.startswith("-")
    keys = [column.desc() if desc else column.asc()]
    if column is not first:
        keys.append(first.desc() if desc else first.asc())
    return stmt.order_by(*keys)


def clean_text(value: Any, name: str, max_len: int, required: bool) -> str:
    """Text from a user: a string, normalised (NFC), NUL-free, within bounds."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    value = unicodedata.normalize("NFC", value).replace("\x00", "").strip()
    if required and not value:
        raise BadRequest(f"{name} is required: say in a sentence why you need this data")
    if len(value) > max_len:
        raise BadRequest(f"{name} is longer than {max_len} characters")
    return value


# a user's active grants for a dataset, newest expiry first, locked (authorize): built once
_ACTIVE = (select(Grant).where(Grant.user == bindparam("user"),
                               Grant.dataset == bindparam("dataset"),
                               Grant.revoked_at.is_(None), Grant.expires_at > bindparam("now"))
           .order_by(Grant.expires_at.desc()).with_for_update())
_ACTIVE_GRANT = _ACTIVE.where(Grant.id == bindparam("grant_id"))  # only a ticket's grant
_HELD = (select(Grant.id).where(Grant.user == bindparam("user"),  # whether any: a read
                               Grant.dataset == bindparam("dataset"), Grant.revoked_at.is_(None),
                               Grant.expires_at > bindparam("now")).limit(1))


@dataclass
class Config:
    """The catalogue and policy in force; replaced whole on reload."""

    catalog: Catalog
    policy: Policy


@dataclass
class Governance:
    db: Database
    config: Callable[[], Config]
    clock: Callable[[], datetime] = utcnow

    # -- catalogue -------------------------------------------------------------------------

    def _dataset(self, dataset_id: Any) -> Dataset:
        ds = None
        if isinstance(dataset_id, str):
            ds = self.config().catalog.get(dataset_id)
        if ds is None:
            raise NotFound("No such dataset")
        return ds

    def _require(self, who: Principal, capability: str) -> None:
        if not who.can(capability):
            self._refuse_holder(who, capability)
            raise Forbidden(f"You lack the dataaccess {capability!r} permission")

    def require(self, who: Principal, capability: str) -> None:
        """Forbidden unless this credential of `who` may use `capability` (the pages ask)."""
        self._require(who, capability)

    @staticmethod
    def _refuse_holder(who: Principal, *capabilities: str) -> None:
        """A clear 403 for a person whose credential may not use what they hold: their server's
        token (browse and request only) or a filtered scope (never widened)."""
        if any(who.can(c) for c in capabilities):
            return
        for scope in who.refused_scopes:
            if scope.split("!", 1)[0].removeprefix(SCOPE_PREFIX) in capabilities:
                raise Forbidden(f"The filtered scope {scope} is not honoured by the data access "
                                "service (a filter never counts as unfiltered)")
        if any(who.holds_role(c) for c in capabilities):
            raise Forbidden(PERSON_NEEDED)

    def access_map(self, s: Session, user: str) -> dict[str, dict[str, Any]]:
        """The user's access status for every dataset they have asked for."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        latest: dict[str, tuple[datetime, str, str | None]] = {}
        for g in s.execute(select(Grant).where(Grant.user == user)).scalars():
            st = grant_status(g, now)
            if st == "active" and self._outranked(g):
                st = "revoked"  # it will be at the next read, request or spawn
            if st == "active":
                cur = out.get(g.dataset)
                if not cur or cur["expires_at"] < iso(g.expires_at):
                    out[g.dataset] = {"status": "granted", "expires_at": iso(g.expires_at),
                                      "grant_id": g.id}
            else:
                at = g.revoked_at or g.expires_at
                if g.dataset not in latest or latest[g.dataset][0] < at:
                    latest[g.dataset] = (at, st, iso(g.expires_at))
        for r in s.execute(
            select(Request).where(Request.user == user, Request.status.in_(("pending", "denied")))
        ).scalars():
            if r.dataset in out:
                continue
            if r.status == "pending":
                out[r.dataset] = {"status": "pending", "expires_at": None, "request_id": r.id}
            elif r.dataset not in latest or latest[r.dataset][0] < r.updated_at:
                latest[r.dataset] = (r.updated_at, "denied", None)
        for ds, (_, st, exp) in latest.items():
            if ds not in out:
                out[ds] = {"status": st, "expires_at": exp if st == "expired" else None}
        return out

    def list_datasets(self, who: Principal, q: str = "", tag: str = "", classification: str = "",
                      status: str = "", limit: int = 50, offset: int = 0) -> dict[str, Any]:
        self._require(who, "browse")
        lim, off = page(limit, offset)
        needle = unicodedata.normalize("NFC", q or "").casefold().strip()
        if len(needle) > 200:
            raise BadRequest("q is longer than 200 characters")
        with self.db.read() as s:
            access = self.access_map(s, who.name)
        none = {"status": "none", "expires_at": None}
        found = self.config().catalog.find(needle, tag=tag, classification=classification)
        if status:
            found = [ds for ds in found if access.get(ds.id, none)["status"] == status]
        return {"items": [dict(ds.public_dict(), access=access.get(ds.id, none))
                          for ds in found[off:off + lim]],
                "total": len(found)}

    def dataset(self, who: Principal, dataset_id: Any) -> Dataset:
        """A dataset the caller may browse (its catalogue entry; no database work)."""
        self._require(who, "browse")
        return self._dataset(dataset_id)

    def dataset_for(self, who: Principal, dataset_id: Any) -> tuple[Dataset, dict[str, Any]]:
        """A dataset and the caller's access to it."""
        ds = self.dataset(who, dataset_id)
        with self.db.read() as s:
            acc = self.access_map(s, who.name).get(ds.id, {"status": "none", "expires_at": None})
        return ds, acc

    def policy(self, who: Principal) -> dict[str, Any]:
        """The policy rules in force, in order, and the default."""
        self._require(who, "browse")
        return self.config().policy.as_dict()

    def request_preview(self, who: Principal, ds: Dataset) -> dict[str, Any]:
        """What policy would decide if `who` asked for `ds` now (shown before sending)."""
        with self.db.read() as s:
            revoked = self._revoked_since_approval(s, who.name, ds.id)
        d = decide(self.config().policy, ds, who.name, who.groups, revoked=revoked)
        return {"outcome": d.outcome, "approvals": d.approvals, "max_days": d.max_days,
                "reason": d.reason}

    # -- requests --------------------------------------------------------------------------

    def create_request(self, who: Principal, dataset: str, justification: str,
                       days: float | None = None) -> dict[str, Any]:
        """A new request, decided at once by policy where it says auto or deny.

        A pending request or an active grant for the same dataset raises Conflict carrying it.
        """
        self._require(who, "request")
        return self._new_request(who, self._dataset(dataset), justification, days)

    def renew(self, who: Principal, request_id: int, justification: str | None = None,
              days: float | None = None) -> dict[str, Any]:
        """Ask to extend access before (or after) a grant expires: a new request, same dataset.

        Allowed while the old grant is active; policy decides it like any request.
        """
        self._require(who, "request")
        with self.db.read() as s:
            old = self._visible_request(s, who, request_id)
            if old.user != who.name:
                raise Forbidden("Only the requester may renew a request")
            if old.status != "approved":
                raise Conflict(f"Only an approved request can be renewed; this one is {old.status}",
                               request=request_dict(old))
            justification = justification or old.justification
            days = old.days if days is None else days
        ds = self._dataset(old.dataset)
        return self._new_request(who, ds, justification, days, renews=old.id)

    def _new_request(self, who: Principal, ds: Dataset, justification: Any, days: Any,
                     renews: int | None = None) -> dict[str, Any]:
        justification = clean_text(justification, "justification", MAX_JUSTIFICATION,
                                   required=True)
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                                 or not days > 0 or days != days or days == float("inf")):
            raise BadRequest("days must be a positive number")
        try:
            return self._insert_request(who, ds, justification, days, renews)
        except IntegrityError:
            # the same request sent twice at one instant (PostgreSQL): the unique index on
            # pending requests let one in; this one gets the answer it would have got a moment
            # later
            with self.db.read() as s:
                pending = self._pending(s, who.name, ds.id)
            if pending is None:
                raise  # not that race: the database refused the write (a clean 503 upstream)
            raise Conflict("You already have a pending request for this dataset",
                           request=request_dict(pending)) from None

    def _insert_request(self, who: Principal, ds: Dataset, justification: str,
                        days: float | None, renews: int | None) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as s:
            self._refuse_duplicate(s, who.name, ds.id, now, allow_active=renews is not None)
            decision = decide(self.config().policy, ds, who.name, who.groups, days,
                              revoked=self._revoked_since_approval(s, who.name, ds.id))
            req = Request(dataset=ds.id, user=who.name, justification=justification,
                          days=decision.days, asked_days=None if days is None else float(days),
                          max_days=decision.max_days, status="pending", reason=decision.reason,
                          approvals_required=decision.approvals, created_at=now, updated_at=now)
            s.add(req)
            s.flush()
            detail = {"days": req.days, "policy": decision.outcome, "justification": justification}
            if renews is not None:
                detail["renews"] = renews
            audit.append(s, who.name, "request.create", dataset=ds.id, request_id=req.id,
                         detail=detail, at=now)
            if decision.outcome == "auto":
                req.status = "approved"
                self._grant(s, req, who.name, now, auto=True)
            elif decision.outcome == "deny":
                req.status = "denied"
                audit.append(s, "policy", "request.deny", dataset=ds.id, request_id=req.id,
                             detail={"reason": decision.reason}, at=now)
            s.flush()
            return request_dict(req)

    def _revoked_since_approval(self, s: Session, user: str, dataset: str) -> bool:
        """Whether someone (a steward, an admin, an operator) revoked the user's access to the
        dataset and no steward has approved a request for it since: a revocation sticks until a
        steward says otherwise. The service's own revocations after a reclassification do not
        count: the new tier's policy decides."""
        revoked_at = s.execute(select(func.max(Grant.revoked_at)).where(
            Grant.user == user, Grant.dataset == dataset, Grant.revoked_by != "system")).scalar()
        if revoked_at is None:
            return False
        approved_since = s.execute(
            select(Grant.id).join(Decision, Decision.request_id == Grant.request_id).where(
                Grant.user == user, Grant.dataset == dataset, Grant.created_at > revoked_at,
                Decision.decision == "approve").limit(1)).first()
        return approved_since is None

    def _pending(self, s: Session, user: str, dataset: str) -> Request | None:
        return s.execute(select(Request).where(
            Request.user == user, Request.dataset == dataset, Request.status == "pending")
        ).scalars().first()

    def _refuse_duplicate(self, s: Session, user: str, dataset: str, now: datetime,
                          allow_active: bool = False) -> None:
        pending = self._pending(s, user, dataset)
        if pending is not None:
            raise Conflict("You already have a pending request for this dataset",
                           request=request_dict(pending))
        active = next(iter(self._drop_outranked(s, s.execute(
            select(Grant).where(Grant.user == user, Grant.dataset == dataset,
                                Grant.revoked_at.is_(None), Grant.expires_at > now)
            .with_for_update()).scalars().all(), now)), None)
        if active is not None and not allow_active:
            req = s.get(Request, active.request_id)
            raise Conflict(f"You already have access until {iso(active.expires_at)}",
                           request=request_dict(req), grant=grant_dict(active, now))

    def _grant(self, s: Session, req: Request, actor: str, now: datetime, auto: bool) -> Grant:
        g = Grant(dataset=req.dataset, user=req.user, request_id=req.id, created_at=now,
                  expires_at=now + timedelta(days=req.days), expiry_recorded=0,
                  classification=self._dataset(req.dataset).classification)
        s.add(g)
        s.flush()
        audit.append(s, actor, "grant.create", dataset=req.dataset, request_id=req.id,
                     grant_id=g.id, detail={"expires_at": iso(g.expires_at), "auto": auto}, at=now)
        return g

    def _outranked(self, g: Grant) -> str | None:
        """The dataset's classification, if it was raised above the one `g` was granted under
        (a grant from before the upgrade, with none recorded, is never outranked)."""
        ds = self.config().catalog.get(g.dataset)
        if ds is None or not g.classification or g.classification not in CLASSIFICATIONS:
            return None
        raised = CLASSIFICATIONS.index(ds.classification) > CLASSIFICATIONS.index(g.classification)
        return ds.classification if raised else None

    def _drop_outranked(self, s: Session, grants: list[Grant], now: datetime) -> list[Grant]:
        """The grants still good: each one whose dataset was reclassified upward since it was
        granted is revoked here (by "system", audited), so the user asks again under the new
        classification's policy."""
        kept = []
        for g in grants:
            raised = self._outranked(g)
            if raised is None:
                kept.append(g)
                continue
            g.revoked_at, g.revoked_by = now, "system"
            audit.append(s, "system", "grant.revoke", dataset=g.dataset, request_id=g.request_id,
                         grant_id=g.id, at=now, detail={
                             "user": g.user, "reason": f"reclassified from {g.classification} "
                                                       f"to {raised}"})
        return kept

    def _visible_request(self, s: Session, who: Principal, request_id: int,
                         for_update: bool = False) -> Request:
        stmt = select(Request).where(Request.id == request_id)
        if for_update:
            stmt = stmt.with_for_update()
        req = s.execute(stmt).scalar()
        if req is None or not self._may_see_request(who, req):
            raise NotFound("No such request")
        return req

    def _is_steward(self, who: Principal, dataset_id: str) -> bool:
        ds = self.config().catalog.get(dataset_id)
        return bool(ds and who.can("review")
                    and ds.stewards.includes(who.name, who.groups))

    def _may_see_request(self, who: Principal, req: Request) -> bool:
        return req.user == who.name or who.can("admin") or self._is_steward(who, req.dataset)

    def get_request(self, who: Principal, request_id: int) -> dict[str, Any]:
        self._require(who, "browse")
        with self.db.read() as s:
            return request_dict(self._visible_request(s, who, request_id))

    def list_requests(self, who: Principal, scope: str = "mine", status: str = "",
                      dataset: str = "", limit: int = 50, offset: int = 0) -> dict[str, Any]:
        self._require(who, "browse")
        lim, off = page(limit, offset)
        if status and status not in REQUEST_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(REQUEST_STATUSES)}")
        stmt = select(Request)
        if scope == "mine":
            stmt = stmt.where(Request.user == who.name)
        elif scope == "review":
            self._require(who, "review")
            if not who.can("admin"):
                mine = self.config().catalog.stewarded_by(
                    who.name, who.groups)
                stmt = stmt.where(Request.dataset.in_(mine), Request.user != who.name)
        else:
            raise BadRequest("scope must be 'mine' or 'review'")
        if status:
            stmt = stmt.where(Request.status == status)
        if dataset:
            stmt = stmt.where(Request.dataset == dataset)
        with self.db.read() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = s.execute(stmt.order_by(Request.id.desc()).limit(lim).offset(off)).scalars()
            return {"items": [request_dict(r) for r in rows], "total": total}

    def _decidable(self, who: Principal) -> Any:
        """Pending requests `who` may still decide: for datasets they steward, not their own,
        not yet decided by them."""
        mine = self.config().catalog.stewarded_by(who.name, who.groups)
        decided = select(Decision.request_id).where(Decision.by == who.name)
        return select(Request).where(Request.status == "pending", Request.dataset.in_(mine),
                                     Request.user != who.name, Request.id.not_in(decided))

    def me(self, who: Principal) -> dict[str, Any]:
        """Who the caller is to the service, and how many requests await their decision. Any
        credential may read this; the count comes from what the person holds, the decision
        itself needs their own login."""
        out = who.as_dict()
        out["pending_reviews"] = 0
        if who.holds_role("review"):
            with self.db.read() as s:
                out["pending_reviews"] = s.execute(select(func.count()).select_from(
                    self._decidable(who).subquery())).scalar_one()
        return out

    def inbox(self, who: Principal, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """The approvals inbox: each request `who` may decide, oldest first, with what the
        requester would see (masks, row filter), the days asked against the rule's maximum, the
        approvals still needed, and the requester's grants on datasets `who` stewards."""
        self._require(who, "review")
        lim, off = page(limit, offset)
        catalog, now = self.config().catalog, self.clock()
        stmt = self._decidable(who)
        with self.db.read() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = s.execute(stmt.order_by(Request.id).limit(lim).offset(off)).scalars().all()
            grants: dict[str, list[dict[str, Any]]] = {}
            if rows:
                for g in s.execute(select(Grant).where(
                        Grant.user.in_({r.user for r in rows}),
                        Grant.dataset.in_(catalog.stewarded_by(who.name, who.groups)))
                        .order_by(Grant.id.desc())).scalars():
                    grants.setdefault(g.user, []).append(grant_dict(g, now))
            items = []
            for r in rows:
                ds = catalog.get(r.dataset)
                given = len({d.by for d in r.decisions if d.decision == "approve"} - {r.user})
                items.append({
                    "request": request_dict(r),
                    "dataset": dict(ds.public_dict(), masks=dict(ds.masks)) if ds else None,
                    "approvals_given": given,
                    "approvals_needed": max(1, r.approvals_required) - given,
                    "requester_grants": grants.get(r.user, []),
                })
            return {"items": items, "total": total}

    def decide(self, who: Principal, request_id: int, verdict: str, comment: str = ""
               ) -> dict[str, Any]:
        """A steward approves or denies; the requester never decides their own request."""
        self._refuse_holder(who, "review")
        comment = clean_text(comment, "comment", MAX_COMMENT, required=False)
        now = self.clock()
        try:
            with self.db.write() as s:
                req = self._visible_request(s, who, request_id, for_update=True)
                ds = self._dataset(req.dataset)
                groups = who.groups
                if not (who.can("review") and may_decide(ds, who.name, groups, req.user)):
                    if req.user == who.name:
                        raise Forbidden("You cannot decide your own request")
                    raise Forbidden("Only a steward of this dataset may decide this request")
                if req.status != "pending":
                    raise Conflict(f"This request is already {req.status}",
                                   request=request_dict(req))
                if any(d.by == who.name for d in req.decisions):
                    raise Conflict("You have already approved this request",
                                   request=request_dict(req))
                s.add(Decision(request_id=req.id, by=who.name, decision=verdict, comment=comment,
                               at=now))
                req.updated_at = now
                s.flush()
                if verdict == "deny":
                    req.status = "denied"
                    audit.append(s, who.name, "request.deny", dataset=req.dataset,
                                 request_id=req.id, detail={"comment": comment}, at=now)
                else:
                    audit.append(s, who.name, "request.approve", dataset=req.dataset,
                                 request_id=req.id, detail={"comment": comment}, at=now)
                    s.refresh(req)
                    approvers = [d.by for d in req.decisions if d.decision == "approve"]
                    if approvals_met(approvers, req.user, req.approvals_required):
                        req.status = "approved"
                        self._grant(s, req, who.name, now, auto=False)
                s.flush()
                s.refresh(req)
                return request_dict(req)
        except IntegrityError:
            # a concurrent decision by the same steward won the unique constraint
            raise Conflict("This request was decided at the same moment; reload it") from None

    def withdraw(self, who: Principal, request_id: int) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as s:
            req = self._visible_request(s, who, request_id, for_update=True)
            if req.user != who.name:
                raise Forbidden("Only the requester may withdraw a request")
            if req.status != "pending":
                raise Conflict(f"This request is already {req.status}", request=request_dict(req))
            req.status, req.updated_at = "withdrawn", now
            audit.append(s, who.name, "request.withdraw", dataset=req.dataset, request_id=req.id,
                         at=now)
            s.flush()
            return request_dict(req)

    # -- grants ----------------------------------------------------------------------------

    def list_grants(self, who: Principal, user: str = "", dataset: str = "",
                    active: bool | None = None,
                    limit: int = 50, offset: int = 0, sort: str = "") -> dict[str, Any]:
        self._require(who, "browse")
        lim, off = page(limit, offset)
        now = self.clock()
        stmt = select(Grant)
        if not who.can("admin"):
            stewarded = (self.config().catalog.stewarded_by(
                who.name, who.groups) if who.can("review") else [])
            stmt = stmt.where(or_(Grant.user == who.name, Grant.dataset.in_(stewarded)))
        if user:
            stmt = stmt.where(Grant.user == user)
        if dataset:
            stmt = stmt.where(Grant.dataset == dataset)
        if active is True:
            stmt = stmt.where(Grant.revoked_at.is_(None), Grant.expires_at > now)
        elif active is False:
            stmt = stmt.where(or_(Grant.revoked_at.is_not(None), Grant.expires_at <= now))
        with self.db.read() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = s.execute(ordered(stmt, sort, GRANT_SORT, "-id").limit(lim).offset(off)
                             ).scalars()
            return {"items": [grant_dict(g, now) for g in rows], "total": total}

    def spawn_plan(self, user: str, asked_by: str = "hub") -> dict[str, Any]:
        """Active grants and mounts for the server of `user` the Hub is about to start; audited
        as `spawn.mounts` in the user's name, with who asked (only the hub may: the handler)."""
        now = self.clock()
        catalog = self.config().catalog
        with self.db.write() as s:
            rows = self._drop_outranked(s, s.execute(select(Grant).where(
                Grant.user == user, Grant.revoked_at.is_(None), Grant.expires_at > now
            ).order_by(Grant.id).with_for_update()).scalars().all(), now)
            grants = [grant_dict(g, now) for g in rows if g.dataset in catalog.datasets]
            mounts = []
            for g in grants:
                ds = catalog.datasets[g["dataset"]]
                if ds.mount_path:
                    mounts.append({"dataset": ds.id, "path": ds.mount_path,
                                   "claim": ds.mount_claim,
                                   "type": "file" if ds.mount_file else "directory",
                                   "grant_id": g["id"],
                                   "expires_at": g["expires_at"]})
            audit.append(s, user, "spawn.mounts", at=now, detail={
                "grants": [g["id"] for g in grants], "mounts": [m["dataset"] for m in mounts],
                "asked_by": asked_by})
        return {"user": user, "grants": grants, "mounts": mounts}

    def revoke(self, who: Principal, grant_id: int) -> dict[str, Any]:
        self._refuse_holder(who, "review", "admin")
        now = self.clock()
        with self.db.write() as s:
            g = s.execute(select(Grant).where(Grant.id == grant_id).with_for_update()).scalar()
            if g is None or not (g.user == who.name or who.can("admin")
                                 or self._is_steward(who, g.dataset)):
                raise NotFound("No such grant")
            if not (who.can("admin") or self._is_steward(who, g.dataset)):
                raise Forbidden("Only a steward of this dataset or an admin may revoke")
            if g.revoked_at is not None:
                raise Conflict("This grant is already revoked", grant=grant_dict(g, now))
            g.revoked_at, g.revoked_by = now, who.name
            audit.append(s, who.name, "grant.revoke", dataset=g.dataset, request_id=g.request_id,
                         grant_id=g.id, detail={"user": g.user}, at=now)
            s.flush()
            return grant_dict(g, now)

    def expire_sweep(self) -> int:
        """Record `grant.expire` once for every grant past its expiry. Returns how many."""
        now = self.clock()
        with self.db.write() as s:
            rows = s.execute(select(Grant).where(
                Grant.expiry_recorded == 0, Grant.revoked_at.is_(None), Grant.expires_at <= now
            ).limit(1000).with_for_update(skip_locked=True)).scalars().all()  # one replica each
            for g in rows:
                g.expiry_recorded = 1
                audit.append(s, "system", "grant.expire", dataset=g.dataset,
                             request_id=g.request_id, grant_id=g.id,
                             detail={"user": g.user, "expires_at": iso(g.expires_at)}, at=now)
            return len(rows)

    # -- reads -----------------------------------------------------------------------------

    def authorize_read(self, who: Principal, dataset_id: Any, action: str,
                       detail: dict[str, Any] | None = None) -> tuple[Dataset, Grant]:
        """Check the grant and write the audit record in one transaction, before any data flows.

        No active grant: an `access.denied` record and NoGrant naming the dataset and why.
        """
        ds, g, _ = self.authorize(who, dataset_id, action, detail)
        return ds, g

    def authorize(self, who: Principal, dataset_id: Any, action: str,
                  detail: dict[str, Any] | None = None, grant_id: int | None = None
                  ) -> tuple[Dataset, Grant, int]:
        """authorize_read, also giving the audit record's sequence number; with `grant_id`,
        only that grant counts (a ticket's: a newer grant does not revive a revoked one)."""
        return self._authorize(who, dataset_id, action, detail, grant_id)

    def authorize_answered(self, who: Principal, dataset_id: Any, scan: dict[str, Any],
                           read: dict[str, Any]) -> tuple[Dataset, Grant, int]:
        """A scan answered with its data at once: the grant checked once, then its `data.scan`
        record (detail `scan`) and the `data.read` of the answer (detail `read`, plus `scan`: the
        scan record's seq), both in one transaction before any data flows. Returns the scan's
        seq. No grant: one `access.denied` record (attempted data.scan) and NoGrant."""
        return self._authorize(who, dataset_id, "data.scan", scan, None, read)

    def _authorize(self, who: Principal, dataset_id: Any, action: str,
                   detail: dict[str, Any] | None, grant_id: int | None,
                   answer: dict[str, Any] | None = None) -> tuple[Dataset, Grant, int]:
        self._require(who, "browse")
        ds = self._dataset(dataset_id)
        now = self.clock()
        with self.db.write() as s:
            # the row lock orders this read after a revoke committing at the same moment
            active = s.execute(_ACTIVE if grant_id is None else _ACTIVE_GRANT,
                               {"user": who.name, "dataset": ds.id, "now": now,
                                "grant_id": grant_id}).scalars().all()
            kept = self._drop_outranked(s, active, now)
            g = kept[0] if kept else None
            if g is None:
                rec = audit.append(s, who.name, "access.denied", dataset=ds.id,
                                   grant_id=grant_id, detail=dict(detail or {}, attempted=action),
                                   at=now)
            else:
                rec = audit.append(s, who.name, action, dataset=ds.id, request_id=g.request_id,
                                   grant_id=g.id, detail=detail or {}, at=now)
                if answer is not None:
                    audit.append(s, who.name, "data.read", dataset=ds.id,
                                 request_id=g.request_id, grant_id=g.id,
                                 detail=dict(answer, scan=rec.seq), at=now)
            seq = rec.seq
        if g is None:
            held = "the grant this ticket was given under is no longer active" if grant_id \
                else f"you have no active grant for {ds.id!r}"
            if active and not grant_id:
                held = (f"{ds.id!r} was reclassified from {active[0].classification} to "
                        f"{ds.classification} after your access was granted, so that grant was "
                        "revoked")
            raise NoGrant(f"{held[0].upper() + held[1:]}.", ds.id)
        return ds, g, seq

    def authorize_query(self, who: Principal, datasets: list[str],
                        detail: dict[str, Any] | None = None) -> int | None:
        """Every dataset of a query needs an active grant. Missing one: an `access.denied`
        record and NoGrant naming it. With `detail`, all
        held: one `data.query` record (returns its sequence number); without, a check only."""
        self._require(who, "browse")
        for d in datasets:
            self._dataset(d)
        now = self.clock()

        def params(d: str) -> dict[str, Any]:
            return {"user": who.name, "dataset": d, "now": now}

        if detail is None:  # the check before a query runs: a read; a refusal is written below
            with self.db.read() as s:
                if all(s.execute(_HELD, params(d)).first() is not None for d in datasets):
                    return None
        with self.db.write() as s:
            held = {}
            for d in datasets:  # the row locks order this after a revoke at the same moment
                held[d] = s.execute(_ACTIVE, params(d)).scalars().first()
            missing = [d for d in datasets if held[d] is None]
            if missing:
                audit.append(s, who.name, "access.denied", dataset=missing[0],
                             detail=dict(detail or {}, attempted="data.query",
                                         datasets=datasets), at=now)
            elif detail is not None:
                first = held[datasets[0]]
                return audit.append(s, who.name, "data.query", dataset=datasets[0],
                                    request_id=first.request_id, grant_id=first.id,
                                    detail=detail, at=now).seq
        if missing:
            d = missing[0]
            raise NoGrant(f"You have no active grant for {d!r}, which this query reads.", d)
        return None

    def plan_read(self, who: Principal, dataset_id: Any, action: str = "data.read", *,
                  columns: list[str] | None = None, where: str | None = None,
                  limit: int | None = None, format: str | None = None,  # noqa: A002
                  version: str | None = None, accept_parquet: bool = False) -> ReadPlan:
        """A checked, authorized and audited plan of one governed read, which the caller only
        streams (sources.plan.execute).

        Everything that can be known before data flows is checked first (unknown columns, a
        `where` that does not parse or cannot run, masks or a row filter that do not fit the
        source): such a read is refused with no `data.read` record. Then the grant is checked
        and the read audited (no grant: an `access.denied` record and Forbidden).
        With no `format`, Parquet when the caller accepts it and the source file can go as it is
        (nothing to mask, filter or project), else an Arrow stream.
        """
        from .sources import plan as plans

        ds = self.dataset(who, dataset_id)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise BadRequest("limit must be a whole number")
        with read_errors():
            plan = plans.plan_read(ds, columns, where, limit, format, version)
        if not format:
            plan = replace(plan, format="parquet" if plan.whole_file and accept_parquet
                           else "arrow")
        _, _, seq = self.authorize(who, ds.id, action, plan.audit_detail())
        return replace(plan, audit_seq=seq)

    # -- notifications ---------------------------------------------------------------------

    def notifications(self, who: Principal, since: int = 0, limit: int = 50) -> dict[str, Any]:
        """What changed for me since audit record `since`: decisions on my requests, changes to
        my grants, and (for stewards) new requests for datasets I steward. Each item names the
        action, its actor, the requester (`user`) and the dataset; the wording is the
        handlers' (messages.notification)."""
        self._require(who, "browse")
        lim, after = page(limit, since)
        mine = ("request.approve", "request.deny", "grant.create", "grant.revoke", "grant.expire")
        stewarded = (self.config().catalog.stewarded_by(who.name, who.groups)
                     if who.can("review") else [])
        stmt = (select(AuditRecord, Request.user).join(Request,
                                                       Request.id == AuditRecord.request_id)
                .where(AuditRecord.seq > after)
                .where(or_(
                    (Request.user == who.name) & AuditRecord.action.in_(mine)
                    & (AuditRecord.actor != who.name),
                    AuditRecord.dataset.in_(stewarded) & (AuditRecord.action == "request.create")
                    & (Request.user != who.name)))
                .order_by(AuditRecord.seq).limit(lim))
        with self.db.read() as s:
            rows = s.execute(stmt).all()
            last = s.execute(select(func.max(AuditRecord.seq))).scalar() or 0
        items = [{"seq": r.seq, "at": audit.to_dict(r)["at"], "action": r.action,
                  "dataset": r.dataset, "request_id": r.request_id, "grant_id": r.grant_id,
                  "actor": r.actor, "user": user}
                 for r, user in rows]
        return {"items": items, "total": len(items),
                "last_seq": items[-1]["seq"] if len(items) == lim else last}

    # -- audit -----------------------------------------------------------------------------

    def audit_records(self, who: Principal, user: str = "", dataset: str = "", action: str = "",
                      since: datetime | None = None, limit: int = 100, offset: int = 0,
                      sort: str = "") -> dict[str, Any]:
        lim, off = page(limit, offset)
        stmt = select(AuditRecord)
        if not who.can("admin"):
            self._refuse_holder(who, "admin", "review")
            self._require(who, "review")
            stewarded = self.config().catalog.stewarded_by(
                who.name, who.groups)
            stmt = stmt.where(AuditRecord.dataset.in_(stewarded))
        if user:
            stmt = stmt.where(AuditRecord.actor == user)
        if dataset:
            stmt = stmt.where(AuditRecord.dataset == dataset)
        if action:
            if action not in audit.RECORDED:
                raise BadRequest(f"action must be one of {', '.join(audit.RECORDED)}")
            stmt = stmt.where(AuditRecord.action == action)
        if since is not None:
            stmt = stmt.where(AuditRecord.at >= since)
        with self.db.read() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = s.execute(ordered(stmt, sort, AUDIT_SORT, "-seq").limit(lim).offset(off)
                             ).scalars()
            return {"items": [audit.to_dict(r) for r in rows], "total": total}


__all__ = ["Config", "Governance", "grant_dict", "iso", "read_errors", "request_dict"]
