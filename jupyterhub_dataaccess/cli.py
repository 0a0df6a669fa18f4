"""The `jupyterhub-dataaccess` command: demo, service, catalog validate, db, audit, grants, requests.

Subcommands that touch the database take --db-url (default: $DATAACCESS_DB_URL) and --key-dir
(where the audit key is found when DATAACCESS_AUDIT_KEY is not set; never generated here).

Exit status: 0 ok; 1 the check ran and failed (audit tampering or verification failure, a
catalogue, policy or source that does not validate); 2 usage or configuration error (a wrong
argument or --db-url, a missing file or key): one line on standard error says what to do.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any


class UsageError(Exception):
    """What the operator must fix before the command can run (exit status 2)."""


def _db(args: argparse.Namespace, upgrading: bool = False) -> Any:
    """The service's existing database, with the audit key (never generated here) for the
    records a command writes. A URL that names no database of ours is refused, never created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .keys import KeyConfigError, read_key
    from .store import Database, current_revision, has_schema, head_revision

    if not args.db_url:
        raise UsageError("give --db-url or set DATAACCESS_DB_URL (the service's database URL)")
    try:
        url = make_url(args.db_url)
    except ArgumentError:
        raise UsageError("--db-url is not a database URL; use e.g. "
                         "sqlite:////srv/jupyterhub/dataaccess.sqlite or "
                         "postgresql://user@host/dataaccess") from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise UsageError(f"--db-url {shown} names no database file")
        if not os.path.isfile(path):
            raise UsageError(f"no database at {os.path.abspath(path)}: check --db-url (the "
                             "service creates its database when it first starts)")
    try:
        key, _ = read_key("audit", args.key_dir)
    except KeyConfigError as e:
        raise UsageError(str(e)) from None
    try:
        db = Database(args.db_url, audit_key=key)
        revision = current_revision(db.engine)
        if revision is None and not has_schema(db.engine):
            raise UsageError(f"{shown} holds no jupyterhub-dataaccess database: check --db-url "
                             "(the service creates the schema when it first starts)")
    except (SQLAlchemyError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
        raise UsageError(f"cannot open the database at {shown}: {reason}") from None
    if not upgrading and revision != head_revision():
        raise UsageError(f"the database at {shown} is at revision {revision}, this release needs "
                         f"{head_revision()}: run `jupyterhub-dataaccess db upgrade`")
    return db


def _operator() -> Any:
    """The person at the terminal, as an admin principal named cli:<unix user>."""
    from .errors import Principal

    return Principal(name=f"cli:{getpass.getuser()}",
                     capabilities=frozenset({"browse", "review", "admin"}))


def _governance(db: Any) -> Any:
    from .catalog import Catalog
    from .governance import Config, Governance
    from .policy import Policy

    return Governance(db=db, config=lambda: Config(Catalog({}), Policy()))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.state_dir, ip=args.ip, port=args.port)


# Arrow's allocator (mimalloc) hands freed pages back to the system after 10 ms by default, so
# each batch of a stream faults fresh pages in again (a large share of a governed read's CPU on
# virtual machines); the service keeps them for two seconds instead. Read when Arrow loads: an
# operator's own setting wins.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "2000"}


def cmd_service(args: argparse.Namespace, rest: list[str]) -> int:
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)
    from .service.app import main

    return main(rest)


def cmd_catalog_validate(args: argparse.Namespace) -> int:
    from .config_files import CatalogError, load_catalog, load_policy

    for path in filter(None, (args.file, args.policy)):
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    try:
        catalog = load_catalog(args.file)
        print(f"{args.file}: OK, {len(catalog.datasets)} datasets")
        if args.policy:
            policy = load_policy(args.policy)
            print(f"{args.policy}: OK, {len(policy.rules)} rules")
    except CatalogError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.check_sources:
        return 0
    return _check_sources(catalog)


