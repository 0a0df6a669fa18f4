"""The service's own review and admin pages, and the rule behind them: a server's token is not its
person (SECURITY-CASES 41, 48; issue 10 items 1 and 8, issue 14 items 2, 3 and 6).

Real hub, real user servers and kernels; the pages in Debian's Chromium. The kernel and scope
tests are `integration` (they run again on PostgreSQL); the browser tests run once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from urllib.parse import quote

import pytest
import requests
from browserutil import launch, screenshot, wait_for
from hubutil import Hub, Kernel
from secutil import SECRETS, assert_error, fresh_request, grant_of, hub_login, service_xsrf

from jupyterhub_dataaccess.governance import PERSON_NEEDED

PAGES = "/services/dataaccess/pages"
ACCESS = "access:services!service=dataaccess"
MASKED = "penguins-masked"  # confidential, one approval, masks and a row filter; stewards group
# docs/images/*-page.png are rewritten only when asked (a test run leaves the tree clean)
SCREENSHOTS = os.environ.get("DATAACCESS_SCREENSHOTS") == "1"

# What a kernel does with its server's token: the calls a steward or an admin might try.
KERNEL_CALLS = """
import json, os, urllib.request, urllib.error
base = os.environ["DATAACCESS_URL"] + "api/v1"
token = os.environ["JUPYTERHUB_API_TOKEN"]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": "token " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return [r.status, json.loads(r.read())]
    except urllib.error.HTTPError as e:
        return [e.code, json.loads(e.read())]
print(json.dumps({
    "approve": call("POST", "/requests/%(request)s/approve", {"comment": "from a kernel"}),
    "deny": call("POST", "/requests/%(request)s/deny", {"comment": "from a kernel"}),
    "revoke": call("DELETE", "/grants/%(grant)s"),
    "audit": call("GET", "/audit"),
    "review": call("GET", "/requests?scope=review"),
    "inbox": call("GET", "/inbox"),
    "me": call("GET", "/me"),
}))
"""


def refused(scope: str) -> str:
    return (f"The filtered scope {scope} is not honoured by the data access service (a filter "
            "never counts as unfiltered)")


def _page(hub: Hub, name: str, **kw) -> requests.Response:
    return requests.get(f"{hub.url}{PAGES}/{name}", timeout=30, allow_redirects=False, **kw)


# -- 41. a steward's and an admin's own kernel --------------------------------------------------

@pytest.mark.parametrize("user", ["steward", "admin"])
@pytest.mark.once  # scopes, checked before the database
def test_case41_a_stewards_or_admins_kernel_cannot_decide_revoke_or_read_the_audit(
        hub: Hub, user: str):
    """Given a pending request the person could decide and a grant they could revoke,
    When code in their own running kernel tries with the server's token,
    Then approve, deny, revoke, the audit, the review list and the inbox all answer 403 and
    nothing changes; /me still tells the panel what to show; the person's own token decides."""
    request = fresh_request(hub, "nobody", MASKED, justification="case 41")
    grant = grant_of(hub, "nobody", "penguins")
    hub.start_server(user)
    kernel = Kernel(hub, user)
    try:
        out = kernel.run(KERNEL_CALLS % {"request": request["id"], "grant": grant["id"]})
    finally:
        kernel.shutdown()
    assert out["error"] is None, out
    calls = json.loads(out["stdout"])
    for name in ("approve", "deny", "revoke", "audit", "review", "inbox"):
        assert calls[name] == [403, {"status": 403, "message": PERSON_NEEDED}], (name, calls[name])
    status, me = calls["me"]
    assert status == 200
    assert me["capabilities"] == ["browse", "request"] and me["admin"] is False
    assert me["can_review"] is True and me["can_admin"] is (user == "admin")
    assert me["pages"] == {"approvals": f"{PAGES}/approvals", "admin": f"{PAGES}/admin"}
    if user == "steward":  # the admin stewards no dataset in this catalogue's stewards group
        assert me["pending_reviews"] >= 1
    # nothing changed
    assert hub.call("nobody", "GET", f"/requests/{request['id']}").json()["status"] == "pending"
    assert hub.call("nobody", "GET", "/grants", params={"dataset": "penguins", "active": "true"}
                    ).json()["items"][0]["id"] == grant["id"]
    # the person, with a token they made on the hub's token page, may
    if user == "steward":
        r = hub.call("steward", "POST", f"/requests/{request['id']}/approve", json={})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    else:
        assert hub.call("admin", "GET", "/audit", params={"limit": 1}).status_code == 200
        hub.call("nobody", "POST", f"/requests/{request['id']}/withdraw")


