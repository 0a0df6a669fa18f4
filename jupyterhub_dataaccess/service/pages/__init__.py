"""The service's own pages: the approvals inbox and the admin workspace.

Plain HTML, CSS and script shipped as package data (no build step). Each page is sent as one
document, its style and script inline under the response's CSP nonce; the script renders every
value a user typed as text (textContent), never as markup.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files
from string import Template

# page name -> the capability it needs
PAGES = {"approvals": "review", "admin": "admin"}
TITLES = {"approvals": "Approvals", "admin": "Data access administration"}


@cache
def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def render_page(name: str, *, theme: str, nonce: str, user: str, api: str, xsrf: str) -> str:
    """The page's HTML: its script and style inline under `nonce`, its settings as data-*."""
    e = html.escape
    return Template(_asset("page.html")).substitute(
        title=e(TITLES[name]), page=e(name), theme=e(theme), nonce=e(nonce), user=e(user),
        api=e(api), xsrf=e(xsrf), style=_asset("pages.css"),
        script=_asset("common.js") + "\n" + _asset(f"{name}.js"))