def _check_sources(catalog: Any) -> int:
    """Open every source as the service would (this process's environment standing for the
    service's) and report, per dataset, what would stop it being served."""
    from .sources.base import ENV_REF
    from .sources.plan import source_problems

    failed = 0
    for ds in catalog.datasets.values():
        problems = source_problems(ds)
        for name in set(ENV_REF.findall(repr(ds.source))):  # never print a resolved secret
            value = os.environ.get(name, "")
            if len(value) >= 4:
                problems = [p.replace(value, "${" + name + "}") for p in problems]
        if problems:
            failed += 1
            print(f"{ds.id}: FAILED: " + "; ".join(problems), file=sys.stderr)
        else:
            print(f"{ds.id}: OK")
    if failed:
        print(f"sources: {failed} of {len(catalog.datasets)} datasets would not be served; "
              "fix the catalogue or the sources", file=sys.stderr)
        return 1
    print(f"sources: OK, {len(catalog.datasets)} datasets readable as the service reads them")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from .store import current_revision

    db = _db(args, upgrading=True)
    db.upgrade()
    print(f"database at revision {current_revision(db.engine)}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from . import audit
    from .keys import KeyConfigError, all_audit_keys

    try:
        keys = all_audit_keys(args.key_dir)
    except KeyConfigError as e:
        raise UsageError(str(e)) from None
    anchors = []
    for path in args.anchors or []:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                anchors += audit.read_anchors(f)
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
    db = _db(args)
    with db.read() as s:
        result = audit.verify(s, keys=keys, anchors=anchors)
    if result.ok:
        keyed = (f", keyed from record {result.keyed_from}" if result.keyed_from
                 else ", plain (no audit key given)" if not keys else "")
        print(f"audit log OK: {result.records} records, chain intact{keyed}; "
              f"{result.anchors} anchors match")
        if not anchors:
            print("note: without --anchors, records deleted from the end of the log together "
                  "with the head cannot be seen", file=sys.stderr)
        return 0
    for problem in result.problems:
        print(f"TAMPERED: {problem}", file=sys.stderr)
    print(f"audit log FAILED verification: {len(result.problems)} problem(s) in "
          f"{result.records} records", file=sys.stderr)
    return 1


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    """Publish the head now: append an anchor to the file (or print it)."""
    import json
    import socket

    from . import audit

    db = _db(args)
    with db.read() as s:
        anchor = audit.anchor(s, db.audit_key, source=f"cli:{socket.gethostname()}")
    if anchor is None:
        print("error: the audit head is missing", file=sys.stderr)
        return 1
    line = json.dumps(anchor, sort_keys=True)
    if args.anchors:
        fd = os.open(args.anchors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line + "\n")
    print(line)
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from . import audit

    db = _db(args)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        with db.read() as s:
            for line in audit.export(s):
                out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    widths = {c: max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c) or "").ljust(widths[c]) for c in columns))


def cmd_grants_list(args: argparse.Namespace) -> int:
    gov = _governance(_db(args))
    page = gov.list_grants(_operator(), user=args.user or "", dataset=args.dataset or "",
                           active=True if args.active else None, limit=200)
    _print_rows(page["items"], ["id", "dataset", "user", "status", "expires_at", "revoked_by"],
                args.json)
    return 0


def cmd_grants_revoke(args: argparse.Namespace) -> int:
    from .errors import GovernanceError, parse_id

    gov = _governance(_db(args))
    try:
        grant = gov.revoke(_operator(), parse_id(args.id, "grant"))
    except GovernanceError as e:
        raise UsageError(e.message) from None
    print(f"revoked grant {grant['id']} of {grant['user']} on {grant['dataset']}")
    return 0


def cmd_requests_list(args: argparse.Namespace) -> int:
    gov = _governance(_db(args))
    page = gov.list_requests(_operator(), scope="review", status=args.status or "", limit=200)
    _print_rows(page["items"], ["id", "dataset", "user", "status", "days", "created_at"],
                args.json)
    return 0


