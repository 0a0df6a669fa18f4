"""The panel in a real browser on a real hub (issue 14), in Debian's Chromium at 1280 × 800.

An analyst, a steward and an admin each log in through the hub's login form in a browser context
of their own. The analyst finds a dataset, opens its page in the main area and asks for it; the
steward decides in the approvals inbox (the service's own page, in a main-area tab); the
analyst's open page turns to "granted" without a reload and loads the governed rows into a
notebook; the admin filters, sorts and exports the audit in the admin workspace.

With DATAACCESS_SCREENSHOTS=1 the tests also save the screenshots docs/user-guide.md shows.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time

import pytest
from browserutil import (
    PANEL,
    lab_restored,
    launch,
    log_in,
    open_data_panel,
    open_lab,
    screenshot,
    wait_for,
)
from hubutil import Hub
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.hub, pytest.mark.browser]

DATASET = "penguins-masked"  # confidential: one steward's approval, up to 30 days
HOSTILE = "<img src=x onerror=alert(1)>"
# Typed into the request dialog; the steward must read it as text, markup and all.
JUSTIFICATION = f"Flipper length model for the Biscoe colony report {HOSTILE}"
CAN_ASK = ("none", "denied", "expired", "revoked")
PAGE = f"#jupyterhub-dataaccess-dataset-{DATASET}"
INBOX = "#jupyterhub-dataaccess-page-approvals"
WORKSPACE = "#jupyterhub-dataaccess-page-admin"


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
    revoked by the admin (with the admin's own token, as a script would).
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


def row(panel, dataset: str):
    return panel.locator(f"li.jp-DataAccess-row[data-dataset-id='{dataset}']")


def header_in_one_row(panel) -> bool:
    """Browse, Requests and the Approvals/Admin entries share one row of the sidebar."""
    tops = {round(box["y"]) for box in
            (item.bounding_box() for item in panel.locator(".jp-DataAccess-tab").all())}
    return len(tops) == 1


def not_cut_off(locator) -> bool:
    """Nothing wider than its box unless the box scrolls to show it."""
    return locator.evaluate("""root => {
        for (const node of [root, ...root.querySelectorAll('*')]) {
            const style = getComputedStyle(node);
            const scrolls = ['auto', 'scroll'].includes(style.overflowX);
            if (!scrolls && style.textOverflow !== 'ellipsis'
                && node.scrollWidth > node.clientWidth + 1 && style.overflowX === 'hidden') {
                return false;
            }
            if (!scrolls && node !== root && node.getBoundingClientRect().right
                    > root.getBoundingClientRect().right + 1
                    && !node.closest('.jp-DataAccess-gridFrame')) {
                return false;
            }
        }
        return true;
    }""")


def tab_to(page, name: str, limit: int = 60):
    """Press Tab until the focused element is a button named `name`; return its text."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return e && e.tagName === 'BUTTON' ? e.textContent.trim() : ''; }")
        if focused == name:
            return focused
    pytest.fail(f"Tab never reached the {name!r} button")


def open_dataset_page(lab, panel, dataset: str):
    """Click the dataset's row in the sidebar; return the main-area tab it opens."""
    row(panel, dataset).locator(".jp-DataAccess-rowMain").click()
    page = lab.locator(f"#jupyterhub-dataaccess-dataset-{dataset}")
    page.locator(".jp-DataAccess-page").wait_for(timeout=20_000)
    return page


