"""The panel in a real browser on a real hub (issue 5): search, request, approve, load, in Chromium.

An analyst and a steward each log in through the hub's login form in their own browser context.
The screenshots these tests take are the ones docs/user-guide.md shows (docs/images/*.png).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from browserutil import launch, log_in, open_data_panel, open_lab, panel_tab, screenshot, wait_for
from hubutil import Hub

pytestmark = [pytest.mark.hub, pytest.mark.browser]

DATASET = "penguins-masked"  # confidential: one steward's approval
JUSTIFICATION = "Flipper length model for the Biscoe colony report"
HOSTILE = "<img src=x onerror=alert(1)>"
CAN_ASK = ("none", "denied", "expired", "revoked")
REQUESTS_TAB = "Requests"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def pages_on_failure(request, browser, hub: Hub):
    """When a test fails, save what every open page shows next to the hub's log."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        return
    for c, context in enumerate(browser.contexts):
        for p, page in enumerate(context.pages):
            path = os.path.join(hub.state, f"{request.node.name}-{c}-{p}.png")
            page.screenshot(path=path)
            print(f"failure screenshot: {path} ({page.url})")
    for context in browser.contexts:
        context.close()


def access(hub: Hub, user: str, dataset: str = DATASET) -> str:
    r = hub.call(user, "GET", f"/datasets/{dataset}")
    assert r.status_code == 200, r.text
    return r.json()["access"]["status"]


def analyst_may_ask(hub: Hub) -> None:
    """Bring the analyst back to asking for the dataset, whatever other tests of this session did.

    The tests share one hub: a pending request of the analyst's is withdrawn, an active grant is
    revoked by the admin (the panel offers "Request access" again for revoked access).
    """
    status = access(hub, "analyst")
    if status == "pending":
        mine = hub.call("analyst", "GET", "/requests",
                        params={"scope": "mine", "status": "pending"}).json()["items"]
        for req in mine:
            if req["dataset"] == DATASET:
                hub.call("analyst", "POST", f"/requests/{req['id']}/withdraw", json={})
    elif status == "granted":
        grants = hub.call("analyst", "GET", "/grants",
                          params={"dataset": DATASET, "active": "true"}).json()["items"]
        for grant in grants:
            r = hub.call("admin", "DELETE", f"/grants/{grant['id']}")
            assert r.status_code in (200, 204), r.text
    assert access(hub, "analyst") in CAN_ASK


def tabs_in_one_row(panel) -> bool:
    tops = {round(box["y"]) for box in
            (tab.bounding_box() for tab in panel.locator("[role=tab]").all())}
    return len(tops) == 1


def row(panel, dataset: str):
    return panel.locator(f"li.jp-DataAccess-row[data-dataset-id='{dataset}']")


