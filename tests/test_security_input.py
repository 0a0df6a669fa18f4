"""Security cases 17-23 (Input) on a real JupyterHub, the limits of issue 6 (body and field sizes,
page size, per-user rate) and log hygiene: no token, cookie, Authorization or Referer value in any
log line of the hub, the proxy, the service or the user servers."""

from __future__ import annotations

import http.client
import os
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests
from hubutil import Hub, wait_for
from secutil import (
    EXTRA_LOGS,
    SECRETS,
    SESSION_IDS,
    assert_error,
    audit,
    audit_total,
    fresh_request,
    grant_of,
    requests_total,
)

NOT_JSON = "The request body is not valid JSON"


# -- 17. traversal in ids ---------------------------------------------------------------------------

TRAVERSALS = ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "..%5C..%5Cwindows%5Cwin.ini", "%2Fetc%2Fpasswd", "%252e%252e%252fetc%252fpasswd",
              "....%2F%2F....%2F%2Fetc%2Fpasswd",
              "penguins%2F..%2F..%2Fsalaries", "file%3A%2F%2F%2Fetc%2Fpasswd", "~root",
              "..%00", "penguins%5C..%5Csalaries"]


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case17_traversal_in_dataset_and_request_ids_reaches_no_file(hub: Hub, config_files):
    grant_of(hub, "nobody", "penguins")
    reads = audit_total(hub, action="data.read")
    for t in TRAVERSALS:
        for path in (f"/datasets/{t}", f"/datasets/{t}/data", f"/datasets/{t}/preview",
                     f"/requests/{t}", f"/requests/{t}/withdraw", f"/grants/{t}"):
            method = "POST" if path.endswith("withdraw") else "DELETE" \
                if path.startswith("/grants") else "GET"
            r = hub.call("nobody", method, path)
            assert r.status_code in (400, 404), (path, r.status_code, r.text[:200])
            body = assert_error(r, r.status_code)
            assert body["message"] in ("No such dataset", "No such request", "No such grant",
                                       "Not found"), body
            assert "root:" not in r.text and config_files["data"] not in r.text
    before = requests_total(hub, "nobody")
    for ds in ("../penguins", "/etc/passwd", "..\\salaries", config_files["data"] + "/sales.parquet",
               "penguins/../salaries", "./penguins", "file:///etc/passwd"):
        r = hub.call("nobody", "POST", "/requests", json={"dataset": ds, "justification": "x"})
        assert_error(r, 404, "No such dataset")
    assert requests_total(hub, "nobody") == before
    assert audit_total(hub, action="data.read") == reads


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case17_overlong_and_invalid_utf8_escapes_are_a_400_without_echo(hub: Hub):
    """At the service: 400 'The URL is not valid UTF-8'. Through configurable-http-proxy such a
    URL never reaches the service (the proxy cannot decode it and shows the hub's error page):
    no data either way."""
    service = f"http://127.0.0.1:{hub.service_port}/services/dataaccess/api/v1"
    auth = {"Authorization": f"token {hub.token('nobody')}"}
    for t in ("%c0%ae%c0%ae%c0%afetc%c0%afpasswd", "%ff", "%c0%ae", "penguins%ed%a0%80"):
        for path in (f"/datasets/{t}", f"/datasets/{t}/data", f"/requests/{t}"):
            r = requests.get(service + path, headers=auth, timeout=30)
            assert_error(r, 400, "The URL is not valid UTF-8")
            r = hub.call("nobody", "GET", path)
            assert r.status_code != 200 and "root:" not in r.text


# -- 18. search strings and unknown sort fields -----------------------------------------------------

@pytest.mark.parametrize("q,ids", [
    ("'", {"other-team"}), ('"', set()), ("%", set()), ("_", set()), ("%%", set()),
    ("' OR '1'='1", set()), ("penguins' --", set()), ("'; DROP TABLE requests; --", set()),
    ("\\", set()), ("*", set()), (".*", set()), ("[a-z]", set()), ("${jndi:x}", set()),
    ("PENGUIN", {"penguins", "penguins-masked"}), ("penguin%", set()), ("pengu_n", set()),
])
def test_case18_search_strings_are_literal_text(hub: Hub, q: str, ids: set):
    r = hub.call("nobody", "GET", "/datasets", params={"q": q, "limit": 200})
    assert r.status_code == 200, r.text
    assert {d["id"] for d in r.json()["items"]} == ids
    assert r.json()["total"] == len(ids)