def test_analyst_requests_on_the_dataset_page_and_it_turns_granted_live(hub: Hub, browser):
    """Given an analyst and a steward in JupyterLab,
    When the analyst opens a dataset's page from a search and asks for it with the keyboard, and
    the steward approves it in the approvals inbox,
    Then the analyst's open page shows the grant without a reload, the masked preview grid, and
    "Load into notebook" runs a cell whose output has the masked, filtered rows."""
    user = "analyst"
    analyst_may_ask(hub)
    hub.start_server(user)
    hub.start_server("steward")

    lab = log_in(browser, hub, user)
    open_lab(lab, hub, user)
    panel = open_data_panel(lab)

    # Search, then the tag filter (its choices are the tags listed so far)
    panel.get_by_placeholder(re.compile("Search")).fill("penguins")
    penguins = row(panel, DATASET)
    penguins.wait_for(timeout=20_000)
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 2, 10,
             "the search narrowing the list to the two penguin datasets")
    assert penguins.locator(".jp-DataAccess-title").inner_text() == "Penguins with governance"
    assert penguins.locator(".jp-DataAccess-status").inner_text() in (
        "no access", "denied", "expired", "revoked")
    tags = panel.get_by_label("Tag", exact=True)
    wait_for(lambda: "teaching" in tags.locator("option").all_inner_texts(), 10,
             "the tag filter offering the listed datasets' tags")
    tags.select_option("teaching")
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 1
             and row(panel, "penguins").count(), 10, "the tag filter narrowing the list")
    tags.select_option("")
    wait_for(lambda: panel.locator("li.jp-DataAccess-row").count() == 2, 10,
             "clearing the tag filter")
    screenshot(lab, "panel-browse.png")

    # The dataset page: what it is, the schema with its masks, snippets; no preview before a grant
    page = open_dataset_page(lab, panel, DATASET)
    tab = lab.locator(".lm-DockPanel-tabBar .lm-TabBar-tab").filter(
        has_text="Penguins with governance")
    wait_for(lambda: tab.count() == 1, 10, "the main-area tab titled by the dataset")
    assert page.locator(".jp-DataAccess-pageTitle").inner_text() == "Penguins with governance"
    facts = page.locator(".jp-DataAccess-facts").inner_text()
    for expected in ("Owner\nsteward", "Stewards\ngroup stewards", "Classification\nconfidential",
                     "Tags\nbiology", "Rows\n224"):
        assert expected in facts, facts
    assert "Updated" in facts
    schema = {cells[0]: cells[1:] for cells in (
        r.locator("td").all_inner_texts() for r in page.locator(".jp-DataAccess-schema tbody tr").all())}
    assert schema["sex"] == ["string", "redact"]
    assert schema["body_mass_g"][1] == "hash" and schema["year"][1] == "null"
    assert schema["island"][1] == "—"
    assert "once you have access" in page.locator(".jp-DataAccess-empty").inner_text()
    snippets = page.locator(".jp-DataAccess-snippet pre").all_inner_texts()
    assert 'df = da.load("penguins-masked")' in snippets[0]
    assert """df = da.sql('SELECT * FROM "penguins-masked" LIMIT 100')""" in snippets[1]
    assert not_cut_off(page.locator(".jp-DataAccess-page")), "the dataset page cuts something off"

    # Keyboard only: Tab reaches "Request access", Enter opens the dialog, Enter sends it
    page.locator(".jp-DataAccess-pageTitle").click()
    tab_to(lab, "Request access")
    lab.keyboard.press("Enter")
    dialog = lab.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    assert dialog.locator(".jp-DataAccess-outcome").inner_text() == \
        "Needs 1 steward approval — confidential data"
    assert dialog.locator("input[type=number]").get_attribute("max") == "30"
    lab.keyboard.type(JUSTIFICATION)  # the justification has the focus
    lab.keyboard.press("Tab")
    lab.keyboard.press("ControlOrMeta+a")
    lab.keyboard.type("14")
    screenshot(lab, "request-dialog.png")
    lab.keyboard.press("Enter")
    dialog.wait_for(state="detached", timeout=10_000)
    status = page.locator(".jp-DataAccess-myAccess .jp-DataAccess-status")
    wait_for(lambda: status.inner_text() == "pending", 10, "the page showing 'pending'")
    assert "for 14 days" in page.locator(".jp-DataAccess-myAccess").inner_text()
    screenshot(lab, "dataset-page.png")

    # The steward decides in the approvals inbox (the service's page, in a main-area tab)
    steward = log_in(browser, hub, "steward")
    open_lab(steward, hub, "steward")
    approve_in_inbox(steward, hub, requester=user, comment="ok for the colony report")

    # The analyst's open page turns to granted without a reload (it polls every 10 s)
    approved_at = time.monotonic()
    wait_for(lambda: status.inner_text().startswith("granted"), 20,
             "the analyst's dataset page showing the grant")
    toast = lab.locator(".Toastify__toast").filter(has_text=f"Access to {DATASET} was approved")
    toast.wait_for(timeout=max(1.0, 20 - (time.monotonic() - approved_at)) * 1000)
    assert "expires" in page.locator(".jp-DataAccess-myAccess").inner_text()

    # The masked preview, in a grid the keyboard moves through
    grid = page.locator(".jp-DataAccess-preview [role=grid]")
    grid.wait_for(timeout=15_000)
    text = grid.inner_text()
    assert "REDACTED" in text and "Torgersen" not in text and "Chinstrap" not in text
    first = grid.locator("[role=columnheader]").first
    first.focus()
    lab.keyboard.press("ArrowRight")
    lab.keyboard.press("ArrowDown")
    assert lab.evaluate("document.activeElement.dataset.cell") == "1:1"
    assert not_cut_off(page.locator(".jp-DataAccess-page")), "the granted page cuts something off"
    screenshot(lab, "dataset-page-granted.png")

    # Load into notebook, from the page
    page.get_by_role("button", name="Load into notebook").click()
    cell = lab.locator(".jp-Notebook .jp-CodeCell").filter(has_text=f'df = da.load("{DATASET}")')
    cell.wait_for(timeout=60_000)
    output = cell.locator(".jp-OutputArea-output")
    wait_for(lambda: "REDACTED" in (output.all_inner_texts() or [""])[0], 90,
             "the load cell's output showing the masked rows")
    text = output.first.inner_text()
    assert "Biscoe" in text and "224 rows" in text, text
    assert "Torgersen" not in text and "Chinstrap" not in text
    assert cell.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    screenshot(lab, "notebook-load.png")

    # The page is restored on reload
    lab.reload()
    lab_restored(lab)
    tab.wait_for(timeout=30_000)
    restored = lab.locator(PAGE)
    status = restored.locator(".jp-DataAccess-myAccess .jp-DataAccess-status")

    def shown_from_its_tab() -> bool:
        if not status.is_visible():
            tab.click()
        return status.is_visible()

    wait_for(shown_from_its_tab, 30, "the restored dataset page shown from its tab")
    assert restored.locator(".jp-DataAccess-pageTitle").inner_text() == "Penguins with governance"
    lab.context.close()


