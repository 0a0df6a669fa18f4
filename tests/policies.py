"""The policy files the tests use, in one place (YAML text; write it to a file or give it to a
hub). Each is named for what it does, so a test says which one it relies on."""

from __future__ import annotations

# the session hub (conftest.py): a deny, auto for public and analysts' internal, review for the rest
SESSION_POLICY = """
rules:
  - match: {datasets: [forbidden]}
    decision: deny
  - match: {classification: public}
    decision: auto
    max_days: 365
  - match: {classification: internal, groups: [analysts]}
    decision: auto
    max_days: 90
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
  - match: {classification: restricted}
    decision: review
    approvals: 2
    max_days: 7
"""

# governance in process (test_governance_unit.py)
UNIT_POLICY = """
rules:
  - match: {classification: public}
    decision: auto
    max_days: 365
  - match: {tags: [denied]}
    decision: deny
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
  - match: {classification: restricted}
    decision: review
    approvals: 2
    max_days: 7
"""

# the demo's tiers (test_policy.py)
DEMO_POLICY = """
rules:
  - match: {classification: public}
    decision: auto
    max_days: 365
  - match: {classification: internal, groups: [analysts]}
    decision: auto
    max_days: 90
  - match: {tags: [denied]}
    decision: deny
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
  - match: {classification: restricted}
    decision: review
    approvals: 2
    max_days: 7
"""

# a dataset whose grants last seconds (test_data_plane_hub.py)
SHORT_LIVED_POLICY = """
rules:
  - match: {datasets: [shortlived]}
    decision: auto
    max_days: 0.0001
  - match: {classification: public}
    decision: auto
    max_days: 30
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
"""

# public at once, confidential after one steward (reliability tests)
PUBLIC_AUTO_CONFIDENTIAL_REVIEW = """
rules:
  - match: {classification: public}
    decision: auto
    max_days: 365
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
"""

# public at once for a day (test_security_streams.py)
PUBLIC_ONE_DAY = """
rules:
  - match: {classification: public}
    decision: auto
    max_days: 1
"""

# public at once for a day, confidential after one steward (test_events.py)
EVENTS_POLICY = """
rules:
  - match: {classification: public}
    decision: auto
    max_days: 1
  - match: {classification: confidential}
    decision: review
    approvals: 1
    max_days: 30
"""
