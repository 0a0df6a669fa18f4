"""Driving JupyterLab in the system's Chromium with Playwright (sync API), as a hub user would.

Playwright never downloads a browser here: we launch /usr/bin/chromium, and a missing Chromium is
a test failure with a message saying how to install it, never a skip.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hubutil import REPO, Hub

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The window the "nothing is cut off" is checked at.
VIEWPORT = {"width": 1280, "height": 800}
IMAGES = os.path.join(REPO, "docs", "images")
PANEL = "#jupyterhub-dataaccess-panel"


def launch(playwright: Any) -> Any:
    """Chromium from Debian; fail (not skip) with what to do when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install it with `make system` "
                    "(apt-get install chromium); the browser tests never download one.")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def screenshot(page: Any, name: str, **kw: Any) -> str | None:
    """Save docs/images/<name> (the user guide shows these) when DATAACCESS_SCREENSHOTS=1 asks
    for it, so an ordinary test run leaves the tree clean."""
    if os.environ.get("DATAACCESS_SCREENSHOTS") != "1":
        return None
    os.makedirs(IMAGES, exist_ok=True)
    path = os.path.join(IMAGES, name)
    page.screenshot(path=path, **kw)
    return path


def quiet_lab(hub: Hub, user: str) -> None:
    """Turn off JupyterLab's news and update toasts for `user`, so the only toasts are ours."""
    r = requests.put(
        f"{hub.url}/user/{user}/lab/api/settings/@jupyterlab/apputils-extension:notification",
        json={"raw": json.dumps({"fetchNews": "false", "checkForUpdates": False})},
        headers={"Authorization": f"token {hub.token(user)}"}, timeout=30)
    assert r.status_code == 204, r.text


def log_in(browser: Any, hub: Hub, user: str) -> Any:
    """A new browser context logged in to the hub through its /hub/login form; returns the page."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/(hub/(home|spawn.*)|user/.*)$"), timeout=60_000)
    return page


def open_lab(page: Any, hub: Hub, user: str, path: str = "lab") -> None:
    """Open JupyterLab of `user` (the server must be running) and wait until it is usable."""
    quiet_lab(hub, user)
    page.goto(f"{hub.url}/user/{user}/{path}")
    lab_restored(page)


def lab_restored(page: Any) -> None:
    """Wait until JupyterLab (being loaded in `page`) has restored its layout. The splash, shown
    before the shell is attached, goes once it has: until then the restore may activate another
    main-area widget, closing a palette, taking the focus or hiding a tab just clicked."""
    page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
    page.wait_for_selector(".jp-SideBar.jp-mod-left [role='tab']", timeout=60_000)
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)


def open_data_panel(page: Any) -> Any:
    """Click the left sidebar tab titled "Data" and return the panel's locator."""
    panel = page.locator(PANEL)
    if not panel.is_visible():
        page.locator(".jp-SideBar.jp-mod-left [role='tab'][title='Data']").click()
    panel.wait_for(state="visible", timeout=30_000)
    return panel


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(every)
