"""The pure policy engine (policy.py): rule shapes, first match, caps, stewards, approvals, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from policies import DEMO_POLICY

from jupyterhub_dataaccess.catalog import Dataset, Source, Stewards
from jupyterhub_dataaccess.config_files import CatalogError, load_policy, parse_policy
from jupyterhub_dataaccess.policy import (
    DEFAULT_MAX_DAYS,
    MIN_DAYS,
    Policy,
    approvals_met,
    cap_days,
    decide,
    may_decide,
)


def dataset(id: str = "ds", classification: str = "internal", tags: tuple[str, ...] = (),
            users: tuple[str, ...] = ("steward",), groups: tuple[str, ...] = ("stewards",)
            ) -> Dataset:
    return Dataset(id=id, title=id, classification=classification, tags=tags,
                   stewards=Stewards(users=users, groups=groups),
                   source=Source(kind="file", uri="/x.csv", format="csv"))


def policy_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return load_policy(policy_file(tmp_path, DEMO_POLICY))


# -- rule shapes and first match ----------------------------------------------------------------


def test_when_the_policy_file_loads_then_rules_keep_order_fields_and_lines(policy):
    assert [r.decision for r in policy.rules] == ["auto", "auto", "deny", "review", "review"]
    assert [r.max_days for r in policy.rules] == [365.0, 90.0, DEFAULT_MAX_DAYS, 30.0, 7.0]
    assert policy.rules[4].approvals == 2
    assert policy.rules[1].match.groups == ("analysts",)
    assert [r.line for r in policy.rules] == [3, 6, 9, 11, 15]
    assert policy.as_dict()["rules"][4] == {
        "match": {"classification": ["restricted"]}, "decision": "review", "max_days": 7.0,
        "approvals": 2}
    assert "approvals" not in policy.as_dict()["rules"][0]


def test_when_a_public_dataset_is_asked_for_then_it_is_auto_approved(policy):
    d = decide(policy, dataset(classification="public"), "ann", [], 10)
    assert (d.outcome, d.approvals, d.max_days, d.rule, d.days) == ("auto", 0, 365.0, 0, 10.0)
    assert d.reason == "auto-approved: public data"


def test_when_an_analyst_asks_for_internal_data_then_the_group_rule_approves(policy):
    d = decide(policy, dataset(classification="internal"), "ann", ["analysts", "x"], None)
    assert (d.outcome, d.rule, d.days) == ("auto", 1, 90.0)
    assert d.reason == "auto-approved: internal data, for analysts"


def test_when_a_non_analyst_asks_for_internal_data_then_no_rule_matches_and_one_steward_reviews(
        policy):
    d = decide(policy, dataset(classification="internal"), "bob", ["other"], 5)
    assert (d.outcome, d.approvals, d.rule) == ("review", 1, None)
    assert d.max_days == policy.default_max_days == DEFAULT_MAX_DAYS
    assert d.days == 5.0
    assert d.reason == "needs 1 steward approval (no policy rule matched)"


def test_when_no_rule_matches_and_no_days_are_asked_then_the_default_maximum_is_given():
    d = decide(parse_policy({"rules": [], "default_max_days": 14}), dataset(), "u", [], None)
    assert (d.outcome, d.approvals, d.max_days, d.days) == ("review", 1, 14.0, 14.0)


def test_when_the_policy_is_empty_then_everything_is_reviewed_by_one_steward():
    for raw in (None, {}, {"rules": []}, {"rules": None}):
        d = decide(parse_policy(raw), dataset(classification="public"), "u", [], None)
        assert (d.outcome, d.approvals, d.rule) == ("review", 1, None)


def test_when_a_dataset_is_tagged_denied_then_the_deny_rule_wins_over_later_rules(policy):
    d = decide(policy, dataset(classification="restricted", tags=("hr", "denied")), "u", [], 3)
    assert (d.outcome, d.approvals, d.rule) == ("deny", 0, 2)
    assert d.reason == "denied by policy: tagged denied"


def test_when_a_restricted_dataset_is_asked_for_then_two_stewards_must_approve(policy):
    d = decide(policy, dataset(classification="restricted"), "u", [], 3)
    assert (d.outcome, d.approvals, d.max_days, d.rule) == ("review", 2, 7.0, 4)
    assert d.reason == "needs 2 steward approvals: restricted data"


def test_when_a_confidential_dataset_is_asked_for_then_the_reason_is_singular(policy):
    d = decide(policy, dataset(classification="confidential"), "u", [], 3)
    assert d.reason == "needs 1 steward approval: confidential data"


def test_when_two_rules_match_then_the_first_one_wins():
    p = parse_policy({"rules": [
        {"match": {"datasets": ["a"]}, "decision": "deny"},
        {"match": {"classification": "public"}, "decision": "auto"},
        {"match": {}, "decision": "review", "approvals": 3},
    ]})
    assert decide(p, dataset("a", "public"), "u", []).outcome == "deny"
    assert decide(p, dataset("b", "public"), "u", []).outcome == "auto"
    catch_all = decide(p, dataset("c", "restricted"), "u", [])
    assert (catch_all.outcome, catch_all.approvals, catch_all.rule) == ("review", 3, 2)
    assert catch_all.reason == "needs 3 steward approvals: any data"


def test_when_a_rule_names_several_fields_then_all_must_match():
    p = parse_policy({"rules": [{
        "match": {"classification": ["internal", "confidential"], "tags": ["finance", "hr"],
                  "groups": ["analysts"], "datasets": ["sales", "pay"]},
        "decision": "auto", "max_days": 10}]})
    good = dataset("sales", "confidential", tags=("finance",))
    assert decide(p, good, "u", ["analysts"]).outcome == "auto"
    assert decide(p, good, "u", ["analysts"]).reason == (
        "auto-approved: internal/confidential data, tagged finance/hr, for analysts, "
        "dataset sales/pay")
    # each field alone failing makes the rule not match
    assert decide(p, dataset("sales", "public", tags=("finance",)), "u", ["analysts"]).rule is None
    assert decide(p, dataset("sales", "internal", tags=("x",)), "u", ["analysts"]).rule is None
    assert decide(p, good, "u", ["staff"]).rule is None
    assert decide(p, dataset("other", "internal", tags=("hr",)), "u", ["analysts"]).rule is None


def test_when_match_fields_are_single_strings_then_they_act_as_one_element_lists():
    p = parse_policy({"rules": [{"match": {"tags": "teaching", "groups": "students"},
                                 "decision": "auto"}]})
    assert p.rules[0].match.tags == ("teaching",)
    assert decide(p, dataset(tags=("teaching",)), "u", {"students"}).outcome == "auto"
    assert decide(p, dataset(tags=("teaching",)), "u", set()).outcome == "review"


# -- days: capping, fractions, the floor ------------------------------------------------------


@pytest.mark.parametrize("asked, max_days, granted", [
    (None, 30.0, 30.0),
    (10, 30.0, 10.0),
    (9999, 30.0, 30.0),
    (0.5, 30.0, 0.5),
    (1 / 24, 7.0, 1 / 24),
    (7.25, 7.0, 7.0),
    (2.75, 2.5, 2.5),
    (0.0000001, 30.0, MIN_DAYS),
    (0, 30.0, MIN_DAYS),
    (-5, 30.0, MIN_DAYS),
    ("3", 30.0, 3.0),
])
def test_when_days_are_asked_then_they_are_capped_by_max_days_and_floored_at_one_minute(
        asked, max_days, granted):
    assert cap_days(asked, max_days) == pytest.approx(granted)


def test_when_max_days_is_below_the_floor_then_the_rule_maximum_still_wins():
    # the cap is a security limit: the one-minute floor must never lengthen a grant past it
    assert cap_days(1, MIN_DAYS / 2) == MIN_DAYS / 2
    assert cap_days(None, MIN_DAYS / 2) == MIN_DAYS / 2


def test_when_a_request_asks_for_more_than_the_rule_allows_then_decide_caps_it(policy):
    d = decide(policy, dataset(classification="restricted"), "u", [], 30)
    assert d.days == 7.0
    d = decide(policy, dataset(classification="restricted"), "u", [], 1.5)
    assert d.days == 1.5
    d = decide(policy, dataset(classification="public"), "u", [], 0.25)
    assert d.days == 0.25


def test_when_max_days_is_fractional_in_the_file_then_it_is_kept(tmp_path):
    p = load_policy(policy_file(tmp_path, """
        rules:
          - match: {classification: restricted}
            decision: review
            approvals: 2
            max_days: 0.5
        """))
    d = decide(p, dataset(classification="restricted"), "u", [], 3)
    assert (d.max_days, d.days) == (0.5, 0.5)


# -- who may decide, and when enough have ---------------------------------------------------------


def test_when_a_steward_by_name_decides_then_they_may():
    ds = dataset(users=("sam",), groups=())
    assert may_decide(ds, "sam", [], "ann")
    assert not may_decide(ds, "bob", [], "ann")


def test_when_a_member_of_a_steward_group_decides_then_they_may():
    ds = dataset(users=(), groups=("stewards",))
    assert may_decide(ds, "bob", ["staff", "stewards"], "ann")
    assert not may_decide(ds, "bob", ["staff"], "ann")
    assert not may_decide(ds, "stewards", [], "ann")  # a user named like the group is not in it


def test_when_the_requester_is_a_steward_then_they_never_decide_their_own_request():
    ds = dataset(users=("sam",), groups=("stewards",))
    assert not may_decide(ds, "sam", ["stewards"], "sam")
    assert not may_decide(ds, "bob", ["stewards"], "bob")


def test_when_approvals_are_counted_then_they_are_distinct_and_exclude_the_requester():
    assert approvals_met(["a"], "req", 1)
    assert not approvals_met([], "req", 1)
    assert not approvals_met(["a", "a", "a"], "req", 2)
    assert approvals_met(["a", "b"], "req", 2)
    assert not approvals_met(["a", "req"], "req", 2)
    assert not approvals_met(["req"], "req", 1)
    assert approvals_met(["a", "b", "req"], "req", 2)


def test_when_zero_approvals_are_needed_then_at_least_one_is_still_required():
    assert not approvals_met([], "req", 0)
    assert not approvals_met(["req"], "req", 0)
    assert approvals_met(["a"], "req", 0)


# -- parse errors name the file, line and field -------------------------------------------------


@pytest.mark.parametrize("body, line, field, words", [
    ("""\
