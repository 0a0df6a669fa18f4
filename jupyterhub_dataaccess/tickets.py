"""Scan plans and tickets: one governed read split into partitions, each fetched with a ticket.

`plan_scan` checks the caller's grant, writes one `data.scan` audit record and hands out a ticket
per partition of the source (its files, runs of Parquet row groups; a SQL table is one, or ranges
of the key its catalogue entry names).

A ticket is a short-lived capability signed with the service's ticket key (HMAC-SHA256). It names
the user, their grant, the dataset and its version, the partition, the columns and `where`, and
when it expires; `verify` checks it without the database. Each fetch (`open_partition`) still
checks that very grant (a revocation or an expiry stops the next fetch) and is audited as
`data.read`. The partition's URL holds only the ticket's id; the ticket itself travels in
`Authorization: ticket <ticket>`, because URLs end up in logs. Nothing here logs a ticket and no
error message repeats one. Tickets are signed, not encrypted: the holder can read what they grant
(their own columns and `where`), never a source path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from .errors import BadRequest, GovernanceError, Principal
from .governance import Governance, read_errors
from .sources.base import Reader, SourceError
from .sources.plan import ReadPlan, execute, execute_typed, plan_read
from .sources.readers import (
    HYBRID_MASKED_BYTES,
    ParquetRanges,
    WholeFile,
    described_columns,
    masked_bytes,
    reader_for,
    whole_file,
)
from .times import iso

SCHEME = "ticket"
_PREFIX = "dat1"
_MAC_CONTEXT = b"jupyterhub-dataaccess ticket v1\n"
MAX_TICKET_CHARS = 16 * 1024
AS_IS_FACTOR = 4  # a file up to this many times the partition target is one partition, as is
SPREAD = 4  # a governed read is split into at least this many partitions where the source allows
RANGES_ANSWER_BYTES = 256 << 20  # a scan answered with byte ranges: at most this much of a file


class TicketRequired(GovernanceError):
    status = 401

    def __init__(self) -> None:
        super().__init__("A ticket is required: send it as 'Authorization: ticket <ticket>' "
                         "(da.scan and da.load(..., as_='dask') hand them out)")


class InvalidTicket(GovernanceError):
    status = 403


class ExpiredTicket(GovernanceError):
    status = 410


@dataclass(frozen=True)
class Claims:
    """What one ticket grants."""

    id: str
    user: str
    grant: int
    dataset: str
    version: str | None
    partition: tuple
    columns: list[str] | None
    where: str | None
    expires: int  # Unix seconds
    scan: int  # the audit sequence number of the plan's data.scan record

    def _encode(self) -> dict[str, Any]:
        return {"i": self.id, "u": self.user, "g": self.grant, "d": self.dataset,
                "v": self.version, "p": list(self.partition), "c": self.columns,
                "w": self.where, "e": self.expires, "s": self.scan}

    @classmethod
    def _decode(cls, d: Any) -> Claims:
        try:
            claims = cls(id=d["i"], user=d["u"], grant=d["g"], dataset=d["d"], version=d["v"],
                         partition=tuple(d["p"]), columns=d["c"], where=d["w"], expires=d["e"],
                         scan=d["s"])
        except (KeyError, TypeError):
            raise InvalidTicket("This ticket is not valid: it was altered or cut short") from None
        return claims

    def audit_detail(self) -> dict[str, Any]:
        """The data.read record of one fetch: the partition, never the ticket itself."""
        return {"ticket": self.id, "scan": self.scan, "partition": list(self.partition),
                "version": self.version, "columns": self.columns, "where": self.where}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _MAC_CONTEXT + payload.encode(), hashlib.sha256).digest()


def mint(key: bytes, claims: Claims) -> str:
    """The ticket for `claims`: `dat1.<claims>.<mac>`, opaque to its holder."""
    payload = _b64(json.dumps(claims._encode(), separators=(",", ":")).encode())
    return f"{_PREFIX}.{payload}.{_b64(_mac(key, payload))}"


def verify(key: bytes, ticket_id: str, authorization: str, now: float) -> Claims:
    """The claims of the ticket in an Authorization header, if it is intact, for `ticket_id`
    and unexpired. Raises TicketRequired (401), InvalidTicket (403) or ExpiredTicket (410); no
    message repeats the ticket."""
    scheme, _, ticket = (authorization or "").strip().partition(" ")
    if scheme.lower() != SCHEME or not ticket.strip():
        raise TicketRequired()
    ticket = ticket.strip()
    invalid = InvalidTicket("This ticket is not valid: it was altered or cut short")
    parts = ticket.split(".")
    if len(ticket) > MAX_TICKET_CHARS or len(parts) != 3 or parts[0] != _PREFIX:
        raise invalid
    try:
        mac = _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise invalid from None
    if not hmac.compare_digest(mac, _mac(key, parts[1])):
        raise invalid
    try:
        claims = Claims._decode(json.loads(_unb64(parts[1])))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not hmac.compare_digest(claims.id.encode(), ticket_id.encode()):
        raise InvalidTicket("This ticket is for another partition than the one asked for")
    if claims.expires <= now:
        raise ExpiredTicket("This ticket expired: ask for a new plan (da.scan, or da.load "
                            "again), which hands out fresh tickets")
    return claims


@dataclass(frozen=True)
class ScanRequest:
    """The body of POST /datasets/{id}/scan, as typed values."""

    columns: list[str] | None = None
    where: str | None = None
    version: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ScanRequest:
        unknown = sorted(set(body) - {"columns", "where", "version"})
        if unknown:
            raise BadRequest(f"Unknown field(s): {', '.join(unknown)}")
        columns, where, version = body.get("columns"), body.get("where"), body.get("version")
        if columns is not None and (not isinstance(columns, list) or len(columns) > 2000
                                    or not all(isinstance(c, str) and c for c in columns)):
            raise BadRequest("columns must be a list of column names")
        if where is not None and not isinstance(where, str):
            raise BadRequest("where must be a filter expression (text)")
        if version is not None and not isinstance(version, str):
            raise BadRequest("version must be a string")
        return cls(columns or None, where.strip() or None if where else None, version)


def _governed_read(ds: Any, reader: Reader, key: bytes, columns: list[str] | None,
                   where: str | None, partition: tuple | None, dictionaries: bool = False
                   ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, batches) of one partition: the read plan of the whole read (row filter, masks,
    then `where` on masked values, projection), run on that partition; with `dictionaries`,
    hashed text read as a dictionary stays one (execute_typed)."""
    plan = replace(plan_read(ds, columns, where, reader=reader), partition=partition,
                   dictionaries=dictionaries)
    return execute_typed(plan, key)


