"""Use cases (governance.py) in process on a real SQLite database, with a clock the tests move."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ON_POSTGRES
from policies import UNIT_POLICY
from sqlalchemy import event, select

from jupyterhub_dataaccess import audit
from jupyterhub_dataaccess.config_files import load_catalog, load_policy
from jupyterhub_dataaccess.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NoGrant,
    NotFound,
    Principal,
    parse_id,
)
from jupyterhub_dataaccess.governance import MAX_PAGE, Config, Governance, page
from jupyterhub_dataaccess.messages import how_to_ask, notification
from jupyterhub_dataaccess.service.handlers import no_unknown, parse_paging
from jupyterhub_dataaccess.store import AuditRecord, Database, Grant, Request

CATALOG = """
datasets:
  - id: pub
    title: Public penguins
    description: Bills and flippers; 100% real, "quoted" and under_scored.
    stewards: {users: [steward]}
    classification: public
    tags: [biology]
    source: {kind: file, uri: /data/pub.csv}
  - id: conf
    title: Confidential sales
    stewards: {users: [steward], groups: [stewards]}
    classification: confidential
    tags: [finance]
    source: {kind: file, uri: /data/conf.csv}
  - id: restr
    title: Restricted salaries
    stewards: {groups: [stewards]}
    classification: restricted
    tags: [hr]
    source: {kind: file, uri: /data/restr.csv}
  - id: other
    title: Another team's data
    stewards: {groups: [otherstewards]}
    classification: confidential
    source: {kind: file, uri: /data/other.csv}
  - id: never
    title: Never shared
    stewards: {users: [admin]}
    classification: restricted
    tags: [denied]
    source: {kind: file, uri: /data/never.csv}