def test_analyst_requests_steward_approves_and_the_data_loads_into_a_notebook(hub: Hub, browser):
    """Given an analyst and a steward in JupyterLab,
    When the analyst searches, asks for confidential data and the steward approves it,
    Then the analyst's panel shows the grant without a reload, with a notification, and
    "Load into notebook" runs a cell whose output has the masked, filtered rows."""
    user = "analyst"
    analyst_may_ask(hub)
    hub.start_server(user)
    hub.start_server("steward")

    analyst = log_in(browser, hub, user)
    open_lab(analyst, hub, user)
    panel = open_data_panel(analyst)

    # Search
    panel.get_by_placeholder(re.compile("Search")).fill("penguins")
    penguins = row(panel, DATASET)
    penguins.wait_for(timeout=20_000)
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 2, 10,
             "the search narrowing the list to the two penguin datasets")
    assert penguins.locator(".jp-DataAccess-title").inner_text() == "Penguins with governance"
    assert penguins.locator(".jp-DataAccess-classification").inner_text() == "confidential"
    assert penguins.locator(".jp-DataAccess-status").inner_text() in (
        "no access", "denied", "expired", "revoked")
    assert row(panel, "penguins").locator(".jp-DataAccess-classification").inner_text() == "public"

    # The tag filter: its choices are the tags listed so far; the API filters with tag=
    tags = panel.get_by_label("Tag", exact=True)
    wait_for(lambda: "teaching" in tags.locator("option").all_inner_texts(), 10,
             "the tag filter offering the listed datasets' tags")
    tags.select_option("teaching")
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 1
             and row(panel, "penguins").count(), 10,
             "the tag filter narrowing the list to the dataset tagged 'teaching'")
    tags.select_option("")
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 2, 10,
             "clearing the tag filter")
    screenshot(analyst, "panel-browse.png")

    # Request
    penguins.get_by_role("button", name="Request access").click()
    dialog = analyst.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    # What asking would give, before sending: the policy's rule for confidential data
    outcome = dialog.locator(".jp-DataAccess-outcome")
    assert outcome.inner_text() == "Needs 1 steward approval — confidential data"
    days = dialog.locator("input[type=number]")
    assert days.get_attribute("max") == "30"
    assert "up to 30 days" in dialog.inner_text()
    dialog.locator("textarea").fill(JUSTIFICATION)
    days.fill("45")
    days.press("Tab")  # leaving the field clamps to the policy's maximum
    assert days.input_value() == "30"
    days.fill("14")
    request_button = dialog.get_by_role("button", name="Request", exact=True)
    assert request_button.is_enabled()
    screenshot(analyst, "request-dialog.png")
    request_button.click()
    dialog.wait_for(state="detached", timeout=10_000)
    wait_for(lambda: penguins.locator(".jp-DataAccess-status").inner_text() == "pending", 10,
             "the row showing 'pending'")
    assert "pending" in panel.locator(".jp-DataAccess-info").inner_text()

    # The steward approves
    steward = log_in(browser, hub, "steward")
    open_lab(steward, hub, "steward")
    stewards_panel = open_data_panel(steward)
    # Browse · Requests · Approvals (with its count) fit on one row of the default sidebar
    stewards_panel.locator(".jp-DataAccess-count").wait_for(timeout=20_000)
    assert tabs_in_one_row(stewards_panel), stewards_panel.locator("[role=tab]").all_inner_texts()
    panel_tab(stewards_panel, "Approvals")
    card = stewards_panel.locator("li.jp-DataAccess-card").filter(has_text=JUSTIFICATION)
    card.wait_for(timeout=20_000)
    facts = card.locator(".jp-DataAccess-facts").inner_text()
    assert user in facts and JUSTIFICATION in facts
    assert card.locator(".jp-DataAccess-title").inner_text() == DATASET
    screenshot(steward, "approvals.png")
    card.get_by_role("button", name="Approve").click()
    card.wait_for(state="detached", timeout=15_000)
    assert f"Approved {user}'s request for {DATASET}" in \
        stewards_panel.locator(".jp-DataAccess-info").inner_text()

    # The analyst sees it live: no reload, within 15 s (the panel polls every 10 s)
    approved_at = time.monotonic()
    wait_for(lambda: penguins.locator(".jp-DataAccess-status").inner_text().startswith("granted"),
             15, "the analyst's panel showing the grant")
    toast = analyst.locator(".Toastify__toast").filter(has_text=f"Access to {DATASET} was approved")
    toast.wait_for(timeout=max(1.0, 15 - (time.monotonic() - approved_at)) * 1000)
    assert panel.locator(".jp-DataAccess-info").count() == 0  # "pending" is no longer news
    screenshot(analyst, "granted.png")
    steward.context.close()

    # Details: the schema marks the masks, the row count is after the filter, the preview is governed
    penguins.locator(".jp-DataAccess-rowMain").click()
    details = panel.locator(".jp-DataAccess-details")
    details.wait_for(timeout=10_000)
    assert re.search(r"Rows\s*224\b", details.locator(".jp-DataAccess-facts").inner_text())
    assert "string (masked: redact)" in details.locator(".jp-DataAccess-schema").inner_text()
    preview = details.locator(".jp-DataAccess-preview")
    preview.wait_for(timeout=15_000)
    assert "REDACTED" in preview.inner_text() and "Torgersen" not in preview.inner_text()
    panel.get_by_role("button", name="Back to datasets").click()

    # Load into notebook
    penguins.get_by_role("button", name="Load into notebook").click()
    cell = analyst.locator(".jp-Notebook .jp-CodeCell").filter(
        has_text=f'df = da.load("{DATASET}")')
    cell.wait_for(timeout=60_000)
    output = cell.locator(".jp-OutputArea-output")
    wait_for(lambda: "REDACTED" in (output.all_inner_texts() or [""])[0], 90,
             "the load cell's output showing the masked rows")
    text = output.first.inner_text()
    assert "Biscoe" in text and "224 rows" in text, text
    assert "Torgersen" not in text and "Chinstrap" not in text
    assert cell.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    screenshot(analyst, "notebook-load.png")

    # Renew: a new request for the same dataset, decided by the policy like any other
    panel_tab(panel, REQUESTS_TAB)
    approved = panel.locator("li.jp-DataAccess-card").filter(has_text=JUSTIFICATION).filter(
        has=analyst.locator(".jp-DataAccess-status.jp-mod-approved"))
    approved.first.wait_for(timeout=20_000)
    approved.first.get_by_role("button", name="Renew").click()
    info = panel.locator(".jp-DataAccess-info")
    wait_for(lambda: info.count() and "Renewal" in info.inner_text(), 15, "the renewal's outcome")
    assert info.inner_text() == (f"Renewal: Request for {DATASET} is pending: "
                                 "needs 1 steward approval: confidential data")
    renewal = panel.locator("li.jp-DataAccess-card").filter(
        has=analyst.locator(".jp-DataAccess-status.jp-mod-pending"))
    renewal.wait_for(timeout=15_000)
    assert approved.first.get_by_role("button", name="Renew").count() == 0  # one renewal at a time
    renewal.get_by_role("button", name="Withdraw").click()  # leave nothing pending
    renewal.wait_for(state="detached", timeout=15_000)
    analyst.context.close()