def test_case18_unknown_sort_and_order_fields_change_nothing_and_bad_filters_are_400(hub: Hub):
    for path, user in (("/datasets", "nobody"), ("/requests", "nobody"), ("/grants", "admin"),
                       ("/audit", "admin"), ("/notifications", "steward")):
        plain = hub.call(user, "GET", path, params={"limit": 20})
        assert plain.status_code == 200
        for params in ({"sort": "id; DROP TABLE grants"}, {"order": "desc; --"},
                       {"sort": "justification", "order": "sideways"},
                       {"order_by": "(SELECT 1)"}, {"sort[]": "x"}):
            r = hub.call(user, "GET", path, params={"limit": 20, **params})
            if path in ("/grants", "/audit") and "sort" in params:  # these sort, on an allow list
                assert r.status_code == 400 and r.json()["message"].startswith(
                    "sort must be one of "), (path, params, r.text[:200])
                continue
            assert r.status_code == 200, (path, params, r.text[:200])
            assert [i.get("id", i.get("seq")) for i in r.json()["items"]] == [
                i.get("id", i.get("seq")) for i in plain.json()["items"]]
    for params in ({"dataset": "' OR '1'='1"}, {"user": "%"}, {"user": "_____"}):
        assert hub.call("admin", "GET", "/grants", params=params).json() == {"items": [],
                                                                             "total": 0}
        assert hub.call("admin", "GET", "/audit", params=params).json()["total"] == 0
    assert_error(hub.call("nobody", "GET", "/requests", params={"status": "' OR 1=1 --"}), 400,
                 "status must be one of pending, approved, denied, withdrawn")
    assert_error(hub.call("admin", "GET", "/audit", params={"since": "1' OR '1'='1"}), 400,
                 "since must be an ISO 8601 time")
    assert_error(hub.call("admin", "GET", "/grants", params={"active": "1 OR 1"}), 400,
                 "active must be true or false")
    assert_error(hub.call("nobody", "GET", "/datasets", params={"q": "x" * 201}), 400,
                 "q is longer than 200 characters")


# -- 19. malformed JSON, invalid UTF-8, wrong types --------------------------------------------------

BAD_BODIES = [
    (b"{not json", NOT_JSON), (b"\xff\xfe\x00", NOT_JSON), (b'{"a": "\xc3\x28"}', NOT_JSON),
    (b"\xef\xbb\xbf{}", NOT_JSON), (b'{"justification": "\\ud800"}', NOT_JSON),
    (b"[" * 30000, NOT_JSON), (b'{"a":' * 10000 + b"1" + b"}" * 10000, NOT_JSON),
    (b"[1, 2]", "The request body must be a JSON object"),
    (b'"text"', "The request body must be a JSON object"),
    (b"null", "The request body must be a JSON object"),
    (b"1e999", "The request body must be a JSON object"),
    (b'{"dataset": "penguins", "dataset": "salaries", "justification": "x"}',
     "The request body repeats a field"),
]


@pytest.mark.parametrize("body,message", BAD_BODIES, ids=lambda v: repr(v)[:30])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case19_malformed_bodies_are_a_400_on_every_post(hub: Hub, body: bytes, message: str):
    req = fresh_request(hub, "nobody", "penguins-masked")
    before = requests_total(hub, "nobody")
    for user, path in (("nobody", "/requests"), ("steward", f"/requests/{req['id']}/approve"),
                       ("steward", f"/requests/{req['id']}/deny"),
                       ("nobody", f"/requests/{req['id']}/renew"),
                       ("nobody", f"/requests/{req['id']}/withdraw")):
        r = hub.call(user, "POST", path, data=body, headers={"Content-Type": "application/json"})
        assert_error(r, 400, message)
    assert requests_total(hub, "nobody") == before
    after = hub.call("nobody", "GET", f"/requests/{req['id']}").json()
    assert after["status"] == "pending" and after["decisions"] == []