def approve_in_inbox(lab, hub: Hub, requester: str, comment: str) -> None:
    """The steward opens the inbox from the sidebar (its badge counts what waits), reads what the
    requester would get, and approves with a comment using the keyboard alone."""
    dialogs: list[str] = []
    lab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pending = hub.call(requester, "GET", "/requests",
                       params={"scope": "mine", "status": "pending", "dataset": DATASET})
    request_id = pending.json()["items"][0]["id"]
    panel = open_data_panel(lab)
    entry = panel.locator(".jp-DataAccess-pageLink[data-page=approvals]")
    entry.locator(".jp-DataAccess-count").wait_for(timeout=30_000)
    assert int(entry.locator(".jp-DataAccess-count").inner_text()) >= 1
    assert header_in_one_row(panel), panel.locator(".jp-DataAccess-tab").all_inner_texts()
    entry.click()
    inbox = lab.locator(INBOX)
    inbox.wait_for(timeout=15_000)
    assert "theme=light" in inbox.locator("iframe").get_attribute("src")
    frame = lab.frame_locator(f"{INBOX} iframe")
    item = frame.locator(f".da-item[data-request-id='{request_id}']")
    item.wait_for(timeout=60_000)  # the first visit goes through the service's OAuth login
    item.click()
    detail = frame.locator(".da-detail")
    wait_for(lambda: f"{requester} asks for {DATASET}" in detail.locator("h2").inner_text(), 10,
             "the request opening in the inbox")
    assert detail.locator(".da-masks").inner_text() == \
        "body_mass_g (hash), sex (redact), year (null)"
    days = detail.locator(".da-days").inner_text()
    assert days.startswith("asked 14 days") and "maximum 30" in days, days
    assert detail.locator(".da-justification").inner_text() == JUSTIFICATION
    assert frame.locator("img[src=x]").count() == 0 and lab.locator("img[src=x]").count() == 0
    screenshot(lab, "approvals.png")
    # Keyboard only: from the selected request, Tab to the comment, Tab to Approve, Enter
    item.focus()
    lab.keyboard.press("Tab")
    lab.keyboard.type(comment)
    lab.keyboard.press("Tab")
    assert frame.locator(":focus").inner_text() == "Approve"
    lab.keyboard.press("Enter")
    wait_for(lambda: frame.locator("#da-status").inner_text() ==
             f"Approved {requester}'s request for {DATASET}", 15, "the approval's confirmation")
    decided = hub.call(requester, "GET", f"/requests/{request_id}").json()
    assert decided["status"] == "approved" and decided["decisions"][0]["comment"] == comment
    assert dialogs == []  # the hostile justification ran nothing
    lab.context.close()