def test_a_hostile_justification_is_shown_as_text_to_the_steward(hub: Hub, browser):
    """Given a request whose justification is HTML with a script in an attribute,
    When the steward opens Approvals, Then it reads as literal text: no element, no dialog."""
    body = {"dataset": DATASET, "justification": f"teaching {HOSTILE}", "days": 1}
    r = hub.call("otherstew", "POST", "/requests", json=body)
    if r.status_code == 409:  # a request left pending by an earlier run in this session
        hub.call("otherstew", "POST", f"/requests/{r.json()['request']['id']}/withdraw", json={})
        r = hub.call("otherstew", "POST", "/requests", json=body)
    assert r.status_code == 201, r.text
    hub.start_server("steward")
    steward = log_in(browser, hub, "steward")
    dialogs: list[str] = []
    steward.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_lab(steward, hub, "steward")
    panel = open_data_panel(steward)
    panel_tab(panel, "Approvals")
    card = panel.locator("li.jp-DataAccess-card").filter(has_text="otherstew")
    card.wait_for(timeout=20_000)
    justification = card.locator(".jp-DataAccess-justification")
    assert justification.inner_text() == f"teaching {HOSTILE}"
    assert justification.locator("img").count() == 0
    assert panel.locator("img[src=x]").count() == 0 and steward.locator("img[src=x]").count() == 0
    steward.wait_for_timeout(1_000)  # an onerror handler would have run by now
    assert dialogs == []

    card.get_by_role("button", name="Deny").click()  # leave nothing pending for other tests
    card.wait_for(state="detached", timeout=15_000)
    steward.context.close()


