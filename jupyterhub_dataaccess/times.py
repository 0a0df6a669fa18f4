"""Time, one way: the UTC clock and the one ISO 8601 formatter ("...Z") and parser of the package."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(at: datetime | None, timespec: str = "auto") -> str | None:
    """`at` in UTC as ISO 8601 with a `Z` (None stays None). `timespec` as datetime.isoformat:
    "auto" drops zero microseconds, "microseconds" always writes six digits (the audit hashes
    that form), "milliseconds" three."""
    if at is None:
        return None
    return at.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime; no zone means UTC. ValueError if it is not."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


__all__ = ["iso", "parse_iso", "utcnow"]