rules:
  - match: {classification: public}
    decision: maybe
""", 3, "decision", "must be one of auto, review, deny"),
    ("""\
rules:
  - match: {classification: public}
    decision: review
    approvals: 0
""", 4, "approvals", "whole number from 1 to 10"),
    ("""\
rules:
  - match: {classification: public}
    decision: review
    approvals: 11
""", 4, "approvals", "whole number"),
    ("""\
rules:
  - match: {classification: public}
    decision: review
    approvals: 1.5
""", 4, "approvals", "whole number"),
    ("""\
rules:
  - match: {classification: public}
    decision: review
    approvals: true
""", 4, "approvals", "whole number"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto
    max_days: 0
""", 4, "max_days", "number of days"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto
    max_days: 3651
""", 4, "max_days", "number of days"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto
    max_days: "30"
""", 4, "max_days", "number of days"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto
    max_days: .nan
""", 4, "max_days", "number of days"),
    ("""\
rules:
  - decision: auto
  - match:
      classification: secret
    decision: auto
""", 4, "classification", "'secret' is not one of public, internal"),
    ("""\
rules:
  - match:
      clasification: public
    decision: auto
""", 3, "clasification", "not a known match field"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto
    max_day: 3
""", 4, "max_day", "not a known field"),
    ("""\
rules:
  - match: {classification: public}
    decision: auto

  - match: [public]
    decision: auto
""", 5, "match", "must be a mapping"),
    ("""\
rules:
  - match:
      groups: [analysts, 3]
    decision: auto
""", 3, "groups", "string or a list of strings"),
    ("""\
rules:
  - match:
      tags: [""]
    decision: auto
""", 3, "tags", "string or a list of strings"),
])
def test_when_a_rule_is_wrong_then_the_error_names_file_line_and_field(tmp_path, body, line,
                                                                      field, words):
    path = policy_file(tmp_path, body)
    with pytest.raises(CatalogError) as e:
        load_policy(path)
    message = str(e.value)
    assert message.startswith(f"{path} line {line}:"), message
    assert f"field {field!r}" in message
    assert words in message
    assert "rule " in message


