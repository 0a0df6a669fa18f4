"""One source for the words and the times: openapi.yaml for the lists, times.py for ISO 8601."""

from __future__ import annotations

from jupyterhub_dataaccess import audit, config_files, vocabulary


def test_the_lists_come_from_the_openapi_spec():
    schemas = vocabulary.spec()["components"]["schemas"]
    assert config_files.CLASSIFICATIONS == tuple(schemas["Dataset"]["properties"]["classification"]
                                            ["enum"]) == (
        "public", "internal", "confidential", "restricted")
    assert audit.RECORDED == tuple(schemas["AuditRecord"]["properties"]["action"]["enum"])
    assert set(audit.RECORDED) - set(audit.ACTIONS) == {audit.KEYED}
    assert {"data.query", "data.scan", "grant.expire"} <= set(audit.ACTIONS)
    assert vocabulary.REQUEST_STATUSES == ("pending", "approved", "denied", "withdrawn")
    assert vocabulary.GRANT_STATUSES == ("active", "revoked", "expired")
    assert "granted" in vocabulary.ACCESS_STATUSES


def test_one_iso_formatter_and_the_audit_form_is_unchanged():
    """times.iso is the package's one ISO 8601 formatter; the audit's hashed form keeps its six
    microsecond digits (records written before still verify)."""
    from datetime import datetime, timedelta, timezone

    from jupyterhub_dataaccess.times import iso, parse_iso

    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert iso(at) == "2026-01-02T01:04:05Z"
    assert iso(at, "microseconds") == audit._iso(at) == "2026-01-02T01:04:05.000000Z"
    assert iso(at.replace(microsecond=120000), "milliseconds") == "2026-01-02T01:04:05.120Z"
    assert iso(None) is None
    assert parse_iso("2026-01-02T01:04:05Z") == parse_iso("2026-01-02T01:04:05") == at


def test_the_openapi_spec_names_no_key_twice():
    """A mapping that holds a key twice is refused by the docs' build (redocly, in the
    labextension's build) while PyYAML silently keeps the last one: a route's parameters or
    responses given twice lose the first. The spec holds each key once in every mapping."""
    import yaml

    twice: list[str] = []

    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    twice.append(f"{key!r} at line {key_node.start_mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep)

    with open(vocabulary.SPEC, encoding="utf-8") as f:
        yaml.load(f, Loader=Strict)  # noqa: S506 (a SafeLoader)
    assert twice == []