@pytest.mark.parametrize("field,value,message", [
    ("justification", 42, "justification must be a string"),
    ("justification", ["why"], "justification must be a string"),
    ("justification", {"a": 1}, "justification must be a string"),
    ("justification", True, "justification must be a string"),
    ("justification", "", "justification is required: say in a sentence why you need this data"),
    ("justification", "\x00 \u3000", "justification is required: say in a sentence why you "
                                     "need this data"),
    ("days", "7", "days must be a positive number"), ("days", [7], "days must be a positive number"),
    ("days", True, "days must be a positive number"), ("days", 0, "days must be a positive number"),
    ("days", -1, "days must be a positive number"), ("days", {"n": 1}, "days must be a positive number"),
])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case19_wrong_types_are_a_400_naming_the_field(hub: Hub, field, value, message):
    before = requests_total(hub, "nobody")
    body = {"dataset": "other-team", "justification": "why", field: value}
    assert_error(hub.call("nobody", "POST", "/requests", json=body), 400, message)
    assert requests_total(hub, "nobody") == before


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case19_wrong_types_in_decisions_and_queries_are_a_400(hub: Hub):
    req = fresh_request(hub, "nobody", "penguins-masked")
    for comment in (5, ["x"], {"x": 1}, False):
        assert_error(hub.call("steward", "POST", f"/requests/{req['id']}/approve",
                              json={"comment": comment}), 400, "comment must be a string")
    for path, params, message in (
        ("/datasets", {"limit": "ten"}, "limit and offset must be whole numbers"),
        ("/datasets", {"offset": "1.5"}, "limit and offset must be whole numbers"),
        ("/notifications", {"since": "yesterday"}, "since must be an audit sequence number"),
        ("/datasets/penguins/preview", {"limit": "x"}, "limit must be a whole number"),
        ("/datasets/penguins/data", {"format": "xls"}, "format must be one of arrow, parquet, csv"),
        ("/requests", {"scope": "everyone"}, "scope must be 'mine' or 'review'"),
    ):
        assert_error(hub.call("nobody", "GET", path, params=params), 400, message)
    assert hub.call("nobody", "GET", f"/requests/{req['id']}").json()["decisions"] == []


# -- 20. oversized bodies and fields ---------------------------------------------------------------

@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case20_oversized_bodies_and_fields_are_refused_quickly_and_store_nothing(hub: Hub):
    before = requests_total(hub, "nobody")
    records = audit_total(hub, dataset="other-team")
    for body, status, message in (
        ({"dataset": "other-team", "justification": "x" * 10_000_000}, 413,
         "Request body larger than 65536 bytes"),
        ({"dataset": "o" * 1_000_000, "justification": "x"}, 413,
         "Request body larger than 65536 bytes"),
        ({"dataset": "o" * 60_000, "justification": "x"}, 404, "No such dataset"),
        ({"dataset": "other-team", "justification": "x" * 4001}, 400,
         "justification is longer than 4000 characters"),
        ({"dataset": "other-team", "justification": "x", "y" * 60_000: 1}, 400,
         "unknown field(s): " + "y" * 40 + "..."),
    ):
        t0 = time.monotonic()
        r = hub.call("nobody", "POST", "/requests", json=body)
        assert time.monotonic() - t0 < 10
        assert_error(r, status, message)
    req = fresh_request(hub, "nobody", "penguins-masked")
    assert_error(hub.call("steward", "POST", f"/requests/{req['id']}/deny",
                          json={"comment": "c" * 4001}), 400,
                 "comment is longer than 4000 characters")
    assert_error(hub.call("steward", "POST", f"/requests/{req['id']}/deny",
                          json={"comment": "c" * 100_000}), 413,
                 "Request body larger than 65536 bytes")
    assert hub.call("nobody", "GET", f"/requests/{req['id']}").json()["status"] == "pending"
    assert requests_total(hub, "nobody") == before + 1  # the one made here to deny
    assert audit_total(hub, dataset="other-team") == records


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case20_a_one_megabyte_id_in_the_url_is_refused_quickly(hub: Hub):
    """A 1 MB id never reaches the service: the proxy refuses the header (431, or it closes the
    connection); the service itself answers a 10 kB id with its JSON 404."""
    token = hub.token("nobody")
    port = urlparse(hub.url).port
    for length in (1_000_000, 70_000):
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/services/dataaccess/api/v1/datasets/" + "a" * length,
                         headers={"Authorization": f"token {token}"})
            r = conn.getresponse()
            assert r.status in (400, 413, 414, 431), r.status
        except (ConnectionError, http.client.HTTPException):
            pass  # the proxy dropped the connection: also a refusal
        finally:
            conn.close()
        assert time.monotonic() - t0 < 5
    for path in ("/datasets/" + "a" * 10_000, "/requests/" + "1" * 10_000):
        t0 = time.monotonic()
        r = requests.get(f"http://127.0.0.1:{hub.service_port}/services/dataaccess/api/v1{path}",
                         headers={"Authorization": f"token {token}"}, timeout=10)
        assert_error(r, 404)
        assert len(r.text) < 200 and time.monotonic() - t0 < 5