def test_me_counts_the_reviews_waiting_for_the_person(hub: Hub):
    """Given a new request for a dataset the steward looks after, Then /me's pending_reviews
    counts it, for the steward and not for another group's steward; once decided, it drops."""
    before = hub.call("steward", "GET", "/me").json()["pending_reviews"]
    other = hub.call("otherstew", "GET", "/me").json()["pending_reviews"]
    request = fresh_request(hub, "nobody", MASKED, justification="count me")
    assert hub.call("steward", "GET", "/me").json()["pending_reviews"] == before + 1
    assert hub.call("otherstew", "GET", "/me").json()["pending_reviews"] == other
    assert hub.call("steward2", "POST", f"/requests/{request['id']}/deny",
                    json={"comment": "no"}).status_code == 200
    assert hub.call("steward", "GET", "/me").json()["pending_reviews"] == before


# -- 48. filtered scopes ------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["custom:dataaccess:review!user=steward",
                                   "custom:dataaccess:review!group=stewards"])
@pytest.mark.once  # scopes, checked before the database
def test_case48_a_filtered_review_scope_never_decides(hub: Hub, scope: str):
    """Given a steward's token whose review scope is filtered, When it approves, Then 403 naming
    the scope, and the request stays pending: a filter is never read as unfiltered."""
    request = fresh_request(hub, "nobody", MASKED, justification="case 48")
    token = hub.token("steward", scopes=[ACCESS, "custom:dataaccess:browse", scope])
    SECRETS.add(token)
    me = hub.call(None, "GET", "/me", token=token).json()
    assert me["capabilities"] == ["browse"] and me["can_review"] is False
    assert me["refused_scopes"] == [scope]
    message = refused(scope)
    r = hub.call(None, "POST", f"/requests/{request['id']}/approve", token=token, json={})
    assert_error(r, 403, message)
    assert_error(hub.call(None, "GET", "/inbox", token=token), 403, message)
    assert_error(hub.call(None, "GET", "/audit", token=token), 403, message)
    assert hub.call("nobody", "GET", f"/requests/{request['id']}").json()["status"] == "pending"
    hub.call("nobody", "POST", f"/requests/{request['id']}/withdraw")


@pytest.mark.once  # scopes, checked before the database
def test_case48_a_filtered_admin_scope_never_administers(hub: Hub):
    """Given the admin's token with `admin!group=admins`, Then no audit, no revocation, no other
    user's grants, no admin page; its browse scope filtered to the admin themselves counts."""
    scope = "custom:dataaccess:admin!group=admins"
    token = hub.token("admin", scopes=[ACCESS, "custom:dataaccess:browse!user=admin", scope])
    SECRETS.add(token)
    me = hub.call(None, "GET", "/me", token=token).json()
    assert me["capabilities"] == ["browse"] and me["admin"] is False
    assert me["can_admin"] is False and me["refused_scopes"] == [scope]
    message = refused(scope)
    grant = grant_of(hub, "nobody", "penguins")
    assert_error(hub.call(None, "GET", "/audit", token=token), 403, message)
    assert_error(hub.call(None, "DELETE", f"/grants/{grant['id']}", token=token), 403, message)
    grants = hub.call(None, "GET", "/grants", token=token, params={"user": "nobody"}).json()
    assert grants == {"items": [], "total": 0}
    r = _page(hub, "admin", headers={"Authorization": f"token {token}"})
    assert_error(r, 403, message)
    assert hub.call(None, "GET", "/datasets", token=token).status_code == 200  # browse!user=admin
    assert hub.call("nobody", "GET", "/grants", params={"dataset": "penguins", "active": "true"}
                    ).json()["items"][0]["id"] == grant["id"]