def _as_is(ds: Any, reader: Reader, spec: tuple, columns: list[str] | None,
           where: str | None) -> WholeFile | None:
    """The partition's file, when the partition is the whole file and nothing governs it; sent
    only if it is still the file whose footer was read here (WholeFile.open)."""
    if columns or where or spec[0] != "rg" or not whole_file(ds):
        return None
    file = WholeFile.at(reader.partition_file(reader._dataset(), spec))
    return file if spec[3] == 0 and spec[4] == file.row_groups else None


@dataclass(frozen=True)
class PlannedFile:
    """A plan of one partition, a whole Parquet file with nothing to govern, answered with the
    file itself: its data.scan record (`audit_seq`) and its data.read record are written."""

    dataset: str
    version: str | None
    audit_seq: int
    file: WholeFile | None = None  # the whole file
    ranges: ParquetRanges | None = None  # or byte ranges of it
    head: dict[str, Any] | None = None  # (what the client does with them: ranges_prefix)
    tail: bytes | None = None  # after the ranges: a replacement footer (`_hybrid`)
    masked: Callable[[], bytes] | None = None  # then these masked columns (hybrid_masked)


def _one_file(parts: list, limit: int) -> tuple | None:
    """The partitions of a plan as one partition, when they are all runs of row groups of one
    Parquet file and hold at most `limit` bytes at the source."""
    if not parts or any(p.spec[0] != "rg" or p.spec[1:3] != parts[0].spec[1:3] for p in parts) \
            or sum(p.nbytes or 0 for p in parts) > limit:
        return None
    return (*parts[0].spec[:3], min(p.spec[3] for p in parts), max(p.spec[4] for p in parts))


def _one_file_ranges(ds: Any, reader: Reader, parts: list, plan: ReadPlan,
                     limit: int) -> tuple[ParquetRanges, dict] | None:
    """The partitions of `plan` as byte ranges of one Parquet file, when they are all runs of
    row groups of that one file, hold at most `limit` bytes at the source, and nothing governs
    the rows (see `_ranges`)."""
    spec = _one_file(parts, limit)
    return _ranges(ds, reader, spec, None, None, plan) if spec else None


