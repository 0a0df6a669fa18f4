"""openapi.yaml is the one source of the API's words: the Python modules use its lists."""

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