@pytest.mark.once  # scopes, checked before the database
def test_case48_a_browse_scope_filtered_to_someone_else_does_not_browse(hub: Hub):
    token = hub.token("steward", scopes=[ACCESS, "custom:dataaccess:browse!user=analyst"])
    SECRETS.add(token)
    assert hub.call(None, "GET", "/me", token=token).json()["capabilities"] == []
    assert_error(hub.call(None, "GET", "/datasets", token=token), 403,
                 refused("custom:dataaccess:browse!user=analyst"))


def test_scopes_to_capabilities_filters_count_only_where_exact():
    """Pure: which capabilities and held roles a token's scopes give (no hub needed)."""
    from jupyterhub_dataaccess.errors import Principal

    p = Principal.from_scopes("bob", ["team"], [
        "custom:dataaccess:browse!user=bob", "custom:dataaccess:request!group=team",
        "custom:dataaccess:admin!group=team", "custom:dataaccess:admin:status!group=team",
        "custom:dataaccess:review:status", "custom:dataaccess:browse!user=eve", "read:users"])
    assert p.capabilities == {"browse", "request"}
    assert p.holds == {"review"} and not p.holds_role("admin")
    assert p.refused_scopes == ("custom:dataaccess:admin!group=team",
                                "custom:dataaccess:browse!user=eve")
    server = Principal.from_scopes("ann", [], ["custom:dataaccess:browse",
                                               "custom:dataaccess:admin:status"])
    assert server.capabilities == {"browse"} and server.holds == {"admin", "review"}
    person = Principal.from_scopes("ann", [], ["custom:dataaccess:admin"])
    assert person.capabilities == {"admin", "browse", "review"} and person.holds_role("admin")


# -- the pages over HTTP: credentials, wrong users, CSP, XSRF -----------------------------------

@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_the_pages_need_a_login_and_send_a_browser_through_the_hubs_oauth(hub: Hub):
    for name in ("approvals", "admin"):
        assert_error(_page(hub, name), 401, "Authentication required: log in to JupyterHub")
        r = _page(hub, name, headers={"Sec-Fetch-Mode": "navigate"})
        assert r.status_code == 302 and "/hub/api/oauth2/authorize?" in r.headers["Location"]


