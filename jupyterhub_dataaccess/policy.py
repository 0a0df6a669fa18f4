"""The policy engine: pure functions from (user, groups, dataset, request) to a Decision. No I/O.

Rules are matched in order; the first match wins. No match means review by the dataset's stewards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .catalog import CLASSIFICATIONS, CatalogError, Dataset, _LineDict, _Where

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
           days: float | None = None) -> Decision:
    """The decision for `user` (in `groups`) asking for `dataset` for `days` (capped by the rule)."""
    groups = frozenset(groups)
    for index, rule in enumerate(policy.rules):
        if rule.match.matches(dataset, groups):
            granted = cap_days(days, rule.max_days)
            return Decision(rule.decision, rule.approvals if rule.decision == "review" else 0,
                            rule.max_days, _reason(rule, dataset), index, granted)
    granted = cap_days(days, policy.default_max_days)
    return Decision("review", 1, policy.default_max_days,
                    "needs 1 steward approval (no policy rule matched)", None, granted)


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


def parse_policy(raw: Any, path: str = "policy") -> Policy:
    """Validate parsed policy YAML; raise CatalogError naming the file, line and field."""
    if raw is None:
        raw = {"rules": []}
    if not isinstance(raw, dict) or not isinstance(raw.get("rules") or [], list):
        raise CatalogError(f"{path}: must be a mapping with a 'rules' list")
    top = _Where(path, raw, "")
    unknown = sorted(set(raw) - {"rules", "default_max_days"}, key=str)
    if unknown:
        raise top.error(str(unknown[0]), "is not a known field (rules, default_max_days)")
    rules = []
    for i, item in enumerate(raw.get("rules") or []):
        if not isinstance(item, dict):
            raise CatalogError(f"{path}: rules[{i}]: must be a mapping")
        where = _Where(path, item, "")
        where_label = f"rule {i + 1}"
        match_raw = item.get("match") or {}
        if not isinstance(match_raw, dict):
            raise where.error("match", f"{where_label}: must be a mapping")
        mwhere = _Where(path, match_raw, "")
        unknown = sorted(set(match_raw) - {"classification", "tags", "groups", "datasets"})
        if unknown:
            raise mwhere.error(unknown[0], f"{where_label}: is not a known match field")
        match = Match(*(_names(mwhere, name, match_raw.get(name), where_label)
                        for name in ("classification", "tags", "groups", "datasets")))
        for c in match.classifications:
            if c not in CLASSIFICATIONS:
                raise mwhere.error("classification", f"{where_label}: {c!r} is not one of "
                                   + ", ".join(CLASSIFICATIONS))
        decision = item.get("decision")
        if decision not in DECISIONS:
            raise where.error("decision", f"{where_label}: must be one of {', '.join(DECISIONS)}")
        approvals = item.get("approvals", 1)
        if not isinstance(approvals, int) or isinstance(approvals, bool) or not 1 <= approvals <= 10:
            raise where.error("approvals", f"{where_label}: must be a whole number from 1 to 10")
        max_days = item.get("max_days", DEFAULT_MAX_DAYS)
        if not _is_days(max_days):
            raise where.error("max_days", f"{where_label}: must be a number of days from 0 to 3650")
        unknown = sorted(set(item) - {"match", "decision", "approvals", "max_days"})
        if unknown:
            raise where.error(unknown[0], f"{where_label}: is not a known field")
        line = item.line if isinstance(item, _LineDict) else 0
        rules.append(Rule(match, decision, approvals, float(max_days), line))
    default_max = raw.get("default_max_days", DEFAULT_MAX_DAYS)
    if not _is_days(default_max):
        raise top.error("default_max_days", "must be a number of days from 0 to 3650")
    return Policy(rules=tuple(rules), default_max_days=float(default_max), path=path)


def _is_days(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value <= 3650)


def _names(where: _Where, name: str, value: Any, label: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(name, f"{label}: must be a string or a list of strings")
    return tuple(value)