def test_when_the_second_rule_is_wrong_then_the_message_says_rule_2(tmp_path):
    path = policy_file(tmp_path, """\
rules:
  - match: {classification: public}
    decision: auto
  - match: {classification: internal}
    decision: never
""")
    with pytest.raises(CatalogError, match=r"line 5: field 'decision': rule 2: must be one of"):
        load_policy(path)


@pytest.mark.parametrize("body, words", [
    ("- just a list\n", "must be a mapping with a 'rules' list"),
    ("rules: {a: 1}\n", "must be a mapping with a 'rules' list"),
    ("rules:\n  - auto\n", "rules[0]: must be a mapping"),
    ("rules:\n  - match: {classification: public\n", "not valid YAML"),
    ("rules: []\ndefault_max_days: forever\n", "default_max_days"),
    ("rules: []\ndefault_max_days: -1\n", "default_max_days"),
    ("rules: []\ndefault_max_days: 99999\n", "default_max_days"),
    ("rule:\n  - match: {classification: public}\n    decision: auto\n", "'rule'"),
])
def test_when_the_file_as_a_whole_is_wrong_then_the_error_names_the_file(tmp_path, body, words):
    path = policy_file(tmp_path, body)
    with pytest.raises(CatalogError) as e:
        load_policy(path)
    assert str(e.value).startswith(path)
    assert words in str(e.value)