def parser() -> argparse.ArgumentParser:
    from .vocabulary import REQUEST_STATUSES

    p = argparse.ArgumentParser(prog="jupyterhub-dataaccess", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_db(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--db-url", default=os.environ.get("DATAACCESS_DB_URL", ""),
                        help="SQLAlchemy URL (default: $DATAACCESS_DB_URL)")
        sp.add_argument("--key-dir", default=os.environ.get("DATAACCESS_KEY_DIR",
                                                            "dataaccess-keys"),
                        help="the service's key directory, read when DATAACCESS_AUDIT_KEY is not "
                             "set (default: $DATAACCESS_KEY_DIR, else ./dataaccess-keys)")
        return sp

    d = sub.add_parser("demo", help="run a demo JupyterHub on 127.0.0.1 with real public data")
    d.add_argument("--state-dir", default=os.path.abspath(".dataaccess-demo"))
    d.add_argument("--ip", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8000)
    d.set_defaults(func=cmd_demo)

    sub.add_parser("service", help="run the service (JupyterHub starts it)", add_help=False)

    cat = sub.add_parser("catalog", help="catalogue files").add_subparsers(dest="sub", required=True)
    v = cat.add_parser("validate", help="check a catalogue (and optionally a policy) file")
    v.add_argument("file")
    v.add_argument("--policy", help="also check this policy file")
    v.add_argument("--check-sources", action="store_true",
                   help="also open every source as the service would (run it with the service's "
                        "environment): unreadable sources, masks and row filters naming columns "
                        "the source lacks; exit 1 on any")
    v.set_defaults(func=cmd_catalog_validate)

    db = sub.add_parser("db", help="the database").add_subparsers(dest="sub", required=True)
    with_db(db.add_parser("upgrade", help="create or migrate the schema")).set_defaults(
        func=cmd_db_upgrade)

    au = sub.add_parser("audit", help="the audit log").add_subparsers(dest="sub", required=True)
    av = with_db(au.add_parser("verify", help="check the keyed hash chain (and the anchors "
                                              "published outside the database); exit 1 if tampered"))
    av.add_argument("--anchors", action="append", metavar="FILE",
                    help="anchors the service published (anchor file, log, webhook JSON lines); "
                         "may be repeated")
    av.set_defaults(func=cmd_audit_verify)
    an = with_db(au.add_parser("anchor", help="publish the audit head now (print it, and append "
                                              "it to --anchors FILE)"))
    an.add_argument("--anchors", metavar="FILE", help="append the anchor to this file")
    an.set_defaults(func=cmd_audit_anchor)
    ex = with_db(au.add_parser("export", help="write the audit log as JSON lines"))
    ex.add_argument("--output", "-o", help="file to write (default: standard output)")
    ex.set_defaults(func=cmd_audit_export)

    gr = sub.add_parser("grants", help="grants").add_subparsers(dest="sub", required=True)
    gl = with_db(gr.add_parser("list", help="list grants"))
    gl.add_argument("--user")
    gl.add_argument("--dataset")
    gl.add_argument("--active", action="store_true", help="only active grants")
    gl.add_argument("--json", action="store_true")
    gl.set_defaults(func=cmd_grants_list)
    gv = with_db(gr.add_parser("revoke", help="revoke a grant (effective on the next read)"))
    gv.add_argument("id")
    gv.set_defaults(func=cmd_grants_revoke)

    rq = sub.add_parser("requests", help="requests").add_subparsers(dest="sub", required=True)
    rl = with_db(rq.add_parser("list", help="list requests"))
    rl.add_argument("--status", choices=REQUEST_STATUSES)
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_requests_list)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["service"]:
        return cmd_service(argparse.Namespace(), argv[1:])
    args = parser().parse_args(argv)  # a usage error exits 2 here
    try:
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