def plan_scan(gov: Governance, who: Principal, dataset_id: Any, req: ScanRequest, *,
              ticket_key: bytes, ttl: float, target_bytes: int,
              url_for: Callable[[str], str], file_ok: bool = False, ranges_ok: bool = False,
              hybrid_ok: bool = False, mask_key: bytes = b"", dictionaries: bool = False
              ) -> dict[str, Any] | PlannedFile:
    """The scan plan: the grant checked, one data.scan record, a ticket per partition.

    With `file_ok`, a plan whose one partition is a whole Parquet file with nothing to govern
    is answered with the file (a PlannedFile): the fetch its ticket would make, audited as one
    (data.read after the data.scan), without the second round trip. With `ranges_ok`, a plan
    whose partitions are row groups of one Parquet file with no mask or row filter, at most
    RANGES_ANSWER_BYTES in all at the source, is answered likewise with the byte ranges of the
    file that its tickets would fetch (`_ranges`), as one data.read. With `hybrid_ok`, such a
    plan of a dataset with masks or a row filter is answered with the byte ranges of its
    unmasked columns and its masked columns computed here (`_hybrid`, masked with `mask_key`;
    `dictionaries` as for open_partition), where the row groups' statistics allow."""
    ds = gov.dataset(who, dataset_id)
    with read_errors():
        reader = reader_for(ds, req.version)
        plan = plan_read(ds, req.columns, req.where, reader=reader)  # checks columns and where
        # with nothing to govern a whole file can go as it is: bigger partitions pay then;
        # otherwise the service does the work, so parts that can run at once (da.load fetches
        # several at a time), and only those whose statistics may match the filter
        as_is = ds.ungoverned and not (req.columns or req.where)
        parts = (reader.partitions(target_bytes * AS_IS_FACTOR) if as_is
                 else reader.partitions(target_bytes, plan.pushed, spread=SPREAD))
        schema, version = plan.schema, plan.version
        whole = (_as_is(ds, reader, parts[0].spec, req.columns, req.where)
                 if file_ok and as_is and len(parts) == 1 else None)
        raw = (_one_file_ranges(ds, reader, parts, plan, RANGES_ANSWER_BYTES)
               if ranges_ok and not whole else None)
        spec = _one_file(parts, RANGES_ANSWER_BYTES) if hybrid_ok and not (whole or raw) \
            else None
        hybrid = _hybrid(ds, reader, spec, None, None, plan, dictionaries) if spec else None
    scan = {"columns": req.columns, "where": req.where, "version": version,
            "partitions": len(parts)}
    if whole or raw or hybrid:
        detail = {"ticket": None, "partition": list(parts[0].spec) if whole else "all",
                  "version": version, "columns": req.columns, "where": req.where,
                  "format": "parquet" if whole else "parquet-ranges"}
        if raw or hybrid:
            found = raw or hybrid
            detail.update(row_groups=found[0].groups, rows=found[0].rows)
        if hybrid:
            detail.update(masked=hybrid[3])
        _, _, seq = gov.authorize_answered(who, ds.id, scan, detail)  # both records at once
        if hybrid:
            return PlannedFile(ds.id, version, seq, None, hybrid[0], hybrid[1], hybrid[2],
                               _masked_later(ds, reader, mask_key, spec, hybrid, dictionaries))
        if raw:
            return PlannedFile(ds.id, version, seq, None, *raw)
        return PlannedFile(ds.id, version, seq, whole)
    _, grant, seq = gov.authorize(who, ds.id, "data.scan", scan)
    expires = int((gov.clock() + timedelta(seconds=ttl)).timestamp())
    out = []
    for part in parts:
        claims = Claims(id=_b64(secrets.token_bytes(16)), user=who.name, grant=grant.id,
                        dataset=ds.id, version=version, partition=part.spec,
                        columns=req.columns, where=req.where, expires=expires, scan=seq)
        out.append({"url": url_for(claims.id), "ticket": mint(ticket_key, claims),
                    "rows": part.rows})
    return {"dataset": ds.id, "version": version,
            "expires_at": iso(datetime.fromtimestamp(expires, timezone.utc)), "audit_seq": seq,
            "columns": described_columns(ds, schema),
            "schema": _b64(schema.serialize().to_pybytes()), "partitions": out}


@dataclass
class Opened:
    """A partition ready to send: the source file as it is (`file`), byte ranges of it as they
    are (`ranges`, with what the client does with them: `head`), or governed batches."""

    file: WholeFile | None = None
    ranges: ParquetRanges | None = None
    head: dict[str, Any] | None = None
    schema: pa.Schema | None = None
    batches: Iterator[pa.RecordBatch] | None = None
    tail: bytes | None = None  # after the ranges: a replacement footer (`_hybrid`)
    masked: Callable[[], bytes] | None = None  # then these masked columns (hybrid_masked)


