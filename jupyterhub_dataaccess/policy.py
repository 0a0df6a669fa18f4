"""The policy engine: pure functions from (user, groups, dataset, request) to a Decision. No I/O.

Rules are matched in order; the first match wins. No match means review by the dataset's stewards.
config_files.py reads the policy file into these objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .catalog import Dataset

DECISIONS = ("auto", "review", "deny")
DEFAULT_MAX_DAYS = 30.0
MIN_DAYS = 1 / 24 / 60  # one minute


@dataclass(frozen=True)
class Match:
    classifications: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of these tags
    groups: tuple[str, ...] = ()  # requester in any of these groups
    datasets: tuple[str, ...] = ()

    def matches(self, dataset: Dataset, groups: frozenset[str]) -> bool:
        if self.classifications and dataset.classification not in self.classifications:
            return False
        if self.tags and not set(self.tags) & set(dataset.tags):
            return False
        if self.groups and not set(self.groups) & groups:
            return False
        return not self.datasets or dataset.id in self.datasets

    def describe(self) -> str:
        parts = []
        if self.classifications:
            parts.append("/".join(self.classifications) + " data")
        if self.tags:
            parts.append("tagged " + "/".join(self.tags))
        if self.groups:
            parts.append("for " + "/".join(self.groups))
        if self.datasets:
            parts.append("dataset " + "/".join(self.datasets))
        return ", ".join(parts) or "any data"


@dataclass(frozen=True)
class Rule:
    match: Match
    decision: str
    approvals: int = 1
    max_days: float = DEFAULT_MAX_DAYS
    line: int = 0

    def as_dict(self) -> dict[str, Any]:
        m = self.match
        match = {k: list(v) for k, v in (("classification", m.classifications), ("tags", m.tags),
                                          ("groups", m.groups), ("datasets", m.datasets)) if v}
        out: dict[str, Any] = {"match": match, "decision": self.decision, "max_days": self.max_days}
        if self.decision == "review":
            out["approvals"] = self.approvals
        return out


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default_max_days: float = DEFAULT_MAX_DAYS
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.as_dict() for r in self.rules],
            "default": {"decision": "review", "approvals": 1, "max_days": self.default_max_days},
        }


@dataclass(frozen=True)
class Decision:
    """What the policy says about a request: auto-approve, review by N stewards, or deny."""

    outcome: str  # auto | review | deny
    approvals: int
    max_days: float
    reason: str
    rule: int | None = None  # index of the matching rule, None for the default
    days: float = field(default=0.0)


def decide(policy: Policy, dataset: Dataset, user: str, groups: Iterable[str],
           days: float | None = None, revoked: bool = False) -> Decision:
    """The decision for `user` (in `groups`) asking for `dataset` for `days` (capped by the rule).

    `revoked`: a steward revoked this user's access to this dataset and none has approved it
    since. A revocation sticks: what policy would auto-approve goes to the stewards instead
    (review, at least one approval), and with no stewards to ask it is denied.
    """
    groups = frozenset(groups)
    decision = None
    for index, rule in enumerate(policy.rules):
        if rule.match.matches(dataset, groups):
            decision = Decision(rule.decision, rule.approvals if rule.decision == "review" else 0,
                                rule.max_days, _reason(rule, dataset), index,
                                cap_days(days, rule.max_days))
            break
    if decision is None:
        decision = Decision("review", 1, policy.default_max_days,
                            "needs 1 steward approval (no policy rule matched)", None,
                            cap_days(days, policy.default_max_days))
    if not revoked or decision.outcome == "deny":
        return decision
    if not (dataset.stewards.users or dataset.stewards.groups):
        return replace(decision, outcome="deny", approvals=0,
                       reason="denied: your access to this dataset was revoked, and it has no "
                              "stewards who could approve it again")
    approvals = max(1, decision.approvals)
    return replace(decision, outcome="review", approvals=approvals,
                   reason=f"needs {approvals} steward approval{'s' if approvals != 1 else ''}: "
                          "your access to this dataset was revoked, so a steward decides again")


def _reason(rule: Rule, dataset: Dataset) -> str:
    what = rule.match.describe()
    if rule.decision == "auto":
        return f"auto-approved: {what}"
    if rule.decision == "deny":
        return f"denied by policy: {what}"
    n = rule.approvals
    return f"needs {n} steward approval{'s' if n != 1 else ''}: {what}"


def cap_days(days: float | None, max_days: float) -> float:
    """Requested days capped at the rule's maximum; none requested means the maximum."""
    if days is None:
        return max_days
    return min(max(MIN_DAYS, float(days)), max_days)  # the cap wins over the floor


def may_decide(dataset: Dataset, decider: str, decider_groups: Iterable[str], requester: str) -> bool:
    """A steward of the dataset (by name or group) who is not the requester."""
    return decider != requester and dataset.stewards.includes(decider, frozenset(decider_groups))


def approvals_met(approvers: Iterable[str], requester: str, needed: int) -> bool:
    """Enough distinct approvers, never counting the requester."""
    return len(set(approvers) - {requester}) >= max(1, needed)