def test_an_admin_revokes_a_grant_and_the_user_can_ask_again(hub: Hub, browser):
    """Given nobody holds a grant for public penguins,
    When the admin revokes it in the Admin tab (and confirms),
    Then the service says revoked, and nobody's panel shows it with "Request access" again."""
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "penguins", "justification": "teaching", "days": 1})
    assert r.status_code in (201, 409), r.text
    grants = hub.call("nobody", "GET", "/grants", params={"active": "true"}).json()["items"]
    grant = next(g for g in grants if g["dataset"] == "penguins")
    hub.start_server("admin")
    hub.start_server("nobody")

    admin = log_in(browser, hub, "admin")
    open_lab(admin, hub, "admin")
    panel = open_data_panel(admin)
    panel_tab(panel, "Admin")
    grant_row = panel.locator(f"tr[data-grant-id='{grant['id']}']")
    grant_row.wait_for(timeout=20_000)
    # The policy in force, rule by rule in the order they are tried, above the grants
    rules = panel.locator(".jp-DataAccess-policy li")
    assert rules.all_inner_texts() == [
        "dataset forbidden: denied",
        "public data: approved at once, up to 365 days",
        "internal data, for analysts: approved at once, up to 90 days",
        "confidential data: 1 steward approval, up to 30 days",
        "restricted data: 2 steward approvals, up to 7 days",
        "anything else: 1 steward approval, up to 30 days",
    ]
    assert rules.last.bounding_box()["y"] < grant_row.bounding_box()["y"]
    screenshot(admin, "admin.png")
    assert grant_row.locator("td").nth(0).inner_text() == "nobody"
    grant_row.get_by_role("button", name="Revoke").click()
    dialog = admin.locator(".jp-Dialog")
    assert "nobody loses access to penguins" in dialog.inner_text()
    dialog.get_by_role("button", name="Revoke").click()
    grant_row.wait_for(state="detached", timeout=15_000)
    assert access(hub, "nobody", "penguins") == "revoked"
    admin.context.close()

    user = log_in(browser, hub, "nobody")
    open_lab(user, hub, "nobody")
    panel = open_data_panel(user)
    panel.get_by_placeholder(re.compile("Search")).fill("palmer")
    penguins = row(panel, "penguins")
    wait_for(lambda: penguins.count() == 1
             and penguins.locator(".jp-DataAccess-status").inner_text() == "revoked", 20,
             "nobody's panel showing the grant as revoked")
    assert penguins.get_by_role("button", name="Request access").is_visible()

    # Where the policy says no, the dialog says so before sending, and "Request" stays disabled
    panel.get_by_placeholder(re.compile("Search")).fill("never shared")
    forbidden = row(panel, "forbidden")
    forbidden.wait_for(timeout=20_000)
    forbidden.get_by_role("button", name="Request access").click()
    dialog = user.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    assert dialog.locator(".jp-DataAccess-outcome").inner_text() == \
        "Policy denies this request — dataset forbidden"
    dialog.locator("textarea").fill("please")
    assert dialog.get_by_role("button", name="Request", exact=True).is_disabled()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached", timeout=10_000)
    user.context.close()


def test_the_panel_in_the_dark_theme(hub: Hub, browser):
    """When a user switches JupyterLab to its dark theme, Then the panel follows it."""
    hub.start_server("analyst")
    page = log_in(browser, hub, "analyst")
    open_lab(page, hub, "analyst")
    set_theme(page, "JupyterLab Dark")
    try:
        panel = open_data_panel(page)
        panel.locator("li.jp-DataAccess-row").first.wait_for(timeout=20_000)
        background = panel.evaluate("n => getComputedStyle(n).backgroundColor")
        assert is_dark(background), background
        screenshot(page, "panel-dark.png")
    finally:
        set_theme(page, "JupyterLab Light")  # the theme is a user setting: leave it as found
        page.context.close()


def set_theme(page, theme: str) -> None:
    """Settings menu > Theme > `theme`, then wait for the page to repaint in it."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{theme}$")).click()
    dark = theme.endswith("Dark")
    wait_for(lambda: page.evaluate("document.body.dataset.jpThemeLight") == str(not dark).lower(),
             30, f"the switch to {theme}")
    page.wait_for_timeout(500)


def is_dark(css_color: str) -> bool:
    r, g, b = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 100