def test_an_admin_filters_sorts_and_exports_the_audit_in_the_workspace(hub: Hub, browser):
    """Given an admin in JupyterLab,
    When they open the admin workspace from the sidebar (a main-area tab showing the service's
    page), filter the audit by user, sort it by time and export CSV, and revoke a grant,
    Then the export holds exactly the filtered rows, oldest first, and the grant ends;
    the same page opens in a browser tab of its own."""
    r = hub.call("nobody", "POST", "/requests",
                 json={"dataset": "penguins", "justification": "teaching", "days": 1})
    assert r.status_code in (201, 409), r.text
    grant = hub.call("nobody", "GET", "/grants",
                     params={"dataset": "penguins", "active": "true"}).json()["items"][0]
    hub.start_server("admin")
    lab = log_in(browser, hub, "admin")
    open_lab(lab, hub, "admin")
    panel = open_data_panel(lab)
    entry = panel.locator(".jp-DataAccess-pageLink[data-page=admin]")
    entry.click()
    frame = lab.frame_locator(f"{WORKSPACE} iframe")
    frame.locator("table.da-table").wait_for(timeout=60_000)
    assert not_cut_off(lab.locator(WORKSPACE))

    frame.get_by_role("tab", name="Audit").click()
    frame.locator("table[aria-label=Audit]").wait_for(timeout=10_000)
    frame.locator("input[name=user]").fill("nobody")
    frame.get_by_role("button", name="Filter").click()
    expected = hub.call("admin", "GET", "/audit", params={"user": "nobody", "limit": 1}
                        ).json()["total"]
    assert expected >= 2  # nobody's request and its grant, at least
    wait_for(lambda: frame.locator(".da-count").inner_text().endswith(f" of {expected}"), 15,
             "the audit filtered by user")
    assert set(frame.locator("td[data-col=actor]").all_inner_texts()) == {"nobody"}
    frame.locator("th button[data-sort=at]").click()
    wait_for(lambda: frame.locator("th[aria-sort=ascending] button[data-sort=at]").count(), 10,
             "the audit sorted by time")
    seqs = [int(s) for s in frame.locator("td[data-col=seq]").all_inner_texts()]
    assert seqs == sorted(seqs)
    screenshot(lab, "admin.png")
    with lab.expect_download() as download:
        frame.get_by_role("button", name="Export CSV").click()
    with open(download.value.path(), newline="") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    assert len(rows) == expected and {row["actor"] for row in rows} == {"nobody"}
    assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)

    # Revoke (a second click confirms); nobody's access ends
    frame.get_by_role("tab", name="Grants").click()
    frame.locator("table[aria-label=Grants]").wait_for(timeout=10_000)
    frame.locator("input[name=user]").fill("nobody")
    frame.locator("select[name=active]").select_option("true")
    frame.get_by_role("button", name="Filter").click()
    wait_for(lambda: set(frame.locator("td[data-col=user]").all_inner_texts()) == {"nobody"}, 15,
             "the grants filtered by user")
    row = frame.locator(f"tr[data-grant-id='{grant['id']}']")
    revoke = row.get_by_role("button", name=re.compile("Revoke"))
    revoke.click()
    assert revoke.inner_text() == "Confirm revoke"
    revoke.click()
    wait_for(lambda: frame.locator("#da-status").inner_text() ==
             "Revoked nobody's access to penguins", 15, "the revocation's confirmation")
    row.wait_for(state="detached", timeout=15_000)
    assert access(hub, "nobody", "penguins") == "revoked"

    # The same page in a browser tab of its own
    with lab.context.expect_page() as popup:
        lab.locator(WORKSPACE).get_by_role("button", name="Open in a browser tab").click()
    tab = popup.value
    tab.wait_for_load_state()
    assert re.search(r"/services/dataaccess/pages/admin\?theme=light$", tab.url), tab.url
    tab.locator("table.da-table").wait_for(timeout=30_000)
    lab.context.close()