# -- 21. control, bidi, zero-width and HTML text -----------------------------------------------------

def test_case21_hostile_text_is_stored_as_text_and_never_splits_a_log_line(hub: Hub):
    """NUL is removed (decided: it is never useful and breaks C strings and PostgreSQL text);
    everything else is stored verbatim, returned as JSON with nosniff and a no-script CSP, and a
    CR/LF in a justification never starts a log line of its own."""
    marker = f"FORGED-{uuid.uuid4().hex}"
    text = (f"line one\x00\r\n[E 2030-01-01 00:00:00.000 JupyterHub app:1] {marker}\n"
            "\u202etxt.exe\u202c zero\u200bwidth\ufeff <script>alert(1)</script>"
            "<img src=x onerror=alert(2)> &amp; \"quoted\" 'single'")
    stored = text.replace("\x00", "")
    req = fresh_request(hub, "nobody", "penguins-masked", justification=text)
    assert req["justification"] == stored
    r = hub.call("steward", "POST", f"/requests/{req['id']}/deny", json={"comment": text})
    assert r.status_code == 200 and r.json()["decisions"][0]["comment"] == stored
    got = hub.call("nobody", "GET", f"/requests/{req['id']}")
    assert got.json()["justification"] == stored
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in got.headers["Content-Security-Policy"]
    records = [a for a in audit(hub, dataset="penguins-masked") if a["request_id"] == req["id"]]
    create = next(a for a in records if a["action"] == "request.create")
    assert create["detail"]["justification"] == stored
    deny = next(a for a in records if a["action"] == "request.deny")
    assert deny["detail"]["comment"] == stored
    time.sleep(0.5)
    with open(hub.log_path, errors="replace") as f:
        lines = f.read().splitlines()
    assert not [ln for ln in lines if ln.lstrip().startswith(("[E 2030", marker))]
    assert not [ln for ln in lines if marker in ln]


# -- 22. paging -------------------------------------------------------------------------------------

@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_case22_page_size_is_capped_at_200_and_negative_offsets_are_a_400(hub: Hub):
    while audit_total(hub) <= 210:  # enough records to see the cap
        hub.call("nobody", "GET", "/datasets/salaries/preview")
    for path, user in (("/datasets", "nobody"), ("/requests", "nobody"), ("/grants", "admin"),
                       ("/audit", "admin"), ("/notifications", "steward")):
        r = hub.call(user, "GET", path, params={"limit": "1000000000"})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) <= 200
        for params in ({"offset": "-1"}, {"limit": "-5"}, {"offset": "-99999999999999999999"}):
            if path == "/notifications" and "offset" in params:
                continue  # notifications page by `since`, not offset
            assert_error(hub.call(user, "GET", path, params=params), 400,
                         "limit and offset must not be negative")
        if path != "/notifications":
            r = hub.call(user, "GET", path, params={"offset": "99999999999999999999"})
            assert r.status_code == 200 and r.json()["items"] == [], r.text
    r = hub.call("admin", "GET", "/audit", params={"limit": "1000000000"})
    assert len(r.json()["items"]) == 200 and r.json()["total"] > 200
    r = hub.call("steward", "GET", "/notifications", params={"since": "9" * 30})
    assert r.status_code == 200 and r.json()["items"] == []
    r = hub.call("nobody", "GET", "/datasets/penguins/preview", params={"limit": "1000000000"})
    assert r.status_code in (200, 403)
    if r.status_code == 200:
        assert len(r.json()["rows"]) == 100


# -- 23. a malformed policy file stops the service at hub level -------------------------------------