"""


T0 = datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)
USER = frozenset({"browse", "request"})
REVIEWER = frozenset({"browse", "request", "review"})

alice = Principal("alice", frozenset({"analysts"}), USER)
bob = Principal("bob", frozenset(), USER)
steward = Principal("steward", frozenset(), REVIEWER)
steward2 = Principal("steward2", frozenset({"stewards"}), REVIEWER)
steward3 = Principal("steward3", frozenset({"stewards"}), REVIEWER)
otherstew = Principal("otherstew", frozenset({"otherstewards"}), REVIEWER)
admin = Principal("admin", frozenset(), frozenset({"browse", "request", "review", "admin"}))
nobody = Principal("nobody", frozenset(), frozenset())


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@contextmanager
def governance(tmp_path: Path, clock: Clock, catalog: str = CATALOG, url: str | None = None,
               audit_key: bytes | None = None,
               config: Callable[[], Config] | None = None) -> Iterator[Governance]:
    """Use cases on a new database (SQLite in `tmp_path` unless `url`) with `catalog` and the
    unit policy written to `tmp_path`, or with the `config` given."""
    (tmp_path / "catalog.yaml").write_text(catalog, encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(UNIT_POLICY, encoding="utf-8")
    loaded = Config(load_catalog(str(tmp_path / "catalog.yaml")),
                    load_policy(str(tmp_path / "policy.yaml")))
    db = Database(url or f"sqlite:///{tmp_path / 'gov.sqlite'}", audit_key=audit_key)
    db.upgrade()
    try:
        yield Governance(db=db, config=config or (lambda: loaded), clock=clock)
    finally:
        db.dispose()


@pytest.fixture
def gov(tmp_path: Path, clock: Clock):
    with governance(tmp_path, clock) as g:
        yield g


def ask(gov: Governance, who: Principal, dataset: str, days: float | None = None,
        justification: str = "a delay model for the board") -> dict:
    return gov.create_request(who, dataset, justification, days)


def approve(gov: Governance, who: Principal, request_id, comment: str = "ok") -> dict:
    return gov.decide(who, request_id, "approve", comment)


def actions(gov: Governance) -> Counter:
    with gov.db.read() as s:
        return Counter(s.execute(select(AuditRecord.action)).scalars())


def grants(gov: Governance, user: str | None = None) -> list[Grant]:
    with gov.db.read() as s:
        stmt = select(Grant).order_by(Grant.id)
        if user:
            stmt = stmt.where(Grant.user == user)
        return list(s.execute(stmt).scalars())


# -- requests and policy --------------------------------------------------------------------------


def test_when_public_data_is_asked_for_then_it_is_approved_at_once_with_an_active_grant(gov):
    req = ask(gov, alice, "pub", days=10)
    assert req["status"] == "approved"
    assert req["reason"] == "auto-approved: public data"
    assert req["days"] == 10
    [g] = grants(gov)
    assert (g.user, g.dataset, g.request_id) == ("alice", "pub", req["id"])
    assert g.expires_at == T0 + timedelta(days=10)
    page_ = gov.list_grants(alice, active=True)
    assert page_["total"] == 1 and page_["items"][0]["status"] == "active"
    assert actions(gov) == {"request.create": 1, "grant.create": 1}
    ds, grant = gov.authorize_read(alice, "pub", "data.read")
    assert (ds.id, grant.id) == ("pub", g.id)


def test_when_confidential_data_is_asked_for_then_the_request_waits_for_a_steward(gov):
    req = ask(gov, alice, "conf")
    assert req["status"] == "pending"
    assert req["reason"] == "needs 1 steward approval: confidential data"
    assert req["approvals_required"] == 1
    assert grants(gov) == []
    assert actions(gov) == {"request.create": 1}
    assert gov.dataset_for(alice, "conf")[1]["status"] == "pending"


def test_when_a_steward_approves_then_a_grant_is_made(gov, clock):
    req = ask(gov, alice, "conf", days=3)
    clock.advance(hours=1)
    out = approve(gov, steward, req["id"], "fine")
    assert out["status"] == "approved"
    assert out["decisions"][0]["by"] == "steward"
    assert out["decisions"][0]["comment"] == "fine"
    [g] = grants(gov, "alice")
    assert g.expires_at == clock.now + timedelta(days=3)
    assert actions(gov) == {"request.create": 1, "request.approve": 1, "grant.create": 1}


def test_when_a_steward_by_group_approves_then_a_grant_is_made(gov):
    req = ask(gov, alice, "conf")
    assert approve(gov, steward2, req["id"])["status"] == "approved"


def test_when_a_steward_denies_then_the_request_is_denied_and_no_grant_is_made(gov):
    req = ask(gov, alice, "conf")
    out = gov.decide(steward, req["id"], "deny", "no")
    assert out["status"] == "denied"
    assert grants(gov) == []
    assert actions(gov) == {"request.create": 1, "request.deny": 1}
    assert gov.dataset_for(alice, "conf")[1]["status"] == "denied"


def test_when_restricted_data_is_asked_for_then_two_distinct_stewards_must_approve(gov):
    req = ask(gov, alice, "restr")
    assert req["approvals_required"] == 2
    out = approve(gov, steward2, req["id"])
    assert out["status"] == "pending" and grants(gov) == []
    with pytest.raises(Conflict):
        approve(gov, steward2, req["id"])  # the same steward twice counts once
    assert approve(gov, steward3, req["id"])["status"] == "approved"
    assert len(grants(gov)) == 1
    assert actions(gov) == {"request.create": 1, "request.approve": 2, "grant.create": 1}


def test_when_the_policy_denies_then_the_request_is_denied_at_once(gov):
    req = ask(gov, alice, "never")
    assert req["status"] == "denied"
    assert req["reason"] == "denied by policy: tagged denied"
    assert actions(gov) == {"request.create": 1, "request.deny": 1}
    assert grants(gov) == []


def test_when_days_exceed_the_rule_maximum_then_they_are_capped(gov):
    assert ask(gov, alice, "restr", days=9999)["days"] == 7
    assert ask(gov, alice, "conf", days=0.5)["days"] == 0.5
    assert ask(gov, alice, "pub")["days"] == 365


@pytest.mark.parametrize("days", [0, -1, "7", True, float("nan"), float("inf"), [1]])
def test_when_days_are_not_a_positive_number_then_badrequest(gov, days):
    with pytest.raises(BadRequest, match="days"):
        ask(gov, alice, "conf", days=days)


@pytest.mark.parametrize("extra", [{"status": "approved"}, {"user": "bob"}, {"id": 1},
                                   {"approvals_required": 0}, {"reason": "x"}])
def test_when_a_request_carries_fields_it_may_not_set_then_badrequest_and_nothing_stored(gov,
                                                                                        extra):
    body = {"dataset": "conf", "justification": "why", **extra}
    with pytest.raises(BadRequest, match="unknown field"):  # the handler's check, before governance
        no_unknown(body, {"dataset", "justification", "days"})
    with gov.db.read() as s:
        assert s.execute(select(Request)).first() is None
    assert actions(gov) == {}


@pytest.mark.parametrize("justification", [None, "", "   ", "\x00", 42, "x" * 4001])
def test_when_the_justification_is_missing_or_bad_then_badrequest(gov, justification):
    with pytest.raises(BadRequest, match="justification"):
        gov.create_request(alice, "conf", justification)


def test_when_the_dataset_does_not_exist_then_notfound(gov):
    for ds in ("nope", None, 5, "PUB", "../pub"):
        with pytest.raises(NotFound, match="No such dataset"):
            gov.create_request(alice, ds, "why")


def test_when_a_user_lacks_the_request_permission_then_forbidden(gov):
    with pytest.raises(Forbidden):
        ask(gov, nobody, "pub")


def test_when_a_pending_request_exists_then_a_second_one_conflicts_carrying_it(gov):
    first = ask(gov, alice, "conf")
    with pytest.raises(Conflict) as e:
        ask(gov, alice, "conf")
    assert e.value.extra["request"]["id"] == first["id"]
    assert e.value.status == 409
    assert actions(gov) == {"request.create": 1}


def test_when_an_active_grant_exists_then_a_new_request_conflicts_carrying_both(gov):
    first = ask(gov, alice, "pub")
    with pytest.raises(Conflict, match="already have access until") as e:
        ask(gov, alice, "pub")
    assert e.value.extra["request"]["id"] == first["id"]
    assert e.value.extra["grant"]["status"] == "active"


def test_when_the_grant_has_expired_then_the_user_may_ask_again(gov, clock):
    ask(gov, alice, "pub", days=1)
    clock.advance(days=1, seconds=1)
    assert ask(gov, alice, "pub")["status"] == "approved"
    assert len(grants(gov)) == 2


# -- who decides ---------------------------------------------------------------------------------


def test_when_the_requester_is_a_steward_then_they_never_approve_their_own_request(gov):
    req = ask(gov, steward2, "restr")
    with pytest.raises(Forbidden, match="your own request"):
        approve(gov, steward2, req["id"])
    approve(gov, steward3, req["id"])
    with pytest.raises(Forbidden, match="your own request"):
        approve(gov, steward2, req["id"])
    assert grants(gov) == []


def test_when_the_requester_is_an_admin_then_they_never_approve_their_own_request(gov):
    req = ask(gov, admin, "conf")
    with pytest.raises(Forbidden):
        approve(gov, admin, req["id"])


def test_when_a_plain_user_tries_to_decide_then_forbidden_or_notfound(gov):
    req = ask(gov, alice, "conf")
    with pytest.raises(Forbidden):
        approve(gov, alice, req["id"])
    with pytest.raises(NotFound, match="^No such request$"):
        approve(gov, bob, req["id"])


def test_when_a_steward_of_another_dataset_decides_then_refused_and_nothing_changes(gov):
    # the request is not theirs to see, so it answers exactly as a missing one would
    req = ask(gov, alice, "conf")
    for verdict in ("approve", "deny"):
        with pytest.raises(NotFound, match="^No such request$"):
            gov.decide(otherstew, req["id"], verdict)
    assert gov.get_request(alice, req["id"])["status"] == "pending"
    assert actions(gov) == {"request.create": 1}


def test_when_an_admin_who_is_not_a_steward_of_the_dataset_decides_then_forbidden(gov):
    req = ask(gov, alice, "conf")
    with pytest.raises(Forbidden, match="Only a steward of this dataset"):
        approve(gov, admin, req["id"])


def test_when_a_steward_without_the_review_permission_decides_then_forbidden(gov):
    req = ask(gov, alice, "conf")
    unreviewing = Principal("steward", frozenset(), USER)
    with pytest.raises(NotFound, match="^No such request$"):
        approve(gov, unreviewing, req["id"])
    assert gov.get_request(alice, req["id"])["status"] == "pending"


def test_when_a_request_is_not_visible_then_notfound_with_the_same_message_as_a_missing_one(gov):
    req = ask(gov, alice, "conf")
    with pytest.raises(NotFound) as hidden:
        gov.get_request(bob, req["id"])
    with pytest.raises(NotFound) as missing:
        gov.get_request(bob, 987654)
    with pytest.raises(NotFound) as garbage:  # the handlers' parsing of the URL's id
        gov.get_request(bob, parse_id("1 or 1=1", "request"))
    assert str(hidden.value) == str(missing.value) == str(garbage.value) == "No such request"
    assert hidden.value.extra == missing.value.extra == garbage.value.extra == {}
    assert gov.get_request(steward, req["id"])["id"] == req["id"]
    assert gov.get_request(admin, req["id"])["id"] == req["id"]


@pytest.mark.parametrize("end", ["withdrawn", "denied", "approved"])
def test_when_a_request_is_already_decided_then_further_decisions_conflict(gov, end):
    req = ask(gov, alice, "conf")
    if end == "withdrawn":
        gov.withdraw(alice, req["id"])
    elif end == "denied":
        gov.decide(steward, req["id"], "deny")
    else:
        approve(gov, steward, req["id"])
    before = actions(gov)
    for who, verdict in ((steward2, "approve"), (steward2, "deny"), (steward, "approve")):
        with pytest.raises(Conflict, match=f"already {end}") as e:
            gov.decide(who, req["id"], verdict)
        assert e.value.extra["request"]["status"] == end
    with pytest.raises(Conflict):
        gov.withdraw(alice, req["id"])
    assert actions(gov) == before
    assert len(grants(gov)) == (1 if end == "approved" else 0)


def test_when_a_request_is_withdrawn_then_only_its_requester_may_and_it_is_audited(gov):
    req = ask(gov, alice, "conf")
    with pytest.raises(Forbidden):
        gov.withdraw(steward, req["id"])
    with pytest.raises(NotFound):
        gov.withdraw(bob, req["id"])
    assert gov.withdraw(alice, req["id"])["status"] == "withdrawn"
    assert actions(gov)["request.withdraw"] == 1
    assert ask(gov, alice, "conf")["status"] == "pending"  # may ask again


@pytest.mark.parametrize("body", [{"status": "approved"}, {"comment": "x", "by": "steward2"},
                                  {"comment": 5}])
def test_when_a_decision_carries_bad_fields_then_badrequest(gov, body):
    req = ask(gov, alice, "conf")
    with pytest.raises(BadRequest):  # unknown fields: the handler's check; a bad comment: ours
        no_unknown(body, {"comment"})
        gov.decide(steward, req["id"], "approve", body.get("comment"))
    assert gov.get_request(alice, req["id"])["status"] == "pending"


# -- revocation and expiry ---------------------------------------------------------------------------


def test_when_a_grant_is_revoked_then_the_next_read_is_forbidden_and_audited(gov, clock):
    ask(gov, alice, "pub")
    gov.authorize_read(alice, "pub", "data.read", {"format": "arrow"})
    [g] = grants(gov)
    clock.advance(minutes=5)
    out = gov.revoke(steward, g.id)
    assert (out["status"], out["revoked_by"]) == ("revoked", "steward")
    with pytest.raises(NoGrant, match="no active grant for 'pub'") as e:
        gov.authorize_read(alice, "pub", "data.read")
    assert e.value.extra == {"dataset": "pub"}
    counts = actions(gov)
    assert (counts["grant.revoke"], counts["data.read"], counts["access.denied"]) == (1, 1, 1)
    records = gov.audit_records(admin, action="access.denied")["items"]
    assert records[0]["actor"] == "alice" and records[0]["detail"]["attempted"] == "data.read"
    with pytest.raises(Conflict):
        gov.revoke(steward, g.id)
    assert actions(gov)["grant.revoke"] == 1
    assert gov.dataset_for(alice, "pub")[1]["status"] != "granted"


def test_when_someone_else_revokes_then_only_stewards_and_admins_may(gov):
    ask(gov, alice, "pub")
    [g] = grants(gov)
    with pytest.raises(NotFound, match="No such grant"):
        gov.revoke(bob, g.id)
    with pytest.raises(NotFound):
        gov.revoke(otherstew, g.id)
    with pytest.raises(Forbidden):
        gov.revoke(alice, g.id)  # the holder sees it but may not revoke it
    with pytest.raises(NotFound, match="^No such grant$"):
        gov.revoke(admin, parse_id("x", "grant"))
    assert gov.revoke(admin, g.id)["status"] == "revoked"


def test_when_there_is_no_grant_then_a_read_is_forbidden_and_audited_once(gov):
    with pytest.raises(NoGrant) as refused:
        gov.authorize_read(alice, "conf", "data.preview")
    assert (refused.value.status, refused.value.dataset) == (403, "conf")
    assert refused.value.message == "You have no active grant for 'conf'."
    assert actions(gov) == {"access.denied": 1}


def test_a_scan_answered_at_once_writes_its_scan_then_its_read_in_one_transaction(gov):
    """authorize_answered: one commit holding the data.scan record and, next in the chain, the
    data.read of the answer naming it; no grant: one access.denied, nothing else."""
    with pytest.raises(NoGrant, match="no active grant for 'pub'"):
        gov.authorize_answered(alice, "pub", {"partitions": 1}, {"ticket": None})
    assert actions(gov) == {"access.denied": 1}
    ask(gov, alice, "pub")
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    event.listen(gov.db.engine, "commit", committed)
    ds, g, seq = gov.authorize_answered(alice, "pub", {"partitions": 1},
                                        {"ticket": None, "format": "parquet"})
    event.remove(gov.db.engine, "commit", committed)
    assert (ds.id, len(commits)) == ("pub", 1)
    with gov.db.read() as s:
        rows = s.execute(select(AuditRecord).where(AuditRecord.seq >= seq)
                         .order_by(AuditRecord.seq)).scalars().all()
        assert audit.verify(s).ok
    assert [(r.seq, r.action, r.grant_id) for r in rows] == [
        (seq, "data.scan", g.id), (seq + 1, "data.read", g.id)]
    assert audit.to_dict(rows[0])["detail"] == {"partitions": 1}
    assert audit.to_dict(rows[1])["detail"] == {"ticket": None, "format": "parquet", "scan": seq}
    assert rows[1].prev_hash == rows[0].hash


@pytest.mark.parametrize("text", ["0", "-1", "1.0", "0x10", "1e3", "01", " 1", "1 ", "\u0661",
                                  "\uff11", "9" * 20, str(2**31), "1;2", "1\x00", ""])
def test_an_id_that_is_not_plain_digits_in_the_sql_range_is_no_such_thing(text):
    with pytest.raises(NotFound, match="^No such grant$"):
        parse_id(text, "grant")


def test_ids_in_range_parse_to_numbers():
    assert [parse_id(t, "request") for t in ("1", "42", str(2**31 - 1))] == [1, 42, 2**31 - 1]


def test_the_words_for_a_person_name_the_call_and_the_people():
    assert how_to_ask("it's") == ("Ask for it with da.request(\"it's\", justification=\"why you "
                                  "need it\") or with 'Request access' in the Data panel.")
    assert notification("request.approve", "sam", "ann", "flights") \
        == "sam approved your request for flights"
    assert notification("request.create", "ann", "ann", "flights") \
        == "ann asks for access to flights"


def test_when_the_clock_passes_expires_at_then_reads_fail_and_the_grant_shows_expired(gov, clock):
    ask(gov, alice, "pub", days=1)
    [g] = grants(gov)
    clock.now = g.expires_at - timedelta(seconds=1)
    gov.authorize_read(alice, "pub", "data.read")
    clock.now = g.expires_at + timedelta(seconds=1)
    with pytest.raises(Forbidden):
        gov.authorize_read(alice, "pub", "data.read")
    [shown] = gov.list_grants(alice)["items"]
    assert shown["status"] == "expired"
    assert gov.list_grants(alice, active=True)["total"] == 0
    assert gov.list_grants(alice, active=False)["total"] == 1
    assert gov.dataset_for(alice, "pub")[1]["status"] == "expired"
    assert gov.spawn_plan(alice.name)["grants"] == []


def test_when_days_are_fractional_then_the_grant_expires_after_that_fraction(gov, clock):
    ask(gov, alice, "pub", days=0.25)
    [g] = grants(gov)
    assert g.expires_at == T0 + timedelta(hours=6)
    clock.advance(hours=5, minutes=59)
    gov.authorize_read(alice, "pub", "data.read")
    clock.advance(minutes=1)
    with pytest.raises(Forbidden):
        gov.authorize_read(alice, "pub", "data.read")


def test_when_the_expiry_sweep_runs_then_one_grant_expire_per_expired_grant_and_none_twice(gov,
                                                                                         clock):
    ask(gov, alice, "pub", days=1)
    ask(gov, bob, "pub", days=2)
    ask(gov, steward, "pub", days=30)
    ask(gov, admin, "pub", days=1)
    [revoked] = grants(gov, "admin")
    gov.revoke(admin, revoked.id)
    clock.advance(days=1)  # exactly at alice's expires_at
    assert gov.expire_sweep() == 1
    assert gov.expire_sweep() == 0
    clock.advance(days=5)
    assert gov.expire_sweep() == 1
    assert gov.expire_sweep() == 0
    assert actions(gov)["grant.expire"] == 2
    expired = gov.audit_records(admin, action="grant.expire")["items"]
    assert sorted(r["detail"]["user"] for r in expired) == ["alice", "bob"]


# -- audit: exactly one record per state change --------------------------------------------------------


def test_when_a_whole_life_cycle_runs_then_each_change_writes_exactly_one_record(gov, clock):
    r1 = ask(gov, alice, "restr")                      # request.create
    approve(gov, steward2, r1["id"])                   # request.approve
    approve(gov, steward3, r1["id"])                   # request.approve, grant.create
    gov.authorize_read(alice, "restr", "data.read")    # data.read
    gov.authorize_read(alice, "restr", "data.preview")  # data.preview
    r2 = ask(gov, alice, "conf")                       # request.create
    gov.decide(steward, r2["id"], "deny")          # request.deny
    r3 = ask(gov, alice, "conf")                       # request.create
    gov.withdraw(alice, r3["id"])                      # request.withdraw
    ask(gov, alice, "pub", days=1)                     # request.create, grant.create
    gov.spawn_plan(alice.name)                              # spawn.mounts
    [g] = [g for g in grants(gov) if g.dataset == "restr"]
    gov.revoke(admin, g.id)                            # grant.revoke
    with pytest.raises(Forbidden):
        gov.authorize_read(alice, "restr", "data.read")  # access.denied
    clock.advance(days=2)
    gov.expire_sweep()                                 # grant.expire
    assert actions(gov) == {
        "request.create": 4, "request.approve": 2, "grant.create": 2, "data.read": 1,
        "data.preview": 1, "request.deny": 1, "request.withdraw": 1, "spawn.mounts": 1,
        "grant.revoke": 1, "access.denied": 1, "grant.expire": 1,
    }
    with gov.db.read() as s:
        assert audit.verify(s).ok


def test_when_a_change_is_refused_then_no_audit_record_is_written(gov):
    req = ask(gov, alice, "conf")
    before = actions(gov)
    for attempt in (lambda: approve(gov, alice, req["id"]),
                    lambda: ask(gov, alice, "conf"),
                    lambda: gov.create_request(alice, "conf", ""),
                    lambda: gov.withdraw(steward, req["id"])):
        with pytest.raises((Forbidden, Conflict, BadRequest)):
            attempt()
    assert actions(gov) == before


# -- search and paging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("q, expected", [
    ("", ["pub", "conf", "restr", "other", "never"]),
    ("penguins", ["pub"]),
    ("PENGUINS", ["pub"]),
    ("100%", ["pub"]),
    ("%", ["pub"]),
    ("_", ["pub"]),
    ("under_scored", ["pub"]),
    ('"quoted"', ["pub"]),
    ("'", ["other"]),
    ("team's", ["other"]),
    ("' OR 1=1 --", []),
    ("%' OR '1'='1", []),
    ("'; DROP TABLE requests; --", []),
    ("\\", []),
    ("confidential", ["conf", "other"]),
    ("hr", ["restr"]),
    ("  sales  ", ["conf"]),
])
def test_when_searching_with_odd_characters_then_results_are_literal_substring_matches(gov, q,
                                                                                     expected):
    out = gov.list_datasets(alice, q=q)
    assert [d["id"] for d in out["items"]] == expected
    assert out["total"] == len(expected)
    with gov.db.read() as s:  # the tables are all still there
        s.execute(select(Request)).all()


def test_when_listing_datasets_then_filters_access_and_paging_apply(gov):
    ask(gov, alice, "pub")
    ask(gov, alice, "conf")
    out = gov.list_datasets(alice, status="granted")
    assert [d["id"] for d in out["items"]] == ["pub"]
    assert out["items"][0]["access"]["status"] == "granted"
    assert [d["id"] for d in gov.list_datasets(alice, status="pending")["items"]] == ["conf"]
    assert [d["id"] for d in gov.list_datasets(alice, classification="restricted")["items"]] == [
        "restr", "never"]
    assert [d["id"] for d in gov.list_datasets(alice, tag="finance")["items"]] == ["conf"]
    paged = gov.list_datasets(alice, limit=2, offset=1)
    assert [d["id"] for d in paged["items"]] == ["conf", "restr"] and paged["total"] == 5
    assert all("source" not in d for d in gov.list_datasets(alice)["items"])
    with pytest.raises(BadRequest):
        gov.list_datasets(alice, q="x" * 201)
    with pytest.raises(Forbidden):
        gov.list_datasets(nobody)


@pytest.mark.parametrize("limit, offset, expected", [
    (None, None, (50, 0)), ("", "", (50, 0)), (10, 5, (10, 5)), ("7", "3", (7, 3)),
    (0, 0, (0, 0)), (200, 0, (200, 0)), (201, 0, (200, 0)), (1_000_000_000, 0, (200, 0)),
])
def test_when_paging_then_limit_is_capped_at_200(limit, offset, expected):
    assert page(*parse_paging(limit, offset)) == expected
    assert MAX_PAGE == 200


@pytest.mark.parametrize("limit, offset", [(-1, 0), (0, -1), ("-5", "0"), ("x", 0), (0, "1.5"),
                                           ([1], 0)])
def test_when_paging_with_negative_or_non_numbers_then_badrequest(limit, offset):
    with pytest.raises(BadRequest):
        parse_paging(limit, offset)


def test_when_listing_requests_for_review_then_a_steward_sees_only_their_datasets(gov):
    ask(gov, alice, "conf")
    ask(gov, alice, "other")
    ask(gov, steward2, "restr")
    mine = gov.list_requests(steward2, scope="review")
    assert [r["dataset"] for r in mine["items"]] == ["conf"]  # never their own request
    assert [r["dataset"] for r in gov.list_requests(otherstew, scope="review")["items"]] == [
        "other"]
    assert gov.list_requests(admin, scope="review")["total"] == 3
    assert gov.list_requests(alice, scope="mine")["total"] == 2
    with pytest.raises(Forbidden):
        gov.list_requests(alice, scope="review")
    with pytest.raises(BadRequest):
        gov.list_requests(alice, scope="everything")
    with pytest.raises(BadRequest):
        gov.list_requests(alice, status="approved' or 1=1")
    big = gov.list_requests(admin, scope="review", limit=10_000)
    assert big["total"] == 3


# -- concurrency ---------------------------------------------------------------------------------------


def _all_at_once(n: int, work: Callable[[int], None]) -> list[BaseException]:
    """work(0) .. work(n - 1), each in a thread of its own, all released together by a barrier;
    what they raised."""
    start, errors = threading.Barrier(n), []

    def one(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(e)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    return errors


def test_when_50_threads_request_and_decide_at_once_then_nothing_fails_and_nothing_is_lost(gov):
    users = [Principal(f"user{i:02d}", frozenset(), USER) for i in range(50)]

    def work(i: int) -> None:
        who = users[i]
        if i % 2:
            req = ask(gov, who, "conf")
            approve(gov, steward if i % 4 == 1 else steward2, req["id"])
        else:
            ask(gov, who, "pub", days=1 + i)
            gov.authorize_read(who, "pub", "data.read")

    assert _all_at_once(50, work) == []
    with gov.db.read() as s:
        reqs = s.execute(select(Request)).scalars().all()
        assert len(reqs) == 50 and {r.status for r in reqs} == {"approved"}
        assert len({r.user for r in reqs}) == 50
        assert audit.verify(s).ok
    assert len(grants(gov)) == 50
    assert actions(gov) == {"request.create": 50, "request.approve": 25, "grant.create": 50,
                            "data.read": 25}


def test_when_one_user_sends_the_same_request_from_20_threads_then_exactly_one_is_stored(gov):
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def go(_: int) -> None:
        start.wait()
        try:
            ask(gov, alice, "conf")
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(go, range(20)))
    assert sorted(outcomes) == ["conflict"] * 19 + ["created"]
    assert gov.list_requests(alice)["total"] == 1
    assert actions(gov) == {"request.create": 1}


@pytest.fixture
def any_gov(db_url: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock):
    """Governance on an empty database of the run's kind: SQLite, or a new PostgreSQL database
    (DATAACCESS_TEST_DB=postgresql), so the first appends race for the head too."""
    url = f"sqlite:///{tmp_path / 'gov.sqlite'}"
    if ON_POSTGRES:
        import os

        from pgutil import pg_bin

        pg = request.getfixturevalue("postgres")
        name = "gov" + uuid.uuid4().hex[:8]
        pg._run(os.path.join(pg_bin(), "createdb"), "-h", "127.0.0.1", "-p", str(pg.port),
                "-U", pg.user, name)
        url = pg.url.rsplit("/", 1)[0] + "/" + name
    with governance(tmp_path, clock, url=url, audit_key=b"k" * 32) as g:
        yield g


def test_concurrent_reads_and_answered_scans_extend_one_intact_keyed_chain(any_gov):
    """Given an empty log, When 16 threads each authorize reads and scans answered at once
    (from the first append on), Then nothing fails, the keyed chain verifies with every record,
    and each answer's data.read directly follows its own data.scan."""
    gov = any_gov
    users = [Principal(f"user{i:02d}", frozenset(), USER) for i in range(16)]

    def work(i: int) -> None:
        if i % 4 == 0:  # a first append racing the others (they start at the barrier)
            ask(gov, users[i], "pub")
        else:
            with pytest.raises(NoGrant):
                gov.authorize_read(users[i], "pub", "data.read")
        for _ in range(5):
            if i % 4 == 0:
                gov.authorize_answered(users[i], "pub", {"n": i}, {"ticket": None})
                gov.authorize_read(users[i], "pub", "data.read", {"n": i})

    assert _all_at_once(16, work) == []
    with gov.db.read() as s:
        result = audit.verify(s, keys=[b"k" * 32])
        rows = s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars().all()
    assert result.ok, result.problems
    assert result.records == len(rows) == 1 + 4 * 2 + 12 + 4 * 5 * 3
    assert Counter(r.action for r in rows) == {
        "audit.keyed": 1, "request.create": 4, "grant.create": 4, "access.denied": 12,
        "data.scan": 20, "data.read": 40}
    by_seq = {r.seq: r for r in rows}
    answers = [r for r in rows if r.action == "data.read" and "scan" in audit._detail(r)]
    assert len(answers) == 20
    for r in answers:
        scan = by_seq[r.seq - 1]
        assert (scan.action, scan.actor, audit._detail(r)["scan"]) == ("data.scan", r.actor,
                                                                       scan.seq)