def _ranges(ds: Any, reader: Reader, spec: tuple, columns: list[str] | None,
            where: str | None, plan: ReadPlan | None = None
            ) -> tuple[ParquetRanges, dict] | None:
    """Partition `spec` as byte ranges of its Parquet file, where nothing governs the rows (no
    mask, no row filter: the caller's grant covers the whole file, and its `where` and columns
    are its own convenience), with the header telling the client what to read from them.
    `plan` is the read's plan when the caller has it (then `columns` and `where` are unused)."""
    if not ds.ungoverned or ds.source.kind != "file" or ds.source.format != "parquet" \
            or spec[0] != "rg":
        return None
    plan = plan or plan_read(ds, columns, where, reader=reader)
    ranges = reader.partition_ranges(spec, plan.columns, plan.pushed)
    if ranges is None:
        return None
    return ranges, {"size": ranges.size, "ranges": ranges.ranges, "row_groups": ranges.groups,
                    "every_row": ranges.every, "columns": ranges.columns,
                    "dictionary": ranges.dictionary,
                    "where": plan.where.text if plan.where else None, "select": plan.columns}


def _hybrid(ds: Any, reader: Reader, spec: tuple, columns: list[str] | None,
            where: str | None, plan: ReadPlan | None = None, dictionaries: bool = False
            ) -> tuple[ParquetRanges, dict, bytes, list[str]] | None:
    """Partition `spec` of a dataset with masks or a row filter as (the byte ranges of its
    Parquet file holding its unmasked columns, the header, a replacement footer naming only
    those row groups and columns, the masked columns asked for), where the caller's grant covers
    every value of those columns in those row groups: the statistics of each row group prove
    that the dataset's row filter keeps every row of it (no row filter: proven), and the
    caller's `where` reads no masked column. None otherwise (the governed path runs): a file
    the ranges cannot be found in (`partition_ranges`), a footer pruned_footer refuses, no
    unmasked column to send, masked columns that would take more than HYBRID_MASKED_BYTES of
    memory (masked_bytes; `dictionaries` as for hybrid_masked). The masked columns are
    computed after the audit, by the sender (hybrid_masked), while the ranges go out.
    `plan` is the read's plan when the caller has it (then `columns` and `where` are unused)."""
    if ds.ungoverned or ds.source.kind != "file" \
            or ds.source.format != "parquet" or spec[0] != "rg":
        return None
    from .sources.footer import FooterError, pruned_footer

    plan = plan or plan_read(ds, columns, where, reader=reader)
    if plan.post is not None:  # the caller's where reads a masked column
        return None
    unmasked = [n for n in plan.columns if n not in ds.masks]
    ranges = reader.partition_ranges(spec, unmasked, plan.where, groups_by=plan.pushed,
                                     proven=plan.row_filter, alone=True)
    if ranges is None or not ranges.groups or not ranges.columns:
        return None
    offset, length = ranges.footer
    masked = [n for n in plan.columns if n in ds.masks]
    try:
        with ranges.open() as f:  # the very file: its footer, as it is
            footer = os.pread(f.fileno(), length, offset)
            held = masked_bytes(f, ranges.meta, ranges.groups,
                                {n: ds.masks[n] for n in masked}, dictionaries)
    except (OSError, pa.ArrowException) as e:
        raise SourceError(str(e)) from e
    if held > HYBRID_MASKED_BYTES:  # (held in memory whole: the governed stream is bounded)
        return None
    ranges = replace(ranges, meta=None)  # (the parsed footer is not held while ranges are sent)
    try:
        footer = pruned_footer(footer, ranges.groups, sorted(ranges.leaves))
    except FooterError:
        return None
    end = ranges.chunks[-1][0] + ranges.chunks[-1][1]
    head = {"size": end, "ranges": ranges.chunks, "footer": len(footer), "masked": masked,
            "every_row": ranges.every, "columns": ranges.columns,
            "dictionary": ranges.dictionary, "where": plan.where.text if plan.where else None,
            "select": plan.columns, "schema": _b64(plan.schema.serialize().to_pybytes())}
    return ranges, head, footer, masked


def _masked_later(ds: Any, reader: Reader, key: bytes, spec: tuple,
                  found: tuple[ParquetRanges, dict, bytes, list[str]], dictionaries: bool
                  ) -> Callable[[], bytes] | None:
    """`hybrid_masked` of a `_hybrid` partition, to be called by the sender (in a thread of its
    own, while the ranges go out); None without masked columns."""
    if not found[3]:
        return None
    return lambda: hybrid_masked(ds, reader, key, spec, found, dictionaries)


