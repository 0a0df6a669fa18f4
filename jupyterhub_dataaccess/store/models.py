"""SQLAlchemy models: requests, decisions, grants, the audit log, service settings, deliveries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Naive UTC in the database, aware UTC in Python (SQLite keeps no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            from datetime import timezone

            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            from datetime import timezone

            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Request(Base):
    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    justification: Mapped[str] = mapped_column(Text)
    days: Mapped[float] = mapped_column(Float)  # granted days: asked_days capped at max_days
    asked_days: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: not said
    max_days: Mapped[float | None] = mapped_column(Float, nullable=True)  # the rule's, then
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending approved denied withdrawn
    reason: Mapped[str] = mapped_column(Text, default="")
    approvals_required: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="request", order_by="Decision.id", lazy="selectin"
    )

    __table_args__ = (
        Index("ix_requests_user_dataset_status", "user", "dataset", "status"),
        # one pending request per user and dataset, even for two sent at the same instant
        Index("uq_requests_pending", "user", "dataset", unique=True,
              sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    by: Mapped[str] = mapped_column(String(255))
    decision: Mapped[str] = mapped_column(String(16))  # approve | deny | withdraw
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request: Mapped[Request] = relationship(back_populates="decisions")

    # one vote per person per request: two clicks by one steward never count twice
    __table_args__ = (UniqueConstraint("request_id", "by", name="uq_decision_request_by"),)


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expiry_recorded: Mapped[int] = mapped_column(Integer, default=0)  # grant.expire written
    # the dataset's classification when granted: a grant never outlives an upward
    # reclassification (None: granted before this was recorded)
    classification: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (Index("ix_grants_user_dataset", "user", "dataset"),)


class AuditRecord(Base):
    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    dataset: Mapped[str] = mapped_column(String(64), default="", index=True)
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grant_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the last sequence number and hash. Locked to append, so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: a plain chain


class Setting(Base):
    """Service settings shared by every replica (an earlier release kept the mask key here)."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    """Where a consumer of the audit log (the webhook) has got to, shared by every replica.

    `cursor` is the last audit sequence number delivered; the replica holding the lease
    (`lease_owner` until `lease_until`) is the one delivering; after a failure nobody tries
    again before `retry_at` (backoff doubles with each of the `failures` in a row).
    """

    __tablename__ = "deliveries"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