def test_when_two_stewards_approve_the_same_request_at_once_then_one_grant(gov):
    req = ask(gov, alice, "conf")
    results: list[str] = []
    start = threading.Barrier(2)

    def go(who: Principal) -> None:
        start.wait()
        try:
            approve(gov, who, req["id"])
            results.append("approved")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=go, args=(w,)) for w in (steward, steward2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["approved", "conflict"]
    assert len(grants(gov)) == 1
    assert actions(gov) == {"request.create": 1, "request.approve": 1, "grant.create": 1}


# -- a revocation sticks (SECURITY-CASES 50) ----------------------------------------------------


def test_after_a_revocation_renew_and_new_requests_wait_for_a_steward_until_one_approves(
        gov, clock):
    """Given an auto-approved grant a steward revoked, When the user renews it or asks again,
    Then the request waits for a steward whatever the tier; once a steward approved one, the
    policy applies as before."""
    first = ask(gov, alice, "pub")
    assert first["status"] == "approved"
    [g] = grants(gov, "alice")
    gov.revoke(steward, g.id)
    clock.advance(minutes=1)
    renewed = gov.renew(alice, first["id"])
    assert (renewed["status"], renewed["approvals_required"]) == ("pending", 1)
    assert "was revoked" in renewed["reason"]
    assert gov.request_preview(alice, gov.dataset(alice, "pub"))["outcome"] == "review"
    with pytest.raises(Conflict):  # the pending one stands; no second request
        ask(gov, alice, "pub")
    gov.withdraw(alice, renewed["id"])
    again = ask(gov, alice, "pub")
    assert again["status"] == "pending"
    assert approve(gov, steward, again["id"])["status"] == "approved"
    assert gov.renew(alice, again["id"])["status"] == "approved"  # a steward said yes since
    assert gov.request_preview(alice, gov.dataset(alice, "pub"))["outcome"] == "auto"


def test_after_a_revocation_a_dataset_without_stewards_answers_a_clear_denial(tmp_path, clock):
    catalog = CATALOG + """
  - id: orphan
    title: Nobody looks after it
    classification: public
    source: {kind: file, uri: /data/orphan.csv}
"""
    with governance(tmp_path, clock, catalog) as gov:
        assert ask(gov, alice, "orphan")["status"] == "approved"
        [g] = grants(gov, "alice")
        gov.revoke(admin, g.id)
        denied = ask(gov, alice, "orphan")
        assert (denied["status"], denied["reason"]) == (
            "denied", "denied: your access to this dataset was revoked, and it has no stewards "
                      "who could approve it again")
        assert actions(gov)["request.deny"] == 1


# -- reclassification upward (issue 10 item 11) -----------------------------------------------------


def test_a_grant_never_outlives_its_dataset_being_reclassified_upward(tmp_path, clock):
    """Given a grant on confidential data, When the catalogue makes the dataset restricted, Then
    the next read is refused naming the change, the grant shows revoked by "system" with the
    reason audited, and asking again follows the restricted policy (two stewards); a
    reclassification downward changes nothing."""
    (tmp_path / "policy.yaml").write_text(UNIT_POLICY, encoding="utf-8")
    policy = load_policy(str(tmp_path / "policy.yaml"))

    def config_with(classification: str) -> Config:
        (tmp_path / "catalog.yaml").write_text(
            CATALOG.replace("classification: confidential\n    tags: [finance]",
                            f"classification: {classification}\n    tags: [finance]"),
            encoding="utf-8")
        return Config(load_catalog(str(tmp_path / "catalog.yaml")), policy)

    current = {"config": config_with("confidential")}
    with governance(tmp_path, clock, config=lambda: current["config"]) as gov:
        req = ask(gov, alice, "conf")
        approve(gov, steward, req["id"])
        [g] = grants(gov, "alice")
        assert g.classification == "confidential"
        current["config"] = config_with("internal")  # downward: the grant stands
        gov.authorize_read(alice, "conf", "data.read")
        current["config"] = config_with("restricted")
        assert gov.dataset_for(alice, "conf")[1]["status"] == "revoked"
        with pytest.raises(Forbidden, match="'conf' was reclassified from confidential to "
                                            "restricted after your access was granted"):
            gov.authorize_read(alice, "conf", "data.read")
        [g] = grants(gov, "alice")
        assert (g.revoked_by, g.revoked_at) == ("system", clock.now)
        with gov.db.read() as s:
            revoke = s.execute(select(AuditRecord).where(
                AuditRecord.action == "grant.revoke")).scalar_one()
        assert revoke.actor == "system"
        assert '"reason":"reclassified from confidential to restricted"' in revoke.detail
        again = ask(gov, alice, "conf")
        assert (again["status"], again["approvals_required"]) == ("pending", 2)
        assert "was revoked" not in again["reason"]  # the new tier decides, not a steward's revoke


# -- read errors, mapped once (governance.read_errors) ------------------------------------------


def test_a_read_a_scan_and_a_ticket_fetch_of_a_source_lacking_a_credential_say_the_same(
        tmp_path, clock, monkeypatch):
    """Given a source whose credential the service's environment lacks, When a read, a scan and
    a ticket's fetch of it are planned, Then each is refused with the same 502 saying so, never
    naming the variable, and nothing is audited as read."""
    import time

    from jupyterhub_dataaccess import tickets
    from jupyterhub_dataaccess.errors import SourceUnavailable

    monkeypatch.delenv("DA_UNIT_NO_SUCH_KEY", raising=False)
    catalog = ("datasets:\n  - id: lake\n    title: S3 lake\n    stewards: {users: [steward]}\n"
               "    classification: public\n    source: {kind: s3, uri: 's3://bucket/p.parquet', "
               "options: {key: '${DA_UNIT_NO_SUCH_KEY}'}}\n")
    claims = tickets.Claims(id="t", user="alice", grant=1, dataset="lake", version=None,
                            partition=("rg", 0, 0, 0, 1), columns=None, where=None,
                            expires=int(time.time()) + 60, scan=1)
    with governance(tmp_path, clock, catalog) as gov:
        tries = {
            "read": lambda: gov.plan_read(alice, "lake"),
            "scan": lambda: tickets.plan_scan(gov, alice, "lake", tickets.ScanRequest.from_body({}),
                                              ticket_key=b"k" * 32, ttl=60, target_bytes=1 << 20,
                                              url_for=str),
            "ticket": lambda: tickets.open_partition(gov, claims, b"m" * 32),
        }
        for name, attempt in tries.items():
            with pytest.raises(SourceUnavailable) as e:
                attempt()
            assert (e.value.status, e.value.message) == (
                502, "The data source cannot be read right now: a credential the service needs "
                     "for it is not set"), name
            assert "DA_UNIT_NO_SUCH_KEY" in str(e.value.__cause__)  # for the service log
        assert not {"data.read", "data.scan"} & set(actions(gov))