def test_when_the_policy_file_is_missing_then_the_error_names_it(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(CatalogError, match=r"nope\.yaml: cannot read"):
        load_policy(missing)


def test_when_yaml_is_broken_then_the_error_names_the_line(tmp_path):
    path = policy_file(tmp_path, "rules:\n  - match: {classification: public\n    decision: auto\n")
    with pytest.raises(CatalogError, match=r"policy\.yaml: line \d+: not valid YAML"):
        load_policy(path)


def test_when_the_demo_policy_is_loaded_then_it_is_valid():
    import os

    import jupyterhub_dataaccess.demo as demo

    p = load_policy(os.path.join(os.path.dirname(demo.__file__), "policy.yaml"))
    assert p.rules and all(r.line > 0 for r in p.rules)


# -- a revocation sticks (SECURITY-CASES 50) ----------------------------------------------------


def test_when_access_was_revoked_then_what_would_be_automatic_goes_to_the_stewards(policy):
    d = decide(policy, dataset(classification="public"), "ann", [], 10, revoked=True)
    assert (d.outcome, d.approvals, d.max_days, d.days) == ("review", 1, 365.0, 10.0)
    assert d.reason == ("needs 1 steward approval: your access to this dataset was revoked, so a "
                        "steward decides again")


def test_when_access_was_revoked_then_review_keeps_its_approvals_and_deny_stays(policy):
    d = decide(policy, dataset(classification="restricted"), "ann", [], None, revoked=True)
    assert (d.outcome, d.approvals) == ("review", 2)
    d = decide(policy, dataset(classification="restricted", tags=("denied",)), "u", [], None,
               revoked=True)
    assert d.outcome == "deny" and d.reason.startswith("denied by policy")


def test_when_access_was_revoked_and_no_one_stewards_the_dataset_then_it_is_denied(policy):
    orphan = dataset(classification="public", users=(), groups=())
    assert decide(policy, orphan, "ann", [], None).outcome == "auto"
    d = decide(policy, orphan, "ann", [], None, revoked=True)
    assert (d.outcome, d.approvals) == ("deny", 0)
    assert d.reason == ("denied: your access to this dataset was revoked, and it has no stewards "
                        "who could approve it again")
