"""Metrics an operator can scrape: `GET /api/v1/metrics` in Prometheus format, for a service token
holding custom:dataaccess:metrics only; latency labelled by route pattern, never by the path."""

from __future__ import annotations

import pytest
import requests
from hubutil import SCRAPER_TOKEN, Hub
from prometheus_client.parser import text_string_to_metric_families
from reliabilityutil import fresh_grant
from secutil import assert_error


def _scrape(hub: Hub, token: str | None) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(hub.api + "/metrics", headers=headers, timeout=30)


def _samples(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_metrics_need_the_scope_users_and_anonymous_callers_are_refused(hub: Hub):
    assert_error(_scrape(hub, None), 401)
    assert_error(_scrape(hub, hub.token("admin")), 403, "Metrics need the "
                 "custom:dataaccess:metrics scope")
    assert_error(_scrape(hub, hub.token("analyst")), 403)
    # the scraper's service token may call /metrics and nothing else
    r = requests.get(hub.api + "/me", headers={"Authorization": f"token {SCRAPER_TOKEN}"},
                     timeout=30)
    assert_error(r, 403, "Only hub users may use the data access service")


def test_a_scrape_shows_latency_by_route_data_served_and_the_databases_figures(hub: Hub):
    """Given a read and a preview of a granted dataset, When the scraper scrapes, Then request
    latency is labelled by route pattern (no dataset id), bytes and rows sent have grown, and
    the active grants, pending requests and audit appends are there."""
    fresh_grant(hub, "analyst", "penguins")
    before = _samples(_scrape(hub, SCRAPER_TOKEN).text)
    assert hub.call("analyst", "GET", "/datasets/penguins/data",
                    params={"format": "csv"}).status_code == 200
    assert hub.call("analyst", "GET", "/datasets/penguins/preview",
                    params={"limit": 5}).status_code == 200
    r = _scrape(hub, SCRAPER_TOKEN)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    after = _samples(r.text)

    routes = {s.labels["route"] for s in after["dataaccess_request_duration_seconds"]}
    assert {"/datasets/{id}/data", "/datasets/{id}/preview"} <= routes
    assert not any("penguins" in route for route in routes)

    def total(samples: dict, name: str, route: str) -> float:
        return sum(s.value for s in samples.get(name, []) if s.name == name + "_total"
                   and s.labels.get("route") == route)

    data = "/datasets/{id}/data"
    assert total(after, "dataaccess_data_bytes", data) > total(before, "dataaccess_data_bytes",
                                                                data)
    assert total(after, "dataaccess_data_rows", data) - total(before, "dataaccess_data_rows",
                                                               data) == 344
    assert total(after, "dataaccess_data_rows", "/datasets/{id}/preview") >= 5
    (grants,) = after["dataaccess_active_grants"]
    assert grants.value >= 1
    assert "dataaccess_pending_requests" in after
    (appends,) = [s for s in after["dataaccess_audit_appends"] if s.name.endswith("_total")]
    assert appends.value > 0
    assert "dataaccess_rate_limited" in after and "dataaccess_query_duration_seconds" in after


@pytest.mark.once  # the SQL engine and the counters, not the database
def test_a_query_is_counted_with_its_duration_and_outcome(hub: Hub):
    fresh_grant(hub, "analyst", "penguins")
    assert hub.call("analyst", "POST", "/query",
                    json={"sql": "select count(*) from penguins"}).status_code == 200
    assert hub.call("analyst", "POST", "/query", json={"sql": "drop table penguins"}
                    ).status_code == 400
    after = _samples(_scrape(hub, SCRAPER_TOKEN).text)
    counts = {s.labels["outcome"]: s.value for s in after["dataaccess_query_duration_seconds"]
              if s.name.endswith("_count")}
    assert counts.get("ok", 0) >= 1 and counts.get("refused", 0) >= 1