def test_commands_in_the_palette(hub: Hub, browser):
    """When the analyst runs "Data: Search datasets" from the command palette,
    Then the Data panel opens with the cursor in its search box."""
    hub.start_server("analyst")
    lab = log_in(browser, hub, "analyst")
    open_lab(lab, hub, "analyst")
    palette = lab.locator(".lm-CommandPalette-input")

    def search_from_the_palette() -> bool:
        # JupyterLab focuses the restored main area once its layout has settled, which closes
        # a modal palette opened just before (at any step here): open it again until the whole
        # sequence runs with it open.
        if not palette.is_visible():
            lab.locator(".lm-MenuBar-itemLabel", has_text="View").click()
            lab.locator(".lm-Menu-itemLabel", has_text="Activate Command Palette").click()
            lab.wait_for_timeout(300)
            if not palette.is_visible():
                return False
        try:
            palette.fill("Data:", timeout=2_000)
            if not {"Data: Search datasets", "Data: Load dataset into notebook"} <= set(
                    lab.locator(".lm-CommandPalette-itemLabel").all_inner_texts()):
                return False
            palette.fill("Data: Search datasets", timeout=2_000)
            palette.press("Enter", timeout=2_000)
            lab.locator(PANEL).wait_for(state="visible", timeout=5_000)
            # The settling layout may also take the focus back from the search box just after.
            lab.wait_for_function(
                "s => document.activeElement && document.activeElement.matches(s)",
                arg=f"{PANEL} input[type=search]", timeout=3_000)
        except PlaywrightTimeout:  # closed again, or the focus taken, between two steps
            return False
        return True

    wait_for(search_from_the_palette, 60,
             "the palette running Data: Search datasets, leaving the cursor in the search box")
    lab.context.close()


def test_the_panel_the_dataset_page_and_the_inbox_follow_the_dark_theme(hub: Hub, browser):
    """When a steward switches JupyterLab to its dark theme with the inbox open,
    Then the panel, a dataset page and the inbox (the service's page, reloaded in the new
    theme) are dark."""
    hub.start_server("steward")
    lab = log_in(browser, hub, "steward")
    open_lab(lab, hub, "steward")
    panel = open_data_panel(lab)
    panel.locator(".jp-DataAccess-pageLink[data-page=approvals]").click()
    frame = lab.locator(f"{INBOX} iframe")
    frame.wait_for(timeout=15_000)
    lab.frame_locator(f"{INBOX} iframe").locator(".da-header").wait_for(timeout=60_000)
    set_theme(lab, "JupyterLab Dark")
    try:
        wait_for(lambda: "theme=dark" in frame.get_attribute("src"), 10,
                 "the inbox following the theme")
        inbox_body = lab.frame_locator(f"{INBOX} iframe").locator("body")
        wait_for(lambda: is_dark(inbox_body.evaluate("n => getComputedStyle(n).backgroundColor")),
                 30, "the inbox repainting dark")
        panel = open_data_panel(lab)
        panel.get_by_placeholder(re.compile("Search")).fill("penguins")
        row(panel, "penguins").wait_for(timeout=20_000)
        assert is_dark(panel.evaluate("n => getComputedStyle(n).backgroundColor"))
        page = open_dataset_page(lab, panel, "penguins")
        content = page.locator(".jp-DataAccess-pageContent")
        assert is_dark(content.evaluate("n => getComputedStyle(n).backgroundColor"))
        page.locator(".jp-DataAccess-schema").wait_for(timeout=20_000)
        screenshot(lab, "panel-dark.png")
    finally:
        set_theme(lab, "JupyterLab Light")  # the theme is a user setting: leave it as found
        lab.context.close()


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