@pytest.mark.once  # its own hub, on SQLite in every run
def test_case23_a_malformed_policy_keeps_the_service_down_naming_file_line_and_field(
        tmp_path, config_files):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - match: {classification: public}\n    decision: auto\n"
                      "  - match: {classification: internal}\n    decision: sometimes\n")
    hub = Hub(state=str(tmp_path / "hub"), catalog=config_files["catalog"], policy=str(policy),
              db_url=f"sqlite:///{tmp_path}/dataaccess.sqlite")
    os.makedirs(hub.state)
    EXTRA_LOGS.append(hub.log_path)
    try:
        with pytest.raises(RuntimeError, match="JupyterHub exited"):
            hub.start(timeout=120)  # returns when the hub exits; a busy machine takes a while
        expected = (f"Refusing to start: {policy} line 5: field 'decision': rule 2: "
                    "must be one of auto, review, deny")
        with open(hub.log_path, errors="replace") as f:
            log = f.read()
        assert expected in log
        try:  # nothing answers for the service: the hub stopped, and its proxy with it
            r = requests.get(f"{hub.url}/services/dataaccess/api/v1/health", timeout=10)
            assert r.status_code != 200
        except requests.ConnectionError:
            pass
    finally:
        hub.stop()


# -- limits: the per-user rate -----------------------------------------------------------------------

@pytest.mark.once  # its own hub, on SQLite in every run
def test_limits_a_user_past_the_rate_gets_a_429_and_others_do_not(tmp_path, config_files):
    hub = Hub(state=str(tmp_path / "hub"), catalog=config_files["catalog"],
              policy=config_files["policy"], db_url=f"sqlite:///{tmp_path}/dataaccess.sqlite",
              service_env={"DATAACCESS_RATE_LIMIT": "1", "DATAACCESS_RATE_BURST": "5"})
    os.makedirs(hub.state)
    EXTRA_LOGS.append(hub.log_path)
    try:
        hub.start()
        hub.token("analyst")
        hub.token("nobody")
        codes = [hub.call("analyst", "GET", "/me").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        r = hub.call("analyst", "POST", "/requests",
                     json={"dataset": "penguins", "justification": "x"})
        assert_error(r, 429, "Too many requests; slow down and retry shortly")
        assert int(r.headers["Retry-After"]) >= 1
        assert hub.call("nobody", "GET", "/me").status_code == 200  # per user
        assert hub.call(None, "GET", "/health").status_code == 200
        r = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(
            hub.call("analyst", "GET", "/requests")), 10, "the bucket refilled")
        assert r.json()["total"] == 0  # the 429 stored nothing
        SECRETS.update(hub.tokens.values())
    finally:
        hub.stop()


# -- 6. log hygiene: last in this module, and again when the session ends --------------------------

def _log_leaks(hub: Hub) -> list[str]:
    secrets = {s for s in (*hub.tokens.values(), *SECRETS) if s and len(s) >= 16}
    leaks = []
    for path in (hub.log_path, *EXTRA_LOGS):
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            for n, line in enumerate(f, 1):
                for s in secrets:
                    if s in line:
                        leaks.append(f"{os.path.basename(os.path.dirname(path))} line {n}: "
                                     f"{line[:120]!r}")
                for sid in SESSION_IDS:
                    # JupyterHub's own xsrf code logs the session id (not a credential) when it
                    # sets an _xsrf cookie; nothing else may
                    if sid in line and "_xsrf_utils" not in line:
                        leaks.append(f"session id, line {n}: {line[:120]!r}")
    return leaks


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_when_the_session_ends(hub: Hub):
    yield
    leaks = _log_leaks(hub)
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks[:20])


@pytest.mark.once  # log lines, the same on any database
def test_case6_log_hygiene_no_token_cookie_authorization_or_referer_value_in_any_log(hub: Hub):
    canaries = {k: f"canary-{k}-{uuid.uuid4().hex}" for k in
                ("referer", "cookie", "authorization", "xsrf", "query")}
    SECRETS.update(canaries.values())
    good = hub.token("analyst")
    for method, path in (("GET", "/me"), ("GET", "/nope"), ("POST", "/requests"),
                         ("GET", "/datasets/penguins/data")):
        headers = {"Referer": f"https://ref.example/?secret={canaries['referer']}",
                   "Cookie": f"service-dataaccess={canaries['cookie']}",
                   "X-XSRFToken": canaries["xsrf"]}
        hub.call("analyst", method, path, headers=headers, json={})
        hub.call(None, method, path, token=canaries["authorization"], headers=headers)
        hub.call(None, method, path, params={"token": good, "secret": canaries["query"]},
                 headers=headers)
    hub.call(None, "GET", "/me", headers={"Authorization": f"Bearer {canaries['authorization']}"})
    time.sleep(0.5)
    leaks = _log_leaks(hub)
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks[:20])