def hybrid_masked(ds: Any, reader: Reader, key: bytes, spec: tuple,
                  found: tuple[ParquetRanges, dict, bytes, list[str]], dictionaries: bool
                  ) -> bytes:
    """What follows the replacement footer of a `_hybrid` partition: the masked columns of
    every row of its row groups, in order, as the governed path masks them (with
    `dictionaries`, a hashed column may be an Arrow dictionary of its present values), as an
    Arrow IPC stream. SourceError when they do not have the ranges' rows; PartitionChanged when
    the file is no longer the one planned."""
    from .sources.stream import encode

    ranges, _, _, masked = found
    plan = replace(plan_read(ds, masked, None, reader=reader), dictionaries=dictionaries)
    runs: list[list[int]] = []  # consecutive row groups, each run read as a partition
    for g in ranges.groups:
        if runs and g == runs[-1][1]:
            runs[-1][1] = g + 1
        else:
            runs.append([g, g + 1])
    rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for first, stop in runs:  # the row filter keeps every row (proven): all rows, in order
            for batch in execute(replace(plan, partition=(*spec[:3], first, stop)), key):
                rows += batch.num_rows
                yield batch

    schema, typed = execute_typed(plan, key, batches())
    stream = b"".join(bytes(c) for c in encode(schema, typed, "arrow", prefetch=0))
    if rows != ranges.rows:  # (statistics that lied: never send columns that do not line up)
        raise SourceError("the masked columns do not have the rows of the ranges")
    return stream


def ranges_prefix(head: dict[str, Any]) -> bytes:
    """What goes before the ranges of a partition sent as byte ranges: the length of the header
    (4 bytes, big-endian), then the header as JSON (client.py `_from_ranges` reads both)."""
    text = json.dumps(head, separators=(",", ":")).encode()
    return len(text).to_bytes(4, "big") + text


def open_partition(gov: Governance, claims: Claims, mask_key: bytes,
                   accept_parquet: bool = False, dictionaries: bool = False,
                   accept_ranges: bool = False, accept_hybrid: bool = False) -> Opened:
    """One partition for a verified ticket: its grant checked now and the fetch audited. With
    `accept_parquet`, a partition that is a whole Parquet file with nothing to govern (no mask,
    row filter, projection or where) is the file as it is. With `dictionaries`, a hashed text
    column the source stores as a small dictionary may be sent as an Arrow dictionary of the
    plan's type (each distinct hash once, not 32 characters a row). With `accept_ranges`, a run
    of row groups of a Parquet file with no mask or row filter is the byte ranges of the file
    that hold its row groups (those whose statistics may match `where`) and columns, which the
    client filters with `where` itself. With `accept_hybrid`, such a run of a dataset with
    masks or a row filter is the byte ranges of its unmasked columns, a replacement footer and
    its masked columns (`_hybrid`), where the statistics prove the row filter keeps every row
    of it."""
    who = Principal(claims.user, capabilities=frozenset({"browse"}))
    ds = gov.dataset(who, claims.dataset)
    changed = ExpiredTicket("The dataset changed since this plan was made: ask for a new plan "
                            "(da.scan, or da.load again)")
    with read_errors(changed):
        reader = reader_for(ds, claims.version)
        reader.version()  # a file changed since the plan has no such version any more
        file = _as_is(ds, reader, claims.partition, claims.columns, claims.where
                      ) if accept_parquet else None
        raw = (_ranges(ds, reader, claims.partition, claims.columns, claims.where)
               if accept_ranges and not file else None)
        hybrid = (_hybrid(ds, reader, claims.partition, claims.columns, claims.where,
                          dictionaries=dictionaries)
                  if accept_hybrid and not (file or raw) else None)
        detail = dict(claims.audit_detail(), format="parquet" if file else "arrow")
        if raw or hybrid:
            found = raw or hybrid
            detail.update(format="parquet-ranges", row_groups=found[0].groups,
                          rows=found[0].rows)
        if hybrid:
            detail.update(masked=hybrid[3])
        gov.authorize(who, ds.id, "data.read", detail, grant_id=claims.grant)
        if file:
            return Opened(file=file)
        if raw:
            return Opened(ranges=raw[0], head=raw[1])
        if hybrid:
            return Opened(ranges=hybrid[0], head=hybrid[1], tail=hybrid[2], masked=_masked_later(
                ds, reader, mask_key, claims.partition, hybrid, dictionaries))
        schema, batches = _governed_read(ds, reader, mask_key, claims.columns, claims.where,
                                         claims.partition, dictionaries)
        return Opened(schema=schema, batches=batches)