@pytest.mark.parametrize("user,page,message", [
    ("analyst", "approvals", "You lack the dataaccess 'review' permission"),
    ("analyst", "admin", "You lack the dataaccess 'admin' permission"),
    ("steward", "admin", "You lack the dataaccess 'admin' permission"),
])
@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_the_pages_refuse_the_wrong_user(hub: Hub, user: str, page: str, message: str):
    r = _page(hub, page, headers={"Authorization": f"token {hub.token(user)}"})
    assert_error(r, 403, message)


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_a_page_has_a_strict_csp_and_follows_the_theme(hub: Hub):
    """The page's own inline script and style run under a fresh nonce; nothing else loads; only
    the service's origin may frame it; user text never reaches the page as markup."""
    headers = {"Authorization": f"token {hub.token('steward')}"}
    r = _page(hub, "approvals", headers=headers, params={"theme": "dark"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp.split(";")[-1]
    assert f'<script nonce="{nonce}">' in r.text and '<html lang="en" class="da-theme-dark">' in r.text
    assert "innerHTML" not in r.text and "insertAdjacentHTML" not in r.text
    assert _page(hub, "approvals", headers=headers).text.count("da-theme-light") == 1
    assert nonce not in _page(hub, "approvals", headers=headers).headers["Content-Security-Policy"]
    assert_error(_page(hub, "approvals", headers=headers, params={"theme": "blue"}), 400,
                 "theme must be light or dark")


@pytest.mark.once  # HTTP shape and auth, the same on any database
def test_the_pages_login_cookie_decides_only_with_the_pages_xsrf_token(hub: Hub):
    """Given a steward logged in to the service by OAuth (the page's own login), When the cookie
    POSTs an approval without the XSRF token, Then 403 and nothing changes; with the token the
    page carries, Then the approval is made."""
    request = fresh_request(hub, "nobody", MASKED, justification="cookie approval")
    s = hub_login(hub, "steward")
    page = s.get(f"{hub.url}{PAGES}/approvals", headers={"Sec-Fetch-Mode": "navigate"},
                 timeout=30)
    assert page.status_code == 200, page.text[:300]
    xsrf = re.search(r'data-xsrf="([^"]+)"', page.text).group(1)
    assert xsrf == service_xsrf(s)
    url = f"{hub.api}/requests/{request['id']}/approve"
    for headers in ({"Sec-Fetch-Mode": "cors"}, {"Sec-Fetch-Mode": "cors", "X-XSRFToken": "x"}):
        assert_error(s.post(url, json={}, headers=headers, timeout=30), 403,
                     "XSRF check failed: send the _xsrf cookie's value in an X-XSRFToken header")
    assert hub.call("nobody", "GET", f"/requests/{request['id']}").json()["status"] == "pending"
    inbox = s.get(f"{hub.api}/inbox", headers={"X-XSRFToken": xsrf, "Sec-Fetch-Mode": "cors"},
                  timeout=30).json()
    assert request["id"] in [i["request"]["id"] for i in inbox["items"]]
    r = s.post(url, json={"comment": "ok"}, headers={"X-XSRFToken": xsrf, "Sec-Fetch-Mode": "cors"},
               timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text


@pytest.mark.once  # the page's content, not the database
def test_the_inbox_shows_what_the_requester_would_get(hub: Hub):
    """The inbox item carries the masks, the row filter, the days asked against the rule's
    maximum, the approvals still needed and the requester's grants on the steward's datasets."""
    grant_of(hub, "nobody", "penguins")
    request = fresh_request(hub, "nobody", MASKED, justification="inbox", days=45)
    assert (request["asked_days"], request["max_days"], request["days"]) == (45, 30, 30)
    items = hub.call("steward", "GET", "/inbox").json()["items"]
    item = next(i for i in items if i["request"]["id"] == request["id"])
    assert item["dataset"]["masks"] == {"body_mass_g": "hash", "sex": "redact", "year": "null"}
    assert item["dataset"]["row_filter"].startswith("island != 'Torgersen'")
    assert (item["approvals_given"], item["approvals_needed"]) == (0, 1)
    assert "penguins" in [g["dataset"] for g in item["requester_grants"]]
    assert_error(hub.call("analyst", "GET", "/inbox"), 403,
                 "You lack the dataaccess 'review' permission")
    assert {g["user"] for i in items for g in i["requester_grants"]} <= {i["request"]["user"]
                                                                        for i in items}
    # not the steward of another team's data; nor their own requests
    assert request["id"] not in [i["request"]["id"] for i in
                                 hub.call("otherstew", "GET", "/inbox").json()["items"]]
    hub.call("nobody", "POST", f"/requests/{request['id']}/withdraw")


def test_grants_and_audit_sort_on_allowed_fields_only(hub: Hub):
    grant_of(hub, "nobody", "penguins")
    grant_of(hub, "analyst", "penguins")
    seqs = [a["seq"] for a in hub.call("admin", "GET", "/audit",
                                       params={"sort": "seq", "limit": 20}).json()["items"]]
    assert seqs == sorted(seqs) and len(seqs) >= 4
    users = [g["user"] for g in hub.call("admin", "GET", "/grants",
                                         params={"sort": "-user", "limit": 200}).json()["items"]]
    assert users == sorted(users, reverse=True) and {"nobody", "analyst"} <= set(users)
    for path, field in (("/audit", "hash"), ("/grants", "user; DROP TABLE grants")):
        r = hub.call("admin", "GET", path, params={"sort": field})
        assert r.status_code == 400 and r.json()["message"].startswith("sort must be one of")


# -- in Chromium ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def open_page(browser, hub: Hub, user: str, name: str, theme: str = "light"):
    """`user` logs in at the hub's form, which sends them on to the page (through the service's
    OAuth flow); 1280 x 800, the smallest window the pages are made for."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login?next={quote(f'{PAGES}/{name}?theme={theme}')}")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(rf".*{PAGES}/{name}\?theme={theme}$"), timeout=60_000)
    page.locator(".da-header").wait_for(timeout=30_000)
    return page


@pytest.mark.browser
def test_a_steward_approves_in_the_inbox_seeing_what_the_requester_gets(hub: Hub, browser):
    """Given the analyst asked for masked penguins for 45 days (the rule allows 30),
    When the steward opens the approvals page, Then it shows the masked columns, the row filter,
    the days against the maximum and the justification as text; Approve with a comment grants."""
    justification = "Flipper model <b>not bold</b> & friends"
    request = fresh_request(hub, "analyst", MASKED, justification=justification, days=45)
    page = open_page(browser, hub, "steward", "approvals")
    item = page.locator(f".da-item[data-request-id='{request['id']}']")
    item.click()
    detail = page.locator(".da-detail")
    wait_for(lambda: "analyst asks for penguins-masked" in detail.locator("h2").inner_text(), 10,
             "the request opening")
    assert detail.locator(".da-masks").inner_text() == \
        "body_mass_g (hash), sex (redact), year (null)"
    assert detail.locator(".da-days").inner_text() == \
        "asked 45 days · maximum 30 · would get 30 days"
    assert detail.locator(".da-filter").inner_text().startswith("island != 'Torgersen'")
    assert detail.locator(".da-approvals").inner_text() == "0 of 1 given, 1 still needed"
    assert detail.locator(".da-justification").inner_text() == justification
    assert detail.locator(".da-justification b").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    detail.get_by_label("Comment").fill("ok for the colony report")
    if SCREENSHOTS:
        screenshot(page, "approvals-page.png")
    detail.get_by_role("button", name="Approve").click()
    wait_for(lambda: page.locator("#da-status").inner_text() ==
             f"Approved analyst's request for {MASKED}", 15, "the approval's confirmation")
    # The confirmation is shown before the inbox is fetched again and re-rendered without it.
    wait_for(lambda: item.count() == 0, 15, "the decided request leaving the inbox")
    decided = hub.call("analyst", "GET", f"/requests/{request['id']}").json()
    assert decided["status"] == "approved"
    assert decided["decisions"][0]["comment"] == "ok for the colony report"
    assert hub.call("analyst", "GET", "/grants", params={"dataset": MASKED, "active": "true"}
                    ).json()["total"] == 1
    page.context.close()


@pytest.mark.browser
def test_keyboard_only_a_steward_moves_between_requests_and_approves(hub: Hub, browser):
    """With the keyboard alone: j / k (and the arrows) move between requests, Tab reaches the
    comment and Approve, Enter approves."""
    first = fresh_request(hub, "nobody", MASKED, justification="keyboard one")
    second = fresh_request(hub, "otherstew", MASKED, justification="keyboard two")
    page = open_page(browser, hub, "steward", "approvals")
    page.locator(".da-item").first.wait_for(timeout=20_000)
    selected = page.locator(".da-item[aria-selected='true']")
    ids = page.locator(".da-item").evaluate_all("els => els.map(e => e.dataset.requestId)")
    assert ids.index(str(first["id"])) < ids.index(str(second["id"]))  # oldest first
    page.keyboard.press("j")
    assert selected.get_attribute("data-request-id") == ids[1 % len(ids)]
    page.keyboard.press("k")
    assert selected.get_attribute("data-request-id") == ids[0]
    for _ in range(ids.index(str(second["id"]))):
        page.keyboard.press("ArrowDown")
    assert selected.get_attribute("data-request-id") == str(second["id"])
    assert page.evaluate("document.activeElement.dataset.requestId") == str(second["id"])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "da-comment"
    page.keyboard.type("by keyboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Approve"
    page.keyboard.press("Enter")
    wait_for(lambda: page.locator("#da-status").inner_text() ==
             f"Approved otherstew's request for {MASKED}", 15, "the keyboard approval")
    assert hub.call("otherstew", "GET", f"/requests/{second['id']}").json()["status"] == "approved"
    assert hub.call("nobody", "GET", f"/requests/{first['id']}").json()["status"] == "pending"
    hub.call("nobody", "POST", f"/requests/{first['id']}/withdraw")
    page.context.close()


@pytest.mark.browser
def test_an_admin_filters_sorts_exports_and_revokes(hub: Hub, browser):
    """The admin filters the audit by user, sorts it, exports CSV of exactly what the filter
    shows; in Grants, revokes with a confirming second click. Wide tables scroll in their own
    frame at 1280 x 800, hashes shortened with the whole value on hover."""
    grant = grant_of(hub, "analyst", "penguins")
    page = open_page(browser, hub, "admin", "admin")
    table = page.locator("table.da-table")
    table.wait_for(timeout=20_000)

    page.get_by_role("tab", name="Audit").click()
    page.locator("table[aria-label=Audit]").wait_for(timeout=10_000)
    page.locator("input[name=user]").fill("analyst")
    page.get_by_role("button", name="Filter").click()
    expected = hub.call("admin", "GET", "/audit", params={"user": "analyst", "limit": 1}
                        ).json()["total"]
    count = page.locator(".da-count")
    wait_for(lambda: count.inner_text().endswith(f" of {expected}"), 15, "the filtered audit")
    actors = page.locator("td[data-col=actor]").all_inner_texts()
    assert actors and set(actors) == {"analyst"}
    page.locator("th button[data-sort=seq]").click()  # newest first -> oldest first
    wait_for(lambda: page.locator("th[aria-sort=ascending] button[data-sort=seq]").count(), 10,
             "sorting by sequence")
    seqs = [int(s) for s in page.locator("td[data-col=seq]").all_inner_texts()]
    assert seqs == sorted(seqs)
    hash_cell = page.locator("td[data-col=hash] span").first
    assert len(hash_cell.inner_text()) == 13 and len(hash_cell.get_attribute("title")) == 64
    # the page never overflows the window; a wide table scrolls inside its own frame
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.locator(".da-table-wrap").evaluate("n => getComputedStyle(n).overflowX") == "auto"
    if SCREENSHOTS:
        screenshot(page, "admin-page.png")
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    with open(info.value.path(), newline="") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    assert len(rows) == expected and {r["actor"] for r in rows} == {"analyst"}
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)
    assert {"seq", "at", "action", "dataset", "detail", "hash", "prev_hash"} <= set(rows[0])

    page.get_by_role("tab", name="Grants").click()
    page.locator("table[aria-label=Grants]").wait_for(timeout=10_000)
    page.locator("input[name=user]").fill("analyst")
    page.locator("select[name=active]").select_option("true")
    page.get_by_role("button", name="Filter").click()
    row = page.locator(f"tr[data-grant-id='{grant['id']}']")
    row.wait_for(timeout=15_000)
    revoke = row.get_by_role("button", name=re.compile("Revoke"))
    revoke.click()
    assert revoke.inner_text() == "Confirm revoke"
    assert hub.call("analyst", "GET", "/grants", params={"dataset": "penguins", "active": "true"}
                    ).json()["total"] == 1  # one click is not enough
    revoke.click()
    row.wait_for(state="detached", timeout=15_000)
    assert page.locator("#da-status").inner_text() == "Revoked analyst's access to penguins"
    assert hub.call("analyst", "GET", "/grants", params={"dataset": "penguins", "active": "true"}
                    ).json()["total"] == 0
    page.context.close()


@pytest.mark.browser
def test_the_pages_follow_a_dark_theme_inside_a_frame_of_the_hubs_origin(hub: Hub, browser):
    """As JupyterLab shows it: an iframe in a page of the hub's own origin, dark theme."""
    page = open_page(browser, hub, "admin", "approvals", theme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert is_dark(background), background
    page.goto(f"{hub.url}/hub/home")
    page.evaluate("""src => { const f = document.createElement('iframe');
        f.src = src; f.style.width = '1000px'; f.style.height = '600px';
        document.body.prepend(f); }""", f"{PAGES}/admin?theme=dark")
    frame = page.frame_locator("iframe").first
    frame.locator("table.da-table").wait_for(timeout=20_000)
    assert is_dark(frame.locator("body").evaluate("n => getComputedStyle(n).backgroundColor"))
    page.context.close()


def is_dark(css_color: str) -> bool:
    r, g, b = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 100
