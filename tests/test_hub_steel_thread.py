"""The steel thread on a real JupyterHub: catalogue -> request -> grant -> rows in a real kernel."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hubutil import REPO, Hub, Kernel
from secutil import MISSING_ID, grant_of, hub_user, route_methods


def test_routes_are_enumerated_from_the_application():
    """When the routes are listed from the app, Then every API route and method is there."""
    routes = route_methods()
    paths = {p for _, p in routes}
    api = "/services/dataaccess/api/v1"
    assert f"{api}/datasets/{MISSING_ID}/data" in paths
    assert ("POST", f"{api}/requests/{MISSING_ID}/approve") in routes
    assert ("DELETE", f"{api}/grants/{MISSING_ID}") in routes
    assert ("GET", "/services/dataaccess/pages/admin") in routes
    assert len(routes) >= 14


@pytest.mark.parametrize("method,path", route_methods())
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_every_route_refuses_requests_without_credentials(hub: Hub, method: str, path: str):
    """When a route is called with no credentials, Then only /health answers; the rest say 401."""
    import requests

    r = requests.request(method, hub.url + path, timeout=30, allow_redirects=False)
    if path.endswith("/health"):
        assert r.status_code == 200
        assert set(r.json()) >= {"status", "datasets"}
        return
    if path.endswith("/oauth_callback"):
        assert r.status_code in (400, 403), r.text
        return
    assert r.status_code == 401, (method, path, r.status_code, r.text)
    if "/tickets/" in path:  # a scan plan's partition: its ticket is the credential
        assert r.json()["message"].startswith("A ticket is required")
        return
    assert r.json() == {"status": 401, "message": "Authentication required: log in to JupyterHub"}


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_unknown_path_under_the_service_is_a_json_404_after_authentication(hub: Hub):
    r = hub.call(None, "GET", "/nope")
    assert r.status_code == 401
    r = hub.call("analyst", "GET", "/nope")
    assert r.status_code == 404 and r.json() == {"status": 404, "message": "Not found"}


@pytest.mark.once  # the Hub's groups and scopes, not the database
def test_me_reports_name_groups_and_capabilities(hub: Hub):
    assert hub.call("analyst", "GET", "/me").json() == {
        "name": "analyst", "groups": ["analysts"], "capabilities": ["browse", "request"],
        "admin": False, "can_review": False, "can_admin": False, "pending_reviews": 0,
        "refused_scopes": [],
        "pages": {"approvals": "/services/dataaccess/pages/approvals",
                  "admin": "/services/dataaccess/pages/admin"}}
    steward = hub.call("steward", "GET", "/me").json()
    assert steward["capabilities"] == ["browse", "request", "review"]
    admin = hub.call("admin", "GET", "/me").json()
    assert admin["admin"] is True and "admin" in admin["capabilities"]


def test_search_finds_datasets_by_words_and_reports_my_access(hub: Hub):
    r = hub.call("nobody", "GET", "/datasets", params={"q": "PENGUIN"})
    assert r.status_code == 200
    body = r.json()
    assert {d["id"] for d in body["items"]} == {"penguins", "penguins-masked"}
    assert body["total"] == 2
    statuses = {"granted", "pending", "none", "denied", "expired", "revoked"}
    assert all(d["access"]["status"] in statuses for d in body["items"])
    assert "source" not in body["items"][0]  # never the source location
    r = hub.call("nobody", "GET", "/datasets", params={"classification": "restricted"})
    assert {d["id"] for d in r.json()["items"]} == {"salaries", "forbidden"}


@pytest.mark.once  # reading a source, not the database
def test_dataset_details_carry_schema_and_row_count(hub: Hub):
    r = hub.call("nobody", "GET", "/datasets/penguins-masked")
    assert r.status_code == 200
    d = r.json()
    cols = {c["name"]: c for c in d["columns"]}
    assert cols["body_mass_g"]["mask"] == "hash" and cols["body_mass_g"]["type"] == "string"
    assert cols["species"]["mask"] is None
    # real data: 344 penguins, minus Torgersen and Chinstrap
    assert d["rows"] == 344 - 52 - 68
    assert d["row_filter"] == "island != 'Torgersen' and species in ('Adelie', 'Gentoo')"


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_unknown_dataset_is_a_json_404(hub: Hub):
    r = hub.call("analyst", "GET", "/datasets/no-such-thing")
    assert r.status_code == 404
    assert r.json() == {"status": 404, "message": "No such dataset"}
    r = hub.call("analyst", "GET", "/datasets/no-such-thing/data")
    assert r.status_code == 404 and r.json()["message"] == "No such dataset"


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"'])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_malformed_request_body_is_a_json_400(hub: Hub, body: bytes):
    r = hub.call("analyst", "POST", "/requests", data=body,
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["status"] == 400 and "JSON" in r.json()["message"]
    assert "Traceback" not in r.text


def test_public_data_is_granted_at_once_and_loads_in_a_real_kernel(hub: Hub):
    """When an analyst asks for public data from the kernel, Then it is approved at once,
    and da.load returns every row of the real dataset. The analyst is a new one: many tests give
    'analyst' the penguins and revoke them, and after a revocation a request waits for a steward
    (SECURITY-CASES 50), so the outcome would depend on which tests ran before."""
    with hub_user(hub, groups=("analysts",), prefix="steel") as user:
        hub.start_server(user)
        kernel = Kernel(hub, user)
        try:
            out = kernel.run(
                "import jupyterhub_dataaccess as da\n"
                "r = da.request('penguins', justification='teaching example', days=2.5)\n"
                "print(r['status'], r['days'], r['reason'])\n"
                "df = da.load('penguins')\n"
                "print(type(df).__name__, df.shape, sorted(df['island'].dropna().unique()))\n")
        finally:
            kernel.shutdown()
            hub.stop_server(user)
    assert out["error"] is None, out
    assert "approved 2.5 auto-approved: public data" in out["stdout"]
    assert "DataFrame (344, 8) ['Biscoe', 'Dream', 'Torgersen']" in out["stdout"]


def test_load_without_a_grant_raises_access_denied_naming_the_request_call(analyst_kernel):
    out = analyst_kernel.run(
        "import jupyterhub_dataaccess as da\n"
        "try:\n"
        "    da.load('salaries')\n"
        "except da.AccessDenied as e:\n"
        "    print('DENIED', e.status, e)\n")
    assert out["error"] is None, out
    assert "DENIED 403" in out["stdout"]
    assert "da.request('salaries', justification=" in out["stdout"]


@pytest.mark.once  # the spawn environment, not the database
def test_server_environment_names_the_service_and_holds_no_source_path(hub: Hub, analyst_kernel,
                                                                         config_files):
    out = analyst_kernel.run("import os, json; print(json.dumps(dict(os.environ)))")
    import json

    env = json.loads(out["stdout"])
    assert env["DATAACCESS_URL"].endswith("/services/dataaccess/")
    data_dir = config_files["data"]
    assert not [k for k, v in env.items() if data_dir in v], "a source path leaked into the env"
    assert "DATAACCESS_DB_URL" not in env


def test_restricted_data_needs_two_distinct_stewards_then_loads_live(hub: Hub, analyst_kernel):
    """When a restricted request is approved by two stewards while the kernel runs,
    Then the running kernel loads it at once, with no restart."""
    r = hub.call("analyst", "POST", "/requests",
                 json={"dataset": "salaries", "justification": "pay equity study", "days": 30})
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "pending" and req["days"] == 7.0  # capped by max_days
    assert req["reason"] == "needs 2 steward approvals: restricted data"
    r = hub.call("analyst", "POST", f"/requests/{req['id']}/approve", json={})
    assert r.status_code == 403  # the requester is not a steward and never approves
    r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={"comment": "ok"})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    r = hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
    assert r.status_code == 409  # the same steward twice does not count twice
    r = hub.call("steward2", "POST", f"/requests/{req['id']}/approve", json={})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert [d["by"] for d in r.json()["decisions"]] == ["steward", "steward2"]
    out = analyst_kernel.run("import jupyterhub_dataaccess as da; print(da.load('salaries').shape)")
    assert out["error"] is None and "(50, 2)" in out["stdout"]


def test_grants_and_requests_are_listed_for_their_owner(hub: Hub):
    grant_of(hub, "analyst", "penguins")  # whichever test gave it, or now
    grants = hub.call("analyst", "GET", "/grants", params={"active": "true"}).json()
    assert {"penguins", "salaries"} <= {g["dataset"] for g in grants["items"]}
    assert all(g["user"] == "analyst" and g["status"] == "active" for g in grants["items"])
    mine = hub.call("analyst", "GET", "/requests", params={"scope": "mine"}).json()
    assert mine["total"] == len(mine["items"]) >= 2


@pytest.mark.once  # reading and masking files, not the database
def test_data_formats_stream_the_same_governed_rows(hub: Hub):
    import io

    import pandas as pd
    import pyarrow as pa

    r = hub.call("analyst", "POST", "/requests",
                 json={"dataset": "penguins-masked", "justification": "check masks"})
    assert r.status_code in (201, 409)
    req = r.json().get("request", r.json())
    hub.call("steward", "POST", f"/requests/{req['id']}/approve", json={})
    frames = {}
    for fmt in ("arrow", "parquet", "csv"):
        r = hub.call("analyst", "GET", "/datasets/penguins-masked/data", params={"format": fmt})
        assert r.status_code == 200, r.text
        if fmt == "arrow":
            frames[fmt] = pa.ipc.open_stream(r.content).read_all().to_pandas()
        elif fmt == "parquet":
            frames[fmt] = pd.read_parquet(io.BytesIO(r.content))
        else:
            frames[fmt] = pd.read_csv(io.BytesIO(r.content), dtype={"body_mass_g": str})
    a = frames["arrow"]
    assert len(a) == 344 - 52 - 68
    assert set(a["island"]) == {"Biscoe", "Dream"} and set(a["species"]) == {"Adelie", "Gentoo"}
    assert set(a["sex"]) == {"REDACTED"} and a["year"].isna().all()
    assert a["body_mass_g"].dropna().str.fullmatch(r"[0-9a-f]{32}").all()
    for fmt in ("parquet", "csv"):
        assert list(frames[fmt]["body_mass_g"].fillna("")) == list(a["body_mass_g"].fillna(""))
        assert len(frames[fmt]) == len(a)
    r = hub.call("analyst", "GET", "/datasets/penguins-masked/data", params={"format": "xls"})
    assert r.status_code == 400 and "format" in r.json()["message"]
    r = hub.call("analyst", "GET", "/datasets/penguins-masked/data",
                 params={"columns": "sex,nope,zzz"})
    assert r.status_code == 400 and r.json()["message"] == "unknown column(s): nope, zzz"


@pytest.mark.once  # reading a source, not the database
def test_a_source_that_cannot_be_read_is_a_502_without_details(hub: Hub):
    r = hub.call("analyst", "POST", "/requests", json={"dataset": "broken", "justification": "x"})
    assert r.status_code in (201, 409)
    r = hub.call("analyst", "GET", "/datasets/broken/data")
    assert r.status_code == 502
    assert "does-not-exist" not in r.text and "Traceback" not in r.text
    assert r.json()["message"].startswith("The data source cannot be read")


def test_a_second_named_server_gets_the_same_grants(hub: Hub, analyst_kernel):
    hub.start_server("analyst", "second")
    try:
        k = Kernel(hub, "analyst", "second")
        out = k.run("import os; print(os.environ['DATAACCESS_GRANTS'])")
        assert out["stdout"].strip().split(",") == sorted(
            {g["dataset"] for g in hub.call("analyst", "GET", "/grants",
                                            params={"active": "true"}).json()["items"]})
        k.shutdown()
    finally:
        hub.stop_server("analyst", "second")


def test_a_bad_catalogue_stops_the_service_naming_file_line_dataset_and_field(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("datasets:\n  - id: good\n    source: {kind: file, uri: /x.csv}\n"
                       "  - id: bad\n    classification: secretish\n"
                       "    source: {kind: file, uri: /y.csv}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    env = dict(os.environ, PYTHONPATH=REPO, DATAACCESS_CATALOG=str(catalog),
               DATAACCESS_POLICY=str(policy), DATAACCESS_DB_URL=f"sqlite:///{tmp_path}/d.sqlite",
               JUPYTERHUB_SERVICE_URL="http://127.0.0.1:1")
    p = subprocess.run([sys.executable, "-m", "jupyterhub_dataaccess", "service"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert f"{catalog} line 5: dataset 'bad': field 'classification'" in p.stderr
    assert "Traceback" not in p.stderr
